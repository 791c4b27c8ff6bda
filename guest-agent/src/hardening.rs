//! The hardening of every process the agent starts, prepared once (the
//! seccomp program, the Landlock ruleset) and applied between fork and exec
//! in this order: signal mask reset, new session, capabilities dropped,
//! `no_new_privs`, Landlock, seccomp last.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use rauha_guest_agent::config::{Hardening, Ready};
use rauha_guest_agent::protocol::{
    Seccomp, SeccompAct, SeccompChoice, SeccompCmpOp as CmpOp, Security, User,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::landlock;

/// x32 system calls share x86_64's audit arch; deny their numbers too.
const X32_BIT: i64 = 0x4000_0000;

/// The `clone` flags that make a namespace (`CLONE_NEWTIME` included).
const NAMESPACE_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

/// A policy that denies `unshare` denies every other way to a new
/// namespace too: `clone` with a namespace flag fails with EPERM, and
/// `clone3`, whose flags sit in memory a seccomp filter cannot read, fails
/// with ENOSYS, so that libc falls back to the filterable `clone` (runc's
/// and Docker's default profiles do the same). A user namespace is the
/// usual first step of a kernel privilege escalation.
fn namespace_rules() -> io::Result<Vec<SeccompRule>> {
    NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let set = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(|e| io::Error::other(format!("seccomp clone condition: {e}")))?;
            SeccompRule::new(vec![set])
                .map_err(|e| io::Error::other(format!("seccomp clone rule: {e}")))
        })
        .collect()
}

/// One compiled filter: `rules` match with `action`, everything else is
/// allowed (x32 aliases included).
fn filter(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    action: SeccompAction,
) -> io::Result<Arc<BpfProgram>> {
    filter_with(rules, SeccompAction::Allow, action)
}

/// A filter whose `rules` match with `matched`, all else `mismatched`.
fn filter_with(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatched: SeccompAction,
    matched: SeccompAction,
) -> io::Result<Arc<BpfProgram>> {
    let mut all = BTreeMap::new();
    for (nr, r) in rules {
        all.insert(nr | X32_BIT, r.clone());
        all.insert(nr, r);
    }
    let filter = SeccompFilter::new(all, mismatched, matched, TargetArch::x86_64)
        .map_err(|e| io::Error::other(format!("cannot build the seccomp filter: {e}")))?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e| io::Error::other(format!("cannot compile the seccomp filter: {e:?}")))?;
    Ok(Arc::new(program))
}

fn action(a: SeccompAct) -> SeccompAction {
    match a {
        SeccompAct::Allow => SeccompAction::Allow,
        SeccompAct::Errno(n) => SeccompAction::Errno(n),
        SeccompAct::KillThread => SeccompAction::KillThread,
        SeccompAct::KillProcess => SeccompAction::KillProcess,
        SeccompAct::Trap => SeccompAction::Trap,
        SeccompAct::Trace(n) => SeccompAction::Trace(n),
        SeccompAct::Log => SeccompAction::Log,
    }
}

/// An OCI profile as stacked filters: one whose calls the profile allows
/// pass and all else gets its default action, then one per other action
/// for the calls it names. The kernel takes the strictest answer of all
/// filters, and of equal ones the last installed: the profile's answer.
fn profile_filters(p: &Seccomp) -> io::Result<Vec<Arc<BpfProgram>>> {
    let rules_of = |act: SeccompAct| -> io::Result<BTreeMap<i64, Vec<SeccompRule>>> {
        let mut by_nr: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
        for r in p.rules.iter().filter(|r| r.action == act) {
            let entry = by_nr
                .entry(i64::from(r.nr))
                .or_insert_with(|| Some(Vec::new()));
            if r.args.is_empty() {
                // Unconditional: the call matches whatever else is listed.
                *entry = None;
                continue;
            }
            let conditions = r
                .args
                .iter()
                .map(|c| {
                    let (op, value) = match c.op {
                        CmpOp::Ne => (SeccompCmpOp::Ne, c.value),
                        CmpOp::Lt => (SeccompCmpOp::Lt, c.value),
                        CmpOp::Le => (SeccompCmpOp::Le, c.value),
                        CmpOp::Eq => (SeccompCmpOp::Eq, c.value),
                        CmpOp::Ge => (SeccompCmpOp::Ge, c.value),
                        CmpOp::Gt => (SeccompCmpOp::Gt, c.value),
                        CmpOp::MaskedEq(mask) => (SeccompCmpOp::MaskedEq(mask), c.value),
                    };
                    SeccompCondition::new(c.index, SeccompCmpArgLen::Qword, op, value)
                        .map_err(|e| io::Error::other(format!("seccomp condition: {e}")))
                })
                .collect::<io::Result<Vec<_>>>()?;
            let rule = SeccompRule::new(conditions)
                .map_err(|e| io::Error::other(format!("seccomp rule: {e}")))?;
            if let Some(list) = entry {
                list.push(rule);
            }
        }
        Ok(by_nr
            .into_iter()
            .map(|(nr, r)| (nr, r.unwrap_or_default()))
            .collect())
    };
    let mut out = Vec::new();
    if p.default != SeccompAct::Allow {
        out.push(filter_with(
            rules_of(SeccompAct::Allow)?,
            action(p.default),
            SeccompAction::Allow,
        )?);
    }
    let mut others: Vec<SeccompAct> = p
        .rules
        .iter()
        .map(|r| r.action)
        .filter(|a| *a != SeccompAct::Allow)
        .collect();
    others.sort_unstable();
    others.dedup();
    for act in others {
        out.push(filter(rules_of(act)?, action(act))?);
    }
    Ok(out)
}

/// Capability sets of a process whose spec gives them (bit N: capability N).
#[derive(Clone, Copy)]
struct CapSets {
    bounding: u64,
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: u64,
}

/// Hardening ready to apply in a forked child.
#[derive(Clone)]
pub struct Prepared {
    keep_caps: u64,
    /// A pod container's own sets (its spec's), in place of `keep_caps`.
    caps: Option<CapSets>,
    /// `no_new_privs` (always, but for a pod container whose spec and
    /// policy let a setuid binary raise its privileges).
    no_new_privs: bool,
    last_cap: u32,
    /// The seccomp filters, installed in this order (`clone3`'s ENOSYS
    /// where namespaces are denied, then the policy's EPERM list).
    seccomp: Vec<Arc<BpfProgram>>,
    landlock: Option<Arc<OwnedFd>>,
    landlock_abi: u32,
    notes: Vec<String>,
    /// The zone's cgroups (opened before pivot_root).
    cgroups: Arc<ZoneCgroups>,
    /// A container's own cgroups (`cgroup.procs` in each hierarchy); when
    /// empty, the process joins the zone's work cgroup.
    own: Arc<Vec<OwnedFd>>,
    /// The zone's user namespace and the host id its root maps to.
    userns: Option<(Arc<OwnedFd>, u32)>,
}

/// Where started processes go, opened before pivot_root (the host paths
/// are out of reach after it): the zone's work cgroup, and the directories
/// in which rauhad makes a container's own cgroup (`DIR/NAME`, one per
/// hierarchy).
#[derive(Default)]
pub struct ZoneCgroups {
    work: Option<OwnedFd>,
    dirs: Vec<OwnedFd>,
}

impl ZoneCgroups {
    /// `work_procs`: the work cgroup's `cgroup.procs`; `container_dirs`:
    /// where containers' own cgroups are made.
    pub fn open(work_procs: Option<&str>, container_dirs: &[String]) -> io::Result<ZoneCgroups> {
        use std::os::unix::fs::OpenOptionsExt;
        let work = work_procs
            .map(|p| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot open {p}: {e}")))
            })
            .transpose()?
            .map(OwnedFd::from);
        let mut dirs = Vec::new();
        for dir in container_dirs {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(dir)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot open {dir}: {e}")))?;
            dirs.push(OwnedFd::from(f));
        }
        Ok(ZoneCgroups { work, dirs })
    }

    /// The `cgroup.procs` of container root `name`'s own cgroup in each
    /// hierarchy where rauhad made one (none on a host where it does not).
    fn of_root(&self, name: &str) -> io::Result<Vec<OwnedFd>> {
        if !rauha_guest_agent::config::valid_root_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a container root name"),
            ));
        }
        let rel = std::ffi::CString::new(format!("{name}/cgroup.procs"))?;
        let mut found = Vec::new();
        for dir in &self.dirs {
            // SAFETY: openat on a directory fd we own and a NUL-terminated path.
            let fd = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    rel.as_ptr(),
                    libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::NotFound {
                    continue;
                }
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot open container {name:?}'s cgroup: {e}"),
                ));
            }
            // SAFETY: openat returned a new descriptor that nothing else owns.
            found.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
        // rauhad makes a container's cgroup with its root: a root without
        // one is half-made (or half-removed); never run it unlimited.
        if found.is_empty() && !self.dirs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("container {name:?} has no cgroup of its own in the zone"),
            ));
        }
        Ok(found)
    }
}

impl Prepared {
    /// The zone's cgroups, where every started process goes first.
    pub fn with_cgroups(mut self, cgroups: Arc<ZoneCgroups>) -> Prepared {
        self.cgroups = cgroups;
        self
    }

    /// Processes enter the zone's user namespace (`base`: the host id its
    /// root maps to) before their capabilities are cut.
    pub fn with_userns(mut self, userns: Option<(Arc<OwnedFd>, u32)>) -> Prepared {
        self.userns = userns;
        self
    }

    /// A pod container's own capabilities, privileges and seccomp profile
    /// (held to its pod policy by the host), in place of the zone's.
    pub fn with_security(mut self, security: Option<&Security>) -> io::Result<Prepared> {
        let Some(s) = security else {
            return Ok(self);
        };
        self.caps = Some(CapSets {
            bounding: s.bounding,
            effective: s.effective,
            permitted: s.permitted,
            inheritable: s.inheritable,
            ambient: s.ambient,
        });
        self.no_new_privs = s.no_new_privileges;
        match &s.seccomp {
            SeccompChoice::Zone => {}
            SeccompChoice::Unconfined => self.seccomp = Vec::new(),
            SeccompChoice::Profile(p) => self.seccomp = profile_filters(p)?,
        }
        Ok(self)
    }

    /// Adds the detail of a layer that could not be applied.
    pub fn with_note(mut self, note: Option<String>) -> Prepared {
        self.notes.extend(note);
        self
    }

    pub fn userns(&self) -> Option<(Arc<OwnedFd>, u32)> {
        self.userns.clone()
    }

    /// Runs in the child between fork and exec, after it entered its root
    /// and directory (which take the host's privileges): into the zone's
    /// user namespace, as its root unless `user` is asked for.
    pub fn enter_userns(&self, user: Option<&User>) -> io::Result<()> {
        match &self.userns {
            Some((fd, _)) => crate::userns::enter(fd.as_raw_fd(), user.is_none()),
            None => Ok(()),
        }
    }

    /// A process of container root `name`: it joins the container's own
    /// cgroups, when rauhad made them, and gets a cgroup namespace rooted
    /// there (its /sys/fs/cgroup shows its own limits, as under runc).
    pub fn in_root_cgroup(mut self, name: &str) -> io::Result<Prepared> {
        self.own = Arc::new(self.cgroups.of_root(name)?);
        Ok(self)
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
        let mut seccomp = Vec::new();
        if h.deny_syscalls.is_empty() {
            notes.push("seccomp: the policy denies no system calls".to_string());
        } else {
            let mut rules: BTreeMap<i64, Vec<SeccompRule>> = h
                .deny_syscalls
                .iter()
                .map(|nr| (i64::from(*nr), vec![]))
                .collect();
            let no_namespaces = h.deny_syscalls.contains(&(libc::SYS_unshare as u32));
            if no_namespaces {
                rules.entry(libc::SYS_clone).or_insert(namespace_rules()?);
            }
            // clone3's filter first: the policy's may deny seccomp(2) itself.
            if no_namespaces {
                let clone3 = BTreeMap::from([(libc::SYS_clone3, vec![])]);
                seccomp.push(filter(clone3, SeccompAction::Errno(libc::ENOSYS as u32))?);
            }
            seccomp.push(filter(rules, SeccompAction::Errno(libc::EPERM as u32))?);
        }
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
            caps: None,
            no_new_privs: true,
            last_cap,
            landlock_abi: if landlock.is_some() { abi } else { 0 },
            seccomp,
            landlock,
            notes,
            cgroups: Arc::default(),
            own: Arc::default(),
            userns: None,
        })
    }

    pub fn cgroups(&self) -> Arc<ZoneCgroups> {
        self.cgroups.clone()
    }

    pub fn ready(&self) -> Ready {
        Ready {
            landlock_abi: self.landlock_abi,
            seccomp: !self.seccomp.is_empty(),
            notes: self.notes.clone(),
            user_namespace: self.userns.as_ref().map(|(_, base)| *base),
        }
    }

    /// Runs in the child between fork and exec: only system calls, no
    /// allocation. `user` switches identity after the bounding set is
    /// dropped (a non-root user keeps no capabilities, but those a pod
    /// container's spec gives it, as under runc); `tty` makes stdin the
    /// controlling terminal of the new session. Landlock and seccomp come
    /// last, or, where `no_new_privs` is not set, first, while the process
    /// still holds the CAP_SYS_ADMIN the kernel then asks for.
    pub fn apply(&self, user: Option<&User>, tty: bool) -> io::Result<()> {
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
        }
        if !self.no_new_privs {
            self.confine()?;
        }
        let bounding = self.caps.map_or(self.keep_caps, |c| c.bounding);
        // SAFETY: as above.
        unsafe {
            for cap in 0..=self.last_cap {
                if bounding & (1 << cap) == 0
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
                // A spec's sets outlive the change of user (runc's way).
                let keep_caps = self.caps.is_some();
                if keep_caps && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::setgroups(u.groups.len(), u.groups.as_ptr()) < 0
                    || libc::setgid(u.gid) < 0
                    || libc::setuid(u.uid) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                if keep_caps && libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if u.uid != 0 {
                    // setuid to a non-root user emptied the permitted set.
                    keep = 0;
                }
            }
            let (effective, permitted, inheritable) = match self.caps {
                Some(c) => (c.effective, c.permitted, c.inheritable),
                None => (keep, keep, keep),
            };
            let header = CapHeader {
                version: LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            let half = |set: u64| ((set & 0xffff_ffff) as u32, (set >> 32) as u32);
            let data = [
                CapData {
                    effective: half(effective).0,
                    permitted: half(permitted).0,
                    inheritable: half(inheritable).0,
                },
                CapData {
                    effective: half(effective).1,
                    permitted: half(permitted).1,
                    inheritable: half(inheritable).1,
                },
            ];
            if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(c) = self.caps {
                for cap in 0..=self.last_cap {
                    if c.ambient & (1 << cap) != 0
                        && libc::prctl(
                            libc::PR_CAP_AMBIENT,
                            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                            cap as libc::c_ulong,
                            0,
                            0,
                        ) < 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            if self.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if self.no_new_privs {
            self.confine()?;
        }
        Ok(())
    }

    /// Landlock, then the seccomp filters.
    fn confine(&self) -> io::Result<()> {
        if let Some(fd) = &self.landlock {
            landlock::restrict_self(fd.as_raw_fd())?;
        }
        for program in &self.seccomp {
            install_filter(program)?;
        }
        Ok(())
    }
}

/// Installs one seccomp filter. (Not seccompiler's `apply_filter`, which
/// sets `no_new_privs` first: a pod container may be let keep setuid.)
fn install_filter(program: &BpfProgram) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len())
            .map_err(|_| io::Error::other("seccomp filter too long"))?,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at the live program for the call's length; the
    // kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Prepared {
    /// Runs in the child first, before it enters a container root (whose
    /// cgroupfs is mounted from the namespace made here): joins the
    /// container's own cgroups, or the zone's work cgroup, and unshares the
    /// cgroup namespace there, so that no cgroup of the agent or of another
    /// container is in its view.
    pub fn join_cgroups(&self) -> io::Result<()> {
        if self.own.is_empty() {
            if let Some(fd) = &self.cgroups.work {
                join_cgroup(fd.as_raw_fd())?;
            }
        }
        for fd in self.own.iter() {
            join_cgroup(fd.as_raw_fd())?;
        }
        // SAFETY: unshare takes only flags.
        if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } < 0 {
            return Err(io::Error::last_os_error());
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
