//! The input and staging stores of a ranking run in a local directory, for
//! tests that need no emulator. Both live under one temporary directory that
//! is removed when they are dropped, whether the test passes or fails; a test
//! must not keep paths below it past that.

use popularity_reports::store::LocalDirStore;
use tempfile::TempDir;

/// `data` (a run's inputs) and `staging` (its outputs) under one fresh
/// directory `<prefix>-XXXXXX` in the system temp dir, removed on drop.
pub struct LocalStores {
    pub data: LocalDirStore,
    pub staging: LocalDirStore,
    _dir: TempDir,
}

impl LocalStores {
    /// # Panics
    /// When the temporary directory cannot be created.
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .expect("cannot create a temporary directory");
        LocalStores {
            data: LocalDirStore::new(dir.path().join("data")),
            staging: LocalDirStore::new(dir.path().join("staging")),
            _dir: dir,
        }
    }
}
