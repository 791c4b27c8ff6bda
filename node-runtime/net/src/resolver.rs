//! The zones' resolver, on the bridge's gateway address, port 53 (UDP and
//! TCP; upstream over UDP, and TCP when an answer does not fit).
//!
//! A zone resolves only what its policy names: `NAME.rauha` for a zone in
//! its `allowed_zones`, and names matching its `allowed_egress_domains`,
//! forwarded to the upstream resolvers. The addresses of such an answer are
//! admitted for that zone alone, for the answer's TTL; authority and
//! additional records are dropped. Every other name is REFUSED. Queries
//! from an address that is no zone's are ignored.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use uuid::Uuid;

use crate::dns::{self, Data};
use crate::network::Network;

/// The suffix under which zones find each other.
pub const ZONE_SUFFIX: &str = "rauha";
/// TTL of the answers rauhad gives itself.
const OWN_TTL: u32 = 5;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries answered at once (UDP); more are dropped, as a busy resolver
/// does, and the zone's resolver library asks again.
const MAX_IN_FLIGHT: usize = 256;
/// TCP connections served at once; more are closed on accept.
const MAX_TCP: usize = 64;

/// Told when a zone's grants changed (to update the other layers).
pub type OnAdmit = Arc<dyn Fn(Uuid) + Send + Sync>;
/// Told when a zone asked for a name its policy does not allow.
pub type OnRefuse = Arc<dyn Fn(Uuid, &str) + Send + Sync>;

/// The upstream resolvers in a `resolv.conf` (port 53).
pub fn upstreams_of(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|a| SocketAddr::new(a, 53))
        .collect()
}

/// The `resolv.conf` a bridged zone gets.
pub fn zone_resolv_conf(gateway: Ipv4Addr) -> String {
    format!("# written by rauhad: this zone resolves through rauhad only\nnameserver {gateway}\noptions ndots:0 attempts:2 timeout:2\n")
}

/// A socket bound to `addr` even before the address exists on any
/// interface (IP_FREEBIND): the resolver starts with the first bridged zone,
/// and a restarted rauhad binds before it rebuilt the bridge.
fn bind_freebind(addr: SocketAddr, kind: libc::c_int) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    let SocketAddr::V4(v4) = addr else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: a new socket we own (closed on error by OwnedFd); setsockopt
    // and bind with valid pointers and sizes.
    unsafe {
        let fd = std::os::fd::OwnedFd::from_raw_fd(check(libc::socket(
            libc::AF_INET,
            kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        ))?);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let one: libc::c_int = 1;
        check(libc::setsockopt(
            raw,
            libc::SOL_IP,
            libc::IP_FREEBIND,
            (&one as *const libc::c_int).cast(),
            4,
        ))?;
        check(libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            4,
        ))?;
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        check(libc::bind(
            raw,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ))?;
        if kind == libc::SOCK_STREAM {
            check(libc::listen(raw, 64))?;
        }
        Ok(fd)
    }
}

/// The resolver's UDP socket and TCP listener on `addr`.
pub fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, tokio::net::TcpListener)> {
    let udp = UdpSocket::from_std(std::net::UdpSocket::from(bind_freebind(
        addr,
        libc::SOCK_DGRAM,
    )?))?;
    let tcp = tokio::net::TcpListener::from_std(std::net::TcpListener::from(bind_freebind(
        addr,
        libc::SOCK_STREAM,
    )?))?;
    Ok((udp, tcp))
}

pub struct Resolver {
    pub net: Arc<Network>,
    pub upstreams: Vec<SocketAddr>,
    pub on_admit: OnAdmit,
    pub on_refuse: OnRefuse,
}

impl Resolver {
    /// Serves until the socket fails.
    pub async fn serve(self: Arc<Self>, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = match socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "the zones' resolver stopped");
                    return;
                }
            };
            let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                continue;
            };
            let query = buf[..n].to_vec();
            let (me, socket) = (Arc::clone(&self), Arc::clone(&socket));
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(reply) = me.answer(&query, from).await {
                    let _ = socket.send_to(&dns::fit_udp(reply), from).await;
                }
            });
        }
    }

    /// Serves DNS over TCP (a client's retry after a truncated answer):
    /// each message after its two-byte length, as RFC 1035 frames them.
    pub async fn serve_tcp(self: Arc<Self>, listener: tokio::net::TcpListener) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let open = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
        loop {
            let (mut conn, from) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "the zones' resolver (TCP) cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                continue;
            };
            let me = Arc::clone(&self);
            tokio::spawn(async move {
                let _permit = permit;
                // A few queries per connection, each within the timeout.
                for _ in 0..16 {
                    let read = tokio::time::timeout(UPSTREAM_TIMEOUT * 2, async {
                        let len = conn.read_u16().await.ok()? as usize;
                        let mut query = vec![0u8; len];
                        conn.read_exact(&mut query).await.ok()?;
                        Some(query)
                    })
                    .await;
                    let Ok(Some(query)) = read else { return };
                    let Some(reply) = me.answer(&query, from).await else {
                        return;
                    };
                    let Ok(len) = u16::try_from(reply.len()) else {
                        return;
                    };
                    if conn.write_u16(len).await.is_err() || conn.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    /// The reply to one query from `from`, or `None` to stay silent.
    pub async fn answer(&self, query: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        let IpAddr::V4(src) = from.ip() else {
            return None;
        };
        let zone = self.net.zone_at(src)?;
        let q = dns::parse_query(query).ok()?;
        if let Some(peer) = q
            .name
            .strip_suffix(ZONE_SUFFIX)
            .and_then(|n| n.strip_suffix('.'))
        {
            return Some(match self.net.peer_for(&zone, peer) {
                Some(addr) if q.qtype == dns::TYPE_A => {
                    dns::reply_addrs(query, &q, &[IpAddr::V4(addr)], OWN_TTL)
                }
                Some(_) => dns::reply(query, &q, dns::RCODE_NOERROR),
                None => dns::reply(query, &q, dns::RCODE_NXDOMAIN),
            });
        }
        if !zone.domains.iter().any(|r| r.matches(&q.name)) {
            tracing::debug!(zone = %zone.net.name, name = %q.name, "refused a name not in the zone's allowed_egress_domains");
            (self.on_refuse)(zone.net.id, &q.name);
            return Some(dns::reply(query, &q, dns::RCODE_REFUSED));
        }
        if q.qtype != dns::TYPE_A && q.qtype != dns::TYPE_AAAA {
            return Some(dns::reply(query, &q, dns::RCODE_NOERROR));
        }
        let Some((raw, answers)) = forward(&self.upstreams, &q).await else {
            return Some(dns::reply(query, &q, dns::RCODE_SERVFAIL));
        };
        let addrs: Vec<(IpAddr, u32)> = answers
            .records
            .iter()
            .filter_map(|r| match r.data {
                Data::Addr(a) => Some((a, r.ttl)),
                _ => None,
            })
            .collect();
        // nft and the BPF maps are written by blocking calls: off the
        // runtime's workers.
        let (net, on_admit, id, name) = (
            Arc::clone(&self.net),
            Arc::clone(&self.on_admit),
            zone.net.id,
            q.name.clone(),
        );
        let admitted = tokio::task::spawn_blocking(move || {
            let admitted = net.admit(id, &name, &addrs);
            if let Ok(true) = admitted {
                on_admit(id);
            }
            admitted
        })
        .await
        .unwrap_or_else(|e| {
            Err(crate::NetError::Config(format!(
                "the admission failed: {e}"
            )))
        });
        match admitted {
            Ok(_) => {}
            Err(e) => {
                tracing::error!(zone = %zone.net.name, error = %e, "cannot admit an answer's addresses");
                return Some(dns::reply(query, &q, dns::RCODE_SERVFAIL));
            }
        }
        let mut reply = dns::answers_only(&raw, &answers, q.id);
        // The zone's question as it asked it (its letters' case, which
        // some resolvers check), in place of rauhad's lower-case one: the
        // same name, so the same length and offsets.
        if answers.question.end == q.end && reply.len() >= q.end {
            reply[12..q.end].copy_from_slice(&query[12..q.end]);
        }
        Some(reply)
    }
}

/// Asks the upstreams in turn, from a fresh socket and with a fresh id;
/// an answer too large for UDP (TC) is asked again of the same upstream
/// over TCP.
pub(crate) async fn forward(
    upstreams: &[SocketAddr],
    q: &dns::Question,
) -> Option<(Vec<u8>, dns::Answers)> {
    for upstream in upstreams {
        let id: u16 = rand_id();
        // A query of rauhad's own, from the question alone: the zone's
        // header flags (RD clear reads the upstream's cache), EDNS options
        // and trailing bytes stay with the zone.
        let ask = dns::query(id, &q.name, q.qtype);
        match ask_udp(*upstream, &ask, id, q).await {
            Some(Asked::Answer(raw, a)) => return Some((raw, a)),
            Some(Asked::Truncated) => {
                if let Some(answer) = ask_tcp(*upstream, &ask, id, q).await {
                    return Some(answer);
                }
                tracing::warn!(%upstream, name = %q.name, "no answer over TCP from the upstream resolver (its UDP answer was truncated)");
            }
            None => {
                tracing::warn!(%upstream, name = %q.name, "no answer from the upstream resolver")
            }
        }
    }
    None
}

enum Asked {
    Answer(Vec<u8>, dns::Answers),
    /// The upstream's UDP answer had TC set: ask over TCP.
    Truncated,
}

/// The upstream's answer to `q` (the message `ask` with id `id`).
fn matches(a: &dns::Answers, id: u16, q: &dns::Question) -> bool {
    a.question.id == id && a.question.name == q.name && a.question.qtype == q.qtype
}

async fn ask_udp(upstream: SocketAddr, ask: &[u8], id: u16, q: &dns::Question) -> Option<Asked> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = UdpSocket::bind(bind).await.ok()?;
    sock.send_to(ask, upstream).await.ok()?;
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        loop {
            let (n, from) = sock.recv_from(&mut buf).await.ok()?;
            if from != upstream {
                continue;
            }
            let raw = buf[..n].to_vec();
            // A truncated answer may be cut anywhere: its id is enough.
            if raw.get(..2) == Some(&id.to_be_bytes()[..]) && dns::is_truncated(&raw) {
                return Some(Asked::Truncated);
            }
            match dns::parse_response(&raw) {
                Ok(a) if matches(&a, id, q) => return Some(Asked::Answer(raw, a)),
                _ => continue,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

async fn ask_tcp(
    upstream: SocketAddr,
    ask: &[u8],
    id: u16,
    q: &dns::Question,
) -> Option<(Vec<u8>, dns::Answers)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        let mut conn = tokio::net::TcpStream::connect(upstream).await.ok()?;
        let mut framed = u16::try_from(ask.len()).ok()?.to_be_bytes().to_vec();
        framed.extend_from_slice(ask);
        conn.write_all(&framed).await.ok()?;
        let len = conn.read_u16().await.ok()? as usize;
        let mut raw = vec![0u8; len];
        conn.read_exact(&mut raw).await.ok()?;
        let a = dns::parse_response(&raw).ok()?;
        matches(&a, id, q).then_some((raw, a))
    })
    .await
    .ok()
    .flatten()
}

fn rand_id() -> u16 {
    let b = Uuid::new_v4();
    u16::from_be_bytes([b.as_bytes()[0], b.as_bytes()[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_resolv_conf() {
        let u =
            upstreams_of("# x\nnameserver 10.0.0.53\nnameserver ::1\nsearch a\nnameserver junk\n");
        assert_eq!(
            u,
            vec!["10.0.0.53:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
        assert!(zone_resolv_conf(Ipv4Addr::new(10, 89, 0, 1)).contains("nameserver 10.89.0.1\n"));
    }

    /// An upstream on 127.0.0.1 whose UDP answer is truncated (TC, no
    /// records) and whose TCP answer holds `n` addresses; its address.
    async fn big_upstream(n: u8) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let at = udp.local_addr().unwrap();
            if let Ok(tcp) = tokio::net::TcpListener::bind(at).await {
                break (udp, tcp);
            }
        };
        let at = udp.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((len, from)) = udp.recv_from(&mut buf).await {
                let q = dns::parse_query(&buf[..len]).unwrap();
                let mut reply = dns::reply(&buf[..len], &q, dns::RCODE_NOERROR);
                reply[2] |= 0x02;
                let _ = udp.send_to(&reply, from).await;
            }
        });
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = tcp.accept().await {
                let len = conn.read_u16().await.unwrap() as usize;
                let mut query = vec![0u8; len];
                conn.read_exact(&mut query).await.unwrap();
                let q = dns::parse_query(&query).unwrap();
                let addrs: Vec<IpAddr> =
                    (1..=n).map(|i| Ipv4Addr::new(10, 9, 9, i).into()).collect();
                let reply = dns::reply_addrs(&query, &q, &addrs, 60);
                conn.write_u16(reply.len() as u16).await.unwrap();
                conn.write_all(&reply).await.unwrap();
            }
        });
        at
    }

    #[tokio::test]
    async fn an_answer_too_large_for_udp_is_asked_again_over_tcp() {
        let upstream = big_upstream(60).await;
        let query = dns::query(7, "big.test", dns::TYPE_A);
        let q = dns::parse_query(&query).unwrap();
        let (raw, answers) = forward(&[upstream], &q).await.expect("an answer");
        assert_eq!(answers.records.len(), 60);
        assert!(!dns::is_truncated(&raw));
        // Over UDP the zone gets TC and asks rauhad over TCP.
        let reply = dns::answers_only(&raw, &answers, 7);
        assert!(reply.len() > dns::UDP_LIMIT);
        let fitted = dns::fit_udp(reply);
        assert!(dns::is_truncated(&fitted) && fitted.len() <= dns::UDP_LIMIT);
        let small = dns::fit_udp(dns::reply_addrs(
            &query,
            &q,
            &[Ipv4Addr::LOCALHOST.into()],
            5,
        ));
        assert!(!dns::is_truncated(&small));
        assert_eq!(dns::parse_response(&small).unwrap().records.len(), 1);
    }
}
