//! Wire objects as JSON for `--json`, and as table cells.

use rauha_api::v1;
use serde_json::{json, Value};

pub fn enforcement(e: Option<&v1::Enforcement>) -> Value {
    match e.map(rauha_spec::Enforcement::try_from) {
        Some(Ok(e)) => serde_json::to_value(e).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

pub fn zone(z: &v1::Zone) -> Value {
    let policy = z
        .policy
        .as_ref()
        .and_then(|p| rauha_spec::Policy::parse("zone policy", &p.toml).ok())
        .and_then(|p| serde_json::to_value(p).ok())
        .unwrap_or(Value::Null);
    json!({
        "id": z.id,
        "name": z.name,
        "state": z.state,
        "root": z.root,
        "created_ms": z.created_ms,
        "task_id": if z.task_id.is_empty() { Value::Null } else { json!(z.task_id) },
        "running_processes": z.running_processes,
        "policy": policy,
        "enforcement": enforcement(z.enforcement.as_ref()),
    })
}

pub fn process(p: &v1::Process) -> Value {
    json!({
        "id": p.id,
        "zone_id": p.zone_id,
        "zone_name": p.zone_name,
        "args": p.args,
        "state": p.state,
        "pid": p.pid,
        "exit_code": if p.has_exit_code { json!(p.exit_code) } else { Value::Null },
        "signal": if p.signal != 0 { json!(p.signal) } else { Value::Null },
        "started_ms": p.started_ms,
        "ended_ms": p.ended_ms,
    })
}

pub fn usage(u: &v1::Usage) -> Value {
    json!({
        "memory_bytes": u.memory_bytes,
        "memory_limit_bytes": u.memory_limit_bytes,
        "peak_memory_bytes": u.peak_memory_bytes,
        "cpu_time_us": u.cpu_time_us,
        "pids": u.pids,
        "pids_max": u.pids_max,
        "oom_kills": u.oom_kills,
    })
}

pub fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Bytes for people: `12.0Mi`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// A time in ms since the epoch as `HH:MM:SS.mmm` UTC.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_clock_read_well() {
        assert_eq!(bytes(512), "512");
        assert_eq!(bytes(3 << 20), "3.0Mi");
        assert_eq!(clock(3_723_004), "01:02:03.004");
    }

    #[test]
    fn process_json_keeps_exit_code_zero() {
        let p = v1::Process {
            has_exit_code: true,
            exit_code: 0,
            state: "exited".into(),
            ..Default::default()
        };
        assert_eq!(process(&p)["exit_code"], 0);
        assert_eq!(process(&p)["signal"], Value::Null);
    }
}
