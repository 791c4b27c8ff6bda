//! The daemon's errors, and their one mapping to gRPC statuses.
//!
//! Every message is one line saying what is wrong and what to do.

use crate::agent_link::LinkError;
use crate::store::StoreError;
use rauha_backend::{BackendError, FailureKind};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    Policy(#[from] rauha_spec::PolicyError),
    #[error("{kind} {what:?} not found; {hint}")]
    NotFound {
        kind: &'static str,
        what: String,
        hint: &'static str,
    },
    #[error(
        "zone {0:?} already exists; pick another name or delete it with `rauha zone delete {0}`"
    )]
    AlreadyExists(String),
    /// A zone in a state the request cannot act on; `rule` says which
    /// state it needs.
    #[error("zone {zone:?} is {state}; {rule}")]
    ZoneState {
        zone: String,
        state: &'static str,
        rule: String,
    },
    /// A zone whose agent is gone (it died, or an earlier rauhad's did).
    #[error("zone {zone:?} has no live agent{hint}")]
    NoAgent { zone: String, hint: &'static str },
    /// The zone of a running process lost its agent.
    #[error("the process's zone has no live agent")]
    ProcessZoneGone,
    #[error(
        "zone {zone:?} has {count} running process(es); stop them first or delete with --force"
    )]
    ZoneBusy { zone: String, count: usize },
    #[error("enforcement is required but BPF-LSM is not in force: {detail}")]
    EnforcementMissing { detail: String },
    /// The agent refused to start a process.
    #[error("cannot start the command in zone {zone:?}: {source}")]
    Start { zone: String, source: LinkError },
    #[error("process {id} is {state}; it takes no signals or input")]
    ProcessEnded { id: uuid::Uuid, state: &'static str },
    #[error("process {id} is running; stop it first with `rauha stop {id}`")]
    ProcessRunning { id: uuid::Uuid },
    #[error("the output of process {id} was kept in memory by an earlier rauhad and is gone")]
    OutputGone { id: uuid::Uuid },
    #[error("task {id} is still running; ask again when it ends, or wait for it with `rauha task get {id} --wait`")]
    TaskRunning { id: uuid::Uuid },
    /// The secrets directory could not be read or written.
    #[error("{what}: {source}")]
    Secrets {
        what: String,
        source: std::io::Error,
    },
    /// A process id the caller chose that a process of another zone has.
    #[error("process {id} exists in another zone; choose a fresh id")]
    ProcessIdTaken { id: uuid::Uuid },
    /// Work rauhad ran apart from the call ended without an answer (it
    /// panicked or was cancelled).
    #[error("{what} failed: {source}")]
    Aborted {
        what: &'static str,
        source: tokio::task::JoinError,
    },
    /// A watcher that read events slower than they came lost some.
    #[error("{dropped} events were dropped because this watcher fell behind; watch again")]
    WatchLagged { dropped: u64 },
    /// A zone recorded by a backend this rauhad does not run.
    #[error("zone {zone:?} was made by the {backend:?} isolation backend, which this rauhad does not run; start rauhad with it, or delete the zone with --force")]
    UnknownBackend { zone: String, backend: String },
    /// A failure, and the cleanup after it that failed too: both are kept.
    /// A process asks for more than its zone's pod policy allows.
    #[error("zone {zone:?}: {message}")]
    PodPolicy { zone: String, message: String },
    #[error("{primary}; cleaning up after it failed too: {cleanup}")]
    Cleanup {
        primary: Box<DaemonError>,
        cleanup: Box<DaemonError>,
    },
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Link(#[from] LinkError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Image(#[from] rauha_image::ImageError),
    #[error("image {image} is the root of zone(s) {zones}; delete them first, or remove with --force (they keep its layers until deleted)")]
    ImageInUse { image: String, zones: String },
    #[error("bridged network: {0}")]
    Network(#[from] rauha_net::NetError),
    #[error(
        "network.mode = \"bridged\" needs rauhad's bridge, which this rauhad does not run ({0})"
    )]
    NoBridge(String),
}

impl DaemonError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DaemonError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn zone_not_found(what: &str) -> Self {
        DaemonError::NotFound {
            kind: "zone",
            what: what.to_string(),
            hint: "list zones with `rauha zone list`",
        }
    }

    pub fn process_not_found(what: &str) -> Self {
        DaemonError::NotFound {
            kind: "process",
            what: what.to_string(),
            hint: "list processes with `rauha ps`",
        }
    }

    pub fn image_not_found(what: &str) -> Self {
        DaemonError::NotFound {
            kind: "image",
            what: what.to_string(),
            hint:
                "list stored images with `rauha image ls`, or pull it with `rauha image pull NAME`",
        }
    }

    pub fn task_not_found(what: &str) -> Self {
        DaemonError::NotFound {
            kind: "task",
            what: what.to_string(),
            hint: "task ids are printed in each sandbox result",
        }
    }
}

impl From<DaemonError> for tonic::Status {
    fn from(e: DaemonError) -> Self {
        // One line, bounded, whatever a value in it was.
        let message = rauha_spec::message::one_line(&e.to_string());
        match e {
            DaemonError::InvalidArgument { .. } | DaemonError::Policy(_) => {
                tonic::Status::invalid_argument(message)
            }
            DaemonError::NotFound { .. } => tonic::Status::not_found(message),
            DaemonError::AlreadyExists(_) | DaemonError::ProcessIdTaken { .. } => {
                tonic::Status::already_exists(message)
            }
            DaemonError::Aborted { .. } => tonic::Status::internal(message),
            DaemonError::WatchLagged { .. } => tonic::Status::data_loss(message),
            DaemonError::ZoneState { .. }
            | DaemonError::NoAgent { .. }
            | DaemonError::ProcessZoneGone
            | DaemonError::ZoneBusy { .. }
            | DaemonError::EnforcementMissing { .. }
            | DaemonError::Start { .. }
            | DaemonError::ProcessEnded { .. }
            | DaemonError::ProcessRunning { .. }
            | DaemonError::OutputGone { .. }
            | DaemonError::TaskRunning { .. }
            | DaemonError::Secrets { .. }
            | DaemonError::UnknownBackend { .. }
            | DaemonError::ImageInUse { .. }
            | DaemonError::NoBridge(_)
            | DaemonError::Network(rauha_net::NetError::Full { .. })
            | DaemonError::PodPolicy { .. } => tonic::Status::failed_precondition(message),
            DaemonError::Network(_) => tonic::Status::internal(message),
            DaemonError::Image(e) => {
                use rauha_image::ImageError as I;
                match e {
                    I::BadReference { .. } => tonic::Status::invalid_argument(message),
                    I::Unauthorized { .. } => tonic::Status::unauthenticated(message),
                    I::NotInRegistry { .. } => tonic::Status::not_found(message),
                    I::Registry { .. } => tonic::Status::unavailable(message),
                    I::DigestMismatch { .. } => tonic::Status::data_loss(message),
                    I::NoPlatform { .. } | I::Format { .. } | I::Unpack { .. } => {
                        tonic::Status::failed_precondition(message)
                    }
                    I::Io { .. } => tonic::Status::internal(format!(
                        "{message}; check the disk under RAUHA_ROOT/images"
                    )),
                }
            }
            DaemonError::Cleanup { primary, .. } => {
                let code = tonic::Status::from(*primary).code();
                tonic::Status::new(code, message)
            }
            DaemonError::Backend(BackendError::Bundle { .. }) => {
                tonic::Status::invalid_argument(message)
            }
            DaemonError::Backend(BackendError::NoRoot(_)) => tonic::Status::not_found(message),
            DaemonError::Backend(BackendError::RootExists(_)) => {
                tonic::Status::already_exists(message)
            }
            DaemonError::Backend(BackendError::BadMount { .. }) => {
                tonic::Status::invalid_argument(message)
            }
            DaemonError::Backend(BackendError::Resources {
                kind: FailureKind::Unsupported,
                ..
            }) => tonic::Status::failed_precondition(message),
            DaemonError::Backend(BackendError::Resources {
                kind: FailureKind::InvalidInput,
                ..
            }) => tonic::Status::invalid_argument(message),
            DaemonError::Backend(_) => tonic::Status::internal(format!(
                "{message}; see the zone's agent.log under RAUHA_ROOT and rauhad's log"
            )),
            DaemonError::Link(_) => tonic::Status::unavailable(format!(
                "{message}; the zone may have died: check `rauha zone verify`"
            )),
            DaemonError::Store(_) => {
                tonic::Status::internal(format!("{message}; check the disk under RAUHA_ROOT"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_code() {
        let cases: Vec<(DaemonError, tonic::Code)> = vec![
            (
                DaemonError::invalid("name", "bad"),
                tonic::Code::InvalidArgument,
            ),
            (DaemonError::zone_not_found("x"), tonic::Code::NotFound),
            (
                DaemonError::AlreadyExists("x".into()),
                tonic::Code::AlreadyExists,
            ),
            (
                DaemonError::ZoneBusy {
                    zone: "z".into(),
                    count: 1,
                },
                tonic::Code::FailedPrecondition,
            ),
            (
                DaemonError::Cleanup {
                    primary: Box::new(DaemonError::invalid("name", "bad")),
                    cleanup: Box::new(DaemonError::ProcessZoneGone),
                },
                tonic::Code::InvalidArgument,
            ),
            (DaemonError::Link(LinkError::Gone), tonic::Code::Unavailable),
        ];
        for (e, code) in cases {
            let s = tonic::Status::from(e);
            assert_eq!(s.code(), code);
            assert!(!s.message().contains('\n'), "one line: {}", s.message());
        }
    }

    #[test]
    fn not_found_says_what_to_do() {
        let s = tonic::Status::from(DaemonError::zone_not_found("web"));
        assert_eq!(
            s.message(),
            "zone \"web\" not found; list zones with `rauha zone list`"
        );
    }
}
