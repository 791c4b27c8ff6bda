//! Kubernetes' Pod Security Standards as ceilings on what a pod's OCI spec
//! may ask of its zone. A pod policy names its level (`[pod] security`);
//! the shim reads what the spec asks ([`Ask`]) and [`check`] refuses a spec
//! that asks for more than the level allows, with one line that names the
//! field and the level that would allow it. Nothing here loosens a zone:
//! what a level allows, the spec must still ask for.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Pod Security Standard.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Unrestricted: what runc gives a privileged pod (every capability,
    /// no seccomp unless the spec has one).
    Privileged,
    /// Known privilege escalations refused: no host namespaces, no
    /// capabilities beyond the runtime's default set, safe sysctls only,
    /// RuntimeDefault-equivalent seccomp where the spec gives none.
    Baseline,
    /// Baseline, and a non-root user, no privilege escalation, no
    /// capability but `CAP_NET_BIND_SERVICE`.
    Restricted,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Privileged, Level::Baseline, Level::Restricted];

    pub fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }

    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The capabilities a container may hold at this level (`None`: all).
    pub fn capabilities(self) -> Option<&'static [&'static str]> {
        match self {
            Level::Privileged => None,
            Level::Baseline => Some(BASELINE_CAPABILITIES),
            Level::Restricted => Some(RESTRICTED_CAPABILITIES),
        }
    }

    /// A setuid binary may raise its process's privileges (the spec's
    /// `noNewPrivileges: false`, Kubernetes' `allowPrivilegeEscalation`).
    pub fn allows_escalation(self) -> bool {
        self != Level::Restricted
    }

    /// Where a spec gives no seccomp profile, the policy's `syscalls.deny`
    /// applies instead (a RuntimeDefault-equivalent list); under
    /// `privileged` none does, as under runc.
    pub fn filters_unconfined(self) -> bool {
        self != Level::Privileged
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The runtime's default set (containerd's and Docker's): what Pod
/// Security's baseline lets a pod add, and `CAP_NET_RAW`, which the
/// runtime gives every container by default (baseline does not list it as
/// addable, but a pod under baseline holds it on runc).
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Restricted lets a pod add only this one.
pub const RESTRICTED_CAPABILITIES: &[&str] = &["CAP_NET_BIND_SERVICE"];

/// Sysctls Kubernetes calls safe (namespaced, and unable to affect other
/// pods): allowed under baseline and restricted.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_wmem",
];

/// A namespace of the host a pod's spec shares, by the pod field that asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostNamespace {
    Network,
    Pid,
    Ipc,
}

impl HostNamespace {
    /// The OCI `linux.namespaces` type.
    pub fn oci_type(self) -> &'static str {
        match self {
            HostNamespace::Network => "network",
            HostNamespace::Pid => "pid",
            HostNamespace::Ipc => "ipc",
        }
    }

    /// The pod spec's field.
    pub fn pod_field(self) -> &'static str {
        match self {
            HostNamespace::Network => "spec.hostNetwork",
            HostNamespace::Pid => "spec.hostPID",
            HostNamespace::Ipc => "spec.hostIPC",
        }
    }
}

/// What one OCI spec (a pod's sandbox or one of its containers) asks for
/// that a level may refuse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    /// Every capability in any of the process's sets (`CAP_` names).
    pub capabilities: Vec<String>,
    /// Namespaces of the host it shares (absent from `linux.namespaces`).
    pub host_namespaces: Vec<HostNamespace>,
    /// `linux.sysctl`'s keys.
    pub sysctls: Vec<String>,
    /// The process's uid (0 is root).
    pub uid: u32,
    /// `process.noNewPrivileges`.
    pub no_new_privileges: bool,
    /// Destinations of bind mounts that propagate mounts back to the host
    /// (`rshared`/`shared`: `mountPropagation: Bidirectional`).
    pub shared_mounts: Vec<String>,
    /// The pod's sandbox: only the pod's own fields count (host
    /// namespaces, sysctls); its pause process is the runtime's, not the
    /// user's, and runs with no capability at all.
    pub sandbox: bool,
}

/// Why a level refuses a spec: one line, naming the field, what it asked,
/// the level in force and the one that would allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub level: Level,
    /// The pod spec's field (`securityContext.capabilities.add`).
    pub field: &'static str,
    /// What it asked for.
    pub asked: String,
    /// The lowest level that allows it.
    pub allowed_by: Level,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pod policy {:?} refuses {} ({}); the {:?} policy allows it (pod annotation rauha.dev/policy: {})",
            self.level.name(),
            self.field,
            self.asked,
            self.allowed_by.name(),
            self.allowed_by.name()
        )
    }
}

impl std::error::Error for Refusal {}

/// The namespaced sysctls (those a pod may set at all): `net.*`, the IPC
/// ones, and `fs.mqueue.*`.
pub fn namespaced_sysctl(key: &str) -> bool {
    key.starts_with("net.")
        || key.starts_with("fs.mqueue.")
        || matches!(
            key,
            "kernel.shm_rmid_forced"
                | "kernel.shmmax"
                | "kernel.shmall"
                | "kernel.shmmni"
                | "kernel.msgmax"
                | "kernel.msgmnb"
                | "kernel.msgmni"
                | "kernel.sem"
        )
}

/// Holds `ask` to `level`; the first thing it asks beyond the level is
/// refused.
pub fn check(level: Level, ask: &Ask) -> Result<(), Refusal> {
    let refuse = |field, asked: String, allowed_by| {
        Err(Refusal {
            level,
            field,
            asked,
            allowed_by,
        })
    };
    if level == Level::Privileged {
        return Ok(());
    }
    if let Some(ns) = ask.host_namespaces.first() {
        return refuse(
            ns.pod_field(),
            format!("the host's {} namespace", ns.oci_type()),
            Level::Privileged,
        );
    }
    if let (false, Some(allowed)) = (ask.sandbox, level.capabilities()) {
        let mut beyond: Vec<&str> = ask
            .capabilities
            .iter()
            .map(String::as_str)
            .filter(|c| !allowed.contains(c))
            .collect();
        beyond.sort_unstable();
        beyond.dedup();
        if !beyond.is_empty() {
            let allowed_by = if beyond.iter().all(|c| BASELINE_CAPABILITIES.contains(c)) {
                Level::Baseline
            } else {
                Level::Privileged
            };
            let field = if beyond.contains(&"CAP_SYS_ADMIN") {
                "securityContext.privileged or securityContext.capabilities.add"
            } else {
                "securityContext.capabilities.add"
            };
            return refuse(field, beyond.join(", "), allowed_by);
        }
    }
    if let Some(key) = ask
        .sysctls
        .iter()
        .find(|k| !SAFE_SYSCTLS.contains(&k.as_str()))
    {
        return refuse(
            "spec.securityContext.sysctls",
            format!("{key}, not a safe sysctl"),
            Level::Privileged,
        );
    }
    if ask.sandbox {
        return Ok(());
    }
    if let Some(dest) = ask.shared_mounts.first() {
        return refuse(
            "volumeMounts.mountPropagation",
            format!("Bidirectional at {dest}"),
            Level::Privileged,
        );
    }
    if level == Level::Restricted {
        if ask.uid == 0 {
            return refuse(
                "securityContext.runAsNonRoot",
                "uid 0".into(),
                Level::Baseline,
            );
        }
        if !ask.no_new_privileges {
            return refuse(
                "securityContext.allowPrivilegeEscalation",
                "true (the default): set it to false".into(),
                Level::Baseline,
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn runtime_default() -> Ask {
        Ask {
            capabilities: caps(BASELINE_CAPABILITIES),
            ..Ask::default()
        }
    }

    #[test]
    fn an_ordinary_container_passes_baseline_and_privileged() {
        for level in [Level::Privileged, Level::Baseline] {
            check(level, &runtime_default()).unwrap_or_else(|e| panic!("{level}: {e}"));
        }
        let safe = Ask {
            sysctls: caps(&[
                "net.ipv4.ip_unprivileged_port_start",
                "kernel.shm_rmid_forced",
            ]),
            ..runtime_default()
        };
        check(Level::Baseline, &safe).expect("safe sysctls");
    }

    #[test]
    fn baseline_refuses_with_the_field_and_the_level_that_allows_it() {
        let privileged = Ask {
            capabilities: caps(&["CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_NET_ADMIN"]),
            ..Ask::default()
        };
        let e = check(Level::Baseline, &privileged).expect_err("refused");
        assert_eq!(e.allowed_by, Level::Privileged);
        let line = e.to_string();
        assert!(!line.contains('\n'));
        assert!(
            line.contains("CAP_NET_ADMIN, CAP_SYS_ADMIN") && !line.contains("CAP_CHOWN"),
            "{line}"
        );
        assert!(line.contains("rauha.dev/policy: privileged"), "{line}");
        check(Level::Privileged, &privileged).expect("privileged allows all");

        let host = Ask {
            host_namespaces: vec![HostNamespace::Network],
            ..runtime_default()
        };
        let e = check(Level::Baseline, &host).expect_err("hostNetwork");
        assert_eq!(e.field, "spec.hostNetwork");
        assert!(e.to_string().contains("\"baseline\""), "{e}");

        let unsafe_sysctl = Ask {
            sysctls: caps(&["kernel.msgmax"]),
            ..runtime_default()
        };
        assert_eq!(
            check(Level::Baseline, &unsafe_sysctl)
                .expect_err("unsafe")
                .field,
            "spec.securityContext.sysctls"
        );
        let shared = Ask {
            shared_mounts: vec!["/mnt/host".into()],
            ..runtime_default()
        };
        assert!(check(Level::Baseline, &shared)
            .expect_err("propagation")
            .to_string()
            .contains("Bidirectional at /mnt/host"));
    }

    #[test]
    fn restricted_wants_a_user_without_escalation_and_one_capability() {
        let good = Ask {
            capabilities: caps(&["CAP_NET_BIND_SERVICE"]),
            uid: 1000,
            no_new_privileges: true,
            ..Ask::default()
        };
        check(Level::Restricted, &good).expect("restricted");
        let root = Ask {
            uid: 0,
            ..good.clone()
        };
        let e = check(Level::Restricted, &root).expect_err("root");
        assert_eq!(
            (e.field, e.allowed_by),
            ("securityContext.runAsNonRoot", Level::Baseline)
        );
        let escalates = Ask {
            no_new_privileges: false,
            ..good.clone()
        };
        assert_eq!(
            check(Level::Restricted, &escalates).expect_err("nnp").field,
            "securityContext.allowPrivilegeEscalation"
        );
        let e = check(Level::Restricted, &runtime_default()).expect_err("default caps");
        assert_eq!(e.allowed_by, Level::Baseline);
        // A pod's sandbox: its pause process is not held to the container
        // rules, only the pod's fields are.
        let sandbox = Ask {
            sandbox: true,
            ..runtime_default()
        };
        check(Level::Restricted, &sandbox).expect("the sandbox's pause");
        let host_sandbox = Ask {
            host_namespaces: vec![HostNamespace::Network],
            ..sandbox
        };
        assert!(check(Level::Restricted, &host_sandbox).is_err());
    }

    #[test]
    fn levels_parse_by_name() {
        for l in Level::ALL {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse("standard"), None);
        assert!(namespaced_sysctl("net.core.somaxconn"));
        assert!(!namespaced_sysctl("kernel.pid_max"));
    }
}
