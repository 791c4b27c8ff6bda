//! The bridge's name, subnet and MTU, and the checks made before rauhad
//! touches the host: a name the kernel takes, a subnet that overlaps no
//! route of the host.

use std::fmt;
use std::net::Ipv4Addr;

use rauha_spec::message::quote;

/// The default bridge and subnet (the seeds': 10.89.0.1 is the gateway).
pub const DEFAULT_BRIDGE: &str = "rauha0";
pub const DEFAULT_SUBNET: &str = "10.89.0.0/16";
pub const DEFAULT_MTU: u32 = 1500;

/// An IPv4 network, its address masked to the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Subnet {
        let prefix = prefix.min(32);
        Subnet {
            base: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    /// `10.89.0.0/16`; for a bridge the network must have room for a
    /// gateway and zones (a prefix of 8 to 29).
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let bad = |why: &str| {
            format!(
                "{} {why}; use an IPv4 network such as \"10.89.0.0/16\"",
                quote(text)
            )
        };
        let (addr, prefix) = text.split_once('/').ok_or_else(|| bad("has no /PREFIX"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("is not an IPv4 address"))?;
        let prefix: u8 = match prefix.parse() {
            Ok(p) if (8..=29).contains(&p) => p,
            _ => return Err(bad("has a prefix that is not 8-29")),
        };
        if u32::from(addr) & !mask(prefix) != 0 {
            return Err(bad(&format!(
                "has host bits set (the network is {})",
                Subnet::new(addr, prefix)
            )));
        }
        Ok(Subnet { base: addr, prefix })
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.base)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        u32::from(self.base) & mask(p) == u32::from(other.base) & mask(p)
    }

    /// The first host address: the bridge's own, the zones' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) | !mask(self.prefix))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

pub(crate) fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The bridge rauhad owns, and through its name the nftables table and
/// the names of its veths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    pub name: String,
    pub subnet: Subnet,
    pub mtu: u32,
}

impl BridgeConfig {
    pub fn new(name: &str, subnet: &str, mtu: u32) -> Result<BridgeConfig, String> {
        let ok = !name.is_empty()
            && name.len() <= 9
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && name.as_bytes()[0].is_ascii_lowercase();
        if !ok {
            return Err(format!(
                "--bridge {}: use 1-9 characters a-z, 0-9, '-' or '_', starting with a letter (its veths' names add up to 6)",
                quote(name)
            ));
        }
        let subnet = Subnet::parse(subnet).map_err(|e| format!("--bridge-subnet {e}"))?;
        if !(1280..=65535).contains(&mtu) {
            return Err(format!(
                "--bridge-mtu {mtu} is out of range; use 1280-65535"
            ));
        }
        Ok(BridgeConfig {
            name: name.to_string(),
            subnet,
            mtu,
        })
    }

    /// The nftables table (family inet) Rauha writes: named after the bridge,
    /// so that a test's bridge never touches a running rauhad's rules.
    pub fn table(&self) -> String {
        self.name.replace('-', "_")
    }

    /// The prefix of this bridge's veths: the bridge's name and a dot.
    pub fn veth_prefix(&self) -> String {
        format!("{}.", self.name)
    }

    /// A zone's host-side veth: the prefix and the zone's lease number in
    /// base 36 (unique while the lease is held, reused after it).
    pub fn veth_name(&self, addr: Ipv4Addr) -> String {
        let mut n = u32::from(addr) & !mask(self.subnet.prefix);
        let mut digits = Vec::new();
        while n > 0 {
            let d = (n % 36) as u8;
            digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
            n /= 36;
        }
        digits.reverse();
        format!(
            "{}{}",
            self.veth_prefix(),
            String::from_utf8(digits).unwrap_or_default()
        )
    }

    /// The host route, if any, that this bridge's subnet overlaps. The
    /// default route (0.0.0.0/0) does not count; the bridge's own route does
    /// not either (`own` is its device name).
    pub fn overlapping_route<'r>(&self, routes: &'r [HostRoute]) -> Option<&'r HostRoute> {
        routes
            .iter()
            .filter(|r| r.net.prefix > 0 && r.device != self.name)
            .find(|r| r.net.overlaps(&self.subnet))
    }
}

/// One IPv4 route of the host's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub net: Subnet,
    pub device: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_mask_and_overlap() {
        let s = Subnet::parse("10.89.0.0/16").unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 89, 0, 1));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 89, 255, 255));
        assert!(
            s.contains(Ipv4Addr::new(10, 89, 3, 4)) && !s.contains(Ipv4Addr::new(10, 90, 0, 1))
        );
        assert!(s.overlaps(&Subnet::parse("10.0.0.0/8").unwrap()));
        assert!(!s.overlaps(&Subnet::parse("192.0.2.0/24").unwrap()));
        for (bad, why) in [
            ("10.89.0.0", "has no /PREFIX"),
            (
                "10.89.0.1/16",
                "has host bits set (the network is 10.89.0.0/16)",
            ),
            ("10.89.0.0/31", "prefix that is not 8-29"),
            ("ten/16", "is not an IPv4 address"),
        ] {
            assert!(Subnet::parse(bad).unwrap_err().contains(why), "{bad}");
        }
    }

    #[test]
    fn a_subnet_over_a_host_route_is_found_but_the_default_route_is_not() {
        let b = BridgeConfig::new("rauha0", "192.0.2.0/25", 1500).unwrap();
        let routes = vec![
            HostRoute {
                net: Subnet::new(Ipv4Addr::UNSPECIFIED, 0),
                device: "eth0".into(),
            },
            HostRoute {
                net: Subnet::new(Ipv4Addr::new(192, 0, 2, 0), 24),
                device: "eth0".into(),
            },
        ];
        assert_eq!(b.overlapping_route(&routes).unwrap().device, "eth0");
        let ok = BridgeConfig::new("rauha0", "10.89.0.0/16", 1500).unwrap();
        assert!(ok.overlapping_route(&routes).is_none());
        let own = vec![HostRoute {
            net: ok.subnet,
            device: "rauha0".into(),
        }];
        assert!(ok.overlapping_route(&own).is_none());
    }

    #[test]
    fn names_fit_the_kernel() {
        let b = BridgeConfig::new("rauha0", "10.89.0.0/16", 1500).unwrap();
        assert_eq!(b.veth_name(Ipv4Addr::new(10, 89, 255, 254)), "rauha0.1eke");
        assert!(b.veth_name(Ipv4Addr::new(10, 89, 0, 2)).len() <= 15);
        assert!(BridgeConfig::new("Rauha", "10.89.0.0/16", 1500).is_err());
        assert!(BridgeConfig::new("longername", "10.89.0.0/16", 1500).is_err());
        assert_eq!(
            BridgeConfig::new("t-br", "10.89.0.0/16", 1500)
                .unwrap()
                .table(),
            "t_br"
        );
    }
}
