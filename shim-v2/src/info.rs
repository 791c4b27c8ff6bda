//! `containerd-shim-rauha-v2 -info`: what containerd 2.x asks a runtime
//! about itself (`RuntimeInfo` of containerd's introspection API, on
//! stdout): its name, version, and the OCI runtime features it honours
//! (`features.md` of the runtime spec). containerd's CRI reads, among them,
//! whether the runtime makes recursive read-only mounts (`rro`).

use prost::Message;

/// `containerd.types.RuntimeInfo` (api/types/introspection.proto).
#[derive(Clone, PartialEq, Message)]
struct RuntimeInfo {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    version: Option<RuntimeVersion>,
    #[prost(message, optional, tag = "4")]
    features: Option<prost_types_any::Any>,
}

#[derive(Clone, PartialEq, Message)]
struct RuntimeVersion {
    #[prost(string, tag = "1")]
    version: String,
    #[prost(string, tag = "2")]
    revision: String,
}

mod prost_types_any {
    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
}

/// The type containerd registers the runtime spec's `Features` under.
const FEATURES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// The mount options a container root honours (`backend-linux` roots):
/// only those, so that containerd asks for nothing Rauha would ignore.
pub const MOUNT_OPTIONS: &[&str] = &[
    "bind", "rbind", "ro", "rro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
    "private", "rprivate", "slave", "rslave",
];

/// The runtime spec's `Features` document for this shim.
pub fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                    "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                    "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86_64"]
            }
        }
    })
}

/// The encoded `RuntimeInfo` answer.
pub fn runtime_info() -> Vec<u8> {
    RuntimeInfo {
        name: crate::RUNTIME_ID.to_string(),
        version: Some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: String::new(),
        }),
        features: Some(prost_types_any::Any {
            type_url: FEATURES_TYPE.to_string(),
            value: features().to_string().into_bytes(),
        }),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_info_names_the_shim_and_its_mount_options() {
        let info = RuntimeInfo::decode(runtime_info().as_slice()).expect("decodes");
        assert_eq!(info.name, "io.containerd.rauha.v2");
        let features = info.features.expect("features");
        assert_eq!(features.type_url, FEATURES_TYPE);
        let doc: serde_json::Value = serde_json::from_slice(&features.value).expect("JSON");
        let opts = doc["mountOptions"].as_array().expect("list");
        assert!(opts.iter().any(|o| o == "rro"));
        assert!(
            !opts.iter().any(|o| o == "rshared"),
            "not honoured both ways"
        );
    }
}
