//! The content store: blobs by digest and unpacked layers (snapshots).
//!
//! ```text
//! ROOT/blobs/sha256/<hex>     verified content, read-only
//! ROOT/ingest/<hex>.<uuid>    a blob being written (removed at open)
//! ROOT/snapshots/<hex>        a layer unpacked, named by its blob's digest
//! ROOT/snapshots/.tmp-<uuid>  a layer being unpacked (removed at open)
//! ```
//!
//! A blob is written to an ingest file while its digest is computed, and
//! renamed into place only when the digest and size match; a snapshot is
//! unpacked into a temporary directory and renamed. So a crash or a kill
//! at any point leaves under a digest either nothing or the whole verified
//! thing, and what was finished before it is reused by the next pull.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::manifest::Compression;
use crate::unpack::{self, LayerFs, UnpackStats};
use crate::ImageError;

/// Manifests, indexes and configs are read whole; nothing larger is.
pub const MAX_METADATA_BLOB: u64 = 4 << 20;

pub struct Store {
    root: PathBuf,
}

/// The hex of a `sha256:` digest, checked.
pub fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(ImageError::format(
            format!("digest {}", crate::reference::rauha_quote(digest)),
            "is not sha256:<64 lowercase hex digits> (rauha verifies sha256 digests only)",
        )),
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn mkdir_private(path: &Path) -> Result<(), ImageError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(ImageError::io(format!("cannot create {}", path.display())))
}

impl Store {
    /// Opens (creating) the store at `root`, removing what a crash left
    /// half-written.
    pub fn open(root: &Path) -> Result<Store, ImageError> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in [store.blob_dir(), store.ingest_dir(), store.snapshot_dir()] {
            mkdir_private(&dir)?;
        }
        // The store's root must not be listable by others: snapshot
        // directories hold images' setuid programs and private files.
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(ImageError::io(format!("cannot chmod {}", root.display())))?;
        // Half-written blobs, and uploads (and their scratch copies) a
        // crash left.
        for entry in fs::read_dir(store.ingest_dir())
            .map_err(ImageError::io("cannot list the ingest dir"))?
            .flatten()
        {
            match entry.file_type() {
                Ok(t) if t.is_dir() => {
                    let _ = fs::remove_dir_all(entry.path());
                }
                _ => {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        for entry in fs::read_dir(store.snapshot_dir())
            .map_err(ImageError::io("cannot list the snapshot dir"))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.blob_dir().join(digest_hex(digest)?))
    }

    /// The blob's size, when it is stored.
    pub fn blob_size(&self, digest: &str) -> Option<u64> {
        let path = self.blob_path(digest).ok()?;
        fs::metadata(path).ok().map(|m| m.len())
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_size(digest).is_some()
    }

    /// A small blob (manifest, index, config), whole.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        let file = fs::File::open(&path)
            .map_err(ImageError::io(format!("blob {digest} is not stored")))?;
        let mut bytes = Vec::new();
        file.take(MAX_METADATA_BLOB + 1)
            .read_to_end(&mut bytes)
            .map_err(ImageError::io(format!("cannot read blob {digest}")))?;
        if bytes.len() as u64 > MAX_METADATA_BLOB {
            return Err(ImageError::format(
                format!("blob {digest}"),
                format!("is over {MAX_METADATA_BLOB} bytes, too large for a manifest or config"),
            ));
        }
        Ok(bytes)
    }

    /// Starts writing blob `digest`; `what` names it in errors.
    pub fn ingest(&self, digest: &str, what: &str) -> Result<Ingest, ImageError> {
        let hex = digest_hex(digest)?;
        let tmp = self
            .ingest_dir()
            .join(format!("{hex}.{}", uuid::Uuid::new_v4().simple()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(ImageError::io(format!("cannot create {}", tmp.display())))?;
        Ok(Ingest {
            file: Some(io::BufWriter::with_capacity(256 << 10, file)),
            tmp,
            target: self.blob_dir().join(hex),
            digest: digest.to_string(),
            what: what.to_string(),
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Stores `bytes` as blob `digest`, verified.
    pub fn put_blob(&self, digest: &str, bytes: &[u8], what: &str) -> Result<(), ImageError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut ingest = self.ingest(digest, what)?;
        ingest.write(bytes)?;
        ingest.commit().map(drop)
    }

    pub fn snapshot_path(&self, layer_digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.snapshot_dir().join(digest_hex(layer_digest)?))
    }

    pub fn has_snapshot(&self, layer_digest: &str) -> bool {
        self.snapshot_path(layer_digest).is_ok_and(|p| p.is_dir())
    }

    /// Unpacks stored layer blob `digest` into its snapshot directory,
    /// unless it is there already.
    pub fn unpack(
        &self,
        digest: &str,
        compression: Compression,
        fs_ops: &dyn LayerFs,
    ) -> Result<UnpackStats, ImageError> {
        let target = self.snapshot_path(digest)?;
        if target.is_dir() {
            return Ok(UnpackStats::default());
        }
        let blob = self.blob_path(digest)?;
        let file = fs::File::open(&blob).map_err(ImageError::io(format!(
            "layer {digest} is not stored (pull the image again)"
        )))?;
        let tmp = self
            .snapshot_dir()
            .join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&tmp)
            .map_err(ImageError::io(format!("cannot create {}", tmp.display())))?;
        let result = unpack::unpack_compressed(io::BufReader::new(file), compression, &tmp, fs_ops)
            .map_err(|message| ImageError::Unpack {
                layer: digest.to_string(),
                message,
            })
            .and_then(|stats| {
                fs::rename(&tmp, &target).map_err(ImageError::io(format!(
                    "cannot rename into {}",
                    target.display()
                )))?;
                Ok(stats)
            });
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Every stored blob, with its size.
    pub fn blobs(&self) -> Result<Vec<(String, u64)>, ImageError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.blob_dir())
            .map_err(ImageError::io("cannot list blobs"))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((format!("sha256:{name}"), size));
        }
        out.sort();
        Ok(out)
    }

    /// Every snapshot, by its layer's digest.
    pub fn snapshots(&self) -> Result<Vec<String>, ImageError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.snapshot_dir())
            .map_err(ImageError::io("cannot list snapshots"))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.push(format!("sha256:{name}"));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a blob; the bytes freed.
    pub fn remove_blob(&self, digest: &str) -> Result<u64, ImageError> {
        let path = self.blob_path(digest)?;
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ImageError::Io {
                what: format!("cannot remove {}", path.display()),
                source: e,
            }),
            _ => Ok(size),
        }
    }

    /// Removes a snapshot: renamed aside first, so that a crash midway
    /// leaves a temporary directory (removed at open), never a partial
    /// snapshot under the layer's name. The bytes freed.
    pub fn remove_snapshot(&self, digest: &str) -> Result<u64, ImageError> {
        let path = self.snapshot_path(digest)?;
        if !path.exists() {
            return Ok(0);
        }
        let doomed = self
            .snapshot_dir()
            .join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        fs::rename(&path, &doomed).map_err(ImageError::io(format!(
            "cannot move {} aside",
            path.display()
        )))?;
        let size = disk_usage(&doomed);
        fs::remove_dir_all(&doomed).map_err(ImageError::io(format!(
            "cannot remove {}",
            doomed.display()
        )))?;
        Ok(size)
    }

    /// Bytes the store uses on disk.
    pub fn disk_usage(&self) -> u64 {
        disk_usage(&self.root)
    }
}

/// Bytes of the files under `path` (apparent sizes, each inode once).
pub fn disk_usage(path: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

/// A blob being written: hashed as it goes, renamed into place by
/// [`Ingest::commit`] when its digest matches, removed when dropped.
pub struct Ingest {
    file: Option<io::BufWriter<fs::File>>,
    tmp: PathBuf,
    target: PathBuf,
    digest: String,
    what: String,
    hasher: Sha256,
    written: u64,
}

impl Ingest {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        let file = self
            .file
            .as_mut()
            .expect("an ingest is written before commit");
        file.write_all(bytes).map_err(ImageError::io(format!(
            "cannot write {}",
            self.tmp.display()
        )))
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies the digest, syncs and renames into place; the size.
    pub fn commit(mut self) -> Result<u64, ImageError> {
        let actual = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if actual != self.digest {
            return Err(ImageError::DigestMismatch {
                what: self.what.clone(),
                expected: self.digest.clone(),
                actual,
            });
        }
        let file = self.file.take().expect("committed once");
        let file = file.into_inner().map_err(|e| ImageError::Io {
            what: format!("cannot write {}", self.tmp.display()),
            source: e.into_error(),
        })?;
        file.set_permissions(fs::Permissions::from_mode(0o400))
            .and_then(|()| file.sync_all())
            .map_err(ImageError::io(format!(
                "cannot sync {}",
                self.tmp.display()
            )))?;
        fs::rename(&self.tmp, &self.target).map_err(ImageError::io(format!(
            "cannot rename into {}",
            self.target.display()
        )))?;
        Ok(self.written)
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp.exists() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> PathBuf {
        std::env::temp_dir().join(format!("rauha-store-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn a_blob_is_stored_only_when_its_digest_matches() {
        let dir = temp();
        let store = Store::open(&dir).expect("open");
        let good = sha256(b"hello");
        store.put_blob(&good, b"hello", "blob").expect("stored");
        assert_eq!(store.read_blob(&good).expect("read"), b"hello");
        let wrong = sha256(b"other");
        let e = store
            .put_blob(&wrong, b"hello", "layer")
            .expect_err("mismatch")
            .to_string();
        assert!(
            e.contains(&format!("layer {wrong} failed verification")),
            "{e}"
        );
        assert!(e.contains(&good), "{e}");
        assert!(!store.has_blob(&wrong));
        assert_eq!(fs::read_dir(dir.join("ingest")).expect("ingest").count(), 0);
        assert_eq!(store.blobs().expect("blobs"), [(good.clone(), 5)]);
        assert_eq!(store.remove_blob(&good).expect("rm"), 5);
        assert!(store.blobs().expect("blobs").is_empty());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn what_a_crash_left_half_written_is_removed_at_open() {
        let dir = temp();
        let store = Store::open(&dir).expect("open");
        let mut ingest = store.ingest(&sha256(b"x"), "blob").expect("ingest");
        ingest.write(b"x").expect("write");
        std::mem::forget(ingest);
        fs::create_dir(dir.join("snapshots/.tmp-abc")).expect("tmp snapshot");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(fs::read_dir(dir.join("ingest")).expect("ingest").count(), 0);
        assert!(store.snapshots().expect("snapshots").is_empty());
        assert!(!dir.join("snapshots/.tmp-abc").exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn digests_are_checked_before_they_name_a_path() {
        for bad in [
            "sha256:../../etc",
            "md5:abc",
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
        assert!(digest_hex(&sha256(b"")).is_ok());
    }
}
