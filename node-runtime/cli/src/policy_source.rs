//! `--policy FILE|PRESET`: a file is sent inline (named in errors), a preset
//! by name.

use anyhow::bail;
use rauha_api::v1::{policy_source, InlinePolicy, PolicySource};
use rauha_spec::presets;

pub fn resolve(value: Option<&str>) -> anyhow::Result<Option<PolicySource>> {
    let Some(value) = value else { return Ok(None) };
    let path = std::path::Path::new(value);
    if path.is_file() {
        let toml = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read policy file {value}: {e}"))?;
        return Ok(Some(PolicySource {
            source: Some(policy_source::Source::Inline(InlinePolicy {
                file: value.to_string(),
                toml,
            })),
        }));
    }
    if presets::text(value).is_some() {
        return Ok(Some(PolicySource {
            source: Some(policy_source::Source::Preset(value.to_string())),
        }));
    }
    bail!(
        "policy {value:?} is neither a file nor a preset; give a TOML file or one of: {}",
        presets::names().join(", ")
    )
}

/// `--env K=V`, checked here so a typo fails before any work starts.
pub fn parse_env(values: &[String]) -> anyhow::Result<Vec<String>> {
    for v in values {
        match v.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => bail!("--env {v:?} is not KEY=VALUE"),
        }
    }
    Ok(values.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_presets_and_neither() {
        let file = std::env::temp_dir().join(format!("rauha-cli-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&file, "[resources]\npids_max = 8\n").expect("write");
        let name = file.to_str().expect("utf8");
        match resolve(Some(name)).expect("file").and_then(|s| s.source) {
            Some(policy_source::Source::Inline(i)) => {
                assert_eq!((i.file.as_str(), i.toml.contains("pids_max")), (name, true))
            }
            other => panic!("expected inline, got {other:?}"),
        }
        assert!(
            matches!(resolve(Some("strict")).expect("preset").and_then(|s| s.source), Some(policy_source::Source::Preset(p)) if p == "strict")
        );
        let e = resolve(Some("nope")).expect_err("neither").to_string();
        assert_eq!(e, "policy \"nope\" is neither a file nor a preset; give a TOML file or one of: minimal, standard, strict");
        assert!(resolve(None).expect("none").is_none());
        std::fs::remove_file(file).expect("cleanup");
    }

    #[test]
    fn env_must_be_key_value() {
        assert!(parse_env(&["A=b".into(), "C=".into()]).is_ok());
        assert_eq!(
            parse_env(&["X".into()]).expect_err("bad").to_string(),
            "--env \"X\" is not KEY=VALUE"
        );
        assert!(parse_env(&["=v".into()]).is_err());
    }
}
