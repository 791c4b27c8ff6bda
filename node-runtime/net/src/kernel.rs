//! The kernel side, behind two small traits so that the logic above them is
//! tested with doubles and a VM backend can bring taps instead of veths.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::Value;

use crate::config::{BridgeConfig, HostRoute};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {detail}")]
    Netlink { what: String, detail: String },
    #[error("nft refused the ruleset: {0}")]
    Nft(String),
    #[error("{0}")]
    Config(String),
    #[error("the bridge's subnet {subnet} is full ({capacity} zones); delete zones or start rauhad with a wider --bridge-subnet")]
    Full { subnet: String, capacity: u32 },
}

impl NetError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> NetError {
        NetError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Links and namespaces.
pub trait Links: Send + Sync {
    /// Makes the bridge exist, up, with the gateway address, MTU and a MAC
    /// address of its own (not its ports'), routing on (zones reach each
    /// other only through the host: their ports are isolated).
    fn ensure_bridge(&self, bridge: &BridgeConfig) -> Result<(), NetError>;
    /// A network namespace bound at `netns` with `veth`'s peer in it as
    /// `eth0` holding `addr`/32 and a default route to the gateway, loopback
    /// up; the host end an isolated port of the bridge.
    fn attach(
        &self,
        bridge: &BridgeConfig,
        veth: &str,
        addr: Ipv4Addr,
        netns: &Path,
    ) -> Result<(), NetError>;
    /// Removes the veth (both ends) and the namespace's binding; absent
    /// ones are not an error.
    fn detach(&self, veth: &str, netns: &Path) -> Result<(), NetError>;
    /// Makes `veth` an isolated port of its bridge (the bridge forwards
    /// nothing between two isolated ports).
    fn isolate(&self, veth: &str) -> Result<(), NetError>;
    /// Names of the host's links starting with `prefix`.
    fn links_named(&self, prefix: &str) -> Result<Vec<String>, NetError>;
    /// The host's IPv4 routes (main table).
    fn routes(&self) -> Result<Vec<HostRoute>, NetError>;
}

/// nftables, and the connection tracking its rules rely on.
pub trait Firewall: Send + Sync {
    /// Applies one JSON document as one transaction.
    fn apply(&self, doc: &Value) -> Result<(), NetError>;
    /// Deletes the tracked connections that name `addr` (an address given
    /// back); how many.
    fn forget_connections(&self, addr: Ipv4Addr) -> Result<usize, NetError>;
}
