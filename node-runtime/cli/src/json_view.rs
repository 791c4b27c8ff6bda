//! `--json` output. Objects with a `rauha-spec` type (task results, events,
//! enforcement, policies) are converted with `rauha-api`'s conversions and
//! printed as that type; the rest (zones, processes, usage, node info) have
//! no domain type on the client side, so they are printed through the
//! serializable views below, which keep the wire's field names and turn
//! `has_x` + `x` pairs and empty strings into `null`-able options.

use std::io::{self, Write};

use anyhow::Context;
use rauha_api::convert::ConvertError;
use rauha_api::v1;
use rauha_spec::Enforcement;
use serde::Serialize;

/// Prints a value as pretty JSON and a newline on stdout.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot render JSON")?;
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Turns a failed wire-to-domain conversion into the one-line error it is:
/// the daemon sent something this CLI does not know.
pub fn decode<T>(result: Result<T, ConvertError>) -> anyhow::Result<T> {
    result.map_err(|e| {
        anyhow::anyhow!("rauhad sent {e}; use a rauha CLI of the same version as rauhad")
    })
}

/// The enforcement of a wire object, if it carries one.
pub fn enforcement(wire: Option<&v1::Enforcement>) -> anyhow::Result<Option<Enforcement>> {
    wire.map(|e| decode(Enforcement::try_from(e))).transpose()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

#[derive(Debug, Serialize)]
pub struct ZoneView {
    pub id: String,
    pub name: String,
    pub state: String,
    /// `host_view` or `bundle:<path>`.
    pub root: String,
    pub created_ms: u64,
    pub task_id: Option<String>,
    pub running_processes: u32,
    /// The policy in force, as TOML.
    pub policy: Option<String>,
    pub enforcement: Option<Enforcement>,
    /// A kept zone's idle TTL and what is left of it, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_remaining_ms: Option<u64>,
    /// The repository shown in the zone, and where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_repo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_path: Option<String>,
    /// A bridged zone's address and published ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<String>,
}

impl ZoneView {
    pub fn from_wire(zone: &v1::Zone) -> anyhow::Result<ZoneView> {
        Ok(ZoneView {
            id: zone.id.clone(),
            name: zone.name.clone(),
            state: zone.state.clone(),
            root: zone.root.clone(),
            created_ms: zone.created_ms,
            task_id: non_empty(&zone.task_id),
            running_processes: zone.running_processes,
            policy: zone.policy.as_ref().map(|p| p.toml.clone()),
            enforcement: enforcement(zone.enforcement.as_ref())?,
            ttl_ms: zone.ttl_ms,
            ttl_remaining_ms: zone.ttl_remaining_ms,
            workspace_repo: non_empty(&zone.workspace_repo),
            workspace_path: non_empty(&zone.workspace_path),
            address: non_empty(&zone.address),
            published: zone.published.clone(),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct CheckView {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct VerifyView {
    pub zone: Option<ZoneView>,
    pub enforcement: Option<Enforcement>,
    pub checks: Vec<CheckView>,
}

impl VerifyView {
    pub fn from_wire(v: &v1::VerifyZoneResponse) -> anyhow::Result<VerifyView> {
        Ok(VerifyView {
            zone: v.zone.as_ref().map(ZoneView::from_wire).transpose()?,
            enforcement: enforcement(v.enforcement.as_ref())?,
            checks: v
                .checks
                .iter()
                .map(|c| CheckView {
                    name: c.name.clone(),
                    ok: c.ok,
                    detail: c.detail.clone(),
                })
                .collect(),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ProcessView {
    pub id: String,
    pub zone_id: String,
    pub zone_name: String,
    pub args: Vec<String>,
    /// `running`, `exited` or `lost`.
    pub state: String,
    pub pid: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// Ports its zone publishes while it runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<String>,
}

impl From<&v1::Process> for ProcessView {
    fn from(p: &v1::Process) -> ProcessView {
        ProcessView {
            id: p.id.clone(),
            zone_id: p.zone_id.clone(),
            zone_name: p.zone_name.clone(),
            args: p.args.clone(),
            state: p.state.clone(),
            pid: p.pid,
            exit_code: p.has_exit_code.then_some(p.exit_code),
            signal: (p.signal != 0).then_some(p.signal),
            started_ms: p.started_ms,
            ended_ms: (p.ended_ms != 0).then_some(p.ended_ms),
            published: p.published.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LogsView {
    /// Lossy UTF-8; use `rauha logs` without `--json` for the exact bytes.
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
}

impl From<&v1::LogsResponse> for LogsView {
    fn from(l: &v1::LogsResponse) -> LogsView {
        LogsView {
            stdout: String::from_utf8_lossy(&l.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&l.stderr).into_owned(),
            truncated: l.truncated,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ZoneUsageView {
    pub zone: Option<ZoneView>,
    pub usage: UsageView,
}

#[derive(Debug, Default, Serialize)]
pub struct UsageView {
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub peak_memory_bytes: u64,
    pub cpu_time_us: u64,
    pub pids: u64,
    pub pids_max: u64,
    pub oom_kills: u64,
}

impl ZoneUsageView {
    pub fn from_wire(z: &v1::ZoneUsage) -> anyhow::Result<ZoneUsageView> {
        let usage = z
            .usage
            .as_ref()
            .map(|u| UsageView {
                memory_bytes: u.memory_bytes,
                memory_limit_bytes: u.memory_limit_bytes,
                peak_memory_bytes: u.peak_memory_bytes,
                cpu_time_us: u.cpu_time_us,
                pids: u.pids,
                pids_max: u.pids_max,
                oom_kills: u.oom_kills,
            })
            .unwrap_or_default();
        Ok(ZoneUsageView {
            zone: z.zone.as_ref().map(ZoneView::from_wire).transpose()?,
            usage,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct NodeInfoView {
    pub version: String,
    /// `required` or `preferred`.
    pub enforcement_mode: String,
    pub enforcement: Option<Enforcement>,
    pub cgroup_layout: String,
    pub root: String,
}

impl NodeInfoView {
    pub fn from_wire(info: &v1::NodeInfo) -> anyhow::Result<NodeInfoView> {
        Ok(NodeInfoView {
            version: info.version.clone(),
            enforcement_mode: info.enforcement_mode.clone(),
            enforcement: enforcement(info.enforcement.as_ref())?,
            cgroup_layout: info.cgroup_layout.clone(),
            root: info.root.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_options_follow_the_wire_flags() {
        let running = ProcessView::from(&v1::Process {
            id: "p".into(),
            state: "running".into(),
            ..v1::Process::default()
        });
        let json = serde_json::to_value(&running).expect("json");
        assert_eq!(json["exit_code"], serde_json::Value::Null);
        assert_eq!(json["ended_ms"], serde_json::Value::Null);
        let exited = ProcessView::from(&v1::Process {
            has_exit_code: true,
            exit_code: 0,
            ended_ms: 5,
            ..v1::Process::default()
        });
        assert_eq!(exited.exit_code, Some(0));
        assert_eq!(exited.ended_ms, Some(5));
    }

    #[test]
    fn an_unknown_layer_is_a_version_mismatch() {
        let zone = v1::Zone {
            enforcement: Some(v1::Enforcement {
                layers: vec![v1::LayerStatus {
                    layer: "quantum".into(),
                    in_force: true,
                    detail: String::new(),
                }],
                score: 1,
                label: "minimal".into(),
            }),
            ..v1::Zone::default()
        };
        let err = ZoneView::from_wire(&zone).expect_err("unknown layer");
        assert!(
            err.to_string()
                .ends_with("use a rauha CLI of the same version as rauhad"),
            "{err}"
        );
    }
}
