//! The node's images: pulls into the content store (`RAUHA_ROOT/images`),
//! records in the one redb store, roots for zones, removal and garbage
//! collection.
//!
//! One lock orders what could otherwise lose content: a pull holds it
//! shared, and so does choosing a zone's root (which then leases the
//! image's layers until the zone is recorded); a collection holds it
//! exclusively. So a collection never sees a pull's blobs before the pull
//! records its image, nor a new zone's layers unleased and unrecorded.
//! Records change before files: a pull records its image only when every
//! blob and snapshot is in place; a removal drops the record and leaves
//! the files to the next collection. A crash anywhere leaves at worst
//! unreferenced files, which a collection frees.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rauha_image::gc::{self, Live};
use rauha_image::platform::Platform;
use rauha_image::pull::{Auth, ProgressFn, Puller, Registries};
use rauha_image::{ImageRecord, ImageRef};
use rauha_spec::{ImageLayer, RootSpec};
use std::sync::Mutex;
use tokio::sync::RwLock;

use crate::error::DaemonError;
use crate::store::Store;

pub struct Images {
    pub content: Arc<rauha_image::Store>,
    puller: Puller,
    platform: Platform,
    db: Arc<Store>,
    gc: RwLock<()>,
    leases: Arc<Mutex<BTreeMap<u64, Vec<String>>>>,
    /// Collect automatically when the store grows past this.
    max_bytes: Option<u64>,
}

/// Layers kept from collection until dropped (a zone being made).
pub struct Lease {
    id: u64,
    leases: Arc<Mutex<BTreeMap<u64, Vec<String>>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// What a collection freed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Freed {
    pub bytes: u64,
    pub blobs: u32,
    pub snapshots: u32,
}

impl Images {
    pub fn open(
        root: &Path,
        db: Arc<Store>,
        registries: Registries,
        max_bytes: Option<u64>,
    ) -> Result<Images, DaemonError> {
        Ok(Images {
            content: Arc::new(rauha_image::Store::open(&root.join("images"))?),
            puller: Puller::new(registries),
            platform: Platform::node(),
            db,
            gc: RwLock::new(()),
            leases: Arc::default(),
            max_bytes,
        })
    }

    /// The image `name` means: a name (short names normalized), a digest,
    /// or an id prefix of at least 4 hex digits naming one image.
    pub fn find(&self, name: &str) -> Result<ImageRecord, DaemonError> {
        let images = self.db.images()?;
        if let Ok(r) = ImageRef::parse(name) {
            let canonical = r.canonical();
            if let Some(i) = images.iter().find(|i| i.name == canonical) {
                return Ok(i.clone());
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matching: Vec<&ImageRecord> = images
                .iter()
                .filter(|i| i.digest["sha256:".len()..].starts_with(hex))
                .collect();
            matching.dedup_by(|a, b| a.digest == b.digest);
            let digests: std::collections::BTreeSet<&str> =
                matching.iter().map(|i| i.digest.as_str()).collect();
            match digests.len() {
                1 => return Ok(matching[0].clone()),
                0 => {}
                n => {
                    return Err(DaemonError::invalid(
                        "image",
                        format!("{name:?} is the start of {n} images' ids; give more digits"),
                    ))
                }
            }
        }
        Err(DaemonError::image_not_found(
            &rauha_spec::message::one_line(name),
        ))
    }

    /// Pulls `reference`; the record, once stored.
    pub async fn pull(
        &self,
        reference: &str,
        auth: &Auth,
        progress: &ProgressFn,
    ) -> Result<ImageRecord, DaemonError> {
        let r = ImageRef::parse(reference)?;
        let record = {
            let _held = self.gc.read().await;
            let record = self
                .puller
                .pull(
                    Arc::clone(&self.content),
                    &r,
                    auth,
                    &self.platform,
                    progress,
                )
                .await?;
            self.db.put_image(&record)?;
            record
        };
        tracing::info!(image = %record.name, digest = %record.digest, size = record.size, "image pulled");
        self.collect_if_over().await;
        Ok(record)
    }

    /// A zone's root from image `name`, its record, and the lease that
    /// keeps its layers until the zone is recorded (hold it till then).
    pub async fn root(&self, name: &str) -> Result<(RootSpec, ImageRecord, Lease), DaemonError> {
        let _held = self.gc.read().await;
        let image = self.find(name)?;
        let lease = {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, image.layers.iter().map(|l| l.digest.clone()).collect());
            Lease {
                id,
                leases: Arc::clone(&self.leases),
            }
        };
        let mut layers = Vec::new();
        for l in &image.layers {
            if !self.content.has_snapshot(&l.digest) {
                // A snapshot lost (removed by hand): made again from the
                // blob when that is still stored.
                let compression = rauha_image::manifest::Compression::of(&l.media_type)
                    .map_err(|e| DaemonError::invalid("image", e))?;
                self.content
                    .unpack(&l.digest, compression, &rauha_image::unpack::OverlayFs)?;
            }
            layers.push(ImageLayer {
                digest: l.digest.clone(),
                path: self.content.snapshot_path(&l.digest)?.display().to_string(),
            });
        }
        Ok((
            RootSpec::Image {
                reference: image.name.clone(),
                digest: image.digest.clone(),
                layers,
            },
            image,
            lease,
        ))
    }

    /// Names of the zones whose root is image `digest`.
    pub fn zones_using(&self, digest: &str) -> Result<Vec<String>, DaemonError> {
        Ok(self
            .db
            .zones()?
            .into_iter()
            .filter(|z| matches!(&z.root, RootSpec::Image { digest: d, .. } if d == digest))
            .map(|z| z.name)
            .collect())
    }

    /// Removes a name; when it was the image's last, the image (refused
    /// while zones use it, unless `force`). The names removed, and the
    /// digest when the image went.
    pub fn remove(
        &self,
        name: &str,
        force: bool,
    ) -> Result<(Vec<String>, Option<String>), DaemonError> {
        let image = self.find(name)?;
        let all = self.db.images()?;
        let names_of_digest: Vec<String> = all
            .iter()
            .filter(|i| i.digest == image.digest)
            .map(|i| i.name.clone())
            .collect();
        // By name: that name only (`docker rmi repo:tag` untags); by id or
        // digest: every name.
        let by_name = ImageRef::parse(name).is_ok_and(|r| r.canonical() == image.name);
        let doomed = if by_name {
            vec![image.name.clone()]
        } else {
            names_of_digest.clone()
        };
        let last = doomed.len() == names_of_digest.len();
        if last && !force {
            let zones = self.zones_using(&image.digest)?;
            if !zones.is_empty() {
                return Err(DaemonError::ImageInUse {
                    image: image.name.clone(),
                    zones: zones.join(", "),
                });
            }
        }
        self.db.remove_images(&doomed)?;
        Ok((doomed, last.then_some(image.digest)))
    }

    /// Names `source`'s image `target` too.
    pub fn tag(&self, source: &str, target: &str) -> Result<ImageRecord, DaemonError> {
        let mut image = self.find(source)?;
        let target = ImageRef::parse(target)?;
        if target.digest().is_some() {
            return Err(DaemonError::invalid(
                "target",
                "names a digest; a tag is registry/repository:tag",
            ));
        }
        image.name = target.canonical();
        self.db.put_image(&image)?;
        Ok(image)
    }

    /// Removes every blob and snapshot no image, zone or pull needs.
    pub async fn prune(&self) -> Result<Freed, DaemonError> {
        let _exclusive = self.gc.write().await;
        let mut live = Live::of(&self.db.images()?);
        for layers in self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            for l in layers {
                live.hold(l);
            }
        }
        for z in self.db.zones()? {
            if let RootSpec::Image { layers, .. } = &z.root {
                for l in layers {
                    live.hold(&l.digest);
                }
            }
        }
        let content = Arc::clone(&self.content);
        tokio::task::spawn_blocking(move || -> Result<Freed, DaemonError> {
            let plan = gc::plan(&live, &content.blobs()?, &content.snapshots()?);
            let mut freed = Freed::default();
            for s in &plan.snapshots {
                freed.bytes += content.remove_snapshot(s)?;
                freed.snapshots += 1;
            }
            for b in &plan.blobs {
                freed.bytes += content.remove_blob(b)?;
                freed.blobs += 1;
            }
            Ok(freed)
        })
        .await
        .map_err(|source| DaemonError::Aborted {
            what: "image garbage collection",
            source,
        })?
    }

    /// A collection when the store is over its size; runs after a pull
    /// has dropped its hold.
    async fn collect_if_over(&self) {
        let Some(max) = self.max_bytes else { return };
        let content = Arc::clone(&self.content);
        let used = tokio::task::spawn_blocking(move || content.disk_usage())
            .await
            .unwrap_or(0);
        if used > max {
            match self.prune().await {
                Ok(freed) => tracing::info!(
                    used,
                    max,
                    freed = freed.bytes,
                    "image store was over its size: collected"
                ),
                Err(e) => tracing::warn!(
                    used,
                    max,
                    "image store over its size, collection failed: {e}"
                ),
            }
        }
    }

    /// Imports the archive at `archive` (a file of rauhad's own, written
    /// from the client's stream); `name` names its one image.
    pub async fn import(
        &self,
        archive: std::path::PathBuf,
        name: Option<String>,
    ) -> Result<Vec<ImageRecord>, DaemonError> {
        let name = name
            .map(|n| ImageRef::parse(&n).map(|r| r.canonical()))
            .transpose()?;
        let _held = self.gc.read().await;
        let content = Arc::clone(&self.content);
        let platform = self.platform.clone();
        let found = tokio::task::spawn_blocking(move || {
            let scratch = archive.with_extension("d");
            let result = std::fs::create_dir(&scratch)
                .map_err(|source| rauha_image::ImageError::Io {
                    what: "cannot make the import's scratch directory".into(),
                    source,
                })
                .and_then(|()| {
                    rauha_image::archive::import(
                        &content,
                        &archive,
                        &scratch,
                        &platform,
                        &rauha_image::unpack::OverlayFs,
                    )
                });
            let _ = std::fs::remove_dir_all(&scratch);
            let _ = std::fs::remove_file(&archive);
            result
        })
        .await
        .map_err(|source| DaemonError::Aborted {
            what: "the import",
            source,
        })??;
        let mut records = Vec::new();
        match name {
            Some(n) => {
                let digests: std::collections::BTreeSet<&str> =
                    found.iter().map(|f| f.record.digest.as_str()).collect();
                if digests.len() != 1 {
                    return Err(DaemonError::invalid(
                        "name",
                        format!(
                            "names one image, and the archive holds {}; import it without --name",
                            digests.len()
                        ),
                    ));
                }
                let mut r = found[0].record.clone();
                r.name = n;
                records.push(r);
            }
            None => {
                for f in found {
                    let Some(n) = f.name else {
                        return Err(DaemonError::invalid(
                            "name",
                            "is needed: the archive names no image (give --name REPOSITORY:TAG)",
                        ));
                    };
                    let mut r = f.record;
                    r.name = n;
                    records.push(r);
                }
            }
        }
        for r in &records {
            self.db.put_image(r)?;
            tracing::info!(image = %r.name, digest = %r.digest, "image imported");
        }
        Ok(records)
    }

    /// Where an upload is written before it is imported.
    pub fn upload_path(&self) -> std::path::PathBuf {
        self.content
            .root()
            .join("ingest")
            .join(format!("import-{}.tar", uuid::Uuid::new_v4().simple()))
    }

    /// Every image with the zones that use it, by name.
    pub fn list(&self) -> Result<Vec<(ImageRecord, Vec<String>)>, DaemonError> {
        let mut by_digest: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for z in self.db.zones()? {
            if let RootSpec::Image { digest, .. } = &z.root {
                by_digest.entry(digest.clone()).or_default().push(z.name);
            }
        }
        let mut images = self.db.images()?;
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images
            .into_iter()
            .map(|i| {
                let zones = by_digest.get(&i.digest).cloned().unwrap_or_default();
                (i, zones)
            })
            .collect())
    }
}
