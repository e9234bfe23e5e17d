//! A read-only view of sysfs, procfs and `/dev` below a root directory: `/` on a real machine, a
//! fixture tree in tests. Nothing here writes.

use std::path::{Component, Path, PathBuf};

/// Reads system files below `root`. Paths given to its methods are absolute system paths
/// (`/proc/cmdline`) and are looked up below the root.
#[derive(Debug, Clone)]
pub struct SystemView {
    root: PathBuf,
}

impl Default for SystemView {
    fn default() -> Self {
        Self::new("/")
    }
}

impl SystemView {
    /// A view of the tree below `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this is the running system (root `/`): only then are live probes (io_uring,
    /// `O_DIRECT` opens, `dlopen`) meaningful.
    pub fn is_live(&self) -> bool {
        self.root.components().eq(Path::new("/").components())
    }

    /// The real path of the system path `abs` below the root.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let rel: PathBuf = abs
            .as_ref()
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        self.root.join(rel)
    }

    /// The content of a file, trimmed; `None` when it cannot be read.
    pub fn read(&self, abs: impl AsRef<Path>) -> Option<String> {
        std::fs::read_to_string(self.path(abs))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Whether the path exists.
    pub fn exists(&self, abs: impl AsRef<Path>) -> bool {
        self.path(abs).exists()
    }

    /// The names in a directory, sorted; empty when it cannot be read.
    pub fn list(&self, abs: impl AsRef<Path>) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.path(abs)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// The symlink-resolved form of a system path, as a system path (below the root, starting
    /// with `/`); `None` when it does not resolve inside the root.
    pub fn resolve(&self, abs: impl AsRef<Path>) -> Option<PathBuf> {
        let real = std::fs::canonicalize(self.path(abs)).ok()?;
        let root = std::fs::canonicalize(&self.root).ok()?;
        let rel = real.strip_prefix(&root).ok()?;
        Some(Path::new("/").join(rel))
    }
}
