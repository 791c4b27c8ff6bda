//! The bridged network of one node: which zones are on it, their links,
//! the table that filters them, and what their allowed names resolved to.
//! Addresses come from the caller (rauhad leases them in its store).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use rauha_spec::netrules::DomainRule;
use uuid::Uuid;

use crate::admitted::{Admitted, Change};
use crate::config::BridgeConfig;
use crate::kernel::{Firewall, Links, NetError};
use crate::ruleset::{ruleset, DomainGrant, ZoneNet};

/// One bridged zone as the network knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub net: ZoneNet,
    pub domains: Vec<DomainRule>,
}

struct State {
    zones: BTreeMap<Uuid, Member>,
    admitted: Admitted,
    bridge_ready: bool,
    /// The zones (by address) whose chains the last applied document
    /// made; `None` until one was applied (or after a failure): the next
    /// replaces the whole table.
    applied: Option<Vec<Ipv4Addr>>,
}

pub struct Network {
    bridge: BridgeConfig,
    links: Box<dyn Links>,
    fw: Box<dyn Firewall>,
    netns_dir: PathBuf,
    state: Mutex<State>,
    epoch: Instant,
}

impl Network {
    /// Checks the configuration against the host (a subnet over a host
    /// route is refused); touches nothing.
    pub fn new(
        bridge: BridgeConfig,
        links: Box<dyn Links>,
        fw: Box<dyn Firewall>,
        netns_dir: &Path,
    ) -> Result<Network, NetError> {
        let routes = links.routes()?;
        if let Some(r) = bridge.overlapping_route(&routes) {
            return Err(NetError::Config(format!(
                "--bridge-subnet {} overlaps the host's route {} on {}; choose a subnet no route of the host covers (see `ip route`)",
                bridge.subnet, r.net, r.device
            )));
        }
        Ok(Network {
            bridge,
            links,
            fw,
            netns_dir: netns_dir.to_path_buf(),
            state: Mutex::new(State {
                zones: BTreeMap::new(),
                admitted: Admitted::default(),
                bridge_ready: false,
                applied: None,
            }),
            epoch: Instant::now(),
        })
    }

    pub fn bridge(&self) -> &BridgeConfig {
        &self.bridge
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a zone's namespace is bound.
    pub fn netns_path(&self, zone: Uuid) -> PathBuf {
        self.netns_dir.join(zone.to_string())
    }

    /// The bridge, made once; at that moment the veths and namespaces of
    /// this bridge that belong to no known zone (a crash's leftovers) go.
    fn ready(&self, st: &mut State) -> Result<(), NetError> {
        if st.bridge_ready {
            return Ok(());
        }
        std::fs::create_dir_all(&self.netns_dir)
            .map_err(|e| NetError::io(format!("cannot create {}", self.netns_dir.display()), e))?;
        self.links.ensure_bridge(&self.bridge)?;
        let keep: BTreeSet<String> = st
            .zones
            .values()
            .map(|m| self.bridge.veth_name(m.net.addr))
            .collect();
        for name in self.links.links_named(&self.bridge.veth_prefix())? {
            if !keep.contains(&name) {
                tracing::info!(veth = %name, "removing a veth no zone has");
                self.links.detach(&name, Path::new("/nonexistent"))?;
            } else {
                // A zone made by an older rauhad: its port isolated too.
                self.links.isolate(&name)?;
            }
        }
        if let Ok(dir) = std::fs::read_dir(&self.netns_dir) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if st.zones.keys().any(|id| name.starts_with(&id.to_string())) {
                    continue;
                }
                tracing::info!(netns = %name, "removing a network namespace no zone has");
                if name.ends_with(".resolv.conf") {
                    let _ = std::fs::remove_file(entry.path());
                } else {
                    crate::netns::remove(&entry.path()).map_err(|e| {
                        NetError::io(format!("cannot remove {}", entry.path().display()), e)
                    })?;
                }
            }
        }
        st.bridge_ready = true;
        Ok(())
    }

    fn apply(&self, st: &mut State) -> Result<(), NetError> {
        let now = self.now_ms();
        let zones: Vec<ZoneNet> = st.zones.values().map(|m| m.net.clone()).collect();
        let doc = ruleset(&self.bridge, &zones, st.applied.as_deref(), |id| {
            st.admitted
                .of(id, now)
                .filter_map(|(addr, g)| match addr {
                    IpAddr::V4(a) => Some(DomainGrant {
                        addr: *a,
                        ports: g.ports.as_ref().map(|p| p.iter().copied().collect()),
                        seconds: g.remaining_ms(now).div_ceil(1000),
                    }),
                    IpAddr::V6(_) => None,
                })
                .collect()
        });
        let applied = self.fw.apply(&doc);
        st.applied = applied
            .is_ok()
            .then(|| zones.iter().map(|z| z.addr).collect());
        applied
    }

    /// Puts a zone on the bridge; returns its namespace's path. Undone
    /// whole if any step fails.
    pub fn attach(&self, member: Member) -> Result<PathBuf, NetError> {
        let mut st = self.state();
        self.ready(&mut st)?;
        let id = member.net.id;
        let path = self.netns_path(id);
        let veth = self.bridge.veth_name(member.net.addr);
        let t = Instant::now();
        let done = self
            .links
            .attach(&self.bridge, &veth, member.net.addr, &path)
            .and_then(|()| {
                tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, %veth, "links made");
                st.zones.insert(id, member);
                self.apply(&mut st)
            });
        tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, %veth, "zone on the bridge");
        if let Err(e) = done {
            st.zones.remove(&id);
            if let Err(undo) = self.links.detach(&veth, &path) {
                tracing::warn!(error = %undo, "cannot undo a failed network attach");
            }
            let _ = self.apply(&mut st);
            return Err(e);
        }
        Ok(path)
    }

    /// Takes a zone off the bridge: its rules first, then its links, then
    /// its address's tracked connections (the lock released: a dump of
    /// the kernel's table waits on nothing of the network's).
    pub fn detach(&self, zone: Uuid, addr: Ipv4Addr) -> Result<(), NetError> {
        let mut st = self.state();
        st.zones.remove(&zone);
        st.admitted.forget(zone);
        let t = Instant::now();
        if st.bridge_ready {
            self.apply(&mut st)?;
        }
        drop(st);
        tracing::debug!(
            ms = t.elapsed().as_secs_f64() * 1e3,
            "rules without the zone"
        );
        let done = self
            .links
            .detach(&self.bridge.veth_name(addr), &self.netns_path(zone));
        tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, "zone off the bridge");
        // The address goes back to the pool: its flows go with it.
        self.forget_connections(addr);
        done
    }

    /// Deletes the kernel's tracked connections of an address given back.
    pub fn forget_connections(&self, addr: Ipv4Addr) {
        match self.fw.forget_connections(addr) {
            Ok(n) => tracing::debug!(%addr, connections = n, "connections forgotten"),
            Err(e) => tracing::warn!(%addr, error = %e, "cannot forget the zone's connections"),
        }
    }

    /// Whether a zone is on the bridge.
    pub fn is_member(&self, zone: Uuid) -> bool {
        self.state().zones.contains_key(&zone)
    }

    /// At rauhad's start: the zones that survived. Their rules are rebuilt
    /// and leftovers of this bridge removed. Without zones nothing is
    /// touched (that waits for the first bridged zone): a rauhad that runs
    /// no bridged zone never changes the host's network.
    pub fn adopt(&self, members: Vec<Member>) -> Result<(), NetError> {
        if members.is_empty() {
            return Ok(());
        }
        let mut st = self.state();
        st.zones = members.into_iter().map(|m| (m.net.id, m)).collect();
        self.ready(&mut st)?;
        self.apply(&mut st)
    }

    /// A zone's new policy or published ports (same address): its rules
    /// rebuilt. What its names resolved to is forgotten when its names
    /// changed (they may be gone), kept otherwise (a process publishing a
    /// port takes nothing from the zone's workload).
    pub fn update(&self, member: Member) -> Result<(), NetError> {
        let mut st = self.state();
        let Some(old) = st.zones.get(&member.net.id).cloned() else {
            return Err(NetError::Config(format!(
                "zone {} is not on the bridge",
                member.net.name
            )));
        };
        if old.domains != member.domains {
            st.admitted.forget(member.net.id);
        }
        st.zones.insert(member.net.id, member);
        let applied = self.apply(&mut st);
        if applied.is_err() {
            // The kernel kept the old rules: so does this.
            st.zones.insert(old.net.id, old);
        }
        applied
    }

    /// The zone whose address is `addr`.
    pub fn zone_at(&self, addr: Ipv4Addr) -> Option<Member> {
        self.state()
            .zones
            .values()
            .find(|m| m.net.addr == addr)
            .cloned()
    }

    /// The address of the zone named `name`, if `asking` may reach it.
    pub fn peer_for(&self, asking: &Member, name: &str) -> Option<Ipv4Addr> {
        if !asking.net.allowed_zones.iter().any(|z| z == name) {
            return None;
        }
        self.state()
            .zones
            .values()
            .find(|m| m.net.name == name)
            .map(|m| m.net.addr)
    }

    /// Admits, for `zone`, the addresses an answer for `name` gave (with
    /// their TTLs), on the port of the zone's rule for that name. Returns
    /// whether anything changed (the table was rebuilt, and the caller's
    /// other layers should be told).
    pub fn admit(
        &self,
        zone: Uuid,
        name: &str,
        answers: &[(IpAddr, u32)],
    ) -> Result<bool, NetError> {
        let mut st = self.state();
        let Some(member) = st.zones.get(&zone) else {
            return Ok(false);
        };
        let Some(rule) = member.domains.iter().find(|r| r.matches(name)).cloned() else {
            return Ok(false);
        };
        let (zone_addr, zone_name) = (member.net.addr, member.net.name.clone());
        let now = self.now_ms();
        let mut elements = Vec::new();
        let mut whole = false;
        let mut changed = false;
        for (addr, ttl) in answers {
            if !self.admissible(*addr) {
                tracing::warn!(zone = %zone_name, %name, %addr, "not admitted: an answer may not name this address");
                continue;
            }
            let before = st
                .admitted
                .of(zone, now)
                .find(|(a, _)| *a == addr)
                .map(|(_, g)| g.ports.clone());
            let change = st.admitted.admit(zone, *addr, name, *ttl, rule.port, now);
            if change == Change::Full {
                tracing::warn!(zone = %zone_name, %name, "not admitted: the zone holds as many addresses by name as it may");
                continue;
            }
            changed |= change != Change::Same;
            let Some(grant) = st
                .admitted
                .of(zone, now)
                .find(|(a, _)| *a == addr)
                .map(|(_, g)| g.clone())
            else {
                continue;
            };
            let IpAddr::V4(v4) = addr else { continue };
            let dg = DomainGrant {
                addr: *v4,
                ports: grant.ports.as_ref().map(|p| p.iter().copied().collect()),
                seconds: grant.remaining_ms(now).div_ceil(1000),
            };
            match (change, before) {
                (Change::Same | Change::Full, _) => {}
                (Change::New, _) => elements.push(dg),
                (Change::Extended, Some(old)) if old == grant.ports => elements.push(dg),
                // Ports widened: its elements move between sets.
                (Change::Extended, _) => whole = true,
            }
        }
        if whole || st.applied.is_none() {
            self.apply(&mut st)?;
        } else if !elements.is_empty() {
            let doc = crate::ruleset::grant_elements(&self.bridge, zone_addr, &elements);
            if let Err(e) = self.fw.apply(&doc) {
                // An element the kernel expired a moment early: rewrite all.
                tracing::debug!(error = %e, "grant elements refused; rebuilding the table");
                self.apply(&mut st)?;
            }
        }
        Ok(changed)
    }

    /// Whether a name's answer may admit `addr`: never this host's own
    /// (loopback, unspecified), link-local (a cloud's metadata service,
    /// reached by a name that resolves there), multicast or broadcast, nor
    /// an address of the bridge's subnet (other zones are reached by
    /// `allowed_zones`, not by a name pointed at them).
    fn admissible(&self, addr: IpAddr) -> bool {
        match addr {
            // 0/8 holds the unspecified address, 240/4 the broadcast one.
            IpAddr::V4(a) => {
                !(a.octets()[0] == 0
                    || a.octets()[0] >= 240
                    || a.is_loopback()
                    || a.is_link_local()
                    || a.is_multicast()
                    || self.bridge.subnet.contains(a))
            }
            IpAddr::V6(a) => {
                let s = a.segments();
                !(a.is_unspecified()
                    || a.is_loopback()
                    || a.is_multicast()
                    || (s[0] & 0xffc0) == 0xfe80
                    || a.to_ipv4_mapped().is_some())
            }
        }
    }

    /// Forgets expired grants (the kernel's sets expire by themselves);
    /// returns the zones that lost some, and when to look again.
    pub fn expire(&self) -> (Vec<Uuid>, Option<u64>) {
        let mut st = self.state();
        let now = self.now_ms();
        let mut zones: Vec<Uuid> = st
            .admitted
            .expire(now)
            .into_iter()
            .map(|(z, _)| z)
            .collect();
        zones.dedup();
        let next = st.admitted.next_expiry().map(|t| t.saturating_sub(now));
        (zones, next)
    }

    /// A zone's live grants as egress rules (`ADDR/32[:PORT]`), for the BPF layer.
    pub fn granted_egress(&self, zone: Uuid) -> Vec<String> {
        let st = self.state();
        let now = self.now_ms();
        let mut out = Vec::new();
        for (addr, g) in st.admitted.of(zone, now) {
            let net = match addr {
                IpAddr::V4(a) => format!("{a}/32"),
                IpAddr::V6(a) => format!("[{a}/128]"),
            };
            match &g.ports {
                None => out.push(net),
                Some(ports) => out.extend(ports.iter().map(|p| format!("{net}:{p}"))),
            }
        }
        out
    }

    /// The name through which `zone` was admitted to `addr`, if it was.
    pub fn name_for(&self, zone: Uuid, addr: IpAddr) -> Option<String> {
        let st = self.state();
        st.admitted
            .name_of(zone, addr, self.now_ms())
            .map(str::to_string)
    }

    /// How a denied destination relates to the zone's names, for its deny
    /// event: ` (allowed.test)` or ` (allowed.test, expired: resolve it again)`.
    pub fn describe(&self, zone: Uuid, addr: IpAddr) -> String {
        use crate::admitted::Known;
        let st = self.state();
        match st.admitted.known(zone, addr, self.now_ms()) {
            Some(Known::Admitted(n)) => format!(" ({n})"),
            Some(Known::Expired(n)) => format!(" ({n}, expired: resolve it again)"),
            None => String::new(),
        }
    }

    /// The members, by id.
    pub fn members(&self) -> Vec<Member> {
        self.state().zones.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostRoute;
    use std::sync::{Arc, Mutex as M};

    #[derive(Default)]
    struct Kernel {
        log: M<Vec<String>>,
        links: M<BTreeSet<String>>,
        docs: M<Vec<serde_json::Value>>,
        fail_attach: M<bool>,
        fail_apply: M<bool>,
    }

    struct L(Arc<Kernel>);
    struct F(Arc<Kernel>);

    impl Links for L {
        fn ensure_bridge(&self, b: &BridgeConfig) -> Result<(), NetError> {
            self.0.links.lock().unwrap().insert(b.name.clone());
            self.0
                .log
                .lock()
                .unwrap()
                .push(format!("bridge {}", b.name));
            Ok(())
        }
        fn attach(
            &self,
            _: &BridgeConfig,
            veth: &str,
            addr: Ipv4Addr,
            _: &Path,
        ) -> Result<(), NetError> {
            if *self.0.fail_attach.lock().unwrap() {
                return Err(NetError::Config("no".into()));
            }
            self.0.links.lock().unwrap().insert(veth.to_string());
            self.0
                .log
                .lock()
                .unwrap()
                .push(format!("attach {veth} {addr}"));
            Ok(())
        }
        fn detach(&self, veth: &str, _: &Path) -> Result<(), NetError> {
            self.0.links.lock().unwrap().remove(veth);
            self.0.log.lock().unwrap().push(format!("detach {veth}"));
            Ok(())
        }
        fn isolate(&self, veth: &str) -> Result<(), NetError> {
            self.0.log.lock().unwrap().push(format!("isolate {veth}"));
            Ok(())
        }
        fn links_named(&self, prefix: &str) -> Result<Vec<String>, NetError> {
            Ok(self
                .0
                .links
                .lock()
                .unwrap()
                .iter()
                .filter(|n| n.starts_with(prefix))
                .cloned()
                .collect())
        }
        fn routes(&self) -> Result<Vec<HostRoute>, NetError> {
            Ok(vec![HostRoute {
                net: crate::Subnet::parse("192.0.2.0/24").unwrap(),
                device: "eth0".into(),
            }])
        }
    }

    impl Firewall for F {
        fn apply(&self, doc: &serde_json::Value) -> Result<(), NetError> {
            if *self.0.fail_apply.lock().unwrap() {
                return Err(NetError::Nft("refused".into()));
            }
            self.0.docs.lock().unwrap().push(doc.clone());
            Ok(())
        }
        fn forget_connections(&self, addr: Ipv4Addr) -> Result<usize, NetError> {
            self.0.log.lock().unwrap().push(format!("forget {addr}"));
            Ok(0)
        }
    }

    fn net(k: &Arc<Kernel>, subnet: &str) -> Result<Network, NetError> {
        let dir = std::env::temp_dir().join(format!("rauha-net-test-{}", Uuid::new_v4()));
        Network::new(
            BridgeConfig::new("rt0", subnet, 1500).unwrap(),
            Box::new(L(k.clone())),
            Box::new(F(k.clone())),
            &dir,
        )
    }

    fn member(name: &str, last: u8, allowed: &[&str], domains: &[&str]) -> Member {
        Member {
            net: ZoneNet {
                id: Uuid::new_v4(),
                name: name.into(),
                addr: Ipv4Addr::new(10, 123, 0, last),
                allowed_zones: allowed.iter().map(|s| s.to_string()).collect(),
                egress: vec![],
                publish: vec![],
            },
            domains: domains
                .iter()
                .map(|d| DomainRule::parse(d).unwrap())
                .collect(),
        }
    }

    #[test]
    fn a_subnet_over_a_host_route_is_refused_before_anything_is_touched() {
        let k = Arc::new(Kernel::default());
        let e = net(&k, "192.0.2.0/25").err().expect("refused").to_string();
        assert!(
            e.contains("overlaps the host's route 192.0.2.0/24 on eth0"),
            "{e}"
        );
        assert!(k.log.lock().unwrap().is_empty());
    }

    #[test]
    fn zones_come_and_go_with_their_links_and_rules() {
        let k = Arc::new(Kernel::default());
        let n = net(&k, "10.123.0.0/24").unwrap();
        let a = member("a", 2, &["b"], &[]);
        let b = member("b", 3, &[], &[]);
        n.attach(a.clone()).unwrap();
        n.attach(b.clone()).unwrap();
        assert_eq!(n.peer_for(&a, "b"), Some(b.net.addr));
        assert_eq!(
            n.peer_for(&b, "a"),
            None,
            "b may not reach a, so it cannot resolve it"
        );
        assert_eq!(n.zone_at(b.net.addr).unwrap().net.name, "b");
        n.detach(a.net.id, a.net.addr).unwrap();
        let log = k.log.lock().unwrap().clone();
        assert_eq!(
            log,
            vec![
                "bridge rt0",
                "attach rt0.2 10.123.0.2",
                "attach rt0.3 10.123.0.3",
                "detach rt0.2",
                "forget 10.123.0.2"
            ],
            "its links go, then its address's connections"
        );
        let last = k.docs.lock().unwrap().last().unwrap().to_string();
        // a's chain is deleted, not made; the table stays (no full replace
        // after the first document).
        assert!(
            last.contains(
                r#"{"delete":{"chain":{"family":"inet","name":"z_0a7b0002","table":"rt0"}}}"#
            ) && !last.contains(r#"{"add":{"chain":{"family":"inet","name":"z_0a7b0002""#)
                && last.contains("z_0a7b0003")
                && !last.contains(r#""delete":{"table""#),
            "{last}"
        );
        let first = k.docs.lock().unwrap()[0].to_string();
        assert!(
            first.contains(r#""delete":{"table""#),
            "the first replaces the table: {first}"
        );
        let typed: Result<nftables::schema::Nftables, _> = serde_json::from_str(&last);
        assert!(typed.is_ok(), "nft's schema: {typed:?}");
        *k.fail_attach.lock().unwrap() = true;
        assert!(n.attach(member("c", 4, &[], &[])).is_err());
        assert_eq!(n.members().len(), 1, "a failed attach leaves nothing");
    }

    #[test]
    fn adopt_keeps_survivors_and_removes_leaks() {
        let k = Arc::new(Kernel::default());
        k.links.lock().unwrap().extend([
            "rt0".to_string(),
            "rt0.2".into(),
            "rt0.9".into(),
            "eth0".into(),
        ]);
        let n = net(&k, "10.123.0.0/24").unwrap();
        n.adopt(vec![member("a", 2, &[], &[])]).unwrap();
        let links = k.links.lock().unwrap().clone();
        assert!(
            links.contains("rt0.2") && !links.contains("rt0.9") && links.contains("eth0"),
            "{links:?}"
        );
        let log = k.log.lock().unwrap().clone();
        assert!(
            log.contains(&"isolate rt0.2".to_string()),
            "a survivor's port isolated (an older rauhad's zone): {log:?}"
        );
        let fresh = Arc::new(Kernel::default());
        fresh
            .links
            .lock()
            .unwrap()
            .extend(["rt0".to_string(), "rt0.5".into()]);
        net(&fresh, "10.123.0.0/24").unwrap().adopt(vec![]).unwrap();
        assert!(
            fresh.log.lock().unwrap().is_empty() && fresh.docs.lock().unwrap().is_empty(),
            "no zones: untouched"
        );
    }

    #[test]
    fn only_names_of_the_zones_rules_admit_addresses() {
        let (k, n, a) = one_zone(&["allowed.test:8080"]);
        let ip = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 5));
        assert!(!n.admit(a.net.id, "other.test", &[(ip, 30)]).unwrap());
        assert!(n.granted_egress(a.net.id).is_empty());
        assert!(n.admit(a.net.id, "allowed.test", &[(ip, 30)]).unwrap());
        assert_eq!(n.granted_egress(a.net.id), vec!["10.77.0.5/32:8080"]);
        assert_eq!(n.name_for(a.net.id, ip).as_deref(), Some("allowed.test"));
        let doc = k.docs.lock().unwrap().last().unwrap().to_string();
        assert!(doc.contains("\"concat\":[\"10.77.0.5\",8080]"), "{doc}");
        assert!(
            !doc.contains("\"chain\""),
            "an answer changes elements only: {doc}"
        );
        let typed: Result<nftables::schema::Nftables, _> = serde_json::from_str(&doc);
        assert!(typed.is_ok(), "nft's schema: {typed:?}");
        assert!(
            !n.admit(a.net.id, "allowed.test", &[(ip, 1)]).unwrap(),
            "nothing new: no rebuild"
        );
    }

    /// A network on 10.123.0.0/24 with zone `a` (.2) allowed `domains`.
    fn one_zone(domains: &[&str]) -> (Arc<Kernel>, Network, Member) {
        let k = Arc::new(Kernel::default());
        let n = net(&k, "10.123.0.0/24").unwrap();
        let a = member("a", 2, &[], domains);
        n.attach(a.clone()).unwrap();
        (k, n, a)
    }

    /// `m` publishing `port` as well.
    fn publishing(m: &Member, port: &str) -> Member {
        let mut m = m.clone();
        m.net.publish = vec![rauha_spec::netrules::PortMapping::parse(port).unwrap()];
        m
    }

    #[test]
    fn a_new_published_port_keeps_what_names_admitted_and_new_names_do_not() {
        let (k, n, a) = one_zone(&["allowed.test"]);
        let ip = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 5));
        assert!(n.admit(a.net.id, "allowed.test", &[(ip, 30)]).unwrap());
        let published = publishing(&a, "8080:80");
        n.update(published.clone()).unwrap();
        assert_eq!(n.granted_egress(a.net.id), vec!["10.77.0.5/32"]);
        let doc = k.docs.lock().unwrap().last().unwrap().to_string();
        assert!(doc.contains("10.77.0.5"), "the zone's set refilled: {doc}");
        assert!(doc.contains("8080"), "{doc}");
        let mut renamed = published;
        renamed.domains = vec![DomainRule::parse("other.test").unwrap()];
        n.update(renamed).unwrap();
        assert!(n.granted_egress(a.net.id).is_empty());
    }

    #[test]
    fn an_answer_admits_no_address_of_the_host_the_bridge_or_link() {
        let (_k, n, a) = one_zone(&["*.x.test"]);
        let answers: Vec<(IpAddr, u32)> = [
            "127.0.0.1",
            "169.254.169.254",
            "10.123.0.3",
            "224.0.0.251",
            "255.255.255.255",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "10.77.0.5",
        ]
        .iter()
        .map(|s| (s.parse().unwrap(), 30))
        .collect();
        assert!(n.admit(a.net.id, "a.x.test", &answers).unwrap());
        assert_eq!(n.granted_egress(a.net.id), vec!["10.77.0.5/32"]);
    }

    #[test]
    fn an_update_the_kernel_refuses_leaves_the_zone_as_it_was() {
        let (k, n, a) = one_zone(&[]);
        let published = publishing(&a, "8080:80");
        *k.fail_apply.lock().unwrap() = true;
        assert!(n.update(published).is_err());
        *k.fail_apply.lock().unwrap() = false;
        assert_eq!(
            n.members()[0].net.publish,
            vec![],
            "the refused ports are not kept"
        );
    }
}
