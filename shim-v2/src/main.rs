//! `containerd-shim-rauha-v2`: containerd's runtime v2 Task API on top of
//! `rauhad`. One shim serves a whole pod: the pod sandbox is a zone, and
//! each container's processes run in it. Handlers stay thin and call rauhad
//! over its Unix socket; OCI and ttrpc types are converted in `convert`.

mod config;
mod convert;
mod error;
#[cfg(test)]
mod fuzz_tests;
mod info;
mod rauhad;
mod serve;
mod service;
mod shim;

use containerd_shim::Config;

/// The runtime type containerd is configured with (`runtime_type`).
pub const RUNTIME_ID: &str = "io.containerd.rauha.v2";

// One thread: a shim serves one pod and mostly waits on rauhad.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    // What containerd (or a restarting keeper) left open that the shim was
    // not handed on purpose goes no further than this process. The keeper's
    // sockets (`RAUHA_SHIM_RESUME`) are adopted by number, marked or not.
    let inherited = match rauha_fd::cloexec_inherited() {
        Ok(fds) => fds,
        Err(e) => {
            eprintln!("{RUNTIME_ID}: cannot mark inherited descriptors close-on-exec: {e}");
            std::process::exit(1);
        }
    };
    no_fault_around();
    // Serving is this crate's own (see `serve`): it keeps what rauhad needs
    // to start the shim again. `start`, `delete` and the rest are the
    // containerd-shim crate's.
    let args: Vec<_> = std::env::args_os().collect();
    // containerd 2.x's introspection: the runtime's info on stdout (its
    // options on stdin are read and left alone).
    if args.iter().skip(1).any(|a| a == "-info") {
        use std::io::{Read, Write};
        let mut options = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut options);
        let mut out = std::io::stdout();
        if let Err(e) = out
            .write_all(&info::runtime_info())
            .and_then(|()| out.flush())
        {
            eprintln!("{RUNTIME_ID}: cannot write the runtime info: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Ok(flags) = containerd_shim::parse(&args[1..]) {
        if flags.action.is_empty() {
            if let Err(e) = serve::serve(flags, inherited).await {
                eprintln!("{RUNTIME_ID}: {e}");
                std::process::exit(1);
            }
            return;
        }
    }
    let config = Config {
        // The shim starts no children of its own: rauhad and the zone's
        // agent own every process of the pod.
        no_sub_reaper: true,
        no_reaper: true,
        ..Default::default()
    };
    containerd_shim::asynchronous::run::<shim::RauhaShim>(RUNTIME_ID, Some(config)).await;
}

/// One shim runs per pod, so its resident pages count many times over.
/// Page faults on the shim's own binary map only the page they need, not
/// the kernel's usual 64 KiB around it (`MADV_RANDOM` on its mappings):
/// most of that code is never run by a serving shim.
fn no_fault_around() {
    let (Ok(maps), Ok(exe)) = (
        std::fs::read_to_string("/proc/self/maps"),
        std::fs::read_link("/proc/self/exe"),
    ) else {
        return;
    };
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || std::path::Path::new(f[5]) != exe {
            continue;
        }
        let Some((start, end)) = f[0].split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: advice on a mapping of our own binary, as /proc gives
        // it; MADV_RANDOM changes no content, only read-ahead.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_RANDOM) };
    }
}

#[cfg(test)]
mod tests {
    /// The shipped containerd configs register handler `rauha` with this
    /// shim's runtime type and pass Rauha's annotations through.
    #[test]
    fn deploy_configs_name_this_runtime() {
        for (text, plugin) in [
            (
                include_str!("../../deploy/containerd/config-v2.toml"),
                "io.containerd.grpc.v1.cri",
            ),
            (
                include_str!("../../deploy/containerd/config-v3.toml"),
                "io.containerd.cri.v1.runtime",
            ),
        ] {
            let v: toml::Value = toml::from_str(text).expect("valid TOML");
            let rauha = &v["plugins"][plugin]["containerd"]["runtimes"]["rauha"];
            assert_eq!(rauha["runtime_type"].as_str(), Some(super::RUNTIME_ID));
            for key in ["pod_annotations", "container_annotations"] {
                assert_eq!(
                    rauha[key].as_array().map(Vec::len),
                    Some(1),
                    "{plugin} {key}"
                );
                assert_eq!(rauha[key][0].as_str(), Some("rauha.dev/*"));
            }
        }
        let rc = include_str!("../../deploy/kubernetes/runtimeclass.yaml");
        assert!(rc.contains("kind: RuntimeClass") && rc.contains("handler: rauha"));
    }
}
