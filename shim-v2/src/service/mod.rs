//! The Task API. Each handler looks up the container, makes one or two
//! calls to rauhad and publishes the event containerd expects.
//!
//! A container that owns its zone (a pod sandbox, or a container outside
//! any pod) creates the zone from its bundle; its init process and execs
//! are rauhad processes in that zone, with stdio on containerd's FIFOs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim_async::Events;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::topics;
use containerd_shim::protos::types::task::{ProcessInfo, Status};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{api, TtrpcContext, TtrpcResult};
use rauha_api::v1;
use rauha_api::v1::processes_client::ProcessesClient;
use rauha_api::v1::zones_client::ZonesClient;
use serde_json::Value;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::convert::{self, Role};
use crate::error::{ttrpc_error, BundleError, Error, StateError};
use crate::rauhad::Rauhad;

mod bundle;
mod events;
mod lifecycle;
mod model;
mod persist;
mod processes;
mod task;
pub(crate) mod workspace;
mod zone;

#[cfg(test)]
mod tests;

use self::bundle::*;
pub use self::bundle::{read_bundle_spec, unmount_rootfs};
use self::events::EventSink;
use self::model::*;
pub use self::persist::saved_zone_id;
use self::persist::*;

/// The metadata key a replayed request carries (a request the dead shim
/// read and did not answer): handlers that make things treat "already
/// there" as their own earlier work.
pub const REPLAY_KEY: &str = "rauha-replay";

struct Inner {
    namespace: String,
    rauhad: Rauhad,
    /// containerd's event service; set once connected (a restarted shim
    /// may serve before containerd is back).
    publisher: tokio::sync::OnceCell<Box<dyn EventSink>>,
    exit: Arc<ExitSignal>,
    containers: Mutex<HashMap<String, Container>>,
    /// Where the containers' state is saved for a restarted shim
    /// (`rauha-shim.json` in the shim's directory, the sandbox's bundle).
    state_file: PathBuf,
    /// Saves happen one at a time, so an older one never lands last.
    saving: Mutex<()>,
    /// Pod memory totals are read, summed and written one at a time.
    pod_memory: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

/// A fresh process id (a UUID, from the kernel) for rauhad's Run.
fn fresh_id() -> TtrpcResult<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .map_err(|source| {
            Error::Io {
                what: "cannot make a process id",
                source,
            }
            .into()
        })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn stdio(stdin: &str, stdout: &str, stderr: &str) -> v1::StdioPaths {
    v1::StdioPaths {
        stdin: stdin.to_string(),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
    }
}

impl Service {
    /// rauhad's zone and process clients; an unreachable rauhad is one
    /// clear Unavailable error.
    async fn zones(&self) -> TtrpcResult<ZonesClient<Channel>> {
        self.inner.rauhad.zones().await.map_err(ttrpc_error)
    }

    async fn processes(&self) -> TtrpcResult<ProcessesClient<Channel>> {
        self.inner.rauhad.processes().await.map_err(ttrpc_error)
    }

    pub fn new(namespace: String, exit: Arc<ExitSignal>) -> Service {
        let state_file = std::env::current_dir().unwrap_or_default().join(STATE_FILE);
        Service::on(namespace, exit, Rauhad::from_env(), state_file)
    }

    /// A service on `rauhad`, saving its state in `state_file`.
    fn on(
        namespace: String,
        exit: Arc<ExitSignal>,
        rauhad: Rauhad,
        state_file: PathBuf,
    ) -> Service {
        Service {
            inner: Arc::new(Inner {
                namespace,
                rauhad,
                publisher: tokio::sync::OnceCell::new(),
                exit,
                containers: Mutex::new(HashMap::new()),
                state_file,
                saving: Mutex::new(()),
                pod_memory: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Events go out from now on.
    pub fn set_publisher(&self, publisher: impl EventSink + 'static) {
        if self.inner.publisher.set(Box::new(publisher)).is_err() {
            log::warn!("the event publisher was set twice");
        }
    }

    fn with<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container) -> TtrpcResult<T>,
    ) -> TtrpcResult<T> {
        let mut all = self
            .inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let c = all.get_mut(id).ok_or_else(|| Error::container(id))?;
        f(c)
    }
}
