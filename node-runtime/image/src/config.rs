//! The parts of an image's config a zone uses, and the docker/podman rule
//! for the command: the entrypoint, then the command given on the command
//! line, or the image's `Cmd` when none is given.

use std::collections::BTreeMap;

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use crate::ImageError;

/// What rauha keeps of an image's config (the whole config stays in the
/// content store).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    /// The uncompressed layers' digests, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl RunConfig {
    pub fn decode(bytes: &[u8], what: &str) -> Result<RunConfig, ImageError> {
        let config: ImageConfiguration =
            serde_json::from_slice(bytes).map_err(|e| ImageError::format(what, e))?;
        let c = config.config().clone().unwrap_or_default();
        Ok(RunConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
            exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            diff_ids: config.rootfs().diff_ids().clone(),
        })
    }

    /// The argv a process of this image runs: entrypoint + `args`, or
    /// entrypoint + the image's Cmd when `args` is empty.
    pub fn command(&self, args: &[String]) -> Vec<String> {
        let tail = if args.is_empty() { &self.cmd } else { args };
        self.entrypoint.iter().chain(tail).cloned().collect()
    }

    /// The image's environment with `extra` (`NAME=VALUE`) over it.
    pub fn environment(&self, extra: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for kv in self.env.iter().chain(extra) {
            let name = kv.split('=').next().unwrap_or("");
            out.retain(|e| e.split('=').next() != Some(name));
            out.push(kv.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"architecture":"amd64","os":"linux",
      "config":{"Entrypoint":["/bin/tini","--"],"Cmd":["sh"],"Env":["PATH=/bin","A=1"],
        "WorkingDir":"/srv","User":"1000:1000","ExposedPorts":{"8080/tcp":{}},"Labels":{"k":"v"}},
      "rootfs":{"type":"layers","diff_ids":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}}"#;

    #[test]
    fn the_config_applies_as_docker_does() {
        let c = RunConfig::decode(CONFIG.as_bytes(), "config").expect("valid");
        assert_eq!(c.working_dir, "/srv");
        assert_eq!(c.user, "1000:1000");
        assert_eq!(c.exposed_ports, ["8080/tcp"]);
        assert_eq!(c.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(c.command(&[]), ["/bin/tini", "--", "sh"]);
        let args = ["echo".to_string(), "hi".to_string()];
        assert_eq!(c.command(&args), ["/bin/tini", "--", "echo", "hi"]);
        assert_eq!(
            c.environment(&["A=2".to_string(), "B=3".to_string()]),
            ["PATH=/bin", "A=2", "B=3"]
        );
    }

    #[test]
    fn a_config_without_run_settings_is_empty() {
        let c = RunConfig::decode(
            br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
            "config",
        )
        .expect("valid");
        assert!(c.command(&[]).is_empty());
        assert_eq!(c.architecture, "arm64");
        let e = RunConfig::decode(b"[]", "config of x")
            .expect_err("array")
            .to_string();
        assert!(e.starts_with("config of x: "), "{e}");
    }
}
