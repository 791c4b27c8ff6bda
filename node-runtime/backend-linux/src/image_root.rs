//! A zone's root from an image: an overlay of the image's unpacked layers
//! (the node's image store keeps them, shared and never written) under an
//! upper layer of the zone's own, on a filesystem sized to the policy's
//! disk limit and thrown away with the zone's state dir.
//!
//! ```text
//! <state>/image-rw/upper, work   (ext4 on a loop file, disk-limited)
//! <state>/rootfs                 overlay: lowerdir = top:...:bottom
//! ```
//!
//! The overlay is mounted `nodev` (the store makes no device node but the
//! 0/0 whiteouts overlayfs reads itself); the agent shows it as the zone's
//! root like a bundle's, idmapped when the zone has a user namespace.

use std::ffi::CString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rauha_backend::BackendError;
use rauha_spec::ImageLayer;

use crate::disk;

/// Where the overlay is mounted in a zone's state dir.
pub const ROOTFS: &str = "rootfs";
const RW: &str = "image-rw";

/// The mount options' limit: one page.
const MAX_OPTIONS: usize = 4095;

fn io(what: String) -> impl FnOnce(std::io::Error) -> BackendError {
    move |source| BackendError::Io { what, source }
}

/// overlayfs's options for `layers` (bottom first); refused when a layer
/// path could be read as another option or the whole is over a page.
pub fn options(layers: &[&Path], upper: &Path, work: &Path) -> Result<String, BackendError> {
    let bad = |message: String| BackendError::Io {
        what: "image root".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
    };
    if layers.is_empty() {
        return Err(bad("the image has no layers".into()));
    }
    let text = |p: &Path| -> Result<String, BackendError> {
        let s = p
            .to_str()
            .ok_or_else(|| bad(format!("{} is not UTF-8", p.display())))?;
        if s.contains([',', ':', '\\']) || s.contains(char::is_control) {
            return Err(bad(format!("{s:?} cannot be named in overlay options")));
        }
        Ok(s.to_string())
    };
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| text(p))
        .collect::<Result<_, _>>()?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        text(upper)?,
        text(work)?
    );
    if options.len() > MAX_OPTIONS {
        return Err(bad(format!(
            "the image's {} layers do not fit one overlay mount's options ({} bytes, over {MAX_OPTIONS})",
            layers.len(),
            options.len()
        )));
    }
    Ok(options)
}

/// Mounts the zone's image root at `<state>/rootfs`; its path.
pub fn mount(
    state_dir: &Path,
    layers: &[ImageLayer],
    disk_bytes: u64,
) -> Result<PathBuf, BackendError> {
    let paths: Vec<&Path> = layers.iter().map(|l| Path::new(&l.path)).collect();
    for p in &paths {
        if !p.is_dir() {
            return Err(BackendError::Io {
                what: format!("image layer {}", p.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "is not unpacked (was the image pruned? pull it again)",
                ),
            });
        }
    }
    let rw = state_dir.join(RW);
    disk::mount_limited(&rw, &state_dir.join("image-rw.img"), disk_bytes)?;
    let upper = rw.join("upper");
    let work = rw.join("work");
    for d in [&upper, &work] {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(d)
            .map_err(io(format!("cannot create {}", d.display())))?;
    }
    // The root's owner and mode are the upper layer's: the image's own.
    if let Some(top) = paths.last() {
        let meta =
            std::fs::metadata(top).map_err(io(format!("cannot inspect {}", top.display())))?;
        std::os::unix::fs::chown(&upper, Some(meta.uid()), Some(meta.gid()))
            .map_err(io(format!("cannot chown {}", upper.display())))?;
        std::fs::set_permissions(
            &upper,
            std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
        )
        .map_err(io(format!("cannot chmod {}", upper.display())))?;
    }
    let target = state_dir.join(ROOTFS);
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&target)
        .map_err(io(format!("cannot create {}", target.display())))?;
    let opts = options(&paths, &upper, &work)?;
    let c_target = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| io(target.display().to_string())(std::io::ErrorKind::InvalidInput.into()))?;
    let c_opts = CString::new(opts)
        .map_err(|_| io("overlay options".into())(std::io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: mount(2) with NUL-terminated strings we own.
    let r = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            c_target.as_ptr(),
            c"overlay".as_ptr(),
            libc::MS_NODEV,
            c_opts.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io(format!(
            "cannot mount the image's overlay at {}",
            target.display()
        ))(std::io::Error::last_os_error()));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_layer_comes_first_and_odd_paths_are_refused() {
        let (a, b) = (Path::new("/s/a"), Path::new("/s/b"));
        assert_eq!(
            options(&[a, b], Path::new("/u"), Path::new("/w")).expect("valid"),
            "lowerdir=/s/b:/s/a,upperdir=/u,workdir=/w"
        );
        assert!(options(&[], Path::new("/u"), Path::new("/w")).is_err());
        for odd in ["/s/a,upperdir=/", "/s/a:b", "/s/a\nb"] {
            assert!(
                options(&[Path::new(odd)], Path::new("/u"), Path::new("/w")).is_err(),
                "{odd}"
            );
        }
        let long = "/s/".to_string() + &"a".repeat(100);
        let many: Vec<&Path> = (0..50).map(|_| Path::new(long.as_str())).collect();
        let e = options(&many, Path::new("/u"), Path::new("/w"))
            .expect_err("too long")
            .to_string();
        assert!(e.contains("50 layers"), "{e}");
    }
}
