//! `rauha zone ...` and `rauha top`.

use rauha_api::v1;

use crate::connect::{status, Clients};
use crate::render::{self, print_json};
use crate::table::{short, Table};
use crate::{policy_source, ZoneCommand};

pub async fn run(c: &mut Clients, cmd: ZoneCommand) -> anyhow::Result<i32> {
    match cmd {
        ZoneCommand::Create {
            name,
            policy,
            bundle,
            json,
        } => {
            let policy = policy_source::resolve(policy.as_deref())?;
            let bundle = bundle.map(absolute).transpose()?.unwrap_or_default();
            let z = c
                .zones
                .create(v1::CreateZoneRequest {
                    name,
                    policy,
                    bundle,
                })
                .await
                .map_err(status)?
                .into_inner();
            print_zones(&[z], json, true)?;
        }
        ZoneCommand::List { json } => {
            let zones = c
                .zones
                .list(v1::ListZonesRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .zones;
            print_zones(&zones, json, false)?;
        }
        ZoneCommand::Get { zone, json } => {
            let z = c
                .zones
                .get(v1::ZoneRef { zone })
                .await
                .map_err(status)?
                .into_inner();
            print_zones(&[z], json, true)?;
        }
        ZoneCommand::Delete { zone, force } => {
            c.zones
                .delete(v1::DeleteZoneRequest {
                    zone: zone.clone(),
                    force,
                })
                .await
                .map_err(status)?;
            eprintln!("zone {zone} deleted");
        }
        ZoneCommand::Verify { zone, json } => {
            let v = c
                .zones
                .verify(v1::ZoneRef { zone })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                print_json(&serde_json::json!({
                    "zone": v.zone.as_ref().map(render::zone),
                    "enforcement": render::enforcement(v.enforcement.as_ref()),
                    "checks": v.checks.iter().map(|c| serde_json::json!({"name": c.name, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
                }))?;
            } else {
                let mut t = Table::new(&["LAYER", "IN FORCE", "DETAIL"]);
                let e = v.enforcement.unwrap_or_default();
                for l in &e.layers {
                    t.row(vec![l.layer.clone(), yes_no(l.in_force), l.detail.clone()]);
                }
                print!("{}", t.render());
                println!();
                let mut t = Table::new(&["CHECK", "OK", "DETAIL"]);
                for ch in &v.checks {
                    t.row(vec![ch.name.clone(), yes_no(ch.ok), ch.detail.clone()]);
                }
                print!("{}", t.render());
                println!("\nscore {}/100 ({})", e.score, e.label);
            }
            if v.checks.iter().any(|c| !c.ok) {
                return Ok(1);
            }
        }
        ZoneCommand::Update { zone, policy, json } => {
            let policy = policy_source::resolve(Some(&policy))?;
            let z = c
                .zones
                .update_policy(v1::UpdatePolicyRequest { zone, policy })
                .await
                .map_err(status)?
                .into_inner();
            print_zones(&[z], json, true)?;
        }
    }
    Ok(0)
}

pub async fn top(c: &mut Clients, json: bool) -> anyhow::Result<i32> {
    let zones = c
        .zones
        .top(v1::TopRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .zones;
    if json {
        let v: Vec<_> = zones
            .iter()
            .map(|z| serde_json::json!({"zone": z.zone.as_ref().map(render::zone), "usage": z.usage.as_ref().map(render::usage)}))
            .collect();
        print_json(&serde_json::Value::Array(v))?;
        return Ok(0);
    }
    let mut t = Table::new(&[
        "ZONE", "STATE", "MEM", "LIMIT", "PEAK", "CPU(ms)", "PIDS", "PIDS_MAX", "OOM",
    ]);
    for z in &zones {
        let zone = z.zone.clone().unwrap_or_default();
        let u = z.usage.unwrap_or_default();
        t.row(vec![
            zone.name,
            zone.state,
            render::bytes(u.memory_bytes),
            render::bytes(u.memory_limit_bytes),
            render::bytes(u.peak_memory_bytes),
            (u.cpu_time_us / 1000).to_string(),
            u.pids.to_string(),
            u.pids_max.to_string(),
            u.oom_kills.to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(0)
}

fn print_zones(zones: &[v1::Zone], json: bool, single: bool) -> anyhow::Result<()> {
    if json {
        let v: Vec<_> = zones.iter().map(render::zone).collect();
        return print_json(&if single && v.len() == 1 {
            v[0].clone()
        } else {
            serde_json::Value::Array(v)
        });
    }
    let mut t = Table::new(&["ID", "NAME", "STATE", "PROCS", "SCORE", "ROOT"]);
    for z in zones {
        let score = z
            .enforcement
            .as_ref()
            .map(|e| format!("{} {}", e.score, e.label))
            .unwrap_or_default();
        t.row(vec![
            short(&z.id),
            z.name.clone(),
            z.state.clone(),
            z.running_processes.to_string(),
            score,
            z.root.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// Bundles are opened by the daemon: send an absolute path.
pub fn absolute(path: String) -> anyhow::Result<String> {
    let p = std::path::Path::new(&path);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    Ok(abs.display().to_string())
}
