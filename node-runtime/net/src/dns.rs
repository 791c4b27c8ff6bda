//! Just enough of the DNS wire format (RFC 1035) for the zones' resolver:
//! read a query's question, read a response's answers (A, AAAA, CNAME with
//! their TTLs), cut a response down to its question and answers, and write
//! the few answers rauhad gives itself. Every read is bounds-checked: the
//! bytes come from a zone or from the network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_REFUSED: u8 = 5;

const HEADER: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("DNS message cut short at byte {0}")]
    Short(usize),
    #[error("DNS name is malformed at byte {0}")]
    BadName(usize),
    #[error("DNS message has {0} questions; one is expected")]
    Questions(u16),
    #[error("DNS message is a response where a query was expected")]
    NotQuery,
}

/// The one question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub id: u16,
    /// Lower case, without the final dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Where the question ends (the answers would start).
    pub end: usize,
}

/// What one answer record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Addr(IpAddr),
    Cname(String),
    Other(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: Data,
}

/// A response's question and answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    pub question: Question,
    pub rcode: u8,
    pub records: Vec<Record>,
    /// Where the answer section ends.
    pub end: usize,
}

fn u16_at(buf: &[u8], at: usize) -> Result<u16, DnsError> {
    buf.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(DnsError::Short(at))
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, DnsError> {
    buf.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DnsError::Short(at))
}

/// Reads the name at `at`, following compression pointers backwards only;
/// returns it (lower case, no final dot) and where it ends in place.
fn name_at(buf: &[u8], at: usize) -> Result<(String, usize), DnsError> {
    let mut name = String::new();
    let mut pos = at;
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *buf.get(pos).ok_or(DnsError::Short(pos))? as usize;
        if len & 0xc0 == 0xc0 {
            let target = (u16_at(buf, pos)? & 0x3fff) as usize;
            jumps += 1;
            // Backwards only, and never into the header (no name there).
            if target >= pos || target < HEADER || jumps > 64 {
                return Err(DnsError::BadName(pos));
            }
            end.get_or_insert(pos + 2);
            pos = target;
            continue;
        }
        if len & 0xc0 != 0 {
            return Err(DnsError::BadName(pos));
        }
        if len == 0 {
            return Ok((name, end.unwrap_or(pos + 1)));
        }
        let label = buf
            .get(pos + 1..pos + 1 + len)
            .ok_or(DnsError::Short(pos))?;
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            // Names are compared, logged and matched: keep them printable.
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(DnsError::BadName(pos));
            }
            name.push(b.to_ascii_lowercase() as char);
        }
        if name.len() > 253 {
            return Err(DnsError::BadName(pos));
        }
        pos += 1 + len;
    }
}

fn question_at(buf: &[u8]) -> Result<Question, DnsError> {
    let id = u16_at(buf, 0)?;
    let count = u16_at(buf, 4)?;
    if count != 1 {
        return Err(DnsError::Questions(count));
    }
    let (name, at) = name_at(buf, HEADER)?;
    Ok(Question {
        id,
        name,
        qtype: u16_at(buf, at)?,
        qclass: u16_at(buf, at + 2)?,
        end: at + 4,
    })
}

/// The question of a query (QR clear, one question).
pub fn parse_query(buf: &[u8]) -> Result<Question, DnsError> {
    if *buf.get(2).ok_or(DnsError::Short(2))? & 0x80 != 0 {
        return Err(DnsError::NotQuery);
    }
    question_at(buf)
}

/// The question and answer records of a response.
pub fn parse_response(buf: &[u8]) -> Result<Answers, DnsError> {
    let question = question_at(buf)?;
    let rcode = *buf.get(3).ok_or(DnsError::Short(3))? & 0x0f;
    let count = u16_at(buf, 6)?;
    let mut at = question.end;
    let mut records = Vec::new();
    for _ in 0..count {
        let (name, after) = name_at(buf, at)?;
        let rtype = u16_at(buf, after)?;
        let ttl = u32_at(buf, after + 4)?;
        let len = u16_at(buf, after + 8)? as usize;
        let start = after + 10;
        let rdata = buf.get(start..start + len).ok_or(DnsError::Short(start))?;
        let data = match (rtype, len) {
            (TYPE_A, 4) => Data::Addr(IpAddr::V4(Ipv4Addr::new(
                rdata[0], rdata[1], rdata[2], rdata[3],
            ))),
            (TYPE_AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rdata);
                Data::Addr(IpAddr::V6(Ipv6Addr::from(b)))
            }
            // The name is read within its record's data: a name running past
            // it would read the next record's bytes as its own.
            (TYPE_CNAME, _) => Data::Cname(name_at(&buf[..start + len], start)?.0),
            (t, _) => Data::Other(t),
        };
        records.push(Record { name, ttl, data });
        at = start + len;
    }
    Ok(Answers {
        question,
        rcode,
        records,
        end: at,
    })
}

/// The response cut after its answers: authority and additional records
/// (glue for other names, EDNS) are dropped, so a zone learns only what it
/// asked. `id` is written back (the query's own).
pub fn answers_only(buf: &[u8], answers: &Answers, id: u16) -> Vec<u8> {
    let mut out = buf[..answers.end].to_vec();
    out[0..2].copy_from_slice(&id.to_be_bytes());
    out[8..12].fill(0);
    out
}

/// The TC bit: the message did not fit the UDP datagram it came in.
pub fn is_truncated(buf: &[u8]) -> bool {
    buf.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// The largest reply sent over UDP: what a client may take without EDNS
/// (RFC 1035), since replies carry no EDNS record of their own.
pub const UDP_LIMIT: usize = 512;

/// A reply fitted to UDP: whole when it fits [`UDP_LIMIT`], else only its
/// header and question with TC set, so that the client asks over TCP.
pub fn fit_udp(reply: Vec<u8>) -> Vec<u8> {
    if reply.len() <= UDP_LIMIT {
        return reply;
    }
    let Ok(q) = question_at(&reply) else {
        return reply;
    };
    let mut out = reply[..q.end].to_vec();
    out[2] |= 0x02;
    out[6..12].fill(0);
    out
}

/// A reply with no answers and `rcode`, echoing the question.
pub fn reply(query: &[u8], question: &Question, rcode: u8) -> Vec<u8> {
    let mut out = query[..question.end].to_vec();
    // QR, the query's opcode and RD, RA; then the code.
    out[2] = 0x80 | (query[2] & 0x79);
    out[3] = 0x80 | (rcode & 0x0f);
    out[6..12].fill(0);
    out
}

/// A reply answering the question with `addrs` (of its type), `ttl` each.
pub fn reply_addrs(query: &[u8], question: &Question, addrs: &[IpAddr], ttl: u32) -> Vec<u8> {
    let mut out = reply(query, question, RCODE_NOERROR);
    out[2] |= 0x04; // authoritative
    let mut n = 0u16;
    for addr in addrs {
        let (rtype, data): (u16, Vec<u8>) = match addr {
            IpAddr::V4(a) => (TYPE_A, a.octets().to_vec()),
            IpAddr::V6(a) => (TYPE_AAAA, a.octets().to_vec()),
        };
        out.extend_from_slice(&[0xc0, HEADER as u8]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
        n += 1;
    }
    out[6..8].copy_from_slice(&n.to_be_bytes());
    out
}

/// A query for `name` (tests and tools).
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + name.len() + 6);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len().min(63) as u8);
        out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_read_and_answered() {
        let q = query(0x1234, "Files.Example.TEST.", TYPE_A);
        let question = parse_query(&q).unwrap();
        assert_eq!(
            (question.id, question.name.as_str(), question.qtype),
            (0x1234, "files.example.test", TYPE_A)
        );
        let addrs = [
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 8)),
        ];
        let r = reply_addrs(&q, &question, &addrs, 30);
        let a = parse_response(&r).unwrap();
        assert_eq!(a.rcode, RCODE_NOERROR);
        assert_eq!(a.records.len(), 2);
        assert_eq!(
            a.records[1],
            Record {
                name: "files.example.test".into(),
                ttl: 30,
                data: Data::Addr(addrs[1])
            }
        );
        assert!(parse_query(&r).is_err(), "a response is not a query");
        let refused = parse_response(&reply(&q, &question, RCODE_REFUSED)).unwrap();
        assert_eq!((refused.rcode, refused.records.len()), (RCODE_REFUSED, 0));
    }

    #[test]
    fn answers_only_drops_what_follows_the_answers() {
        let q = query(7, "a.test", TYPE_A);
        let question = parse_query(&q).unwrap();
        let mut r = reply_addrs(&q, &question, &[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))], 5);
        // An additional record for another name (glue), counted in ARCOUNT.
        r[11] = 1;
        r.extend_from_slice(&[
            1, b'b', 4, b't', b'e', b's', b't', 0, 0, 1, 0, 1, 0, 0, 0, 9, 0, 4, 10, 0, 0, 2,
        ]);
        let a = parse_response(&r).unwrap();
        let cut = answers_only(&r, &a, 99);
        assert_eq!(cut.len(), a.end);
        assert_eq!(u16::from_be_bytes([cut[0], cut[1]]), 99);
        assert_eq!(&cut[8..12], &[0, 0, 0, 0]);
        assert_eq!(parse_response(&cut).unwrap().records, a.records);
    }

    #[test]
    fn pointer_loops_and_short_messages_are_errors() {
        let mut q = query(1, "x.test", TYPE_A);
        // The name is a pointer to itself.
        q[12] = 0xc0;
        q[13] = 12;
        assert!(matches!(parse_query(&q), Err(DnsError::BadName(12))));
        let q = query(1, "x.test", TYPE_A);
        for n in 0..q.len() {
            assert!(parse_query(&q[..n]).is_err(), "{n} bytes");
        }
        let mut odd = query(1, "x.test", TYPE_A);
        odd[13] = b' ';
        assert!(parse_query(&odd).is_err(), "unprintable names are refused");
    }
}
