//! The nftables ruleset of Rauha's own table (family `inet`, named after the
//! bridge), as nft's JSON API takes it: one document that deletes and
//! re-creates the whole table, applied by `nft` as one transaction, so the
//! kernel never holds half of it. Other tables are never named.
//!
//! What it says, zone by zone (see docs/network.md):
//! - forward: replies pass; a zone's new traffic goes through its own chain,
//!   which accepts the zones it may reach, drops the rest of the bridge's
//!   subnet, accepts `allowed_egress` and the addresses its allowed domains
//!   resolved to (sets with timeouts: the kernel forgets them at the TTL),
//!   and drops everything else; nothing new enters a zone except a
//!   published port.
//! - input: a zone reaches the host only at the gateway's DNS port.
//! - nat: masquerade out of the subnet; published ports DNATed, from
//!   outside (prerouting) and from the host itself (output).

use std::net::{IpAddr, Ipv4Addr};

use rauha_spec::egress::EgressRule;
use rauha_spec::netrules::{PortMapping, Proto};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::config::BridgeConfig;

/// What the ruleset needs to know of one bridged zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneNet {
    pub id: Uuid,
    pub name: String,
    pub addr: Ipv4Addr,
    pub allowed_zones: Vec<String>,
    pub egress: Vec<EgressRule>,
    pub publish: Vec<PortMapping>,
}

/// A domain grant in force: (address, ports or any, seconds left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainGrant {
    pub addr: Ipv4Addr,
    pub ports: Option<Vec<u16>>,
    pub seconds: u64,
}

/// The names of a zone's chain and domain sets: from its address, which is
/// unique on the bridge while the zone lives.
pub fn zone_chain(addr: Ipv4Addr) -> String {
    format!("z_{}", hex(addr))
}

pub fn any_port_set(addr: Ipv4Addr) -> String {
    format!("da_{}", hex(addr))
}

pub fn port_set(addr: Ipv4Addr) -> String {
    format!("dp_{}", hex(addr))
}

fn hex(addr: Ipv4Addr) -> String {
    format!("{:08x}", u32::from(addr))
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn is(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn not(left: Value, right: Value) -> Value {
    json!({"match": {"op": "!=", "left": left, "right": right}})
}

fn prefix(addr: IpAddr, len: u8) -> Value {
    json!({"prefix": {"addr": addr.to_string(), "len": len}})
}

fn accept() -> Value {
    json!({"accept": null})
}

fn drop() -> Value {
    json!({"drop": null})
}

fn tcp_or_udp() -> Value {
    is(meta("l4proto"), json!({"set": ["tcp", "udp"]}))
}

fn proto_name(p: Proto) -> &'static str {
    p.as_str()
}

fn timeout_elem(val: Value, seconds: u64) -> Value {
    json!({"elem": {"val": val, "timeout": seconds.max(1)}})
}

const ANY_TYPE: &[&str] = &["ipv4_addr"];
const PORT_TYPE: &[&str] = &["ipv4_addr", "inet_service"];

struct Doc<'a> {
    table: &'a str,
    items: Vec<Value>,
}

impl Doc<'_> {
    fn chain(&mut self, name: &str, base: Option<(&str, &str, i32)>) {
        let mut chain = json!({"family": "inet", "table": self.table, "name": name});
        if let Some((kind, hook, prio)) = base {
            chain["type"] = json!(kind);
            chain["hook"] = json!(hook);
            chain["prio"] = json!(prio);
            chain["policy"] = json!("accept");
        }
        self.items.push(json!({"add": {"chain": chain}}));
    }

    fn flush(&mut self, what: &str, name: &str) {
        self.items
            .push(json!({"flush": {what: {"family": "inet", "table": self.table, "name": name}}}));
    }

    /// A set named with its type (nft needs only the name; the typed schema
    /// that checks the document wants the type too).
    fn set_op(&mut self, op: &str, name: &str, kind: &[&str]) {
        let kind = if kind.len() == 1 {
            json!(kind[0])
        } else {
            json!(kind)
        };
        self.items.push(json!({op: {"set": {"family": "inet", "table": self.table, "name": name, "type": kind}}}));
    }

    fn delete(&mut self, what: &str, name: &str) {
        self.items
            .push(json!({"delete": {what: {"family": "inet", "table": self.table, "name": name}}}));
    }

    fn rule(&mut self, chain: &str, expr: Vec<Value>) {
        self.items.push(json!({"add": {"rule": {
            "family": "inet", "table": self.table, "chain": chain, "expr": expr
        }}}));
    }
}

/// The whole table for `zones`, with the domain grants in force for each
/// (`grants(zone)`). A zone in `allowed_zones` that does not exist (yet)
/// gives no rule; it gets one when it is created and the table rebuilt.
///
/// `previous`: the zones (by address) whose chains and sets the last
/// document this process applied made. `None` (rauhad's first apply)
/// replaces the whole table: deleted and made again. `Some` keeps the table
/// and its base chains (unhooking a base chain waits for the kernel's RCU
/// grace period: ~15 ms a change), flushes them and every zone chain, and
/// deletes the chains and sets of zones gone since: the same result, in
/// one transaction as well.
pub fn ruleset(
    bridge: &BridgeConfig,
    zones: &[ZoneNet],
    previous: Option<&[Ipv4Addr]>,
    grants: impl Fn(Uuid) -> Vec<DomainGrant>,
) -> Value {
    let table = bridge.table();
    let br = bridge.name.as_str();
    let subnet = prefix(IpAddr::V4(bridge.subnet.base), bridge.subnet.prefix);
    let gw = bridge.subnet.gateway().to_string();
    let t = json!({"family": "inet", "name": table});
    let mut doc = Doc {
        table: &table,
        items: vec![
            json!({"metainfo": {"json_schema_version": 1}}),
            json!({"add": {"table": t}}),
        ],
    };
    if previous.is_none() {
        // Add-then-delete makes the delete safe when there is no table yet.
        doc.items.push(json!({"delete": {"table": t}}));
        doc.items.push(json!({"add": {"table": t}}));
    }
    let base = [
        ("forward", "filter", "forward", 0),
        ("input", "filter", "input", 0),
        ("prerouting", "nat", "prerouting", -100),
        ("output", "nat", "output", -100),
        ("postrouting", "nat", "postrouting", 100),
    ];
    for (name, kind, hook, prio) in base {
        doc.chain(name, Some((kind, hook, prio)));
        if previous.is_some() {
            doc.flush("chain", name);
        }
    }
    for gone in previous
        .unwrap_or_default()
        .iter()
        .filter(|a| !zones.iter().any(|z| z.addr == **a))
    {
        let chain = zone_chain(*gone);
        doc.flush("chain", &chain);
        doc.delete("chain", &chain);
        doc.set_op("delete", &any_port_set(*gone), ANY_TYPE);
        doc.set_op("delete", &port_set(*gone), PORT_TYPE);
    }
    let incremental = previous.is_some();

    let established = is(
        json!({"ct": {"key": "state"}}),
        json!({"set": ["established", "related"]}),
    );
    doc.rule("forward", vec![established.clone(), accept()]);
    for z in zones {
        doc.chain(&zone_chain(z.addr), None);
        if incremental {
            doc.flush("chain", &zone_chain(z.addr));
        }
        doc.rule(
            "forward",
            vec![
                is(meta("iifname"), json!(br)),
                is(payload("ip", "saddr"), json!(z.addr.to_string())),
                json!({"jump": {"target": zone_chain(z.addr)}}),
            ],
        );
    }
    // Not a zone's address on the bridge: spoofed, or a zone being removed.
    doc.rule("forward", vec![is(meta("iifname"), json!(br)), drop()]);
    doc.rule(
        "forward",
        vec![
            is(meta("oifname"), json!(br)),
            is(json!({"ct": {"key": "status"}}), json!("dnat")),
            accept(),
        ],
    );
    doc.rule("forward", vec![is(meta("oifname"), json!(br)), drop()]);

    for z in zones {
        let chain = zone_chain(z.addr);
        for name in &z.allowed_zones {
            if let Some(peer) = zones.iter().find(|p| &p.name == name && p.id != z.id) {
                doc.rule(
                    &chain,
                    vec![
                        is(payload("ip", "daddr"), json!(peer.addr.to_string())),
                        accept(),
                    ],
                );
            }
        }
        doc.rule(
            &chain,
            vec![is(payload("ip", "daddr"), subnet.clone()), drop()],
        );
        for rule in &z.egress {
            let IpAddr::V4(_) = rule.addr else { continue };
            let mut expr = vec![is(payload("ip", "daddr"), prefix(rule.addr, rule.prefix))];
            if let Some(port) = rule.port {
                expr.push(tcp_or_udp());
                expr.push(is(payload("th", "dport"), json!(port)));
            }
            expr.push(accept());
            doc.rule(&chain, expr);
        }
        let (any, ports): (Vec<_>, Vec<_>) =
            grants(z.id).into_iter().partition(|g| g.ports.is_none());
        let any_set = any_port_set(z.addr);
        doc.items.push(json!({"add": {"set": {
            "family": "inet", "table": table, "name": any_set, "type": "ipv4_addr", "flags": ["timeout"]
        }}}));
        if incremental {
            doc.set_op("flush", &any_set, ANY_TYPE);
        }
        let port_set = port_set(z.addr);
        doc.items.push(json!({"add": {"set": {
            "family": "inet", "table": table, "name": port_set, "type": ["ipv4_addr", "inet_service"], "flags": ["timeout"]
        }}}));
        if incremental {
            doc.set_op("flush", &port_set, PORT_TYPE);
        }
        let elems: Vec<Value> = any
            .iter()
            .map(|g| timeout_elem(json!(g.addr.to_string()), g.seconds))
            .collect();
        if !elems.is_empty() {
            doc.items.push(json!({"add": {"element": {"family": "inet", "table": table, "name": any_set, "elem": elems}}}));
        }
        let elems: Vec<Value> = ports
            .iter()
            .flat_map(|g| {
                g.ports.iter().flatten().map(move |p| {
                    timeout_elem(json!({"concat": [g.addr.to_string(), p]}), g.seconds)
                })
            })
            .collect();
        if !elems.is_empty() {
            doc.items.push(json!({"add": {"element": {"family": "inet", "table": table, "name": port_set, "elem": elems}}}));
        }
        doc.rule(
            &chain,
            vec![
                is(payload("ip", "daddr"), json!(format!("@{any_set}"))),
                accept(),
            ],
        );
        doc.rule(
            &chain,
            vec![
                tcp_or_udp(),
                is(
                    json!({"concat": [payload("ip", "daddr"), payload("th", "dport")]}),
                    json!(format!("@{port_set}")),
                ),
                accept(),
            ],
        );
        doc.rule(&chain, vec![drop()]);
    }

    doc.rule(
        "input",
        vec![is(meta("iifname"), json!(br)), established, accept()],
    );
    for proto in ["udp", "tcp"] {
        doc.rule(
            "input",
            vec![
                is(meta("iifname"), json!(br)),
                is(payload("ip", "daddr"), json!(gw)),
                is(meta("l4proto"), json!(proto)),
                is(payload("th", "dport"), json!(53)),
                accept(),
            ],
        );
    }
    doc.rule("input", vec![is(meta("iifname"), json!(br)), drop()]);

    for z in zones {
        for p in &z.publish {
            let to =
                json!({"dnat": {"family": "ip", "addr": z.addr.to_string(), "port": p.zone_port}});
            let port = [
                is(meta("l4proto"), json!(proto_name(p.proto))),
                is(payload("th", "dport"), json!(p.host_port)),
            ];
            // Only traffic for this host: never a connection the host
            // makes to another machine's address.
            let local = is(
                json!({"fib": {"result": "type", "flags": ["daddr"]}}),
                json!("local"),
            );
            let mut expr = vec![local];
            if !p.host_ip.is_unspecified() {
                expr.push(is(payload("ip", "daddr"), json!(p.host_ip.to_string())));
            }
            expr.extend(port.iter().cloned());
            expr.push(to.clone());
            // From elsewhere (not for loopback: it never arrives from outside).
            if !p.host_ip.is_loopback() {
                doc.rule("prerouting", expr.clone());
            }
            // From the host itself.
            doc.rule("output", expr);
        }
    }
    doc.rule(
        "postrouting",
        vec![
            is(payload("ip", "saddr"), subnet.clone()),
            not(meta("oifname"), json!(br)),
            json!({"masquerade": null}),
        ],
    );
    // A published port reached at 127.0.0.1: the zone answers the gateway.
    doc.rule(
        "postrouting",
        vec![
            is(meta("oifname"), json!(br)),
            is(
                payload("ip", "saddr"),
                prefix(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
            ),
            json!({"masquerade": null}),
        ],
    );
    json!({"nftables": doc.items})
}

/// A zone's grants written into its sets as they are now: elements only,
/// no chain touched (a rule change waits for an RCU grace period, an
/// element does not). Each element is added, deleted and added again with
/// its timeout, in one transaction: adding an element the kernel still
/// holds (rauhad may forget a grant a moment before the kernel does) would
/// leave its old timeout, and deleting one it does not hold would fail.
pub fn grant_elements(bridge: &BridgeConfig, zone: Ipv4Addr, grants: &[DomainGrant]) -> Value {
    let table = bridge.table();
    let mut items = vec![json!({"metainfo": {"json_schema_version": 1}})];
    for g in grants {
        let (set, vals): (String, Vec<Value>) = match &g.ports {
            None => (any_port_set(zone), vec![json!(g.addr.to_string())]),
            Some(ports) => (
                port_set(zone),
                ports
                    .iter()
                    .map(|p| json!({"concat": [g.addr.to_string(), p]}))
                    .collect(),
            ),
        };
        let timed: Vec<Value> = vals
            .iter()
            .map(|v| timeout_elem(v.clone(), g.seconds))
            .collect();
        let add = json!({"add": {"element": {"family": "inet", "table": table, "name": set, "elem": timed}}});
        items.push(add.clone());
        items.push(json!({"delete": {"element": {"family": "inet", "table": table, "name": set, "elem": vals}}}));
        items.push(add);
    }
    json!({"nftables": items})
}

/// Removes the table (rauhad's `--bridge-cleanup`, tests' teardown).
pub fn delete_table(bridge: &BridgeConfig) -> Value {
    let t = json!({"family": "inet", "name": bridge.table()});
    json!({"nftables": [{"add": {"table": t}}, {"delete": {"table": t}}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, last: u8, allowed: &[&str], egress: &[&str], publish: &[&str]) -> ZoneNet {
        ZoneNet {
            id: Uuid::new_v4(),
            name: name.into(),
            addr: Ipv4Addr::new(10, 89, 0, last),
            allowed_zones: allowed.iter().map(|s| s.to_string()).collect(),
            egress: egress
                .iter()
                .map(|e| EgressRule::parse(e).unwrap())
                .collect(),
            publish: publish
                .iter()
                .map(|p| PortMapping::parse(p).unwrap())
                .collect(),
        }
    }

    fn rules_of(doc: &Value, chain: &str) -> Vec<String> {
        doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i.get("add").and_then(|a| a.get("rule")))
            .filter(|r| r["chain"] == chain)
            .map(|r| r["expr"].to_string())
            .collect()
    }

    #[test]
    fn the_document_is_nfts_schema_and_replaces_the_table_whole() {
        let bridge = BridgeConfig::new("rauha0", "10.89.0.0/16", 1500).unwrap();
        let zones = [
            zone("a", 2, &["b"], &["10.99.0.0/24:8080"], &["8080:80"]),
            zone("b", 3, &[], &[], &[]),
        ];
        let a = zones[0].id;
        let doc = ruleset(&bridge, &zones, None, |z| {
            if z == a {
                vec![DomainGrant {
                    addr: Ipv4Addr::new(10, 77, 0, 1),
                    ports: None,
                    seconds: 30,
                }]
            } else {
                vec![]
            }
        });
        // The typed schema of the nftables crate reads it back.
        let typed: nftables::schema::Nftables =
            serde_json::from_value(doc.clone()).expect("nft JSON schema");
        assert!(typed.objects.len() > 20);
        let items = doc["nftables"].as_array().unwrap();
        assert_eq!(
            items[1],
            json!({"add": {"table": {"family": "inet", "name": "rauha0"}}})
        );
        assert_eq!(
            items[2],
            json!({"delete": {"table": {"family": "inet", "name": "rauha0"}}})
        );
        for item in items.iter().skip(1) {
            let obj = item.as_object().unwrap().values().next().unwrap();
            let inner = obj.as_object().unwrap().values().next().unwrap();
            let table = inner.get("table").or_else(|| inner.get("name")).unwrap();
            assert!(
                table == "rauha0" || inner.get("table") == Some(&json!("rauha0")),
                "{item}"
            );
        }
        let za = rules_of(&doc, &zone_chain(zones[0].addr));
        assert!(
            za[0].contains("\"10.89.0.3\"") && za[0].contains("accept"),
            "a reaches b: {za:?}"
        );
        assert!(
            za[1].contains("\"len\":16") && za[1].contains("drop"),
            "then the rest of the bridge is dropped"
        );
        assert!(za[2].contains("\"10.99.0.0\"") && za[2].contains("8080"));
        assert!(za.last().unwrap() == "[{\"drop\":null}]");
        let zb = rules_of(&doc, &zone_chain(zones[1].addr));
        assert!(
            !zb.iter().any(|r| r.contains("\"10.89.0.2\"")),
            "b may not reach a: {zb:?}"
        );
        let elements = doc.to_string();
        assert!(elements.contains("\"timeout\":30,\"val\":\"10.77.0.1\""));
        let out = rules_of(&doc, "output");
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("127.0.0.1") && out[0].contains("\"port\":80"));
        assert!(
            rules_of(&doc, "prerouting").is_empty(),
            "loopback is not published to the outside"
        );
    }

    #[test]
    fn an_absent_zone_in_allowed_zones_opens_nothing() {
        let bridge = BridgeConfig::new("rtest", "10.123.0.0/24", 1500).unwrap();
        let zones = [zone("a", 2, &["ghost", "a"], &[], &["0.0.0.0:9000:90/udp"])];
        let doc = ruleset(&bridge, &zones, None, |_| vec![]);
        let za = rules_of(&doc, &zone_chain(zones[0].addr));
        assert!(za[0].contains("drop"), "{za:?}");
        let pre = rules_of(&doc, "prerouting");
        assert!(pre[0].contains("fib") && pre[0].contains("udp"), "{pre:?}");
        assert_eq!(
            delete_table(&bridge)["nftables"][1]["delete"]["table"]["name"],
            "rtest"
        );
    }
}
