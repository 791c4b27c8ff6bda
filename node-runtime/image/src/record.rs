//! An image as rauhad records it (in its redb store, by name).

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;

/// One layer of an image: its blob and how it is compressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The canonical reference it is known by (`registry/repo:tag`).
    pub name: String,
    /// The image manifest's digest: the image's identity.
    pub digest: String,
    /// The index (manifest list) it was chosen from, when there was one.
    #[serde(default)]
    pub index_digest: Option<String>,
    pub config_digest: String,
    /// Bottom first.
    pub layers: Vec<LayerRecord>,
    pub config: RunConfig,
    /// `os/arch[/variant]` of the image.
    pub platform: String,
    /// Manifest, config and compressed layers, as stored.
    pub size: u64,
    pub created_ms: u64,
}

impl ImageRecord {
    /// Every blob the image needs kept.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        [self.digest.as_str(), self.config_digest.as_str()]
            .into_iter()
            .chain(self.index_digest.as_deref())
            .chain(self.layers.iter().map(|l| l.digest.as_str()))
    }

    /// The short id people type and see (`docker images`' IMAGE ID).
    pub fn short_id(&self) -> &str {
        let hex = self.digest.strip_prefix("sha256:").unwrap_or(&self.digest);
        &hex[..hex.len().min(12)]
    }
}
