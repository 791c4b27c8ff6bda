//! The hardening of every process the agent starts, prepared once (the
//! seccomp program, the Landlock ruleset) and applied between fork and exec
//! in this order: signal mask reset, new session, capabilities dropped,
//! `no_new_privs`, Landlock, seccomp last.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use rauha_guest_agent::config::{Hardening, Ready};
use rauha_guest_agent::protocol::User;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use crate::landlock;

/// x32 system calls share x86_64's audit arch; deny their numbers too.
const X32_BIT: i64 = 0x4000_0000;

/// Hardening ready to apply in a forked child.
#[derive(Clone)]
pub struct Prepared {
    keep_caps: u64,
    last_cap: u32,
    seccomp: Option<Arc<BpfProgram>>,
    landlock: Option<Arc<OwnedFd>>,
    landlock_abi: u32,
    notes: Vec<String>,
    /// The zone's work cgroup (`cgroup.procs`, opened before pivot_root).
    work_cgroup: Option<Arc<OwnedFd>>,
}

impl Prepared {
    /// The work cgroup every started process joins first.
    pub fn with_work_cgroup(mut self, procs: Option<Arc<OwnedFd>>) -> Prepared {
        self.work_cgroup = procs;
        self
    }

    pub fn new(h: &Hardening) -> io::Result<Prepared> {
        Prepared::new_in(h, None)
    }

    /// For a process of a container root: Landlock's paths are the
    /// container's, opened inside `root`.
    pub fn new_in(h: &Hardening, root: Option<&std::path::Path>) -> io::Result<Prepared> {
        let mut notes = Vec::new();
        let keep_caps = h
            .capabilities
            .iter()
            .filter(|c| **c < 64)
            .fold(0u64, |m, c| m | (1 << c));
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        let seccomp = if h.deny_syscalls.is_empty() {
            notes.push("seccomp: the policy denies no system calls".to_string());
            None
        } else {
            let mut rules = BTreeMap::new();
            for nr in &h.deny_syscalls {
                rules.insert(i64::from(*nr), vec![]);
                rules.insert(i64::from(*nr) | X32_BIT, vec![]);
            }
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(libc::EPERM as u32),
                TargetArch::x86_64,
            )
            .map_err(|e| io::Error::other(format!("cannot build the seccomp filter: {e}")))?;
            let program: BpfProgram = filter.try_into().map_err(|e| {
                io::Error::other(format!("cannot compile the seccomp filter: {e:?}"))
            })?;
            Some(Arc::new(program))
        };
        let abi = landlock::abi();
        let landlock = if abi == 0 {
            notes.push("landlock: not available in this kernel".to_string());
            None
        } else if h.landlock_read.is_empty() && h.landlock_write.is_empty() {
            notes.push("landlock: the policy has no filesystem rules".to_string());
            None
        } else {
            Some(Arc::new(landlock::ruleset(
                abi,
                root,
                &h.landlock_read,
                &h.landlock_write,
            )?))
        };
        Ok(Prepared {
            keep_caps,
            last_cap,
            landlock_abi: if landlock.is_some() { abi } else { 0 },
            seccomp,
            landlock,
            notes,
            work_cgroup: None,
        })
    }

    pub fn work_cgroup(&self) -> Option<Arc<OwnedFd>> {
        self.work_cgroup.clone()
    }

    pub fn ready(&self) -> Ready {
        Ready {
            landlock_abi: self.landlock_abi,
            seccomp: self.seccomp.is_some(),
            notes: self.notes.clone(),
        }
    }

    /// Runs in the child between fork and exec: only system calls, no
    /// allocation. `user` switches identity after the bounding set is
    /// dropped (a non-root user keeps no capabilities); `tty` makes stdin
    /// the controlling terminal of the new session.
    pub fn apply(&self, user: Option<&User>, tty: bool) -> io::Result<()> {
        if let Some(fd) = &self.work_cgroup {
            join_cgroup(fd.as_raw_fd())?;
        }
        // SAFETY: each call below is a plain system call on values owned by
        // this process; none allocates.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::setsid();
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            for cap in 0..=self.last_cap {
                if self.keep_caps & (1 << cap) == 0
                    && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            );
            let mut keep = self.keep_caps;
            if let Some(u) = user {
                if libc::setgroups(u.groups.len(), u.groups.as_ptr()) < 0
                    || libc::setgid(u.gid) < 0
                    || libc::setuid(u.uid) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                if u.uid != 0 {
                    // setuid to a non-root user emptied the permitted set.
                    keep = 0;
                }
            }
            let header = CapHeader {
                version: LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            let low = (keep & 0xffff_ffff) as u32;
            let high = (keep >> 32) as u32;
            let data = [
                CapData {
                    effective: low,
                    permitted: low,
                    inheritable: low,
                },
                CapData {
                    effective: high,
                    permitted: high,
                    inheritable: high,
                },
            ];
            if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(fd) = &self.landlock {
            landlock::restrict_self(fd.as_raw_fd())?;
        }
        if let Some(program) = &self.seccomp {
            seccompiler::apply_filter(program).map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(())
    }
}

/// Writes the calling process's pid to an open `cgroup.procs`, formatting
/// it on the stack (no allocation between fork and exec).
fn join_cgroup(fd: i32) -> io::Result<()> {
    // SAFETY: getpid has no preconditions.
    let mut pid = unsafe { libc::getpid() } as u32;
    let mut buf = [0u8; 12];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (pid % 10) as u8;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    // SAFETY: writing bytes from a live stack buffer to an open fd.
    if unsafe { libc::write(fd, buf[i..].as_ptr().cast(), buf.len() - i) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
