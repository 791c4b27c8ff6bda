//! The shim process's life: `start` (spawn or reuse the pod's shim),
//! `delete` (clean up after a shim that died), and serving the Task API.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::protos::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Error, Flags, StartOpts};

use rauha_api::keeper::{self, Orphan};

use crate::convert;
use crate::rauhad::Rauhad;
use crate::service::{read_bundle_spec, saved_zone_id, unmount_rootfs, Service};

pub struct RauhaShim {
    namespace: String,
    id: String,
    exit: Arc<ExitSignal>,
}

#[async_trait]
impl Shim for RauhaShim {
    type T = Service;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        RauhaShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// containerd runs `start` in the bundle directory; every container of
    /// a pod shares the shim of its sandbox.
    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        // containerd 1.x passes runtime options on stdin (runc's `Options`,
        // which the crate's `spawn` reads for a shim cgroup); 2.3 and later
        // pass their bootstrap parameters there instead, which the crate
        // cannot parse ("WireError(UnexpectedEof)"). Rauha takes neither: it
        // has no runtime options, and 2.x still gives its addresses in the
        // environment. Reading stdin to its end leaves `spawn` none to parse.
        use std::io::Read;
        let mut ignored = Vec::new();
        std::io::stdin()
            .read_to_end(&mut ignored)
            .map_err(|e| Error::Other(format!("cannot read the start parameters: {e}")))?;
        let spec = read_bundle_spec(std::path::Path::new("."))
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let grouping = convert::grouping(&spec, &opts.id);
        let address = spawn(opts, &grouping, Vec::new()).await?;
        // containerd finds the shim of a task again (after it restarts) by
        // the `address` file in the task's bundle.
        std::fs::write("address", &address)
            .map_err(|e| Error::Other(format!("cannot write the bundle's address file: {e}")))?;
        Ok(address)
    }

    /// containerd runs `delete` when a shim is gone: remove what the
    /// container left (its zone if it owned one, its root filesystem).
    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        let bundle = std::env::current_dir().map_err(|e| Error::Other(e.to_string()))?;
        if let Ok(spec) = read_bundle_spec(&bundle) {
            let rauhad = Rauhad::from_env();
            if let convert::Role::Member { sandbox_id } = convert::role(&spec) {
                // A pod's container: its root in the pod's zone goes.
                let name = convert::zone_name(&self.namespace, &sandbox_id);
                let sandbox_dir = bundle.parent().map(|p| p.join(&sandbox_id));
                let orphan = Orphan {
                    zone: sandbox_dir
                        .and_then(|d| saved_zone_id(&d, &sandbox_id))
                        .unwrap_or_else(|| name.clone()),
                    root: Some(self.id.clone()),
                };
                // (By the id the sandbox saved: its zone may be a shared
                // one, whose name is not the sandbox's.)
                let r = match rauhad.zones().await {
                    Ok(mut zones) => zones
                        .remove_root(rauha_api::v1::RootRef {
                            zone: orphan.zone.clone(),
                            name: self.id.clone(),
                        })
                        .await
                        .map(|_| ()),
                    Err(s) => Err(s),
                };
                settle(&rauhad, orphan, r);
            }
            if convert::role(&spec) == convert::Role::Owner {
                let name = convert::own_zone_name(&spec, &self.namespace, &self.id);
                let orphan = Orphan {
                    zone: saved_zone_id(&bundle, &self.id).unwrap_or_else(|| name.clone()),
                    root: None,
                };
                let r = match rauhad.zones().await {
                    Ok(mut zones) => zones
                        .delete(rauha_api::v1::DeleteZoneRequest {
                            zone: name,
                            force: true,
                        })
                        .await
                        .map(|_| ()),
                    Err(s) => Err(s),
                };
                settle(&rauhad, orphan, r);
            }
        }
        unmount_rootfs(&bundle);
        let mut resp = DeleteResponse::new();
        resp.exit_status = 137;
        resp.exited_at = Some(convert::now()).into();
        Ok(resp)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let service = Service::new(self.namespace.clone(), Arc::clone(&self.exit));
        service.set_publisher(publisher);
        service
    }
}

/// After `shim delete` asked rauhad to remove a zone or a container root:
/// when rauhad could not be reached, leaves the orphan for it to remove
/// when it is back (`rauha_api::keeper::orphans_dir`).
fn settle(rauhad: &Rauhad, orphan: Orphan, r: Result<(), tonic::Status>) {
    let what = match &orphan.root {
        Some(root) => format!("container root {root} of zone {}", orphan.zone),
        None => format!("zone {}", orphan.zone),
    };
    let Err(s) = r else { return };
    match s.code() {
        tonic::Code::NotFound => {}
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            let api = rauhad
                .addr()
                .strip_prefix("unix://")
                .unwrap_or(rauhad.addr());
            let dir = keeper::orphans_dir(std::path::Path::new(api));
            let left = orphan
                .file_name()
                .ok_or_else(|| std::io::Error::other("not a file name"))
                .and_then(|name| {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&dir)?;
                    // Whole or not at all: rauhad reads what it finds.
                    let tmp = dir.join(format!(".{name}.tmp"));
                    std::fs::write(&tmp, orphan.encode())?;
                    std::fs::rename(&tmp, dir.join(name))
                });
            match left {
                Ok(()) => log::warn!(
                    "rauhad is down: left {what} in {} for it to remove when it is back",
                    dir.display()
                ),
                Err(e) => log::error!(
                    "cannot remove {what} ({}) nor leave it for rauhad: {e}",
                    s.message()
                ),
            }
        }
        _ => log::warn!("cannot remove {what}: {}", s.message()),
    }
}
