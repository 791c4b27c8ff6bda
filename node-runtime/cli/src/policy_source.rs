//! `--policy FILE|PRESET`: one resolution for `zone create`, `zone update`,
//! `sandbox` and `policy show`. A path to an existing file wins over a preset
//! of the same name; anything else is an error that lists the presets.
//!
//! The daemon parses and validates what is sent; only `policy show` parses
//! locally, because it must work without a daemon.

use std::path::Path;

use anyhow::{bail, Context};
use rauha_api::v1;
use rauha_api::v1::policy_source::Source;
use rauha_spec::{presets, Policy};

/// What a `--policy` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyChoice {
    /// A file's TOML text, with the path as the user gave it.
    File {
        path: String,
        toml: String,
    },
    Preset(String),
}

impl PolicyChoice {
    /// Resolves a `--policy` value: an existing file, else a preset name.
    pub fn resolve(value: &str) -> anyhow::Result<PolicyChoice> {
        if Path::new(value).is_file() {
            let size = std::fs::metadata(value).map(|m| m.len()).unwrap_or(0);
            if size > rauha_spec::policy::MAX_POLICY_BYTES as u64 {
                bail!(
                    "policy file {value:?} is {size} bytes, over the {} bytes a policy may be; a policy is a short TOML file",
                    rauha_spec::policy::MAX_POLICY_BYTES
                );
            }
            let bytes = std::fs::read(value).with_context(|| {
                format!("cannot read policy file {value:?}; check its permissions")
            })?;
            let toml = String::from_utf8(bytes).map_err(|e| {
                let at = e.utf8_error().valid_up_to();
                let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
                anyhow::anyhow!(
                    "{value}:{line}: is not UTF-8 text (byte {at}); a policy is a TOML file, save it as UTF-8"
                )
            })?;
            return Ok(PolicyChoice::File {
                path: value.to_string(),
                toml,
            });
        }
        if presets::names().contains(&value) {
            return Ok(PolicyChoice::Preset(value.to_string()));
        }
        bail!(
            "policy {value:?} is neither a file nor a preset; give a TOML file or one of: {}",
            presets::zone_names().join(", ")
        )
    }

    /// The wire form, for the daemon to parse.
    pub fn to_wire(&self) -> v1::PolicySource {
        let source = match self {
            PolicyChoice::File { path, toml } => Source::Inline(v1::InlinePolicy {
                file: path.clone(),
                toml: toml.clone(),
            }),
            PolicyChoice::Preset(name) => Source::Preset(name.clone()),
        };
        v1::PolicySource {
            source: Some(source),
        }
    }

    /// Parses the policy here, naming the file (or `policies/<preset>.toml`)
    /// in errors.
    pub fn parse(&self) -> anyhow::Result<Policy> {
        let (file, text) = match self {
            PolicyChoice::File { path, toml } => (path.clone(), toml.as_str()),
            PolicyChoice::Preset(name) => {
                let text = presets::text(name)
                    .with_context(|| format!("preset {name:?} is not compiled into rauha"))?;
                (format!("policies/{name}.toml"), text)
            }
        };
        Ok(Policy::parse(&file, text)?)
    }
}

/// The optional `--policy` of a request: `None` lets the daemon choose.
pub fn wire_policy(value: Option<&str>) -> anyhow::Result<Option<v1::PolicySource>> {
    value
        .map(|v| PolicyChoice::resolve(v).map(|choice| choice.to_wire()))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy file in the temp dir, removed when dropped.
    struct TempPolicy(std::path::PathBuf);

    impl TempPolicy {
        fn new(tag: &str, text: &str) -> TempPolicy {
            let path =
                std::env::temp_dir().join(format!("rauha-cli-{tag}-{}.toml", std::process::id()));
            std::fs::write(&path, text).expect("write temp policy");
            TempPolicy(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().expect("temp dir is UTF-8")
        }
    }

    impl Drop for TempPolicy {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn an_existing_file_is_sent_inline_with_its_path() {
        let file = TempPolicy::new("inline", "[resources]\npids_max = 64\n");
        let choice = PolicyChoice::resolve(file.path()).expect("file");
        assert_eq!(
            choice.to_wire().source,
            Some(Source::Inline(v1::InlinePolicy {
                file: file.path().to_string(),
                toml: "[resources]\npids_max = 64\n".into(),
            }))
        );
        assert_eq!(choice.parse().expect("valid").resources.pids_max, Some(64));
    }

    #[test]
    fn a_preset_name_is_sent_as_a_preset() {
        for name in ["minimal", "standard", "strict"] {
            let wire = wire_policy(Some(name)).expect("preset");
            assert_eq!(
                wire.and_then(|w| w.source),
                Some(Source::Preset(name.into()))
            );
        }
        assert_eq!(wire_policy(None).expect("none"), None);
    }

    #[test]
    fn neither_a_file_nor_a_preset_lists_the_presets() {
        let err = PolicyChoice::resolve("paranoid").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "policy \"paranoid\" is neither a file nor a preset; give a TOML file or one of: minimal, standard, strict"
        );
    }

    #[test]
    fn a_bad_file_fails_to_parse_with_its_location() {
        let file = TempPolicy::new("bad", "[resources]\nmemory_limit = \"4Gb\"\n");
        let err = PolicyChoice::resolve(file.path())
            .expect("a file")
            .parse()
            .expect_err("4Gb is not a size");
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2: resources.memory_limit: \"4Gb\" is not a size; use 512Mi or 4Gi",
                file.path()
            )
        );
    }

    #[test]
    fn presets_parse_under_their_file_name() {
        let policy = PolicyChoice::Preset("strict".into())
            .parse()
            .expect("valid");
        assert_eq!(policy.zone.name.as_deref(), Some("strict"));
    }
}
