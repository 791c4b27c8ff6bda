//! Container roots: a pod's container runs in its zone on its own image.
//!
//! Each bundle zone has a `containers` directory in its state dir, bound on
//! itself and made a shared mount; the zone agent shows it inside the zone
//! as a slave (`/.rauha/containers`). A root is prepared here in two steps:
//! on the host, the trees it binds (the image's root filesystem, the
//! container's volumes) are cloned as detached mounts; then, in a thread
//! that entered the zone's mount namespace, they are attached at
//! `/.rauha/containers/NAME/rootfs` with a fresh `/dev`, where the agent
//! pivots the container's processes into it. None of it is mounted in the
//! node's mount namespace: a host path a container binds (and the mounts
//! under it) is never busy on the host because of it, as with runc, and a
//! container's `rshared` volume can be a peer of the host's.
//!
//! Paths inside the image are resolved with `openat2(RESOLVE_IN_ROOT)`, so
//! a symlink in the image (`/etc/hosts -> /etc/shadow`, `/dev -> /`) can
//! never make a mount land outside the container's root.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use rauha_backend::{BackendError, RootMount};

use rauha_guest_agent::mount_api::{
    MountAttr, AT_RECURSIVE, FSCONFIG_CMD_CREATE, FSCONFIG_SET_STRING, FSMOUNT_CLOEXEC,
    FSOPEN_CLOEXEC, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
    MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH, OPEN_TREE_CLONE,
};

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Mount types the zone agent or the fresh /dev provide: not mounted here.
const PROVIDED: &[&str] = &["proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"];

fn err(what: String) -> impl FnOnce(io::Error) -> BackendError {
    move |source| BackendError::Io { what, source }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `zone_state/containers`: a small tmpfs of its own, shared. A tmpfs
/// rather than the directory bound on itself, so that the zone's
/// mountinfo shows its root as `/`, not the host's state dir path.
pub fn make_shared_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let c = cstr(dir)?;
    // SAFETY: mount(2) with NUL-terminated strings we own.
    unsafe {
        check(
            libc::mount(
                c"tmpfs".as_ptr(),
                c.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"mode=0700,size=64k".as_ptr().cast(),
            )
            .into(),
        )?;
        check(
            libc::mount(
                std::ptr::null(),
                c.as_ptr(),
                std::ptr::null(),
                libc::MS_SHARED,
                std::ptr::null(),
            )
            .into(),
        )?;
    }
    Ok(())
}

/// Opens `inside` (a path of the container) resolved within `root`.
fn open_in(root: &OwnedFd, inside: &Path, flags: u64) -> io::Result<OwnedFd> {
    let rel = inside.strip_prefix("/").unwrap_or(inside);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = cstr(rel)?;
    let how = OpenHow {
        flags: flags | libc::O_CLOEXEC as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid dirfd, path and open_how of its size.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: the kernel returned a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Makes `inside` exist within `root` (directories on the way; the last one
/// a directory or an empty file) without following any link out of it, and
/// returns an O_PATH fd to it.
fn ensure_in(root: &OwnedFd, inside: &Path, dir: bool) -> io::Result<OwnedFd> {
    let parts: Vec<_> = inside
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            _ => None,
        })
        .collect();
    let mut walked = PathBuf::from("/");
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let next = walked.join(part);
        if open_in(root, &next, libc::O_PATH as u64).is_err() {
            let parent = open_in(root, &walked, (libc::O_PATH | libc::O_DIRECTORY) as u64)?;
            let name = CString::new(part.as_encoded_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
            // O_PATH fds work as the dirfd of *at calls.
            if last && !dir {
                // SAFETY: openat on a dirfd we own with a single component.
                let fd = check(
                    unsafe {
                        libc::openat(
                            parent.as_raw_fd(),
                            name.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                            0o644,
                        )
                    }
                    .into(),
                )?;
                // SAFETY: closing the fd just opened.
                unsafe { libc::close(fd as i32) };
            } else {
                // SAFETY: mkdirat on a dirfd we own with a single component.
                let r = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) };
                if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        walked = next;
    }
    open_in(root, inside, libc::O_PATH as u64)
}

/// What [`open_tree`] sets on the tree it clones.
#[derive(Clone, Copy)]
struct TreeAttrs {
    /// On every mount of the tree (`MOUNT_ATTR_*`).
    all: u64,
    /// Cleared on every mount of the tree (`MOUNT_ATTR_*`).
    clear: u64,
    /// On its top mount only (an rbind's `ro`).
    top: u64,
    /// `MS_PRIVATE` or `MS_SLAVE` on every mount of the tree, or 0 to
    /// keep the source's (a peer of a shared source: `rshared`). Private
    /// unless the mount asks for more, as runc makes a container's
    /// mounts: the copy leaves the source's peer group. A slave receives
    /// what is mounted at its (shared) source.
    propagation: libc::c_ulong,
}

impl TreeAttrs {
    fn private(all: u64) -> TreeAttrs {
        TreeAttrs {
            all,
            clear: 0,
            top: 0,
            propagation: libc::MS_PRIVATE,
        }
    }
}

/// A detached clone of what `dirfd` and `path` name (`AT_EMPTY_PATH` in
/// `at`: `dirfd` itself), recursive when asked, with `attrs` set on it
/// before it is attached anywhere.
fn open_tree(
    dirfd: i32,
    path: &std::ffi::CStr,
    at: libc::c_uint,
    recursive: bool,
    attrs: TreeAttrs,
) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | at;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: open_tree with a NUL-terminated path.
    let tree = check(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) })?;
    // SAFETY: the kernel returned a new fd.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let set =
        |attr_set: u64, attr_clr: u64, propagation: libc::c_ulong, all: bool| -> io::Result<()> {
            let attr = MountAttr {
                attr_set,
                attr_clr,
                propagation,
                userns_fd: 0,
            };
            let at = libc::AT_EMPTY_PATH as libc::c_uint | if all { AT_RECURSIVE } else { 0 };
            // SAFETY: mount_setattr on the detached tree with an attr of its size.
            check(unsafe {
                libc::syscall(
                    libc::SYS_mount_setattr,
                    tree.as_raw_fd(),
                    c"".as_ptr(),
                    at,
                    &attr,
                    std::mem::size_of::<MountAttr>(),
                )
            })
            .map(drop)
        };
    set(attrs.all, attrs.clear, attrs.propagation, recursive)?;
    if attrs.top != 0 {
        set(attrs.top, 0, 0, false)?;
    }
    Ok(tree)
}

/// Attaches the detached `tree` onto the O_PATH `target`.
fn attach(tree: &OwnedFd, target: &OwnedFd) -> io::Result<()> {
    // SAFETY: move_mount between two fds we own, empty paths.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// A new tmpfs (`data`: its comma-separated options) with the mount
/// attributes `attrs`, attached onto the O_PATH `target`; through the new
/// mount API, so no path is looked up (a thread in a zone's mount
/// namespace has no /proc of its own).
fn tmpfs_onto(target: &OwnedFd, attrs: u64, data: &str) -> io::Result<()> {
    let options: Vec<(&str, &str)> = data
        .split(',')
        .filter(|o| !o.is_empty())
        .map(|o| o.split_once('=').unwrap_or((o, "")))
        .collect();
    attach(&new_mount(c"tmpfs", &options, attrs)?, target)
}

/// A new detached mount of filesystem `fstype` with string `options`
/// (key, value) and mount attributes `attrs`, through the new mount API.
fn new_mount(fstype: &std::ffi::CStr, options: &[(&str, &str)], attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: fsopen with a NUL-terminated name.
    let fs = check(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: the kernel returned a new fd.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    for (key, value) in options {
        let key = CString::new(*key).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let value =
            CString::new(*value).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: fsconfig on our fs context with NUL-terminated strings.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        })?;
    }
    // SAFETY: fsconfig's create command takes no key or value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount on the created context.
    let mnt =
        check(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })?;
    // SAFETY: the kernel returned a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as i32) })
}

/// The device nodes every container's /dev holds, as runc's default spec
/// gives them: `(name, major, minor)`, character devices, mode 0666.
const STANDARD_DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// A device node for a container's /dev: made on the host (in the root's
/// state dir, a `nodev` tmpfs), cloned as a detached mount of that one
/// node with devices allowed, attached in the zone at its path.
struct DeviceNode {
    destination: PathBuf,
    tree: OwnedFd,
}

/// On the host: each device node of the container (the standard ones, then
/// its spec's `linux.devices`), in `base/devices`, and its clone.
fn device_nodes(
    base: &Path,
    extra: &[rauha_backend::RootDevice],
) -> Result<Vec<DeviceNode>, BackendError> {
    let dir = base.join("devices");
    std::fs::create_dir(&dir).map_err(err(format!("cannot create {}", dir.display())))?;
    let standard = STANDARD_DEVICES
        .iter()
        .map(|(name, major, minor)| rauha_backend::RootDevice {
            path: Path::new("/dev").join(name),
            kind: 'c',
            major: *major,
            minor: *minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        });
    // A privileged container's spec lists every host device: those the
    // standard set has already, `/dev/ptmx` (a link to the container's own
    // devpts here, as runc makes it) and anything under the mounts /dev
    // gets (pts, shm, mqueue) are left out.
    let own = |p: &Path| {
        STANDARD_DEVICES
            .iter()
            .any(|(name, _, _)| p == Path::new("/dev").join(name))
            || p == Path::new("/dev/ptmx")
            || ["/dev/pts", "/dev/shm", "/dev/mqueue"]
                .iter()
                .any(|m| p.starts_with(m))
    };
    let extra = extra.iter().filter(|d| !own(&d.path)).cloned();
    let mut nodes = Vec::new();
    for (i, d) in standard.chain(extra).enumerate() {
        let name = CString::new(i.to_string())
            .map_err(|_| err(String::new())(io::ErrorKind::InvalidInput.into()))?;
        let what = format!("device {}", d.path.display());
        let kind = match d.kind {
            'b' => libc::S_IFBLK,
            'p' => libc::S_IFIFO,
            _ => libc::S_IFCHR,
        };
        let node = (|| -> io::Result<OwnedFd> {
            let parent = OwnedFd::from(std::fs::File::open(&dir)?);
            // SAFETY: mknodat, fchownat and fchmodat on a dirfd we own, one
            // component each.
            unsafe {
                check(
                    libc::mknodat(
                        parent.as_raw_fd(),
                        name.as_ptr(),
                        kind | (d.mode & 0o777),
                        libc::makedev(d.major, d.minor),
                    )
                    .into(),
                )?;
                check(
                    libc::fchownat(
                        parent.as_raw_fd(),
                        name.as_ptr(),
                        d.uid,
                        d.gid,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                    .into(),
                )?;
                check(libc::fchmodat(parent.as_raw_fd(), name.as_ptr(), d.mode & 0o777, 0).into())?;
            }
            // The state dir's tmpfs is nodev: the clone allows devices
            // (this one node), set-id and exec still not.
            open_tree(
                parent.as_raw_fd(),
                &name,
                0,
                false,
                TreeAttrs {
                    all: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
                    clear: MOUNT_ATTR_NODEV,
                    top: 0,
                    propagation: libc::MS_PRIVATE,
                },
            )
        })()
        .map_err(err(format!("cannot make {what}")))?;
        nodes.push(DeviceNode {
            destination: d.path.clone(),
            tree: node,
        });
    }
    Ok(nodes)
}

/// A minimal /dev, as in a zone: a `nodev` tmpfs (a node a process makes
/// there opens nothing, whatever CAP_MKNOD it holds: runc's device cgroup's
/// part), the container's device nodes bound in one by one, links, shm and
/// the pts mount point.
fn fresh_dev(root: &OwnedFd, nodes: &[DeviceNode]) -> io::Result<()> {
    let dev = ensure_in(root, Path::new("/dev"), true)?;
    tmpfs_onto(
        &dev,
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        "mode=0755,size=64k",
    )?;
    // Reopen: the fd above is the covered directory, not the new tmpfs.
    let dev = open_in(
        root,
        Path::new("/dev"),
        (libc::O_DIRECTORY | libc::O_RDONLY) as u64,
    )?;
    for node in nodes {
        let target = ensure_in(root, &node.destination, false).map_err(|e| {
            io::Error::new(e.kind(), format!("{}: {e}", node.destination.display()))
        })?;
        attach(&node.tree, &target).map_err(|e| {
            io::Error::new(e.kind(), format!("{}: {e}", node.destination.display()))
        })?;
    }
    for d in ["pts", "shm", "mqueue"] {
        let n = CString::new(d).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: mkdirat on a dirfd we own.
        unsafe { libc::mkdirat(dev.as_raw_fd(), n.as_ptr(), 0o755) };
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let l = CString::new(link).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let t = CString::new(target).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: symlinkat on a dirfd we own.
        check(unsafe { libc::symlinkat(t.as_ptr(), dev.as_raw_fd(), l.as_ptr()) }.into())?;
    }
    let shm = open_in(root, Path::new("/dev/shm"), libc::O_PATH as u64)?;
    tmpfs_onto(
        &shm,
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        "mode=1777,size=64m",
    )
}

/// A mount of the container's, opened on the host, attached in the zone.
enum Planned {
    /// A bind: the detached clone of its source.
    Bind {
        destination: PathBuf,
        tree: OwnedFd,
        source_is_dir: bool,
    },
    Tmpfs {
        destination: PathBuf,
        attrs: u64,
        data: String,
    },
}

/// Runs `f` in a thread that entered the mount namespace `ns` (its own
/// fs_struct first, which setns(2) needs in a threaded process); rauhad's
/// other threads stay where they are.
fn in_mount_ns<T: Send>(ns: &OwnedFd, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare and setns of this thread only, on an fd we own.
            unsafe {
                check(libc::unshare(libc::CLONE_FS).into())?;
                check(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS).into())?;
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the mount thread panicked")))
    })
}

/// Where root `name` is, in the zone's mount namespace.
fn zone_path(name: &str) -> PathBuf {
    Path::new(rauha_guest_agent::config::CONTAINERS_DIR)
        .join(name)
        .join("rootfs")
}

/// A container root's image: a host directory, or a detached mount made
/// for it ([`overlay_tree`]).
pub enum RootImage<'a> {
    Dir(&'a Path),
    Tree(OwnedFd),
}

/// A detached overlay of `layers` (host directories, bottom first) under
/// `upper` and `work`, `nodev` (and `nosuid` unless `setuid`): never
/// attached on the host, so nothing of it is left there when the zone's
/// mount namespace goes.
pub fn overlay_tree(
    layers: &[&Path],
    upper: &Path,
    work: &Path,
    setuid: bool,
) -> io::Result<OwnedFd> {
    let text = |p: &Path| -> io::Result<String> {
        p.to_str()
            .filter(|s| !s.contains([',', ':', '\\']) && !s.contains(char::is_control))
            .map(str::to_string)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} cannot be an overlay layer", p.display()),
                )
            })
    };
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| text(p))
        .collect::<io::Result<_>>()?;
    let (lower, upper, work) = (lower.join(":"), text(upper)?, text(work)?);
    let attrs = if setuid {
        MOUNT_ATTR_NODEV
    } else {
        MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID
    };
    new_mount(
        c"overlay",
        &[
            ("lowerdir", &lower),
            ("upperdir", &upper),
            ("workdir", &work),
        ],
        attrs,
    )
}

/// Prepares root `name` under the zone's `containers` dir (`zone_ns`: the
/// zone's mount namespace, where it is mounted).
pub fn add(
    containers: &Path,
    zone_ns: &OwnedFd,
    name: &str,
    rootfs: RootImage<'_>,
    flags: &rauha_backend::RootFlags,
    mounts: &[RootMount],
) -> Result<(), BackendError> {
    let base = containers.join(name);
    // Claimed with one mkdir: a name in use (or anything planted there)
    // is refused, never followed.
    match std::fs::create_dir(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(BackendError::RootExists(name.to_string()))
        }
        Err(e) => return Err(err(format!("cannot create {}", base.display()))(e)),
    }
    let result = (|| -> Result<(), BackendError> {
        let target = base.join("rootfs");
        std::fs::create_dir(&target).map_err(err(format!("cannot create {}", target.display())))?;
        // Device nodes in an image mean nothing in a zone; set-id bits
        // only where the pod policy lets a setuid binary raise privileges.
        let image = match rootfs {
            RootImage::Tree(tree) => tree,
            RootImage::Dir(rootfs) => cstr(rootfs)
                .and_then(|c| {
                    open_tree(
                        libc::AT_FDCWD,
                        &c,
                        0,
                        true,
                        TreeAttrs::private(if flags.setuid {
                            MOUNT_ATTR_NODEV
                        } else {
                            MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID
                        }),
                    )
                })
                .map_err(err(format!(
                    "cannot bind {} into the zone",
                    rootfs.display()
                )))?,
        };
        let planned = plan(&base, name, mounts)?;
        let nodes = device_nodes(&base, &flags.devices)?;
        if flags.own_pid_namespace {
            // For the agent, which starts the root's processes in a PID
            // namespace of its own (container_root::PIDNS_MARK).
            std::fs::write(base.join("pidns"), b"")
                .map_err(err(format!("cannot mark {}", base.display())))?;
        }
        if flags.readonly {
            // For the agent, which makes each process's view of the root
            // read-only too.
            std::fs::write(base.join("readonly"), b"")
                .map_err(err(format!("cannot mark {}", base.display())))?;
        }
        in_mount_ns(zone_ns, || build(name, &image, &planned, &nodes, flags)).map_err(err(format!(
            "cannot prepare container root {name} in the zone"
        )))
    })();
    if result.is_err() {
        let _ = remove(containers, Some(zone_ns), name);
    }
    result
}

/// On the host: the marks the agent looks for, and each mount's source
/// cloned with its flags.
fn plan(base: &Path, name: &str, mounts: &[RootMount]) -> Result<Vec<Planned>, BackendError> {
    let mut planned = Vec::new();
    for (index, m) in mounts.iter().enumerate() {
        let bad = |message: String| BackendError::BadMount { index, message };
        if m.kind == "sysfs" && m.destination == Path::new("/sys") {
            // Mounted by the zone agent (sysfs shows the mounter's
            // network namespace): leave it the mark it looks for.
            std::fs::write(base.join("sysfs"), b"")
                .map_err(err(format!("cannot mark {}", base.display())))?;
            continue;
        }
        if (m.kind == "cgroup" || m.kind == "cgroup2")
            && m.destination == Path::new("/sys/fs/cgroup")
        {
            // Also the agent's: mounted in the zone's cgroup namespace,
            // the hierarchies show the zone's cgroup as their root.
            std::fs::write(base.join("cgroup"), b"")
                .map_err(err(format!("cannot mark {}", base.display())))?;
            continue;
        }
        if PROVIDED.contains(&m.kind.as_str()) || m.destination == Path::new("/dev") {
            continue;
        }
        // nodev and nosuid unless the mount asks for devices or set-id.
        let mut attrs = MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID;
        // `rro`: read-only all the way down (Kubernetes' recursive
        // read-only mounts); plain `ro` holds for the top mount only.
        let recursive_ro = m.options.iter().any(|o| o == "rro");
        for o in &m.options {
            match o.as_str() {
                "ro" | "rro" => attrs |= MOUNT_ATTR_RDONLY,
                "noexec" => attrs |= MOUNT_ATTR_NOEXEC,
                "dev" => attrs &= !MOUNT_ATTR_NODEV,
                "suid" => attrs &= !MOUNT_ATTR_NOSUID,
                _ => {}
            }
        }
        let is_bind = m.kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
        if is_bind {
            let source_is_dir = match std::fs::metadata(&m.source) {
                Ok(meta) => meta.is_dir(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(bad(format!(
                        "source {} does not exist on the host; create it or fix the path",
                        rauha_spec::message::quote(&m.source.to_string_lossy())
                    )))
                }
                Err(e) => return Err(err(format!("mount source {}", m.source.display()))(e)),
            };
            let recursive = m.options.iter().any(|o| o == "rbind");
            let has = |names: &[&str]| m.options.iter().any(|o| names.contains(&o.as_str()));
            // `rslave` (Kubernetes' HostToContainer) receives the host's
            // mounts under the source; `rshared` (Bidirectional, which
            // only the privileged pod policy lets through) stays a peer
            // of a shared source, so the container's mounts there reach
            // the host too.
            let propagation = if has(&["rshared", "shared"]) {
                // For the agent, which then leaves the process's mounts
                // as they are in the zone (container_root::SHARED_MARK).
                std::fs::write(base.join("shared"), b"")
                    .map_err(err(format!("cannot mark {}", base.display())))?;
                0
            } else if has(&["rslave", "slave"]) {
                libc::MS_SLAVE
            } else {
                libc::MS_PRIVATE
            };
            // `ro` on an rbind: the top mount only, as runc's.
            let top_only = recursive && !recursive_ro;
            let tree = TreeAttrs {
                clear: 0,
                all: if top_only {
                    attrs & !MOUNT_ATTR_RDONLY
                } else {
                    attrs
                },
                top: if top_only {
                    attrs & MOUNT_ATTR_RDONLY
                } else {
                    0
                },
                propagation,
            };
            let tree = cstr(&m.source)
                .and_then(|c| open_tree(libc::AT_FDCWD, &c, 0, recursive, tree))
                .map_err(err(format!(
                    "cannot mount {} in container root {name}",
                    m.destination.display()
                )))?;
            planned.push(Planned::Bind {
                destination: m.destination.clone(),
                tree,
                source_is_dir,
            });
        } else if m.kind == "tmpfs" {
            let data: Vec<&str> = m
                .options
                .iter()
                .map(String::as_str)
                .filter(|o| o.starts_with("size=") || o.starts_with("mode="))
                .collect();
            planned.push(Planned::Tmpfs {
                destination: m.destination.clone(),
                attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (attrs & MOUNT_ATTR_RDONLY),
                data: data.join(","),
            });
        } else {
            return Err(bad(format!(
                "mount type {} at {} is not supported in a container root; use bind or tmpfs",
                rauha_spec::message::quote(&m.kind),
                rauha_spec::message::quote(&m.destination.to_string_lossy())
            )));
        }
    }
    Ok(planned)
}

/// In the zone's mount namespace: the image at the root's place, a fresh
/// /dev, the planned mounts, the masks and the read-only root.
fn build(
    name: &str,
    image: &OwnedFd,
    planned: &[Planned],
    nodes: &[DeviceNode],
    flags: &rauha_backend::RootFlags,
) -> io::Result<()> {
    let at = zone_path(name);
    let context =
        |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let target = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(&at)
        .map_err(context(format!("cannot open {}", at.display())))?;
    attach(image, &OwnedFd::from(target)).map_err(context("cannot attach the image".into()))?;
    let root = OwnedFd::from(
        std::fs::File::open(&at).map_err(context(format!("cannot open {}", at.display())))?,
    );
    fresh_dev(&root, nodes).map_err(context("cannot make /dev".into()))?;
    for p in planned {
        let (destination, made) = match p {
            Planned::Bind {
                destination,
                tree,
                source_is_dir,
            } => (
                destination,
                ensure_in(&root, destination, *source_is_dir).and_then(|t| attach(tree, &t)),
            ),
            Planned::Tmpfs {
                destination,
                attrs,
                data,
            } => (
                destination,
                ensure_in(&root, destination, true).and_then(|t| tmpfs_onto(&t, *attrs, data)),
            ),
        };
        made.map_err(context(format!("cannot mount {}", destination.display())))?;
    }
    hide_and_freeze(&root, flags).map_err(context("cannot mask or make read-only".into()))?;
    if flags.readonly {
        // After the mount points were made: the image itself becomes
        // read-only, the mounts on it keep their own flags.
        set_attrs(&root, MOUNT_ATTR_RDONLY).map_err(context("cannot make it read-only".into()))?;
    }
    Ok(())
}

/// The spec's `maskedPaths` (a file hidden under the root's own /dev/null,
/// a directory under an empty read-only tmpfs) and `readonlyPaths` (bound
/// onto themselves read-only), each resolved within the root; one the
/// image lacks is skipped, as runc skips it. Those under /proc and /sys
/// are the zone agent's, which mounts them per process (and masks /proc
/// and /sys as runc's defaults do).
fn hide_and_freeze(root: &OwnedFd, flags: &rauha_backend::RootFlags) -> io::Result<()> {
    let agents = |p: &Path| p.starts_with("/proc") || p.starts_with("/sys");
    for path in flags.masked_paths.iter().filter(|p| !agents(p)) {
        let target = match open_in(root, path, libc::O_PATH as u64) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: fstat on an fd we own into a zeroed struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(unsafe { libc::fstat(target.as_raw_fd(), &mut st) }.into())?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            tmpfs_onto(
                &target,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                "size=0,mode=0755",
            )?;
        } else {
            // The fresh /dev's null, made above by this thread.
            let null = open_in(root, Path::new("/dev/null"), libc::O_PATH as u64)?;
            let tree = open_tree(
                null.as_raw_fd(),
                c"",
                libc::AT_EMPTY_PATH as libc::c_uint,
                false,
                TreeAttrs::private(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC),
            )?;
            attach(&tree, &target)?;
        }
    }
    for path in flags.readonly_paths.iter().filter(|p| !agents(p)) {
        let target = match open_in(root, path, libc::O_PATH as u64) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let tree = open_tree(
            target.as_raw_fd(),
            c"",
            libc::AT_EMPTY_PATH as libc::c_uint,
            true,
            TreeAttrs::private(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV),
        )?;
        attach(&tree, &target)?;
    }
    Ok(())
}

/// Sets attributes on the mount `target` is the root of (not recursive).
fn set_attrs(target: &OwnedFd, attrs: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on an fd we own with an attr of its size.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            target.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// Unmounts root `name` (everything under it: in the zone's mount
/// namespace `zone_ns` when the zone still has one, and any host mount a
/// root of an earlier rauhad left) and removes its directory; refuses to
/// remove anything while a mount is left under it on the host (removing
/// through a bind would delete the image or a volume's files).
pub fn remove(
    containers: &Path,
    zone_ns: Option<&OwnedFd>,
    name: &str,
) -> Result<(), BackendError> {
    let base = containers.join(name);
    let meta = match std::fs::symlink_metadata(&base) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(format!("cannot inspect {}", base.display()))(e)),
    };
    if !meta.is_dir() {
        // Not made by add (which only makes directories): leave it alone.
        return Err(BackendError::NotARoot(base));
    }
    if let Some(ns) = zone_ns {
        in_mount_ns(ns, || {
            let at = cstr(&zone_path(name))?;
            // The image's mount and all below it, however often stacked;
            // EINVAL once no mount is left there.
            // SAFETY: umount2 of a NUL-terminated path.
            while unsafe { libc::umount2(at.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) }
                == 0
            {}
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        })
        .map_err(err(format!(
            "cannot unmount container root {name} in the zone"
        )))?;
    }
    let base = base
        .canonicalize()
        .map_err(err(format!("cannot resolve {}", base.display())))?;
    for m in super::host::mounts_under(&base) {
        super::host::detach(&m);
    }
    let left = super::host::mounts_under(&base);
    if !left.is_empty() {
        return Err(BackendError::StillMounted {
            name: name.to_string(),
            mount: left[0].clone(),
        });
    }
    remove_same_device(&base, meta.dev()).map_err(err(format!("cannot remove {}", base.display())))
}

/// `rm -r` that never leaves the filesystem it started on: a directory on
/// another device (a mount the checks above missed) is an error, not a walk.
fn remove_same_device(dir: &Path, dev: u64) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = std::fs::symlink_metadata(entry.path())?;
        if meta.is_dir() {
            if meta.dev() != dev {
                return Err(io::Error::other(format!(
                    "{} is on another filesystem",
                    entry.path().display()
                )));
            }
            remove_same_device(&entry.path(), dev)?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rauha-roots-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rootfs")).expect("rootfs");
        dir
    }

    fn open_dir(p: &Path) -> OwnedFd {
        OwnedFd::from(std::fs::File::open(p).expect("open root"))
    }

    /// CVE-2021-30465's class: a container's image (or a process of the
    /// zone, between check and use) makes a mount target a symlink out of
    /// the root. The target is resolved within the root once, and the
    /// mount goes onto that resolved descriptor: never onto the host.
    #[test]
    fn a_mount_target_behind_a_symlink_stays_in_the_root() {
        let dir = temp_root("link");
        let outside = dir.join("outside");
        std::fs::create_dir_all(&outside).expect("outside");
        // Absolute and relative links that point out of the root.
        std::os::unix::fs::symlink(&outside, dir.join("rootfs/abs")).expect("link");
        std::os::unix::fs::symlink("../../outside", dir.join("rootfs/rel")).expect("link");
        let root = open_dir(&dir.join("rootfs"));
        // Where the absolute link leads as the root sees it: `<root>/<outside>`
        // (missing at first: the target is refused, nothing is made).
        let inside = dir
            .join("rootfs")
            .join(outside.strip_prefix("/").expect("absolute"));
        assert!(ensure_in(&root, Path::new("/abs/made"), true).is_err());
        std::fs::create_dir_all(&inside).expect("inside");
        std::fs::create_dir_all(dir.join("rootfs/outside")).expect("inside");
        for link in ["/abs/made", "/rel/made"] {
            ensure_in(&root, Path::new(link), true).expect("made within the root");
        }
        assert_eq!(
            std::fs::read_dir(&outside).expect("outside").count(),
            0,
            "nothing was made outside the root"
        );
        assert!(!dir.join("made").exists());
        assert!(inside.join("made").is_dir(), "{}", inside.display());
        assert!(
            dir.join("rootfs/outside/made").is_dir(),
            "`..` stops at the root"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
