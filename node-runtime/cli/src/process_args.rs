//! `[--env K=V]... [--cwd DIR] -- CMD ARGS...`: the process a command starts,
//! shared by `run`, `exec` and `sandbox`. The environment is exactly the
//! `--env` values: nothing of the CLI's own environment is passed on.

use anyhow::bail;
use clap::Args;
use rauha_api::v1;

#[derive(Debug, Clone, Args)]
pub struct ProcessArgs {
    /// An environment variable for the process (repeatable); the process
    /// sees only these.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the zone [default: /].
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl ProcessArgs {
    /// The wire spec, after checking every `--env` value.
    pub fn to_spec(&self) -> anyhow::Result<v1::ProcessSpec> {
        for pair in &self.env {
            check_env(pair)?;
        }
        Ok(v1::ProcessSpec {
            args: self.command.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone().unwrap_or_default(),
            ..Default::default()
        })
    }
}

/// A `--env` value must be `KEY=VALUE` with a non-empty key.
fn check_env(pair: &str) -> anyhow::Result<()> {
    match pair.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(()),
        _ => bail!("--env {pair:?} is not KEY=VALUE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(env: &[&str]) -> ProcessArgs {
        ProcessArgs {
            env: env.iter().map(|e| (*e).to_string()).collect(),
            cwd: None,
            command: vec!["sh".into(), "-c".into(), "env".into()],
        }
    }

    #[test]
    fn key_value_pairs_are_passed_as_given() {
        let spec = args(&["A=1", "EMPTY=", "URL=a=b"])
            .to_spec()
            .expect("valid");
        assert_eq!(spec.env, ["A=1", "EMPTY=", "URL=a=b"]);
        assert_eq!(spec.args, ["sh", "-c", "env"]);
        assert_eq!(spec.cwd, "");
    }

    #[test]
    fn a_value_without_key_or_equals_is_refused() {
        for bad in ["X", "=1", ""] {
            let err = args(&["A=1", bad]).to_spec().expect_err(bad);
            assert_eq!(err.to_string(), format!("--env {bad:?} is not KEY=VALUE"));
        }
    }

    #[test]
    fn cwd_is_sent_when_given() {
        let mut a = args(&[]);
        a.cwd = Some("/tmp".into());
        assert_eq!(a.to_spec().expect("valid").cwd, "/tmp");
    }
}
