//! The custom resources, group `rauha.dev`, version `v1alpha1`: `Zone` and
//! `SandboxTask`. A zone's policy is `rauha-spec`'s own type, so the CLI's
//! TOML and a `Zone` say the same things with the same keys.

// Several `printcolumn(...)` in one `#[kube]` read to clippy as one
// attribute given twice.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "rauha.dev";
/// The label every node that runs Rauha carries (set by the node side).
pub const READY_LABEL: &str = "rauha.dev/ready";
/// The label of a task's pod: the task's name.
pub const TASK_LABEL: &str = "rauha.dev/task";
/// The shim's policy annotation (docs/shim.md).
pub const POLICY_ANNOTATION: &str = "rauha.dev/policy";
/// The shim's annotation of secrets read from mounted files (docs/shim.md).
pub const SECRET_ENV_ANNOTATION: &str = "rauha.dev/secret-env";
/// Where a task's pod mounts each of its secrets (`<dir>/<env>/value`).
pub const SECRETS_DIR: &str = "/run/rauha/secrets";
/// A task's workspace: its working directory, the inputs' files, and what
/// its result lists the changes of (an emptyDir).
pub const WORKSPACE_DIR: &str = "/workspace";
/// Where a task's pod mounts each input ConfigMap (`<dir>/<index>`).
pub const INPUTS_DIR: &str = "/run/rauha/inputs";
/// The shim's annotation of a task's workspace: the directory, and where
/// each input's files go in it (docs/shim.md).
pub const WORKSPACE_ANNOTATION: &str = "rauha.dev/workspace";
/// The label of a shared zone's holder pod: the Zone's name.
pub const ZONE_LABEL: &str = "rauha.dev/zone-holder";
/// The shim's annotation of a pod whose zone is a shared one of its
/// namespace, by this name (the holder pod's).
pub const ZONE_NAME_ANNOTATION: &str = "rauha.dev/zone-name";
/// The shim's annotation of a pod that joins a shared zone of its
/// namespace (a task's pod).
pub const ZONE_ANNOTATION: &str = "rauha.dev/zone";
/// The enforcement a node's rauhad applies (`rauha info`: its label and
/// score), set on the Node by the node side as `rauha.dev/ready` is.
pub const ENFORCEMENT_ANNOTATION: &str = "rauha.dev/enforcement";
pub const ENFORCEMENT_SCORE_ANNOTATION: &str = "rauha.dev/enforcement-score";

/// A preset policy by name, as `rauha sandbox --policy NAME` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Minimal,
    Standard,
    Strict,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Minimal => "minimal",
            Preset::Standard => "standard",
            Preset::Strict => "strict",
        }
    }
}

/// Where a zone's tasks may run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Labels a node must carry (as a pod's `nodeSelector`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// Taints its tasks tolerate (as a pod's `tolerations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
}

/// How a zone's tasks share it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ZoneMode {
    /// Each task runs in a zone of its own, made with this policy.
    #[default]
    PerTask,
    /// One long-lived zone on one node, which several tasks join.
    Shared,
}

/// A zone: a policy and where it applies. Tasks name it in `zoneRef`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "rauha.dev",
    version = "v1alpha1",
    kind = "Zone",
    namespaced,
    status = "ZoneStatus",
    shortname = "zn",
    category = "rauha",
    doc = "A Rauha zone: an isolation policy (the policy TOML's keys, or a preset) and where the tasks that use it run",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Preset", type_ = "string", json_path = ".spec.preset"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Enforcement",
        type_ = "string",
        json_path = ".status.enforcement.level"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ZoneSpec {
    /// A preset policy; `policy` overrides what it sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// The policy, with the keys of the policy TOML (`docs/policy.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<rauha_spec::Policy>,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub mode: ZoneMode,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoneStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The node a shared zone lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The pod that holds a shared zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The enforcement in force on a shared zone's node, as the node
    /// reports it (its rauhad's layers' label and score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<NodeEnforcement>,
}

/// The enforcement a node's rauhad applies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeEnforcement {
    /// The label of its layers (`rauha info`: e.g. `landlock+seccomp`).
    pub level: String,
    /// Its score, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u32>,
}

/// An environment variable of the task's process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EnvVar {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// A Kubernetes Secret's key given to the task as an environment
/// variable, the way `rauha sandbox --secret` does: the value is never in
/// the pod's spec (the pod mounts the Secret; the node reads the file) and
/// is redacted from the result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretRef {
    /// The Secret, in the task's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Its key.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// The environment variable the task sees it as.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub env: String,
}

/// A ConfigMap's files placed in the task's workspace before it starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskInput {
    /// The ConfigMap, in the task's namespace: each key a file.
    #[schemars(length(min = 1, max = 253))]
    pub config_map: String,
    /// The directory under the workspace its files go to (the workspace
    /// itself when empty): relative, with no `.` or `..` component.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(
        length(max = 255),
        regex(pattern = r"^([A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*)?$")
    )]
    pub path: String,
}

/// What the task's process may use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskResources {
    /// CPU, as a pod's quantity (`500m`, `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory, as a pod's quantity (`256Mi`, `1Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// A task: one command in one zone, one result.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "rauha.dev",
    version = "v1alpha1",
    kind = "SandboxTask",
    namespaced,
    status = "SandboxTaskStatus",
    shortname = "st",
    category = "rauha",
    doc = "A command run once in a Rauha zone on some node; its status ends with the result envelope `rauha sandbox --json` prints",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Exit",
        type_ = "integer",
        json_path = ".status.result.exit_code"
    ),
    printcolumn(
        name = "Duration-ms",
        type_ = "integer",
        json_path = ".status.result.duration_ms"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxTaskSpec {
    /// The image the command runs in (`$RAUHA_REGISTRY/rauha/busybox:latest`).
    #[schemars(length(min = 1))]
    pub image: String,
    /// The program and its first arguments (the image's entrypoint when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_refs: Vec<SecretRef>,
    /// Files placed in the task's workspace (`/workspace`, its working
    /// directory) before it starts; what it changes there is listed in its
    /// result (`files_changed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub inputs: Vec<TaskInput>,
    /// A `Zone` of this namespace whose policy and placement the task takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_ref: Option<String>,
    /// A preset policy, when no zone is named (`standard` when neither is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<TaskResources>,
    /// Wall-clock limit; the task ends `TimedOut` past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub timeout_seconds: Option<i64>,
    /// A finished task is deleted this long after it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Not placed yet (no node can take it now).
    Pending,
    /// Its pod is made on a node.
    Scheduled,
    Running,
    Succeeded,
    Failed,
    TimedOut,
}

impl Phase {
    pub fn finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::TimedOut)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Scheduled => "Scheduled",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::TimedOut => "TimedOut",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxTaskStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Why the task is where it is, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The result envelope the node reported (`rauha sandbox --json`'s),
    /// its stdout and stderr capped: `kubectl logs` has them whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub result: Option<serde_json::Value>,
}

/// The CRDs as `kubectl apply` takes them, with what the derive cannot
/// say: a task's spec cannot change once made, and the result is free-form
/// JSON (its shape is `docs/tasks.md`'s envelope, versioned with rauhad).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut task = SandboxTask::crd();
    for version in &mut task.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let Some(props) = schema.properties.as_mut() else {
            continue;
        };
        if let Some(spec) = props.get_mut("spec") {
            spec.x_kubernetes_validations = Some(vec![
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule {
                    rule: "self == oldSelf".into(),
                    message: Some(
                        "a SandboxTask's spec cannot change once it is created; delete the task and create another"
                            .into(),
                    ),
                    ..Default::default()
                },
            ]);
        }
        if let Some(status) = props.get_mut("status") {
            if let Some(result) = status.properties.as_mut().and_then(|p| p.get_mut("result")) {
                *result = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps {
                    type_: Some("object".into()),
                    nullable: Some(true),
                    x_kubernetes_preserve_unknown_fields: Some(true),
                    description: result.description.clone(),
                    ..Default::default()
                };
            }
        }
    }
    vec![Zone::crd(), task]
}

/// A CRD as the YAML `crds/` holds, with a header that says where it
/// comes from.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    let body = serde_yaml::to_string(crd).unwrap_or_default();
    format!("# Generated by `cargo run -p rauha-operator --bin crdgen` from operator/src/crd.rs: do not edit.\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` is what the types say: regenerate it with crdgen when this
    /// fails.
    #[test]
    fn crds_dir_is_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        // The plain manifests and the Helm chart's copy.
        for dir in ["crds", "charts/rauha/files/crds"] {
            for crd in crds() {
                let name = crd.metadata.name.clone().unwrap_or_default();
                let path = root.join(dir).join(format!("{name}.yaml"));
                let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
                assert!(
                    on_disk == to_yaml(&crd),
                    "{} is stale: run `cargo run -p rauha-operator --bin crdgen`",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn a_tasks_spec_is_immutable_and_its_result_free_form() {
        let task = crds()
            .into_iter()
            .find(|c| c.spec.names.kind == "SandboxTask")
            .expect("task CRD");
        let schema = task.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema");
        let props = schema.properties.as_ref().expect("properties");
        let rules = props["spec"]
            .x_kubernetes_validations
            .as_ref()
            .expect("CEL rule");
        assert_eq!(rules[0].rule, "self == oldSelf");
        assert_eq!(
            task.spec.names.short_names.as_deref(),
            Some(&["st".to_string()][..])
        );
        assert_eq!(
            task.spec.names.categories.as_deref(),
            Some(&["rauha".to_string()][..])
        );
    }
}
