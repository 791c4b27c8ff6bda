//! Egress rules: `ADDR[/PREFIX][:PORT]` (IPv6 in brackets when a port is
//! given), as listed in a policy's `network.allowed_egress`.

use std::fmt;
use std::net::IpAddr;

/// One destination a zone may connect to: a network and, optionally, one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressRule {
    pub addr: IpAddr,
    /// Prefix length in bits of `addr`'s own family (0-32 or 0-128).
    pub prefix: u8,
    /// `None`: any port.
    pub port: Option<u16>,
}

impl EgressRule {
    /// Parses `10.0.0.0/8`, `10.0.0.1:443`, `0.0.0.0/0:443`, `::1`,
    /// `[fd00::/8]:443`. The error says what is wrong and shows the form.
    pub fn parse(text: &str) -> Result<EgressRule, String> {
        let bad = |why: &str| {
            format!(
                "{} {why}; use ADDR[/PREFIX][:PORT], e.g. \"10.0.0.0/8:443\" or \"[fd00::/8]:443\"",
                crate::message::quote(text)
            )
        };
        let (net, port) = if let Some(rest) = text.strip_prefix('[') {
            let (net, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("has no closing ']'"))?;
            match after {
                "" => (net, None),
                _ => (
                    net,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("has text after ']' that is not :PORT"))?,
                    ),
                ),
            }
        } else if text.matches(':').count() == 1 {
            let (net, port) = text.split_once(':').expect("one colon");
            (net, Some(port))
        } else {
            (text, None)
        };
        let (addr, prefix) = match net.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (net, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(bad(&format!("has a prefix that is not 0-{max}"))),
            },
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => return Err(bad("has a port that is not 1-65535")),
            },
        };
        Ok(EgressRule { addr, prefix, port })
    }

    /// Whether `addr:port` is allowed by this rule.
    pub fn allows(&self, addr: IpAddr, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}/{}]:{p}", self.prefix),
            (a, Some(p)) => write!(f, "{a}/{}:{p}", self.prefix),
            (a, None) => write!(f, "{a}/{}", self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let r = EgressRule::parse("0.0.0.0/0:443").expect("parse");
        assert_eq!((r.prefix, r.port), (0, Some(443)));
        let r = EgressRule::parse("10.1.2.3").expect("parse");
        assert_eq!((r.prefix, r.port), (32, None));
        let r = EgressRule::parse("10.1.2.3:80").expect("parse");
        assert_eq!((r.prefix, r.port), (32, Some(80)));
        let r = EgressRule::parse("[fd00::/8]:443").expect("parse");
        assert_eq!((r.prefix, r.port), (8, Some(443)));
        let r = EgressRule::parse("::1").expect("parse");
        assert_eq!((r.prefix, r.port), (128, None));
        assert_eq!(r.to_string(), "::1/128");
    }

    #[test]
    fn errors_name_the_problem_and_the_form() {
        for (text, why) in [
            ("10.0.0.0/33", "prefix that is not 0-32"),
            ("example.com:443", "not an IP address"),
            ("10.0.0.1:0", "port that is not 1-65535"),
            ("[::1", "no closing ']'"),
        ] {
            let e = EgressRule::parse(text).expect_err(text);
            assert!(e.contains(why) && e.contains("ADDR[/PREFIX][:PORT]"), "{e}");
        }
    }

    #[test]
    fn matches_networks_and_ports() {
        let r = EgressRule::parse("10.99.0.0/24:8080").expect("parse");
        assert!(r.allows("10.99.0.7".parse().expect("ip"), 8080));
        assert!(!r.allows("10.99.1.7".parse().expect("ip"), 8080));
        assert!(!r.allows("10.99.0.7".parse().expect("ip"), 80));
        let any = EgressRule::parse("0.0.0.0/0").expect("parse");
        assert!(any.allows("1.2.3.4".parse().expect("ip"), 1));
        assert!(!any.allows("::1".parse().expect("ip"), 1));
    }
}
