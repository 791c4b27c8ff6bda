//! Freezing a cgroup (pausing a zone's work) and waiting until the kernel
//! says it is frozen or thawed: v2's `cgroup.freeze` and `cgroup.events`,
//! v1's `freezer.state`.

use std::path::Path;
use std::time::{Duration, Instant};

use super::files::CgroupFiles;
use super::{io_err, CgroupError};

/// Which version's freezer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Freezer {
    V1,
    V2,
}

impl Freezer {
    /// The file to write and the value that asks for `frozen`.
    fn request(self, frozen: bool) -> (&'static str, &'static str) {
        match (self, frozen) {
            (Freezer::V2, true) => ("cgroup.freeze", "1"),
            (Freezer::V2, false) => ("cgroup.freeze", "0"),
            (Freezer::V1, true) => ("freezer.state", "FROZEN"),
            (Freezer::V1, false) => ("freezer.state", "THAWED"),
        }
    }

    /// Whether the kernel's report says the state was reached.
    fn reached(self, fs: &dyn CgroupFiles, dir: &Path, frozen: bool) -> bool {
        match self {
            Freezer::V2 => fs
                .read(&dir.join("cgroup.events"))
                .unwrap_or_default()
                .lines()
                .any(|l| l == if frozen { "frozen 1" } else { "frozen 0" }),
            Freezer::V1 => {
                fs.read(&dir.join("freezer.state"))
                    .unwrap_or_default()
                    .trim()
                    == if frozen { "FROZEN" } else { "THAWED" }
            }
        }
    }

    /// Asks for the state, without waiting (a teardown's freeze).
    pub(super) fn ask(self, fs: &dyn CgroupFiles, dir: &Path, frozen: bool) {
        let (file, value) = self.request(frozen);
        let _ = fs.write(&dir.join(file), value);
    }

    /// Freezes or thaws `dir` and waits (5 s at most) until the kernel
    /// reports it. A v1 freezer can stay in FREEZING while tasks fork (the
    /// new child escapes the pass): as runc does, it thaws and freezes
    /// again. A freeze that does not finish is undone.
    pub(super) fn set(
        self,
        fs: &dyn CgroupFiles,
        dir: &Path,
        frozen: bool,
    ) -> Result<(), CgroupError> {
        let (file, value) = self.request(frozen);
        let path = dir.join(file);
        fs.write(&path, value).map_err(io_err(&path))?;
        let started = Instant::now();
        let mut tried = Instant::now();
        loop {
            if self.reached(fs, dir, frozen) {
                return Ok(());
            }
            if self == Freezer::V1 && frozen && tried.elapsed() > Duration::from_millis(200) {
                let _ = fs.write(&path, "THAWED");
                std::thread::sleep(Duration::from_millis(2));
                fs.write(&path, value).map_err(io_err(&path))?;
                tried = Instant::now();
            }
            if started.elapsed() > Duration::from_secs(5) {
                if frozen {
                    // Never leave the work half-frozen behind an error.
                    let _ = fs.write(&path, self.request(false).1);
                }
                return Err(CgroupError::Freeze {
                    path: dir.display().to_string(),
                    state: if frozen { "frozen" } else { "thawed" },
                    waited_ms: started.elapsed().as_millis(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
