//! The container's bundle on the host: its OCI spec, its root filesystem
//! mount, and the output FIFOs the shim holds open.

use super::*;

/// Reads `config.json` of an OCI bundle.
pub fn read_bundle_spec(bundle: &Path) -> Result<Value, BundleError> {
    let path = bundle.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(source) => return Err(BundleError::Read { path, source }),
    };
    serde_json::from_str(&text).map_err(|source| BundleError::NotJson { path, source })
}

/// Whether `path` is on another filesystem than its parent.
pub(super) fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
}

/// Detaches the container's root filesystem mount, if any.
pub fn unmount_rootfs(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    if let Ok(c) = std::ffi::CString::new(rootfs.as_os_str().as_encoded_bytes()) {
        // SAFETY: umount2 with a NUL-terminated path we own; EINVAL (not a
        // mount point) and ENOENT are expected and ignored.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Opens the output paths that are FIFOs for writing, without waiting:
/// containerd opened their read ends before it asked for the start. A path
/// that is a file, or a FIFO nobody reads, is left alone.
pub(super) fn hold_outputs(stdio: &v1::StdioPaths) -> Vec<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    [&stdio.stdout, &stdio.stderr]
        .into_iter()
        .filter(|p| !p.is_empty())
        .filter(|p| {
            std::fs::metadata(p)
                .map(|m| m.file_type().is_fifo())
                .unwrap_or(false)
        })
        .filter_map(|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(p)
                .ok()
        })
        .collect()
}

impl Service {
    /// Mounts what containerd prepared as the container's root filesystem.
    pub(super) async fn mount_rootfs(
        &self,
        req: &api::CreateTaskRequest,
        replay: bool,
    ) -> TtrpcResult<()> {
        if req.rootfs.is_empty() {
            return Ok(());
        }
        let rootfs = Path::new(&req.bundle).join("rootfs");
        if replay && is_mount_point(&rootfs) {
            // Mounted by the shim that died before it answered.
            return Ok(());
        }
        if let Err(source) = std::fs::create_dir_all(&rootfs) {
            return Err(Error::RootfsDir {
                path: rootfs,
                source,
            }
            .into());
        }
        for m in &req.rootfs {
            if let Err(e) = containerd_shim::util::mount_rootfs(m, &rootfs).await {
                unmount_rootfs(Path::new(&req.bundle));
                return Err(Error::Mount {
                    kind: m.type_.clone(),
                    source: e,
                }
                .into());
            }
        }
        Ok(())
    }
}
