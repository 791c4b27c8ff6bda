//! A recording cgroupfs for unit tests: files and directories in memory,
//! every write, mkdir and rmdir logged in order, and the kernel's part
//! played where the managers wait on it (the freezer's reported state, a
//! cgroup that is busy while it holds processes or children). The order of
//! writes is what it checks that a temp dir cannot (memsw lifted before
//! memory is lowered, children's quotas before their parent's).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::files::CgroupFiles;

#[derive(Default)]
struct Tree {
    files: BTreeMap<PathBuf, String>,
    dirs: BTreeSet<PathBuf>,
    log: Vec<String>,
    /// v1 freezer: how many more FROZEN requests stay in FREEZING (a task
    /// that forks during the pass).
    freezing_passes: u32,
}

#[derive(Default)]
pub struct RecordingFiles {
    tree: Mutex<Tree>,
}

impl RecordingFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A directory and its parents.
    pub fn dir(&self, path: &Path) {
        let mut t = self.lock();
        for a in path.ancestors() {
            t.dirs.insert(a.to_path_buf());
        }
    }

    /// A file the kernel would show (no log entry).
    pub fn file(&self, path: &Path, value: &str) {
        if let Some(parent) = path.parent() {
            self.dir(parent);
        }
        self.lock().files.insert(path.to_path_buf(), value.into());
    }

    /// The v1 freezer stays FREEZING for the next `n` FROZEN requests.
    pub fn freeze_slowly(&self, n: u32) {
        self.lock().freezing_passes = n;
    }

    /// Every operation so far, as `write PATH VALUE`, `mkdir PATH`,
    /// `rmdir PATH`.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// The writes to files named `name`, in order: (path, value).
    pub fn writes_to(&self, name: &str) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| l.starts_with("write ") && l.contains(&format!("/{name} ")))
            .collect()
    }

    pub fn content(&self, path: &Path) -> Option<String> {
        self.lock().files.get(path).cloned()
    }
}

impl CgroupFiles for RecordingFiles {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.lock()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        let mut t = self.lock();
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if !t.dirs.contains(&parent) {
            return Err(io::ErrorKind::NotFound.into());
        }
        t.log.push(format!("write {} {value}", path.display()));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // The kernel's part.
        match (name, value) {
            ("cgroup.freeze", v) => {
                t.files.insert(
                    parent.join("cgroup.events"),
                    format!("populated 0\nfrozen {v}\n"),
                );
            }
            ("freezer.state", "FROZEN") if t.freezing_passes > 0 => {
                t.freezing_passes -= 1;
                t.files.insert(path.to_path_buf(), "FREEZING\n".into());
                return Ok(());
            }
            _ => {}
        }
        t.files.insert(path.to_path_buf(), value.to_string());
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut t = self.lock();
        for a in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
            if t.dirs.insert(a.to_path_buf()) {
                t.log.push(format!("mkdir {}", a.display()));
            }
        }
        Ok(())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut t = self.lock();
        if t.dirs.contains(path) || t.files.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        t.dirs.insert(path.to_path_buf());
        t.log.push(format!("mkdir {}", path.display()));
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut t = self.lock();
        if !t.dirs.contains(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let has_children = t.dirs.iter().any(|d| d.parent() == Some(path));
        let has_procs = t
            .files
            .get(&path.join("cgroup.procs"))
            .is_some_and(|p| !p.trim().is_empty());
        if has_children || has_procs {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        t.dirs.remove(path);
        t.files.retain(|f, _| f.parent() != Some(path));
        t.log.push(format!("rmdir {}", path.display()));
        Ok(())
    }

    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let t = self.lock();
        if !t.dirs.contains(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(t.dirs
            .iter()
            .filter(|d| d.parent() == Some(path))
            .cloned()
            .collect())
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.lock().dirs.contains(path)
    }

    fn exists(&self, path: &Path) -> bool {
        let t = self.lock();
        t.dirs.contains(path) || t.files.contains_key(path)
    }

    fn ino(&self, path: &Path) -> Option<u64> {
        let t = self.lock();
        t.dirs.iter().position(|d| d == path).map(|i| i as u64 + 1)
    }
}
