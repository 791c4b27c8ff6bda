//! The cgroups rauhad made on the way to a zone a client put under a
//! parent of its choosing (`/kubepods/burstable/pod<uid>/<zone>`, with the
//! pod's cgroup missing in a hierarchy kubelet does not use): recorded in
//! a file in rauhad's state dir before they are made, and removed, once
//! empty, when the last zone below them goes. What rauhad found there it
//! leaves alone: kubelet's QoS cgroups outlive every pod.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rauha_spec::policy::ResourcesSection;

use super::{CgroupDriver, CgroupError, ZoneCgroup};

/// The record of the cgroups made for zones' parents, and the lock that
/// keeps a zone's creation from racing the removal of its parent.
#[derive(Debug)]
pub struct MadeParents {
    file: PathBuf,
    lock: Mutex<()>,
}

impl MadeParents {
    /// Kept in `file` (one directory per line).
    pub fn new(file: PathBuf) -> MadeParents {
        MadeParents {
            file,
            lock: Mutex::new(()),
        }
    }

    /// Creates the zone's cgroup (`key`), recording each directory above
    /// it that did not exist and is made for it.
    pub fn create(
        &self,
        driver: &dyn CgroupDriver,
        key: &str,
        limits: &ResourcesSection,
    ) -> Result<ZoneCgroup, CgroupError> {
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let missing: Vec<PathBuf> = parents(driver, key)
            .into_iter()
            .filter(|d| !driver.files().exists(d))
            .collect();
        if !missing.is_empty() {
            let mut made = self.load();
            made.extend(missing);
            self.save(&made).map_err(super::io_err(&self.file))?;
        }
        driver.create(key, limits)
    }

    /// Once the zone's cgroup (`key`) is gone: removes the directories
    /// above it that were made for a zone and are now empty.
    pub fn remove_unused(&self, driver: &dyn CgroupDriver, key: &str) -> Result<(), CgroupError> {
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut made = self.load();
        let mut changed = false;
        // Deepest first: parents() lists each hierarchy's from the zone up.
        for dir in parents(driver, key) {
            if !made.contains(&dir) {
                continue;
            }
            match driver.files().remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Another zone (or kubelet's process) is in it still.
                Err(e) if is_in_use(&e) => continue,
                Err(e) => return Err(super::io_err(&dir)(e)),
            }
            made.remove(&dir);
            changed = true;
        }
        if changed {
            self.save(&made).map_err(super::io_err(&self.file))?;
        }
        Ok(())
    }

    fn load(&self) -> BTreeSet<PathBuf> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with('/'))
            .map(PathBuf::from)
            .collect()
    }

    /// Written beside and renamed over: a crash leaves the old record or
    /// the new, never half of one.
    fn save(&self, made: &BTreeSet<PathBuf>) -> io::Result<()> {
        let mut text = String::new();
        for d in made {
            text.push_str(&d.to_string_lossy());
            text.push('\n');
        }
        let tmp = self.file.with_extension("new");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.file)
    }
}

fn is_in_use(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EBUSY))
}

/// The directories above a zone's cgroup, up to (not including) each
/// hierarchy's root, from the zone up; none for a zone under rauhad's own
/// parent (a key that is not a path from the root).
fn parents(driver: &dyn CgroupDriver, key: &str) -> Vec<PathBuf> {
    let Some(from_root) = key.strip_prefix('/') else {
        return Vec::new();
    };
    let levels = Path::new(from_root).components().count().saturating_sub(1);
    let mut out = Vec::new();
    for dir in driver.zone_dirs(key) {
        let mut d = dir.as_path();
        for _ in 0..levels {
            match d.parent() {
                Some(p) => {
                    out.push(p.to_path_buf());
                    d = p;
                }
                None => break,
            }
        }
    }
    out
}
