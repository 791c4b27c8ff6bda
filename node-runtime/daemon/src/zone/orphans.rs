//! What `shim delete` could not remove while rauhad was down (a zone, or a
//! pod container's root) it leaves as a file in `<api socket>.orphans/`
//! (`rauha_api::keeper::Orphan`); rauhad removes it when it is back, and
//! looks again every few seconds.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rauha_api::keeper::Orphan;

use super::ZoneRegistry;
use crate::error::DaemonError;

const TICK: Duration = Duration::from_secs(5);

impl ZoneRegistry {
    /// Removes the orphans in `dir` now, then every few seconds until the
    /// registry is dropped.
    pub fn spawn_orphan_collector(self: &Arc<Self>, dir: PathBuf) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(registry) = me.upgrade() else { return };
                registry.collect_orphans(&dir).await;
                drop(registry);
                tokio::time::sleep(TICK).await;
            }
        });
    }

    async fn collect_orphans(&self, dir: &Path) {
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            return;
        };
        // Only root's own directory is trusted to name what to delete.
        if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            tracing::warn!(dir = %dir.display(), "orphans directory is not root's, or others may write to it; ignored (make it root's, mode 0700)");
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_name().as_encoded_bytes().starts_with(b".") {
                // Being written.
                continue;
            }
            let owned = e.metadata().is_ok_and(|m| m.is_file() && m.uid() == 0);
            let orphan = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| Orphan::decode(&t));
            let orphan = match (owned, orphan) {
                (true, Ok(o)) => o,
                (_, Err(e)) => {
                    tracing::warn!(file = %path.display(), "orphan file ignored: {e}");
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                (false, _) => {
                    tracing::warn!(file = %path.display(), "orphan file not root's; ignored");
                    continue;
                }
            };
            let r = match &orphan.root {
                None => self.delete_zone(&orphan.zone, true).await,
                Some(root) => self.remove_root(&orphan.zone, root),
            };
            match r {
                Ok(()) | Err(DaemonError::NotFound { .. }) => {
                    tracing::info!(zone = orphan.zone, root = ?orphan.root, "removed what a dead shim left");
                    let _ = std::fs::remove_file(&path);
                }
                // A paused zone, say: tried again later.
                Err(e) => {
                    tracing::warn!(zone = orphan.zone, root = ?orphan.root, "cannot remove what a dead shim left yet: {e}")
                }
            }
        }
    }
}
