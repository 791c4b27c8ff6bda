//! `rauha-fd`: which descriptors the processes that Rauha starts hold.
//!
//! A descriptor is a capability: a host file, directory or socket left open
//! in a zone's process reaches the host whatever the zone's mounts say
//! (runc's CVE-2024-21626 used a leaked directory descriptor as a working
//! directory). Two rules keep them out of zones:
//!
//! - **At start-up**, each Rauha program that starts other programs (rauhad,
//!   the shim, the zone agent's launcher) marks every descriptor it
//!   inherited above stdio close-on-exec ([`cloexec_inherited`]): what a
//!   service manager, a shell, a CI runner or containerd left open stays in
//!   that one process and goes no further.
//! - **Between fork and exec**, the child marks every descriptor above
//!   stdio close-on-exec ([`cloexec_from`]) and only then moves the
//!   descriptors it passes on purpose into place (`dup2` clears the flag on
//!   its target). So a descriptor opened anywhere without `O_CLOEXEC` never
//!   crosses an exec.
//!
//! Marking, not closing: the standard library's `Command` reports a failed
//! exec over a close-on-exec pipe of its own, which must stay open until
//! the exec. [`cloexec_from`] runs in the forked child of a multi-threaded
//! process, so it makes system calls only and never allocates.

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// `close_range(2)`'s flag (Linux 5.11): mark instead of close.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Marks every descriptor from `lowest` up close-on-exec.
///
/// Async-signal-safe: for `pre_exec` hooks. Uses `close_range(2)`; on a
/// kernel without its `CLOSE_RANGE_CLOEXEC` flag, walks `/proc/self/fd`
/// with a buffer on the stack. An error means some descriptor may cross the
/// exec: the caller must not exec.
pub fn cloexec_from(lowest: RawFd) -> io::Result<()> {
    from(lowest, Action::Cloexec)
}

/// Closes every descriptor from `lowest` up: for a single-threaded program
/// at start, which was handed stdio and nothing else on purpose. System
/// calls only, as [`cloexec_from`].
pub fn close_from(lowest: RawFd) -> io::Result<()> {
    from(lowest, Action::Close)
}

#[derive(Clone, Copy)]
enum Action {
    Cloexec,
    Close,
}

fn from(lowest: RawFd, action: Action) -> io::Result<()> {
    let lowest = lowest.max(0);
    let flags = match action {
        Action::Cloexec => CLOSE_RANGE_CLOEXEC,
        Action::Close => 0,
    };
    // SAFETY: close_range takes integers only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            lowest as libc::c_uint,
            libc::c_uint::MAX,
            flags,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EINVAL) => by_walk(lowest, action),
        _ => Err(e),
    }
}

/// [`from`] without `close_range`: each descriptor listed in
/// `/proc/self/fd`, read with `getdents64` into a stack buffer.
fn by_walk(lowest: RawFd, action: Action) -> io::Result<()> {
    // SAFETY: open with a NUL-terminated literal.
    let dir = unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = walk(dir, |fd| {
        if fd < lowest || fd == dir {
            return Ok(());
        }
        match action {
            Action::Cloexec => set_cloexec(fd),
            Action::Close => {
                // SAFETY: closing a descriptor the caller gave up; the
                // listing stays valid (getdents reads the table anew).
                unsafe { libc::close(fd) };
                Ok(())
            }
        }
    });
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(dir) };
    result
}

/// Calls `each` with every descriptor number listed in the open directory
/// `dir` (a `/proc/<pid>/fd`). No allocation.
fn walk(dir: RawFd, mut each: impl FnMut(RawFd) -> io::Result<()>) -> io::Result<()> {
    #[repr(C, align(8))]
    struct Buf([u8; 2048]);
    let mut buf = Buf([0; 2048]);
    loop {
        // SAFETY: getdents64 writes at most the buffer's length into it.
        let n =
            unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.0.as_mut_ptr(), buf.0.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(());
        }
        let mut at = 0usize;
        let n = n as usize;
        // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
        while at + 19 < n {
            let reclen = u16::from_ne_bytes([buf.0[at + 16], buf.0[at + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let name = &buf.0[at + 19..(at + reclen).min(n)];
            if let Some(fd) = parse_fd(name) {
                each(fd)?;
            }
            at += reclen;
        }
    }
}

/// A NUL-terminated decimal name as a descriptor number (`.` and `..` are
/// not numbers).
fn parse_fd(name: &[u8]) -> Option<RawFd> {
    let mut fd: RawFd = 0;
    let mut digits = 0;
    for &b in name.iter().take_while(|&&b| b != 0) {
        if !b.is_ascii_digit() {
            return None;
        }
        fd = fd.checked_mul(10)?.checked_add(RawFd::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(fd)
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments; a closed fd gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        let e = io::Error::last_os_error();
        // Closed since it was listed: nothing to mark.
        return if e.raw_os_error() == Some(libc::EBADF) {
            Ok(())
        } else {
            Err(e)
        };
    }
    if flags & libc::FD_CLOEXEC != 0 {
        return Ok(());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A descriptor this process inherited and has now marked close-on-exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inherited {
    pub fd: RawFd,
    /// What it points at (`/proc/self/fd/N`'s link: a path, `pipe:[..]`,
    /// `socket:[..]`), for the log.
    pub target: PathBuf,
}

/// Marks every descriptor above stdio that is not close-on-exec already;
/// returns those it marked. Call it first thing in `main`, before any
/// thread or child is started: a program of Rauha keeps no inherited
/// descriptor it was not handed on purpose, and hands none on.
pub fn cloexec_inherited() -> io::Result<Vec<Inherited>> {
    let mut marked = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let name = entry?.file_name();
        let Some(fd) = name.to_str().and_then(|s| s.parse::<RawFd>().ok()) else {
            continue;
        };
        if fd <= libc::STDERR_FILENO {
            continue;
        }
        // SAFETY: fcntl with integer arguments.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        // The directory's own descriptor is close-on-exec and gone by now.
        if flags < 0 || flags & libc::FD_CLOEXEC != 0 {
            continue;
        }
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
        set_cloexec(fd)?;
        marked.push(Inherited { fd, target });
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// Every test marks descriptors of the whole test process: one at a time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pipe whose ends are *not* close-on-exec, as an inherited pair is.
    fn leaky_pipe() -> (OwnedFd, OwnedFd) {
        let mut ends = [0; 2];
        // SAFETY: pipe fills two fds we then own.
        assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
        // SAFETY: both were just created.
        unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) }
    }

    fn is_cloexec(fd: &OwnedFd) -> bool {
        // SAFETY: fcntl on an fd we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    #[test]
    fn fd_names_parse_as_numbers_only() {
        assert_eq!(parse_fd(b"0\0"), Some(0));
        assert_eq!(parse_fd(b"255\0junk"), Some(255));
        assert_eq!(parse_fd(b".\0"), None);
        assert_eq!(parse_fd(b"..\0"), None);
        assert_eq!(parse_fd(b"\0"), None);
        assert_eq!(parse_fd(b"99999999999\0"), None);
    }

    #[test]
    fn the_walk_marks_what_close_range_would() {
        let _one = serial();
        let (r, w) = leaky_pipe();
        assert!(!is_cloexec(&r) && !is_cloexec(&w));
        by_walk(w.as_raw_fd(), Action::Cloexec).expect("walk");
        assert!(is_cloexec(&w), "at or above the lowest: marked");
        if r.as_raw_fd() < w.as_raw_fd() {
            assert!(!is_cloexec(&r), "below the lowest: left alone");
        }
    }

    #[test]
    fn the_walk_closes_from_the_lowest() {
        let _one = serial();
        let (r, w) = leaky_pipe();
        let (low, high) = (
            r.as_raw_fd().min(w.as_raw_fd()),
            r.as_raw_fd().max(w.as_raw_fd()),
        );
        // The test harness's own descriptors sit below: close only ours.
        by_walk(high, Action::Close).expect("walk");
        // SAFETY: fcntl with integer arguments.
        assert!(unsafe { libc::fcntl(high, libc::F_GETFD) } < 0, "closed");
        // SAFETY: as above.
        assert!(
            unsafe { libc::fcntl(low, libc::F_GETFD) } >= 0,
            "below: open"
        );
        // The closed one must not be closed again when its owner drops.
        std::mem::forget(if r.as_raw_fd() == high { r } else { w });
    }

    #[test]
    fn close_range_marks_everything_from_the_lowest() {
        let _one = serial();
        let (r, w) = leaky_pipe();
        cloexec_from(r.as_raw_fd().min(w.as_raw_fd())).expect("close_range");
        assert!(is_cloexec(&r) && is_cloexec(&w));
    }

    #[test]
    fn inherited_descriptors_are_reported_once() {
        let _one = serial();
        let (r, _w) = leaky_pipe();
        let marked = cloexec_inherited().expect("marks");
        let found = marked.iter().find(|i| i.fd == r.as_raw_fd());
        assert!(
            found.is_some_and(|i| i.target.to_string_lossy().starts_with("pipe:[")),
            "{marked:?}"
        );
        assert!(is_cloexec(&r));
        let again = cloexec_inherited().expect("marks");
        assert!(!again.iter().any(|i| i.fd == r.as_raw_fd()), "{again:?}");
    }
}
