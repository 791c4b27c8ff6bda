//! An OCI seccomp profile (`linux.seccomp` of a runtime spec), as a pod's
//! container asks for it: containerd's RuntimeDefault, a `Localhost`
//! profile, or none. Parsed and checked here; the zone agent compiles it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a matching system call gets.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum SeccompAction {
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    #[serde(rename = "SCMP_ACT_KILL", alias = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
}

/// A comparison of one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SeccompOp {
    #[serde(rename = "SCMP_CMP_NE")]
    NotEqual,
    #[serde(rename = "SCMP_CMP_LT")]
    LessThan,
    #[serde(rename = "SCMP_CMP_LE")]
    LessOrEqual,
    #[serde(rename = "SCMP_CMP_EQ")]
    Equal,
    #[serde(rename = "SCMP_CMP_GE")]
    GreaterOrEqual,
    #[serde(rename = "SCMP_CMP_GT")]
    GreaterThan,
    /// `(arg & value) == value_two`.
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEqual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeccompArg {
    pub index: u8,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: SeccompOp,
}

/// Calls by name with one action; every condition in `args` must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeccompSyscall {
    pub names: Vec<String>,
    pub action: SeccompAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<SeccompArg>,
}

/// The profile: what a call gets that no rule names, and the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeccompProfile {
    pub default_action: SeccompAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<SeccompSyscall>,
}

/// EPERM: what `SCMP_ACT_ERRNO` returns without an `errnoRet`.
pub const DEFAULT_ERRNO: u32 = 1;

impl SeccompProfile {
    /// An OCI `linux.seccomp` object (JSON). Fields Rauha does not use
    /// (`architectures`, `flags`) are ignored; a profile that needs a
    /// listener (`SCMP_ACT_NOTIFY`) or another architecture's calls only is
    /// refused with the reason.
    pub fn from_oci(value: &serde_json::Value) -> Result<SeccompProfile, String> {
        if value
            .get("listenerPath")
            .and_then(|p| p.as_str())
            .is_some_and(|p| !p.is_empty())
        {
            return Err("linux.seccomp.listenerPath: a seccomp notify listener is not supported; use a profile without SCMP_ACT_NOTIFY".into());
        }
        if let Some(archs) = value.get("architectures").and_then(|a| a.as_array()) {
            let native = archs.is_empty()
                || archs.iter().any(|a| {
                    matches!(
                        a.as_str(),
                        Some("SCMP_ARCH_X86_64") | Some("SCMP_ARCH_NATIVE")
                    )
                });
            if !native {
                return Err("linux.seccomp.architectures: the profile does not cover SCMP_ARCH_X86_64, this node's architecture".into());
            }
        }
        serde_json::from_value(value.clone()).map_err(|e| {
            let e = e.to_string();
            if e.contains("SCMP_ACT_NOTIFY") {
                "linux.seccomp: SCMP_ACT_NOTIFY needs a listener, which is not supported; use SCMP_ACT_ERRNO".into()
            } else {
                format!("linux.seccomp: {e}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_oci_profile_parses_and_bad_ones_say_why() {
        let p = SeccompProfile::from_oci(&json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]}))
        .expect("containerd's default shape");
        assert_eq!(p.default_action, SeccompAction::Errno);
        assert_eq!(p.syscalls[1].args[0].op, SeccompOp::MaskedEqual);
        assert_eq!(p.syscalls[2].errno_ret, Some(38));
        let notify = SeccompProfile::from_oci(&json!({"defaultAction": "SCMP_ACT_NOTIFY"}))
            .expect_err("notify");
        assert!(notify.contains("listener"), "{notify}");
        let arm = SeccompProfile::from_oci(
            &json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"]}),
        )
        .expect_err("arch");
        assert!(arm.contains("X86_64"), "{arm}");
        let bad = SeccompProfile::from_oci(&json!({"defaultAction": "SCMP_ACT_FLY"}))
            .expect_err("action");
        assert!(bad.starts_with("linux.seccomp: "), "{bad}");
    }
}
