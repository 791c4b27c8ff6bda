//! `rauha info`: the daemon's version and the enforcement this node can
//! apply (Node.Info).

use std::io::{self, Write};

use clap::Args;
use rauha_api::v1;

use crate::connect::Connection;
use crate::json_view::{print_json, NodeInfoView};
use crate::table::Table;
use crate::zone_cmd::{enforcement_cell, layers_table};

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[arg(long)]
    json: bool,
}

pub async fn info(args: InfoArgs, addr: &str) -> anyhow::Result<u8> {
    let mut node = Connection::open(addr).await?.node();
    let info = node.info(v1::NodeInfoRequest {}).await?.into_inner();
    if args.json {
        print_json(&NodeInfoView::from_wire(&info)?)?;
        return Ok(0);
    }
    let mut out = io::stdout().lock();
    let mut table = Table::plain();
    table.row(["address", addr]);
    table.row(["version", &info.version]);
    table.row(["enforcement mode", &info.enforcement_mode]);
    table.row(["cgroup layout", &info.cgroup_layout]);
    table.row(["root", &info.root]);
    table.row([
        "enforcement".to_string(),
        enforcement_cell(info.enforcement.as_ref()),
    ]);
    table.write_to(&mut out)?;
    if let Some(e) = &info.enforcement {
        writeln!(out)?;
        layers_table(e).write_to(&mut out)?;
    }
    Ok(0)
}
