//! Entering a container root: a process of a pod's container runs in the
//! root filesystem the host prepared for that container (its image, with
//! its bind mounts and a /dev), inside the zone's namespaces but in a mount
//! namespace of its own, with a /proc of the zone's pid namespace.
//!
//! Everything is prepared before the fork; the child only makes system
//! calls.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use rauha_guest_agent::config::{valid_root_name, Hardening, CONTAINERS_DIR};

use crate::kernel::{check, cpath};
use crate::rootfs::{PROC_MASKED, PROC_READ_ONLY};

pub struct EnterRoot {
    root: CString,
    proc_dir: CString,
    pts_source: CString,
    pts_target: CString,
    null: CString,
    masked: Vec<CString>,
    read_only: Vec<CString>,
    cwd: CString,
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

/// The zone's hardening with its paths moved under the container root:
/// Landlock rules follow inodes, so rules opened here through `root` hold
/// for the same files once the process sees `root` as `/`.
pub fn rooted(h: &Hardening, root: &Path) -> Hardening {
    let under = |paths: &[String]| -> Vec<String> {
        paths
            .iter()
            .map(|p| root.join(p.trim_start_matches('/')).display().to_string())
            .collect()
    };
    Hardening {
        capabilities: h.capabilities.clone(),
        deny_syscalls: h.deny_syscalls.clone(),
        landlock_read: under(&h.landlock_read),
        landlock_write: under(&h.landlock_write),
    }
}

impl EnterRoot {
    pub fn new(root: &Path, cwd: &str) -> io::Result<EnterRoot> {
        let proc_dir = root.join("proc");
        Ok(EnterRoot {
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
        })
    }

    /// Runs in the child: own mount namespace, /proc, the zone's terminals,
    /// then pivots into the root and changes to the working directory.
    pub fn enter(&self) -> io::Result<()> {
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: plain system calls on NUL-terminated strings owned by self.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"proc".as_ptr(),
                self.proc_dir.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ))?;
            // Masked and read-only parts of /proc, as in the zone; a name
            // this kernel lacks is skipped.
            for p in &self.masked {
                if libc::mount(
                    self.null.as_ptr(),
                    p.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) < 0
                {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        p.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY,
                        c"size=4k,mode=000".as_ptr().cast(),
                    );
                }
            }
            for p in &self.read_only {
                if libc::mount(
                    p.as_ptr(),
                    p.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) == 0
                {
                    libc::mount(
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
                    );
                }
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
            check(libc::chdir(self.cwd.as_ptr()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardening_paths_move_under_the_root() {
        let h = Hardening {
            capabilities: vec![1],
            deny_syscalls: vec![2],
            landlock_read: vec!["/".into(), "/usr".into()],
            landlock_write: vec!["/tmp".into()],
        };
        let r = rooted(&h, Path::new("/.rauha/containers/c1/rootfs"));
        assert_eq!(
            r.landlock_read,
            [
                "/.rauha/containers/c1/rootfs/",
                "/.rauha/containers/c1/rootfs/usr"
            ]
        );
        assert_eq!(r.landlock_write, ["/.rauha/containers/c1/rootfs/tmp"]);
        assert_eq!((r.capabilities, r.deny_syscalls), (vec![1], vec![2]));
    }

    #[test]
    fn root_names_cannot_leave_the_directory() {
        for bad in ["", "..", ".", "a/b", "../x"] {
            assert!(path(bad).is_err(), "{bad:?}");
        }
    }
}
