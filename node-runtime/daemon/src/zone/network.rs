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
use crate::store::{ProcessState, ZoneRecord};

/// The node's bridged network and its resolver's upstreams.
pub struct NetCtx {
    pub net: Arc<Network>,
    pub upstreams: Vec<SocketAddr>,
    resolver: std::sync::Mutex<bool>,
    /// Held by whatever reads published ports and rebuilds rules from
    /// them, so that one rebuild cannot undo another's newer view.
    rules: tokio::sync::Mutex<()>,
}

impl NetCtx {
    pub fn new(net: Network, upstreams: Vec<SocketAddr>) -> NetCtx {
        NetCtx {
            net: Arc::new(net),
            upstreams,
            resolver: std::sync::Mutex::new(false),
            rules: tokio::sync::Mutex::new(()),
        }
    }
}

pub fn is_bridged(policy: &Policy) -> bool {
    policy.network.mode == NetworkMode::Bridged
}

/// The ruleset's view of a zone (the policy was validated: its rules
/// parse), with the ports its running processes publish.
fn member(
    id: Uuid,
    name: &str,
    policy: &Policy,
    addr: Ipv4Addr,
    process_ports: &[String],
) -> Member {
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
                .chain(process_ports)
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
        let m = member(record.id, &record.name, &record.policy, addr, &[]);
        let net = Arc::clone(&ctx.net);
        let (id, zone_addr) = (record.id, addr);
        let attached = blocking(move || {
            let netns = net.attach(m)?;
            let resolv = netns.with_extension("resolv.conf");
            if let Err(e) = std::fs::write(
                &resolv,
                rauha_net::resolver::zone_resolv_conf(net.bridge().subnet.gateway()),
            ) {
                // Off the bridge again: the caller forgets the lease, and
                // a member without one would keep the address's chain.
                if let Err(undo) = net.detach(id, zone_addr) {
                    tracing::warn!(error = %undo, "cannot undo a network attach");
                }
                return Err(NetError::io(
                    format!("cannot write {}", resolv.display()),
                    e,
                ));
            }
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

    /// Held while published ports are read and the rules rebuilt from
    /// them (None: no network).
    pub(crate) async fn rules_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.network.get() {
            Some(ctx) => Some(ctx.rules.lock().await),
            None => None,
        }
    }

    /// The ports a zone's running processes publish.
    fn process_ports(&self, zone: Uuid) -> Result<Vec<String>, DaemonError> {
        Ok(self
            .store
            .processes()?
            .into_iter()
            .filter(|p| p.zone_id == zone && p.state == ProcessState::Running)
            .flat_map(|p| p.publish)
            .collect())
    }

    /// A bridged zone's rules rebuilt after its running processes' ports
    /// changed (under [`Self::rules_guard`]); a zone that is gone, or off
    /// the bridge already, has none to rebuild.
    pub(crate) async fn renew_ports(&self, zone: Uuid) -> Result<(), DaemonError> {
        let _rules = self.rules_guard().await;
        self.renew_stored(zone).await
    }

    /// A bridged zone's rules rebuilt from its record as stored now (the
    /// caller holds [`Self::rules_guard`]: nothing changes it meanwhile).
    pub(crate) async fn renew_stored(&self, zone: Uuid) -> Result<(), DaemonError> {
        match self.store.zone(&zone)? {
            Some(record) if is_bridged(&record.policy) => {
                // Not on the bridge (yet: rauhad is starting; or any more):
                // what puts it there builds its rules from the store. On it,
                // it holds its lease (both change under the rules lock).
                if self.network().is_some_and(|n| n.is_member(zone)) {
                    self.renew_network(&record).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A bridged zone's rules after a policy update (under
    /// [`Self::rules_guard`]).
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
        let ports = self.process_ports(record.id)?;
        let m = member(record.id, &record.name, &record.policy, addr, &ports);
        let net = Arc::clone(&ctx.net);
        blocking(move || net.update(m)).await
    }

    /// Takes the zone off the bridge and gives its address back.
    pub(crate) async fn detach_network(&self, record: &ZoneRecord) -> Result<(), DaemonError> {
        let (Some(ctx), true) = (self.network.get(), is_bridged(&record.policy)) else {
            return Ok(());
        };
        // A process ending as its zone goes finds the zone on the bridge
        // with its address, or neither.
        let _rules = ctx.rules.lock().await;
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
        // A process ending meanwhile rebuilds the rules after this did.
        let _rules = ctx.rules.lock().await;
        let zones = self.store.zones()?;
        let mut members = Vec::new();
        for (id, addr) in self.store.leases()? {
            match zones.iter().find(|z| z.id == id && is_bridged(&z.policy)) {
                Some(z) => members.push(member(
                    z.id,
                    &z.name,
                    &z.policy,
                    addr,
                    &self.process_ports(z.id)?,
                )),
                None => {
                    tracing::info!(zone = %id, %addr, "reclaiming the address of a zone that is gone");
                    ctx.net.forget_connections(addr);
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
        let ports = self.process_ports(zone.id).unwrap_or_default();
        let published = zone
            .policy
            .network
            .publish
            .iter()
            .chain(&ports)
            .filter_map(|p| PortMapping::parse(p).ok())
            .map(|p| p.to_string())
            .collect();
        Some((addr, published))
    }

    /// A request's `--network` mode in place of its policy's (checked as
    /// the policy's own would be).
    pub fn with_network(mut policy: Policy, mode: &str) -> Result<Policy, DaemonError> {
        if mode.is_empty() {
            return Ok(policy);
        }
        // The policy file's own names for the modes (serde's).
        use serde::Deserialize as _;
        let text = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(mode);
        policy.network.mode = NetworkMode::deserialize(text).map_err(|_| {
            DaemonError::invalid(
                "network",
                format!(
                    "{mode:?} is not a network mode; use loopback, none, bridged, joined or host"
                ),
            )
        })?;
        policy
            .validate()
            .map_err(|(_, message)| DaemonError::invalid("network", message))?;
        Ok(policy)
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
                "needs a bridged zone, and the policy's network.mode is not \"bridged\"; add --network bridged, or use a policy with [network] mode = \"bridged\"",
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

    /// Refuses a host port another zone publishes already (by its policy
    /// or while one of its processes runs), or one of this zone's running
    /// processes does, or (when not in `had`, the ports it published
    /// before) a socket of the host holds.
    pub(crate) fn check_published(
        &self,
        record: &ZoneRecord,
        had: &[String],
    ) -> Result<(), DaemonError> {
        let mine: Vec<PortMapping> = record
            .policy
            .network
            .publish
            .iter()
            .filter_map(|p| PortMapping::parse(p).ok())
            .collect();
        let had: Vec<PortMapping> = had
            .iter()
            .filter_map(|p| PortMapping::parse(p).ok())
            .collect();
        self.check_ports("publish", &mine, record.id, true, &had)
    }

    /// A process's `publish` ports, normalized: each parsed, its zone
    /// bridged, no host port given twice or published by anyone already.
    pub(crate) fn process_publish(
        &self,
        zone: &ZoneRecord,
        publish: &[String],
    ) -> Result<Vec<String>, DaemonError> {
        const FIELD: &str = "spec.publish";
        if publish.is_empty() {
            return Ok(Vec::new());
        }
        if !is_bridged(&zone.policy) {
            return Err(DaemonError::invalid(
                FIELD,
                format!("needs a bridged zone, and zone {}'s network.mode is not \"bridged\"; publish from a zone made with [network] mode = \"bridged\"", zone.name),
            ));
        }
        let mut mine: Vec<PortMapping> = Vec::new();
        for text in publish {
            let p = PortMapping::parse(text).map_err(|e| DaemonError::invalid(FIELD, e))?;
            if mine.iter().any(|m| clash(m, &p)) {
                return Err(DaemonError::invalid(
                    FIELD,
                    format!(
                        "{p} takes host port {}/{} a second time; give each host port once",
                        p.host_port,
                        p.proto.as_str()
                    ),
                ));
            }
            mine.push(p);
        }
        self.check_ports(FIELD, &mine, zone.id, false, &[])?;
        Ok(mine.iter().map(ToString::to_string).collect())
    }

    /// Refuses any of `mine` (ports of zone `own`: its policy's when
    /// `replacing_policy`, else a process's) whose host port is taken: by a
    /// zone's policy (not the one `mine` replaces), a running process, or a
    /// rule still in force for another zone (a process that just ended,
    /// its ports not yet taken off); or, when new, by a socket of the host.
    fn check_ports(
        &self,
        field: &str,
        mine: &[PortMapping],
        own: Uuid,
        replacing_policy: bool,
        had: &[PortMapping],
    ) -> Result<(), DaemonError> {
        if mine.is_empty() {
            return Ok(());
        }
        let zones = self.store.zones()?;
        let parsed = |texts: &[String]| -> Vec<PortMapping> {
            texts
                .iter()
                .filter_map(|p| PortMapping::parse(p).ok())
                .collect()
        };
        let mut taken: Vec<(String, PortMapping)> = Vec::new();
        for z in zones.iter().filter(|z| is_bridged(&z.policy)) {
            if !(replacing_policy && z.id == own) {
                for m in parsed(&z.policy.network.publish) {
                    taken.push((format!("zone {}", z.name), m));
                }
            }
        }
        for p in self
            .store
            .processes()?
            .into_iter()
            .filter(|p| p.state == ProcessState::Running)
        {
            let zone = zones
                .iter()
                .find(|z| z.id == p.zone_id)
                .map_or("?", |z| z.name.as_str());
            for m in parsed(&p.publish) {
                taken.push((
                    format!("process {} of zone {zone}", &p.id.simple().to_string()[..8]),
                    m,
                ));
            }
        }
        // Last: a more exact holder above names itself first.
        if let Some(net) = self.network() {
            for m in net.members().iter().filter(|m| m.net.id != own) {
                for p in &m.net.publish {
                    taken.push((format!("zone {}", m.net.name), *p));
                }
            }
        }
        for (owner, theirs) in taken {
            if let Some(m) = mine.iter().find(|m| clash(m, &theirs)) {
                return Err(DaemonError::invalid(
                    field,
                    format!("{m} takes host port {}/{}, which {owner} publishes already; choose another host port", m.host_port, m.proto.as_str()),
                ));
            }
        }
        // The zone's own ports already published hold no socket to find
        // (they are DNAT rules): only new ones are checked against the host.
        for m in mine.iter().filter(|m| !had.contains(m)) {
            host_port_free(m).map_err(|why| DaemonError::invalid(field, why))?;
        }
        Ok(())
    }
}

/// A published port must be one no socket of the host holds (a service of
/// the host, or rauhad's own resolver), on an address of the host: the
/// rules would otherwise take that service's traffic into the zone.
/// Checked by binding it for a moment, as docker-proxy binds it for good.
fn host_port_free(m: &PortMapping) -> Result<(), String> {
    use rauha_spec::netrules::Proto;
    let at = SocketAddr::new(m.host_ip, m.host_port);
    let bound = match m.proto {
        Proto::Tcp => std::net::TcpListener::bind(at).map(drop),
        Proto::Udp => std::net::UdpSocket::bind(at).map(drop),
    };
    match bound {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "{m}: host port {}/{} is in use on this host (a service, or rauhad's resolver, listens there); choose another host port",
            m.host_port,
            m.proto.as_str()
        )),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Err(format!(
            "{m}: {} is not an address of this host; publish on 127.0.0.1, 0.0.0.0 or one of the host's addresses",
            m.host_ip
        )),
        Err(e) => Err(format!("{m}: cannot check host port {}: {e}", m.host_port)),
    }
}

/// Two mappings that cannot both hold: one host port and protocol on the
/// same address (or on every address).
fn clash(a: &PortMapping, b: &PortMapping) -> bool {
    a.host_port == b.host_port
        && a.proto == b.proto
        && (a.host_ip == b.host_ip || a.host_ip.is_unspecified() || b.host_ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::clash;
    use rauha_spec::netrules::PortMapping;

    fn p(text: &str) -> PortMapping {
        PortMapping::parse(text).expect("mapping")
    }

    #[test]
    fn a_host_port_clashes_on_its_address_or_on_every_address() {
        assert!(clash(&p("8080:80"), &p("8080:81")));
        assert!(clash(&p("8080:80"), &p("0.0.0.0:8080:80")));
        assert!(!clash(&p("8080:80"), &p("10.0.0.1:8080:80")));
        assert!(!clash(&p("8080:80"), &p("8080:80/udp")));
        assert!(!clash(&p("8080:80"), &p("8081:80")));
    }

    #[test]
    fn a_network_mode_is_read_by_the_policy_files_own_names() {
        use crate::zone::ZoneRegistry;
        use rauha_spec::policy::NetworkMode;
        let p = ZoneRegistry::with_network(rauha_spec::Policy::default(), "bridged").unwrap();
        assert_eq!(p.network.mode, NetworkMode::Bridged);
        let e = ZoneRegistry::with_network(rauha_spec::Policy::default(), "bridge")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("network: \"bridge\" is not a network mode"),
            "{e}"
        );
    }
}
