//! The shim's reading of a container's spec under the fuzzer
//! (`rauha-fuzz`): its annotations (policy, zone, secrets, workspace) and
//! the OCI fields that become rauhad's requests. An input is lines of
//! `key=value`: annotations, and `@hostname`, `@cgroupsPath`, `@sysctl.K`,
//! `@ns` (a namespace type), `@mount` (`destination type source`),
//! `@device` (`path type`), `@arg` for the process. Whatever a pod says,
//! the shim takes it or refuses it with one line, and a policy it takes is
//! one rauhad's parser takes too.

use serde_json::{json, Map, Value};

use crate::convert;

const WORDS: &[&[u8]] = &[
    b"rauha.dev/policy=",
    b"rauha.dev/zone=",
    b"rauha.dev/zone-name=",
    b"rauha.dev/secret-env=",
    b"rauha.dev/workspace=",
    b"io.kubernetes.cri.container-type=sandbox",
    b"io.kubernetes.cri.container-type=container",
    b"io.kubernetes.cri.sandbox-id=s1",
    b"io.kubernetes.cri.sandbox-namespace=team-a",
    b"@hostname=",
    b"@cgroupsPath=",
    b"@sysctl.net.ipv4.ip_forward=1",
    b"@ns=network",
    b"@ns=pid",
    b"@ns=user",
    b"@mount=",
    b"@device=/dev/fuse c",
    b"@arg=",
    b"baseline",
    b"privileged",
    b"restricted",
    b"\\n",
    b"[resources]\\nmemory_limit = ",
    b"{\"dir\": \"/ws\", \"inputs\": [{\"from\": \"/in\", \"to\": \"src\"}]}",
    b"{\"TOKEN\": \"/secrets/token\"}",
    b"/kubepods/burstable/pod1/abc",
    b"kubepods-burstable-pod1.slice:cri-containerd:abc",
    b"/ws bind /host/ws",
];

/// The OCI spec an input describes.
fn spec_of(text: &str) -> Value {
    let mut annotations = Map::new();
    let (mut sysctl, mut namespaces, mut mounts, mut devices, mut args) =
        (Map::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut spec = json!({});
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.replace("\\n", "\n");
        match key {
            "@hostname" => spec["hostname"] = json!(value),
            "@cgroupsPath" => spec["linux"]["cgroupsPath"] = json!(value),
            "@ns" => namespaces.push(json!({"type": value})),
            "@arg" => args.push(json!(value)),
            "@mount" => {
                let w: Vec<&str> = value.split(' ').collect();
                mounts.push(json!({"destination": w.first(), "type": w.get(1), "source": w.get(2), "options": w.get(3..).unwrap_or_default()}));
            }
            "@device" => {
                let w: Vec<&str> = value.split(' ').collect();
                devices
                    .push(json!({"path": w.first(), "type": w.get(1), "major": 10, "minor": 229}));
            }
            k if k.starts_with("@sysctl.") => {
                sysctl.insert(k["@sysctl.".len()..].to_string(), json!(value));
            }
            k => {
                annotations.insert(k.to_string(), json!(value));
            }
        }
    }
    spec["annotations"] = Value::Object(annotations);
    spec["linux"]["sysctl"] = Value::Object(sysctl);
    spec["linux"]["namespaces"] = json!(namespaces);
    spec["linux"]["devices"] = json!(devices);
    spec["mounts"] = json!(mounts);
    spec["process"] = json!({"args": args, "cwd": "/", "env": ["PATH=/bin"]});
    spec
}

/// `Ok` as "ok", an error as its first words, after checking its form.
fn outcome<T>(r: Result<T, crate::error::SpecError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => {
            let line = e.to_string();
            rauha_fuzz::assert_one_line(&line, 800);
            line.split([':', '"']).next().unwrap_or("").to_string()
        }
    }
}

fn check(data: &[u8]) -> String {
    let spec = spec_of(&String::from_utf8_lossy(data));
    let mut out = vec![format!("{:?}", convert::role(&spec))];
    let _ = convert::grouping(&spec, "c1");
    let _ = convert::netns(&spec);
    let _ = convert::ask(&spec);
    let _ = convert::devices(&spec);
    let _ = convert::mounts(&spec);
    if let Some(parent) = convert::cgroup_parent(&spec, "k8s.io") {
        assert!(
            parent.starts_with('/'),
            "a relative cgroup parent {parent:?}"
        );
    }
    out.push(outcome(convert::secret_env(&spec)));
    out.push(outcome(crate::service::workspace::of(&spec)));
    out.push(outcome(convert::process(&spec["process"])));
    let chosen = match convert::chosen_policy(&spec, "baseline") {
        Ok(c) => Some(c),
        Err(e) => {
            out.push(outcome::<()>(Err(e)));
            None
        }
    };
    if let Some(chosen) = chosen {
        out.push(outcome(convert::check_pod_security(&spec, &chosen)));
        let source = convert::policy(&spec, &chosen);
        let Some(rauha_api::v1::policy_source::Source::Inline(inline)) = source.source else {
            panic!("the zone's policy is not inline TOML");
        };
        // rauhad parses what the shim sends: it takes it or says why on
        // one line naming the pod's policy.
        match rauha_spec::Policy::parse(&inline.file, &inline.toml) {
            Ok(_) => out.push("policy ok".into()),
            Err(e) => {
                rauha_fuzz::assert_one_line(&e.to_string(), usize::MAX);
                out.push(format!("policy refused {}", e.key));
            }
        }
    }
    out.join("|")
}

#[test]
fn fuzz_pod_specs() {
    rauha_fuzz::run("pod_specs", WORDS, check);
}
