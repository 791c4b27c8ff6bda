//! Thin, checked wrappers over the few system calls the agent makes.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Turns a libc return value into an `io::Result`.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

/// Error with the operation and path in its text.
pub fn context(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// `mount(2)`; `source`/`fstype`/`data` may be empty.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let src = CString::new(source)?;
    let tgt = cpath(target)?;
    let fs = CString::new(fstype)?;
    let dat = CString::new(data)?;
    let opt = |c: &CString, s: &str| {
        if s.is_empty() {
            std::ptr::null()
        } else {
            c.as_ptr()
        }
    };
    // SAFETY: all pointers are valid NUL-terminated strings (or null) that
    // outlive the call.
    let ret = unsafe {
        libc::mount(
            opt(&src, source),
            tgt.as_ptr(),
            opt(&fs, fstype),
            flags,
            opt(&dat, data).cast(),
        )
    };
    check(ret)
        .map(drop)
        .map_err(|e| context(&format!("mount {fstype}{source} on"), target, e))
}

/// Bind-mounts `source` on `target`, then remounts it with `flags` (e.g.
/// read-only); a bind ignores flags on the first call.
pub fn bind(source: &Path, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    mount(&source.to_string_lossy(), target, "", libc::MS_BIND, "")?;
    if flags != 0 {
        mount("", target, "", libc::MS_BIND | libc::MS_REMOUNT | flags, "")?;
    }
    Ok(())
}

/// `openat2(2)`'s `struct open_how`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens directory `path` (`O_PATH`) without following a `/proc` magic
/// link (`/proc/self/fd/N`, `/proc/PID/cwd`, ...) on the way: such a link
/// names whatever a descriptor points at, which may be a directory of the
/// host that the agent holds open (runc's CVE-2024-21626). A path through
/// one fails with `ELOOP`. System calls only: for a forked child too.
pub fn open_dir_no_magic_links(path: &std::ffi::CStr) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a NUL-terminated path and an open_how of its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that we own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Changes to directory `path` as [`open_dir_no_magic_links`] opens it.
/// System calls only: for a forked child.
pub fn chdir_no_magic_links(path: &std::ffi::CStr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = open_dir_no_magic_links(path)?;
    // SAFETY: fchdir on a descriptor we own.
    check(unsafe { libc::fchdir(dir.as_raw_fd()) }).map(drop)
}

/// Opens `inside` as an O_PATH file, resolved within the directory `root`
/// (`openat2(RESOLVE_IN_ROOT)`): symlinks, absolute ones included, and
/// `..` never leave it.
pub fn open_in_root(root: &std::fs::File, inside: &str) -> io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let rel = inside.trim_start_matches('/');
    let c = CString::new(if rel.is_empty() { "." } else { rel })
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid dirfd, path and open_how of its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that we own.
    Ok(std::fs::File::from(unsafe {
        OwnedFd::from_raw_fd(fd as i32)
    }))
}

/// The pids /proc lists (this process's PID namespace's), in no order.
pub fn proc_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}
