//! `rauha policy show`: a preset or policy file parsed here, without a
//! daemon, or the policy a zone runs with (Zones.Get).

use std::io::{self, Write};

use anyhow::{bail, Context};
use clap::Subcommand;
use rauha_api::v1;
use rauha_spec::Policy;

use crate::connect::Connection;
use crate::json_view::print_json;
use crate::policy_source::PolicyChoice;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and print a preset or a policy file, or a zone's policy.
    Show {
        /// A preset (minimal, standard, strict) or a policy TOML file.
        #[arg(value_name = "PRESET|FILE", conflicts_with = "zone")]
        policy: Option<String>,
        /// Print the policy this zone (name or id) runs with.
        #[arg(long)]
        zone: Option<String>,
        /// Print the parsed policy as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: PolicyCommand, addr: &str) -> anyhow::Result<u8> {
    let PolicyCommand::Show { policy, zone, json } = command;
    match (policy, zone) {
        (Some(value), _) => {
            let policy = PolicyChoice::resolve(&value)?.parse()?;
            if json {
                print_json(&policy)?;
            } else {
                print_toml(&policy.to_toml())?;
            }
        }
        (None, Some(zone)) => {
            let (name, toml) = zone_policy(&zone, addr).await?;
            if json {
                print_json(&Policy::parse(&format!("policy of zone {name}"), &toml)?)?;
            } else {
                print_toml(&toml)?;
            }
        }
        (None, None) => bail!(
            "policy show needs a preset, a policy file or --zone; e.g. `rauha policy show standard`"
        ),
    }
    Ok(0)
}

fn print_toml(toml: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(toml.as_bytes())?;
    if !toml.ends_with('\n') {
        writeln!(out)?;
    }
    out.flush()
}

/// A zone's name and its policy TOML, exactly as rauhad rendered it.
async fn zone_policy(zone: &str, addr: &str) -> anyhow::Result<(String, String)> {
    let mut zones = Connection::open(addr).await?.zones();
    let found = zones
        .get(v1::ZoneRef {
            zone: zone.to_string(),
        })
        .await?
        .into_inner();
    let toml = found.policy.map(|p| p.toml).with_context(|| {
        format!("rauhad sent zone {zone:?} without its policy; use a rauha CLI of the same version as rauhad")
    })?;
    Ok((found.name, toml))
}
