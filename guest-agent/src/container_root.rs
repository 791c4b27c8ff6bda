//! Entering a container root: a process of a pod's container runs in the
//! root filesystem the host prepared for that container (its image, with
//! its bind mounts and a /dev), inside the zone's namespaces but in a mount
//! namespace of its own, with a /proc of the zone's pid namespace, and the
//! zone's Landlock rules opened inside its root (`Prepared::new_in`).
//!
//! Everything is prepared before the fork; the child only makes system
//! calls.

use std::ffi::{CStr, CString};
use std::io;
use std::path::{Path, PathBuf};

use rauha_guest_agent::config::{valid_root_name, CONTAINERS_DIR};

use crate::kernel::{check, cpath};
use crate::rootfs::{PROC_MASKED, PROC_READ_ONLY};

/// A file the host puts next to a container root (`NAME/sysfs`) when the
/// container's spec mounts sysfs.
pub const SYSFS_MARK: &str = "sysfs";

/// A file the host puts next to a container root (`NAME/cgroup`) when the
/// container's spec mounts a cgroup filesystem at /sys/fs/cgroup.
pub const CGROUP_MARK: &str = "cgroup";

/// A file the host puts next to a container root (`NAME/readonly`) whose
/// spec asks for a read-only root (`root.readonly`): each process makes its
/// own view of it read-only too.
pub const READONLY_MARK: &str = "readonly";

/// A file the host puts next to a container root (`NAME/shared`) that has
/// an `rshared` volume (Kubernetes' Bidirectional): each process's mount
/// namespace keeps that volume a peer of the host's, so what the container
/// mounts there reaches the host. Without it, everything the process sees
/// is made a slave: its mounts go nowhere.
pub const SHARED_MARK: &str = "shared";

/// A file the host puts next to a container root (`NAME/pidns`) whose
/// processes get a PID namespace of their own (Kubernetes' default): the
/// first is PID 1 there, the later ones join it.
pub const PIDNS_MARK: &str = "pidns";

/// Where a process of a root with its own PID namespace goes.
pub enum PidNamespace {
    /// A new one: the root's first process (the container's init).
    New,
    /// The one its first process made (`/proc/PID/ns/pid_for_children` of
    /// the process that holds it).
    Join(std::fs::File),
}

/// Runs in the child, before it enters the root: moves what it execs into
/// `ns` as a child of its own (a process cannot change its own PID
/// namespace). Returns in that child only; this process stays behind as
/// its parent, with no descriptor at all, passes it every signal it gets
/// and ends as it ends (exit code or signal), so that to the agent it is
/// the process. SIGKILL, which cannot be passed on, kills both (the
/// child's parent-death signal).
///
/// # Safety
/// Only in a child the single-threaded agent forked, before exec.
pub unsafe fn enter_pid_namespace(ns: &PidNamespace) -> io::Result<()> {
    // SAFETY: system calls on values owned here; the caller guarantees
    // a forked, single-threaded child.
    unsafe {
        match ns {
            PidNamespace::New => check(libc::unshare(libc::CLONE_NEWPID))?,
            PidNamespace::Join(f) => check(libc::setns(
                std::os::fd::AsRawFd::as_raw_fd(f),
                libc::CLONE_NEWPID,
            ))?,
        };
        // Blocked before the fork: no signal is lost between it and the wait.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &all, &mut old);
        let child = libc::fork();
        if child < 0 {
            let e = io::Error::last_os_error();
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            return Err(e);
        }
        if child == 0 {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            return Ok(());
        }
        // Nothing of the agent's stays open here (its stdio included: the
        // output pipes end with the child's copies).
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&all, &mut info);
            if sig == libc::SIGCHLD {
                let mut status = 0;
                if libc::waitpid(child, &mut status, libc::WNOHANG) != child {
                    continue;
                }
                if libc::WIFEXITED(status) {
                    libc::_exit(libc::WEXITSTATUS(status));
                }
                let s = libc::WTERMSIG(status);
                libc::signal(s, libc::SIG_DFL);
                let mut one: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut one);
                libc::sigaddset(&mut one, s);
                libc::sigprocmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
                libc::kill(libc::getpid(), s);
                libc::_exit(128 + s);
            } else if sig > 0 {
                libc::kill(child, sig);
            }
        }
    }
}

/// The v1 controllers the zone has a cgroup of its own in (rauhad's), the
/// only hierarchies a container sees: in the zone's cgroup namespace their
/// root is the zone's cgroup. Others would show the host's tree.
const ZONE_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "cpuacct", "freezer"];

/// Under /sys, hidden as runc's default spec hides them.
const SYS_MASKED: &[&str] = &["firmware", "devices/virtual/powercap"];

/// A read-only sysfs of the zone's network namespace, at `dir`.
struct SysMount {
    dir: CString,
    masked: Vec<CString>,
    cgroup: Option<CgroupMount>,
}

/// The zone's cgroup hierarchies, read-only, at `dir` (`/sys/fs/cgroup`):
/// cgroup2 there on a unified host; on a v1 host a tmpfs with one
/// directory per hierarchy (`memory`, `cpu,cpuacct`, `unified`), and links
/// for the single names of joined ones (`cpu -> cpu,cpuacct`).
struct CgroupMount {
    dir: CString,
    unified_only: bool,
    hierarchies: Vec<Hierarchy>,
    links: Vec<(CString, CString)>,
}

struct Hierarchy {
    target: CString,
    /// `cgroup` or `cgroup2`.
    fstype: &'static CStr,
    /// The v1 controllers, as mount data.
    data: Option<CString>,
}

/// Which hierarchies of `/proc/self/cgroup` (`ID:CONTROLLERS:PATH` lines)
/// a container gets: (directory name, v1 controllers or None for cgroup2).
/// A unified-only host gives `[("", None)]`.
fn hierarchies(proc_self_cgroup: &str) -> Vec<(String, Option<String>)> {
    let mut v1 = Vec::new();
    let mut unified = false;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(_)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            unified = true;
        } else if controllers
            .split(',')
            .any(|c| ZONE_CONTROLLERS.contains(&c))
        {
            v1.push((controllers.to_string(), Some(controllers.to_string())));
        }
    }
    if v1.is_empty() {
        return if unified {
            vec![(String::new(), None)]
        } else {
            Vec::new()
        };
    }
    if unified {
        v1.push(("unified".to_string(), None));
    }
    v1
}

impl CgroupMount {
    fn new(dir: &Path) -> io::Result<CgroupMount> {
        let found = hierarchies(&std::fs::read_to_string("/proc/self/cgroup")?);
        let unified_only = matches!(found.as_slice(), [(name, None)] if name.is_empty());
        let mut hierarchies = Vec::new();
        let mut links = Vec::new();
        for (name, controllers) in &found {
            hierarchies.push(Hierarchy {
                target: cpath(&dir.join(name))?,
                fstype: if controllers.is_some() {
                    c"cgroup"
                } else {
                    c"cgroup2"
                },
                data: controllers.as_deref().map(CString::new).transpose()?,
            });
            if name.contains(',') {
                for single in name.split(',') {
                    links.push((CString::new(name.as_str())?, cpath(&dir.join(single))?));
                }
            }
        }
        Ok(CgroupMount {
            dir: cpath(dir)?,
            unified_only,
            hierarchies,
            links,
        })
    }

    /// In the child, over the read-only sysfs. Any failure stops the start.
    fn mount(&self) -> io::Result<()> {
        // SAFETY: plain system calls on NUL-terminated strings owned by self.
        unsafe {
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            let data = |h: &Hierarchy| {
                h.data
                    .as_ref()
                    .map_or(std::ptr::null(), |d| d.as_ptr().cast())
            };
            if self.unified_only {
                if let Some(h) = self.hierarchies.first() {
                    check(libc::mount(
                        h.fstype.as_ptr(),
                        self.dir.as_ptr(),
                        h.fstype.as_ptr(),
                        flags | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
                return Ok(());
            }
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.dir.as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                c"size=64k,mode=755".as_ptr().cast(),
            ))?;
            for h in &self.hierarchies {
                check(libc::mkdir(h.target.as_ptr(), 0o555))?;
                check(libc::mount(
                    h.fstype.as_ptr(),
                    h.target.as_ptr(),
                    h.fstype.as_ptr(),
                    flags | libc::MS_RDONLY,
                    data(h),
                ))?;
            }
            for (to, at) in &self.links {
                check(libc::symlink(to.as_ptr(), at.as_ptr()))?;
            }
            check(libc::mount(
                std::ptr::null(),
                self.dir.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_RDONLY | flags,
                c"size=64k,mode=755".as_ptr().cast(),
            ))?;
        }
        Ok(())
    }
}

pub struct EnterRoot {
    sys: Option<SysMount>,
    root: CString,
    proc_dir: CString,
    pts_source: CString,
    pts_target: CString,
    null: CString,
    masked: Vec<CString>,
    read_only: Vec<CString>,
    cwd: CString,
    readonly_root: bool,
    shared_volumes: bool,
    /// The root's processes have a PID namespace of their own.
    pub own_pid_namespace: bool,
}

/// The container root of `name`, as the agent sees it.
pub fn path(name: &str) -> io::Result<PathBuf> {
    if !valid_root_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a container root name"),
        ));
    }
    let root = Path::new(CONTAINERS_DIR).join(name).join("rootfs");
    if !root.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("container root {name:?} is not prepared in the zone"),
        ));
    }
    Ok(root)
}

/// The metadata of `inside` (a path of the container), following symlinks
/// within the container's root (`openat2(RESOLVE_IN_ROOT)`): an image's
/// absolute link such as `/bin/sh -> /bin/busybox` means its own busybox.
pub fn stat_in(root: &std::fs::File, inside: &str) -> Option<std::fs::Metadata> {
    crate::kernel::open_in_root(root, inside)
        .and_then(|f| f.metadata())
        .ok()
}

/// Signals every process whose root directory is container root `name`
/// (`/proc/PID/root` is that mount's root): its init, its execs and
/// whatever they started, in any process group.
pub fn signal_all(name: &str, signal: i32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata(path(name)?)?;
    let me = std::process::id();
    for pid in crate::kernel::proc_pids() {
        if pid == me {
            continue;
        }
        let Ok(m) = std::fs::metadata(format!("/proc/{pid}/root")) else {
            continue;
        };
        if m.dev() == root.dev() && m.ino() == root.ino() {
            // SAFETY: kill with plain integers, inside the zone's pid namespace.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
    }
    Ok(())
}

impl EnterRoot {
    pub fn new(root: &Path, cwd: &str) -> io::Result<EnterRoot> {
        let proc_dir = root.join("proc");
        // The host leaves this mark next to a root whose spec mounts sysfs.
        let marked = |mark: &str| root.parent().is_some_and(|base| base.join(mark).exists());
        let sys = if marked(SYSFS_MARK) {
            Some(SysMount {
                dir: cpath(&root.join("sys"))?,
                masked: SYS_MASKED
                    .iter()
                    .map(|n| cpath(&root.join("sys").join(n)))
                    .collect::<io::Result<_>>()?,
                cgroup: if marked(CGROUP_MARK) {
                    Some(CgroupMount::new(&root.join("sys/fs/cgroup"))?)
                } else {
                    None
                },
            })
        } else {
            None
        };
        Ok(EnterRoot {
            sys,
            root: cpath(root)?,
            proc_dir: cpath(&proc_dir)?,
            pts_source: cpath(Path::new("/dev/pts"))?,
            pts_target: cpath(&root.join("dev/pts"))?,
            null: cpath(&root.join("dev/null"))?,
            masked: PROC_MASKED
                .iter()
                .map(|n| cpath(&proc_dir.join(n)))
                .collect::<io::Result<_>>()?,
            read_only: PROC_READ_ONLY
                .iter()
                .map(|n| cpath(&proc_dir.join(n)))
                .collect::<io::Result<_>>()?,
            cwd: cpath(Path::new(if cwd.is_empty() { "/" } else { cwd }))?,
            readonly_root: marked(READONLY_MARK),
            shared_volumes: marked(SHARED_MARK),
            own_pid_namespace: marked(PIDNS_MARK),
        })
    }

    /// Runs in the child: own mount namespace, /proc, the zone's terminals,
    /// then pivots into the root and changes to the working directory.
    pub fn enter(&self) -> io::Result<()> {
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: plain system calls on NUL-terminated strings owned by self.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // A slave: what reaches the zone's copy of the root (a host
            // mount under an `rslave` volume) reaches the process; what
            // the process mounts goes nowhere. With an `rshared` volume,
            // the zone's mounts are left as rauhad made them: private, or
            // slaves, but for that volume, a peer of the host's.
            if !self.shared_volumes {
                check(libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                ))?;
            }
            check(libc::mount(
                c"proc".as_ptr(),
                self.proc_dir.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ))?;
            // sysfs, read-only; mounted here it shows the zone's network
            // namespace, not the host's. An image without /sys goes without.
            if let Some(sys) = &self.sys {
                let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                if libc::mount(
                    c"sysfs".as_ptr(),
                    sys.dir.as_ptr(),
                    c"sysfs".as_ptr(),
                    flags,
                    std::ptr::null(),
                ) == 0
                {
                    for p in &sys.masked {
                        if libc::mount(
                            c"tmpfs".as_ptr(),
                            p.as_ptr(),
                            c"tmpfs".as_ptr(),
                            libc::MS_RDONLY,
                            c"size=4k,mode=000".as_ptr().cast(),
                        ) != 0
                            && *libc::__errno_location() != libc::ENOENT
                        {
                            return Err(io::Error::last_os_error());
                        }
                    }
                    if let Some(cg) = &sys.cgroup {
                        cg.mount()?;
                    }
                } else if *libc::__errno_location() != libc::ENOENT {
                    return Err(io::Error::last_os_error());
                }
            }
            // Masked and read-only parts of /proc, as in the zone: a name
            // this kernel lacks is skipped, any other failure stops the
            // start (never a process with /proc/sys writable).
            let errno = || *libc::__errno_location();
            for p in &self.masked {
                if libc::mount(
                    self.null.as_ptr(),
                    p.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) == 0
                {
                    continue;
                }
                match errno() {
                    libc::ENOENT => {}
                    _ => {
                        // A directory: an empty read-only tmpfs over it.
                        check(libc::mount(
                            c"tmpfs".as_ptr(),
                            p.as_ptr(),
                            c"tmpfs".as_ptr(),
                            libc::MS_RDONLY,
                            c"size=4k,mode=000".as_ptr().cast(),
                        ))?;
                    }
                }
            }
            for p in &self.read_only {
                if libc::mount(
                    p.as_ptr(),
                    p.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    if errno() == libc::ENOENT {
                        continue;
                    }
                    return Err(io::Error::last_os_error());
                }
                check(libc::mount(
                    null,
                    p.as_ptr(),
                    null,
                    libc::MS_BIND
                        | libc::MS_REMOUNT
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    std::ptr::null(),
                ))?;
            }
            // The zone's terminals (a terminal the agent opened for this
            // process lives there).
            libc::mount(
                self.pts_source.as_ptr(),
                self.pts_target.as_ptr(),
                null,
                libc::MS_BIND,
                std::ptr::null(),
            );
            check(libc::chdir(self.root.as_ptr()))?;
            check(
                libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
            )?;
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            if self.readonly_root {
                // The root mount only: its mounts keep their own flags.
                let attr = rauha_guest_agent::mount_api::MountAttr {
                    attr_set: rauha_guest_agent::mount_api::MOUNT_ATTR_RDONLY,
                    attr_clr: 0,
                    propagation: 0,
                    userns_fd: 0,
                };
                check(libc::syscall(
                    libc::SYS_mount_setattr,
                    libc::AT_FDCWD,
                    c"/".as_ptr(),
                    0,
                    &attr,
                    std::mem::size_of_val(&attr),
                ) as libc::c_int)?;
            }
        }
        crate::kernel::chdir_no_magic_links(&self.cwd)
    }
}

#[cfg(test)]
mod tests {
    use super::hierarchies;

    #[test]
    fn a_container_sees_the_zones_hierarchies_only() {
        let hybrid = "12:devices:/\n11:memory:/\n10:cpu,cpuacct:/\n9:freezer:/work\n\
                      8:pids:/\n7:blkio:/\n1:name=systemd:/\n0::/\n";
        let names: Vec<(String, Option<String>)> = hierarchies(hybrid);
        assert_eq!(
            names,
            [
                ("memory".to_string(), Some("memory".to_string())),
                ("cpu,cpuacct".to_string(), Some("cpu,cpuacct".to_string())),
                ("freezer".to_string(), Some("freezer".to_string())),
                ("pids".to_string(), Some("pids".to_string())),
                ("unified".to_string(), None),
            ]
        );
        assert_eq!(hierarchies("0::/\n"), [(String::new(), None)]);
        assert!(hierarchies("3:devices:/\n").is_empty());
    }

    use super::*;

    #[test]
    fn absolute_links_resolve_inside_the_root() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rauha-root-{}", std::process::id()));
        let bin = dir.join("opt/rauha-tool");
        std::fs::create_dir_all(&bin).expect("dirs");
        std::fs::write(bin.join("real"), b"#!/bin/sh\n").expect("file");
        std::fs::set_permissions(bin.join("real"), std::fs::Permissions::from_mode(0o755))
            .expect("mode");
        std::os::unix::fs::symlink("/opt/rauha-tool/real", bin.join("abs")).expect("link");
        std::os::unix::fs::symlink("/../../../../etc/passwd", bin.join("escape")).expect("link");
        let root = std::fs::File::open(&dir).expect("root");
        let m = stat_in(&root, "/opt/rauha-tool/abs").expect("found inside the root");
        assert!(m.is_file() && m.permissions().mode() & 0o111 != 0);
        // Seen from the host, the absolute link points nowhere.
        assert!(std::fs::metadata(bin.join("abs")).is_err());
        // `..` cannot climb out of the root either.
        assert!(stat_in(&root, "/opt/rauha-tool/escape").is_none());
        assert!(stat_in(&root, "/opt/rauha-tool").is_some_and(|m| m.is_dir()));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn root_names_cannot_leave_the_directory() {
        for bad in ["", "..", ".", "a/b", "../x"] {
            assert!(path(bad).is_err(), "{bad:?}");
        }
    }
}
