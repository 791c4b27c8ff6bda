//! From a zone's policy to what the programs read: its flags, its egress
//! allow-list as LPM-trie entries, and the zone pairs allowed to reach each
//! other. Pure functions, tested without root.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use rauha_spec::egress::EgressRule;
use rauha_spec::Policy;

/// Every flag in `bpf/rauha.h`: the programs isolate each zone from every
/// other one by default; `allowed_zones` and `allowed_egress` open holes.
pub const DEFAULT_FLAGS: u32 = (1 << 7) - 1;

/// Most ports one network of the allow-list may carry (RAUHA_EGRESS_PORTS).
pub const MAX_PORTS: usize = 8;

/// One LPM-trie entry of a zone's egress allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressEntry {
    /// The network, IPv6 or IPv4-mapped.
    pub addr: Ipv6Addr,
    /// Prefix length over the 128 address bits (an IPv4 /24 is 120).
    pub prefix: u8,
    /// Allowed ports; empty means any port.
    pub ports: Vec<u16>,
}

/// What one zone's policy becomes in the maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneRules {
    pub flags: u32,
    pub egress: Vec<EgressEntry>,
    /// Names of the zones this zone may reach.
    pub allowed_zones: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RulesError {
    #[error("network.allowed_egress: {0}")]
    Rule(String),
    #[error("network.allowed_egress: {net} carries {count} ports, at most {MAX_PORTS} fit one network; list a port range as its network without a port, or split the network")]
    TooManyPorts { net: String, count: usize },
}

impl ZoneRules {
    pub fn from_policy(policy: &Policy) -> Result<ZoneRules, RulesError> {
        let rules = policy
            .network
            .allowed_egress
            .iter()
            .map(|r| EgressRule::parse(r).map_err(RulesError::Rule))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ZoneRules {
            flags: DEFAULT_FLAGS,
            egress: egress_entries(&rules)?,
            allowed_zones: policy.network.allowed_zones.clone(),
        })
    }
}

/// The 128-bit form the trie is keyed by, with the prefix over it.
fn mapped(rule: &EgressRule) -> (Ipv6Addr, u8) {
    match rule.addr {
        IpAddr::V4(a) => (a.to_ipv6_mapped(), 96 + rule.prefix),
        IpAddr::V6(a) => (a, rule.prefix),
    }
}

fn masked(addr: Ipv6Addr, prefix: u8) -> u128 {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(addr) & mask
}

/// Whether network `outer` (addr, prefix) contains network `inner`.
fn contains(outer: (Ipv6Addr, u8), inner: (Ipv6Addr, u8)) -> bool {
    outer.1 <= inner.1 && masked(outer.0, outer.1) == masked(inner.0, outer.1)
}

/// A network as (prefix, masked bits) over the 128-bit form.
type Net = (u8, u128);
/// A port set; `None` is any port.
type Ports = Option<BTreeSet<u16>>;

/// Port sets: `None` is any port.
fn union(a: Option<BTreeSet<u16>>, b: Option<BTreeSet<u16>>) -> Option<BTreeSet<u16>> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            a.extend(b);
            Some(a)
        }
        _ => None,
    }
}

/// The trie's entries for a list of rules. The trie lets only the longest
/// matching prefix decide, so each network also carries the ports of every
/// wider network that contains it: what the policy allows is exactly what
/// the trie allows.
pub fn egress_entries(rules: &[EgressRule]) -> Result<Vec<EgressEntry>, RulesError> {
    let mut nets: BTreeMap<Net, Ports> = BTreeMap::new();
    for rule in rules {
        let (addr, prefix) = mapped(rule);
        let ports = rule.port.map(|p| BTreeSet::from([p]));
        let key = (prefix, masked(addr, prefix));
        let merged = match nets.remove(&key) {
            Some(old) => union(old, ports),
            None => ports,
        };
        nets.insert(key, merged);
    }
    let list: Vec<(Net, Ports)> = nets.into_iter().collect();
    let mut out = Vec::with_capacity(list.len());
    for ((prefix, bits), ports) in &list {
        let me = (Ipv6Addr::from(*bits), *prefix);
        let mut all = ports.clone();
        for ((p, b), wider) in &list {
            if (*p, *b) != (*prefix, *bits) && contains((Ipv6Addr::from(*b), *p), me) {
                all = union(all, wider.clone());
            }
        }
        let ports: Vec<u16> = all.map(|s| s.into_iter().collect()).unwrap_or_default();
        if ports.len() > MAX_PORTS {
            return Err(RulesError::TooManyPorts {
                net: display_net(me),
                count: ports.len(),
            });
        }
        out.push(EgressEntry {
            addr: me.0,
            prefix: me.1,
            ports,
        });
    }
    Ok(out)
}

fn display_net((addr, prefix): (Ipv6Addr, u8)) -> String {
    match addr.to_ipv4_mapped() {
        Some(v4) if prefix >= 96 => format!("{v4}/{}", prefix - 96),
        _ => format!("{addr}/{prefix}"),
    }
}

/// A zone as the pair computation sees it.
#[derive(Debug, Clone)]
pub struct ZoneRef<'a> {
    pub index: u32,
    pub name: &'a str,
    pub allowed_zones: &'a [String],
}

/// The directed pairs (from, to) of zone indices: `from` lists `to`'s name
/// in its `allowed_zones`. A name that no zone has (yet) gives no pair; it
/// does once a zone of that name exists and the pairs are recomputed.
pub fn zone_pairs(zones: &[ZoneRef<'_>]) -> BTreeSet<(u32, u32)> {
    let by_name: BTreeMap<&str, u32> = zones.iter().map(|z| (z.name, z.index)).collect();
    let mut pairs = BTreeSet::new();
    for z in zones {
        for name in z.allowed_zones {
            if let Some(&to) = by_name.get(name.as_str()) {
                if to != z.index {
                    pairs.insert((z.index, to));
                }
            }
        }
    }
    pairs
}

/// Whether an address and port pass a zone's entries, the way the trie
/// decides (longest prefix, then its ports). Used by tests and by
/// `rauha zone verify` to explain a rule.
pub fn egress_allows(entries: &[EgressEntry], addr: IpAddr, port: u16) -> bool {
    let a = match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    entries
        .iter()
        .filter(|e| contains((e.addr, e.prefix), (a, 128)))
        .max_by_key(|e| e.prefix)
        .is_some_and(|e| e.ports.is_empty() || e.ports.contains(&port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<EgressRule> {
        list.iter()
            .map(|r| EgressRule::parse(r).expect("rule"))
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ipv4_rules_become_mapped_prefixes() {
        let e = egress_entries(&rules(&["10.99.0.0/24:8080"])).expect("entries");
        assert_eq!(
            e,
            vec![EgressEntry {
                addr: "::ffff:10.99.0.0".parse().expect("ip"),
                prefix: 120,
                ports: vec![8080],
            }]
        );
    }

    #[test]
    fn the_trie_allows_exactly_what_the_policy_allows() {
        let list = [
            "10.0.0.0/8:443",
            "10.1.0.0/16:80",
            "10.1.2.3",
            "192.168.1.0/24:53",
            "192.168.1.0/24:853",
            "[fd00::/8]:443",
        ];
        let parsed = rules(&list);
        let entries = egress_entries(&parsed).expect("entries");
        for (addr, port) in [
            ("10.1.2.4", 443),
            ("10.1.2.4", 80),
            ("10.1.2.4", 22),
            ("10.1.2.3", 22),
            ("10.2.0.1", 80),
            ("192.168.1.9", 53),
            ("192.168.1.9", 853),
            ("192.168.2.9", 53),
            ("fd12::1", 443),
            ("fd12::1", 80),
            ("fe80::1", 443),
            ("8.8.8.8", 443),
        ] {
            let policy = parsed.iter().any(|r| r.allows(ip(addr), port));
            assert_eq!(
                egress_allows(&entries, ip(addr), port),
                policy,
                "{addr}:{port}"
            );
        }
    }

    #[test]
    fn too_many_ports_on_one_network_is_an_error_with_the_fix() {
        let list: Vec<String> = (1..=9).map(|p| format!("10.0.0.0/8:{p}")).collect();
        let list: Vec<&str> = list.iter().map(String::as_str).collect();
        let e = egress_entries(&rules(&list)).expect_err("nine ports");
        assert_eq!(
            e,
            RulesError::TooManyPorts {
                net: "10.0.0.0/8".into(),
                count: 9
            }
        );
    }

    #[test]
    fn pairs_follow_allowed_zones_by_name_and_direction() {
        let a = vec!["b".to_string(), "ghost".to_string(), "a".to_string()];
        let b: Vec<String> = Vec::new();
        let zones = [
            ZoneRef {
                index: 1,
                name: "a",
                allowed_zones: &a,
            },
            ZoneRef {
                index: 2,
                name: "b",
                allowed_zones: &b,
            },
        ];
        assert_eq!(zone_pairs(&zones), BTreeSet::from([(1, 2)]));
    }

    #[test]
    fn a_policy_isolates_by_default() {
        let r = ZoneRules::from_policy(&Policy::default()).expect("rules");
        assert_eq!(r.flags, DEFAULT_FLAGS);
        assert!(r.egress.is_empty() && r.allowed_zones.is_empty());
    }
}
