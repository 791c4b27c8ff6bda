//! The bridged network's policy fields that are not addresses: egress by
//! domain name (`network.allowed_egress_domains`) and published ports
//! (`network.publish`, `rauha run --publish`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use crate::message::quote;

/// A domain a zone may resolve and then reach: `pypi.org`, every name under
/// a domain (`*.pythonhosted.org`, which does not match the domain itself),
/// optionally on one port (`pypi.org:443`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRule {
    /// Lower case, no trailing dot, without the `*.`.
    pub domain: String,
    /// `*.DOMAIN`: names under `domain`, not `domain` itself.
    pub wildcard: bool,
    /// `None`: any port.
    pub port: Option<u16>,
}

impl DomainRule {
    /// Parses `NAME[:PORT]` or `*.NAME[:PORT]`; the error says what is wrong
    /// and shows the form.
    pub fn parse(text: &str) -> Result<DomainRule, String> {
        let bad = |why: &str| {
            format!(
                "{} {why}; use NAME[:PORT] or *.NAME[:PORT], e.g. \"pypi.org:443\" or \"*.pythonhosted.org\"",
                quote(text)
            )
        };
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) => match port.parse::<u16>() {
                Ok(p) if p > 0 => (name, Some(p)),
                _ => return Err(bad("has a port that is not 1-65535")),
            },
            None => (text, None),
        };
        let (wildcard, domain) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        if domain.contains('*') {
            return Err(bad("has a '*' that is not the whole first label"));
        }
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if domain.is_empty() || domain.len() > 253 {
            return Err(bad("is not a domain name"));
        }
        for label in domain.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(bad(&format!(
                    "has the label {} that is not a DNS label",
                    quote(label)
                )));
            }
        }
        if wildcard && !domain.contains('.') {
            return Err(bad("would admit every name of a top-level domain"));
        }
        Ok(DomainRule {
            domain: domain.to_ascii_lowercase(),
            wildcard,
            port,
        })
    }

    /// Whether `name` (any case, trailing dot or not) is admitted by this rule.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if self.wildcard {
            name.len() > self.domain.len() + 1
                && name.ends_with(&self.domain)
                && name.as_bytes()[name.len() - self.domain.len() - 1] == b'.'
        } else {
            name == self.domain
        }
    }
}

impl fmt::Display for DomainRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.domain)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A zone port reachable on the host: `[HOST_IP:]HOST_PORT:ZONE_PORT[/tcp|udp]`.
/// Without a host address the port is published on 127.0.0.1 only (docker
/// publishes on every address, 0.0.0.0, unless told otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub zone_port: u16,
    pub proto: Proto,
}

impl PortMapping {
    pub fn parse(text: &str) -> Result<PortMapping, String> {
        let bad = |why: &str| {
            format!(
                "{} {why}; use [HOST_IP:]HOST_PORT:ZONE_PORT[/tcp|/udp], e.g. \"8080:80\" or \"0.0.0.0:8443:443/tcp\"",
                quote(text)
            )
        };
        let (ports, proto) = match text.rsplit_once('/') {
            Some((p, "tcp")) => (p, Proto::Tcp),
            Some((p, "udp")) => (p, Proto::Udp),
            Some(_) => return Err(bad("has a protocol that is not tcp or udp")),
            None => (text, Proto::Tcp),
        };
        let (host_ip, rest) = if let Some(rest) = ports.strip_prefix('[') {
            let (ip, rest) = rest
                .split_once("]:")
                .ok_or_else(|| bad("has no \"]:\" after its IPv6 address"))?;
            (
                ip.parse::<IpAddr>()
                    .map_err(|_| bad("is not an IP address"))?,
                rest,
            )
        } else {
            match ports.matches(':').count() {
                1 => (IpAddr::V4(Ipv4Addr::LOCALHOST), ports),
                2 => {
                    let (ip, rest) = ports.split_once(':').expect("two colons");
                    (
                        ip.parse::<IpAddr>()
                            .map_err(|_| bad("is not an IP address"))?,
                        rest,
                    )
                }
                _ => return Err(bad("is not HOST_PORT:ZONE_PORT")),
            }
        };
        let (host, zone) = rest
            .split_once(':')
            .ok_or_else(|| bad("is not HOST_PORT:ZONE_PORT"))?;
        let port = |p: &str| match p.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(bad(&format!(
                "has the port {} that is not 1-65535",
                quote(p)
            ))),
        };
        if host_ip.is_ipv6() {
            return Err(bad("publishes on IPv6, which zones do not have yet"));
        }
        Ok(PortMapping {
            host_ip,
            host_port: port(host)?,
            zone_port: port(zone)?,
            proto,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}/{}",
            self.host_ip,
            self.host_port,
            self.zone_port,
            self.proto.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_match_exactly_or_below_a_wildcard() {
        let exact = DomainRule::parse("PyPI.org.").unwrap();
        assert!(exact.matches("pypi.org") && exact.matches("PYPI.ORG."));
        assert!(!exact.matches("evil-pypi.org") && !exact.matches("a.pypi.org"));
        let wild = DomainRule::parse("*.pythonhosted.org:443").unwrap();
        assert_eq!(wild.port, Some(443));
        assert!(wild.matches("files.pythonhosted.org") && wild.matches("a.b.pythonhosted.org"));
        assert!(!wild.matches("pythonhosted.org") && !wild.matches("xpythonhosted.org"));
        assert_eq!(wild.to_string(), "*.pythonhosted.org:443");
    }

    #[test]
    fn bad_domains_say_what_is_wrong() {
        for (text, why) in [
            ("py*.org", "has a '*' that is not the whole first label"),
            ("*.*.org", "has a '*' that is not the whole first label"),
            ("*.org", "would admit every name of a top-level domain"),
            ("pypi.org:0", "has a port that is not 1-65535"),
            ("a..b", "has the label \"\" that is not a DNS label"),
            ("a b.org", "has the label \"a b\" that is not a DNS label"),
            ("", "is not a domain name"),
        ] {
            let e = DomainRule::parse(text).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
            assert!(e.contains("use NAME[:PORT]"), "{e}");
        }
    }

    #[test]
    fn ports_publish_on_loopback_unless_an_address_is_given() {
        let p = PortMapping::parse("8080:80").unwrap();
        assert_eq!(p.host_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!((p.host_port, p.zone_port, p.proto), (8080, 80, Proto::Tcp));
        let p = PortMapping::parse("0.0.0.0:5353:53/udp").unwrap();
        assert_eq!(p.to_string(), "0.0.0.0:5353:53/udp");
        for bad in [
            "80",
            "a:80",
            "1:2:3:4",
            "8080:80/sctp",
            "8080:0",
            "[::1]:80:80",
            "x.y:1:2",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
    }
}
