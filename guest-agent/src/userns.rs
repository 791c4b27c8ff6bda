//! The zone's user namespace: its root is an unprivileged host uid, so a
//! host file readable only by root is unreadable in the zone, whatever the
//! zone's view shows.
//!
//! The agent stays host root (it mounts, joins cgroups, opens what the
//! zone's processes get). It makes the namespace once, at zone start: a
//! child unshares `CLONE_NEWUSER` and waits; the agent writes its maps
//! (zone ids 0-65535 to host ids `base`-`base+65535`, uid and gid), keeps a
//! descriptor of the namespace and lets the child go. Every process of the
//! zone then enters it between fork and exec ([`enter`]) and becomes the
//! zone's root (or the asked user) there, before its capabilities are cut
//! to the policy's.
//!
//! What the zone must write stays writable through idmapped mounts
//! ([`bind_idmapped`]): the workspace's repository, a bundle's root
//! filesystem and the policy's writable paths show host root's files as
//! the zone root's. The host's read-only view is not idmapped: there, host
//! root's files belong to nobody the zone knows.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::kernel::check;

/// Ids each zone has: uid (and gid) 0-65535 inside.
pub const SIZE: u32 = 65_536;

use rauha_guest_agent::mount_api::{
    MountAttr, MOUNT_ATTR_IDMAP, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
    MOVE_MOUNT_F_EMPTY_PATH, OPEN_TREE_CLONE,
};

/// Makes the zone's user namespace; returns a descriptor that keeps it.
pub fn create(base: u32) -> io::Result<OwnedFd> {
    let mut ready = [0 as RawFd; 2];
    let mut mapped = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element arrays.
    check(unsafe { libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: as above; each fd is owned from here.
    let (ready_r, ready_w) = unsafe {
        (
            OwnedFd::from_raw_fd(ready[0]),
            OwnedFd::from_raw_fd(ready[1]),
        )
    };
    check(unsafe { libc::pipe2(mapped.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: as above.
    let (mapped_r, mapped_w) = unsafe {
        (
            OwnedFd::from_raw_fd(mapped[0]),
            OwnedFd::from_raw_fd(mapped[1]),
        )
    };
    // SAFETY: the launcher is single-threaded,
    // and the child only makes system calls before it exits.
    let child = check(unsafe { libc::fork() })?;
    if child == 0 {
        // SAFETY: system calls on fds this process holds; _exit never
        // returns.
        unsafe {
            // The parent's ends: only the parent may hold them, or the
            // read below never sees the end of the pipe.
            libc::close(mapped_w.as_raw_fd());
            libc::close(ready_r.as_raw_fd());
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            let byte = [u8::from(ok)];
            libc::write(ready_w.as_raw_fd(), byte.as_ptr().cast(), 1);
            let mut b = [0u8; 1];
            libc::read(mapped_r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(mapped_r);
    let result = (|| {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a live buffer.
        let n = unsafe { libc::read(ready_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        if n != 1 || b[0] != 1 {
            return Err(io::Error::other(
                "cannot make the zone's user namespace (unshare(CLONE_NEWUSER) failed: are user namespaces enabled?)",
            ));
        }
        let map = format!("0 {base} {SIZE}\n");
        for file in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{child}/{file}"), &map).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot write the zone's {file}: {e}"))
            })?;
        }
        let path = CString::new(format!("/proc/{child}/ns/user")).map_err(io::Error::other)?;
        // SAFETY: a NUL-terminated path.
        let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
        // SAFETY: a new fd the kernel gave us.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })();
    // The helper exits once this end closes; it is not waited for here (a
    // round trip through the scheduler on every zone's start): the
    // launcher reaps it with the zone's PID 1 (`launch::run` waits for
    // any child).
    drop(mapped_w);
    result
}

/// Between fork and exec: enters the zone's user namespace, and, unless a
/// user is asked for (`apply` switches to it), becomes the zone's root.
/// Only system calls.
pub fn enter(userns: RawFd, become_root: bool) -> io::Result<()> {
    // SAFETY: plain system calls on an fd and integers.
    unsafe {
        check(libc::setns(userns, libc::CLONE_NEWUSER))?;
        if become_root {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(0, 0, 0))?;
            check(libc::setresuid(0, 0, 0))?;
        }
    }
    Ok(())
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

/// A detached copy of the mount tree at `source`, idmapped through
/// `userns` (and read-only when `readonly`): host id N shows as the id the
/// zone's N maps to.
fn idmapped_tree(
    source: &Path,
    userns: RawFd,
    readonly: bool,
    recursive: bool,
) -> io::Result<OwnedFd> {
    let c = cpath(source)?;
    let rec = if recursive {
        libc::AT_RECURSIVE as libc::c_uint
    } else {
        0
    };
    // SAFETY: open_tree with a NUL-terminated path.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel gave us.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let mut set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if readonly {
        set |= MOUNT_ATTR_RDONLY;
    }
    set_attr(&tree, set, userns as u64, recursive)?;
    Ok(tree)
}

/// Trees [`can_idmap`] made, kept for [`bind_idmapped`] of the same
/// source: a detached tree closed unattached costs an RCU grace period
/// (the kernel's `namespace_unlock`), and making it twice costs two.
static PROBED: std::sync::Mutex<Vec<(PathBuf, bool, OwnedFd)>> = std::sync::Mutex::new(Vec::new());

fn probed() -> std::sync::MutexGuard<'static, Vec<(PathBuf, bool, OwnedFd)>> {
    PROBED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `source` can be shown idmapped (its filesystem allows it). The
/// tree made to find out is kept for [`bind_idmapped`].
pub fn can_idmap(source: &Path, userns: RawFd, recursive: bool) -> io::Result<()> {
    let tree = idmapped_tree(source, userns, false, recursive)?;
    probed().push((source.to_path_buf(), recursive, tree));
    Ok(())
}

/// Drops the trees [`can_idmap`] kept (the zone runs without its user
/// namespace after all).
pub fn forget_probed() {
    probed().clear();
}

/// The tree [`can_idmap`] made of `source`, made read-only if asked.
fn take_probed(source: &Path, recursive: bool, readonly: bool) -> Option<io::Result<OwnedFd>> {
    let mut all = probed();
    let at = all
        .iter()
        .position(|(p, r, _)| p == source && *r == recursive)?;
    let (_, _, tree) = all.swap_remove(at);
    if !readonly {
        return Some(Ok(tree));
    }
    Some(set_attr(&tree, MOUNT_ATTR_RDONLY, 0, recursive).map(|()| tree))
}

/// `mount_setattr` on a detached tree: sets `set` (with `userns_fd` for
/// MOUNT_ATTR_IDMAP), on its whole subtree when `recursive`.
fn set_attr(tree: &OwnedFd, set: u64, userns_fd: u64, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd,
    };
    let rec = if recursive {
        libc::AT_RECURSIVE as libc::c_uint
    } else {
        0
    };
    // SAFETY: `attr` is a valid `struct mount_attr` of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | rec,
            &attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds `source` at `target`, idmapped through the zone's namespace.
pub fn bind_idmapped(
    source: &Path,
    target: &Path,
    userns: RawFd,
    readonly: bool,
    recursive: bool,
) -> io::Result<()> {
    let tree = match take_probed(source, recursive, readonly) {
        Some(tree) => tree,
        None => idmapped_tree(source, userns, readonly, recursive),
    }
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot idmap {} for the zone: {e}", source.display()),
        )
    })?;
    let t = cpath(target)?;
    // SAFETY: move_mount from our detached tree to a NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "cannot mount {} at {}: {e}",
                source.display(),
                target.display()
            ),
        ));
    }
    Ok(())
}
