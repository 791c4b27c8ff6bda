//! `rauha events`: follows Node.Watch until Ctrl-C or until rauhad ends the
//! stream, one line per event, flushed as it arrives so that a reader on a
//! pipe sees each event at once.

use std::io::{self, Write};

use clap::Args;
use rauha_api::v1;
use rauha_spec::Event;

use crate::connect::Connection;
use crate::json_view::decode;
use crate::timestamp::format_utc;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this zone's events (name or id).
    #[arg(long)]
    zone: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub async fn events(args: EventsArgs, addr: &str) -> anyhow::Result<u8> {
    let mut node = Connection::open(addr).await?.node();
    let request = v1::WatchRequest {
        zone: args.zone.unwrap_or_default(),
    };
    let mut stream = node.watch(request).await?.into_inner();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let event = tokio::select! {
            _ = &mut ctrl_c => return Ok(0),
            event = stream.message() => event.map_err(|s| anyhow::anyhow!(
                "lost rauhad while watching events ({}); run `rauha events` again once it is back",
                crate::error_line::status_line(&s)
            ))?,
        };
        let Some(event) = event else {
            // Only Ctrl-C ends a watch; a stream that ends is rauhad gone.
            anyhow::bail!(
                "rauhad ended the event stream (did it stop?); run `rauha events` again once it is back"
            );
        };
        let line = if args.json {
            serde_json::to_string(&decode(Event::try_from(&event))?)?
        } else {
            event_line(&event)
        };
        let mut out = io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
}

/// `<time> <kind> <zone> <message>`; the zone by name, else by id, else `-`.
fn event_line(e: &v1::Event) -> String {
    let zone = [&e.zone_name, &e.zone_id]
        .into_iter()
        .find(|s| !s.is_empty())
        .map_or("-", String::as_str);
    format!("{} {} {zone} {}", format_utc(e.time_ms), e.kind, e.message)
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_zone_by_name_then_id() {
        let mut e = v1::Event {
            time_ms: 1_700_000_000_000,
            kind: "zone_created".into(),
            zone_id: "0b5c".into(),
            zone_name: "web".into(),
            subject_id: String::new(),
            message: "zone web created".into(),
        };
        assert_eq!(
            event_line(&e),
            "2023-11-14T22:13:20.000Z zone_created web zone web created"
        );
        e.zone_name.clear();
        assert!(event_line(&e).contains(" zone_created 0b5c "));
        e.zone_id.clear();
        e.message.clear();
        assert!(event_line(&e).ends_with("zone_created -"));
    }
}
