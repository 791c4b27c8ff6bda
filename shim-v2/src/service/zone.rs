//! The pod's zone in rauhad: creating it from a bundle, container roots,
//! their signals, usage, OOM counts, pod memory and pause.

use super::*;

impl Service {
    pub(super) async fn create_zone(
        &self,
        id: &str,
        bundle: &str,
        spec: &Value,
        chosen: &convert::ChosenPolicy,
        replay: bool,
    ) -> TtrpcResult<String> {
        let policy = convert::policy(spec, chosen);
        let name = convert::own_zone_name(spec, &self.inner.namespace, id);
        let mut zones = self.zones().await?;
        let created = zones
            .create(v1::CreateZoneRequest {
                name: name.clone(),
                policy: Some(policy),
                bundle: bundle.to_string(),
                netns: convert::zone_netns(spec, chosen).unwrap_or_default(),
                cgroup_parent: convert::cgroup_parent(spec, &self.inner.namespace)
                    .unwrap_or_default(),
                image: String::new(),
                publish: Vec::new(),
                network: String::new(),
            })
            .await;
        match created {
            Ok(z) => Ok(z.into_inner().id),
            // The same request, asked again of a restarted shim: the dead
            // shim made the zone (from this bundle) before it could answer.
            Err(s) if replay && s.code() == tonic::Code::AlreadyExists => {
                let z = zones
                    .get(v1::ZoneRef { zone: name })
                    .await
                    .map_err(ttrpc_error)?
                    .into_inner();
                if z.root == format!("bundle:{bundle}") {
                    Ok(z.id)
                } else {
                    Err(ttrpc_error(s))
                }
            }
            Err(s) => Err(ttrpc_error(s)),
        }
    }

    /// Signals every process of a pod container's root.
    pub(super) async fn signal_root(&self, zone: &str, name: &str, signal: i32) -> TtrpcResult<()> {
        self.zones()
            .await?
            .signal_root(v1::SignalRootRequest {
                zone: zone.to_string(),
                name: name.to_string(),
                signal,
            })
            .await
            .map_err(ttrpc_error)?;
        Ok(())
    }

    /// A container's resource use: a pod container's own cgroup's (rauhad
    /// gives the zone's where it has none), or its zone's.
    pub(super) async fn usage_of(&self, container_id: &str) -> TtrpcResult<v1::Usage> {
        let (zone, root) = self.with(container_id, |c| Ok((c.zone.clone(), c.root.clone())))?;
        let mut zones = self.zones().await?;
        let usage = match root {
            Some(name) => zones
                .root_usage(v1::RootRef { zone, name })
                .await
                .map_err(ttrpc_error)?
                .into_inner(),
            None => zones
                .usage(v1::ZoneRef { zone })
                .await
                .map_err(ttrpc_error)?
                .into_inner()
                .usage
                .unwrap_or_default(),
        };
        Ok(usage)
    }

    /// The container's count of OOM kills so far (0 when unknown).
    pub(super) async fn oom_kills(&self, container_id: &str) -> u64 {
        self.usage_of(container_id)
            .await
            .map(|u| u.oom_kills)
            .unwrap_or(0)
    }

    /// Whether the OOM killer acted in the container (its own cgroup, or
    /// its zone) since its init started (an earlier kill is not this
    /// container's).
    pub(super) async fn oom_killed(&self, container_id: &str) -> bool {
        let Ok(before) = self.with(container_id, |c| Ok(c.oom_before)) else {
            return false;
        };
        self.oom_kills(container_id).await > before
    }

    /// Prepares the container's root in the pod's zone: its image and its
    /// bind and tmpfs mounts (the zone provides /proc, /sys, /dev).
    /// The container also gets a cgroup of its own with its limits, where
    /// the host allows (see rauhad's `RootResponse.own_cgroup`).
    pub(super) async fn add_root(
        &self,
        zone: &str,
        id: &str,
        bundle: &Path,
        spec: &Value,
        replay: bool,
    ) -> TtrpcResult<()> {
        let rootfs = spec
            .get("root")
            .and_then(|r| r.get("path"))
            .and_then(Value::as_str)
            .map(|p| bundle.join(p))
            .unwrap_or_else(|| bundle.join("rootfs"));
        let added = self
            .zones()
            .await?
            .add_root(v1::AddRootRequest {
                zone: zone.to_string(),
                name: id.to_string(),
                rootfs: rootfs.display().to_string(),
                mounts: convert::mounts(spec),
                limits: Some(convert::root_limits(
                    spec.get("linux")
                        .and_then(|l| l.get("resources"))
                        .unwrap_or(&Value::Null),
                )),
                readonly: spec
                    .get("root")
                    .and_then(|r| r.get("readonly"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                masked_paths: convert::linux_paths(spec, "maskedPaths"),
                readonly_paths: convert::linux_paths(spec, "readonlyPaths"),
                own_pid_namespace: convert::own_pid_namespace(spec),
                devices: convert::devices(spec),
            })
            .await;
        let added = match added {
            Ok(a) => a.into_inner(),
            // The dead shim added it before it could answer.
            Err(s) if replay && s.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(ttrpc_error(s)),
        };
        if !added.own_cgroup {
            log::info!(
                "container {id}: its pod's zone gives containers no cgroup of their own; the pod's limits hold for it"
            );
        }
        Ok(())
    }

    /// A pod's memory limit is the sum of its containers' limits when each
    /// container has one (as kubelet sizes a pod's cgroup); otherwise the
    /// pod's policy keeps its own.
    pub(super) async fn update_pod_memory(&self, zone: &str) {
        let _one_at_a_time = self.inner.pod_memory.lock().await;
        let limits: Vec<Option<u64>> = {
            let all = self
                .inner
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Only the pod that made the zone sizes it: a pod joined to a
            // shared zone leaves its memory to the zone's own policy.
            if !all.values().any(|c| c.zone == zone && c.owns_zone) {
                return;
            }
            all.values()
                .filter(|c| c.zone == zone && c.root.is_some())
                .map(|c| c.limits.memory_bytes)
                .collect()
        };
        let Some(total) = limits.iter().try_fold(0u64, |sum, l| l.map(|l| sum + l)) else {
            return;
        };
        if total == 0 {
            return;
        }
        let Ok(mut zones) = self.inner.rauhad.zones().await else {
            return;
        };
        let Ok(current) = zones
            .get(v1::ZoneRef {
                zone: zone.to_string(),
            })
            .await
        else {
            return;
        };
        let text = current
            .into_inner()
            .policy
            .map(|p| p.toml)
            .unwrap_or_default();
        let Ok(mut policy) = rauha_spec::policy::Policy::parse("zone policy", &text) else {
            return;
        };
        policy.resources.memory_limit = Some(total);
        let r = zones
            .update_policy(v1::UpdatePolicyRequest {
                zone: zone.to_string(),
                policy: Some(v1::PolicySource {
                    source: Some(v1::policy_source::Source::Inline(v1::InlinePolicy {
                        file: "pod memory".into(),
                        toml: policy.to_toml(),
                    })),
                }),
            })
            .await;
        if let Err(e) = r {
            log::warn!(
                "cannot set the pod's memory limit to {total}: {}",
                e.message()
            );
        }
    }

    /// Freezes or thaws the container's zone (a zone it owns).
    pub(super) async fn set_paused(&self, id: &str, paused: bool) -> TtrpcResult<()> {
        let zone = self.owner_zone(id, if paused { "pause" } else { "resume" })?;
        let mut zones = self.zones().await?;
        let zone = v1::ZoneRef { zone };
        if paused {
            zones.pause(zone).await.map_err(ttrpc_error)?;
        } else {
            zones.resume(zone).await.map_err(ttrpc_error)?;
        }
        self.with(id, |c| {
            c.paused = paused;
            Ok(())
        })?;
        self.persist();
        Ok(())
    }

    pub(super) fn owner_zone(&self, id: &str, what: &str) -> TtrpcResult<String> {
        self.with(id, |c| {
            if c.owns_zone {
                Ok(c.zone.clone())
            } else {
                Err(Error::SharesPodZone {
                    id: id.to_string(),
                    what: what.to_string(),
                }
                .into())
            }
        })
    }
}
