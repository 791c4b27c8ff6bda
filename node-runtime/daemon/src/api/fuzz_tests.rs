//! rauhad's request checks under the fuzzer (`rauha-fuzz`): the first
//! byte picks a request, the rest is its protobuf body. Whatever a client
//! sends, a check passes or names its field in one line of bounded
//! length; nothing panics, and nothing on the host is made (the checks
//! only look: `stat`, `statfs`).

use prost::Message;
use rauha_api::v1;

use crate::error::DaemonError;
use crate::validate::{parse_id, process_spec, CgroupParents, DEFAULT_ALLOWED_CGROUP_ROOTS};
use crate::zone::stdio::HostStdio;

const WORDS: &[&[u8]] = &[
    b"/kubepods/burstable/pod1",
    b"/kubepods.slice",
    b"/etc/passwd",
    b"/proc/self/root",
    b"/dev/null",
    b"/run/containerd/fifo/1/x",
    b"file://",
    b"binary://",
    b"..",
    b"/./",
    b"PATH=/bin",
    b"A B=1",
    b"commit",
    b"discard",
    b"/workspace",
    b"bind",
    b"rbind",
    b"tmpfs",
    b"nfs",
    b"/sys/fs/cgroup",
    b"CAP_SYS_ADMIN",
    b"RLIMIT_NOFILE",
    b"c",
    b"b",
    b"\x0a\x03web",
    b"\x12\x01/",
    b"\n",
    b"\x00",
];

/// `Ok` as "ok", an error as its field, after checking its form.
fn outcome<T>(r: Result<T, DaemonError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => {
            let line = e.to_string();
            rauha_fuzz::assert_one_line(&line, 600);
            let status = tonic::Status::from(e);
            assert_ne!(
                status.code(),
                tonic::Code::Internal,
                "INTERNAL for bad input: {line}"
            );
            line.split(':').next().unwrap_or("").to_string()
        }
    }
}

fn check(data: &[u8]) -> String {
    let Some((which, body)) = data.split_first() else {
        return "empty".into();
    };
    let parents = CgroupParents {
        own: "rauha".into(),
        allowed_roots: DEFAULT_ALLOWED_CGROUP_ROOTS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let roots = [std::path::PathBuf::from("/run/containerd")];
    let what = match which % 4 {
        0 => {
            let Ok(r) = v1::CreateZoneRequest::decode(body) else {
                return "undecodable".into();
            };
            let mut out = outcome(parents.check(&r.cgroup_parent));
            out.push('|');
            out.push_str(&outcome(super::zones::bundle_root(&r.bundle)));
            out
        }
        1 => {
            let Ok(r) = v1::RunRequest::decode(body) else {
                return "undecodable".into();
            };
            let wire = r.spec.unwrap_or_default();
            let spec = process_spec("spec", &wire.args, &wire.env, &wire.cwd)
                .and_then(|s| super::convert::process_extras(s, &wire));
            let stdio = r.stdio.unwrap_or_default();
            let mut out = outcome(spec);
            out.push('|');
            out.push_str(&outcome(HostStdio::parse(
                &roots,
                &stdio.stdin,
                &stdio.stdout,
                &stdio.stderr,
            )));
            if !r.id.is_empty() {
                out.push('|');
                out.push_str(&outcome(parse_id("id", &r.id, "")));
            }
            out
        }
        2 => {
            let Ok(r) = v1::SandboxRequest::decode(body) else {
                return "undecodable".into();
            };
            outcome(super::sandbox::workspace(&r))
        }
        _ => {
            let Ok(r) = v1::AddRootRequest::decode(body) else {
                return "undecodable".into();
            };
            let mounts: Vec<rauha_backend::RootMount> = r
                .mounts
                .iter()
                .map(|m| rauha_backend::RootMount {
                    destination: m.destination.clone().into(),
                    kind: m.r#type.clone(),
                    source: m.source.clone().into(),
                    options: m.options.clone(),
                })
                .collect();
            let checked = super::convert::root_devices(&r.devices).and_then(|devices| {
                let flags = rauha_backend::RootFlags {
                    readonly: r.readonly,
                    setuid: false,
                    masked_paths: r.masked_paths.iter().map(Into::into).collect(),
                    readonly_paths: r.readonly_paths.iter().map(Into::into).collect(),
                    own_pid_namespace: r.own_pid_namespace,
                    devices,
                    image_layers: Vec::new(),
                };
                crate::zone::roots::check_root_request(
                    &r.name,
                    &r.rootfs,
                    &flags,
                    &mounts,
                    &super::convert::root_limits(r.limits.as_ref()),
                )
            });
            outcome(checked)
        }
    };
    format!("{}:{what}", which % 4)
}

#[test]
fn fuzz_requests() {
    rauha_fuzz::run("requests", WORDS, check);
}
