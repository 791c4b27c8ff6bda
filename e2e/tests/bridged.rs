//! Bridged zones: addresses on rauhad's bridge, the per-zone firewall,
//! masquerade, published ports, the zones' resolver and egress by domain.
//!
//! Traffic goes only to the zones, to an "outside" namespace this test
//! makes (behind a veth of its own), or to loopback. Each test has its own
//! bridge and subnets (10.231.N.0/24 for zones, 10.232.N.0/24 outside),
//! which overlap no route of these machines (their eth0 is 192.0.2.0/24);
//! `subnets_are_free` checks that first.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rauha_e2e::{json, ready, text, Daemon};
use rauha_net::dns;

const NC: &str = "/bin/busybox";

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0])
}

fn ok(args: &[&str]) {
    let out = sh(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
}

/// The test's bridge and the "outside": removed on drop, after the daemon.
struct Net {
    n: u8,
    outside: String,
    servers: Vec<Child>,
    stop: Arc<AtomicBool>,
}

impl Net {
    fn bridge(&self) -> String {
        format!("rtb{}", self.n)
    }
    fn zone_net(&self) -> String {
        format!("10.231.{}.0/24", self.n)
    }
    /// The outside's first and second address (its servers).
    fn out(&self, host: u8) -> String {
        format!("10.232.{}.{host}", self.n)
    }
    fn args(&self) -> Vec<String> {
        vec![
            "--bridge".into(),
            self.bridge(),
            "--bridge-subnet".into(),
            self.zone_net(),
        ]
    }

    fn new(n: u8) -> Net {
        subnets_are_free(n);
        let outside = format!("rauha-e2e-out{n}-{}", std::process::id());
        ok(&["ip", "netns", "add", &outside]);
        let net = Net {
            n,
            outside,
            servers: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let host_end = format!("rto{n}");
        ok(&[
            "ip",
            "link",
            "add",
            &host_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &net.outside,
        ]);
        ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.out(1)),
            "dev",
            &host_end,
        ]);
        ok(&["ip", "link", "set", &host_end, "up"]);
        for host in [2, 3] {
            ok(&[
                "ip",
                "-n",
                &net.outside,
                "addr",
                "add",
                &format!("{}/24", net.out(host)),
                "dev",
                "eth0",
            ]);
        }
        ok(&["ip", "-n", &net.outside, "link", "set", "eth0", "up"]);
        ok(&["ip", "-n", &net.outside, "link", "set", "lo", "up"]);
        ok(&[
            "ip",
            "-n",
            &net.outside,
            "route",
            "add",
            "default",
            "via",
            &net.out(1),
        ]);
        net
    }

    /// A TCP server in the outside on `port` that answers each connection
    /// with the address it came from.
    fn serve_peer_address(&mut self, port: u16) {
        let prog = "import socket,sys\n\
s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('0.0.0.0',int(sys.argv[1])));s.listen(64)\n\
while True:\n c,a=s.accept();c.sendall((a[0]+'\\n').encode());c.close()\n";
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.outside,
                "python3",
                "-c",
                prog,
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 server");
        self.servers.push(child);
        std::thread::sleep(Duration::from_millis(300));
    }

    /// A DNS server in the outside at `.3:53`: `allowed.test` is `.2`,
    /// `other.test` is `.3`, both with a TTL of 2 s.
    fn serve_dns(&self) {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.outside)).expect("netns");
        let (a, b) = (self.out(2), self.out(3));
        let stop = Arc::clone(&self.stop);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let sock = UdpSocket::bind(format!("{b}:53")).expect("dns bind");
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            // Over TCP: big.test, whose answer (40 addresses) is too large
            // for the UDP reply, which says so (TC).
            let tcp = std::net::TcpListener::bind(format!("{b}:53")).expect("dns tcp bind");
            let tcp_stop = Arc::clone(&stop);
            std::thread::spawn(move || serve_dns_tcp(tcp, &tcp_stop));
            tx.send(()).expect("ready");
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = dns::parse_query(&buf[..n]) else {
                    continue;
                };
                let addr = match q.name.as_str() {
                    "allowed.test" => Some(a.parse::<Ipv4Addr>().expect("ip")),
                    "other.test" => Some(b.parse::<Ipv4Addr>().expect("ip")),
                    // A name pointed at a cloud's metadata address.
                    "rebind.test" => Some(Ipv4Addr::new(169, 254, 169, 254)),
                    _ => None,
                };
                let reply = match (addr, q.qtype) {
                    _ if q.name == "big.test" => {
                        let mut tc = dns::reply(&buf[..n], &q, dns::RCODE_NOERROR);
                        tc[2] |= 0x02;
                        tc
                    }
                    (Some(ip), dns::TYPE_A) => dns::reply_addrs(&buf[..n], &q, &[ip.into()], 2),
                    (Some(_), _) => dns::reply(&buf[..n], &q, dns::RCODE_NOERROR),
                    (None, _) => dns::reply(&buf[..n], &q, dns::RCODE_NXDOMAIN),
                };
                let _ = sock.send_to(&reply, from);
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("dns server up");
    }

    /// What this bridge's table says now (`nft list table`), or "".
    fn table(&self) -> String {
        text(&sh(&["nft", "list", "table", "inet", &self.bridge()]).stdout)
    }

    fn veths(&self) -> Vec<String> {
        let out = text(&sh(&["ip", "-br", "link"]).stdout);
        let prefix = format!("{}.", self.bridge());
        out.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = sh(&["ip", "netns", "del", &self.outside]);
        let _ = sh(&["ip", "link", "del", &format!("rto{}", self.n)]);
        for veth in self.veths() {
            let _ = sh(&["ip", "link", "del", &veth]);
        }
        let _ = sh(&["ip", "link", "del", &self.bridge()]);
        let _ = sh(&["nft", "delete", "table", "inet", &self.bridge()]);
    }
}

/// The test DNS server's TCP side: big.test answers 40 addresses of the
/// outside subnet (.100 to .139).
fn serve_dns_tcp(listener: std::net::TcpListener, stop: &AtomicBool) {
    use std::io::{Read, Write};
    listener.set_nonblocking(true).expect("nonblocking");
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut conn, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            continue;
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        if conn.read_exact(&mut query).is_err() {
            continue;
        }
        let Ok(q) = dns::parse_query(&query) else {
            continue;
        };
        let local = conn.local_addr().expect("local");
        let std::net::IpAddr::V4(me) = local.ip() else {
            continue;
        };
        let [a, b, c, _] = me.octets();
        let addrs: Vec<std::net::IpAddr> = (100..140)
            .map(|i| Ipv4Addr::new(a, b, c, i).into())
            .collect();
        let reply = if q.name == "big.test" && q.qtype == dns::TYPE_A {
            dns::reply_addrs(&query, &q, &addrs, 30)
        } else {
            dns::reply(&query, &q, dns::RCODE_NXDOMAIN)
        };
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        let _ = conn.write_all(&framed);
    }
}

/// The test's subnets overlap no route of the host (and its bridge is not
/// left from an earlier run).
fn subnets_are_free(n: u8) {
    let routes = text(&sh(&["ip", "-4", "route"]).stdout);
    for prefix in [format!("10.231.{n}."), format!("10.232.{n}.")] {
        assert!(
            !routes.contains(&prefix)
                && !routes.lines().any(|l| l.starts_with("10.0.0.0/8")
                    || l.starts_with("10.231.0.0/16")
                    || l.starts_with("10.232.0.0/16")),
            "a host route covers {prefix}0/24; these tests need it free:\n{routes}"
        );
    }
}

fn daemon(net: &Net, extra: &[&str]) -> Daemon {
    let mut d = Daemon::start();
    d.kill9();
    let mut args: Vec<String> = net.args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    d.spawn(&args);
    d
}

fn policy(d: &Daemon, name: &str, body: &str) -> String {
    let p = d.dir.join(format!("{name}.toml"));
    std::fs::write(&p, format!("[network]\nmode = \"bridged\"\n{body}")).expect("policy");
    p.display().to_string()
}

fn create(d: &Daemon, zone: &str, policy: &str) {
    let out = d.cli(&["zone", "create", zone, "--policy", policy]);
    assert!(out.status.success(), "create {zone}: {}", text(&out.stderr));
}

/// `busybox nc` from a zone to `host:port` (2 s timeout): what it read, or Err(stderr).
fn connect(d: &Daemon, zone: &str, host: &str, port: u16) -> Result<String, String> {
    let out = d.cli(&[
        "exec",
        zone,
        "--",
        NC,
        "nc",
        "-w",
        "2",
        host,
        &port.to_string(),
    ]);
    if out.status.success() && !out.stdout.is_empty() {
        Ok(text(&out.stdout).trim().to_string())
    } else {
        Err(text(&out.stderr))
    }
}

/// Starts `busybox nc` listening on `port` in a zone, answering `reply`.
fn listen(d: &Daemon, zone: &str, port: u16, reply: &str) {
    let out = d.cli(&[
        "run",
        "--zone",
        zone,
        "--",
        NC,
        "nc",
        "-ll",
        "-p",
        &port.to_string(),
        "-e",
        "echo",
        reply,
    ]);
    assert!(
        out.status.success(),
        "listen in {zone}: {}",
        text(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
}

fn address_of(d: &Daemon, zone: &str) -> String {
    let out = d.cli(&["exec", zone, "--", "cat", "/proc/net/fib_trie"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The /32 host entry of eth0's address: "|-- 10.231.N.X" then "/32 host LOCAL".
    let t = text(&out.stdout);
    let lines: Vec<&str> = t.lines().collect();
    for w in lines.windows(2) {
        if w[1].contains("/32 host LOCAL") && w[0].contains("10.231.") {
            return w[0].trim().trim_start_matches("|-- ").to_string();
        }
    }
    panic!("no address in the zone: {t}");
}

#[test]
fn zones_reach_each_other_only_as_allowed_zones_says() {
    if !ready() {
        return;
    }
    let net = Net::new(1);
    let d = daemon(&net, &[]);
    create(&d, "za", &policy(&d, "a", "allowed_zones = [\"zb\"]\n"));
    let plain = policy(&d, "plain", "");
    create(&d, "zb", &plain);
    create(&d, "zc", &plain);
    let (a, b, c) = (
        address_of(&d, "za"),
        address_of(&d, "zb"),
        address_of(&d, "zc"),
    );
    assert!(a != b && b != c && a != c, "distinct: {a} {b} {c}");
    for addr in [&a, &b, &c] {
        assert!(
            addr.starts_with("10.231.1.") && addr != "10.231.1.1",
            "{addr} is a zone address of the subnet"
        );
    }
    // Each reaches the gateway: its resolver answers (zb.rauha only for za).
    let out = d.cli(&["exec", "za", "--", NC, "nslookup", "zb.rauha"]);
    assert!(
        text(&out.stdout).contains(&b),
        "za resolves zb: {}",
        text(&out.stdout)
    );
    let out = d.cli(&["exec", "zb", "--", NC, "nslookup", "za.rauha"]);
    assert!(
        text(&out.stdout).contains("NXDOMAIN") || text(&out.stderr).contains("NXDOMAIN"),
        "zb may not reach za, so cannot resolve it: {}",
        text(&out.stdout)
    );
    // The same over TCP (a client's retry after a truncated answer).
    let query: String = dns::query(7, "zb.rauha", dns::TYPE_A)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let prog = format!(
        "import socket,struct\ns=socket.create_connection(('10.231.1.1',53),3)\nq=bytes.fromhex('{query}')\n\
s.sendall(struct.pack('>H',len(q))+q)\nn=struct.unpack('>H',s.recv(2))[0]\nprint(s.recv(n).hex())"
    );
    let out = d.cli(&["exec", "za", "--", "python3", "-c", &prog]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hex = text(&out.stdout);
    let bytes: Vec<u8> = (0..hex.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).expect("hex"))
        .collect();
    let answer = dns::parse_response(&bytes).expect("a DNS answer");
    assert_eq!(
        answer.records[0].data,
        dns::Data::Addr(b.parse::<std::net::IpAddr>().expect("ip"))
    );
    listen(&d, "za", 8081, "from-a");
    listen(&d, "zb", 8080, "from-b");
    assert_eq!(connect(&d, "za", &b, 8080).as_deref(), Ok("from-b"));
    assert_eq!(connect(&d, "za", "zb.rauha", 8080).as_deref(), Ok("from-b"));
    assert!(
        connect(&d, "zb", &a, 8081).is_err(),
        "zb may not connect to za"
    );
    assert!(connect(&d, "zc", &b, 8080).is_err(), "zc reaches neither");
    assert!(connect(&d, "zc", &a, 8081).is_err(), "zc reaches neither");
    // Below connect(): datagrams. A zone allowed any address on port 9999
    // still reaches no other zone, not by unicast, nor by broadcast to all
    // (which a bridge floods) or to the subnet; za's unicast to zb passes.
    create(
        &d,
        "zx",
        &policy(&d, "x", "allowed_egress = [\"0.0.0.0/0:9999\"]\n"),
    );
    let recv = "import socket,time\ns=socket.socket(2,2)\ns.bind(('',9999))\ns.settimeout(0.5)\n\
got=set()\nend=time.time()+5\nwhile time.time()<end:\n  try: got.add(s.recv(100).decode())\n  except socket.timeout: pass\n\
print(','.join(sorted(got)))";
    let receiver = {
        let (addr, recv) = (d.addr(), recv.to_string());
        std::thread::spawn(move || {
            let out = Command::new(rauha_e2e::bin_dir().join("rauha"))
                .args(["exec", "zb", "--", "python3", "-c", &recv])
                .env("RAUHA_ADDR", addr)
                .output()
                .expect("rauha exec");
            format!("{}{}", text(&out.stdout).trim(), text(&out.stderr).trim())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let send = |zone: &str, to: &[(&str, &str)]| {
        // Each three times, half a second apart: the receiver may start late.
        let mut prog =
            "import socket,time\ns=socket.socket(2,2)\ns.setsockopt(1,6,1)\nfor _ in range(3):\n"
                .to_string();
        for (addr, payload) in to {
            prog.push_str(&format!("  s.sendto(b'{payload}',('{addr}',9999))\n"));
        }
        prog.push_str("  time.sleep(0.5)\n");
        let out = d.cli(&["exec", zone, "--", "python3", "-c", &prog]);
        assert!(out.status.success(), "{zone}: {}", text(&out.stderr));
    };
    send(
        "zx",
        &[
            ("255.255.255.255", "bcast"),
            ("10.231.1.255", "subnet"),
            (&b, "unicast"),
        ],
    );
    send("za", &[(&b, "from-a")]);
    assert_eq!(receiver.join().expect("receiver"), "from-a");
    // The table holds one chain per zone.
    let table = net.table();
    assert_eq!(table.matches("jump z_").count(), 4, "{table}");
    // A policy update opens zb -> za in place.
    let opened = policy(&d, "b2", "allowed_zones = [\"za\"]\n");
    let out = d.cli(&["zone", "update", "zb", "--policy", &opened]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(connect(&d, "zb", &a, 8081).as_deref(), Ok("from-a"));
    assert!(
        connect(&d, "zc", &a, 8081).is_err(),
        "zc still reaches neither"
    );
    drop(d);
    assert!(
        net.veths().is_empty(),
        "zones deleted, veths gone: {:?}",
        net.veths()
    );
}

#[test]
fn egress_leaves_through_masquerade_only_where_allowed() {
    if !ready() {
        return;
    }
    let mut net = Net::new(2);
    net.serve_peer_address(8080);
    net.serve_peer_address(9090);
    let d = daemon(&net, &[]);
    let p = policy(
        &d,
        "egress",
        &format!("allowed_egress = [\"{}/32:8080\"]\n", net.out(2)),
    );
    create(&d, "ze", &p);
    assert_eq!(
        connect(&d, "ze", &net.out(2), 8080),
        Ok(net.out(1)),
        "the server sees the host's address (masquerade)"
    );
    assert!(connect(&d, "ze", &net.out(2), 9090).is_err(), "other port");
    assert!(
        connect(&d, "ze", &net.out(3), 8080).is_err(),
        "other address"
    );
    // The zone's connections are tracked (the closed one in TIME_WAIT for
    // minutes), and forgotten with the zone: the next zone given its
    // address inherits none.
    let mine = format!("src={} ", address_of(&d, "ze"));
    let tracked = || {
        std::fs::read_to_string("/proc/net/nf_conntrack")
            .expect("/proc/net/nf_conntrack")
            .lines()
            .filter(|l| l.contains(&mine))
            .count()
    };
    assert!(tracked() > 0, "the kernel tracks the zone's connection");
    let out = d.cli(&["zone", "delete", "ze"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(tracked(), 0, "the zone's connections are forgotten");
    create(&d, "ze", &p);
    // A task's result names the refused destination.
    let out = d.cli(&[
        "sandbox",
        "--json",
        "--policy",
        &p,
        "--",
        NC,
        "nc",
        "-w",
        "2",
        &net.out(2),
        "9090",
    ]);
    let r = json(&out);
    let events = r["enforcement_events"]
        .as_array()
        .expect("enforcement_events");
    assert!(
        events.iter().any(|e| e["target"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("{}:9090", net.out(2)))),
        "a deny event names the address: {events:?}"
    );
}

#[test]
fn egress_by_domain_admits_what_an_allowed_name_resolved_to_for_its_ttl() {
    if !ready() {
        return;
    }
    let mut net = Net::new(3);
    net.serve_peer_address(8080);
    net.serve_dns();
    let upstream = format!("{}:53", net.out(3));
    let d = daemon(&net, &["--dns-upstream", &upstream]);
    let p = policy(
        &d,
        "dom",
        "allowed_egress_domains = [\"allowed.test\", \"big.test\", \"rebind.test\"]\n",
    );
    create(&d, "zd", &p);
    create(&d, "zo", &p);
    // An answer too large for UDP: the upstream's truncated UDP answer is
    // asked again over TCP; the zone gets TC over UDP (nothing cut short)
    // and all 40 addresses over TCP, and each is admitted.
    let gateway = "10.231.3.1";
    let script = format!(
        r#"import socket, struct
def q(i):
    name = b"".join(bytes([len(l)]) + l for l in b"big.test".split(b".")) + b"\0"
    return struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(q(1), ("{gateway}", 53))
r = u.recv(4096)
t = socket.create_connection(("{gateway}", 53), 5)
m = q(2)
t.sendall(struct.pack(">H", len(m)) + m)
n = struct.unpack(">H", t.recv(2))[0]
b = b""
while len(b) < n:
    b += t.recv(n - len(b))
print(len(r) <= 512, bool(r[2] & 2), struct.unpack(">H", r[6:8])[0], struct.unpack(">H", b[6:8])[0])
"#
    );
    let out = d.cli(&["exec", "zd", "--", "/usr/bin/python3", "-c", &script]);
    assert_eq!(
        text(&out.stdout).trim(),
        "True True 0 40",
        "{}",
        text(&out.stderr)
    );
    let big = net.out(139);
    assert!(net.table().contains(&big), "{big}: {}", net.table());
    // An allowed name whose answer is a link-local (metadata) address
    // admits nothing.
    let out = d.cli(&["exec", "zd", "--", NC, "nslookup", "rebind.test"]);
    assert!(
        text(&out.stdout).contains("169.254.169.254"),
        "{}",
        text(&out.stdout)
    );
    assert!(!net.table().contains("169.254.169.254"), "{}", net.table());
    let (allowed, other) = (net.out(2), net.out(3));
    assert_eq!(
        connect(&d, "zd", "allowed.test", 8080),
        Ok(net.out(1)),
        "an allowed name is reached"
    );
    assert!(
        connect(&d, "zd", "other.test", 8080).is_err(),
        "a name not allowed is not resolved"
    );
    assert!(
        connect(&d, "zd", &other, 8080).is_err(),
        "nor its literal address"
    );
    assert!(
        connect(&d, "zo", &allowed, 8080).is_err(),
        "zd's answer admits nothing for zo"
    );
    let table = net.table();
    assert!(
        table.contains(&allowed),
        "the grant is in zd's set: {table}"
    );
    // The answer's TTL is 2 s: after it, the literal address is refused...
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        connect(&d, "zd", &allowed, 8080).is_err(),
        "expired with its TTL"
    );
    // ...until the name is resolved again.
    assert_eq!(connect(&d, "zd", "allowed.test", 8080), Ok(net.out(1)));
    // A task's deny event says which name an address came from.
    let script =
        format!("{NC} nc -w 2 allowed.test 8080; sleep 3.5; {NC} nc -w 2 {allowed} 8080; {NC} nc -w 2 other.test 8080; true");
    let r = json(&d.cli(&[
        "sandbox", "--json", "--policy", &p, "--", "/bin/sh", "-c", &script,
    ]));
    let events = r["enforcement_events"]
        .as_array()
        .expect("enforcement_events");
    assert!(
        events.iter().any(|e| e["target"]
            .as_str()
            .unwrap_or("")
            .contains("(allowed.test, expired: resolve it again)")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e["hook"] == "dns"
            && e["target"]
                .as_str()
                .unwrap_or("")
                .starts_with("other.test (not in network.allowed_egress_domains)")),
        "a refused name is an event: {events:?}"
    );
    // A zone that asks another resolver (the real one, at other.test's
    // address, which it was not given) gets nothing.
    let out = d.cli(&["exec", "zd", "--", NC, "nslookup", "allowed.test", &other]);
    assert!(
        !text(&out.stdout).contains(&format!("Address: {allowed}")),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_published_port_answers_on_the_host_until_its_zone_or_process_ends() {
    if !ready() {
        return;
    }
    let net = Net::new(4);
    let mut d = daemon(&net, &[]);
    let bridged = policy(&d, "pub", "publish = [\"28084:8080\"]\n");
    create(&d, "zp", &bridged);
    listen(&d, "zp", 8080, "published");
    let host = |port: &str| {
        let out = sh(&[NC, "nc", "-w", "2", "127.0.0.1", port]);
        text(&out.stdout).trim().to_string()
    };
    assert_eq!(host("28084"), "published");
    // The same from the command line, shown by `zone get`.
    let plain = policy(&d, "plain", "");
    let out = d.cli(&[
        "zone",
        "create",
        "zq",
        "--policy",
        &plain,
        "--publish",
        "28085:8080",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    listen(&d, "zq", 8080, "from-q");
    assert_eq!(host("28085"), "from-q");
    let got = json(&d.cli(&["zone", "get", "zq", "--json"]));
    assert!(
        got["address"]
            .as_str()
            .unwrap_or("")
            .starts_with("10.231.4."),
        "{got}"
    );
    assert_eq!(
        got["published"],
        serde_json::json!(["127.0.0.1:28085:8080/tcp"])
    );
    // `rauha run -p`: published while that process runs, through a
    // restart of rauhad, and no longer once it ends.
    let out = d.cli(&[
        "run",
        "--zone",
        "zq",
        "-p",
        "28087:9090",
        "--json",
        "--",
        NC,
        "nc",
        "-ll",
        "-p",
        "9090",
        "-e",
        "echo",
        "by-process",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let process = json(&out);
    let id = process["id"].as_str().expect("id").to_string();
    assert_eq!(
        process["published"],
        serde_json::json!(["127.0.0.1:28087:9090/tcp"])
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(host("28087"), "by-process");
    let got = json(&d.cli(&["zone", "get", "zq", "--json"]));
    assert_eq!(
        got["published"],
        serde_json::json!(["127.0.0.1:28085:8080/tcp", "127.0.0.1:28087:9090/tcp"])
    );
    let out = d.cli(&["ps", "--zone", "zq"]);
    assert!(
        text(&out.stdout).contains("PORTS")
            && text(&out.stdout).contains("127.0.0.1:28087:9090/tcp"),
        "{}",
        text(&out.stdout)
    );
    let out = d.cli(&["run", "--zone", "zp", "-p", "28087:1", "--", "true"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!("spec.publish: 127.0.0.1:28087:1/tcp takes host port 28087/tcp, which process {} of zone zq publishes already", &id[..8])),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = d.cli(&["zone", "create", "zt", "--policy", &plain, "-p", "28087:80"]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("which process"),
        "{}",
        text(&out.stderr)
    );
    d.kill9();
    d.spawn(&net.args().iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(host("28087"), "by-process", "kept through a restart");
    let out = d.cli(&["stop", &id, "--grace", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while net.table().contains("28087") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!net.table().contains("28087"), "{}", net.table());
    assert_eq!(host("28087"), "", "no answer once the process ended");
    assert_eq!(host("28085"), "from-q", "the zone's own port stays");
    let got = json(&d.cli(&["zone", "get", "zq", "--json"]));
    assert_eq!(
        got["published"],
        serde_json::json!(["127.0.0.1:28085:8080/tcp"])
    );
    // A host port is one zone's; a zone that is not bridged publishes nothing.
    let out = d.cli(&[
        "zone",
        "create",
        "zr",
        "--policy",
        &plain,
        "-p",
        "28084:9000",
    ]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("publish: 127.0.0.1:28084:9000/tcp takes host port 28084/tcp, which zone zp publishes already"), "{err}");
    let out = d.cli(&["zone", "create", "zs", "-p", "28086:80"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("publish: needs a bridged zone")
            && err.contains("add --network bridged"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // As docker's --network: a preset's zone on the bridge, from the flag.
    let out = d.cli(&[
        "zone",
        "create",
        "zs",
        "--network",
        "bridged",
        "-p",
        "28086:8080",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    listen(&d, "zs", 8080, "from-s");
    assert_eq!(host("28086"), "from-s");
    // A host port a service of the host holds, or an address that is not
    // the host's, is refused.
    let refused = |publish: &str, why: &str| {
        let out = d.cli(&[
            "zone",
            "create",
            "zu",
            "--network",
            "bridged",
            "-p",
            publish,
        ]);
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{err}");
    };
    let held = std::net::TcpListener::bind("127.0.0.1:28089").expect("a host service");
    refused("28089:80", "host port 28089/tcp is in use on this host");
    drop(held);
    refused(
        "10.99.99.99:28090:80",
        "10.99.99.99 is not an address of this host",
    );
    let out = d.cli(&["zone", "create", "zn"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.cli(&["run", "--zone", "zn", "-p", "28086:80", "--", "true"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "spec.publish: needs a bridged zone, and zone zn's network.mode is not \"bridged\""
            ),
        "{err}"
    );
    let out = d.cli(&["zone", "delete", "--force", "zp"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(host("28084"), "", "no answer once the zone is gone");
    assert!(!net.table().contains("28084"), "{}", net.table());
    assert_eq!(host("28085"), "from-q", "the other zone's port stays");
}

#[test]
fn a_hundred_zones_leave_nothing_behind_and_a_restart_keeps_addresses() {
    if !ready() {
        return;
    }
    let net = Net::new(5);
    let mut d = daemon(&net, &[]);
    let p = policy(&d, "loop", "");
    for i in 0..100 {
        let name = format!("l{i}");
        create(&d, &name, &p);
        let out = d.cli(&["zone", "delete", &name]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert!(net.veths().is_empty(), "{:?}", net.veths());
    assert_eq!(net.table().matches("jump z_").count(), 0, "{}", net.table());
    let netns = d.root.join("netns");
    let left: Vec<_> = std::fs::read_dir(&netns)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    // Addresses are reused: the next zone gets the subnet's first.
    create(&d, "k0", &p);
    assert_eq!(address_of(&d, "k0"), "10.231.5.2");
    for i in 1..10 {
        create(&d, &format!("k{i}"), &p);
    }
    let before: Vec<String> = (0..10).map(|i| address_of(&d, &format!("k{i}"))).collect();
    // A crash's leftovers, which no zone has: a veth of this bridge and a
    // namespace file. The restart removes them.
    ok(&[
        "ip", "link", "add", "rtb5.zz", "type", "veth", "peer", "name", "rtb5leak",
    ]);
    let stray = netns.join(uuid::Uuid::new_v4().to_string());
    std::fs::write(&stray, b"").expect("stray netns file");
    d.kill9();
    d.spawn(&net.args().iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !net.veths().contains(&"rtb5.zz".to_string()),
        "{:?}",
        net.veths()
    );
    assert!(!stray.exists(), "a namespace no zone has is removed");
    let after: Vec<String> = (0..10).map(|i| address_of(&d, &format!("k{i}"))).collect();
    assert_eq!(before, after, "zones keep their addresses");
    let table = net.table();
    assert_eq!(
        table.matches("jump z_").count(),
        10,
        "rebuilt, nothing twice: {table}"
    );
    assert_eq!(net.veths().len(), 10);
    create(&d, "k10", &p);
    assert!(
        !before.contains(&address_of(&d, "k10")),
        "no address handed out twice"
    );
    let out = d.cli(&["exec", "k0", "--", NC, "nslookup", "k1.rauha"]);
    assert!(
        text(&out.stdout).contains("NXDOMAIN"),
        "the resolver serves again: {}",
        text(&out.stdout)
    );
}

#[test]
fn a_subnet_over_a_host_route_is_refused_at_start() {
    if !ready() {
        return;
    }
    // eth0's own network (or whichever route the host has first).
    let routes = text(&sh(&["ip", "-4", "route"]).stdout);
    let Some(route) = routes
        .lines()
        .find(|l| !l.starts_with("default"))
        .and_then(|l| l.split_whitespace().next())
    else {
        panic!("the host has no route but the default one: {routes}");
    };
    let out = Command::new(rauha_e2e::bin_dir().join("rauhad"))
        .args([
            "--root",
            "/nonexistent-rauha-root",
            "--bridge",
            "rtb9",
            "--bridge-subnet",
            route,
        ])
        .output()
        .expect("rauhad");
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "--bridge-subnet {route} overlaps the host's route"
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn host_networking_only_under_a_privileged_pod_policy_and_said_to_be_weaker() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let p = d.dir.join("host.toml");
    std::fs::write(&p, "[network]\nmode = \"host\"\n").expect("policy");
    let out = d.cli(&[
        "zone",
        "create",
        "zh",
        "--policy",
        p.to_str().expect("utf8"),
    ]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("network.mode = \"host\" shares the host's network namespace"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    std::fs::write(
        &p,
        "[pod]\nsecurity = \"privileged\"\n\n[network]\nmode = \"host\"\n",
    )
    .expect("policy");
    let bundle = rauha_e2e::busybox_bundle(&d.dir, true).expect("busybox bundle");
    let out = d.cli(&[
        "sandbox",
        "--json",
        "--policy",
        p.to_str().expect("utf8"),
        "--bundle",
        bundle.to_str().expect("utf8"),
        "--",
        "/bin/busybox",
        "ip",
        "-o",
        "link",
    ]);
    let r = json(&out);
    // The host's interface with its default route (eth0 here) is in the zone.
    let route = text(&sh(&["ip", "route", "show", "default"]).stdout);
    let dev = route
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .expect("a default route's device")
        .to_string();
    assert!(
        r["stdout"]
            .as_str()
            .unwrap_or("")
            .contains(&format!(": {dev}:")),
        "the host's interfaces: {}",
        r["stdout"]
    );
    let layers = r["enforcement"]["layers"].as_array().expect("layers");
    let ns = layers
        .iter()
        .find(|l| l["layer"] == "namespaces_cgroups")
        .expect("namespaces layer");
    assert!(
        ns["detail"]
            .as_str()
            .unwrap_or("")
            .contains("WEAKER: the host's net namespace shared"),
        "{ns}"
    );
}

#[test]
fn bad_network_input_is_refused_in_one_line_naming_the_field() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    for (i, (body, says)) in [
        (
            "mode = \"bridged\"\nallowed_egress = [\"10.0.0.0/33\"]\n",
            "network.allowed_egress: \"10.0.0.0/33\" has a prefix that is not 0-32",
        ),
        (
            "mode = \"bridged\"\nallowed_egress = [\"10.0.0.1:http\"]\n",
            "network.allowed_egress: \"10.0.0.1:http\" has a port that is not 1-65535",
        ),
        (
            "mode = \"bridged\"\nallowed_egress_domains = [\"pypi.*\"]\n",
            "network.allowed_egress_domains: \"pypi.*\" has a '*' that is not the whole first label",
        ),
        (
            "mode = \"bridged\"\nallowed_zones = [\"Not A Zone\"]\n",
            "network.allowed_zones:",
        ),
        (
            "mode = \"bridged\"\npublish = [\"80\"]\n",
            "network.publish: \"80\" is not HOST_PORT:ZONE_PORT",
        ),
        (
            "mode = \"joined\"\nallowed_egress_domains = [\"pypi.org\"]\n",
            "network.allowed_egress_domains: is set but network.mode = \"joined\"",
        ),
        ("mode = \"bridge\"\n", "network.mode:"),
    ]
    .into_iter()
    .enumerate()
    {
        let p = d.dir.join(format!("bad{i}.toml"));
        std::fs::write(&p, format!("[network]\n{body}")).expect("policy");
        let out = d.cli(&["zone", "create", &format!("bad{i}"), "--policy", p.to_str().expect("utf8")]);
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{body}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // Nothing was made, and rauhad serves on.
    let out = d.cli(&["zone", "list", "--json"]);
    assert!(out.status.success());
    assert_eq!(json(&out).as_array().map(Vec::len), Some(0));
}
