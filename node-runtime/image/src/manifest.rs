//! Decoding what a registry serves: an index (OCI image index or docker
//! manifest list) or an image manifest (OCI or docker v2 schema 2), and
//! what kind of compression a layer has.

use oci_spec::image::{ImageIndex, ImageManifest};

use crate::ImageError;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The media types a pull accepts for a manifest, most specific first.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// What a manifest request returned.
#[derive(Debug)]
pub enum Fetched {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

/// Decodes a manifest or index; `what` names it in errors.
pub fn decode(bytes: &[u8], what: &str) -> Result<Fetched, ImageError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ImageError::format(what, e))?;
    let media_type = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or("");
    let is_index = match media_type {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        "" => value.get("manifests").is_some(),
        other => {
            return Err(ImageError::format(
                what,
                format!(
                    "media type {other:?} is not an image (rauha runs OCI and docker v2 images)"
                ),
            ))
        }
    };
    if value.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Err(ImageError::format(
            what,
            "schemaVersion is not 2 (docker schema 1 images are not supported: push the image again with a current tool)",
        ));
    }
    if is_index {
        serde_json::from_value(value)
            .map(|i| Fetched::Index(Box::new(i)))
            .map_err(|e| ImageError::format(what, e))
    } else {
        let m: ImageManifest =
            serde_json::from_value(value).map_err(|e| ImageError::format(what, e))?;
        for layer in m.layers() {
            Compression::of(layer.media_type().as_ref())
                .map_err(|e| ImageError::format(what, e))?;
        }
        Ok(Fetched::Manifest(Box::new(m)))
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a layer's media type (OCI or docker).
    pub fn of(media_type: &str) -> Result<Compression, String> {
        Ok(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            other => {
                return Err(format!(
                    "layer media type {other:?} is not a filesystem layer rauha can unpack (tar, tar+gzip, tar+zstd)"
                ))
            }
        })
    }

    /// From a blob's first bytes, for archives that do not say.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
      "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":10,"digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
      "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":20,"digest":"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}]}"#;

    #[test]
    fn docker_and_oci_manifests_decode() {
        let Fetched::Manifest(m) = decode(DOCKER.as_bytes(), "manifest").expect("docker") else {
            panic!("not a manifest")
        };
        assert_eq!(m.layers().len(), 1);
        let oci = DOCKER.replace(DOCKER_MANIFEST, OCI_MANIFEST).replace(
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
        );
        assert!(matches!(
            decode(oci.as_bytes(), "m"),
            Ok(Fetched::Manifest(_))
        ));
        let list = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert!(matches!(
            decode(list.as_bytes(), "m"),
            Ok(Fetched::Index(_))
        ));
        let bare = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            decode(bare.as_bytes(), "m"),
            Ok(Fetched::Index(_))
        ));
    }

    #[test]
    fn what_cannot_be_run_is_refused_by_name() {
        let helm = DOCKER.replace(
            DOCKER_MANIFEST,
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
        );
        let e = decode(helm.as_bytes(), "manifest of x")
            .expect_err("helm")
            .to_string();
        assert!(e.contains("is not an image"), "{e}");
        let v1 = DOCKER.replace("\"schemaVersion\":2", "\"schemaVersion\":1");
        assert!(decode(v1.as_bytes(), "m")
            .expect_err("v1")
            .to_string()
            .contains("schema 1"));
        let odd = DOCKER.replace("rootfs.diff.tar.gzip", "rootfs.diff.tar.lz4");
        let e = decode(odd.as_bytes(), "m").expect_err("lz4").to_string();
        assert!(e.contains("not a filesystem layer"), "{e}");
        let e = decode(b"<html>", "manifest of x")
            .expect_err("html")
            .to_string();
        assert!(e.starts_with("manifest of x: "), "{e}");
    }

    #[test]
    fn compression_is_sniffed() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"bin/\0\0"), Compression::None);
    }
}
