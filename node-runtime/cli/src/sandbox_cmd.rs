//! `rauha sandbox` and `rauha task get`.

use std::io::Write;

use anyhow::anyhow;
use rauha_api::v1;

use crate::connect::{status, Clients};
use crate::exit_code;
use crate::render::print_json;

pub struct SandboxArgs {
    pub spec: v1::ProcessSpec,
    pub policy: Option<String>,
    pub bundle: Option<String>,
    pub timeout: Option<String>,
    pub keep_zone: bool,
    pub json: bool,
}

pub async fn sandbox(c: &mut Clients, a: SandboxArgs) -> anyhow::Result<i32> {
    let timeout_ms = match a.timeout.as_deref() {
        None => 0,
        Some(t) => {
            let d = rauha_spec::duration::parse_duration(t).ok_or_else(|| {
                anyhow!("--timeout {t:?} is not a duration; use 500ms, 30s or 10m")
            })?;
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        }
    };
    let request = v1::SandboxRequest {
        spec: Some(a.spec),
        policy: crate::policy_source::resolve(a.policy.as_deref())?,
        bundle: a
            .bundle
            .map(crate::zone_cmd::absolute)
            .transpose()?
            .unwrap_or_default(),
        timeout_ms,
        keep_zone: a.keep_zone,
    };
    let wire = c
        .sandbox
        .run_sandbox(request)
        .await
        .map_err(status)?
        .into_inner();
    report(&wire, a.json)
}

pub async fn task_get(c: &mut Clients, task_id: String, json: bool) -> anyhow::Result<i32> {
    let wire = c
        .sandbox
        .get_task(v1::TaskRef { task_id })
        .await
        .map_err(status)?
        .into_inner();
    // Printing a stored result succeeded; the task's own code is in it.
    report(&wire, json).map(|_| 0)
}

/// Prints a result and returns the exit code it maps to.
fn report(wire: &v1::TaskResult, json: bool) -> anyhow::Result<i32> {
    let r = rauha_spec::TaskResult::try_from(wire).map_err(|e| {
        anyhow!("rauhad sent a result this CLI cannot read ({e}); use matching versions")
    })?;
    let code = i32::from(exit_code::for_task(r.status, r.exit_code, r.signal));
    if json {
        print_json(&serde_json::to_value(&r)?)?;
    } else {
        std::io::stdout().write_all(r.stdout.as_bytes())?;
        std::io::stderr().write_all(r.stderr.as_bytes())?;
        let exit = r
            .exit_code
            .map(|c| format!(" (exit {c})"))
            .unwrap_or_default();
        eprintln!(
            "rauha: task {} {}{exit} in {} ms; enforcement {} {}/100",
            r.task_id,
            r.status.as_str(),
            r.duration_ms,
            r.enforcement.label,
            r.enforcement.score
        );
    }
    if let Some(e) = &r.error {
        eprintln!("rauha: {e}");
    }
    Ok(code)
}
