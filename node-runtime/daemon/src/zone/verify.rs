//! `zone verify`: the enforcement in force and observed facts.

use rauha_spec::enforcement::Enforcement;

use super::ZoneRegistry;
use crate::error::DaemonError;
use crate::store::ZoneRecord;
use rauha_backend::Check;

impl ZoneRegistry {
    pub fn enforcement_of(&self, record: &ZoneRecord) -> Enforcement {
        match (&record.handle, self.backends.of(record)) {
            (Some(h), Ok(backend)) => backend.zone_enforcement(h, &record.policy),
            _ => Enforcement::default(),
        }
    }

    pub async fn verify_zone(
        &self,
        zone: &str,
    ) -> Result<(ZoneRecord, Enforcement, Vec<Check>), DaemonError> {
        let record = self.find_zone(zone)?;
        let enforcement = self.enforcement_of(&record);
        let mut checks = match &record.handle {
            Some(h) => self.backends.of(&record)?.verify(h, &record.policy),
            None => vec![Check {
                name: "zone".into(),
                ok: false,
                detail: "not built yet".into(),
            }],
        };
        let live = self.live_zone(&record.id);
        checks.insert(
            0,
            Check {
                name: "agent connection".into(),
                ok: live.is_some(),
                detail: if live.is_some() {
                    "connected".into()
                } else {
                    "not connected".into()
                },
            },
        );
        if let Some(live) = live {
            // The zone's own view of its processes: only its own are visible.
            let list = live.link.list().await?;
            let agent_is_pid_1 = list
                .iter()
                .any(|p| p.pid == 1 && p.command.contains("rauha-guest-agent"));
            checks.push(Check {
                name: "process view".into(),
                ok: agent_is_pid_1,
                detail: format!(
                    "{} process(es) visible inside, the zone agent is pid {}",
                    list.len(),
                    if agent_is_pid_1 { "1" } else { "not 1" }
                ),
            });
        }
        Ok((record, enforcement, checks))
    }
}
