//! The repository's shape, checked: the library's modules form layers (no
//! module imports, directly or through others, a module that imports it),
//! `lib.rs`'s map names every module, no library file is too long to read
//! in one sitting, and the repository stands on its own (no path outside it,
//! no citation of a handbook it does not hold, no tracker numbers in its
//! docs' headings, a README that is a door rather than the house).
//!
//! Imports are read from the source text, as a reviewer reads them: `use`
//! paths and inline paths starting with `crate::` or `super::`, and a
//! `mod.rs`'s re-exports of its children. Comments and `#[cfg(test)]`
//! modules at the end of a file do not count: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

/// Every `.rs` file under `dir`, as paths relative to it.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap_or_else(|e| panic!("read {}: {e}", next.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    found.sort();
    found
}

/// The module path of a file: `delivery/mod.rs` is `["delivery"]`, `lib.rs` is `[]`.
fn module_of(file: &Path) -> Vec<String> {
    let mut segments: Vec<String> = file.with_extension("").iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
        segments.pop();
    }
    segments
}

/// A file's code without its trailing test module and without comments.
fn code_of(source: &str) -> String {
    let body = match source.find("#[cfg(test)]") {
        Some(at) => &source[..at],
        None => source,
    };
    body.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Each run of `name::name::…` that starts at `start` in `code`.
fn paths_after<'c>(code: &'c str, start: &'c str) -> impl Iterator<Item = Vec<String>> + 'c {
    code.match_indices(start).filter_map(move |(at, _)| {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        let rest = &code[at + start.len()..];
        let mut segments = Vec::new();
        let mut remaining = rest;
        loop {
            let end = remaining.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(remaining.len());
            if end == 0 {
                break;
            }
            segments.push(remaining[..end].to_owned());
            match remaining[end..].strip_prefix("::") {
                Some(next) => remaining = next,
                None => break,
            }
        }
        Some(segments)
    })
}

struct ModuleGraph {
    /// file → the files it imports.
    edges: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
}

impl ModuleGraph {
    fn of(src: &Path) -> ModuleGraph {
        let files = rust_files(src);
        let modules: BTreeMap<Vec<String>, PathBuf> = files.iter().map(|f| (module_of(f), f.clone())).collect();
        // The longest prefix of `path` that names a module file.
        let resolve = |path: &[String]| -> Option<PathBuf> {
            (1..=path.len()).rev().find_map(|n| modules.get(&path[..n]).cloned())
        };
        let mut edges = BTreeMap::new();
        for file in &files {
            let source = std::fs::read_to_string(src.join(file)).expect("a source file");
            let code = code_of(&source);
            let module = module_of(file);
            let is_folder_module = matches!(file.file_name().and_then(|n| n.to_str()), Some("mod.rs" | "lib.rs"));
            let mut targets = BTreeSet::new();
            for path in paths_after(&code, "crate::") {
                targets.extend(resolve(&path));
            }
            // `super::` from `a/b.rs` is `a`; from `a/b/mod.rs` it is `a` too.
            let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
            for path in paths_after(&code, "super::") {
                let mut full = parent.clone();
                full.extend(path);
                targets.extend(resolve(&full));
            }
            if is_folder_module {
                for prefix in ["use ", "pub use "] {
                    for path in paths_after(&code, prefix) {
                        let mut full = module.clone();
                        full.extend(path);
                        targets.extend(resolve(&full));
                    }
                }
            }
            targets.remove(file);
            edges.insert(file.clone(), targets);
        }
        ModuleGraph { edges }
    }

    /// The strongly connected components of more than one file (Tarjan).
    fn circles(&self) -> Vec<Vec<PathBuf>> {
        struct Walk<'g> {
            graph: &'g ModuleGraph,
            index: BTreeMap<&'g PathBuf, usize>,
            low: BTreeMap<&'g PathBuf, usize>,
            stack: Vec<&'g PathBuf>,
            on_stack: BTreeSet<&'g PathBuf>,
            circles: Vec<Vec<PathBuf>>,
        }
        impl<'g> Walk<'g> {
            fn visit(&mut self, file: &'g PathBuf) {
                let n = self.index.len();
                self.index.insert(file, n);
                self.low.insert(file, n);
                self.stack.push(file);
                self.on_stack.insert(file);
                for next in &self.graph.edges[file] {
                    if !self.index.contains_key(next) {
                        self.visit(next);
                        let low = self.low[file].min(self.low[next]);
                        self.low.insert(file, low);
                    } else if self.on_stack.contains(next) {
                        let low = self.low[file].min(self.index[next]);
                        self.low.insert(file, low);
                    }
                }
                if self.low[file] == self.index[file] {
                    let mut component = Vec::new();
                    while let Some(top) = self.stack.pop() {
                        self.on_stack.remove(top);
                        component.push(top.clone());
                        if top == file {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort();
                        self.circles.push(component);
                    }
                }
            }
        }
        let mut walk = Walk {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            circles: Vec::new(),
        };
        for file in self.edges.keys() {
            if !walk.index.contains_key(file) {
                walk.visit(file);
            }
        }
        walk.circles
    }
}

#[test]
fn no_library_module_imports_a_module_that_imports_it() {
    let graph = ModuleGraph::of(&workspace_root().join("shared/src"));
    assert!(graph.edges.len() > 40, "the library's files were found ({})", graph.edges.len());
    let tenant = &graph.edges[Path::new("tenant/parse.rs")];
    assert!(tenant.contains(Path::new("connector_registry.rs")), "imports are read: {tenant:?}");
    let circles = graph.circles();
    assert!(
        circles.is_empty(),
        "import circles in shared/src (each list imports itself through the others): {circles:#?}"
    );
}

#[test]
fn the_tenant_model_knows_nothing_of_delivery() {
    let graph = ModuleGraph::of(&workspace_root().join("shared/src"));
    for (file, targets) in &graph.edges {
        if file.starts_with("tenant") || file == Path::new("connector_registry.rs") {
            let upward: Vec<_> =
                targets.iter().filter(|t| t.starts_with("delivery") || t.starts_with("handlers")).collect();
            assert!(upward.is_empty(), "{} imports {upward:?}, above it", file.display());
        }
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::create_dir(dir.path().join("a")).expect("a folder");
    std::fs::write(dir.path().join("lib.rs"), "pub mod a;\npub mod b;\n").expect("write");
    std::fs::write(dir.path().join("a/mod.rs"), "pub mod x;\npub use x::X;\n").expect("write");
    std::fs::write(dir.path().join("a/x.rs"), "use crate::b::Y;\npub struct X;\n").expect("write");
    std::fs::write(dir.path().join("b.rs"), "use crate::a::X;\npub struct Y;\n").expect("write");
    let circles = ModuleGraph::of(dir.path()).circles();
    assert_eq!(circles, [vec![PathBuf::from("a/mod.rs"), PathBuf::from("a/x.rs"), PathBuf::from("b.rs")]]);
}

#[test]
fn the_library_map_names_every_module() {
    let lib = std::fs::read_to_string(workspace_root().join("shared/src/lib.rs")).expect("lib.rs");
    let declared: Vec<&str> = lib.lines().filter_map(|line| line.strip_prefix("pub mod ")?.strip_suffix(';')).collect();
    assert!(declared.len() > 15, "{declared:?}");
    for module in declared {
        assert!(lib.contains(&format!("//! - [`{module}`]: ")), "lib.rs's map has no line for `{module}`");
    }
}

#[test]
fn no_library_file_is_over_a_thousand_lines_apart_from_its_tests() {
    let src = workspace_root().join("shared/src");
    let mut too_long = Vec::new();
    for file in rust_files(&src) {
        let source = std::fs::read_to_string(src.join(&file)).expect("a source file");
        let code_lines = source.find("#[cfg(test)]").map_or(source.as_str(), |at| &source[..at]).lines().count();
        if code_lines > 1_000 && file.file_name().is_none_or(|name| name != "tests.rs") {
            too_long.push(format!("{} ({code_lines} lines before its tests)", file.display()));
        }
    }
    assert!(too_long.is_empty(), "split these by concern: {too_long:?}");
}

/// Every file git tracks, read as text where it is text.
fn tracked_text_files() -> Vec<(String, String)> {
    let root = workspace_root();
    let listed = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(&root)
        .output()
        .expect("git ls-files runs");
    assert!(listed.status.success(), "git ls-files: {}", String::from_utf8_lossy(&listed.stderr));
    String::from_utf8(listed.stdout)
        .expect("file names are UTF-8")
        .split('\0')
        .filter(|name| !name.is_empty() && !name.ends_with(".png") && name != &"Cargo.lock")
        .filter_map(|name| Some((name.to_owned(), std::fs::read_to_string(root.join(name)).ok()?)))
        .collect()
}

#[test]
fn the_repository_cites_nothing_outside_itself() {
    let files = tracked_text_files();
    assert!(files.len() > 100, "git's files were read ({})", files.len());
    // Written split so that this file does not match itself.
    let outside = ["../", "shared/"].concat();
    let handbook = ["DESIGN", " §"].concat();
    let handbook_file = ["DESIGN", ".md"].concat();
    let mut found = Vec::new();
    for (name, text) in &files {
        for (n, line) in text.lines().enumerate() {
            if line.contains(&outside) || line.contains(&handbook) || line.contains(&handbook_file) {
                found.push(format!("{name}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "cite docs/ sections by name instead ({} lines): {:#?}",
        found.len(),
        &found[..found.len().min(30)]
    );
}

#[test]
fn docs_headings_name_what_they_are_not_tracker_numbers() {
    let mut found = Vec::new();
    for (name, text) in tracked_text_files().iter().filter(|(name, _)| name.ends_with(".md")) {
        for line in text.lines().filter(|line| line.starts_with('#')) {
            let lower = line.to_ascii_lowercase();
            let numbered = lower
                .match_indices("issue ")
                .any(|(at, word)| lower[at + word.len()..].chars().next().is_some_and(|c| c.is_ascii_digit()));
            if numbered {
                found.push(format!("{name}: {line}"));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_readme_is_a_five_minute_read() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines: details belong in docs/");
}
