//! Bridged networking for zones.
//!
//! A pure core, tested without root: the bridge's configuration and the
//! checks on it ([`config`]), address choice ([`ipam`]), the nftables
//! ruleset a set of zones produces ([`ruleset`]), the DNS wire format
//! ([`dns`]) and the bookkeeping of addresses admitted by name
//! ([`admitted`]). The kernel side sits behind [`kernel::Links`] and
//! [`kernel::Firewall`] (netlink and nft), so that a VM backend can hand out
//! taps where this one makes veths.

pub mod admitted;
pub mod config;
pub mod conntrack;
pub mod dns;
pub mod ipam;
pub mod ruleset;

pub use config::{BridgeConfig, HostRoute, Subnet};
pub mod kernel;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod nft;

pub use kernel::{Firewall, Links, NetError};
pub use network::{Member, Network};
pub mod resolver;

#[cfg(test)]
mod fuzz_tests;
