//! Rauha's own images (scripts/build-images.sh, what the Helm chart
//! deploys): built from this build's binaries with no Docker and no
//! network, reproducible (the same binaries give the same digest), pushed
//! to a registry on 127.0.0.1 unchanged, and they run under containerd.

use std::path::Path;
use std::process::Command;

use rauha_e2e::containerd::{containerd_ready, Containerd, ContainerdOpts, Registry};
use rauha_e2e::{bin_dir, prerequisite, ready, text, Daemon};

fn static_shim() -> bool {
    let out = Command::new("ldd")
        .arg(bin_dir().join("containerd-shim-rauha-v2"))
        .output()
        .map(|o| format!("{}{}", text(&o.stdout), text(&o.stderr)))
        .unwrap_or_default();
    prerequisite(
        out.contains("statically linked"),
        "a statically linked containerd-shim-rauha-v2 (run scripts/build-shim.sh after cargo build)",
    )
}

#[test]
fn the_node_and_operator_images_are_reproducible_and_run() {
    if !(ready() && containerd_ready() && static_shim()) {
        return;
    }
    let d = Daemon::start();
    let reg = Registry::start();
    let out = reg.dir().join("images");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-images.sh");
    let built = Command::new(&script)
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(&out)
        .args(["--tag", "e2e", "--check", "--push", &reg.host()])
        .output()
        .expect("run build-images.sh");
    assert!(
        built.status.success(),
        "build-images.sh: {}",
        text(&built.stderr)
    );
    let lines = text(&built.stdout);
    let digests: Vec<(String, String)> = lines
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| (f[0].to_string(), f[2].to_string()))
        })
        .collect();
    assert_eq!(digests.len(), 2, "{lines}");

    // The registry serves each manifest under the digest built here.
    for (name, digest) in &digests {
        let reference = format!(
            "{}/rauha/{}:e2e",
            reg.host(),
            name.trim_start_matches("rauha-")
        );
        let raw = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .output()
            .expect("skopeo inspect");
        assert!(raw.status.success(), "{}", text(&raw.stderr));
        let sum = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(&raw.stdout)?;
                c.wait_with_output()
            })
            .expect("sha256sum");
        let pushed = format!(
            "sha256:{}",
            text(&sum.stdout).split_whitespace().next().unwrap_or("")
        );
        assert_eq!(&pushed, digest, "{reference} as pushed");
    }

    // They run (under runc: the images themselves are under test here).
    let ctd = Containerd::start(ContainerdOpts::for_rauha(&d, &reg));
    let run = |name: &str, id: &str, cmd: &[&str]| -> String {
        let reference = format!("{}/rauha/{name}:e2e", reg.host());
        ctd.ctr_ok(&["images", "pull", "--plain-http", &reference]);
        let mut args = vec!["run", "--rm", &reference, id];
        args.extend_from_slice(cmd);
        ctd.ctr_ok(&args)
    };
    let operator = run("operator", "img-operator", &["rauha-operator", "--version"]);
    assert!(operator.starts_with("rauha-operator "), "{operator}");
    // Each of the node image's binaries runs; it has no shell.
    for (i, b) in ["rauha-node", "rauhad", "rauha", "rauha-guest-agent"]
        .iter()
        .enumerate()
    {
        let out = run("node", &format!("img-node-{i}"), &[b, "--version"]);
        assert!(out.starts_with(&format!("{b} ")), "{b} --version: {out}");
    }
    let reference = format!("{}/rauha/node:e2e", reg.host());
    let shell = ctd.ctr(&[
        "run",
        "--rm",
        &reference,
        "img-node-sh",
        "/bin/sh",
        "-c",
        "true",
    ]);
    assert!(!shell.status.success(), "the node image has a shell");
}
