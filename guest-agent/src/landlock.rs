//! Landlock through its three system calls: a ruleset is built once, in
//! the agent, and each new process only calls `landlock_restrict_self`.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const CREATE_RULESET_VERSION: libc::c_uint = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;

/// Rights that apply to a file (not a directory) in a rule.
const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The kernel's Landlock ABI version, or 0 when Landlock is unavailable.
pub fn abi() -> u32 {
    // SAFETY: the version query takes no attribute.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).unwrap_or(0)
}

fn handled(abi: u32) -> u64 {
    let mut rights = (1 << 13) - 1;
    if abi >= 2 {
        rights |= REFER;
    }
    if abi >= 3 {
        rights |= TRUNCATE;
    }
    if abi >= 5 {
        rights |= IOCTL_DEV;
    }
    rights
}

/// A created ruleset: read/execute beneath `read`, everything beneath
/// `write`, and listing of `/` so programs can find their way.
/// `root`: the paths are a container's, resolved inside its root (the
/// rules are opened there, symlinks and all staying inside it), and the
/// root takes the place of `/`.
pub fn ruleset(
    abi: u32,
    root: Option<&Path>,
    read: &[String],
    write: &[String],
) -> io::Result<OwnedFd> {
    let all = handled(abi);
    let attr = RulesetAttr {
        handled_access_fs: all,
    };
    // SAFETY: attr is a valid ruleset attribute of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr,
            std::mem::size_of::<RulesetAttr>(),
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let root = root.map(File::open).transpose()?;
    let root = root.as_ref();
    add(&fd, root, "/", READ_DIR)?;
    for path in read {
        add(&fd, root, path, EXECUTE | READ_FILE | READ_DIR)?;
    }
    for path in write {
        add(&fd, root, path, all)?;
    }
    Ok(fd)
}

/// Opens `path` for a rule: as is, or inside `root` with
/// `openat2(RESOLVE_IN_ROOT)`.
fn open_rule_path(root: Option<&File>, path: &str) -> io::Result<File> {
    let Some(root) = root else {
        return File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(Path::new(path));
    };
    crate::kernel::open_in_root(root, path)
}

fn add(ruleset: &OwnedFd, root: Option<&File>, path: &str, rights: u64) -> io::Result<()> {
    let file = match open_rule_path(root, path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("landlock rule for {path}: {e}"),
            ))
        }
    };
    let is_dir = file.metadata().map(|m| m.is_dir()).unwrap_or(false);
    let attr = PathBeneathAttr {
        allowed_access: if is_dir { rights } else { rights & FILE_RIGHTS },
        parent_fd: file.as_raw_fd(),
    };
    // SAFETY: attr is a valid path-beneath attribute; both fds are open.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &attr,
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("landlock rule for {path}: {e}"),
        ));
    }
    Ok(())
}

/// Confines the calling process (after `no_new_privs`). Async-signal-safe.
pub fn restrict_self(ruleset: i32) -> io::Result<()> {
    // SAFETY: plain system call on a descriptor number.
    if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
