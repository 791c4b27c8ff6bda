//! The shim's errors, and their one mapping to ttrpc statuses
//! (`From<Error> for ttrpc::Error`). rauhad's gRPC codes map one to one
//! onto ttrpc's (`rauhad_code`), so containerd sees what rauhad said.

use std::path::PathBuf;

use containerd_shim::protos::ttrpc;
use ttrpc::Code;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A container or exec the shim does not know.
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// A request about a process that already ended.
    #[error("process already finished")]
    Finished,
    /// A container deleted while the request waited.
    #[error("{0} was deleted")]
    Deleted(String),
    #[error("pod sandbox {sandbox} of container {container} is not served by this shim")]
    SandboxNotServed { sandbox: String, container: String },
    #[error("process {0} was already started")]
    AlreadyStarted(String),
    #[error("process {0} is running; kill it before deleting it")]
    Running(String),
    #[error("process {0} is not running")]
    NotRunning(String),
    #[error("container {0} is stopped; exec needs a running task")]
    Stopped(String),
    #[error("container {id} shares its zone with its pod; {what} the pod's sandbox instead")]
    SharesPodZone { id: String, what: String },
    #[error("exec {0} already exists")]
    ExecExists(String),
    #[error("rauha cannot restore checkpoints; create the task without --checkpoint")]
    Checkpoint,
    #[error("the exec request has no process spec")]
    NoExecSpec,
    #[error("resources are not OCI LinuxResources in JSON: {0}")]
    ResourcesNotJson(serde_json::Error),
    #[error("cannot create {}: {source}", path.display())]
    RootfsDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot mount the root filesystem ({kind}): {source}")]
    Mount {
        kind: String,
        source: containerd_shim::Error,
    },
    /// What containerd handed over (the bundle's spec, an exec's process)
    /// is not what the shim can run.
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// The bundle's `config.json` cannot be read.
    #[error("{0}")]
    Bundle(#[from] BundleError),
    /// A zone policy rauhad gave back does not parse.
    #[error("{0}")]
    Policy(#[from] rauha_spec::PolicyError),
    /// A message for containerd could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: containerd_shim::protos::protobuf::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    /// What rauhad answered.
    #[error("{}", .0.message())]
    Rauhad(#[from] tonic::Status),
}

/// What containerd handed over that the shim cannot run as given.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the OCI process has no args; give the image a command")]
    NoArgs,
    #[error("the exec spec is not an OCI process in JSON: {0}")]
    ExecNotJson(serde_json::Error),
    #[error("annotation {annotation}: {value:?} is neither a preset ({presets}) nor a TOML policy", presets = rauha_spec::presets::names().join(", "))]
    NotAPolicy {
        annotation: &'static str,
        value: String,
    },
    #[error("{0}")]
    Policy(#[from] rauha_spec::PolicyError),
    #[error("annotation rauha.dev/secret-env: {0}; it maps environment variable names to the paths where the pod mounts each Secret's file")]
    SecretEnv(String),
    #[error("rauha handler config: {0}")]
    Config(String),
    #[error("{0}")]
    PodSecurity(#[from] rauha_spec::pod_security::Refusal),
    #[error("annotation rauha.dev/workspace: {0}; it names the workspace directory and where each input's mounted files go in it")]
    Workspace(String),
}

/// An OCI bundle's `config.json` that cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not JSON: {source}", path.display())]
    NotJson {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A saved state the shim cannot take back.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a saved pod state: {source}", path.display())]
    NotState {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("container {id} in {}: {field:?} is not hex", path.display())]
    NotHex {
        id: String,
        path: PathBuf,
        field: String,
    },
    #[error("container {id} in {}: {source}", path.display())]
    Decode {
        id: String,
        path: PathBuf,
        source: prost::DecodeError,
    },
}

/// rauhad's gRPC code as ttrpc's.
fn rauhad_code(code: tonic::Code) -> Code {
    match code {
        tonic::Code::NotFound => Code::NOT_FOUND,
        tonic::Code::AlreadyExists => Code::ALREADY_EXISTS,
        tonic::Code::InvalidArgument => Code::INVALID_ARGUMENT,
        tonic::Code::FailedPrecondition => Code::FAILED_PRECONDITION,
        tonic::Code::Unavailable => Code::UNAVAILABLE,
        tonic::Code::PermissionDenied => Code::PERMISSION_DENIED,
        tonic::Code::ResourceExhausted => Code::RESOURCE_EXHAUSTED,
        tonic::Code::DeadlineExceeded => Code::DEADLINE_EXCEEDED,
        tonic::Code::Unimplemented => Code::UNIMPLEMENTED,
        _ => Code::INTERNAL,
    }
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound { .. }
            | Error::Finished
            | Error::Deleted(_)
            | Error::SandboxNotServed { .. } => Code::NOT_FOUND,
            Error::AlreadyStarted(_)
            | Error::Running(_)
            | Error::NotRunning(_)
            | Error::Stopped(_)
            | Error::SharesPodZone { .. } => Code::FAILED_PRECONDITION,
            Error::ExecExists(_) => Code::ALREADY_EXISTS,
            Error::Checkpoint => Code::UNIMPLEMENTED,
            Error::Spec(_) | Error::Bundle(_) | Error::NoExecSpec | Error::ResourcesNotJson(_) => {
                Code::INVALID_ARGUMENT
            }
            Error::Policy(_)
            | Error::Encode { .. }
            | Error::Io { .. }
            | Error::RootfsDir { .. }
            | Error::Mount { .. } => Code::INTERNAL,
            Error::Rauhad(s) => rauhad_code(s.code()),
        }
    }

    pub fn container(id: &str) -> Error {
        Error::NotFound {
            kind: "container",
            id: id.to_string(),
        }
    }

    pub fn exec(id: &str) -> Error {
        Error::NotFound {
            kind: "exec",
            id: id.to_string(),
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

/// rauhad's answer as containerd's error (for `map_err` on a gRPC call).
pub fn ttrpc_error(s: tonic::Status) -> ttrpc::Error {
    Error::Rauhad(s).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: Error) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_error_keeps_its_code_and_one_line() {
        assert_eq!(
            status(Error::container("c1")),
            (Code::NOT_FOUND, "container c1 not found".into())
        );
        assert_eq!(
            status(Error::exec("e1")),
            (Code::NOT_FOUND, "exec e1 not found".into())
        );
        assert_eq!(status(Error::Finished).0, Code::NOT_FOUND);
        assert_eq!(
            status(Error::Rauhad(tonic::Status::failed_precondition(
                "zone is paused"
            ))),
            (Code::FAILED_PRECONDITION, "zone is paused".into())
        );
        for (grpc, ttrpc) in [
            (tonic::Code::NotFound, Code::NOT_FOUND),
            (tonic::Code::AlreadyExists, Code::ALREADY_EXISTS),
            (tonic::Code::InvalidArgument, Code::INVALID_ARGUMENT),
            (tonic::Code::Unavailable, Code::UNAVAILABLE),
            (tonic::Code::PermissionDenied, Code::PERMISSION_DENIED),
            (tonic::Code::ResourceExhausted, Code::RESOURCE_EXHAUSTED),
            (tonic::Code::DeadlineExceeded, Code::DEADLINE_EXCEEDED),
            (tonic::Code::Unimplemented, Code::UNIMPLEMENTED),
            (tonic::Code::Internal, Code::INTERNAL),
        ] {
            assert_eq!(
                status(Error::Rauhad(tonic::Status::new(grpc, "x"))).0,
                ttrpc
            );
        }
    }
}
