//! The node's platform, and choosing its manifest from an index (a
//! manifest list), as containerd's default platform matcher does: same OS
//! and architecture, the variant when the index names one (arm64's `v8`
//! matches an entry without a variant).

use std::fmt;

use oci_spec::image::{Descriptor, ImageIndex};

use crate::ImageError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this program was built for (GOOS/GOARCH names).
    pub fn node() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(text: &str) -> Option<Platform> {
        let mut parts = text.split('/');
        let os = parts.next().filter(|s| !s.is_empty())?;
        let architecture = parts.next().filter(|s| !s.is_empty())?;
        let variant = parts.next().map(str::to_string);
        parts.next().is_none().then(|| Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant,
        })
    }

    fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        if os != self.os || architecture != self.architecture {
            return false;
        }
        match (variant, self.variant.as_deref()) {
            (None, _) | (_, None) => true,
            (Some(v), Some(mine)) => v == mine,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The entry of `index` for `platform`: an exact variant match first, then
/// one without a variant; the index's order decides ties.
pub fn choose<'a>(
    index: &'a ImageIndex,
    platform: &Platform,
    reference: &str,
) -> Result<&'a Descriptor, ImageError> {
    let entries: Vec<(&Descriptor, String, String, Option<String>)> = index
        .manifests()
        .iter()
        .filter_map(|d| {
            let p = d.platform().as_ref()?;
            // Names from the registry, escaped for the error that lists them.
            Some((
                d,
                crate::error::one_line(&p.os().to_string()),
                crate::error::one_line(&p.architecture().to_string()),
                p.variant().as_deref().map(crate::error::one_line),
            ))
        })
        .collect();
    let exact = entries.iter().find(|(_, os, arch, v)| {
        v.is_some() && platform.matches(os, arch, v.as_deref()) && platform.variant == *v
    });
    let loose = || {
        entries
            .iter()
            .find(|(_, os, arch, v)| platform.matches(os, arch, v.as_deref()))
    };
    match exact.or_else(loose) {
        Some((d, ..)) => Ok(d),
        None => Err(ImageError::NoPlatform {
            reference: reference.to_string(),
            platform: platform.to_string(),
            available: if entries.is_empty() {
                "no platforms named".to_string()
            } else {
                entries
                    .iter()
                    .map(|(_, os, arch, v)| match v {
                        Some(v) => format!("{os}/{arch}/{v}"),
                        None => format!("{os}/{arch}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str, Option<&str>)]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    p["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{}", format!("{i}").repeat(64)),
                    "size": 100,
                    "platform": p,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .expect("index")
    }

    fn chosen(idx: &ImageIndex, p: &str) -> Result<String, String> {
        choose(idx, &Platform::parse(p).expect("platform"), "x")
            .map(|d| d.digest().to_string()[7..8].to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_nodes_platform_is_chosen() {
        let idx = index(&[
            ("linux", "arm64", Some("v8")),
            ("linux", "amd64", None),
            ("windows", "amd64", None),
        ]);
        assert_eq!(chosen(&idx, "linux/amd64").as_deref(), Ok("1"));
        assert_eq!(chosen(&idx, "linux/arm64/v8").as_deref(), Ok("0"));
        assert_eq!(chosen(&idx, "linux/arm64").as_deref(), Ok("0"));
        let e = chosen(&idx, "linux/s390x").expect_err("none");
        assert!(
            e.contains(
                "no image for linux/s390x (it has: linux/arm64/v8, linux/amd64, windows/amd64)"
            ),
            "{e}"
        );
    }

    #[test]
    fn an_exact_variant_wins_over_a_loose_one() {
        let idx = index(&[
            ("linux", "arm", None),
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
        ]);
        assert_eq!(chosen(&idx, "linux/arm/v7").as_deref(), Ok("2"));
        assert_eq!(chosen(&idx, "linux/arm/v5").as_deref(), Ok("0"));
    }

    #[test]
    fn the_node_platform_is_go_named() {
        let p = Platform::node();
        assert_eq!(p.os, "linux");
        assert!(!p.architecture.contains('_'), "{p}");
        assert_eq!(Platform::parse(&p.to_string()), Some(p));
        assert_eq!(Platform::parse("linux"), None);
        assert_eq!(Platform::parse("a/b/c/d"), None);
    }
}
