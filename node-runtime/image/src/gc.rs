//! Garbage-collection planning: what may go, given what is kept.
//!
//! Live are the blobs and snapshots of every recorded image, the layers of
//! every zone's root (a zone keeps its image's layers even after `rm
//! --force` of the image), and whatever a pull in progress holds (its
//! lease). Everything else stored is garbage. Because a pull records its
//! image only after every blob is stored and a removal drops the record
//! before any file, a crash in either leaves at worst unreferenced files
//! (freed by the next collection), never a record without its content.

use std::collections::BTreeSet;

use crate::record::ImageRecord;

/// What stays.
#[derive(Debug, Default, Clone)]
pub struct Live {
    pub blobs: BTreeSet<String>,
    pub snapshots: BTreeSet<String>,
}

impl Live {
    pub fn of(images: &[ImageRecord]) -> Live {
        let mut live = Live::default();
        for image in images {
            live.blobs.extend(image.blobs().map(str::to_string));
            live.snapshots
                .extend(image.layers.iter().map(|l| l.digest.clone()));
        }
        live
    }

    /// Keeps a layer (a zone's root, a pull's lease): its blob and snapshot.
    pub fn hold(&mut self, digest: &str) {
        self.blobs.insert(digest.to_string());
        self.snapshots.insert(digest.to_string());
    }
}

/// What a collection removes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub blobs: Vec<String>,
    pub snapshots: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.snapshots.is_empty()
    }
}

pub fn plan(live: &Live, blobs: &[(String, u64)], snapshots: &[String]) -> Plan {
    Plan {
        // Snapshots first: a layer's snapshot goes before its blob, so a
        // crash between the two never leaves a snapshot whose blob is gone
        // while an image still names it (it does not: both are garbage).
        snapshots: snapshots
            .iter()
            .filter(|s| !live.snapshots.contains(*s))
            .cloned()
            .collect(),
        blobs: blobs
            .iter()
            .map(|(d, _)| d)
            .filter(|d| !live.blobs.contains(*d))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::LayerRecord;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(name: &str, digest: char, layers: &[char]) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            digest: d(digest),
            index_digest: None,
            config_digest: d('c'),
            layers: layers
                .iter()
                .map(|c| LayerRecord {
                    digest: d(*c),
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    size: 1,
                })
                .collect(),
            config: Default::default(),
            platform: "linux/amd64".into(),
            size: 0,
            created_ms: 0,
        }
    }

    #[test]
    fn shared_layers_stay_while_any_image_or_zone_needs_them() {
        let blobs: Vec<(String, u64)> = "abcdef1".chars().map(|c| (d(c), 1)).collect();
        let snapshots: Vec<String> = "ef1".chars().map(d).collect();
        let images = [image("x", 'a', &['e', 'f']), image("y", 'b', &['e'])];
        let p = plan(&Live::of(&images), &blobs, &snapshots);
        assert_eq!(p.blobs, [d('d'), d('1')]);
        assert_eq!(p.snapshots, [d('1')]);

        // x removed: f goes unless a zone holds it.
        let mut live = Live::of(&images[1..]);
        let p = plan(&live, &blobs, &snapshots);
        assert_eq!(p.snapshots, [d('f'), d('1')]);
        live.hold(&d('f'));
        let p = plan(&live, &blobs, &snapshots);
        assert_eq!(p.snapshots, [d('1')]);
        assert!(!p.blobs.contains(&d('f')));
        assert!(!p.blobs.contains(&d('e')) && !p.blobs.contains(&d('c')));
    }

    #[test]
    fn nothing_stored_nothing_planned() {
        assert!(plan(&Live::default(), &[], &[]).is_empty());
    }
}
