//! The memory controller: a zone's limit (no swap beyond it) and what it
//! used, in either version's files.

use std::path::Path;

use super::hierarchy::{keyed, read_u64, tree, write};
use super::CgroupError;

/// What the memory controller reports for one cgroup.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct MemoryUse {
    pub current: u64,
    pub limit: u64,
    pub peak: u64,
    pub oom_kills: u64,
}

/// v2: `memory.max` (`max` without a limit) and no swap.
pub(super) fn set_v2(dir: &Path, limit: Option<u64>) -> Result<(), CgroupError> {
    let mem = limit.map_or("max".to_string(), |m| m.to_string());
    write(dir, "memory.max", &mem)?;
    if dir.join("memory.swap.max").exists() {
        write(dir, "memory.swap.max", "0")?;
    }
    Ok(())
}

/// v1: `memory.limit_in_bytes` (-1 without a limit), and the memory+swap
/// limit to the same, where the kernel has it. memsw must stay >= memory:
/// it is lifted first, then both are set.
pub(super) fn set_v1(dir: &Path, limit: Option<u64>) -> Result<(), CgroupError> {
    let mem = limit.map_or("-1".to_string(), |m| m.to_string());
    let memsw = dir.join("memory.memsw.limit_in_bytes").exists();
    if memsw {
        write(dir, "memory.memsw.limit_in_bytes", "-1")?;
    }
    write(dir, "memory.limit_in_bytes", &mem)?;
    if memsw {
        write(dir, "memory.memsw.limit_in_bytes", &mem)?;
    }
    Ok(())
}

pub(super) fn use_v2(dir: &Path) -> MemoryUse {
    MemoryUse {
        current: read_u64(dir, "memory.current").unwrap_or(0),
        limit: read_u64(dir, "memory.max").unwrap_or(0),
        peak: read_u64(dir, "memory.peak").unwrap_or(0),
        oom_kills: keyed(dir, "memory.events", "oom_kill").unwrap_or(0),
    }
}

pub(super) fn use_v1(dir: &Path) -> MemoryUse {
    MemoryUse {
        current: read_u64(dir, "memory.usage_in_bytes").unwrap_or(0),
        limit: read_u64(dir, "memory.limit_in_bytes").unwrap_or(0),
        peak: read_u64(dir, "memory.max_usage_in_bytes").unwrap_or(0),
        // v1 counts a kill only in the victim's own cgroup (v2's
        // memory.events counts it up the tree): add the containers'.
        oom_kills: tree(&[dir.to_path_buf()])
            .iter()
            .filter_map(|d| keyed(d, "memory.oom_control", "oom_kill"))
            .sum(),
    }
}
