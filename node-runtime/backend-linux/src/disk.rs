//! A zone's disk limit: its workspace's copy-on-write layer lives on a
//! filesystem of its own, as large as the policy's `disk_limit`, so that a
//! task that fills it gets ENOSPC in the zone and the host's free space
//! drops by at most the limit.
//!
//! The filesystem is an ext4 (no journal: it is scratch) made in a sparse
//! file, attached to a loop device with `LOOP_CONFIGURE` and
//! `LO_FLAGS_AUTOCLEAR`, and mounted on the zone's workspace directory. The
//! file is unlinked once attached: only the loop device holds it, the
//! device goes when the last mount of the filesystem does (the zone's
//! teardown), and its blocks are freed with it; nothing of it is left on
//! the host to clean up after a crash.
//!
//! Measured against the alternatives (docs/performance.md): a tmpfs is
//! charged to the zone's memory cgroup, so a full disk would be an OOM kill
//! instead of ENOSPC; a project quota needs a filesystem mounted with
//! `prjquota`, which the state dir's is not in general, and ext4 answers
//! EDQUOT rather than ENOSPC.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

use rauha_backend::BackendError;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_config`: the backing file, the block size, a
/// `struct loop_info64` (232 bytes) and reserved space.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: [u8; 232],
    reserved: [u64; 8],
}

/// `lo_flags` within `struct loop_info64`: after lo_device, lo_inode,
/// lo_rdevice, lo_offset, lo_sizelimit (u64 each), lo_number,
/// lo_encrypt_type, lo_encrypt_key_size (u32 each).
const LO_FLAGS_OFFSET: usize = 5 * 8 + 3 * 4;

fn io_err(what: String) -> impl FnOnce(io::Error) -> BackendError {
    move |source| BackendError::Io { what, source }
}

/// Makes `dir` the mount point of a new filesystem of `bytes` bytes.
/// `image` is where its file is made (and unlinked once attached).
pub fn mount_limited(dir: &Path, image: &Path, bytes: u64) -> Result<(), BackendError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)
        .map_err(io_err(format!("cannot create {}", image.display())))?;
    let made = make_fs(&file, image, bytes).and_then(|()| attach(&file));
    // The loop device holds the file from here on (or nothing does).
    let _ = std::fs::remove_file(image);
    let (path, device) = made?;
    // Mounted before `device` closes: an auto-clearing loop device with no
    // user left detaches at once.
    let mounted = mount(&path, dir);
    drop(device);
    mounted?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(io_err(format!("cannot restrict {}", dir.display())))
}

fn make_fs(file: &File, image: &Path, bytes: u64) -> Result<(), BackendError> {
    file.set_len(bytes).map_err(io_err(format!(
        "cannot size {} to the disk limit",
        image.display()
    )))?;
    // No journal and no metadata checksums (scratch, thrown away with the
    // zone), no reserved blocks (the limit is the limit), an inode per
    // 8 KiB (trees of small files), inode tables initialised lazily
    // (milliseconds, not seconds).
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-O",
            "^has_journal,^metadata_csum",
            "-m",
            "0",
            "-i",
            "8192",
        ])
        .args(["-E", "lazy_itable_init=1,nodiscard"])
        .arg(image)
        .env_clear()
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .map_err(io_err(
            "cannot run mkfs.ext4 for the workspace's disk limit (install e2fsprogs)".into(),
        ))?;
    if !out.status.success() {
        return Err(BackendError::Io {
            what: format!(
                "mkfs.ext4 failed for the workspace's disk limit: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            source: io::Error::other(out.status.to_string()),
        });
    }
    Ok(())
}

/// Attaches `file` to a free loop device that clears itself when its last
/// user goes; returns the device's path and an open handle of it.
fn attach(file: &File) -> Result<(String, File), BackendError> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")
        .map_err(io_err("cannot open /dev/loop-control".into()))?;
    let mut config = LoopConfig {
        fd: file.as_raw_fd() as u32,
        block_size: 0,
        info: [0; 232],
        reserved: [0; 8],
    };
    config.info[LO_FLAGS_OFFSET..LO_FLAGS_OFFSET + 4]
        .copy_from_slice(&LO_FLAGS_AUTOCLEAR.to_ne_bytes());
    // Another process may take the free device between the two calls.
    let mut last = None;
    for _ in 0..8 {
        // SAFETY: an ioctl without arguments on the control device.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io_err("cannot get a free loop device".into())(
                io::Error::last_os_error(),
            ));
        }
        let path = format!("/dev/loop{n}");
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err(format!("cannot open {path}")))?;
        // SAFETY: `config` is a valid `struct loop_config` that outlives the
        // call; the kernel only reads it.
        let r = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if r == 0 {
            return Ok((path, device));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(io_err(format!(
                "cannot attach the workspace's image to {path}"
            ))(e));
        }
        last = Some(e);
    }
    Err(io_err("no free loop device stayed free".into())(
        last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)),
    ))
}

fn mount(device: &str, dir: &Path) -> Result<(), BackendError> {
    let cstr = |s: &[u8]| {
        std::ffi::CString::new(s).map_err(|_| BackendError::Io {
            what: "a path holds a NUL byte".into(),
            source: io::ErrorKind::InvalidInput.into(),
        })
    };
    let source = cstr(device.as_bytes())?;
    let target = cstr(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: NUL-terminated strings we own.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            c"ext4".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io_err(format!(
            "cannot mount the workspace's filesystem on {}",
            dir.display()
        ))(io::Error::last_os_error()));
    }
    Ok(())
}
