//! `rauha events`, `rauha info` and `rauha policy show`.

use anyhow::anyhow;
use rauha_api::v1;
use tokio_stream::StreamExt;

use crate::connect::{status, Clients};
use crate::render::{self, print_json};

pub async fn events(c: &mut Clients, zone: Option<String>, json: bool) -> anyhow::Result<i32> {
    let mut stream = c
        .node
        .watch(v1::WatchRequest {
            zone: zone.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    while let Some(e) = stream.next().await {
        let e = e.map_err(status)?;
        if json {
            let event = rauha_spec::Event::try_from(&e)
                .map_err(|err| anyhow!("unreadable event: {err}"))?;
            println!("{}", serde_json::to_string(&event)?);
        } else {
            let zone = if e.zone_name.is_empty() {
                e.zone_id.clone()
            } else {
                e.zone_name.clone()
            };
            println!(
                "{} {:<20} {:<24} {}",
                render::clock(e.time_ms),
                e.kind,
                zone,
                e.message
            );
        }
    }
    Ok(0)
}

pub async fn info(c: &mut Clients, json: bool) -> anyhow::Result<i32> {
    let i = c
        .node
        .info(v1::NodeInfoRequest {})
        .await
        .map_err(status)?
        .into_inner();
    if json {
        print_json(&serde_json::json!({
            "version": i.version,
            "enforcement_mode": i.enforcement_mode,
            "enforcement": render::enforcement(i.enforcement.as_ref()),
            "cgroup_layout": i.cgroup_layout,
            "root": i.root,
        }))?;
    } else {
        println!(
            "rauhad {} (root {}, cgroup {}, enforcement {})",
            i.version, i.root, i.cgroup_layout, i.enforcement_mode
        );
        for l in i.enforcement.unwrap_or_default().layers {
            println!(
                "  {:<20} {:<4} {}",
                l.layer,
                if l.in_force { "yes" } else { "no" },
                l.detail
            );
        }
    }
    Ok(0)
}

/// Prints a preset's, a file's or a zone's policy.
pub async fn policy_show(
    addr: &str,
    what: Option<String>,
    zone: Option<String>,
    json: bool,
) -> anyhow::Result<i32> {
    let (name, text) = match (what, zone) {
        (_, Some(zone)) => {
            let mut c = crate::connect::connect(addr).await?;
            let z = c.zones.get(v1::ZoneRef { zone: zone.clone() }).await.map_err(status)?.into_inner();
            (format!("zone {zone}"), z.policy.unwrap_or_default().toml)
        }
        (Some(what), None) => match rauha_spec::presets::text(&what) {
            Some(t) if !std::path::Path::new(&what).is_file() => (format!("policies/{what}.toml"), t.to_string()),
            _ => (what.clone(), std::fs::read_to_string(&what).map_err(|e| anyhow!("cannot read policy file {what}: {e}; give a file or a preset (minimal, standard, strict)"))?),
        },
        (None, None) => return Err(anyhow!("give a preset (minimal, standard, strict), a policy file, or --zone NAME")),
    };
    let policy = rauha_spec::Policy::parse(&name, &text)?;
    if json {
        print_json(&serde_json::to_value(&policy)?)?;
    } else {
        print!("{}", policy.to_toml());
    }
    Ok(0)
}
