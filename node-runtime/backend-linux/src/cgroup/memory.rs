//! The memory controller: a zone's limit (no swap beyond it) and what it
//! used, in either version's files.

use std::path::Path;

use super::files::CgroupFiles;
use super::hierarchy::{keyed, read_u64, tree, write};
use super::CgroupError;

/// What the memory controller reports for one cgroup.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct MemoryUse {
    pub current: u64,
    pub limit: u64,
    pub peak: u64,
    pub oom_kills: u64,
    pub rss: u64,
    pub cache: u64,
    pub mapped_file: u64,
    pub kernel: u64,
    pub swap: u64,
}

/// v2: `memory.max` (`max` without a limit) and no swap.
pub(super) fn set_v2(
    fs: &dyn CgroupFiles,
    dir: &Path,
    limit: Option<u64>,
) -> Result<(), CgroupError> {
    let mem = limit.map_or("max".to_string(), |m| m.to_string());
    write(fs, dir, "memory.max", &mem)?;
    if fs.exists(&dir.join("memory.swap.max")) {
        write(fs, dir, "memory.swap.max", "0")?;
    }
    Ok(())
}

/// v1: `memory.limit_in_bytes` (-1 without a limit), and the memory+swap
/// limit to the same, where the kernel has it. memsw must stay >= memory:
/// it is lifted first, then both are set.
pub(super) fn set_v1(
    fs: &dyn CgroupFiles,
    dir: &Path,
    limit: Option<u64>,
) -> Result<(), CgroupError> {
    let mem = limit.map_or("-1".to_string(), |m| m.to_string());
    let memsw = fs.exists(&dir.join("memory.memsw.limit_in_bytes"));
    if memsw {
        write(fs, dir, "memory.memsw.limit_in_bytes", "-1")?;
    }
    write(fs, dir, "memory.limit_in_bytes", &mem)?;
    if memsw {
        write(fs, dir, "memory.memsw.limit_in_bytes", &mem)?;
    }
    Ok(())
}

pub(super) fn use_v2(fs: &dyn CgroupFiles, dir: &Path) -> MemoryUse {
    MemoryUse {
        current: read_u64(fs, dir, "memory.current").unwrap_or(0),
        limit: read_u64(fs, dir, "memory.max").unwrap_or(0),
        peak: read_u64(fs, dir, "memory.peak").unwrap_or(0),
        oom_kills: keyed(fs, dir, "memory.events", "oom_kill").unwrap_or(0),
        rss: keyed(fs, dir, "memory.stat", "anon").unwrap_or(0),
        cache: keyed(fs, dir, "memory.stat", "file").unwrap_or(0),
        mapped_file: keyed(fs, dir, "memory.stat", "file_mapped").unwrap_or(0),
        kernel: keyed(fs, dir, "memory.stat", "kernel").unwrap_or(0),
        swap: read_u64(fs, dir, "memory.swap.current").unwrap_or(0),
    }
}

pub(super) fn use_v1(fs: &dyn CgroupFiles, dir: &Path) -> MemoryUse {
    let current = read_u64(fs, dir, "memory.usage_in_bytes").unwrap_or(0);
    MemoryUse {
        // The hierarchy's totals (`total_*`): the containers' included.
        rss: keyed(fs, dir, "memory.stat", "total_rss").unwrap_or(0),
        cache: keyed(fs, dir, "memory.stat", "total_cache").unwrap_or(0),
        mapped_file: keyed(fs, dir, "memory.stat", "total_mapped_file").unwrap_or(0),
        kernel: read_u64(fs, dir, "memory.kmem.usage_in_bytes").unwrap_or(0),
        // memsw counts memory and swap together (with swap accounting on).
        swap: read_u64(fs, dir, "memory.memsw.usage_in_bytes")
            .map_or(0, |both| both.saturating_sub(current)),
        current,
        limit: read_u64(fs, dir, "memory.limit_in_bytes").unwrap_or(0),
        peak: read_u64(fs, dir, "memory.max_usage_in_bytes").unwrap_or(0),
        // v1 counts a kill only in the victim's own cgroup (v2's
        // memory.events counts it up the tree): add the containers'.
        oom_kills: tree(fs, &[dir.to_path_buf()])
            .iter()
            .filter_map(|d| keyed(fs, d, "memory.oom_control", "oom_kill"))
            .sum(),
    }
}
