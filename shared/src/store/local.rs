//! A local directory as an [`ObjectStore`]: keys are relative paths below the
//! root. Uploads go to a hidden temporary file beside the target and are
//! renamed into place on `finish`, so readers never see a partial file.
//! Conditional creates hard-link their temporary file to the target instead:
//! a link, unlike a rename, fails when the target exists, so it never
//! replaces an object and exactly one of several racing creators wins. An
//! object's version is the SHA-256 of its bytes; a write conditional on a
//! version compares and replaces under one lock per process, so it is atomic
//! between the tasks of one process (the CLI, tests), not between processes.
//! A ranged read's version is the file's length and modification time
//! instead: hashing a large file for every range would read it whole. A
//! listing gives no version at all, for the same reason.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use std::io::Write;

use sha2::{Digest, Sha256};

use super::ports::{
    ByteRange, ConditionalPut, ObjectEntry, ObjectReader, ObjectSink, ObjectStore, ObjectUpload, ObjectVersion,
    RangeRead, StoreError, UploadReceipt, VersionedObject, WriteCondition,
};

/// Objects stored as files under `root`.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn io_error(&self, operation: &'static str, key: &str, source: std::io::Error) -> StoreError {
        if source.kind() == std::io::ErrorKind::NotFound && operation == "read" {
            return StoreError::NotFound { location: self.describe(key) };
        }
        StoreError::Io { operation, location: self.describe(key), source }
    }
}

#[cfg(test)]
impl LocalDirStore {
    /// For tests: a store on a fresh directory `<prefix>-XXXXXX` under the
    /// system temp dir. The directory and everything in it go when the
    /// returned guard is dropped, also when the test panics, so bind the
    /// guard to a name (`_dir`) that lives as long as the store: `_` would
    /// drop it at once.
    pub(crate) fn in_temp_dir(prefix: &str) -> (tempfile::TempDir, Self) {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .expect("cannot create a temporary directory");
        let store = Self::new(dir.path());
        (dir, store)
    }
}

/// A unique suffix for temporary files of concurrent uploads.
fn temporary_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(".{}.{}.partial", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn temporary_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(temporary_suffix());
    target.with_file_name(format!(".{}", name.to_string_lossy()))
}

/// Serialises writes conditional on a version within this process.
static COMPARE_AND_REPLACE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn version_of(body: &[u8]) -> ObjectVersion {
    ObjectVersion(hex::encode(Sha256::digest(body)))
}

/// The version a ranged read reports: length and modification time.
fn stat_version(metadata: &std::fs::Metadata) -> ObjectVersion {
    let modified = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos());
    ObjectVersion(format!("len={},mtime_ns={modified}", metadata.len()))
}

/// What a ranged read of a local file found, before it becomes a result.
enum LocalRange {
    Read(RangeRead),
    Changed(ObjectVersion),
    Unsatisfiable(u64),
}

fn read_local_range(
    path: &Path,
    range: ByteRange,
    if_version: Option<&ObjectVersion>,
) -> Result<LocalRange, std::io::Error> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let version = stat_version(&file.metadata()?);
    if if_version.is_some_and(|expected| *expected != version) {
        return Ok(LocalRange::Changed(version));
    }
    let object_size = file.metadata()?.len();
    let Some(span) = range.within(object_size) else {
        return Ok(LocalRange::Unsatisfiable(object_size));
    };
    file.seek(SeekFrom::Start(span.start))?;
    let mut body = vec![0; (span.end - span.start) as usize];
    file.read_exact(&mut body)?;
    Ok(LocalRange::Read(RangeRead { body: Bytes::from(body), start: span.start, object_size, version }))
}

impl ObjectSink for LocalDirStore {
    type Upload = LocalUpload;

    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<UploadReceipt, StoreError> {
        let mut upload = self.start_upload(key, content_type).await?;
        upload.write(body).await?;
        upload.finish().await
    }

    async fn start_upload(&self, key: &str, _content_type: &str) -> Result<LocalUpload, StoreError> {
        let target = self.path_of(key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| self.io_error("create directory for", key, e))?;
        }
        let temporary = temporary_path(&target);
        let file =
            tokio::fs::File::create(&temporary).await.map_err(|e| self.io_error("create", key, e))?.into_std().await;
        Ok(LocalUpload { file: Some(file), temporary, target, location: self.describe(key) })
    }

    fn describe(&self, key: &str) -> String {
        self.path_of(key).display().to_string()
    }
}

impl ObjectStore for LocalDirStore {
    type Reader = LocalReader;

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>, StoreError> {
        // Walk only the deepest directory the prefix names, then filter.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let mut pending = vec![self.root.join(dir_part)];
        let mut found = Vec::new();
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_error("list", dir_part, e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(|e| self.io_error("list", dir_part, e))? {
                let path = entry.path();
                let file_type = entry.file_type().await.map_err(|e| self.io_error("list", dir_part, e))?;
                let Ok(relative) = path.strip_prefix(&self.root) else { continue };
                let key = relative.to_string_lossy().replace('\\', "/");
                if file_type.is_dir() {
                    if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                        pending.push(path);
                    }
                } else if key.starts_with(prefix) && !is_temporary(&key) {
                    let size = entry.metadata().await.map_err(|e| self.io_error("list", &key, e))?.len();
                    // A version is a hash of the bytes: not for a listing to read.
                    found.push(ObjectEntry { key, size, version: None });
                }
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        tokio::fs::read(self.path_of(key)).await.map(Bytes::from).map_err(|e| self.io_error("read", key, e))
    }

    async fn get_range(
        &self,
        key: &str,
        range: ByteRange,
        if_version: Option<&ObjectVersion>,
    ) -> Result<RangeRead, StoreError> {
        let path = self.path_of(key);
        let expected = if_version.cloned();
        let read = tokio::task::spawn_blocking(move || read_local_range(&path, range, expected.as_ref()))
            .await
            .expect("ranged read panicked")
            .map_err(|e| self.io_error("read", key, e))?;
        match read {
            LocalRange::Read(read) => Ok(read),
            LocalRange::Changed(now) => Err(StoreError::Changed {
                location: self.describe(key),
                detail: format!("{} was read before, now it is {}", if_version.map_or("", |v| v.0.as_str()), now.0),
            }),
            LocalRange::Unsatisfiable(size) => {
                Err(StoreError::RangeNotSatisfiable { location: self.describe(key), range: range.http_header(), size })
            }
        }
    }

    async fn open(&self, key: &str) -> Result<LocalReader, StoreError> {
        let file = tokio::fs::File::open(self.path_of(key)).await.map_err(|e| self.io_error("read", key, e))?;
        Ok(LocalReader { file, location: self.describe(key) })
    }

    async fn get_versioned(&self, key: &str) -> Result<VersionedObject, StoreError> {
        let body = self.get(key).await?;
        Ok(VersionedObject { version: version_of(&body), body })
    }

    async fn put_conditional(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        condition: WriteCondition<'_>,
    ) -> Result<ConditionalPut, StoreError> {
        let target = self.path_of(key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| self.io_error("create directory for", key, e))?;
        }
        let version = version_of(&body);
        match condition {
            WriteCondition::Absent => {
                // Blocking work runs to completion even if this future is
                // dropped, so the temporary file is always removed.
                let created = tokio::task::spawn_blocking(move || create_by_link(&target, &body))
                    .await
                    .expect("conditional create panicked")
                    .map_err(|(operation, e)| self.io_error(operation, key, e))?;
                Ok(if created { ConditionalPut::Written(version) } else { ConditionalPut::ConditionFailed })
            }
            WriteCondition::Unchanged(expected) => {
                let _exclusive = COMPARE_AND_REPLACE.lock().await;
                match self.get_versioned(key).await {
                    Ok(current) if current.version == *expected => {}
                    Ok(_) | Err(StoreError::NotFound { .. }) => return Ok(ConditionalPut::ConditionFailed),
                    Err(error) => return Err(error),
                }
                self.put(key, body, content_type).await?;
                Ok(ConditionalPut::Written(version))
            }
        }
    }
}

/// Size of the chunks a [`LocalReader`] returns.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// A file read in chunks of [`READ_CHUNK_BYTES`].
#[derive(Debug)]
pub struct LocalReader {
    file: tokio::fs::File,
    location: String,
}

impl ObjectReader for LocalReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        use tokio::io::AsyncReadExt;
        let mut buffer = bytes::BytesMut::with_capacity(READ_CHUNK_BYTES);
        while buffer.len() < READ_CHUNK_BYTES {
            let read = self.file.read_buf(&mut buffer).await.map_err(|source| StoreError::Io {
                operation: "read",
                location: self.location.clone(),
                source,
            })?;
            if read == 0 {
                break;
            }
        }
        Ok((!buffer.is_empty()).then(|| buffer.freeze()))
    }
}

/// Writes `body` to a temporary file beside `target`, then hard-links it to
/// `target`, which fails atomically if `target` exists. The temporary file is
/// removed whatever happens. An error names the step that failed.
/// Returns whether the object was created (`false`: it already existed).
fn create_by_link(target: &Path, body: &[u8]) -> Result<bool, (&'static str, std::io::Error)> {
    let temporary = temporary_path(target);
    if let Err(e) = std::fs::write(&temporary, body) {
        let _ = std::fs::remove_file(&temporary);
        return Err(("write", e));
    }
    let linked = match std::fs::hard_link(&temporary, target) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(("publish", e)),
    };
    if let Err(e) = std::fs::remove_file(&temporary) {
        // The outcome stands: a leftover temporary file is hidden from listings.
        tracing::warn!(path = %temporary.display(), error = %e, "could not remove a temporary file");
    }
    linked
}

fn is_temporary(key: &str) -> bool {
    key.rsplit('/').next().is_some_and(|name| name.starts_with('.') && name.ends_with(".partial"))
}

/// An upload into a temporary file, renamed into place on `finish`. Each
/// chunk is written by one blocking `write_all` (no re-buffering).
#[derive(Debug)]
pub struct LocalUpload {
    file: Option<std::fs::File>,
    temporary: PathBuf,
    target: PathBuf,
    location: String,
}

impl LocalUpload {
    fn error(&self, operation: &'static str, source: std::io::Error) -> StoreError {
        StoreError::Io { operation, location: self.location.clone(), source }
    }
}

impl ObjectUpload for LocalUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        let mut file = self.file.take().expect("write after finish");
        let (file, result) = tokio::task::spawn_blocking(move || {
            let result = file.write_all(&chunk);
            (file, result)
        })
        .await
        .expect("file writer panicked");
        self.file = Some(file);
        result.map_err(|e| self.error("write", e))
    }

    async fn finish(mut self) -> Result<UploadReceipt, StoreError> {
        drop(self.file.take().expect("finish twice"));
        if let Err(e) = tokio::fs::rename(&self.temporary, &self.target).await {
            let _ = tokio::fs::remove_file(&self.temporary).await;
            return Err(self.error("publish", e));
        }
        Ok(UploadReceipt::default())
    }

    async fn abort(mut self) -> Result<(), StoreError> {
        drop(self.file.take());
        match tokio::fs::remove_file(&self.temporary).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error("remove partial", e)),
        }
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // An upload dropped without finish (an error path, a cancelled task)
        // must not leave its temporary file behind.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PutOutcome;

    #[tokio::test]
    async fn ranged_reads_give_the_asked_bytes_and_refuse_a_replaced_file() {
        let (_dir, store) = LocalDirStore::in_temp_dir("local-ranges");
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        store.put("a/k.bin", Bytes::from(body.clone()), "application/octet-stream").await.unwrap();
        let tail = store.get_range("a/k.bin", ByteRange::Suffix(100), None).await.unwrap();
        assert_eq!((tail.start, tail.object_size), (9_900, 10_000));
        assert_eq!(tail.body, body[9_900..]);
        let span = store.get_range("a/k.bin", ByteRange::Span { start: 5, end: 50 }, Some(&tail.version)).await;
        assert_eq!(span.unwrap().body, body[5..50]);
        let past = store.get_range("a/k.bin", ByteRange::Span { start: 10_000, end: 10_010 }, None).await;
        assert!(matches!(past, Err(StoreError::RangeNotSatisfiable { size: 10_000, .. })), "{past:?}");

        store.put("a/k.bin", Bytes::from_static(b"shorter"), "application/octet-stream").await.unwrap();
        let stale = store.get_range("a/k.bin", ByteRange::Span { start: 0, end: 5 }, Some(&tail.version)).await;
        assert!(matches!(stale, Err(StoreError::Changed { .. })), "{stale:?}");
        let missing = store.get_range("a/absent.bin", ByteRange::Suffix(5), None).await;
        assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    }

    #[tokio::test]
    async fn an_upload_is_invisible_until_finished_and_gone_when_aborted() {
        let (_dir, store) = LocalDirStore::in_temp_dir("local-store");
        let mut upload = store.start_upload("reports/a/part-001.json", "application/json").await.unwrap();
        upload.write(Bytes::from_static(b"[\n")).await.unwrap();
        assert!(store.list("reports/").await.unwrap().is_empty());
        upload.abort().await.unwrap();
        assert!(store.list("reports/").await.unwrap().is_empty());
        assert_eq!(std::fs::read_dir(store.root().join("reports/a")).unwrap().count(), 0);

        let mut upload = store.start_upload("reports/a/part-001.json", "application/json").await.unwrap();
        upload.write(Bytes::from_static(b"[\n")).await.unwrap();
        upload.write(Bytes::from_static(b"]\n")).await.unwrap();
        upload.finish().await.unwrap();
        let listed = store.list("reports/").await.unwrap();
        assert_eq!(listed, vec![ObjectEntry { key: "reports/a/part-001.json".into(), size: 4, version: None }]);
        assert_eq!(&store.get("reports/a/part-001.json").await.unwrap()[..], b"[\n]\n");
    }

    #[tokio::test]
    async fn listing_matches_key_prefixes_not_only_directories() {
        let (_dir, store) = LocalDirStore::in_temp_dir("local-store");
        for key in ["plays/date=2026-01-01/a.parquet", "plays/date=2026-01-02/b.parquet", "catalogue/c.parquet"] {
            store.put(key, Bytes::from_static(b"x"), "application/octet-stream").await.unwrap();
        }
        let keys: Vec<_> = store.list("plays/date=2026-01-0").await.unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["plays/date=2026-01-01/a.parquet", "plays/date=2026-01-02/b.parquet"]);
        assert_eq!(store.list("").await.unwrap().len(), 3);
        assert!(store.list("missing/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_conditional_create_creates_once_and_never_replaces() {
        let (_dir, store) = LocalDirStore::in_temp_dir("local-store");
        let key = "jobs/run-1/acme.json";
        let first = store.put_if_absent(key, Bytes::from_static(b"{\"n\":1}"), "application/json").await.unwrap();
        assert_eq!(first, PutOutcome::Created);
        let second = store.put_if_absent(key, Bytes::from_static(b"{\"n\":2}"), "application/json").await.unwrap();
        assert_eq!(second, PutOutcome::AlreadyExists);
        assert_eq!(&store.get(key).await.unwrap()[..], b"{\"n\":1}");
        // No temporary file is left beside the object.
        let names: Vec<_> = std::fs::read_dir(store.root().join("jobs/run-1"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["acme.json"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_concurrent_conditional_creates_exactly_one_wins() {
        let (_dir, store) = LocalDirStore::in_temp_dir("local-store");
        let mut attempts = tokio::task::JoinSet::new();
        for i in 0..8u8 {
            let store = store.clone();
            attempts.spawn(async move {
                let outcome = store.put_if_absent("jobs/once.json", Bytes::from(vec![i; 64 * 1024]), "x").await;
                (i, outcome.unwrap())
            });
        }
        let mut winners = Vec::new();
        while let Some(attempt) = attempts.join_next().await {
            let (i, outcome) = attempt.unwrap();
            if outcome == PutOutcome::Created {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        assert_eq!(store.get("jobs/once.json").await.unwrap(), vec![winners[0]; 64 * 1024]);
        assert_eq!(std::fs::read_dir(store.root().join("jobs")).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn a_write_conditional_on_a_version_replaces_only_that_version() {
        let (_dir, store) = LocalDirStore::in_temp_dir("local-store");
        let key = "status/run/acme/all.json";
        let ConditionalPut::Written(first) =
            store.put_conditional(key, Bytes::from_static(b"one"), "x", WriteCondition::Absent).await.unwrap()
        else {
            panic!("the first create failed")
        };
        assert_eq!(store.get_versioned(key).await.unwrap().version, first);
        let second = store.put_conditional(key, Bytes::from_static(b"two"), "x", WriteCondition::Unchanged(&first));
        let ConditionalPut::Written(second) = second.await.unwrap() else { panic!("the matching write failed") };
        let stale = store.put_conditional(key, Bytes::from_static(b"three"), "x", WriteCondition::Unchanged(&first));
        assert_eq!(stale.await.unwrap(), ConditionalPut::ConditionFailed);
        assert_eq!(&store.get(key).await.unwrap()[..], b"two");
        let gone = store.put_conditional("status/none.json", Bytes::new(), "x", WriteCondition::Unchanged(&second));
        assert_eq!(gone.await.unwrap(), ConditionalPut::ConditionFailed);
    }

    #[tokio::test]
    async fn reading_a_missing_object_names_it() {
        let (_dir, store) = LocalDirStore::in_temp_dir("local-store");
        let err = store.get("nope.json").await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }));
        assert!(err.to_string().contains("nope.json"), "{err}");
    }
}
