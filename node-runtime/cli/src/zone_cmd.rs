//! `rauha zone ...` and `rauha top`: the Zones service.

use std::io::{self, Write};

use anyhow::Context;
use clap::{Args, Subcommand};
use rauha_api::v1;

use crate::connect::Connection;
use crate::json_view::{print_json, VerifyView, ZoneUsageView, ZoneView};
use crate::policy_source::wire_policy;
use crate::table::{count_cell, short_id, size_cell, yes_no, Table};
use crate::timestamp::format_utc;

#[derive(Debug, Subcommand)]
pub enum ZoneCommand {
    /// Create a zone and start its zone agent.
    Create {
        /// The zone's name: lowercase letters, digits and '-'.
        name: String,
        /// A policy TOML file or a preset (minimal, standard, strict)
        /// [default: standard].
        #[arg(long, value_name = "FILE|PRESET")]
        policy: Option<String>,
        /// An OCI bundle directory as the zone's root [default: a read-only
        /// view of the host].
        #[arg(long, value_name = "DIR", conflicts_with = "image")]
        bundle: Option<String>,
        /// An image as the zone's root, under a writable layer of the
        /// zone's own (pulled when missing, see --pull).
        #[arg(long, value_name = "IMAGE")]
        image: Option<String>,
        /// When to pull --image: always, missing (when not stored) or never.
        #[arg(long, value_enum, default_value = "missing", requires = "image")]
        pull: crate::image_cmd::PullPolicy,
        /// Join this network namespace (e.g. /run/netns/NAME) instead of a
        /// new one; the policy's network.mode must be "joined".
        #[arg(long, value_name = "PATH")]
        netns: Option<String>,
        /// The zone's network, over the policy's network.mode: loopback,
        /// none, bridged (an address on rauhad's bridge, which -p needs),
        /// joined (with --netns) or host (a privileged pod policy only).
        #[arg(long, value_name = "MODE", value_parser = ["loopback", "none", "bridged", "joined", "host"])]
        network: Option<String>,
        /// Publish a port of the zone on the host: [HOST_IP:]HOST_PORT:ZONE_PORT[/tcp|udp]
        /// (repeatable). On 127.0.0.1 unless a host address is given (docker's
        /// -p publishes on every address). The zone must be bridged.
        #[arg(long, short = 'p', value_name = "[HOST_IP:]HOST_PORT:ZONE_PORT")]
        publish: Vec<String>,
        /// Create the zone's cgroup in this cgroup (a path from the root of
        /// the hierarchy, e.g. /kubepods/burstable/pod<uid>) instead of
        /// rauhad's.
        #[arg(long, value_name = "PATH")]
        cgroup_parent: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List zones.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one zone.
    Get {
        /// The zone's name or id.
        zone: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a zone; refused while it runs work, unless --force.
    Delete {
        zone: String,
        /// Kill the zone's running work instead of refusing.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show the enforcement layers in force and check the zone's isolation.
    Verify {
        zone: String,
        #[arg(long)]
        json: bool,
    },
    /// Freeze every process of a running zone's work.
    Pause {
        zone: String,
        #[arg(long)]
        json: bool,
    },
    /// Thaw a paused zone.
    Resume {
        zone: String,
        #[arg(long)]
        json: bool,
    },
    /// Kill a zone's work and keep the zone (new work may start again).
    Stop {
        zone: String,
        #[arg(long)]
        json: bool,
    },
    /// Apply a new policy to a running zone.
    Update {
        zone: String,
        #[arg(long, value_name = "FILE|PRESET")]
        policy: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[arg(long)]
    json: bool,
}

pub async fn run(command: ZoneCommand, addr: &str) -> anyhow::Result<u8> {
    // Resolve local input before reaching for the daemon.
    let policy = match &command {
        ZoneCommand::Create { policy, .. } => wire_policy(policy.as_deref())?,
        ZoneCommand::Update { policy, .. } => wire_policy(Some(policy))?,
        _ => None,
    };
    let conn = Connection::open(addr).await?;
    let mut zones = conn.zones();
    match command {
        ZoneCommand::Create {
            name,
            bundle,
            image,
            pull,
            netns,
            cgroup_parent,
            publish,
            network,
            json,
            ..
        } => {
            let bundle = bundle.as_deref().map(bundle_path).transpose()?;
            if let Some(image) = &image {
                crate::image_cmd::ensure(&conn, image, pull).await?;
            }
            let request = v1::CreateZoneRequest {
                name,
                policy,
                bundle: bundle.unwrap_or_default(),
                image: image.unwrap_or_default(),
                netns: netns.unwrap_or_default(),
                cgroup_parent: cgroup_parent.unwrap_or_default(),
                publish,
                network: network.unwrap_or_default(),
            };
            let zone = zones.create(request).await?.into_inner();
            print_zone(&zone, json)?;
        }
        ZoneCommand::List { json } => {
            let list = zones.list(v1::ListZonesRequest {}).await?.into_inner();
            print_zone_list(&list.zones, json)?;
        }
        ZoneCommand::Get { zone, json } => {
            let zone = zones.get(v1::ZoneRef { zone }).await?.into_inner();
            if json {
                print_json(&ZoneView::from_wire(&zone)?)?;
            } else {
                print_zone_detail(&zone)?;
            }
        }
        ZoneCommand::Delete { zone, force, json } => {
            let request = v1::DeleteZoneRequest {
                zone: zone.clone(),
                force,
            };
            zones.delete(request).await?;
            if json {
                print_json(&serde_json::json!({ "deleted": zone }))?;
            } else {
                writeln!(io::stdout(), "deleted zone {zone}")?;
            }
        }
        ZoneCommand::Verify { zone, json } => {
            let verified = zones.verify(v1::ZoneRef { zone }).await?.into_inner();
            if json {
                print_json(&VerifyView::from_wire(&verified)?)?;
            } else {
                print_verify(&verified)?;
            }
        }
        ZoneCommand::Pause { zone, json } => {
            let zone = zones.pause(v1::ZoneRef { zone }).await?.into_inner();
            print_zone(&zone, json)?;
        }
        ZoneCommand::Resume { zone, json } => {
            let zone = zones.resume(v1::ZoneRef { zone }).await?.into_inner();
            print_zone(&zone, json)?;
        }
        ZoneCommand::Stop { zone, json } => {
            let zone = zones.stop(v1::ZoneRef { zone }).await?.into_inner();
            print_zone(&zone, json)?;
        }
        ZoneCommand::Update { zone, json, .. } => {
            let request = v1::UpdatePolicyRequest { zone, policy };
            let zone = zones.update_policy(request).await?.into_inner();
            print_zone(&zone, json)?;
        }
    }
    Ok(0)
}

/// `rauha top`: each zone's resource use.
pub async fn top(args: TopArgs, addr: &str) -> anyhow::Result<u8> {
    let mut zones = Connection::open(addr).await?.zones();
    let top = zones.top(v1::TopRequest {}).await?.into_inner();
    if args.json {
        let views = top
            .zones
            .iter()
            .map(ZoneUsageView::from_wire)
            .collect::<anyhow::Result<Vec<_>>>()?;
        return print_json(&views).map(|()| 0);
    }
    let mut table = Table::new(&[
        "ZONE", "STATE", "MEM", "LIMIT", "PEAK", "CPU(ms)", "PIDS", "PIDS_MAX", "OOM",
    ]);
    for entry in &top.zones {
        let zone = entry.zone.clone().unwrap_or_default();
        let usage = entry.usage.unwrap_or_default();
        table.row([
            zone.name,
            zone.state,
            size_cell(usage.memory_bytes),
            size_cell(usage.memory_limit_bytes),
            size_cell(usage.peak_memory_bytes),
            (usage.cpu_time_us / 1000).to_string(),
            usage.pids.to_string(),
            count_cell(usage.pids_max),
            usage.oom_kills.to_string(),
        ]);
    }
    table.write_to(&mut io::stdout().lock())?;
    Ok(0)
}

/// A bundle path as rauhad must see it: absolute, since rauhad does not
/// share the CLI's working directory.
pub fn bundle_path(dir: &str) -> anyhow::Result<String> {
    host_path("--bundle", dir)
}

/// A directory flag's value, absolute (relative to the current directory),
/// with the flag named when it is not usable.
pub fn host_path(flag: &str, dir: &str) -> anyhow::Result<String> {
    if dir.is_empty() {
        anyhow::bail!("{flag} is empty; give a directory");
    }
    let path = std::path::absolute(dir).with_context(|| {
        format!(
            "{flag} {} cannot be made absolute",
            rauha_spec::message::quote(dir)
        )
    })?;
    Ok(path.to_string_lossy().into_owned())
}

/// One zone (create, update) as a table row, or as a JSON object.
fn print_zone(zone: &v1::Zone, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&ZoneView::from_wire(zone)?);
    }
    zone_table(std::slice::from_ref(zone)).write_to(&mut io::stdout().lock())?;
    Ok(())
}

/// Zones as a table, or as a JSON array.
fn print_zone_list(zones: &[v1::Zone], json: bool) -> anyhow::Result<()> {
    if json {
        let views = zones
            .iter()
            .map(ZoneView::from_wire)
            .collect::<anyhow::Result<Vec<_>>>()?;
        return print_json(&views);
    }
    zone_table(zones).write_to(&mut io::stdout().lock())?;
    Ok(())
}

fn zone_table(zones: &[v1::Zone]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "STATE",
        "PROCS",
        "ROOT",
        "ENFORCEMENT",
        "TTL LEFT",
        "CREATED",
    ]);
    for z in zones {
        table.row([
            short_id(&z.id).to_string(),
            z.name.clone(),
            z.state.clone(),
            z.running_processes.to_string(),
            z.root.clone(),
            enforcement_cell(z.enforcement.as_ref()),
            z.ttl_remaining_ms.map_or_else(
                || "-".to_string(),
                |ms| format!("{:.1}s", ms as f64 / 1000.0),
            ),
            format_utc(z.created_ms),
        ]);
    }
    table
}

/// `label score/100`, or `-` when the daemon sent none.
pub fn enforcement_cell(e: Option<&v1::Enforcement>) -> String {
    e.map_or_else(
        || "-".to_string(),
        |e| format!("{} {}/100", e.label, e.score),
    )
}

fn print_zone_detail(z: &v1::Zone) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    let mut table = Table::plain();
    table.row(["id", &z.id]);
    table.row(["name", &z.name]);
    table.row(["state", &z.state]);
    table.row(["root", &z.root]);
    table.row(["created", &format_utc(z.created_ms)]);
    if !z.task_id.is_empty() {
        table.row(["task", &z.task_id]);
    }
    table.row(["processes", &z.running_processes.to_string()]);
    if !z.address.is_empty() {
        table.row(["address", &z.address]);
    }
    if !z.published.is_empty() {
        table.row(["published".to_string(), z.published.join(", ")]);
    }
    table.row([
        "enforcement".to_string(),
        enforcement_cell(z.enforcement.as_ref()),
    ]);
    table.write_to(&mut out)?;
    if let Some(e) = &z.enforcement {
        writeln!(out)?;
        layers_table(e).write_to(&mut out)?;
    }
    Ok(())
}

/// LAYER / IN FORCE / DETAIL, one row per enforcement layer.
pub fn layers_table(e: &v1::Enforcement) -> Table {
    let mut table = Table::new(&["LAYER", "IN FORCE", "DETAIL"]);
    for l in &e.layers {
        table.row([l.layer.as_str(), yes_no(l.in_force), l.detail.as_str()]);
    }
    table
}

fn print_verify(v: &v1::VerifyZoneResponse) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    if let Some(z) = &v.zone {
        writeln!(out, "zone {} ({}) {}", z.name, z.id, z.state)?;
        writeln!(out)?;
    }
    let enforcement = v
        .enforcement
        .as_ref()
        .or_else(|| v.zone.as_ref().and_then(|z| z.enforcement.as_ref()));
    if let Some(e) = enforcement {
        layers_table(e).write_to(&mut out)?;
        writeln!(out)?;
    }
    let mut checks = Table::new(&["CHECK", "OK", "DETAIL"]);
    for c in &v.checks {
        checks.row([c.name.as_str(), yes_no(c.ok), c.detail.as_str()]);
    }
    checks.write_to(&mut out)?;
    if let Some(e) = enforcement {
        writeln!(out)?;
        writeln!(out, "score {}/100 ({})", e.score, e.label)?;
    }
    Ok(())
}
