//! The shim's configuration per runtime handler: containerd hands a
//! handler's `options` table to the shim with each task it creates (as
//! `runtimeoptions.v1.Options`, Kata's way). Its `ConfigPath` names a TOML
//! file of this shape:
//!
//! ```toml
//! # The policy of a pod that names none (rauha.dev/policy): a pod policy
//! # (privileged, baseline, restricted), a zone preset, or a TOML file's text.
//! pod_policy = "restricted"
//! ```
//!
//! so that one node offers several handlers (`rauha`, `rauha-restricted`)
//! or changes its pods' default. Without it, pods default to `baseline`.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use serde::Deserialize;

use crate::error::SpecError;

/// What containerd's CRI sends for a runtime that is not runc's
/// (`containerd/api/types/runtimeoptions/v1`).
#[derive(Clone, PartialEq, prost::Message)]
struct RuntimeOptions {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(string, tag = "2")]
    config_path: String,
    #[prost(bytes = "vec", tag = "3")]
    config_body: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShimConfig {
    /// The pod default (`rauha_spec::presets::DEFAULT_POD_PRESET` when unset).
    pub pod_policy: Option<String>,
}

impl ShimConfig {
    /// The pod policy a pod gets when its annotations name none.
    pub fn pod_default(&self) -> &str {
        self.pod_policy
            .as_deref()
            .unwrap_or(rauha_spec::presets::DEFAULT_POD_PRESET)
    }

    /// The handler's configuration from a task's options; none given is
    /// the default one.
    pub fn from_options(options: Option<&Any>) -> Result<ShimConfig, SpecError> {
        let Some(any) = options.filter(|a| !a.value.is_empty()) else {
            return Ok(ShimConfig::default());
        };
        if !any.type_url.ends_with("runtimeoptions.v1.Options") {
            // runc's options (a handler configured as runc's) say nothing to Rauha.
            return Ok(ShimConfig::default());
        }
        let opts =
            <RuntimeOptions as prost::Message>::decode(any.value.as_slice()).map_err(|e| {
                SpecError::Config(format!(
                    "the runtime options are not runtimeoptions.v1.Options: {e}"
                ))
            })?;
        if opts.config_path.is_empty() {
            return Ok(ShimConfig::default());
        }
        let text = std::fs::read_to_string(&opts.config_path).map_err(|e| {
            SpecError::Config(format!(
                "cannot read {} (the handler's options.ConfigPath): {e}",
                opts.config_path
            ))
        })?;
        let config: ShimConfig = toml::from_str(&text).map_err(|e| {
            SpecError::Config(format!(
                "{}: {}",
                opts.config_path,
                e.to_string().lines().collect::<Vec<_>>().join(" ")
            ))
        })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(opts: &RuntimeOptions) -> Any {
        let mut a = Any::new();
        a.type_url = "runtimeoptions.v1.Options".into();
        a.value = prost::Message::encode_to_vec(opts);
        a
    }

    #[test]
    fn a_handlers_config_path_sets_the_pod_default() {
        assert_eq!(
            ShimConfig::from_options(None).expect("none").pod_default(),
            "baseline"
        );
        let dir = std::env::temp_dir().join(format!("rauha-shim-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("restricted.toml");
        std::fs::write(&file, "pod_policy = \"restricted\"\n").expect("write");
        let opts = RuntimeOptions {
            type_url: String::new(),
            config_path: file.display().to_string(),
            config_body: Vec::new(),
        };
        let c = ShimConfig::from_options(Some(&any(&opts))).expect("read");
        assert_eq!(c.pod_default(), "restricted");
        std::fs::write(&file, "pod_polcy = 1\n").expect("write");
        let e = ShimConfig::from_options(Some(&any(&opts))).expect_err("bad key");
        assert!(e.to_string().contains("pod_polcy"), "{e}");
        let missing = RuntimeOptions {
            config_path: dir.join("nope.toml").display().to_string(),
            ..opts
        };
        let e = ShimConfig::from_options(Some(&any(&missing))).expect_err("missing");
        assert!(e.to_string().contains("ConfigPath"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
