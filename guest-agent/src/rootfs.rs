//! Builds the zone's root under `<state>/root` and pivots into it.
//!
//! A host view is a read-only tmpfs holding non-recursive, read-only binds
//! of the readable host paths (symlinks such as `/bin -> usr/bin` are
//! recreated, not followed), writable binds, a private `/tmp`, a fresh
//! `/proc` with the kernel's sensitive files masked, and a minimal `/dev`.
//! An OCI root filesystem is bound in place of the tmpfs.

use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use rauha_guest_agent::config::{RootConfig, WorkspaceMount};

use crate::kernel::{bind, check, context, cpath, mount};
use crate::userns;

const RO: libc::c_ulong = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
const RW: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

/// Files under /proc the zone must not read or write (as runc masks them).
pub(crate) const PROC_MASKED: &[&str] = &[
    "kcore",
    "keys",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "acpi",
    "scsi",
];
pub(crate) const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// The zone's user namespace, for what must stay writable by its root.
#[derive(Debug, Clone, Copy)]
pub struct Idmap {
    pub userns: std::os::fd::RawFd,
    /// The host id the zone's root maps to.
    pub base: u32,
}

/// The host paths [`build`] shows idmapped, and whether recursively: each
/// must be on a filesystem that allows it, or the zone runs without a user
/// namespace.
pub fn idmapped_sources(
    root_config: &RootConfig,
    workspace: Option<&WorkspaceMount>,
) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = workspace
        .map(|w| (w.lower.clone(), false))
        .into_iter()
        .collect();
    match root_config {
        RootConfig::HostView { writable, .. } => out.extend(
            writable
                .iter()
                .filter(|p| p.as_str() != "/tmp" && Path::new(p).exists())
                .map(|p| (p.clone(), false)),
        ),
        RootConfig::Rootfs { path, .. } => out.push((path.clone(), true)),
        RootConfig::Overlay { layers, .. } => out.extend(layers.iter().map(|l| (l.clone(), false))),
    }
    out
}

pub fn build(
    root_config: &RootConfig,
    workspace: Option<&WorkspaceMount>,
    containers: Option<&str>,
    resolv_conf: Option<&str>,
    root: &Path,
    idmap: Option<Idmap>,
) -> io::Result<()> {
    ZONE_ROOT_ID.store(
        idmap.map_or(0, |m| m.base),
        std::sync::atomic::Ordering::Relaxed,
    );
    std::fs::create_dir_all(root).map_err(|e| context("cannot create", root, e))?;
    match root_config {
        RootConfig::HostView {
            readable,
            writable,
            denied,
        } => {
            mount("tmpfs", root, "tmpfs", RW, "mode=0755,size=1m")?;
            for path in readable {
                let host = Path::new(path);
                match std::fs::symlink_metadata(host) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(context("cannot inspect", host, e)),
                    Ok(meta) if meta.file_type().is_symlink() => {
                        let target = std::fs::read_link(host)
                            .map_err(|e| context("cannot read link", host, e))?;
                        let inside = inside(root, path);
                        make_parent(&inside)?;
                        symlink(&target, &inside)
                            .map_err(|e| context("cannot link", &inside, e))?;
                    }
                    Ok(meta) => {
                        let inside = inside(root, path);
                        make_mount_point(&inside, meta.is_dir())?;
                        bind(host, &inside, RO)?;
                    }
                }
            }
            for path in writable.iter().filter(|p| p.as_str() != "/tmp") {
                let host = Path::new(path);
                let meta =
                    std::fs::metadata(host).map_err(|e| context("writable path", host, e))?;
                let inside = inside(root, path);
                make_mount_point(&inside, meta.is_dir())?;
                match idmap {
                    // The policy gave the path: the zone's root owns there
                    // what host root owns.
                    Some(m) => userns::bind_idmapped(host, &inside, m.userns, false, false)?,
                    None => bind(host, &inside, RW)?,
                }
            }
            common_mounts(root)?;
            mount_resolv_conf(root, resolv_conf)?;
            mount_workspace(root, workspace, idmap)?;
            mask(root, denied)?;
            mount_containers(root, containers)?;
            mount("", root, "", libc::MS_REMOUNT | RO, "")?;
        }
        RootConfig::Rootfs {
            path,
            readonly,
            writable,
            denied,
        } => {
            let source = Path::new(path);
            match idmap {
                Some(m) => userns::bind_idmapped(source, root, m.userns, false, true)?,
                None => mount(
                    &source.to_string_lossy(),
                    root,
                    "",
                    libc::MS_BIND | libc::MS_REC,
                    "",
                )?,
            }
            common_mounts(root)?;
            mount_resolv_conf(root, resolv_conf)?;
            let owner = idmap
                .map(|m| format!(",uid={0},gid={0}", m.base))
                .unwrap_or_default();
            for path in writable.iter().filter(|p| p.as_str() != "/tmp") {
                let inside = inside(root, path);
                if *readonly {
                    make_mount_point(&inside, true)?;
                    mount("tmpfs", &inside, "tmpfs", RW, &format!("mode=0755{owner}"))?;
                }
            }
            mount_workspace(root, workspace, idmap)?;
            mask(root, denied)?;
            mount_containers(root, containers)?;
            if *readonly {
                mount("", root, "", libc::MS_BIND | libc::MS_REMOUNT | RO, "")?;
            }
        }
        RootConfig::Overlay {
            layers,
            dir,
            writable: _,
            denied,
        } => {
            // The image's root is writable (its upper layer is the
            // zone's); Landlock holds writes to the policy's paths.
            mount_image(layers, Path::new(dir), root, idmap)?;
            common_mounts(root)?;
            mount_resolv_conf(root, resolv_conf)?;
            mount_workspace(root, workspace, idmap)?;
            mask(root, denied)?;
            mount_containers(root, containers)?;
        }
    }
    Ok(())
}

/// Mounts an image's overlay at `root`: each layer bound read-only at
/// `dir/lower/N` (idmapped through the zone's namespace when it has one,
/// so host root's files are the zone root's), the upper layer given to
/// the zone's root. Layers are named relative to `dir`, so the zone's
/// mountinfo names no host path.
fn mount_image(layers: &[String], dir: &Path, root: &Path, idmap: Option<Idmap>) -> io::Result<()> {
    let upper = dir.join("upper");
    if let Some(m) = idmap {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&upper).map_err(|e| context("cannot inspect", &upper, e))?;
        let shift = |id: u32| if id < userns::SIZE { m.base + id } else { id };
        std::os::unix::fs::chown(&upper, Some(shift(meta.uid())), Some(shift(meta.gid())))
            .map_err(|e| context("cannot give the zone", &upper, e))?;
    }
    let mut lower = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let name = format!("lower/{i}");
        let target = dir.join(&name);
        make_mount_point(&target, true)?;
        match idmap {
            Some(m) => userns::bind_idmapped(Path::new(layer), &target, m.userns, true, false)?,
            None => bind(Path::new(layer), &target, RO)?,
        }
        lower.push(name);
    }
    lower.reverse();
    std::env::set_current_dir(dir).map_err(|e| context("cannot enter", dir, e))?;
    let options = format!("lowerdir={},upperdir=upper,workdir=work", lower.join(":"));
    let mounted = mount("overlay", root, "overlay", RW, &options);
    std::env::set_current_dir("/").map_err(|e| context("cannot enter", Path::new("/"), e))?;
    mounted
}

/// The host's file (rauhad's, naming its resolver) over the root's
/// `/etc/resolv.conf`, read-only: only where the root has that path as a
/// regular file. A symlink there (the host's often points into /run) is
/// never followed: the zone then keeps what its root says.
fn mount_resolv_conf(root: &Path, file: Option<&str>) -> io::Result<()> {
    let Some(file) = file else { return Ok(()) };
    let target = root.join("etc/resolv.conf");
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.file_type().is_file() => bind(Path::new(file), &target, RO),
        _ => Ok(()),
    }
}

/// `/tmp`, `/proc` and `/dev`, the same in every zone.
fn common_mounts(root: &Path) -> io::Result<()> {
    let tmp = root.join("tmp");
    make_mount_point(&tmp, true)?;
    mount("tmpfs", &tmp, "tmpfs", RW, "mode=1777")?;

    let proc_dir = root.join("proc");
    make_mount_point(&proc_dir, true)?;
    mount("proc", &proc_dir, "proc", RW | libc::MS_NOEXEC, "")?;
    for name in PROC_READ_ONLY {
        let p = proc_dir.join(name);
        if p.exists() {
            bind(&p, &p, RO | libc::MS_NOEXEC)?;
        }
    }

    // nodev: a device node a process of the zone makes here (with a
    // policy that grants CAP_MKNOD) opens nothing. The six the zone has
    // are the host's own nodes, each bound in alone (a mount of that one
    // node, devices allowed), as bwrap gives them.
    let dev = root.join("dev");
    make_mount_point(&dev, true)?;
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "mode=0755,size=64k",
    )?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let node = dev.join(name);
        make_mount_point(&node, false)?;
        bind(
            &Path::new("/dev").join(name),
            &node,
            libc::MS_NOSUID | libc::MS_NOEXEC,
        )
        .map_err(|e| context("cannot bind device", &node, e))?;
    }
    let shm = dev.join("shm");
    make_mount_point(&shm, true)?;
    mount(
        "shm",
        &shm,
        "tmpfs",
        RW | libc::MS_NOEXEC,
        "mode=1777,size=64m",
    )?;
    // A private devpts: terminals the agent opens for work (and any the
    // work opens) are the zone's own.
    let pts = dev.join("pts");
    make_mount_point(&pts, true)?;
    mount(
        "devpts",
        &pts,
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link))?;
    }
    // Mask after /dev/null exists: masked files are covered by it.
    for name in PROC_MASKED {
        let p = proc_dir.join(name);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => mount("tmpfs", &p, "tmpfs", RO, "size=4k,mode=000")?,
            Ok(_) => bind(&dev.join("null"), &p, RO)?,
            Err(_) => {}
        }
    }
    Ok(())
}

/// The workspace overlay: the zone's writes land in `upper`, the
/// repository (`lower`) is never written while the task runs.
fn mount_workspace(
    root: &Path,
    workspace: Option<&WorkspaceMount>,
    idmap: Option<Idmap>,
) -> io::Result<()> {
    let Some(w) = workspace else { return Ok(()) };
    let target = inside(root, &w.target);
    make_mount_point(&target, true)?;
    // overlayfs shows its layers' paths in the zone's mountinfo as they
    // were given: given relative to the directory that holds the upper and
    // work directories, with the repository bound there as `lower`, they
    // name no host path (not the repository's, not the state dir's).
    let upper = Path::new(&w.upper);
    let layers = upper
        .parent()
        .filter(|p| Path::new(&w.work).parent() == Some(*p))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the workspace's upper ({}) and work ({}) directories are not side by side",
                    w.upper, w.work
                ),
            )
        })?;
    let lower = layers.join("lower");
    make_mount_point(&lower, true)?;
    match idmap {
        // The repository's files show as the zone root's where they are
        // host root's (what the zone writes lands as the host's ids).
        Some(m) => userns::bind_idmapped(Path::new(&w.lower), &lower, m.userns, true, false)?,
        None => bind(Path::new(&w.lower), &lower, RO)?,
    }
    std::env::set_current_dir(layers).map_err(|e| context("cannot enter", layers, e))?;
    // Renames and metadata-only changes must show up in the upper layer as
    // whole files, which is what the daemon's scan reads.
    let options =
        "lowerdir=lower,upperdir=upper,workdir=work,redirect_dir=off,metacopy=off,index=off";
    let mounted = mount("overlay", &target, "overlay", RW, options);
    std::env::set_current_dir("/").map_err(|e| context("cannot enter", Path::new("/"), e))?;
    mounted
}

/// Makes everything in the zone's root private (no host mount reaches it
/// any more), then shows the host's container directory at
/// `CONTAINERS_DIR` as a slave: container roots the host mounts there
/// later appear in the zone.
fn mount_containers(root: &Path, containers: Option<&str>) -> io::Result<()> {
    mount("", root, "", libc::MS_REC | libc::MS_PRIVATE, "")?;
    let Some(host) = containers else {
        return Ok(());
    };
    let target = inside(root, rauha_guest_agent::config::CONTAINERS_DIR);
    make_mount_point(&target, true)?;
    mount(host, &target, "", libc::MS_BIND | libc::MS_REC, "")?;
    // Read-only: nothing in the zone may plant entries where the host
    // prepares roots (the roots mounted there later keep their own flags).
    mount("", &target, "", libc::MS_BIND | libc::MS_REMOUNT | RO, "")?;
    mount("", &target, "", libc::MS_REC | libc::MS_SLAVE, "")
}

/// Hides each denied path that exists in the zone: a directory behind an
/// empty read-only tmpfs, a file behind /dev/null.
fn mask(root: &Path, denied: &[String]) -> io::Result<()> {
    for path in denied {
        let p = inside(root, path);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => mount("tmpfs", &p, "tmpfs", RO, "size=4k,mode=000")?,
            Ok(_) => bind(&root.join("dev/null"), &p, RO)?,
            Err(_) => {}
        }
    }
    Ok(())
}

fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The host id of the zone's root while [`build`] runs with an idmapped
/// root filesystem (0: none).
static ZONE_ROOT_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Runs `create`; where it fails with EOVERFLOW (the agent, host root, has
/// no id on an idmapped mount: a mount point in a bundle's root), makes
/// `path` (and its missing parents) again as the zone's root, which owns
/// there what host root owns on disk.
fn create_as_needed(path: &Path, dir: bool, create: impl Fn() -> io::Result<()>) -> io::Result<()> {
    match create() {
        Err(e) if e.raw_os_error() == Some(libc::EOVERFLOW) => {
            let id = ZONE_ROOT_ID.load(std::sync::atomic::Ordering::Relaxed);
            if id == 0 {
                return Err(e);
            }
            let mut missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
            missing.reverse();
            for p in missing {
                create_as(p, dir || p != path, id)?;
            }
            Ok(())
        }
        other => other,
    }
}

/// Makes one directory or empty file as `id`. The parent is opened as host
/// root first: `id` may not search the state dir above the zone's root.
fn create_as(path: &Path, dir: bool, id: u32) -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let parent = cpath(path.parent().unwrap_or(Path::new("/")))?;
    let name = cpath(Path::new(path.file_name().unwrap_or_default()))?;
    // SAFETY: open with a NUL-terminated path; the fd is owned below.
    let fd = check(unsafe {
        libc::open(
            parent.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new fd the kernel gave us.
    let parent = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain system calls; the agent is single-threaded while it
    // builds the root, and returns to host root's ids before anything else.
    unsafe {
        libc::setfsgid(id);
        libc::setfsuid(id);
        let made = if dir {
            libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755)
        } else {
            let f = libc::openat(
                parent.as_raw_fd(),
                name.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            );
            if f >= 0 {
                libc::close(f);
            }
            f
        };
        let err = io::Error::last_os_error();
        libc::setfsuid(0);
        libc::setfsgid(0);
        if made < 0 {
            return Err(err);
        }
    }
    Ok(())
}

fn make_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => create_as_needed(parent, true, || std::fs::create_dir_all(parent))
            .map_err(|e| context("cannot create", parent, e)),
        None => Ok(()),
    }
}

fn make_mount_point(path: &Path, dir: bool) -> io::Result<()> {
    if dir {
        create_as_needed(path, true, || std::fs::create_dir_all(path))
            .map_err(|e| context("cannot create", path, e))
    } else {
        make_parent(path)?;
        if !path.exists() {
            create_as_needed(path, false, || std::fs::File::create(path).map(drop))
                .map_err(|e| context("cannot create", path, e))?;
        }
        Ok(())
    }
}

/// Makes `root` the zone's `/` and detaches the host's root from the zone.
pub fn pivot(root: &Path) -> io::Result<()> {
    std::env::set_current_dir(root)?;
    let dot = cpath(Path::new("."))?;
    // SAFETY: pivot_root(".", ".") stacks the old root under the new one;
    // both arguments are valid paths.
    check(unsafe {
        libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as libc::c_int
    })
    .map_err(|e| io::Error::new(e.kind(), format!("cannot pivot into the zone's root: {e}")))?;
    // SAFETY: detaches the old root, now mounted on ".".
    check(unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) })?;
    std::env::set_current_dir("/")
}
