//! Zone and task specs, and the zone lifecycle state.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// Where a zone's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RootSpec {
    /// Read-only binds of the host paths the policy lets the zone read.
    #[default]
    HostView,
    /// An OCI bundle: a directory with `config.json` and its `root.path`.
    Bundle { path: String },
    /// An image from the node's store: its unpacked layers (bottom first)
    /// under a writable layer of the zone's own, discarded with the zone.
    Image {
        /// The name it was chosen by (`registry/repository:tag`).
        reference: String,
        /// The image manifest's digest.
        digest: String,
        layers: Vec<ImageLayer>,
    },
}

/// One layer of an image root: its blob's digest and where it is unpacked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageLayer {
    pub digest: String,
    /// The snapshot directory on the host.
    pub path: String,
}

/// The image a task's root came from, as its result names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageUsed {
    pub reference: String,
    pub digest: String,
}

impl RootSpec {
    /// The image the root is made from, if it is one.
    pub fn image(&self) -> Option<ImageUsed> {
        match self {
            RootSpec::Image {
                reference, digest, ..
            } => Some(ImageUsed {
                reference: reference.clone(),
                digest: digest.clone(),
            }),
            _ => None,
        }
    }
}

/// A host directory (a repository) shown in the zone through a
/// copy-on-write overlay: the zone's writes go to an upper layer and the
/// directory is untouched while the task runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkspaceSpec {
    /// Absolute host path of the repository.
    pub repo_path: String,
    /// Where it appears in the zone.
    pub target: String,
}

/// Where a workspace appears when the task names no place.
pub const DEFAULT_WORKSPACE_TARGET: &str = "/workspace";

/// What a zone is made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ZoneSpec {
    pub name: String,
    pub policy: Policy,
    pub root: RootSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceSpec>,
}

/// Where a zone is in its life: `creating` → `created` → `running` ⇄
/// `paused`; `stopped` after `zone stop`; `deleting` → destroyed (gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ZoneState {
    /// Recorded; kernel objects being made.
    Creating,
    /// Built, its agent up; no work started yet.
    Created,
    /// Work has been started in it.
    Running,
    /// Every process of its work is frozen.
    Paused,
    /// Its work was stopped (killed); new work may start again.
    Stopped,
    /// Being torn down.
    Deleting,
}

impl ZoneState {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneState::Creating => "creating",
            ZoneState::Created => "created",
            ZoneState::Running => "running",
            ZoneState::Paused => "paused",
            ZoneState::Stopped => "stopped",
            ZoneState::Deleting => "deleting",
        }
    }

    /// Whether the zone is built and its agent expected alive.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            ZoneState::Created | ZoneState::Running | ZoneState::Paused | ZoneState::Stopped
        )
    }

    /// New work can start (and makes the zone `running`).
    pub fn can_run(self) -> bool {
        matches!(
            self,
            ZoneState::Created | ZoneState::Running | ZoneState::Stopped
        )
    }

    pub fn can_pause(self) -> bool {
        self == ZoneState::Running
    }

    pub fn can_resume(self) -> bool {
        self == ZoneState::Paused
    }

    pub fn can_stop(self) -> bool {
        matches!(
            self,
            ZoneState::Created | ZoneState::Running | ZoneState::Paused
        )
    }

    /// A zone can be deleted in any state: a half-made zone must be removable.
    pub fn can_delete(self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::ZoneState::*;

    #[test]
    fn transitions_follow_the_lifecycle() {
        assert!(Created.can_run() && Running.can_run() && Stopped.can_run());
        assert!(!Paused.can_run() && !Creating.can_run() && !Deleting.can_run());
        assert!(Running.can_pause() && !Created.can_pause() && !Paused.can_pause());
        assert!(Paused.can_resume() && !Running.can_resume());
        assert!(Paused.can_stop() && Running.can_stop() && !Stopped.can_stop());
        assert!([Creating, Created, Running, Paused, Stopped, Deleting]
            .iter()
            .all(|s| s.can_delete()));
    }
}

/// One piece of work: the command, its environment and working directory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs: the whole environment (nothing is inherited).
    pub env: Vec<String>,
    /// Working directory inside the zone; `/` when empty.
    pub cwd: String,
    /// Who runs it inside the zone; the zone's root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ProcessUser>,
    /// Give it a terminal (stdout and stderr become one stream).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminal: bool,
    /// Run in the zone's container root of this name, not the zone's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// What a pod container's OCI spec asks of the kernel for it, applied
    /// as runc applies it and held to the zone's pod policy; absent, the
    /// zone's policy alone decides (tasks, `rauha exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<ProcessSecurity>,
    /// Ports the zone publishes while it runs (`[HOST_IP:]HOST_PORT:
    /// ZONE_PORT[/tcp|udp]`); the zone must be bridged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
}

/// A process's capability sets and privileges, from an OCI spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ProcessSecurity {
    /// `CAP_` names, each set as OCI `process.capabilities` has it.
    #[serde(default)]
    pub bounding: Vec<String>,
    #[serde(default)]
    pub effective: Vec<String>,
    #[serde(default)]
    pub permitted: Vec<String>,
    #[serde(default)]
    pub inheritable: Vec<String>,
    #[serde(default)]
    pub ambient: Vec<String>,
    /// `process.noNewPrivileges`: no setuid or file capability raises it.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// The spec's seccomp profile; none: the pod policy's `syscalls.deny`
    /// (under `baseline` and `restricted`) or nothing (`privileged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<crate::seccomp::SeccompProfile>,
    /// `process.rlimits`: each resource limit the process starts with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<Rlimit>,
    /// `process.oomScoreAdj` (-1000 to 1000): the kubelet's by QoS class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
}

/// A resource limit of a process (`RLIMIT_NOFILE` and its soft and hard
/// values).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// A user and its groups, as numbers inside the zone.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<u32>,
}
