//! Host-side file and process facts the Linux backend needs: state
//! directories, mounts under them, process start times, OCI bundles.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rauha_backend::BackendError;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BackendError {
    let what = what.into();
    move |source| BackendError::Io { what, source }
}

pub fn make_private_dir(dir: &Path) -> Result<(), BackendError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("cannot restrict {}", dir.display())))
}

/// Gives the workspace's upper layer the repository root's mode and owner:
/// overlayfs shows the workspace's root with the upper layer's.
pub fn like_repo_root(upper: &Path, repo: &Path) -> Result<(), BackendError> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(repo).map_err(io_err(format!("cannot inspect {}", repo.display())))?;
    std::os::unix::fs::chown(upper, Some(meta.uid()), Some(meta.gid()))
        .map_err(io_err(format!("cannot give {} its owner", upper.display())))?;
    std::fs::set_permissions(upper, std::fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(
        io_err(format!("cannot set the mode of {}", upper.display())),
    )
}

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat`
/// field 22), or `None` when it is gone or a zombie.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is index 19.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// A mountinfo field with its octal escapes (`\040` space, `\011` tab,
/// `\012` newline, `\134` backslash) decoded.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = i + 3 < b.len()
            && b[i] == b'\\'
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        let value = b[i + 1..(i + 4).min(b.len())]
            .iter()
            .fold(0u32, |v, c| v * 8 + u32::from(c.wrapping_sub(b'0')));
        if octal && value <= 0xff {
            out.push(value as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points (host view) at or beneath `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    // mountinfo holds real paths: compare with the real path of `dir`.
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

pub fn detach(mount: &Path) {
    if let Ok(c) = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()) {
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Removes a zone's state directory, never crossing into a mount.
pub fn remove_state_dir(dir: &Path) -> Result<(), BackendError> {
    for m in mounts_under(dir) {
        detach(&m);
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("cannot remove {}", dir.display()))(e)),
    }
}

/// A host process's pid in its innermost pid namespace (the last field of
/// `NSpid` in /proc/PID/status).
pub fn innermost_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// Reads an OCI bundle's `config.json`: the root filesystem's host path and
/// whether it is read-only.
pub fn read_bundle(bundle: &Path) -> Result<(PathBuf, bool), BackendError> {
    let bad = |message: String| BackendError::Bundle {
        path: bundle.display().to_string(),
        message,
    };
    let config_path = bundle.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| bad(format!("cannot read config.json ({e}); give a directory holding config.json and its rootfs, as runc takes it")))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("config.json is not JSON: {e}")))?;
    let root = config.get("root").ok_or_else(|| {
        bad("config.json has no \"root\"; add {\"root\": {\"path\": \"rootfs\"}}".into())
    })?;
    let path = root
        .get("path")
        .and_then(|p| p.as_str())
        .ok_or_else(|| bad("config.json root.path is missing or not a string".into()))?;
    let readonly = root
        .get("readonly")
        .and_then(|r| r.as_bool())
        .unwrap_or(false);
    let rootfs = if Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        bundle.join(path)
    };
    if !rootfs.is_dir() {
        return Err(bad(format!(
            "root.path {} is not a directory",
            rootfs.display()
        )));
    }
    Ok((rootfs, readonly))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_ticks_are_readable() {
        assert!(start_ticks(std::process::id()).is_some());
        assert_eq!(start_ticks(u32::MAX), None);
    }

    #[test]
    fn mountinfo_escapes_decode() {
        assert_eq!(unescape_mountinfo("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(unescape_mountinfo("/plain\\"), "/plain\\");
        assert_eq!(unescape_mountinfo("/x\\777"), "/x\\777");
    }

    #[test]
    fn bundle_errors_say_what_to_do() {
        let dir = std::env::temp_dir().join(format!("rauha-bundle-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("rootfs")).expect("dir");
        let e = read_bundle(&dir).expect_err("no config").to_string();
        assert!(e.contains("config.json"), "{e}");
        std::fs::write(
            dir.join("config.json"),
            r#"{"root":{"path":"rootfs","readonly":true}}"#,
        )
        .expect("w");
        assert_eq!(
            read_bundle(&dir).expect("valid"),
            (dir.join("rootfs"), true)
        );
        std::fs::write(dir.join("config.json"), r#"{"root":{"path":"nope"}}"#).expect("w");
        assert!(read_bundle(&dir)
            .expect_err("missing rootfs")
            .to_string()
            .contains("not a directory"));
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
