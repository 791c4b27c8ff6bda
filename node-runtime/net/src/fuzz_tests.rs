//! The resolver's untrusted input under the fuzzer (`rauha-fuzz`).
//!
//! `dns_message`: a query comes from a zone, a response from the network.
//! Whatever the bytes, reading them gives a value or an error, never a
//! panic; a name read is printable and lower case; a reply written for a
//! query reads back as that question; a response cut to its answers reads
//! back with the same records and nothing after them.

use crate::dns::{self, Data};

const DNS_WORDS: &[&[u8]] = &[
    b"\xc0\x0c",
    b"\xc0\x00",
    b"\xc0\xff",
    b"\x3f",
    b"\x40",
    b"\x00\x01\x00\x01",
    b"\x00\x1c\x00\x01",
    b"\x00\x05\x00\x01",
    b"\x00\x00\x00\x3c",
    b"\x00\x04\x0a\x00\x00\x01",
    b"\x00\x10",
    b"\xff\xff",
    b"\x07allowed\x04test\x00",
    b"\x02zb\x05rauha\x00",
    b"\x81\x80",
    b"\x01\x00",
];

fn check(data: &[u8]) -> String {
    let printable = |n: &str| {
        assert!(
            n.bytes().all(|b| b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'-'
                || b == b'_'
                || b == b'.'),
            "a name read with bytes a log or a match should not see: {n:?}"
        );
    };
    let mut outcome = String::new();
    match dns::parse_query(data) {
        Ok(q) => {
            printable(&q.name);
            assert!(q.end <= data.len());
            let r = dns::reply(data, &q, dns::RCODE_REFUSED);
            let back = dns::parse_response(&r).expect("a reply reads back");
            assert_eq!(
                (back.question.name, back.rcode, back.records.len()),
                (q.name.clone(), dns::RCODE_REFUSED, 0)
            );
            outcome.push_str("query ");
        }
        Err(e) => outcome.push_str(&format!("{e:?}").chars().take(8).collect::<String>()),
    }
    match dns::parse_response(data) {
        Ok(a) => {
            printable(&a.question.name);
            for r in &a.records {
                printable(&r.name);
                if let Data::Cname(c) = &r.data {
                    printable(c);
                }
            }
            assert!(a.end <= data.len());
            let cut = dns::answers_only(data, &a, 7);
            let back = dns::parse_response(&cut).expect("a cut response reads back");
            assert_eq!(back.records, a.records);
            assert_eq!(back.end, cut.len(), "nothing after the answers");
            outcome.push_str(&format!(" response {}", a.records.len().min(3)));
        }
        Err(e) => outcome.push_str(&format!(" {e:?}").chars().take(9).collect::<String>()),
    }
    outcome
}

#[test]
fn fuzz_dns_message() {
    let q = dns::query(0x1234, "allowed.test", dns::TYPE_A);
    let question = dns::parse_query(&q).expect("query");
    let answer = dns::reply_addrs(
        &q,
        &question,
        &[
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        ],
        30,
    );
    let mut cname = dns::reply(&q, &question, dns::RCODE_NOERROR);
    // allowed.test CNAME cdn.test (compressed), cdn.test A 10.0.0.3.
    cname[7] = 2;
    cname.extend_from_slice(&[
        0xc0, 0x0c, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3, b'c', b'd', b'n', 0xc0, 0x14,
    ]);
    let at = cname.len() - 6;
    cname.extend_from_slice(&[0xc0, at as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 3]);
    let seeds = vec![q, answer, cname, dns::query(1, "zb.rauha", dns::TYPE_AAAA)];
    let report = rauha_fuzz::run_seeded("dns_message", seeds, DNS_WORDS, check);
    println!("{report}");
}
