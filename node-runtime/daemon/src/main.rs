//! `rauhad`, Rauha's node daemon: serves the gRPC API on a root-only Unix
//! socket, keeps zones, processes and task results in redb (the source of
//! truth), reconciles kernel state with it at start, and builds zones
//! through an `IsolationBackend`. It never knows which OS it is on beyond
//! choosing the backend here.

mod agent_link;
mod api;
mod error;
mod events;
mod images;
mod redact;
mod secrets;
mod shim_keeper;
mod store;
mod validate;
mod zone;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use rauha_api::v1::images_server::ImagesServer;
use rauha_api::v1::node_server::NodeServer;
use rauha_api::v1::processes_server::ProcessesServer;
use rauha_api::v1::sandbox_server::SandboxServer;
use rauha_api::v1::secrets_server::SecretsServer;
use rauha_api::v1::zones_server::ZonesServer;
use rauha_spec::enforcement::{EnforcementMode, Layer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::events::EventBus;
use crate::secrets::SecretStore;
use crate::store::Store;
use crate::zone::{Backends, Retention, ZoneRegistry};
use rauha_backend::IsolationBackend;
use rauha_backend_linux::sealed::SealedBinary;
use rauha_backend_linux::LinuxBackend;

const MAX_MESSAGE: usize = 32 << 20;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Refuse to start unless BPF-LSM programs are in force.
    Required,
    /// Run with the layers this kernel allows, and report them.
    Preferred,
}

/// Rauha's node daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// State directory (the redb store, zone state).
    #[arg(long, env = "RAUHA_ROOT", default_value = "/var/lib/rauha")]
    root: PathBuf,
    /// The API's Unix socket (mode 0600, root only).
    #[arg(long, env = "RAUHA_SOCKET", default_value = "/run/rauha/rauhad.sock")]
    socket: PathBuf,
    /// Also serve the API on this loopback TCP address (no authentication:
    /// for development only).
    #[arg(long, value_name = "ADDR")]
    listen_tcp: Option<SocketAddr>,
    /// What to do when BPF-LSM enforcement cannot be loaded.
    #[arg(long, value_enum, default_value = "preferred")]
    enforcement: Mode,
    /// cgroup under which every zone's cgroup is made.
    #[arg(long, default_value = "rauha")]
    cgroup_parent: String,
    /// A cgroup below which clients may put zones' cgroups by absolute
    /// path (the shim passes kubelet's pod cgroups); repeat for several.
    #[arg(
        long = "allowed-cgroup-root",
        value_name = "PATH",
        default_values_t = validate::DEFAULT_ALLOWED_CGROUP_ROOTS.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    )]
    allowed_cgroup_roots: Vec<String>,
    /// A directory below which stdio paths may be (a shim's FIFOs and log
    /// files); rauhad's own state dir always is. Repeat for several.
    #[arg(
        long = "stdio-root",
        value_name = "DIR",
        default_value = "/run/containerd"
    )]
    stdio_roots: Vec<PathBuf>,
    /// Where the BPF maps and program links are pinned (on bpffs); they
    /// stay attached across restarts of rauhad.
    #[arg(long, env = "RAUHA_BPF_PIN_DIR", default_value = "/sys/fs/bpf/rauha")]
    bpf_pin_dir: PathBuf,
    /// Where the cgroup filesystems are mounted.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// The zone agent binary; by default `rauha-guest-agent` beside rauhad.
    #[arg(long, env = "RAUHA_AGENT")]
    agent: Option<PathBuf>,
    /// Keep at most this many finished task results (the newest).
    #[arg(long, default_value_t = 10_000)]
    task_history: usize,
    /// Keep only the newest finished task results that fit in this many
    /// bytes of the store together (512Mi, 2Gi).
    #[arg(long, default_value = "512Mi", value_parser = parse_size)]
    task_history_bytes: u64,
    /// Forget finished task results older than this (30s, 10m, 24h; 0 = never).
    #[arg(long, default_value = "168h", value_parser = parse_age)]
    task_max_age: std::time::Duration,
    /// A registry (HOST[:PORT]) reached over plain HTTP; repeatable.
    /// Registries on loopback always are; every other is https.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// REGISTRY=MIRROR: pull REGISTRY's images (e.g. docker.io) from
    /// MIRROR (host[:port]) first, then from REGISTRY; repeatable, tried in
    /// order. Digests are verified whoever serves them.
    #[arg(long = "registry-mirror", value_name = "REGISTRY=MIRROR", value_parser = parse_mirror)]
    registry_mirrors: Vec<(String, String)>,
    /// A PEM file of CA certificates trusted for registries, besides the
    /// system's; repeatable.
    #[arg(long = "registry-ca", value_name = "FILE")]
    registry_cas: Vec<PathBuf>,
    /// Collect unreferenced image content when the image store grows past
    /// this size (e.g. 20Gi); 0 = only on `rauha image prune`.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    image_store_max: u64,
    /// The bridge of bridged zones (made with the first of them); its
    /// nftables table (family inet) has the same name.
    #[arg(long, default_value = rauha_net::config::DEFAULT_BRIDGE)]
    bridge: String,
    /// The bridge's IPv4 subnet: the first address is the gateway (and the
    /// zones' resolver), zones get the others. Must overlap no host route.
    #[arg(long, default_value = rauha_net::config::DEFAULT_SUBNET)]
    bridge_subnet: String,
    #[arg(long, default_value_t = rauha_net::config::DEFAULT_MTU)]
    bridge_mtu: u32,
    /// A resolver the zones' names are forwarded to (ADDR or ADDR:PORT);
    /// repeatable. Default: the host's, from /etc/resolv.conf.
    #[arg(long = "dns-upstream", value_name = "ADDR[:PORT]", value_parser = parse_upstream)]
    dns_upstreams: Vec<std::net::SocketAddr>,
}

fn parse_upstream(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{s:?} is not ADDR or ADDR:PORT (e.g. 10.0.0.53 or 10.0.0.53:5353)"))
}

/// A size such as 512Mi or 2Gi.
fn parse_mirror(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((r, m)) if !r.is_empty() && !m.is_empty() && !m.contains('/') && !r.contains('/') => {
            Ok((r.to_string(), m.to_string()))
        }
        _ => Err(format!(
            "{s:?} is not REGISTRY=MIRROR (e.g. docker.io=mirror.example:5000)"
        )),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    rauha_spec::size::parse_size(s).ok_or_else(|| format!("{s:?} is not a size; use 512Mi or 2Gi"))
}

/// A duration, or `0` for "never" (a zero duration).
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    rauha_spec::duration::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration; use 30s, 10m, 24h or 0 for never"))
}

fn main() {
    // Before any thread or child: what rauhad inherited stays in rauhad.
    let inherited = rauha_fd::cloexec_inherited();
    let args = Args::parse();
    let level = std::env::var("RAUHA_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    match inherited {
        Ok(fds) => {
            for fd in fds {
                tracing::debug!(fd = fd.fd, target = %fd.target.display(), "inherited descriptor marked close-on-exec");
            }
        }
        Err(e) => {
            eprintln!("rauhad: cannot mark inherited descriptors close-on-exec: {e}");
            std::process::exit(1);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rauhad: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("rauhad: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("must run as root: it creates namespaces and cgroups; start it with sudo or as a system service");
    }
    if let Some(addr) = args.listen_tcp {
        if !addr.ip().is_loopback() {
            bail!("--listen-tcp {addr} is not a loopback address: the API has no authentication and would give the network root; use 127.0.0.1 or [::1]");
        }
    }
    if args.cgroup_parent.is_empty()
        || args.cgroup_parent.contains('/')
        || args.cgroup_parent.starts_with('.')
    {
        bail!(
            "--cgroup-parent {:?} must be one plain directory name, e.g. rauha",
            args.cgroup_parent
        );
    }
    for root in &args.allowed_cgroup_roots {
        let parts: Vec<&str> = root.split('/').skip(1).collect();
        if !root.starts_with('/')
            || parts.is_empty()
            || parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            bail!(
                "--allowed-cgroup-root {root:?} must be an absolute cgroup path such as /kubepods"
            );
        }
    }
    // Before anything is made: a bridge subnet over a host route is refused.
    let bridge = rauha_net::BridgeConfig::new(&args.bridge, &args.bridge_subnet, args.bridge_mtu)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let network = rauha_net::Network::new(
        bridge,
        Box::new(rauha_net::netlink::Netlink),
        Box::new(rauha_net::nft::Nft),
        &args.root.join("netns"),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let upstreams = if args.dns_upstreams.is_empty() {
        rauha_net::resolver::upstreams_of(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        )
    } else {
        args.dns_upstreams.clone()
    };
    let mut stdio_roots = args.stdio_roots.clone();
    if let Some(r) = stdio_roots.iter().find(|r| !r.is_absolute()) {
        bail!("--stdio-root {} must be an absolute directory", r.display());
    }
    stdio_roots.push(args.root.clone());
    let cgroups_allowed = validate::CgroupParents {
        own: args.cgroup_parent.clone(),
        allowed_roots: args.allowed_cgroup_roots.clone(),
    };
    let agent = match args.agent.clone() {
        Some(a) => a,
        None => std::env::current_exe()
            .context("cannot find rauhad's own path")?
            .with_file_name("rauha-guest-agent"),
    };
    if !agent.is_file() {
        bail!(
            "the zone agent {} does not exist; build it (cargo build) or pass --agent",
            agent.display()
        );
    }
    std::fs::create_dir_all(&args.root)
        .with_context(|| format!("cannot create {}", args.root.display()))?;
    std::fs::set_permissions(&args.root, std::fs::Permissions::from_mode(0o700))?;
    let cgroups = rauha_backend_linux::cgroup::open(&args.cgroup_root, &args.cgroup_parent)
        .context("cgroups")?;
    let agent = SealedBinary::copy(&agent)
        .with_context(|| format!("cannot copy the zone agent {}", agent.display()))?;
    let backend = Arc::new(LinuxBackend::new(
        &args.root,
        agent,
        cgroups,
        &args.bpf_pin_dir,
    ));
    let mode = match args.enforcement {
        Mode::Required => EnforcementMode::Required,
        Mode::Preferred => EnforcementMode::Preferred,
    };
    let layers = backend.node_layers();
    if mode == EnforcementMode::Required {
        if let Some(lsm) = layers
            .iter()
            .find(|l| l.layer == Layer::BpfLsm && !l.in_force)
        {
            backend.detach_new_bpf(&args.bpf_pin_dir);
            bail!("{}", refusal(&lsm.detail));
        }
    }
    tracing::info!(
        backend = backend.name(),
        cgroups = backend.layout(),
        "isolation backend"
    );
    for l in &layers {
        tracing::info!(
            layer = l.layer.as_str(),
            in_force = l.in_force,
            "{}",
            l.detail
        );
    }
    let store =
        Arc::new(Store::open(&args.root.join("rauhad.redb")).context(
            "the store is in use or unreadable (is another rauhad running on this root?)",
        )?);
    let secrets = SecretStore::open(&args.root).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut extra_ca_pem = Vec::new();
    for ca in &args.registry_cas {
        extra_ca_pem.push(
            std::fs::read(ca)
                .with_context(|| format!("--registry-ca {}: cannot read it", ca.display()))?,
        );
    }
    let images = Arc::new(
        images::Images::open(
            &args.root,
            Arc::clone(&store),
            rauha_image::pull::Registries {
                insecure: args.insecure_registries.clone(),
                extra_ca_pem,
                mirrors: args.registry_mirrors.clone(),
            },
            (args.image_store_max > 0).then_some(args.image_store_max),
        )
        .map_err(|e| anyhow::anyhow!("image store: {e}"))?,
    );
    let retention = Retention {
        keep_last: Some(args.task_history),
        max_age: (!args.task_max_age.is_zero()).then_some(args.task_max_age),
        max_bytes: Some(args.task_history_bytes),
    };
    let registry = ZoneRegistry::new(
        Backends::new(backend, Vec::new()),
        store,
        EventBus::new(),
        mode,
        retention,
        secrets,
    );
    registry.set_network(zone::network::NetCtx::new(network, upstreams));
    registry.recover().await.context("recovery")?;
    registry.adopt_network().await.context("bridged network")?;
    if let Err(e) = registry.sync_enforcement() {
        tracing::error!(error = %e, "cannot bring the BPF maps in step with the network");
    }
    registry
        .prune_tasks()
        .map_err(|e| anyhow::anyhow!("task retention: {e}"))?;
    registry.spawn_ttl_reaper();
    registry.spawn_denial_collector();

    let listener = bind_socket(&args.socket).await?;
    tracing::info!(socket = %args.socket.display(), root = %args.root.display(), "rauhad serving");
    let keeper = shim_keeper::spawn(&args.socket)?;
    tracing::info!(socket = %keeper.display(), "shim keeper serving");
    registry.spawn_orphan_collector(rauha_api::keeper::orphans_dir(&args.socket));
    let router = || {
        tonic::transport::Server::builder()
            .add_service(
                ZonesServer::new(api::ZonesService {
                    registry: Arc::clone(&registry),
                    images: Arc::clone(&images),
                    cgroups: cgroups_allowed.clone(),
                })
                .max_decoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                ProcessesServer::new(api::ProcessesService {
                    registry: Arc::clone(&registry),
                    images: Arc::clone(&images),
                    stdio_roots: stdio_roots.clone(),
                })
                .max_decoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                SecretsServer::new(api::SecretsService {
                    registry: Arc::clone(&registry),
                })
                .max_decoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                SandboxServer::new(api::SandboxService {
                    registry: Arc::clone(&registry),
                    images: Arc::clone(&images),
                })
                .max_decoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                ImagesServer::new(api::ImagesService {
                    images: Arc::clone(&images),
                })
                .max_decoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                NodeServer::new(api::NodeService {
                    registry: Arc::clone(&registry),
                    root: args.root.display().to_string(),
                })
                .max_decoding_message_size(MAX_MESSAGE),
            )
    };
    let unix = router().serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown());
    match args.listen_tcp {
        Some(addr) => {
            tracing::warn!(%addr, "also serving on TCP without authentication");
            let tcp = router().serve_with_shutdown(addr, shutdown());
            tokio::try_join!(unix, tcp)?;
        }
        None => unix.await?,
    }
    let _ = std::fs::remove_file(&args.socket);
    let _ = std::fs::remove_file(&keeper);
    tracing::info!("rauhad stopped; zones keep running and are re-adopted at the next start");
    Ok(())
}

fn refusal(reason: &str) -> String {
    format!("--enforcement required refuses to start: BPF-LSM is not in force: {reason}; use --enforcement preferred to run with the other layers")
}

/// Binds the API socket, root only. A live socket means another rauhad.
async fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!(
                "another rauhad is serving on {}; stop it or pass --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    // SAFETY: umask has no preconditions; the socket is created 0600 below,
    // and this closes the window in which it would be wider.
    let old = unsafe { libc::umask(0o177) };
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()));
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
