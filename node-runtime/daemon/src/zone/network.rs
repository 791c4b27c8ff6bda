//! Bridged zones: their addresses (leased in the store), their place on
//! the bridge (rauha-net), the resolver they use, and what the BPF layer
//! must let through for them.

use std::borrow::Cow;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rauha_net::network::Member;
use rauha_net::resolver::Resolver;
use rauha_net::ruleset::ZoneNet;
use rauha_net::{NetError, Network};
use rauha_spec::egress::EgressRule;
use rauha_spec::netrules::{DomainRule, PortMapping};
use rauha_spec::policy::NetworkMode;
use rauha_spec::Policy;
use uuid::Uuid;

use super::ZoneRegistry;
use crate::error::DaemonError;
use crate::store::ZoneRecord;

/// The node's bridged network and its resolver's upstreams.
pub struct NetCtx {
    pub net: Arc<Network>,
    pub upstreams: Vec<SocketAddr>,
    resolver: std::sync::Mutex<bool>,
}

impl NetCtx {
    pub fn new(net: Network, upstreams: Vec<SocketAddr>) -> NetCtx {
        NetCtx {
            net: Arc::new(net),
            upstreams,
            resolver: std::sync::Mutex::new(false),
        }
    }
}

pub fn is_bridged(policy: &Policy) -> bool {
    policy.network.mode == NetworkMode::Bridged
}

/// The ruleset's view of a zone (the policy was validated: its rules parse).
fn member(id: Uuid, name: &str, policy: &Policy, addr: Ipv4Addr) -> Member {
    let n = &policy.network;
    Member {
        net: ZoneNet {
            id,
            name: name.to_string(),
            addr,
            allowed_zones: n.allowed_zones.clone(),
            egress: n
                .allowed_egress
                .iter()
                .filter_map(|r| EgressRule::parse(r).ok())
                .collect(),
            publish: n
                .publish
                .iter()
                .filter_map(|p| PortMapping::parse(p).ok())
                .collect(),
        },
        domains: n
            .allowed_egress_domains
            .iter()
            .filter_map(|d| DomainRule::parse(d).ok())
            .collect(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            DaemonError::Network(NetError::Config(format!("the network task failed: {e}")))
        })?
        .map_err(DaemonError::Network)
}

impl ZoneRegistry {
    pub fn set_network(&self, ctx: NetCtx) {
        let _ = self.network.set(ctx);
    }

    pub fn network(&self) -> Option<&Arc<Network>> {
        self.network.get().map(|c| &c.net)
    }

    /// Leases the zone an address and puts it on the bridge; returns the
    /// namespace to join and the resolv.conf to show.
    pub(crate) async fn attach_network(
        &self,
        record: &ZoneRecord,
    ) -> Result<(String, String), DaemonError> {
        let ctx = self
            .network
            .get()
            .ok_or_else(|| DaemonError::NoBridge("started without a network".into()))?;
        let subnet = ctx.net.bridge().subnet;
        let addr = self
            .store
            .lease_address(&record.id, |held| rauha_net::ipam::pick(&subnet, held))?
            .ok_or_else(|| NetError::Full {
                subnet: subnet.to_string(),
                capacity: rauha_net::ipam::capacity(&subnet),
            })?;
        let m = member(record.id, &record.name, &record.policy, addr);
        let net = Arc::clone(&ctx.net);
        let attached = blocking(move || {
            let netns = net.attach(m)?;
            let resolv = netns.with_extension("resolv.conf");
            std::fs::write(
                &resolv,
                rauha_net::resolver::zone_resolv_conf(net.bridge().subnet.gateway()),
            )
            .map_err(|e| NetError::io(format!("cannot write {}", resolv.display()), e))?;
            Ok((netns.display().to_string(), resolv.display().to_string()))
        })
        .await;
        match attached {
            Ok(paths) => {
                self.ensure_resolver()?;
                Ok(paths)
            }
            Err(e) => {
                let _ = self.store.release_address(&record.id);
                Err(e)
            }
        }
    }

    /// A bridged zone's rules after a policy update.
    pub(crate) async fn renew_network(&self, record: &ZoneRecord) -> Result<(), DaemonError> {
        let ctx = self
            .network
            .get()
            .ok_or_else(|| DaemonError::NoBridge("started without a network".into()))?;
        let Some((_, addr)) = self
            .store
            .leases()?
            .into_iter()
            .find(|(id, _)| *id == record.id)
        else {
            return Err(DaemonError::NoBridge(format!(
                "zone {} has no address",
                record.name
            )));
        };
        let m = member(record.id, &record.name, &record.policy, addr);
        let net = Arc::clone(&ctx.net);
        blocking(move || net.update(m)).await
    }

    /// Takes the zone off the bridge and gives its address back.
    pub(crate) async fn detach_network(&self, record: &ZoneRecord) -> Result<(), DaemonError> {
        let (Some(ctx), true) = (self.network.get(), is_bridged(&record.policy)) else {
            return Ok(());
        };
        let lease = self
            .store
            .leases()?
            .into_iter()
            .find(|(id, _)| *id == record.id);
        if let Some((id, addr)) = lease {
            let net = Arc::clone(&ctx.net);
            let path = net.netns_path(id).with_extension("resolv.conf");
            blocking(move || {
                net.detach(id, addr)?;
                let _ = std::fs::remove_file(path);
                Ok(())
            })
            .await?;
            self.store.release_address(&record.id)?;
        }
        Ok(())
    }

    /// At start: leases of zones that are gone are given back; the zones
    /// that survived keep theirs, and the table is rebuilt for them.
    pub async fn adopt_network(&self) -> Result<(), DaemonError> {
        let Some(ctx) = self.network.get() else {
            return Ok(());
        };
        let zones = self.store.zones()?;
        let mut members = Vec::new();
        for (id, addr) in self.store.leases()? {
            match zones.iter().find(|z| z.id == id && is_bridged(&z.policy)) {
                Some(z) => members.push(member(z.id, &z.name, &z.policy, addr)),
                None => {
                    tracing::info!(zone = %id, %addr, "reclaiming the address of a zone that is gone");
                    self.store.release_address(&id)?;
                }
            }
        }
        let any = !members.is_empty();
        let net = Arc::clone(&ctx.net);
        blocking(move || net.adopt(members)).await?;
        if any {
            self.ensure_resolver()?;
        }
        Ok(())
    }

    /// The resolver on the gateway, started with the first bridged zone.
    fn ensure_resolver(&self) -> Result<(), DaemonError> {
        let Some(ctx) = self.network.get() else {
            return Ok(());
        };
        let mut started = ctx.resolver.lock().unwrap_or_else(|p| p.into_inner());
        if *started {
            return Ok(());
        }
        let at = SocketAddr::new(ctx.net.bridge().subnet.gateway().into(), 53);
        let (socket, tcp) = rauha_net::resolver::bind(at).map_err(|e| {
            NetError::io(format!("cannot serve the zones' DNS on {at} (is another rauhad using this bridge? give each its own --bridge)"), e)
        })?;
        let me = self.me.clone();
        let refusals = self.me.clone();
        let resolver = Arc::new(Resolver {
            on_refuse: Arc::new(move |zone, name| {
                if let Some(r) = refusals.upgrade() {
                    r.record_dns_refusal(zone, name);
                }
            }),
            net: Arc::clone(&ctx.net),
            upstreams: ctx.upstreams.clone(),
            on_admit: Arc::new(move |_zone| {
                if let Some(r) = me.upgrade() {
                    if let Err(e) = r.sync_enforcement() {
                        tracing::error!(error = %e, "cannot give the BPF maps a zone's new addresses");
                    }
                }
            }),
        });
        tokio::spawn(Arc::clone(&resolver).serve_tcp(tcp));
        tokio::spawn(resolver.serve(socket));
        self.spawn_grant_expiry();
        tracing::info!(%at, upstreams = ?ctx.upstreams, "the zones' resolver is serving");
        *started = true;
        Ok(())
    }

    /// Takes expired domain grants out of the BPF maps (the nft sets expire
    /// on their own).
    fn spawn_grant_expiry(&self) {
        let me = self.me.clone();
        tokio::spawn(async move {
            loop {
                let next = {
                    let Some(r) = me.upgrade() else { return };
                    let Some(net) = r.network().cloned() else {
                        return;
                    };
                    let (gone, next) = net.expire();
                    if !gone.is_empty() {
                        if let Err(e) = r.sync_enforcement() {
                            tracing::error!(error = %e, "cannot drop expired addresses from the BPF maps");
                        }
                    }
                    next
                };
                let wait = next.map_or(Duration::from_secs(1), |ms| {
                    Duration::from_millis(ms.clamp(50, 1000))
                });
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// The policy the BPF layer enforces for a zone: a bridged zone's
    /// egress also reaches the resolver, the zones it may reach (by their
    /// current addresses) and what its allowed names resolved to.
    pub(crate) fn enforced_policy<'a>(
        &self,
        zone: &'a ZoneRecord,
        leases: &[(Uuid, Ipv4Addr)],
        zones: &[ZoneRecord],
    ) -> Cow<'a, Policy> {
        let Some(ctx) = self.network.get().filter(|_| is_bridged(&zone.policy)) else {
            return Cow::Borrowed(&zone.policy);
        };
        let mut p = zone.policy.clone();
        let egress = &mut p.network.allowed_egress;
        egress.push(format!("{}/32:53", ctx.net.bridge().subnet.gateway()));
        for name in &zone.policy.network.allowed_zones {
            let peer = zones.iter().find(|z| &z.name == name && z.id != zone.id);
            if let Some((_, addr)) = peer.and_then(|z| leases.iter().find(|(id, _)| *id == z.id)) {
                egress.push(format!("{addr}/32"));
            }
        }
        egress.extend(ctx.net.granted_egress(zone.id));
        Cow::Owned(p)
    }

    /// A bridged zone's address and published ports, for `zone get`.
    pub fn network_of(&self, zone: &ZoneRecord) -> Option<(Ipv4Addr, Vec<String>)> {
        if !is_bridged(&zone.policy) {
            return None;
        }
        let addr = self
            .store
            .leases()
            .ok()?
            .into_iter()
            .find(|(id, _)| *id == zone.id)?
            .1;
        let published = zone
            .policy
            .network
            .publish
            .iter()
            .filter_map(|p| PortMapping::parse(p).ok())
            .map(|p| p.to_string())
            .collect();
        Some((addr, published))
    }

    /// A request's `--publish` ports added to its policy's: each parsed,
    /// and only for a bridged zone.
    pub fn with_publish(mut policy: Policy, publish: &[String]) -> Result<Policy, DaemonError> {
        if publish.is_empty() {
            return Ok(policy);
        }
        if !is_bridged(&policy) {
            return Err(DaemonError::invalid(
                "publish",
                "needs a bridged zone, and the policy's network.mode is not \"bridged\"; use a policy with [network] mode = \"bridged\"",
            ));
        }
        for p in publish {
            PortMapping::parse(p).map_err(|e| DaemonError::invalid("publish", e))?;
            policy.network.publish.push(p.clone());
        }
        policy
            .validate()
            .map_err(|(_, message)| DaemonError::invalid("publish", message))?;
        Ok(policy)
    }

    /// Refuses a host port another zone publishes already.
    pub(crate) fn check_published(&self, record: &ZoneRecord) -> Result<(), DaemonError> {
        let mine: Vec<PortMapping> = record
            .policy
            .network
            .publish
            .iter()
            .filter_map(|p| PortMapping::parse(p).ok())
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        for other in self
            .store
            .zones()?
            .iter()
            .filter(|z| z.id != record.id && is_bridged(&z.policy))
        {
            for text in &other.policy.network.publish {
                let Ok(theirs) = PortMapping::parse(text) else {
                    continue;
                };
                let clash = mine.iter().find(|m| {
                    m.host_port == theirs.host_port
                        && m.proto == theirs.proto
                        && (m.host_ip == theirs.host_ip
                            || m.host_ip.is_unspecified()
                            || theirs.host_ip.is_unspecified())
                });
                if let Some(m) = clash {
                    return Err(DaemonError::invalid(
                        "publish",
                        format!("{m} takes host port {}/{}, which zone {} publishes already; choose another host port", m.host_port, m.proto.as_str(), other.name),
                    ));
                }
            }
        }
        Ok(())
    }
}
