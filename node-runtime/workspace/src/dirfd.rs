//! Directory handles that never follow a symlink.
//!
//! Every lookup is relative to an open directory (`openat`, `fstatat`,
//! `readlinkat`, ...) with `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`, and a walk
//! opens one component at a time with `O_DIRECTORY | O_NOFOLLOW`. A symlink
//! in the repository or in the upper layer, even one planted while we walk,
//! therefore cannot send a read or a write anywhere else: the open of that
//! component fails instead.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// What one directory entry is, as the workspace sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A character device 0/0: an overlayfs whiteout.
    Whiteout,
    /// A fifo, a socket or a device node: nothing a `FileChange` describes.
    Other,
}

/// The part of `struct stat` the workspace uses.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub kind: EntryKind,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
}

impl Entry {
    fn from_stat(st: &libc::stat) -> Entry {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => EntryKind::File,
            libc::S_IFDIR => EntryKind::Dir,
            libc::S_IFLNK => EntryKind::Symlink,
            libc::S_IFCHR if st.st_rdev == 0 => EntryKind::Whiteout,
            _ => EntryKind::Other,
        };
        Entry {
            kind,
            mode: st.st_mode & 0o7777,
            size: u64::try_from(st.st_size).unwrap_or(0),
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }
}

/// An open directory.
#[derive(Debug)]
pub(super) struct DirFd {
    fd: OwnedFd,
}

impl AsRawFd for DirFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a nul byte"))
}

/// Turns a returned descriptor (or -1) into an owned one.
fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by a successful open call, so it is a
    // valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn fstat(fd: RawFd) -> io::Result<Entry> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the duration of the call and `st` is a valid
    // out-pointer.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(Entry::from_stat(&st))
}

/// Reads an extended attribute of an open file or directory; `None` when it
/// is not set (or the filesystem has no xattrs at all).
pub(super) fn fd_xattr(fd: &impl AsRawFd, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `name` is nul-terminated, `buf` is writable for `buf.len()`
        // bytes and the descriptor is open for the duration of the call.
        let n = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n.unsigned_abs());
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    }
}

impl DirFd {
    /// Opens a root (the repository, the upper layer). The path itself is
    /// the daemon's, so it may go through symlinks; nothing below it will.
    pub fn open(path: &Path) -> io::Result<DirFd> {
        let c = c_name(path.as_os_str())?;
        // SAFETY: `c` is a valid nul-terminated path.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        Ok(DirFd { fd: owned(fd)? })
    }

    fn openat(&self, name: &OsStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
        let c = c_name(name)?;
        // SAFETY: `self.fd` is an open directory and `c` a nul-terminated name.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                libc::c_uint::from(mode),
            )
        };
        owned(fd)
    }

    pub fn try_clone(&self) -> io::Result<DirFd> {
        Ok(DirFd {
            fd: self.fd.try_clone()?,
        })
    }

    /// Opens the subdirectory `name`; fails (`ELOOP`/`ENOTDIR`) on a symlink.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<DirFd> {
        let fd = self.openat(name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        Ok(DirFd { fd })
    }

    /// Opens each component in turn below this directory.
    pub fn walk<'a>(&self, components: impl IntoIterator<Item = &'a str>) -> io::Result<DirFd> {
        let mut dir = self.try_clone()?;
        for c in components {
            dir = dir.open_dir(OsStr::new(c))?;
        }
        Ok(dir)
    }

    /// Opens the regular file `name` for reading. A fifo does not block the
    /// open (`O_NONBLOCK`) and anything but a regular file is refused.
    pub fn open_regular(&self, name: &OsStr) -> io::Result<(File, Entry)> {
        let fd = self.openat(name, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY, 0)?;
        let entry = fstat(fd.as_raw_fd())?;
        if entry.kind != EntryKind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let file = File::from(fd);
        // Reads should block normally now that we know it is a file.
        // SAFETY: the descriptor is open; F_SETFL only changes status flags.
        check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_RDONLY) })?;
        Ok((file, entry))
    }

    /// Creates `name` as a new regular file; fails if anything (even a
    /// dangling symlink) is already there.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let fd = self.openat(
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            mode as libc::mode_t,
        )?;
        Ok(File::from(fd))
    }

    /// `lstat` of `name`.
    pub fn stat(&self, name: &OsStr) -> io::Result<Entry> {
        let c = c_name(name)?;
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: open directory, nul-terminated name, valid out-pointer.
        check(unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(Entry::from_stat(&st))
    }

    /// `lstat` of `name`, `None` when it does not exist.
    pub fn stat_opt(&self, name: &OsStr) -> io::Result<Option<Entry>> {
        match self.stat(name) {
            Ok(e) => Ok(Some(e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `fstat` of this directory.
    pub fn stat_self(&self) -> io::Result<Entry> {
        fstat(self.fd.as_raw_fd())
    }

    /// The target of the symlink `name`, as stored.
    pub fn read_link(&self, name: &OsStr) -> io::Result<OsString> {
        let c = c_name(name)?;
        let mut buf = vec![0u8; 1024];
        loop {
            // SAFETY: open directory, nul-terminated name, `buf` writable for
            // `buf.len()` bytes.
            let n = unsafe {
                libc::readlinkat(
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n.unsigned_abs();
            if n < buf.len() {
                buf.truncate(n);
                return Ok(OsString::from_vec(buf));
            }
            buf.resize(buf.len() * 4, 0);
        }
    }

    /// The names in this directory (without `.` and `..`), sorted.
    pub fn entries(&self) -> io::Result<Vec<OsString>> {
        // A fresh open file description, so the listing starts at the
        // beginning whatever was read from `self` before.
        let fd = self.openat(OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        // SAFETY: `raw` is an open directory descriptor whose ownership
        // passes to the DIR stream (closed by `closedir` below).
        let dir = unsafe { libc::fdopendir(raw) };
        if dir.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `raw` is still ours to close.
            unsafe { libc::close(raw) };
            return Err(e);
        }
        let mut names = Vec::new();
        let result = loop {
            // SAFETY: errno is thread-local; zeroing it tells the end of the
            // stream (null, errno 0) from an error (null, errno set).
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `dir` is a valid, open DIR stream.
            let ent = unsafe { libc::readdir(dir) };
            if ent.is_null() {
                let e = io::Error::last_os_error();
                break match e.raw_os_error() {
                    Some(0) | None => Ok(()),
                    _ => Err(e),
                };
            }
            // SAFETY: readdir returned a valid entry whose `d_name` is a
            // nul-terminated string, valid until the next readdir call.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            let bytes = name.to_bytes();
            if bytes != b"." && bytes != b".." {
                names.push(OsString::from_vec(bytes.to_vec()));
            }
        };
        // SAFETY: `dir` is open and closed exactly once.
        unsafe { libc::closedir(dir) };
        result?;
        names.sort();
        Ok(names)
    }

    /// Reads an extended attribute of this directory.
    pub fn xattr(&self, name: &CStr) -> io::Result<Option<Vec<u8>>> {
        fd_xattr(&self.fd, name)
    }

    pub fn mkdir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: open directory, nul-terminated name.
        check(unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })
    }

    pub fn symlink(&self, target: &OsStr, name: &OsStr) -> io::Result<()> {
        let t = c_name(target)?;
        let c = c_name(name)?;
        // SAFETY: both strings are nul-terminated; the directory is open.
        check(unsafe { libc::symlinkat(t.as_ptr(), self.fd.as_raw_fd(), c.as_ptr()) })
    }

    /// Removes `name` (an empty directory when `dir`), never following it.
    pub fn unlink(&self, name: &OsStr, dir: bool) -> io::Result<()> {
        let c = c_name(name)?;
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: open directory, nul-terminated name.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), flags) })
    }

    /// Moves `name` to `to/to_name`, failing if `to_name` exists. The entry
    /// itself moves (a symlink is never followed by a rename).
    pub fn rename_noreplace(&self, name: &OsStr, to: &DirFd, to_name: &OsStr) -> io::Result<()> {
        let from = c_name(name)?;
        let dest = c_name(to_name)?;
        // SAFETY: both directories are open, both names nul-terminated.
        let rc = unsafe {
            libc::renameat2(
                self.fd.as_raw_fd(),
                from.as_ptr(),
                to.fd.as_raw_fd(),
                dest.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        match check(rc) {
            // A filesystem without RENAME_NOREPLACE: check, then rename.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                if to.stat_opt(to_name)?.is_some() {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                // SAFETY: as above.
                check(unsafe {
                    libc::renameat(
                        self.fd.as_raw_fd(),
                        from.as_ptr(),
                        to.fd.as_raw_fd(),
                        dest.as_ptr(),
                    )
                })
            }
            other => other,
        }
    }

    /// Sets the owner of `name` without following it.
    pub fn chown(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: open directory, nul-terminated name.
        check(unsafe {
            libc::fchownat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    /// Sets this directory's permission bits.
    pub fn chmod_self(&self, mode: u32) -> io::Result<()> {
        // SAFETY: the descriptor is open.
        check(unsafe { libc::fchmod(self.fd.as_raw_fd(), mode as libc::mode_t) })
    }

    /// Opens `name` below this directory for reading, following symlinks
    /// only while they stay beneath it (`openat2` with `RESOLVE_BENEATH`
    /// and no magic links): a regular file, or an error.
    pub fn open_beneath(&self, name: &OsStr) -> io::Result<File> {
        let c = c_name(name)?;
        // (Declared here: libc's is non-exhaustive.)
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY) as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: open directory, nul-terminated name, `how` of its size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &how,
                std::mem::size_of::<OpenHow>(),
            )
        };
        let fd = owned(i32::try_from(fd).unwrap_or(-1))?;
        if fstat(fd.as_raw_fd())?.kind != EntryKind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(File::from(fd))
    }

    /// Sets this directory's owner.
    pub fn chown_self(&self, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: the descriptor is open.
        check(unsafe { libc::fchown(self.fd.as_raw_fd(), uid, gid) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_refuses_a_symlinked_component() {
        let scratch = crate::fixture::Scratch::new("dirfd");
        let root = scratch.root.join("lower");
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("real", root.join("link")).unwrap();
        let dir = DirFd::open(&root).unwrap();
        assert!(dir.walk(["real", "sub"]).is_ok());
        // O_DIRECTORY | O_NOFOLLOW on a symlink: ENOTDIR (ELOOP on some
        // kernels); either way it is not opened.
        let err = dir.walk(["link", "sub"]).unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)),
            "{err}"
        );
        assert_eq!(
            dir.stat(OsStr::new("link")).unwrap().kind,
            EntryKind::Symlink
        );
        assert_eq!(dir.read_link(OsStr::new("link")).unwrap(), "real");
        assert_eq!(
            dir.entries().unwrap(),
            vec![OsString::from("link"), "real".into()]
        );
        // A second listing of the same handle starts from the beginning.
        assert_eq!(dir.entries().unwrap().len(), 2);
        assert!(dir.open_regular(OsStr::new("link")).is_err());
    }
}
