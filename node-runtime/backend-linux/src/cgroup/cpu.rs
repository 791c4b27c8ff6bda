//! The cpu controller: a relative weight and a hard limit in cores, and
//! the CPU time used (v1's cpuacct).

use std::path::Path;

use super::files::CgroupFiles;
use super::hierarchy::{keyed, read_u64, tree, write};
use super::{io_err, CgroupError, PERIOD_US};

/// v2: `cpu.weight` from v1's shares scale (2-262144 onto 1-10000), and
/// `cpu.max` (`max` without a limit).
pub(super) fn set_v2(
    fs: &dyn CgroupFiles,
    dir: &Path,
    shares: Option<u64>,
    limit: Option<f64>,
) -> Result<(), CgroupError> {
    if let Some(shares) = shares {
        let weight = 1 + (shares.saturating_sub(2) * 9999) / 262_142;
        write(fs, dir, "cpu.weight", &weight.to_string())?;
    }
    let max = limit.map_or("max".to_string(), |c| {
        format!("{}", (c * PERIOD_US as f64) as u64)
    });
    write(fs, dir, "cpu.max", &format!("{max} {PERIOD_US}"))
}

/// v1: `cpu.shares` (1024 by default), the period and the quota (-1
/// without a limit). A quota below a container's is refused while the
/// container's stands: theirs are lowered first.
pub(super) fn set_v1(
    fs: &dyn CgroupFiles,
    dir: &Path,
    shares: Option<u64>,
    limit: Option<f64>,
) -> Result<(), CgroupError> {
    write(fs, dir, "cpu.shares", &shares.unwrap_or(1024).to_string())?;
    write(fs, dir, "cpu.cfs_period_us", &PERIOD_US.to_string())?;
    let quota = limit.map_or(-1, |c| (c * PERIOD_US as f64) as i64);
    if quota > 0 {
        for d in tree(fs, &[dir.to_path_buf()]) {
            let file = d.join("cpu.cfs_quota_us");
            let theirs = fs
                .read(&file)
                .ok()
                .and_then(|q| q.trim().parse::<i64>().ok());
            if d != dir && theirs.is_some_and(|t| t > quota) {
                fs.write(&file, &quota.to_string()).map_err(io_err(&file))?;
            }
        }
    }
    write(fs, dir, "cpu.cfs_quota_us", &quota.to_string())
}

/// v1: the cgroup's own quota in cores, when it has one.
pub(super) fn quota_v1(fs: &dyn CgroupFiles, dir: &Path) -> Option<f64> {
    fs.read(&dir.join("cpu.cfs_quota_us"))
        .ok()
        .and_then(|q| q.trim().parse::<i64>().ok())
        .filter(|q| *q > 0)
        .map(|q| q as f64 / PERIOD_US as f64)
}

/// CPU time used, in microseconds.
pub(super) fn used_us_v2(fs: &dyn CgroupFiles, dir: &Path) -> u64 {
    keyed(fs, dir, "cpu.stat", "usage_usec").unwrap_or(0)
}

/// CPU time by mode and CFS throttling, in µs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct CpuUse {
    pub total_us: u64,
    pub user_us: u64,
    pub system_us: u64,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_us: u64,
}

/// v2: all in `cpu.stat`.
pub(super) fn use_v2(fs: &dyn CgroupFiles, dir: &Path) -> CpuUse {
    let stat = |key| keyed(fs, dir, "cpu.stat", key).unwrap_or(0);
    CpuUse {
        total_us: used_us_v2(fs, dir),
        user_us: stat("user_usec"),
        system_us: stat("system_usec"),
        periods: stat("nr_periods"),
        throttled_periods: stat("nr_throttled"),
        throttled_us: stat("throttled_usec"),
    }
}

/// v1: `cpuacct.stat` (in USER_HZ ticks, 100 a second on Linux) in the
/// cpuacct directory, `cpu.stat` (`throttled_time` in ns) in the cpu one.
pub(super) fn use_v1(fs: &dyn CgroupFiles, cpuacct: &Path, cpu: &Path) -> CpuUse {
    const US_PER_TICK: u64 = 10_000;
    let ticks = |key| keyed(fs, cpuacct, "cpuacct.stat", key).unwrap_or(0);
    let stat = |key| keyed(fs, cpu, "cpu.stat", key).unwrap_or(0);
    CpuUse {
        total_us: used_us_v1(fs, cpuacct),
        user_us: ticks("user").saturating_mul(US_PER_TICK),
        system_us: ticks("system").saturating_mul(US_PER_TICK),
        periods: stat("nr_periods"),
        throttled_periods: stat("nr_throttled"),
        throttled_us: stat("throttled_time") / 1000,
    }
}

/// v1: from `cpuacct.usage` (nanoseconds) in the cpuacct directory.
pub(super) fn used_us_v1(fs: &dyn CgroupFiles, cpuacct: &Path) -> u64 {
    read_u64(fs, cpuacct, "cpuacct.usage").unwrap_or(0) / 1000
}
