//! The file operations the cgroup managers make, behind one small trait:
//! [`HostFiles`] makes them on cgroupfs; a test double can record them and
//! play the kernel's part (`tests.rs`), as youki's `syscall/test.rs` does.

use std::io;
use std::path::{Path, PathBuf};

pub trait CgroupFiles: Send + Sync {
    fn read(&self, path: &Path) -> io::Result<String>;
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Fails with `AlreadyExists` when `path` is there (a file included).
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Fails while the cgroup has processes (`EBUSY`) or children.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// The directories directly in `path`.
    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    fn is_dir(&self, path: &Path) -> bool;
    fn exists(&self, path: &Path) -> bool;
    /// The inode number (a cgroup2 directory's is its cgroup id).
    fn ino(&self, path: &Path) -> Option<u64>;
}

/// cgroupfs itself.
pub struct HostFiles;

impl CgroupFiles for HostFiles {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        std::fs::write(path, value)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(path)?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect())
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn ino(&self, path: &Path) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| m.ino())
    }
}
