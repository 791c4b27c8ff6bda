//! Image archives: import from an OCI layout (a directory or
//! `oci-archive` tar) or a `docker-archive` (`docker save`) into the store,
//! and export as an `oci-archive`.
//!
//! rauhad receives an archive as a stream and writes it to a file of its
//! own; it never opens a host path a client names. The archive is
//! unpacked into a scratch directory with the layer unpacker (no `..`, no
//! write through a symlink), and every blob taken from it is verified
//! against its digest on the way into the store, as a pull's are.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::ImageIndex;
use sha2::{Digest as _, Sha256};

use crate::config::RunConfig;
use crate::manifest::{self, Compression, Fetched};
use crate::platform::{self, Platform};
use crate::record::{ImageRecord, LayerRecord};
use crate::store::{self, Store};
use crate::unpack::{self, LayerFs};
use crate::ImageError;

/// Names an OCI layout gives a manifest.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// An image found in an archive: the name it carries (if a full one) and
/// its record (named by the caller).
#[derive(Debug, Clone)]
pub struct Found {
    pub name: Option<String>,
    pub record: ImageRecord,
}

/// An archive's scratch copy: plain files only.
struct Scratch;

impl LayerFs for Scratch {
    fn whiteout(&self, path: &Path) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is a whiteout, which an image archive does not hold",
                path.display()
            ),
        ))
    }
    fn opaque(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn chown(&self, _: &Path, _: u32, _: u32) -> io::Result<()> {
        Ok(())
    }
}

/// Feeds the file at `path` to `each`, a piece at a time.
fn read_pieces(
    path: &Path,
    what: &str,
    mut each: impl FnMut(&[u8]) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let mut f = fs::File::open(path).map_err(ImageError::io(format!(
        "{what}: cannot read {}",
        path.display()
    )))?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let r = f
            .read(&mut buf)
            .map_err(ImageError::io(format!("cannot read {}", path.display())))?;
        if r == 0 {
            return Ok(());
        }
        each(&buf[..r])?;
    }
}

fn sha256_file(path: &Path) -> Result<(String, u64), ImageError> {
    let mut h = Sha256::new();
    let mut n = 0u64;
    read_pieces(path, "the archive", |piece| {
        h.update(piece);
        n += piece.len() as u64;
        Ok(())
    })?;
    Ok((format!("sha256:{}", hex::encode(h.finalize())), n))
}

/// Copies `path` into the store as blob `digest`, verified.
fn put_file(store: &Store, digest: &str, path: &Path, what: &str) -> Result<u64, ImageError> {
    if let Some(size) = store.blob_size(digest) {
        return Ok(size);
    }
    let mut ingest = store.ingest(digest, what)?;
    read_pieces(path, what, |piece| ingest.write(piece))?;
    ingest.commit()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, ImageError> {
    let bytes = fs::read(path).map_err(ImageError::io(format!("{what}: cannot read it")))?;
    serde_json::from_slice(&bytes).map_err(|e| ImageError::format(what, e))
}

/// Imports every image of the archive at `archive` (a tar, optionally
/// gzip'd) for `platform`; `scratch` is an empty directory of the
/// caller's, removed after.
pub fn import(
    store: &Store,
    archive: &Path,
    scratch: &Path,
    platform: &Platform,
    fs_ops: &dyn LayerFs,
) -> Result<Vec<Found>, ImageError> {
    let file =
        fs::File::open(archive).map_err(ImageError::io("cannot open the uploaded archive"))?;
    let mut reader = io::BufReader::new(file);
    let head = {
        use std::io::BufRead;
        reader
            .fill_buf()
            .map_err(ImageError::io("cannot read the archive"))?
            .to_vec()
    };
    unpack::unpack_compressed(reader, Compression::sniff(&head), scratch, &Scratch)
        .map_err(|e| ImageError::format("the archive", e))?;
    let found = if scratch.join("index.json").is_file() {
        import_layout(store, scratch, platform)
    } else if scratch.join("manifest.json").is_file() {
        import_docker(store, scratch)
    } else {
        Err(ImageError::format(
            "the archive",
            "has neither index.json (an OCI layout or oci-archive) nor manifest.json (a docker-archive)",
        ))
    }?;
    if found.is_empty() {
        return Err(ImageError::format("the archive", "holds no image"));
    }
    for f in &found {
        for l in &f.record.layers {
            let compression = Compression::of(&l.media_type)
                .map_err(|e| ImageError::format(format!("layer {}", l.digest), e))?;
            store.unpack(&l.digest, compression, fs_ops)?;
        }
    }
    Ok(found)
}

fn layout_blob(dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    Ok(dir.join("blobs/sha256").join(store::digest_hex(digest)?))
}

fn import_layout(store: &Store, dir: &Path, platform: &Platform) -> Result<Vec<Found>, ImageError> {
    let index: ImageIndex = read_json(&dir.join("index.json"), "index.json")?;
    let mut out = Vec::new();
    for entry in index.manifests() {
        let annotations = entry.annotations().clone().unwrap_or_default();
        let name = annotations
            .get(CONTAINERD_NAME)
            .or_else(|| annotations.get(REF_NAME))
            .filter(|n| n.contains(':') || n.contains('/'))
            .and_then(|n| crate::ImageRef::parse(n).ok())
            .map(|r| r.canonical());
        let mut digest = entry.digest().to_string();
        let mut index_digest = None;
        let mut bytes = fs::read(layout_blob(dir, &digest)?).map_err(ImageError::io(format!(
            "blob {digest} is not in the archive"
        )))?;
        if store::sha256(&bytes) != digest {
            return Err(ImageError::DigestMismatch {
                what: "manifest in the archive".into(),
                expected: digest,
                actual: store::sha256(&bytes),
            });
        }
        let m = match manifest::decode(&bytes, &format!("manifest {digest} in the archive"))? {
            Fetched::Manifest(m) => m,
            Fetched::Index(inner) => {
                let chosen = platform::choose(&inner, platform, "the archive")?
                    .digest()
                    .to_string();
                store.put_blob(&digest, &bytes, "index in the archive")?;
                index_digest = Some(std::mem::replace(&mut digest, chosen));
                bytes = fs::read(layout_blob(dir, &digest)?).map_err(ImageError::io(format!(
                    "blob {digest} is not in the archive"
                )))?;
                match manifest::decode(&bytes, &format!("manifest {digest} in the archive"))? {
                    Fetched::Manifest(m) if store::sha256(&bytes) == digest => m,
                    _ => {
                        return Err(ImageError::format(
                            format!("manifest {digest} in the archive"),
                            "is not an image manifest with that digest",
                        ))
                    }
                }
            }
        };
        let config_digest = m.config().digest().to_string();
        put_file(
            store,
            &config_digest,
            &layout_blob(dir, &config_digest)?,
            "config in the archive",
        )?;
        let config_bytes = store.read_blob(&config_digest)?;
        let config = RunConfig::decode(&config_bytes, "config in the archive")?;
        let mut layers = Vec::new();
        for l in m.layers() {
            let d = l.digest().to_string();
            let size = put_file(store, &d, &layout_blob(dir, &d)?, "layer in the archive")?;
            layers.push(LayerRecord {
                digest: d,
                media_type: l.media_type().to_string(),
                size,
            });
        }
        store.put_blob(&digest, &bytes, "manifest in the archive")?;
        out.push(Found {
            name,
            record: record(
                digest,
                index_digest,
                config_digest,
                &config_bytes,
                config,
                layers,
                bytes.len(),
            ),
        });
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A path inside the archive, as `docker save` names its files.
fn inside(dir: &Path, name: &str) -> Result<PathBuf, ImageError> {
    let p = Path::new(name);
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(ImageError::format(
            "manifest.json",
            format!("names {name:?}, not a plain path in the archive"),
        ));
    }
    Ok(dir.join(p))
}

fn import_docker(store: &Store, dir: &Path) -> Result<Vec<Found>, ImageError> {
    let entries: Vec<DockerEntry> = read_json(&dir.join("manifest.json"), "manifest.json")?;
    let mut out = Vec::new();
    for e in entries {
        let config_path = inside(dir, &e.config)?;
        let (config_digest, config_size) = sha256_file(&config_path)?;
        put_file(store, &config_digest, &config_path, "config in the archive")?;
        let config_bytes = store.read_blob(&config_digest)?;
        let config = RunConfig::decode(&config_bytes, "config in the archive")?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let path = inside(dir, l)?;
            let (digest, size) = sha256_file(&path)?;
            put_file(store, &digest, &path, "layer in the archive")?;
            let mut head = [0u8; 4];
            let n = fs::File::open(&path)
                .and_then(|mut f| f.read(&mut head))
                .unwrap_or(0);
            let media_type = match Compression::sniff(&head[..n]) {
                Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
            };
            layers.push(LayerRecord {
                digest,
                media_type: media_type.into(),
                size,
            });
        }
        // The OCI manifest docker's format implies.
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::format("manifest", e))?;
        let digest = store::sha256(&bytes);
        store.put_blob(&digest, &bytes, "manifest")?;
        let record = record(
            digest,
            None,
            config_digest,
            &config_bytes,
            config,
            layers,
            bytes.len(),
        );
        let tags = e.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            out.push(Found {
                name: None,
                record: record.clone(),
            });
        }
        for t in tags {
            out.push(Found {
                name: crate::ImageRef::parse(&t).ok().map(|r| r.canonical()),
                record: record.clone(),
            });
        }
    }
    Ok(out)
}

fn record(
    digest: String,
    index_digest: Option<String>,
    config_digest: String,
    config_bytes: &[u8],
    config: RunConfig,
    layers: Vec<LayerRecord>,
    manifest_len: usize,
) -> ImageRecord {
    let size = manifest_len as u64
        + config_bytes.len() as u64
        + layers.iter().map(|l| l.size).sum::<u64>();
    ImageRecord {
        name: String::new(),
        digest,
        index_digest,
        config_digest,
        platform: format!("{}/{}", config.os, config.architecture),
        config,
        layers,
        size,
        created_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    }
}

/// Writes `image` as an `oci-archive` (an OCI layout in a tar) to `out`.
pub fn export(store: &Store, image: &ImageRecord, out: impl Write) -> Result<(), ImageError> {
    let manifest_bytes = store.read_blob(&image.digest)?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&manifest_bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| manifest::OCI_MANIFEST.to_string());
    let mut annotations = BTreeMap::new();
    annotations.insert(REF_NAME, image.name.clone());
    annotations.insert(CONTAINERD_NAME, image.name.clone());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": [{
            "mediaType": media_type,
            "digest": image.digest,
            "size": manifest_bytes.len(),
            "annotations": annotations,
        }],
    });
    let mut tar = tar::Builder::new(out);
    let add = |tar: &mut tar::Builder<_>,
               name: &str,
               data: &mut dyn Read,
               size: u64|
     -> Result<(), ImageError> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_mtime(0);
        tar.append_data(&mut h, name, data)
            .map_err(ImageError::io(format!(
                "cannot write {name} to the archive"
            )))
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add(
        &mut tar,
        "oci-layout",
        &mut &layout[..],
        layout.len() as u64,
    )?;
    let index = serde_json::to_vec(&index).map_err(|e| ImageError::format("index", e))?;
    add(&mut tar, "index.json", &mut &index[..], index.len() as u64)?;
    let mut blobs = vec![image.digest.clone(), image.config_digest.clone()];
    blobs.extend(image.layers.iter().map(|l| l.digest.clone()));
    blobs.dedup();
    for d in blobs {
        let path = store.blob_path(&d)?;
        let mut f = fs::File::open(&path).map_err(ImageError::io(format!(
            "blob {d} is not stored (pull the image again)"
        )))?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        add(
            &mut tar,
            &format!("blobs/sha256/{}", store::digest_hex(&d)?),
            &mut f,
            size,
        )?;
    }
    tar.finish()
        .map_err(ImageError::io("cannot finish the archive"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::tests::{tar_of, Recorded, E};

    fn temp(what: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rauha-archive-{what}-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&d).expect("dir");
        d
    }

    /// A one-layer image in `store`; its record.
    fn stored_image(store: &Store) -> ImageRecord {
        let layer = tar_of(&[E::File("hello", b"world", 0o644)]);
        let layer_digest = store::sha256(&layer);
        store
            .put_blob(&layer_digest, &layer, "layer")
            .expect("layer");
        let config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = store::sha256(config);
        store
            .put_blob(&config_digest, config, "config")
            .expect("config");
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        }))
        .expect("json");
        let digest = store::sha256(&manifest);
        store
            .put_blob(&digest, &manifest, "manifest")
            .expect("manifest");
        let mut r = record(
            digest,
            None,
            config_digest,
            config,
            RunConfig::decode(config, "c").expect("config"),
            vec![LayerRecord {
                digest: layer_digest,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                size: layer.len() as u64,
            }],
            manifest.len(),
        );
        r.name = "127.0.0.1:5000/bb:1".into();
        r
    }

    #[test]
    fn an_exported_image_imports_with_its_name_and_digest() {
        let (a, b) = (temp("a"), temp("b"));
        let from = Store::open(&a.join("store")).expect("store a");
        let image = stored_image(&from);
        let tar = a.join("image.tar");
        export(&from, &image, fs::File::create(&tar).expect("file")).expect("export");
        let to = Store::open(&b.join("store")).expect("store b");
        let scratch = b.join("scratch");
        fs::create_dir_all(&scratch).expect("scratch");
        let found = import(
            &to,
            &tar,
            &scratch,
            &Platform::parse("linux/amd64").expect("p"),
            &Recorded::default(),
        )
        .expect("import");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name.as_deref(), Some("127.0.0.1:5000/bb:1"));
        assert_eq!(found[0].record.digest, image.digest);
        assert_eq!(found[0].record.layers, image.layers);
        assert_eq!(
            fs::read(
                to.snapshot_path(&image.layers[0].digest)
                    .expect("path")
                    .join("hello")
            )
            .expect("unpacked"),
            b"world"
        );
        let _ = fs::remove_dir_all(a);
        let _ = fs::remove_dir_all(b);
    }

    #[test]
    fn a_docker_archive_imports_and_bad_archives_are_refused() {
        let dir = temp("docker");
        let layer = tar_of(&[E::File("etc/x", b"y", 0o644)]);
        let config = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let manifest = br#"[{"Config":"cfg.json","RepoTags":["example.com/app:2"],"Layers":["l1/layer.tar"]}]"#;
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("manifest.json", &manifest[..]),
            ("cfg.json", &config[..]),
            ("l1/layer.tar", &layer[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).expect("append");
        }
        let tar = dir.join("docker.tar");
        fs::write(&tar, b.into_inner().expect("tar")).expect("write");
        let store = Store::open(&dir.join("store")).expect("store");
        let scratch = dir.join("scratch");
        fs::create_dir_all(&scratch).expect("scratch");
        let p = Platform::parse("linux/amd64").expect("p");
        let found = import(&store, &tar, &scratch, &p, &Recorded::default()).expect("import");
        assert_eq!(found[0].name.as_deref(), Some("example.com/app:2"));
        assert_eq!(found[0].record.config.env, ["A=1"]);
        assert!(store.has_blob(&found[0].record.digest));

        // A manifest.json naming a file outside the archive.
        let evil = br#"[{"Config":"../../etc/passwd","Layers":[]}]"#;
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(evil.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "manifest.json", &evil[..])
            .expect("append");
        fs::write(&tar, b.into_inner().expect("tar")).expect("write");
        let scratch2 = dir.join("scratch2");
        fs::create_dir_all(&scratch2).expect("scratch");
        let e = import(&store, &tar, &scratch2, &p, &Recorded::default())
            .expect_err("outside")
            .to_string();
        assert!(e.contains("not a plain path"), "{e}");
        fs::write(&tar, b"not a tar at all, just text").expect("write");
        let scratch3 = dir.join("scratch3");
        fs::create_dir_all(&scratch3).expect("scratch");
        assert!(import(&store, &tar, &scratch3, &p, &Recorded::default()).is_err());
        let _ = fs::remove_dir_all(dir);
    }
}
