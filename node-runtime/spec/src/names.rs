//! Names the contract accepts: zone names (DNS labels), Linux capabilities
//! and system calls.

use crate::syscall_table;

/// Every Linux capability by its `CAP_` name, indexed by its number.
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Capabilities a zone may never hold, whatever its policy says: each one
/// is a documented way out of a container boundary.
pub const FORBIDDEN_CAPABILITIES: &[&str] = &[
    "CAP_SYS_ADMIN",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_PTRACE",
    "CAP_SYS_BOOT",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_DAC_READ_SEARCH",
];

/// Linux's resource limits (`RLIMIT_` names) by number.
pub const RLIMITS: &[&str] = &[
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

/// The number of a resource limit by its OCI name (`RLIMIT_NOFILE`).
pub fn rlimit_number(name: &str) -> Option<u32> {
    RLIMITS.iter().position(|n| *n == name).map(|n| n as u32)
}

/// The number of a capability given by name (`CAP_CHOWN` or `chown`).
pub fn capability_number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    CAPABILITIES
        .iter()
        .position(|c| *c == full)
        .and_then(|i| u32::try_from(i).ok())
}

/// The x86_64 number of a system call given by name.
pub fn syscall_number(name: &str) -> Option<u32> {
    syscall_table::X86_64
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, nr)| *nr)
}

/// Why a zone name is not a DNS label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneNameError {
    #[error("zone name is empty; use 1-63 lowercase letters, digits and '-'")]
    Empty,
    #[error("zone name {} is {len} characters long; use at most 63", crate::message::quote(.name))]
    TooLong { name: String, len: usize },
    #[error("zone name {} has {bad:?}; use only lowercase letters, digits and '-'", crate::message::quote(.name))]
    BadCharacter { name: String, bad: char },
    #[error("zone name {} must start and end with a lowercase letter or digit", crate::message::quote(.name))]
    BadEdge { name: String },
    #[error("zone name {} has the shape of a zone id (a UUID), which would make lookups ambiguous; pick a name that is not a UUID", crate::message::quote(.name))]
    LooksLikeId { name: String },
}

/// Checks that `name` is a DNS label (RFC 1123): what Kubernetes accepts as a
/// name, so a zone name is usable as a hostname and as an object name.
pub fn validate_zone_name(name: &str) -> Result<(), ZoneNameError> {
    if name.is_empty() {
        return Err(ZoneNameError::Empty);
    }
    if name.len() > 63 {
        return Err(ZoneNameError::TooLong {
            name: name.chars().take(70).collect(),
            len: name.len(),
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(ZoneNameError::BadCharacter {
            name: name.to_string(),
            bad,
        });
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(ZoneNameError::BadEdge {
            name: name.to_string(),
        });
    }
    // A reference that parses as a UUID is an id, always: a name of that
    // shape could never be looked up by name (and a delete by it would
    // reach the zone whose id it is).
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(ZoneNameError::LooksLikeId {
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_numbers_match_the_kernel() {
        assert_eq!(capability_number("CAP_CHOWN"), Some(0));
        assert_eq!(capability_number("net_bind_service"), Some(10));
        assert_eq!(capability_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(capability_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(capability_number("CAP_NOPE"), None);
    }

    #[test]
    fn syscall_numbers_match_x86_64() {
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("mount"), Some(165));
        assert_eq!(syscall_number("nope"), None);
    }

    #[test]
    fn zone_names_are_dns_labels() {
        assert!(validate_zone_name("frontend-1").is_ok());
        assert_eq!(validate_zone_name(""), Err(ZoneNameError::Empty));
        assert!(matches!(
            validate_zone_name("Front"),
            Err(ZoneNameError::BadCharacter { bad: 'F', .. })
        ));
        assert!(matches!(
            validate_zone_name("-a"),
            Err(ZoneNameError::BadEdge { .. })
        ));
        assert!(matches!(
            validate_zone_name(&"a".repeat(64)),
            Err(ZoneNameError::TooLong { len: 64, .. })
        ));
    }

    #[test]
    fn a_name_shaped_as_an_id_is_refused() {
        for id in [
            "00000000-0000-0000-0000-000000000000",
            "e45aacac-f105-4cc9-87c6-78fa6066098a",
            "e45aacacf1054cc987c678fa6066098a",
        ] {
            assert!(
                matches!(
                    validate_zone_name(id),
                    Err(ZoneNameError::LooksLikeId { .. })
                ),
                "{id}"
            );
        }
        // Close to one, but not a UUID: fine.
        assert!(validate_zone_name("e45aacac-f105-4cc9-87c6-78fa6066098").is_ok());
        assert!(validate_zone_name("k8s-io-6eacc4e4a090b3d4772f978914762878").is_ok());
    }
}
