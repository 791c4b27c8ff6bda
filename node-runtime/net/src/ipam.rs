//! Addresses for zones: the lowest free host address of the subnet, never
//! the network, the gateway or the broadcast address. Which addresses are
//! held is the caller's (rauhad keeps leases in its store, so they survive a
//! restart); this is the choice alone.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::config::Subnet;

/// The lowest address of `subnet` that is not in `held`, or `None` when
/// every zone address is taken.
pub fn pick(subnet: &Subnet, held: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(subnet.gateway()) + 1;
    let last = u32::from(subnet.broadcast()).checked_sub(1)?;
    // Held addresses are sorted: walk them instead of every address.
    let mut next = first;
    for a in held.range(Ipv4Addr::from(first)..=Ipv4Addr::from(last)) {
        let a = u32::from(*a);
        if a > next {
            break;
        }
        next = a + 1;
    }
    (next <= last).then(|| Ipv4Addr::from(next))
}

/// How many zones the subnet holds.
pub fn capacity(subnet: &Subnet) -> u32 {
    (1u32 << (32 - u32::from(subnet.prefix))).saturating_sub(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 89, 0, last)
    }

    #[test]
    fn the_lowest_free_address_is_chosen_and_reused_after_release() {
        let s = Subnet::parse("10.89.0.0/29").unwrap();
        assert_eq!(capacity(&s), 5);
        let mut held = BTreeSet::new();
        let mut got = Vec::new();
        while let Some(addr) = pick(&s, &held) {
            assert!(held.insert(addr), "{addr} handed out twice");
            got.push(addr);
        }
        assert_eq!(got, vec![a(2), a(3), a(4), a(5), a(6)]);
        held.remove(&a(4));
        assert_eq!(pick(&s, &held), Some(a(4)));
    }

    #[test]
    fn leases_outside_the_subnet_are_ignored() {
        let s = Subnet::parse("10.89.0.0/24").unwrap();
        let held = BTreeSet::from([Ipv4Addr::new(10, 1, 0, 2), a(2)]);
        assert_eq!(pick(&s, &held), Some(a(3)));
    }
}
