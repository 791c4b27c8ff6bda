//! What both versions do to a tree of cgroups: walk it, list its pids,
//! kill everything in it and remove it; and reading a cgroup's files.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::files::CgroupFiles;
use super::{io_err, CgroupError};

/// `tops` and every cgroup below them, deepest first.
pub(super) fn tree(fs: &dyn CgroupFiles, tops: &[PathBuf]) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let mut next: Vec<PathBuf> = tops.iter().filter(|d| fs.is_dir(d)).cloned().collect();
    while let Some(d) = next.pop() {
        if let Ok(children) = fs.subdirs(&d) {
            next.extend(children);
        }
        all.push(d);
    }
    all.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    all.dedup();
    all
}

/// Kills every process in `dirs` and the cgroups below them, and removes
/// those cgroups deepest first; waits (10 s at most) for the killed to
/// leave. v2 kills a whole cgroup at once with `cgroup.kill` (a forking
/// process cannot outrun it); otherwise pid by pid, with `freeze(true)`
/// before each pass and `freeze(false)` after it.
pub(super) fn kill_and_remove(
    fs: &dyn CgroupFiles,
    dirs: &[PathBuf],
    freeze: impl Fn(bool),
) -> Result<(), CgroupError> {
    for d in dirs {
        let kill = d.join("cgroup.kill");
        if fs.exists(&kill) {
            let _ = fs.write(&kill, "1");
        }
    }
    let started = Instant::now();
    let mut pause = Duration::from_micros(500);
    loop {
        freeze(true);
        for pid in pids_in(fs, dirs)? {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        freeze(false);
        let mut left = false;
        for d in tree(fs, dirs) {
            match fs.remove_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => left = true,
            }
        }
        if !left {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(CgroupError::Busy {
                path: dirs[0].display().to_string(),
                waited_ms: started.elapsed().as_millis(),
            });
        }
        // Killed processes take a moment to leave the cgroup.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Host pids in the cgroups of `tops` and below them.
pub(super) fn pids_in(fs: &dyn CgroupFiles, tops: &[PathBuf]) -> Result<Vec<u32>, CgroupError> {
    let mut all = Vec::new();
    for d in tree(fs, tops) {
        let path = d.join("cgroup.procs");
        match fs.read(&path) {
            Ok(s) => all.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    all.sort_unstable();
    all.dedup();
    Ok(all)
}

/// Writes one cgroup file.
pub(super) fn write(
    fs: &dyn CgroupFiles,
    dir: &Path,
    file: &str,
    value: &str,
) -> Result<(), CgroupError> {
    let path = dir.join(file);
    fs.write(&path, value).map_err(io_err(&path))
}

/// A file holding one number; `None` when absent or not a number (`max`).
pub(super) fn read_u64(fs: &dyn CgroupFiles, dir: &Path, file: &str) -> Option<u64> {
    fs.read(&dir.join(file))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The value of `key` in a flat-keyed file (`usage_usec 12`).
pub(super) fn keyed(fs: &dyn CgroupFiles, dir: &Path, file: &str, key: &str) -> Option<u64> {
    fs.read(&dir.join(file)).ok()?.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}
