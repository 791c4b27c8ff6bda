//! `containerd-shim-rauha-v2`: containerd's runtime v2 Task API on top of
//! `rauhad`. One shim serves a whole pod: the pod sandbox is a zone, and
//! each container's processes run in it. Handlers stay thin and call rauhad
//! over its Unix socket; OCI and ttrpc types are converted in `convert`.

mod convert;
mod rauhad;
mod service;
mod shim;

use containerd_shim::Config;

/// The runtime type containerd is configured with (`runtime_type`).
pub const RUNTIME_ID: &str = "io.containerd.rauha.v2";

// One thread: a shim serves one pod and mostly waits on rauhad.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let config = Config {
        // The shim starts no children of its own: rauhad and the zone's
        // agent own every process of the pod.
        no_sub_reaper: true,
        no_reaper: true,
        ..Default::default()
    };
    containerd_shim::asynchronous::run::<shim::RauhaShim>(RUNTIME_ID, Some(config)).await;
}
