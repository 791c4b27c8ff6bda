//! The zone agent's binary as a sealed in-memory copy.
//!
//! The agent is PID 1 of every zone, so its `/proc/1/exe` is in the zone's
//! view. Were that the host's file, a process of the zone that could open
//! it for writing would replace the program that every later zone (and
//! rauhad's own children) runs as host root: runc's CVE-2019-5736. rauhad
//! therefore copies the agent once, at start, into a memfd sealed against
//! every change (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`)
//! and starts each zone's agent from that copy (`/proc/self/fd/N`, which
//! the kernel opens before close-on-exec descriptors are closed). The
//! zone's `/proc/1/exe` is then `/memfd:rauha-guest-agent (deleted)`:
//! writing it fails with `EPERM` whatever the writer's privileges. One
//! copy serves every zone (the same pages), and an upgraded agent on disk
//! is taken at rauhad's next start.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `MFD_EXEC` (Linux 6.3): asks for an executable memfd where the
/// `vm.memfd_noexec` sysctl would otherwise refuse one.
const MFD_EXEC: libc::c_uint = 0x10;

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// A read-only, sealed copy of a binary, executable by path.
#[derive(Debug)]
pub struct SealedBinary {
    memfd: OwnedFd,
    /// The file it was copied from (for messages).
    source: PathBuf,
}

impl SealedBinary {
    /// Copies `source` into a new sealed memfd (close-on-exec).
    pub fn copy(source: &Path) -> io::Result<SealedBinary> {
        let name = c"rauha-guest-agent";
        let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        // SAFETY: memfd_create with a NUL-terminated name; checked below.
        let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) };
        if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // A kernel before 6.3 knows no MFD_EXEC; its memfds execute.
            // SAFETY: as above.
            fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
        }
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a new fd that nothing else owns.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Copied through this process's memory, not io::copy: the kernel's
        // copy_file_range/splice can leave the memfd's pages pinned for a
        // moment, and sealing it against writes then fails with EBUSY.
        let bytes = std::fs::read(source)?;
        let mut to = File::from(memfd.try_clone()?);
        io::Write::write_all(&mut to, &bytes)?;
        drop(to);
        let mut tries = 0;
        // SAFETY: fcntl with integer arguments on an fd we own.
        while unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
            let e = io::Error::last_os_error();
            // Pages still pinned (the kernel waits a moment itself): again.
            if e.raw_os_error() != Some(libc::EBUSY) || tries == 20 {
                return Err(e);
            }
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(SealedBinary {
            memfd,
            source: source.to_path_buf(),
        })
    }

    /// The path a child execs: this process's descriptor of the copy.
    pub fn exec_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.memfd.as_raw_fd()))
    }

    pub fn source(&self) -> &Path {
        &self.source
    }
}

/// Whether `fd` is sealed against writes, growth, shrinking and new seals.
#[cfg(test)]
fn fully_sealed(fd: &impl AsRawFd) -> bool {
    // SAFETY: fcntl with integer arguments.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn the_copy_is_sealed_and_cannot_be_written_through_its_path() {
        let sealed = SealedBinary::copy(Path::new("/bin/true")).expect("copy");
        assert!(fully_sealed(&sealed.memfd));
        assert_eq!(
            std::fs::read(sealed.exec_path()).expect("read"),
            std::fs::read("/bin/true").expect("read")
        );
        let err = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(sealed.exec_path())
            .and_then(|mut f| f.write_all(b"x"))
            .expect_err("sealed against writes");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    }

    #[test]
    fn the_copy_runs() {
        let sealed = SealedBinary::copy(Path::new("/bin/true")).expect("copy");
        let status = std::process::Command::new(sealed.exec_path())
            .status()
            .expect("exec the sealed copy");
        assert!(status.success());
    }

    #[test]
    fn a_missing_source_is_an_error() {
        let err = SealedBinary::copy(Path::new("/nonexistent/agent")).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
