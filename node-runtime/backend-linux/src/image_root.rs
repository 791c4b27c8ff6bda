//! A zone's root from an image: the image's unpacked layers (the node's
//! image store keeps them, shared and never written) under an upper layer
//! of the zone's own, on a filesystem sized to the policy's disk limit and
//! thrown away with the zone's state dir.
//!
//! ```text
//! <state>/image-rw/upper, work   (ext4 on a loop file, disk-limited)
//! <state>/image-rw/lower/N       each layer, bound there by the agent
//! ```
//!
//! The agent mounts the overlay in the zone's mount namespace
//! (`RootConfig::Overlay`): overlayfs cannot itself be idmapped, but takes
//! idmapped layers, which is how the zone's user namespace owns the
//! image's files.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rauha_backend::BackendError;
use rauha_spec::ImageLayer;

use crate::disk;

pub const RW: &str = "image-rw";

/// overlayfs's limit on lower layers.
pub const MAX_LAYERS: usize = 500;

fn io(what: String) -> impl FnOnce(std::io::Error) -> BackendError {
    move |source| BackendError::Io { what, source }
}

fn invalid(message: String) -> BackendError {
    BackendError::Io {
        what: "image root".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
    }
}

/// Checks the layers an image root stacks.
pub fn check(layers: &[ImageLayer]) -> Result<(), BackendError> {
    if layers.is_empty() {
        return Err(invalid("the image has no layers".into()));
    }
    if layers.len() > MAX_LAYERS {
        return Err(invalid(format!(
            "the image has {} layers; overlayfs stacks at most {MAX_LAYERS}",
            layers.len()
        )));
    }
    for l in layers {
        let p = Path::new(&l.path);
        if !p.is_absolute() || !p.is_dir() {
            return Err(BackendError::Io {
                what: format!("image layer {}", l.digest),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "{} is not unpacked (was the image pruned? pull it again)",
                        p.display()
                    ),
                ),
            });
        }
    }
    Ok(())
}

/// Makes the zone's writable layer: `<state>/image-rw` with `upper` (the
/// top layer's owner and mode: the image root's) and `work`; its path.
pub fn prepare(
    state_dir: &Path,
    layers: &[ImageLayer],
    disk_bytes: u64,
) -> Result<PathBuf, BackendError> {
    check(layers)?;
    let rw = state_dir.join(RW);
    disk::mount_limited(&rw, &state_dir.join("image-rw.img"), disk_bytes)?;
    writable_layer(&rw, layers)?;
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(rw.join("lower"))
        .map_err(io(format!("cannot create {}", rw.join("lower").display())))?;
    Ok(rw)
}

/// `dir/upper` and `dir/work` (made, with `dir`, as needed), the upper
/// one given the top layer's owner and mode: the image root's.
fn writable_layer(dir: &Path, layers: &[ImageLayer]) -> Result<(PathBuf, PathBuf), BackendError> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    for d in [&upper, &work] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(d)
            .map_err(io(format!("cannot create {}", d.display())))?;
    }
    let top = Path::new(&layers[layers.len() - 1].path);
    let meta = std::fs::metadata(top).map_err(io(format!("cannot inspect {}", top.display())))?;
    std::os::unix::fs::chown(&upper, Some(meta.uid()), Some(meta.gid()))
        .map_err(io(format!("cannot chown {}", upper.display())))?;
    std::fs::set_permissions(
        &upper,
        std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
    )
    .map_err(io(format!("cannot chmod {}", upper.display())))?;
    Ok((upper, work))
}

/// A container root's overlay of `layers` with its writable layer in `rw`
/// (made here): a detached mount, attached only in the zone.
pub fn container_tree(
    rw: &Path,
    layers: &[ImageLayer],
    setuid: bool,
) -> Result<std::os::fd::OwnedFd, BackendError> {
    check(layers)?;
    let (upper, work) = writable_layer(rw, layers)?;
    let paths: Vec<&Path> = layers.iter().map(|l| Path::new(&l.path)).collect();
    crate::roots::overlay_tree(&paths, &upper, &work, setuid).map_err(io(format!(
        "cannot mount the image's overlay for {}",
        rw.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_must_be_unpacked_and_few_enough() {
        let layer = |path: &str| ImageLayer {
            digest: "sha256:x".into(),
            path: path.into(),
        };
        assert!(check(&[]).is_err());
        let e = check(&[layer("/nonexistent/snapshot")])
            .expect_err("missing")
            .to_string();
        assert!(e.contains("pull it again"), "{e}");
        assert!(check(&[layer("relative")]).is_err());
        let tmp = std::env::temp_dir().display().to_string();
        assert!(check(&[layer(&tmp)]).is_ok());
        let many: Vec<ImageLayer> = (0..=MAX_LAYERS).map(|_| layer(&tmp)).collect();
        assert!(check(&many)
            .expect_err("too many")
            .to_string()
            .contains("at most 500"));
    }
}
