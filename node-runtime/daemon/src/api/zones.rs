use std::sync::Arc;

use rauha_api::v1;
use rauha_api::v1::zones_server::Zones;
use rauha_spec::RootSpec;
use tonic::{Request, Response, Status};

use super::convert;
use crate::error::DaemonError;
use crate::validate::{netns, CgroupParents};
use crate::zone::{NewZone, ZoneRegistry};

pub struct ZonesService {
    pub registry: Arc<ZoneRegistry>,
    pub images: Arc<crate::images::Images>,
    /// Where clients may put zones' cgroups.
    pub cgroups: CgroupParents,
}

impl ZonesService {
    fn wire(&self, z: &crate::store::ZoneRecord) -> v1::Zone {
        let mut wire = convert::zone(
            z,
            self.registry.running_in(&z.id).len(),
            &self.registry.enforcement_of(z),
        );
        wire.ttl_remaining_ms = self.registry.ttl_remaining_ms(z);
        if let Some((addr, published)) = self.registry.network_of(z) {
            wire.address = addr.to_string();
            wire.published = published;
        }
        wire
    }
}

/// The root a request names: a bundle, an image (leased until the zone is
/// recorded), or a view of the host.
pub async fn chosen_root(
    images: &crate::images::Images,
    bundle: &str,
    image: &str,
) -> Result<
    (
        RootSpec,
        Option<(rauha_image::ImageRecord, crate::images::Lease)>,
    ),
    DaemonError,
> {
    if image.is_empty() {
        return Ok((bundle_root(bundle)?, None));
    }
    if !bundle.is_empty() {
        return Err(DaemonError::invalid(
            "image",
            "and bundle are both given; a root is one or the other",
        ));
    }
    let (root, record, lease) = images.root(image).await?;
    Ok((root, Some((record, lease))))
}

pub fn bundle_root(bundle: &str) -> Result<RootSpec, DaemonError> {
    if bundle.is_empty() {
        return Ok(RootSpec::HostView);
    }
    if !bundle.starts_with('/') {
        return Err(DaemonError::invalid(
            "bundle",
            format!(
                "{} is not absolute; give the bundle directory's absolute path",
                rauha_spec::message::quote(bundle)
            ),
        ));
    }
    Ok(RootSpec::Bundle {
        path: bundle.to_string(),
    })
}

#[tonic::async_trait]
impl Zones for ZonesService {
    async fn create(
        &self,
        request: Request<v1::CreateZoneRequest>,
    ) -> Result<Response<v1::Zone>, Status> {
        let req = request.into_inner();
        let (root, _image) = chosen_root(&self.images, &req.bundle, &req.image).await?;
        let policy = self
            .registry
            .resolve_policy(req.policy.as_ref(), root == RootSpec::HostView)?;
        let policy = ZoneRegistry::with_network(policy, &req.network)?;
        let policy = ZoneRegistry::with_publish(policy, &req.publish)?;
        let record = self
            .registry
            .create_zone(NewZone {
                name: req.name,
                policy,
                root,
                task_id: None,
                ephemeral: false,
                workspace: None,
                ttl_ms: None,
                netns: netns("netns", &req.netns)?,
                cgroup_parent: self.cgroups.check(&req.cgroup_parent)?,
            })
            .await?;
        Ok(Response::new(self.wire(&record)))
    }

    async fn get(&self, request: Request<v1::ZoneRef>) -> Result<Response<v1::Zone>, Status> {
        let record = self.registry.find_zone(&request.into_inner().zone)?;
        Ok(Response::new(self.wire(&record)))
    }

    async fn list(
        &self,
        _: Request<v1::ListZonesRequest>,
    ) -> Result<Response<v1::ListZonesResponse>, Status> {
        let mut zones = self.registry.store.zones().map_err(DaemonError::from)?;
        zones.sort_by_key(|z| z.created_ms);
        Ok(Response::new(v1::ListZonesResponse {
            zones: zones.iter().map(|z| self.wire(z)).collect(),
        }))
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteZoneRequest>,
    ) -> Result<Response<v1::DeleteZoneResponse>, Status> {
        let req = request.into_inner();
        self.registry.delete_zone(&req.zone, req.force).await?;
        Ok(Response::new(v1::DeleteZoneResponse {}))
    }

    async fn verify(
        &self,
        request: Request<v1::ZoneRef>,
    ) -> Result<Response<v1::VerifyZoneResponse>, Status> {
        let (record, enforcement, checks) = self
            .registry
            .verify_zone(&request.into_inner().zone)
            .await?;
        Ok(Response::new(v1::VerifyZoneResponse {
            zone: Some(self.wire(&record)),
            enforcement: Some((&enforcement).into()),
            checks: checks.iter().map(convert::check).collect(),
        }))
    }

    async fn update_policy(
        &self,
        request: Request<v1::UpdatePolicyRequest>,
    ) -> Result<Response<v1::Zone>, Status> {
        let req = request.into_inner();
        if req.policy.is_none() {
            return Err(
                DaemonError::invalid("policy", "is missing; give a preset or a TOML file").into(),
            );
        }
        // Its filesystem cannot change (update_policy): nothing to check
        // on the host.
        let policy = self.registry.resolve_policy(req.policy.as_ref(), false)?;
        let record = self.registry.update_policy(&req.zone, policy).await?;
        Ok(Response::new(self.wire(&record)))
    }

    async fn top(&self, _: Request<v1::TopRequest>) -> Result<Response<v1::TopResponse>, Status> {
        let mut zones = self.registry.store.zones().map_err(DaemonError::from)?;
        zones.sort_by_key(|z| z.created_ms);
        let out = zones
            .iter()
            .map(|z| v1::ZoneUsage {
                zone: Some(self.wire(z)),
                usage: self
                    .registry
                    .backends
                    .of(z)
                    .ok()
                    .and_then(|b| b.usage(z.id).ok())
                    .map(|u| convert::usage(&u)),
            })
            .collect();
        Ok(Response::new(v1::TopResponse { zones: out }))
    }

    async fn usage(
        &self,
        request: Request<v1::ZoneRef>,
    ) -> Result<Response<v1::ZoneUsage>, Status> {
        let zone = self.registry.find_zone(&request.into_inner().zone)?;
        let usage = self
            .registry
            .backends
            .of(&zone)?
            .usage(zone.id)
            .map_err(DaemonError::from)?;
        Ok(Response::new(v1::ZoneUsage {
            zone: Some(self.wire(&zone)),
            usage: Some(convert::usage(&usage)),
        }))
    }

    async fn take_denials(
        &self,
        request: Request<v1::ZoneRef>,
    ) -> Result<Response<v1::Denials>, Status> {
        let zone = self.registry.find_zone(&request.into_inner().zone)?;
        let events = self
            .registry
            .take_denials(&zone.id)
            .iter()
            .map(Into::into)
            .collect();
        Ok(Response::new(v1::Denials { events }))
    }

    async fn add_root(
        &self,
        request: Request<v1::AddRootRequest>,
    ) -> Result<Response<v1::RootResponse>, Status> {
        let req = request.into_inner();
        let mounts = req
            .mounts
            .into_iter()
            .map(|m| rauha_backend::RootMount {
                destination: m.destination.into(),
                kind: m.r#type,
                source: m.source.into(),
                options: m.options,
            })
            .collect();
        // Mounts and cgroups: blocking work (a failed add waits for its
        // cgroup's removal).
        let own_cgroup = tokio::task::block_in_place(|| {
            self.registry.add_root(
                &req.zone,
                &req.name,
                &req.rootfs,
                rauha_backend::RootFlags {
                    readonly: req.readonly,
                    setuid: false,
                    masked_paths: req.masked_paths.iter().map(Into::into).collect(),
                    readonly_paths: req.readonly_paths.iter().map(Into::into).collect(),
                    own_pid_namespace: req.own_pid_namespace,
                    devices: convert::root_devices(&req.devices)?,
                    image_layers: Vec::new(),
                },
                mounts,
                &convert::root_limits(req.limits.as_ref()),
            )
        })?;
        Ok(Response::new(v1::RootResponse { own_cgroup }))
    }

    async fn update_root(
        &self,
        request: Request<v1::UpdateRootRequest>,
    ) -> Result<Response<v1::RootResponse>, Status> {
        let req = request.into_inner();
        let own_cgroup = self.registry.update_root(
            &req.zone,
            &req.name,
            &convert::root_limits(req.limits.as_ref()),
        )?;
        Ok(Response::new(v1::RootResponse { own_cgroup }))
    }

    async fn root_usage(
        &self,
        request: Request<v1::RootRef>,
    ) -> Result<Response<v1::Usage>, Status> {
        let req = request.into_inner();
        let usage = self.registry.root_usage(&req.zone, &req.name)?;
        Ok(Response::new(convert::usage(&usage)))
    }

    async fn signal_root(
        &self,
        request: Request<v1::SignalRootRequest>,
    ) -> Result<Response<v1::RootResponse>, Status> {
        let req = request.into_inner();
        self.registry
            .signal_root(&req.zone, &req.name, req.signal)
            .await?;
        Ok(Response::new(v1::RootResponse::default()))
    }

    async fn remove_root(
        &self,
        request: Request<v1::RootRef>,
    ) -> Result<Response<v1::RootResponse>, Status> {
        let req = request.into_inner();
        // Waits, up to seconds, for the container's processes to leave.
        tokio::task::block_in_place(|| self.registry.remove_root(&req.zone, &req.name))?;
        Ok(Response::new(v1::RootResponse::default()))
    }

    async fn pause(&self, request: Request<v1::ZoneRef>) -> Result<Response<v1::Zone>, Status> {
        let record = self.registry.pause_zone(&request.into_inner().zone).await?;
        Ok(Response::new(self.wire(&record)))
    }

    async fn resume(&self, request: Request<v1::ZoneRef>) -> Result<Response<v1::Zone>, Status> {
        let record = self
            .registry
            .resume_zone(&request.into_inner().zone)
            .await?;
        Ok(Response::new(self.wire(&record)))
    }

    async fn stop(&self, request: Request<v1::ZoneRef>) -> Result<Response<v1::Zone>, Status> {
        let record = self.registry.stop_zone(&request.into_inner().zone).await?;
        Ok(Response::new(self.wire(&record)))
    }
}
