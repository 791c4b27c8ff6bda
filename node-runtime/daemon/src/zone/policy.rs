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
    /// against what the backend can hold before anything is built; for a
    /// zone that shows the host's tree (`host_view`), against the host.
    pub fn resolve_policy(
        &self,
        source: Option<&PolicySource>,
        host_view: bool,
    ) -> Result<Policy, DaemonError> {
        let (policy, file, text) = parse_policy(source)?;
        if host_view {
            policy.check_host_paths(&file, &text, |p| std::path::Path::new(p).exists())?;
        }
        self.backends
            .default_backend()
            .check_policy(&policy)
            .map_err(|e| DaemonError::invalid("policy", e.to_string()))?;
        Ok(policy)
    }
}

/// The policy, with the file name and text it was parsed from.
fn parse_policy(source: Option<&PolicySource>) -> Result<(Policy, String, String), DaemonError> {
    let preset = |name: &str| {
        presets::load(name).map(|p| {
            let text = presets::text(name).unwrap_or_default().to_string();
            p.map(|p| (p, format!("policies/{name}.toml"), text))
        })
    };
    match source.and_then(|s| s.source.as_ref()) {
        None => Ok(preset(presets::DEFAULT_PRESET).expect("the default preset is shipped")?),
        Some(policy_source::Source::Preset(name)) => match preset(name) {
            Some(p) => Ok(p?),
            None => Err(DaemonError::invalid(
                "policy.preset",
                format!(
                    "{} is not a preset; use one of {} or pass a TOML file",
                    rauha_spec::message::quote(name),
                    presets::zone_names().join(", ")
                ),
            )),
        },
        Some(policy_source::Source::Inline(inline)) => {
            // The file's name as the client gave it, unless it is long or
            // holds control characters: then quoted and cut.
            let file = if inline.file.is_empty() {
                "<inline policy>".to_string()
            } else if inline.file.len() <= 200 && !inline.file.chars().any(char::is_control) {
                inline.file.clone()
            } else {
                rauha_spec::message::quote(&inline.file)
            };
            let policy = Policy::parse(&file, &inline.toml)?;
            Ok((policy, file, inline.toml.clone()))
        }
    }
}

impl ZoneRegistry {
    pub async fn update_policy(
        &self,
        zone: &str,
        policy: Policy,
    ) -> Result<ZoneRecord, DaemonError> {
        // Held until the new policy is stored, and taken before the record
        // is read: a process's ports coming or going rebuild the rules from
        // the stored policy, and never from one read before another update.
        let _rules = self.rules_guard().await;
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
        if super::network::is_bridged(&policy) {
            let mut next = record.clone();
            next.policy = policy.clone();
            self.check_published(&next, &record.policy.network.publish)?;
            self.renew_network(&next).await?;
        }
        let applied = async {
            let backend = self.backends.of(&record)?;
            backend.update_limits(record.id, &policy)?;
            live.link
                .update_hardening(backend.hardening(
                    &policy,
                    &record.root,
                    record.workspace.as_ref(),
                ))
                .await?;
            Ok::<_, DaemonError>(())
        }
        .await;
        if let Err(e) = applied {
            // The store keeps the old policy: so do the zone's rules.
            if super::network::is_bridged(&record.policy) {
                if let Err(undo) = self.renew_stored(record.id).await {
                    tracing::error!(zone = %record.name, error = %undo, "cannot put back a zone's network rules after a failed policy update");
                }
            }
            return Err(e);
        }
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
