//! `rauha-spec` is Rauha's contract and nothing else: the TOML policy, zone and
//! task specs, the task result envelope, events, enforcement layers and the
//! strength score, with validation that names the file, line, key and fix.
//!
//! It performs no I/O (callers hand it text and get typed values or precise
//! errors back) so that the daemon, the CLI, the zone agent, the shim and the
//! operator's CRDs all share one definition of every object.

pub mod duration;
pub mod egress;
pub mod enforcement;
pub mod event;
pub mod message;
pub mod names;
pub mod netrules;
pub mod pod_security;
pub mod policy;
pub mod presets;
pub mod result;
pub mod seccomp;
pub mod size;
pub mod syscall_table;
pub mod zone;

pub use enforcement::{Enforcement, EnforcementMode, Layer, LayerStatus};
pub use event::{EnforcementEvent, Event, EventKind};
pub use policy::{Policy, PolicyError};
pub use result::{TaskResult, TaskStatus};
pub use zone::{
    ImageLayer, ImageUsed, RootSpec, WorkspaceSpec, ZoneSpec, ZoneState, DEFAULT_WORKSPACE_TARGET,
};

#[cfg(test)]
mod schema_tests {
    //! The operator embeds these types in CRDs: their JSON schemas must build.

    #[test]
    fn schemas_build_for_crd_types() {
        let policy =
            serde_json::to_value(schemars::schema_for!(crate::Policy)).expect("policy schema");
        assert!(policy.to_string().contains("memory_limit"));
        let result =
            serde_json::to_value(schemars::schema_for!(crate::TaskResult)).expect("result schema");
        for field in ["task_id", "exit_code", "enforcement", "stdout_truncated"] {
            assert!(result.to_string().contains(field), "{field}");
        }
        let spec =
            serde_json::to_value(schemars::schema_for!(crate::ZoneSpec)).expect("zone spec schema");
        assert!(spec.to_string().contains("bundle"));
    }
}
