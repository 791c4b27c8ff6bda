//! The pids controller: the most processes and threads a cgroup holds.
//! Its files are the same in both versions.

use std::path::Path;

use super::files::CgroupFiles;
use super::hierarchy::{read_u64, write};
use super::CgroupError;

/// `pids.max` (`max` without a limit).
pub(super) fn set(fs: &dyn CgroupFiles, dir: &Path, max: Option<u64>) -> Result<(), CgroupError> {
    write(
        fs,
        dir,
        "pids.max",
        &max.map_or("max".to_string(), |p| p.to_string()),
    )
}

/// (current, max); 0 for what cannot be read (`max` included).
pub(super) fn current_and_max(fs: &dyn CgroupFiles, dir: &Path) -> (u64, u64) {
    (
        read_u64(fs, dir, "pids.current").unwrap_or(0),
        read_u64(fs, dir, "pids.max").unwrap_or(0),
    )
}
