//! Policy sources (preset or inline TOML) and updating a zone's policy in
//! place: new limits apply at once, new hardening to processes started
//! from then on.

use rauha_api::v1::{policy_source, PolicySource};
use rauha_spec::event::EventKind;
use rauha_spec::{presets, Policy};

use super::ZoneRegistry;
use crate::error::DaemonError;
use crate::store::ZoneRecord;

impl ZoneRegistry {
    /// The policy a request names (`standard` when it names none), checked
    /// against what the backend can hold before anything is built.
    pub fn resolve_policy(&self, source: Option<&PolicySource>) -> Result<Policy, DaemonError> {
        let policy = parse_policy(source)?;
        self.backends
            .default_backend()
            .check_policy(&policy)
            .map_err(|e| DaemonError::invalid("policy", e.to_string()))?;
        Ok(policy)
    }
}

fn parse_policy(source: Option<&PolicySource>) -> Result<Policy, DaemonError> {
    match source.and_then(|s| s.source.as_ref()) {
        None => Ok(presets::load(presets::DEFAULT_PRESET).expect("the default preset is shipped")?),
        Some(policy_source::Source::Preset(name)) => match presets::load(name) {
            Some(p) => Ok(p?),
            None => Err(DaemonError::invalid(
                "policy.preset",
                format!(
                    "{name:?} is not a preset; use one of {} or pass a TOML file",
                    presets::zone_names().join(", ")
                ),
            )),
        },
        Some(policy_source::Source::Inline(inline)) => {
            let file = if inline.file.is_empty() {
                "<inline policy>"
            } else {
                inline.file.as_str()
            };
            Ok(Policy::parse(file, &inline.toml)?)
        }
    }
}

impl ZoneRegistry {
    pub async fn update_policy(
        &self,
        zone: &str,
        policy: Policy,
    ) -> Result<ZoneRecord, DaemonError> {
        let mut record = self.find_zone(zone)?;
        if !record.state.is_live() {
            return Err(DaemonError::ZoneState {
                zone: record.name.clone(),
                state: record.state.as_str(),
                rule: "its policy can change only while it is built".into(),
            });
        }
        let live = self
            .live_zone(&record.id)
            .ok_or_else(|| DaemonError::NoAgent {
                zone: record.name.clone(),
                hint: "; delete and re-create it",
            })?;
        if policy.network.mode != record.policy.network.mode {
            return Err(DaemonError::invalid(
                "policy.network.mode",
                "cannot change while the zone runs (its network namespace is already set up); create a new zone",
            ));
        }
        if policy.filesystem != record.policy.filesystem {
            return Err(DaemonError::invalid(
                "policy.filesystem",
                "cannot change while the zone runs (its root is already built); create a new zone",
            ));
        }
        let backend = self.backends.of(&record)?;
        backend.update_limits(record.id, &policy)?;
        live.link
            .update_hardening(backend.hardening(&policy, &record.root, record.workspace.as_ref()))
            .await?;
        record.policy = policy;
        self.store.put_zone(&record)?;
        // A map update: the zone's running processes keep running.
        self.sync_enforcement()?;
        self.events.emit(
            EventKind::ZonePolicyUpdated,
            Some((record.id, &record.name)),
            None,
            "policy updated in place",
        );
        Ok(record)
    }
}
