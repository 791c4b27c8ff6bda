//! The real [`Firewall`]: nft's JSON API through the `nftables` crate, which
//! checks the document against nft's schema and hands it to `nft -j -f -`
//! (one transaction).

use serde_json::Value;

use crate::kernel::{Firewall, NetError};

pub struct Nft;

impl Firewall for Nft {
    fn forget_connections(&self, addr: std::net::Ipv4Addr) -> Result<usize, NetError> {
        crate::conntrack::forget(addr)
    }

    fn apply(&self, doc: &Value) -> Result<(), NetError> {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("nft").is_file()))
            .unwrap_or(false);
        if !found {
            return Err(NetError::Nft(
                "the nft command is not installed; install nftables (apt-get install nftables)"
                    .into(),
            ));
        }
        let typed: nftables::schema::Nftables = serde_json::from_value(doc.clone())
            .map_err(|e| NetError::Nft(format!("not nft's schema: {e}")))?;
        nftables::helper::apply_ruleset(&typed)
            .map_err(|e| NetError::Nft(rauha_spec::message::one_line(&e.to_string())))
    }
}
