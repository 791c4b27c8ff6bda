//! What the node can enforce, what a zone really has in force, and the
//! observed facts `zone verify` reports.

use rauha_spec::enforcement::{Enforcement, Layer, LayerStatus};
use rauha_spec::Policy;

use super::cgroup::CgroupDriver;
use rauha_backend::{Check, ZoneHandle};

/// The kernel's LSM list, when securityfs is mounted.
fn lsm_list() -> Option<String> {
    std::fs::read_to_string("/sys/kernel/security/lsm").ok()
}

fn landlock_abi() -> u32 {
    // SAFETY: the version query of landlock_create_ruleset takes no attribute.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    u32::try_from(v).unwrap_or(0)
}

/// Why BPF-LSM is not in force on this node.
pub fn bpf_lsm_reason() -> String {
    match lsm_list() {
        None => {
            "the kernel's LSM list is unreadable (securityfs not mounted at /sys/kernel/security)"
                .into()
        }
        Some(list) if !list.split(',').any(|l| l.trim() == "bpf") => {
            format!(
                "the kernel does not list bpf among its LSMs ({}); boot with lsm=...,bpf",
                list.trim()
            )
        }
        Some(_) => "the kernel lists bpf among its LSMs".into(),
    }
}

pub fn probe_node(layout: &str) -> Vec<LayerStatus> {
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .map(|s| s.contains("\nSeccomp:"))
        .unwrap_or(false);
    let abi = landlock_abi();
    vec![
        LayerStatus {
            layer: Layer::NamespacesCgroups,
            in_force: true,
            detail: format!("pid, mount, uts, ipc, net and cgroup namespaces; cgroup {layout} limits; capabilities bounded; no_new_privs"),
        },
        user_namespaces_on_node(),
        LayerStatus {
            layer: Layer::Seccomp,
            in_force: seccomp,
            detail: if seccomp { "seccomp filters available".into() } else { "the kernel has no seccomp filter support".into() },
        },
        LayerStatus {
            layer: Layer::Landlock,
            in_force: abi > 0,
            detail: if abi > 0 { format!("Landlock ABI v{abi}") } else { "Landlock is not enabled in this kernel".into() },
        },
        LayerStatus {
            layer: Layer::CgroupBpf,
            in_force: false,
            detail: "this rauhad attaches no cgroup-BPF socket programs; zones have their own network namespace".into(),
        },
        LayerStatus { layer: Layer::BpfLsm, in_force: false, detail: bpf_lsm_reason() },
    ]
}

/// Whether this kernel lets rauhad make user namespaces.
fn user_namespaces_on_node() -> LayerStatus {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    LayerStatus {
        layer: Layer::UserNamespace,
        in_force: max.is_some_and(|m| m > 0),
        detail: match max {
            Some(0) => "user namespaces are off (user.max_user_namespaces = 0)".into(),
            Some(_) => "user namespaces available".into(),
            None => "the kernel has no user namespaces".into(),
        },
    }
}

/// The layers in force in one zone: the node's, narrowed by what the zone's
/// agent reported it applies to each process.
pub fn for_zone(
    node: &[LayerStatus],
    layout: &str,
    handle: &ZoneHandle,
    policy: &Policy,
    cgroup_programs: Result<(), String>,
) -> Enforcement {
    let ready = &handle.ready;
    let caps = if policy.capabilities.allowed.is_empty() {
        "none".to_string()
    } else {
        policy.capabilities.allowed.join(", ")
    };
    let node_detail = |layer: Layer| {
        node.iter()
            .find(|l| l.layer == layer)
            .map(|l| l.detail.clone())
            .unwrap_or_default()
    };
    let note = |prefix: &str| ready.notes.iter().find(|n| n.starts_with(prefix)).cloned();
    let layers = vec![
        LayerStatus {
            layer: Layer::NamespacesCgroups,
            in_force: true,
            detail: format!(
                "{}; cgroup {layout}; capabilities kept: {caps}; no_new_privs",
                namespaces_detail(policy)
            ),
        },
        LayerStatus {
            layer: Layer::UserNamespace,
            in_force: ready.user_namespace.is_some(),
            detail: match ready.user_namespace {
                Some(base) => format!(
                    "the zone's root is host uid {base} (zone ids 0-65535 are host ids {base}-{})",
                    base + 65_535
                ),
                None => note("user namespace")
                    .map(|n| n.trim_start_matches("user namespace: ").to_string())
                    .unwrap_or_else(|| "the zone's root is host root".into()),
            },
        },
        LayerStatus {
            layer: Layer::Seccomp,
            in_force: ready.seccomp,
            detail: if ready.seccomp {
                format!(
                    "{} system calls fail with EPERM{}",
                    policy.syscalls.deny.len(),
                    if policy.syscalls.deny.iter().any(|c| c == "unshare") {
                        "; no new namespaces (clone's namespace flags fail with EPERM, clone3 with ENOSYS)"
                    } else {
                        ""
                    }
                )
            } else {
                note("seccomp").unwrap_or_else(|| node_detail(Layer::Seccomp))
            },
        },
        LayerStatus {
            layer: Layer::Landlock,
            in_force: ready.landlock_abi > 0,
            detail: if ready.landlock_abi > 0 {
                format!("ABI v{}: filesystem access limited to the policy's readable and writable paths", ready.landlock_abi)
            } else {
                note("landlock").unwrap_or_else(|| node_detail(Layer::Landlock))
            },
        },
        bpf_layer(node, Layer::CgroupBpf, handle, cgroup_programs),
        bpf_layer(node, Layer::BpfLsm, handle, Ok(())),
    ];
    Enforcement::new(layers, policy)
}

/// A BPF layer is in force in a zone when it is on the node, the zone has
/// its entry in the maps, and its programs run for the zone's cgroup
/// (`attached`: `Err` says why not, as the kernel reports it).
fn bpf_layer(
    node: &[LayerStatus],
    layer: Layer,
    handle: &ZoneHandle,
    attached: Result<(), String>,
) -> LayerStatus {
    let on_node = node.iter().find(|l| l.layer == layer);
    let in_force = on_node.is_some_and(|l| l.in_force) && handle.bpf_zone != 0 && attached.is_ok();
    LayerStatus {
        layer,
        in_force,
        detail: match (on_node, attached) {
            (Some(l), Err(why)) if l.in_force => why,
            (Some(l), _) if l.in_force && handle.bpf_zone == 0 => {
                "the zone has no entry in the BPF maps (made before the programs were loaded)"
                    .into()
            }
            (Some(l), _) => l.detail.clone(),
            (None, _) => String::new(),
        },
    }
}

fn ns_id(pid: &str, ns: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|p| p.display().to_string())
}

/// Which namespaces are the zone's own, which the host's (a privileged pod's
/// hostPID/hostIPC, `network.mode = "host"`: weaker, and said so).
fn namespaces_detail(policy: &Policy) -> String {
    use rauha_spec::policy::NetworkMode;
    let host_net = policy.network.mode == NetworkMode::Host;
    let mut own = vec!["mount", "uts", "cgroup"];
    let mut shared = Vec::new();
    for (name, host) in [
        ("pid", policy.zone.host_pid),
        ("ipc", policy.zone.host_ipc),
        ("net", host_net),
    ] {
        if host {
            shared.push(name);
        } else {
            own.push(name);
        }
    }
    let net = match policy.network.mode {
        NetworkMode::Loopback => " (net: loopback only)",
        NetworkMode::None => " (net: no interface up)",
        NetworkMode::Bridged => " (net: an address on rauhad's bridge, filtered per zone)",
        NetworkMode::Joined => " (net: joined, e.g. a pod's)",
        NetworkMode::Host => "",
    };
    let mut out = format!("{} namespaces{net}", own.join(", "));
    if !shared.is_empty() {
        out.push_str(&format!(
            "; WEAKER: the host's {} namespace{} shared",
            shared.join(", "),
            if shared.len() > 1 { "s" } else { "" }
        ));
    }
    out
}

/// Reads back what is in force: namespaces of the agent against the host's,
/// cgroup limits, and each running process's hardening.
pub fn verify(
    cgroups: &dyn CgroupDriver,
    handle: &ZoneHandle,
    policy: &Policy,
    alive: bool,
) -> Vec<Check> {
    let mut checks = vec![Check {
        name: "zone agent".into(),
        ok: alive,
        detail: if alive {
            format!("pid {} (host)", handle.agent_pid)
        } else {
            "not running".into()
        },
    }];
    if !alive {
        return checks;
    }
    let agent = handle.agent_pid.to_string();
    for ns in ["pid", "mnt", "uts", "ipc", "net", "cgroup"] {
        let zone = ns_id(&agent, ns);
        let host = ns_id("self", ns);
        let own = zone.is_some() && zone != host;
        checks.push(Check {
            name: format!("{ns} namespace"),
            ok: own,
            detail: if own {
                format!("own ({})", zone.unwrap_or_default())
            } else {
                "shared with the host".into()
            },
        });
    }
    let zone = handle
        .cgroup
        .clone()
        .unwrap_or_else(|| handle.zone_id.to_string());
    match cgroups.usage(&zone) {
        Ok(u) => {
            let mem_ok = policy
                .resources
                .memory_limit
                .is_none_or(|m| u.memory_limit_bytes == m);
            checks.push(Check {
                name: "memory limit".into(),
                ok: mem_ok,
                detail: format!("{} bytes", u.memory_limit_bytes),
            });
            let pids_ok = policy.resources.pids_max.is_none_or(|p| u.pids_max == p);
            checks.push(Check {
                name: "pids limit".into(),
                ok: pids_ok,
                detail: format!("{}", u.pids_max),
            });
        }
        Err(e) => checks.push(Check {
            name: "cgroup".into(),
            ok: false,
            detail: e.to_string(),
        }),
    }
    for pid in cgroups.pids(&zone).unwrap_or_default() {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let name = field("Name:");
        if name == "rauha-guest-age" {
            continue;
        }
        let nnp = field("NoNewPrivs:") == "1";
        let seccomp = field("Seccomp:");
        let want_seccomp = if handle.ready.seccomp { "2" } else { "0" };
        checks.push(Check {
            name: format!("process {pid} ({name})"),
            ok: nnp && seccomp == want_seccomp,
            detail: format!(
                "no_new_privs={}, seccomp mode {seccomp}, effective caps {}",
                u8::from(nnp),
                field("CapEff:")
            ),
        });
    }
    checks
}
