//! Egress by domain: which addresses each zone got from an allowed name,
//! until when, and on which ports. One zone's grants are its own: another
//! zone that connects to the same address was not admitted by them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use uuid::Uuid;

/// The shortest and longest time an answer admits its addresses for,
/// whatever its TTL says (a TTL of 0 would admit nothing usable).
pub const MIN_TTL_MS: u64 = 1_000;
pub const MAX_TTL_MS: u64 = 24 * 3600 * 1000;

/// One address a zone may reach, from an answer for `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// On the monotonic clock, in milliseconds.
    pub until_ms: u64,
    pub name: String,
    /// `None`: any port.
    pub ports: Option<BTreeSet<u16>>,
}

impl Grant {
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.until_ms.saturating_sub(now_ms)
    }
}

#[derive(Debug, Default)]
pub struct Admitted {
    zones: BTreeMap<Uuid, BTreeMap<IpAddr, Grant>>,
    /// Names of expired grants, so that a later denial can say which name
    /// the address came from (and that it expired): at most RECENT_MAX.
    expired: BTreeMap<(Uuid, IpAddr), String>,
}

/// Expired grants remembered for naming denials.
const RECENT_MAX: usize = 4096;

/// What a zone knows of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known<'a> {
    Admitted(&'a str),
    Expired(&'a str),
}

/// What an admission changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new address for the zone.
    New,
    /// Held already; now until later, or on more ports.
    Extended,
    /// Held already for as long and on these ports.
    Same,
    /// Not admitted: the zone holds [`MAX_GRANTS_PER_ZONE`] addresses.
    Full,
}

/// Addresses one zone may hold by name at once: a workload that resolves
/// names without end under a wildcard fills no more (each is a set element
/// and a BPF map entry).
pub const MAX_GRANTS_PER_ZONE: usize = 1024;

impl Admitted {
    /// Admits `addr` for `zone` for `ttl_s` (clamped), on `port` (`None`:
    /// any port). An address held on any port stays so.
    pub fn admit(
        &mut self,
        zone: Uuid,
        addr: IpAddr,
        name: &str,
        ttl_s: u32,
        port: Option<u16>,
        now_ms: u64,
    ) -> Change {
        let until_ms = now_ms + (u64::from(ttl_s) * 1000).clamp(MIN_TTL_MS, MAX_TTL_MS);
        let ports = port.map(|p| BTreeSet::from([p]));
        let grants = self.zones.entry(zone).or_default();
        let full = grants.len() >= MAX_GRANTS_PER_ZONE;
        match grants.get_mut(&addr) {
            Some(g) if g.until_ms > now_ms => {
                let mut changed = false;
                if until_ms > g.until_ms {
                    g.until_ms = until_ms;
                    g.name = name.to_string();
                    changed = true;
                }
                match (&mut g.ports, ports) {
                    (Some(_), None) => {
                        g.ports = None;
                        changed = true;
                    }
                    (Some(have), Some(p)) if !have.is_superset(&p) => {
                        have.extend(p);
                        changed = true;
                    }
                    _ => {}
                }
                if changed {
                    Change::Extended
                } else {
                    Change::Same
                }
            }
            None if full => Change::Full,
            // New, or held until a moment ago.
            _ => {
                grants.insert(
                    addr,
                    Grant {
                        until_ms,
                        name: name.to_string(),
                        ports,
                    },
                );
                Change::New
            }
        }
    }

    /// Drops what expired; returns the (zone, address) pairs dropped.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(Uuid, IpAddr)> {
        let mut gone = Vec::new();
        for (zone, grants) in &mut self.zones {
            grants.retain(|addr, g| {
                let keep = g.until_ms > now_ms;
                if !keep {
                    gone.push((*zone, *addr, g.name.clone()));
                }
                keep
            });
        }
        self.zones.retain(|_, g| !g.is_empty());
        for (zone, addr, name) in &gone {
            if self.expired.len() >= RECENT_MAX {
                self.expired.pop_first();
            }
            self.expired.insert((*zone, *addr), name.clone());
        }
        gone.into_iter().map(|(z, a, _)| (z, a)).collect()
    }

    /// The name `addr` came from for `zone`: admitted now, or expired.
    pub fn known(&self, zone: Uuid, addr: IpAddr, now_ms: u64) -> Option<Known<'_>> {
        self.name_of(zone, addr, now_ms)
            .map(Known::Admitted)
            .or_else(|| {
                self.expired
                    .get(&(zone, addr))
                    .map(|n| Known::Expired(n.as_str()))
            })
    }

    /// The zone's live grants.
    pub fn of(&self, zone: Uuid, now_ms: u64) -> impl Iterator<Item = (&IpAddr, &Grant)> {
        self.zones
            .get(&zone)
            .into_iter()
            .flat_map(|g| g.iter())
            .filter(move |(_, g)| g.until_ms > now_ms)
    }

    /// The name `zone` reached `addr` by, while admitted.
    pub fn name_of(&self, zone: Uuid, addr: IpAddr, now_ms: u64) -> Option<&str> {
        self.of(zone, now_ms)
            .find(|(a, _)| **a == addr)
            .map(|(_, g)| g.name.as_str())
    }

    pub fn forget(&mut self, zone: Uuid) {
        self.zones.remove(&zone);
        self.expired.retain(|(z, _), _| *z != zone);
    }

    /// The earliest expiry, to wake up for.
    pub fn next_expiry(&self) -> Option<u64> {
        self.zones
            .values()
            .flat_map(|g| g.values())
            .map(|g| g.until_ms)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, n))
    }

    #[test]
    fn grants_belong_to_one_zone_and_end_with_their_ttl() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut adm = Admitted::default();
        assert_eq!(
            adm.admit(a, ip(1), "allowed.test", 5, None, 1000),
            Change::New
        );
        assert_eq!(adm.name_of(a, ip(1), 2000), Some("allowed.test"));
        assert_eq!(
            adm.name_of(b, ip(1), 2000),
            None,
            "another zone's answer admits nothing for b"
        );
        assert_eq!(
            adm.admit(a, ip(1), "allowed.test", 5, None, 2000),
            Change::Extended
        );
        assert_eq!(
            adm.admit(a, ip(1), "allowed.test", 1, None, 2000),
            Change::Same
        );
        assert_eq!(adm.next_expiry(), Some(7000));
        assert!(adm.expire(6999).is_empty());
        assert_eq!(adm.expire(7000), vec![(a, ip(1))]);
        assert_eq!(adm.name_of(a, ip(1), 7000), None);
        assert_eq!(
            adm.known(a, ip(1), 7000),
            Some(Known::Expired("allowed.test"))
        );
        assert_eq!(adm.known(b, ip(1), 7000), None);
        assert_eq!(adm.next_expiry(), None);
    }

    #[test]
    fn a_zero_ttl_still_admits_for_a_moment_and_ports_widen() {
        let z = Uuid::new_v4();
        let mut adm = Admitted::default();
        adm.admit(z, ip(2), "p.test", 0, Some(443), 0);
        assert_eq!(adm.of(z, 0).next().unwrap().1.until_ms, MIN_TTL_MS);
        assert_eq!(
            adm.admit(z, ip(2), "p.test", 0, Some(80), 10),
            Change::Extended
        );
        assert_eq!(
            adm.of(z, 10).next().unwrap().1.ports,
            Some(BTreeSet::from([80, 443]))
        );
        assert_eq!(adm.admit(z, ip(2), "p.test", 0, None, 10), Change::Extended);
        assert_eq!(
            adm.admit(z, ip(2), "p.test", 0, Some(22), 10),
            Change::Same,
            "any port holds 22"
        );
        adm.forget(z);
        assert_eq!(adm.of(z, 10).count(), 0);
    }

    #[test]
    fn a_zone_holds_a_bounded_number_of_addresses() {
        let mut a = Admitted::default();
        let z = Uuid::new_v4();
        for i in 0..MAX_GRANTS_PER_ZONE as u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(a.admit(z, addr, "n.test", 60, None, 0), Change::New);
        }
        let more = IpAddr::V4(std::net::Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(a.admit(z, more, "n.test", 60, None, 0), Change::Full);
        // Held ones are still extended; another zone has its own room.
        let first = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000));
        assert_eq!(a.admit(z, first, "n.test", 120, None, 0), Change::Extended);
        assert_eq!(
            a.admit(Uuid::new_v4(), more, "n.test", 60, None, 0),
            Change::New
        );
    }
}
