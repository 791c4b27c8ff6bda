//! Forgetting an address's connections (ctnetlink): when a zone's address
//! is given back, the kernel's conntrack entries of its flows go with it,
//! so that the next zone to get the address inherits none of them (an
//! `established` flow of the old zone would otherwise pass the new one's
//! packets without its chain, masqueraded as the old one's).
//!
//! The messages are built and read here: a dump of the IPv4 table, then one
//! delete per entry that names the address, by its original tuple and id.

use std::net::Ipv4Addr;

use crate::kernel::NetError;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDR: usize = 16;
const NFGEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// One conntrack entry as the dump gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The CTA_TUPLE_ORIG attribute, whole (header included): sent back
    /// as it came to delete the entry.
    pub orig: Vec<u8>,
    /// The CTA_ID attribute, whole.
    pub id: Option<Vec<u8>>,
    /// Source and destination of the original and the reply tuple.
    pub addrs: Vec<Ipv4Addr>,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes in `buf`: (type without flags, whole attribute, payload).
fn attrs(buf: &[u8]) -> Vec<(u16, &[u8], &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= buf.len() {
        let len = u16::from_ne_bytes([buf[at], buf[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]) & NLA_TYPE_MASK;
        if len < 4 || at + len > buf.len() {
            break;
        }
        out.push((kind, &buf[at..at + len], &buf[at + 4..at + len]));
        at += align(len);
    }
    out
}

/// The addresses of a tuple attribute's payload.
fn tuple_addrs(payload: &[u8]) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for (kind, _, ip) in attrs(payload) {
        if kind != CTA_TUPLE_IP {
            continue;
        }
        for (k, _, v) in attrs(ip) {
            if (k == CTA_IP_V4_SRC || k == CTA_IP_V4_DST) && v.len() == 4 {
                out.push(Ipv4Addr::new(v[0], v[1], v[2], v[3]));
            }
        }
    }
    out
}

/// The entries of one datagram of a dump, and whether the dump is done.
pub fn parse_dump(buf: &[u8]) -> Result<(Vec<Entry>, bool), NetError> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDR <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        if len < NLMSG_HDR || at + len > buf.len() {
            break;
        }
        let msg = &buf[at..at + len];
        match kind {
            NLMSG_DONE => return Ok((entries, true)),
            NLMSG_ERROR => {
                let code = msg
                    .get(NLMSG_HDR..NLMSG_HDR + 4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if code != 0 {
                    return Err(NetError::io(
                        "cannot list the kernel's connections",
                        std::io::Error::from_raw_os_error(-code),
                    ));
                }
            }
            _ if msg.len() >= NLMSG_HDR + NFGEN => {
                let mut e = Entry {
                    orig: Vec::new(),
                    id: None,
                    addrs: Vec::new(),
                };
                for (k, whole, payload) in attrs(&msg[NLMSG_HDR + NFGEN..]) {
                    match k {
                        CTA_TUPLE_ORIG => {
                            e.orig = whole.to_vec();
                            e.addrs.extend(tuple_addrs(payload));
                        }
                        CTA_TUPLE_REPLY => e.addrs.extend(tuple_addrs(payload)),
                        CTA_ID => e.id = Some(whole.to_vec()),
                        _ => {}
                    }
                }
                if !e.orig.is_empty() {
                    entries.push(e);
                }
            }
            _ => {}
        }
        at += align(len);
    }
    Ok((entries, false))
}

/// A ctnetlink request: header, nfgenmsg (IPv4), attributes.
pub fn request(kind: u16, flags: u16, seq: u32, attrs: &[&[u8]]) -> Vec<u8> {
    let body: usize = attrs.iter().map(|a| align(a.len())).sum();
    let len = NLMSG_HDR + NFGEN + body;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    for a in attrs {
        out.extend_from_slice(a);
        out.resize(align(out.len()), 0);
    }
    out
}

struct Sock(std::os::fd::OwnedFd);

impl Sock {
    fn open() -> std::io::Result<Sock> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: a new socket, owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is ours.
        let sock = Sock(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: a valid timeval of its size.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock.0),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(sock)
    }

    fn send(&self, msg: &[u8]) -> std::io::Result<()> {
        // SAFETY: a zeroed sockaddr_nl is the kernel's address.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: msg and to are valid for their lengths.
        let n = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&self.0),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: buf is valid for its length.
        let n = unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.0),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Deletes the kernel's conntrack entries that name `addr` (as source or
/// destination of either direction); how many went.
pub fn forget(addr: Ipv4Addr) -> Result<usize, NetError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e| NetError::io(what, e)
    };
    let sock = Sock::open().map_err(io("cannot open a ctnetlink socket"))?;
    let dump = request(
        IPCTNL_MSG_CT_GET,
        (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
        1,
        &[],
    );
    sock.send(&dump)
        .map_err(io("cannot ask for the kernel's connections"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut doomed = Vec::new();
    loop {
        let n = sock
            .recv(&mut buf)
            .map_err(io("cannot read the kernel's connections"))?;
        let (entries, done) = parse_dump(&buf[..n])?;
        doomed.extend(entries.into_iter().filter(|e| e.addrs.contains(&addr)));
        if done || n == 0 {
            break;
        }
    }
    let mut gone = 0;
    for (i, e) in doomed.iter().enumerate() {
        let mut attrs: Vec<&[u8]> = vec![&e.orig];
        if let Some(id) = &e.id {
            attrs.push(id);
        }
        let msg = request(
            IPCTNL_MSG_CT_DELETE,
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            2 + i as u32,
            &attrs,
        );
        sock.send(&msg)
            .map_err(io("cannot delete a connection of the zone"))?;
        let n = sock
            .recv(&mut buf)
            .map_err(io("cannot read the kernel's answer"))?;
        // An entry that ended meanwhile is gone already (ENOENT).
        match parse_dump(&buf[..n]) {
            Ok(_) => gone += 1,
            Err(NetError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align(out.len()), 0);
        out
    }

    fn tuple(kind: u16, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let ip = [attr(CTA_IP_V4_SRC, &src), attr(CTA_IP_V4_DST, &dst)].concat();
        attr(kind | 0x8000, &attr(CTA_TUPLE_IP | 0x8000, &ip))
    }

    #[test]
    fn a_dump_reads_as_entries_with_their_tuple_to_delete_by() {
        let orig = tuple(CTA_TUPLE_ORIG, [10, 89, 0, 2], [10, 20, 0, 1]);
        let reply = tuple(CTA_TUPLE_REPLY, [10, 20, 0, 1], [192, 0, 2, 2]);
        let id = attr(CTA_ID, &7u32.to_be_bytes());
        let entry = request(0, 0, 1, &[&orig, &reply, &id]);
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        let (entries, end) = parse_dump(&[entry.clone(), done].concat()).unwrap();
        assert!(end);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].orig, orig);
        assert_eq!(entries[0].id.as_deref(), Some(&id[..]));
        assert_eq!(
            entries[0].addrs,
            vec![
                Ipv4Addr::new(10, 89, 0, 2),
                Ipv4Addr::new(10, 20, 0, 1),
                Ipv4Addr::new(10, 20, 0, 1),
                Ipv4Addr::new(192, 0, 2, 2)
            ]
        );
        // Cut short: nothing read past the end, no panic.
        let (cut, end) = parse_dump(&entry[..entry.len() - 3]).unwrap();
        assert!(cut.is_empty() && !end);
    }
}
