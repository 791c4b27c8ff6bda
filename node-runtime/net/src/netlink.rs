//! The real [`Links`]: rtnetlink, each call on a thread of its own with a
//! small runtime, so that a namespace entered for one call is never the one
//! of any other thread of rauhad.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST};
use rtnetlink::packet_route::link::{InfoBridgePort, InfoData, InfoKind, InfoVeth};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use crate::config::{BridgeConfig, HostRoute, Subnet};
use crate::kernel::{Links, NetError};
use crate::netns;

pub struct Netlink;

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |e| NetError::Netlink {
        what,
        detail: rauha_spec::message::one_line(&e.to_string()),
    }
}

fn exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.to_io().raw_os_error() == Some(libc::EEXIST))
}

fn absent(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if matches!(m.to_io().raw_os_error(), Some(libc::ENODEV) | Some(libc::ENOENT)))
}

/// Runs `f` with a netlink handle, in the namespace at `netns` if given.
fn with_handle<T, F, Fut>(netns: Option<PathBuf>, f: F) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetError>>,
{
    let body = move || -> Result<T, NetError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| NetError::io("cannot start a netlink runtime", e))?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection()
                .map_err(|e| NetError::io("cannot open a netlink socket", e))?;
            let task = tokio::spawn(conn);
            let out = f(handle).await;
            task.abort();
            out
        })
    };
    match netns {
        Some(path) => netns::run_in(&path.clone(), body).map_err(|e| {
            NetError::io(format!("cannot enter the namespace {}", path.display()), e)
        })?,
        None => std::thread::spawn(body)
            .join()
            .map_err(|_| NetError::Config("the netlink thread panicked".into()))?,
    }
}

async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(e) if absent(&e) => Ok(None),
        Err(e) => Err(nl(format!("cannot look up the link {name}"))(e)),
    }
}

fn name_of(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

async fn add_addr(
    handle: &Handle,
    index: u32,
    addr: Ipv4Addr,
    prefix: u8,
    what: &str,
) -> Result<(), NetError> {
    match handle
        .address()
        .add(index, IpAddr::V4(addr), prefix)
        .execute()
        .await
    {
        Err(e) if !exists(&e) => Err(nl(what.to_string())(e)),
        _ => Ok(()),
    }
}

/// The bridge's MAC address, set (not left to the kernel, which would give
/// the bridge the lowest of its ports' and change it as zones come and go,
/// leaving every zone's ARP entry for the gateway wrong until it is asked
/// again). Locally administered, from the bridge's name: the same after a
/// restart.
pub fn bridge_mac(name: &str) -> [u8; 6] {
    // FNV-1a.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02, b[3], b[4], b[5], b[6], b[7]]
}

/// Makes `name` an isolated port: the bridge forwards nothing between two
/// zones' ports, so a zone reaches another only through the host's routing,
/// and so through the forward chain, whether or not br_netfilter is loaded
/// (no broadcast or ARP crosses either).
async fn isolate_port(h: &Handle, name: &str) -> Result<(), NetError> {
    let index = index_of(h, name)
        .await?
        .ok_or_else(|| NetError::Config(format!("the veth {name} vanished")))?;
    let isolated = LinkBridgePort::new(index)
        .append_info_data(InfoBridgePort::Isolated(true))
        .build();
    h.link()
        .add(isolated)
        .set_flags(NLM_F_REQUEST | NLM_F_ACK)
        .execute()
        .await
        .map_err(nl(format!("cannot isolate the bridge port {name}")))
}

impl Links for Netlink {
    fn isolate(&self, veth: &str) -> Result<(), NetError> {
        let name = veth.to_string();
        with_handle(None, move |h| async move { isolate_port(&h, &name).await })
    }

    fn ensure_bridge(&self, bridge: &BridgeConfig) -> Result<(), NetError> {
        let b = bridge.clone();
        with_handle(None, move |h| async move {
            let name = b.name.as_str();
            let msg = LinkBridge::new(name)
                .mtu(b.mtu)
                .address(bridge_mac(name).to_vec())
                .nf_call_iptables(true)
                .nf_call_ip6tables(true)
                .build();
            match h.link().add(msg).execute().await {
                Err(e) if !exists(&e) => {
                    return Err(nl(format!("cannot create the bridge {name}"))(e))
                }
                _ => {}
            }
            let index = index_of(&h, name).await?.ok_or_else(|| {
                NetError::Config(format!("the bridge {name} vanished after its creation"))
            })?;
            // An existing bridge (rauhad restarted) gets the settings again.
            let settings = LinkBridge::new(name)
                .address(bridge_mac(name).to_vec())
                .nf_call_iptables(true)
                .nf_call_ip6tables(true)
                .build();
            let mut settings = settings;
            settings.header.index = index;
            h.link()
                .set(settings)
                .execute()
                .await
                .map_err(nl(format!("cannot set up the bridge {name}")))?;
            add_addr(
                &h,
                index,
                b.subnet.gateway(),
                b.subnet.prefix,
                &format!("cannot give the bridge {name} its address"),
            )
            .await?;
            h.link()
                .set(LinkUnspec::new_with_index(index).mtu(b.mtu).up().build())
                .execute()
                .await
                .map_err(nl(format!("cannot bring the bridge {name} up")))?;
            Ok(())
        })?;
        // A published port reached at 127.0.0.1 is DNATed onto the bridge:
        // the kernel routes a loopback source there only with this set (on
        // this interface alone; the table drops anything from the zones to
        // the host but DNS).
        let knob = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", bridge.name);
        std::fs::write(&knob, "1").map_err(|e| NetError::io(format!("cannot write {knob}"), e))?;
        let fwd = "/proc/sys/net/ipv4/ip_forward";
        if std::fs::read_to_string(fwd)
            .map(|s| s.trim() != "1")
            .unwrap_or(true)
        {
            std::fs::write(fwd, "1")
                .map_err(|e| NetError::io(format!("cannot enable forwarding ({fwd})"), e))?;
        }
        Ok(())
    }

    fn attach(
        &self,
        bridge: &BridgeConfig,
        veth: &str,
        addr: Ipv4Addr,
        netns_path: &Path,
    ) -> Result<(), NetError> {
        netns::create(netns_path).map_err(|e| {
            NetError::io(
                format!("cannot create the namespace {}", netns_path.display()),
                e,
            )
        })?;
        let ns = std::fs::File::open(netns_path)
            .map_err(|e| NetError::io(format!("cannot open {}", netns_path.display()), e))?;
        let (b, host) = (bridge.clone(), veth.to_string());
        with_handle(None, move |h| async move {
            let br = index_of(&h, &b.name)
                .await?
                .ok_or_else(|| NetError::Config(format!("the bridge {} is gone", b.name)))?;
            // One message: the host end on the bridge and up, its peer made
            // in the zone's namespace as eth0 (moving a link between
            // namespaces would wait for an RCU grace period).
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name("eth0".to_string())
                .mtu(b.mtu)
                .setns_by_fd(ns.as_raw_fd())
                .build();
            let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(host.clone())
                .mtu(b.mtu)
                .controller(br)
                .up()
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            h.link()
                .add(msg)
                .execute()
                .await
                .map_err(nl(format!("cannot create the veth {host}")))?;
            // The zone's eth0 is still down: nothing was sent yet.
            isolate_port(&h, &host).await
        })?;
        let gw = bridge.subnet.gateway();
        with_handle(Some(netns_path.to_path_buf()), move |h| async move {
            let lo = index_of(&h, "lo")
                .await?
                .ok_or_else(|| NetError::Config("no loopback in the zone".into()))?;
            h.link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .map_err(nl("cannot bring the zone's loopback up"))?;
            let i = index_of(&h, "eth0")
                .await?
                .ok_or_else(|| NetError::Config("eth0 is not in the zone".into()))?;
            // A /32 and every route through the gateway: the zone has no
            // neighbour but the host (its port is isolated), and ignores
            // the redirects the host sends when it routes to another zone.
            for knob in ["all", "default", "eth0"] {
                let path = format!("/proc/sys/net/ipv4/conf/{knob}/accept_redirects");
                std::fs::write(&path, "0")
                    .map_err(|e| NetError::io(format!("cannot write the zone's {path}"), e))?;
            }
            add_addr(&h, i, addr, 32, "cannot give the zone its address").await?;
            h.link()
                .set(LinkUnspec::new_with_index(i).up().build())
                .execute()
                .await
                .map_err(nl("cannot bring eth0 up"))?;
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(i)
                .onlink()
                .build();
            match h.route().add(route).execute().await {
                Err(e) if !exists(&e) => Err(nl("cannot give the zone its default route")(e)),
                _ => Ok(()),
            }
        })
    }

    fn detach(&self, veth: &str, netns_path: &Path) -> Result<(), NetError> {
        let host = veth.to_string();
        with_handle(None, move |h| async move {
            if let Some(i) = index_of(&h, &host).await? {
                match h.link().del(i).execute().await {
                    Err(e) if !absent(&e) => {
                        return Err(nl(format!("cannot delete the veth {host}"))(e))
                    }
                    _ => {}
                }
            }
            Ok(())
        })?;
        netns::remove(netns_path).map_err(|e| {
            NetError::io(
                format!("cannot remove the namespace {}", netns_path.display()),
                e,
            )
        })
    }

    fn links_named(&self, prefix: &str) -> Result<Vec<String>, NetError> {
        let prefix = prefix.to_string();
        with_handle(None, move |h| async move {
            let mut out = Vec::new();
            let mut links = h.link().get().execute();
            while let Some(link) = links.try_next().await.map_err(nl("cannot list links"))? {
                if let Some(n) = name_of(&link).filter(|n| n.starts_with(&prefix)) {
                    out.push(n.to_string());
                }
            }
            Ok(out)
        })
    }

    fn routes(&self) -> Result<Vec<HostRoute>, NetError> {
        let text = std::fs::read_to_string("/proc/net/route")
            .map_err(|e| NetError::io("cannot read /proc/net/route", e))?;
        Ok(parse_proc_routes(&text))
    }
}

/// `/proc/net/route`: interface, destination and mask in hex, little endian.
pub fn parse_proc_routes(text: &str) -> Vec<HostRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let dest = Ipv4Addr::from(dest.to_ne_bytes());
            let prefix = mask.count_ones() as u8;
            Some(HostRoute {
                net: Subnet::new(dest, prefix),
                device: f[0].to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_mac_is_unicast_local_and_its_names_own() {
        let a = bridge_mac("rauha0");
        assert_eq!(a[0] & 0x03, 0x02, "locally administered unicast");
        assert_eq!(a, bridge_mac("rauha0"));
        assert_ne!(a, bridge_mac("rauha1"));
    }

    #[test]
    fn proc_routes_read_as_networks() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let r = parse_proc_routes(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].net.prefix, 0);
        assert_eq!(r[1].net.to_string(), "192.0.2.0/24");
        assert_eq!(r[1].device, "eth0");
    }
}
