//! rauhad's image store, driven through the CLI against Debian's
//! docker-registry on 127.0.0.1 holding images these tests build from local
//! files: pull, list, inspect, run (sandbox and zone), whiteouts and opaque
//! directories in a real overlay, the node's platform out of an index,
//! corrupted and escaping content refused with nothing left behind, auth,
//! removal while in use, prune's accounting, and `kill -9` of rauhad in a
//! pull and in a prune.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rauha_e2e::containerd::{
    bin, build_busybox_rootfs, containerd_ready, find_bin, oci_arch, random_hex, run_ok, ImageSpec,
    Registry,
};
use rauha_e2e::{bin_dir, json, prerequisite, ready, text, Daemon};

fn images_ready() -> bool {
    ready()
        && containerd_ready()
        && prerequisite(
            find_bin("htpasswd").is_some(),
            "htpasswd (apt-get install apache2-utils)",
        )
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn fails(out: &Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} succeeded: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    let last = err.lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("rauha: "), "{what}: {err}");
    last
}

/// Apparent bytes of the files under `dir`, each inode once (as rauhad's
/// store counts them).
fn du(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        if m.is_dir() {
            stack.extend(
                std::fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if m.is_file() {
            total += m.len();
        }
    }
    total
}

fn blob(d: &Daemon, digest: &str) -> PathBuf {
    d.root
        .join("images/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn ingest_is_empty(d: &Daemon) -> bool {
    std::fs::read_dir(d.root.join("images/ingest"))
        .map(|r| r.count() == 0)
        .unwrap_or(true)
}

// ---------------------------------------------------------------- layers

enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// A layer archive; names are written as given (`..` included).
fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, data): (&str, &[u8]) = match e {
            E::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (n, b"")
            }
            E::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                (n, d)
            }
            E::Symlink(n, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                let f = &mut h.as_old_mut().linkname;
                f[..t.len()].copy_from_slice(t.as_bytes());
                (n, b"")
            }
        };
        let f = &mut h.as_old_mut().name;
        f[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("tar")
}

/// busybox-static's root as one layer.
fn busybox_layer(work: &Path) -> Vec<u8> {
    let rootfs = work.join("bb-rootfs");
    build_busybox_rootfs(&rootfs);
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", &rootfs).expect("tar busybox");
    b.into_inner().expect("tar")
}

/// Pushes an image of `layers` (bottom first) for `arch` as `name_tag`;
/// its reference.
fn push_layers(reg: &Registry, name_tag: &str, layers: &[Vec<u8>], arch: &str) -> String {
    let work = reg.dir().join("build").join(random_hex(8));
    std::fs::create_dir_all(&work).expect("work dir");
    let layout = work.join("layout");
    let image = format!("{}:t", layout.display());
    run_ok(
        Command::new(bin("umoci"))
            .args(["init", "--layout"])
            .arg(&layout),
    );
    run_ok(Command::new(bin("umoci")).args(["new", "--image", &image]));
    for (i, l) in layers.iter().enumerate() {
        let path = work.join(format!("layer-{i}.tar"));
        std::fs::write(&path, l).expect("layer");
        run_ok(
            Command::new(bin("umoci"))
                .args(["raw", "add-layer", "--no-history", "--image", &image])
                .arg(&path),
        );
    }
    run_ok(Command::new(bin("umoci")).args([
        "config",
        "--no-history",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        arch,
        "--config.env",
        "PATH=/bin",
        "--config.cmd",
        "sh",
    ]));
    let reference = format!("{}/{name_tag}", reg.host());
    reg.skopeo_push(&format!("oci:{image}"), &reference);
    reference
}

/// One HTTP/1.0 request to the registry: status, headers, body.
fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(host).expect("connect to the registry");
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("request");
    s.write_all(body).expect("body");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("response");
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, buf[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The digest and size of `repo:tag`'s manifest.
fn manifest_of(host: &str, repo: &str, tag: &str) -> (String, usize) {
    let (status, head, body) = http(
        host,
        "GET",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    assert_eq!(status, 200, "{head}");
    let digest = header(&head, "Docker-Content-Digest")
        .expect("digest header")
        .to_string();
    (digest, body.len())
}

// ---------------------------------------------------------------- tests

#[test]
fn an_image_is_pulled_listed_inspected_run_and_removed() {
    if !images_ready() {
        return;
    }
    let d = Daemon::start();
    let reg = Registry::start();
    let spec = ImageSpec::busybox(&["sh"])
        .file("/etc/os-release", "ID=rauha-test-image\n", 0o644)
        .dir("/srv", 0o755, 0, 0)
        .env("GREETING=hello from the image")
        .working_dir("/srv")
        .label("org.rauha.test=1")
        .exposed_port("8080/tcp");
    let image = reg.push_image("bb:1", &spec);

    let pulled = ok(&d.cli(&["image", "pull", &image]), "pull");
    let (name, digest) = pulled.trim().split_once('@').expect("name@digest");
    assert_eq!(name, image);
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{pulled}"
    );

    let list = json(&d.cli(&["image", "ls", "--json"]));
    let listed = &list.as_array().expect("array")[0];
    assert_eq!(listed["name"], image);
    assert_eq!(listed["digest"], digest);
    assert!(listed["size"].as_u64().unwrap_or(0) > 100_000, "{listed}");
    let table = ok(&d.cli(&["image", "ls"]), "image ls");
    assert!(
        table.contains(&image) && table.contains(&digest[7..19]),
        "{table}"
    );

    let inspect = json(&d.cli(&["image", "inspect", &image, "--json"]));
    let c = &inspect["config"];
    assert!(
        c["env"]
            .as_array()
            .expect("env")
            .iter()
            .any(|e| e == "GREETING=hello from the image"),
        "{inspect}"
    );
    assert_eq!(c["working_dir"], "/srv");
    assert_eq!(c["labels"]["org.rauha.test"], "1");
    assert_eq!(c["exposed_ports"][0], "8080/tcp");
    // By id too, as docker takes it.
    let by_id = json(&d.cli(&["image", "inspect", &digest[7..19]]));
    assert_eq!(by_id["digest"], digest);

    // A task on the image: its files, not the host's; its env and cwd.
    let out = d.cli(&[
        "sandbox",
        "--json",
        "--image",
        &image,
        "--",
        "sh",
        "-c",
        "cat /etc/os-release; pwd; echo \"$GREETING\"; ls /",
    ]);
    let r = json(&out);
    assert_eq!(r["status"], "succeeded", "{r}");
    let stdout = r["stdout"].as_str().unwrap_or("");
    assert!(
        stdout.starts_with("ID=rauha-test-image\n/srv\nhello from the image\n"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("\nusr\n"),
        "the host's /usr shows: {stdout}"
    );
    assert_eq!(r["image"]["reference"], image);
    assert_eq!(r["image"]["digest"], digest);
    let userns = r["enforcement"]["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| l["layer"] == "user_namespace")
        .cloned()
        .expect("user namespace layer");
    assert_eq!(
        userns["in_force"], true,
        "the image root must be the zone's: {userns}"
    );

    // A zone on the image; writes land in its own upper layer.
    ok(
        &d.cli(&["zone", "create", "imgz", "--image", &image]),
        "zone create --image",
    );
    let zone = json(&d.cli(&["zone", "get", "imgz", "--json"]));
    assert_eq!(zone["root"], format!("image:{image}@{digest}"));
    let out = ok(
        &d.cli(&[
            "exec",
            "imgz",
            "--",
            "sh",
            "-c",
            "cat /etc/os-release; id -u; echo x > /tmp/w && cat /tmp/w",
        ]),
        "exec",
    );
    assert_eq!(out, "ID=rauha-test-image\n0\nx\n");
    let listed = json(&d.cli(&["image", "ls", "--json"]));
    assert_eq!(listed[0]["zones"][0], "imgz");

    // `rauha run --zone Z IMAGE CMD`: a container root of the zone made
    // from the image, in the foreground as docker runs it, removed after.
    assert_eq!(
        ok(
            &d.cli(&["run", "--zone", "imgz", &image, "/bin/echo", "hello"]),
            "run IMAGE"
        ),
        "hello\n"
    );
    let out = d.cli(&[
        "run",
        "--zone",
        "imgz",
        &image,
        "sh",
        "-c",
        "cat /etc/os-release; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ID=rauha-test-image\n");
    let id = ok(
        &d.cli(&["run", "-d", "--zone", "imgz", &image, "sleep", "0.2"]),
        "run -d IMAGE",
    );
    assert_eq!(ok(&d.cli(&["wait", id.trim()]), "wait"), "0\n");
    let layers = || -> usize {
        std::fs::read_dir(d.root.join("zones"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|z| std::fs::read_dir(z.path().join("root-layers")).ok())
            .map(|r| r.count())
            .sum()
    };
    wait_for("the image's container roots removed", 10, || layers() == 0);
    ok(&d.cli(&["zone", "create", "hostz"]), "zone create");
    let line = fails(
        &d.cli(&["run", "--zone", "hostz", &image, "true"]),
        "run IMAGE in a host view",
    );
    assert!(line.contains("holds no container roots"), "{line}");
    ok(&d.cli(&["zone", "delete", "hostz"]), "zone delete");

    // In use: refused, naming the zone.
    let line = fails(&d.cli(&["image", "rm", &image]), "rm in use");
    assert!(line.contains("is the root of zone(s) imgz"), "{line}");
    ok(&d.cli(&["zone", "delete", "imgz"]), "zone delete");

    // Removed, then pruned: the bytes prune reports are the bytes gone.
    let store = d.root.join("images");
    let before = du(&store);
    let rm = ok(&d.cli(&["image", "rm", &image]), "rm");
    assert!(
        rm.contains(&format!("untagged: {image}")) && rm.contains(&format!("deleted: {digest}")),
        "{rm}"
    );
    assert_eq!(
        du(&store),
        before,
        "rm frees nothing by itself (prune does)"
    );
    let pruned = json(&d.cli(&["image", "prune", "--json"]));
    let freed = pruned["freed_bytes"].as_u64().expect("freed");
    assert!(freed > 100_000, "{pruned}");
    assert_eq!(before - du(&store), freed, "{pruned}");
    assert_eq!(pruned["snapshots"], 1);
    assert_eq!(
        json(&d.cli(&["image", "ls", "--json"])),
        serde_json::json!([])
    );
    let again = json(&d.cli(&["image", "prune", "--json"]));
    assert_eq!(again["freed_bytes"], 0);

    // Gone: a clear error, and --pull never does not fetch it.
    let line = fails(
        &d.cli(&[
            "sandbox", "--image", &image, "--pull", "never", "--", "true",
        ]),
        "never",
    );
    assert!(
        line.contains("not found") && line.contains("rauha image pull"),
        "{line}"
    );
    // --pull missing (the default) fetches it on first use.
    let out = d.cli(&["sandbox", "--image", &image, "--", "cat", "/etc/os-release"]);
    assert_eq!(ok(&out, "sandbox pulls"), "ID=rauha-test-image\n");
}

#[test]
fn layers_stack_with_whiteouts_and_the_nodes_platform_is_chosen() {
    if !images_ready() {
        return;
    }
    let d = Daemon::start();
    let reg = Registry::start();
    let work = reg.dir().join("layers");
    std::fs::create_dir_all(&work).expect("work");
    let base = busybox_layer(&work);
    let middle = layer(&[
        E::Dir("etc/"),
        E::File("etc/motd", b"from the middle layer\n"),
        E::Dir("var/"),
        E::Dir("var/cache/"),
        E::File("var/cache/a", b"a"),
        E::File("var/cache/b", b"b"),
        E::Dir("opt/"),
        E::File("opt/keep", b"kept\n"),
    ]);
    let top = layer(&[
        E::File("etc/.wh.motd", b""),
        E::File("var/cache/.wh..wh..opq", b""),
        E::File("var/cache/c", b"c"),
    ]);
    let node = oci_arch();
    let other = if node == "arm64" { "amd64" } else { "arm64" };
    let mine = layer(&[E::File("platform", node.as_bytes())]);
    let theirs = layer(&[E::File("platform", other.as_bytes())]);
    push_layers(
        &reg,
        &format!("multi:{node}"),
        &[base.clone(), middle.clone(), top.clone(), mine],
        node,
    );
    push_layers(
        &reg,
        &format!("multi:{other}"),
        &[base, middle, top, theirs],
        other,
    );
    // The index, as a multi-platform build pushes it: the other platform
    // first, so that order alone does not choose.
    let (other_digest, other_size) = manifest_of(&reg.host(), "multi", other);
    let (node_digest, node_size) = manifest_of(&reg.host(), "multi", node);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other_digest, "size": other_size,
             "platform": {"os": "linux", "architecture": other}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": node_digest, "size": node_size,
             "platform": {"os": "linux", "architecture": node}},
        ],
    });
    let (status, head, _) = http(
        &reg.host(),
        "PUT",
        "/v2/multi/manifests/1",
        &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
        index.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{head}");
    let image = format!("{}/multi:1", reg.host());

    ok(&d.cli(&["image", "pull", &image]), "pull the index");
    let inspect = json(&d.cli(&["image", "inspect", &image]));
    assert_eq!(inspect["digest"], node_digest, "{inspect}");
    assert!(
        inspect["index_digest"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha256:")),
        "{inspect}"
    );
    assert_eq!(inspect["platform"], format!("linux/{node}"));
    assert_eq!(inspect["layers"].as_array().map(Vec::len), Some(4));

    let out = d.cli(&[
        "sandbox", "--image", &image, "--",
        "sh", "-c", "cat /platform; echo; test -e /etc/motd && echo motd-present || echo motd-gone; ls /var/cache; cat /opt/keep",
    ]);
    assert_eq!(
        ok(&out, "stacked root"),
        format!("{node}\nmotd-gone\nc\nkept\n")
    );
}

#[test]
fn bad_content_is_refused_and_nothing_half_written_stays() {
    if !images_ready() {
        return;
    }
    let d = Daemon::start();
    let reg = Registry::start();
    let work = reg.dir().join("layers");
    std::fs::create_dir_all(&work).expect("work");

    // The registry serves a layer whose bytes are not its digest's.
    let image = push_layers(
        &reg,
        "corrupt:1",
        &[layer(&[E::File("hello", &[7u8; 4096])])],
        oci_arch(),
    );
    let layer_digest = {
        let (_, _, body) = http(
            &reg.host(),
            "GET",
            "/v2/corrupt/manifests/1",
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            b"",
        );
        let m: serde_json::Value = serde_json::from_slice(&body).expect("manifest");
        m["layers"][0]["digest"]
            .as_str()
            .expect("layer")
            .to_string()
    };
    let hex = layer_digest.trim_start_matches("sha256:");
    let data = reg
        .dir()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).expect("blob data");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).expect("corrupt");
    let line = fails(&d.cli(&["image", "pull", &image]), "pull of a corrupt blob");
    assert!(
        line.contains(&format!("{layer_digest} failed verification")),
        "{line}"
    );
    assert!(!blob(&d, &layer_digest).exists());
    assert!(ingest_is_empty(&d));
    assert_eq!(
        json(&d.cli(&["image", "ls", "--json"])),
        serde_json::json!([])
    );

    // Layers that try to write outside their directory.
    let outside = work.join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    let attempts = [
        ("dotdot:1", layer(&[E::File("../../../escaped", b"x")])),
        (
            "symlink:1",
            layer(&[
                E::Symlink("evil", &outside.display().to_string()),
                E::File("evil/escaped", b"x"),
            ]),
        ),
    ];
    for (name, archive) in attempts {
        let image = push_layers(&reg, name, &[archive], oci_arch());
        let line = fails(&d.cli(&["image", "pull", &image]), name);
        assert!(line.contains("refused"), "{name}: {line}");
        assert!(!outside.join("escaped").exists(), "{name}");
        for dir in [d.root.join("images"), d.root.clone(), d.dir.clone()] {
            assert!(!dir.join("escaped").exists(), "{name}: {}", dir.display());
        }
        let snapshots: Vec<String> = std::fs::read_dir(d.root.join("images/snapshots"))
            .expect("snapshots")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            snapshots.is_empty(),
            "{name}: a half-unpacked layer stays: {snapshots:?}"
        );
    }
    // The daemon kept serving through all of it.
    ok(&d.cli(&["image", "ls"]), "image ls after bad input");
    let line = fails(&d.cli(&["image", "pull", "NOT/valid"]), "bad name");
    assert!(line.contains("lower-case"), "{line}");
    let line = fails(
        &d.cli(&["image", "pull", &format!("{}/nosuch:1", reg.host())]),
        "missing",
    );
    assert!(line.contains("not found in registry"), "{line}");
}

#[test]
fn registry_credentials_are_checked_and_never_kept() {
    if !images_ready() {
        return;
    }
    let d = Daemon::start();
    let reg = Registry::start_with_auth("rauha", "s3cret-pw");
    let image = reg.push_busybox_image("private:1", &["sh"]);

    let line = fails(&d.cli(&["image", "pull", &image]), "anonymous");
    assert!(line.contains("refused the credentials"), "{line}");
    let with_password = |password: &str, docker_config: Option<&Path>| {
        let mut cmd = Command::new(bin_dir().join("rauha"));
        cmd.env("RAUHA_ADDR", d.addr()).env("HOME", reg.dir());
        match docker_config {
            Some(dir) => {
                cmd.env("DOCKER_CONFIG", dir)
                    .args(["image", "pull", &image]);
            }
            None => {
                cmd.args([
                    "image",
                    "pull",
                    "--username",
                    "rauha",
                    "--password-stdin",
                    &image,
                ]);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rauha");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("password");
        child.wait_with_output().expect("wait")
    };
    let line = fails(&with_password("wrong", None), "wrong password");
    assert!(
        line.contains("refused the credentials") && line.contains("--password-stdin"),
        "{line}"
    );
    ok(&with_password("s3cret-pw", None), "right password");
    ok(&d.cli(&["image", "rm", &image]), "rm");

    // A docker-style config.json, as `docker login` leaves it.
    let config = reg.dir().join("docker-config");
    std::fs::create_dir_all(&config).expect("dir");
    std::fs::write(
        config.join("config.json"),
        serde_json::json!({"auths": {reg.host(): {"auth": "cmF1aGE6czNjcmV0LXB3"}}}).to_string(),
    )
    .expect("config.json");
    ok(&with_password("", Some(&config)), "config.json credentials");

    // Kept nowhere: not in the log, not in the store.
    assert!(
        !d.log().contains("s3cret-pw"),
        "the password is in rauhad's log"
    );
    let found = Command::new("grep")
        .args(["-r", "-l", "s3cret-pw"])
        .arg(&d.root)
        .output()
        .expect("grep");
    assert!(
        text(&found.stdout).is_empty(),
        "the password is stored: {}",
        text(&found.stdout)
    );
}

// ------------------------------------------------- kill -9 in pull, prune

/// A TCP proxy in front of the registry that logs each request's path and
/// holds (never answers) those for the blob it is told to stall on.
struct Proxy {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stall: Arc<Mutex<Option<String>>>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stall: Arc<Mutex<Option<String>>> = Arc::default();
        let (r, s) = (Arc::clone(&requests), Arc::clone(&stall));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, s, up) = (Arc::clone(&r), Arc::clone(&s), upstream.clone());
                std::thread::spawn(move || Proxy::serve(conn, &up, &r, &s));
            }
        });
        Proxy {
            port,
            requests,
            stall,
        }
    }

    fn serve(
        mut client: TcpStream,
        upstream: &str,
        requests: &Mutex<Vec<String>>,
        stall: &Mutex<Option<String>>,
    ) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match client.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let line = head.lines().next().unwrap_or("").to_string();
        requests.lock().expect("log").push(line.clone());
        loop {
            let held = stall.lock().expect("stall").clone();
            match held {
                Some(d) if line.contains(&d) => std::thread::sleep(Duration::from_millis(50)),
                _ => break,
            }
            if client.peek(&mut byte).is_ok_and(|n| n == 0) {
                return;
            }
        }
        // One request per connection: the registry closes after it.
        let mut rewritten: String = head
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
            .map(|l| format!("{l}\r\n"))
            .collect();
        rewritten.push_str("Connection: close\r\n\r\n");
        let Ok(mut up) = TcpStream::connect(upstream) else {
            return;
        };
        if up.write_all(rewritten.as_bytes()).is_err() {
            return;
        }
        let _ = std::io::copy(&mut up, &mut client);
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requested(&self, digest: &str) -> bool {
        self.requests
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains(digest))
    }
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_9_in_a_pull_or_a_prune_loses_no_image_and_a_pull_resumes() {
    if !images_ready() {
        return;
    }
    let mut d = Daemon::start();
    let reg = Registry::start();
    let other = reg.push_busybox_image("other:1", &["sh"]);
    ok(&d.cli(&["image", "pull", &other]), "pull the other image");

    // busybox and three layers; the proxy holds the last.
    let random = |seed: u8| -> Vec<u8> {
        let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
        (0..(1 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    };
    let work = reg.dir().join("layers");
    std::fs::create_dir_all(&work).expect("work");
    let mut layers = vec![busybox_layer(&work)];
    layers.extend((1..=3u8).map(|i| layer(&[E::File(&format!("file{i}"), &random(i))])));
    push_layers(&reg, "big:1", &layers, oci_arch());
    let proxy = Proxy::start(reg.host());
    let image = format!("{}/big:1", proxy.host());
    let manifest: serde_json::Value = {
        let (_, _, body) = http(
            &reg.host(),
            "GET",
            "/v2/big/manifests/1",
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            b"",
        );
        serde_json::from_slice(&body).expect("manifest")
    };
    let digests: Vec<String> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect();
    *proxy.stall.lock().expect("stall") = Some(digests[3].clone());

    let mut pull = Command::new(bin_dir().join("rauha"))
        .args(["image", "pull", &image])
        .env("RAUHA_ADDR", d.addr())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pull");
    wait_for("the first three layers stored", 60, || {
        digests[..3].iter().all(|l| blob(&d, l).exists()) && proxy.requested(&digests[3])
    });
    d.kill9();
    let _ = pull.wait();
    d.spawn(&[]);

    let list = json(&d.cli(&["image", "ls", "--json"]));
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, [other.as_str()], "after kill -9 in a pull");
    assert!(
        ingest_is_empty(&d),
        "a partial blob stays in the ingest dir"
    );
    assert!(digests[..3].iter().all(|l| blob(&d, l).exists()));
    assert_eq!(
        ok(
            &d.cli(&["sandbox", "--image", &other, "--", "echo", "ok"]),
            "other runs"
        ),
        "ok\n"
    );

    // Again, unstalled: only what is missing is fetched.
    *proxy.stall.lock().expect("stall") = None;
    proxy.requests.lock().expect("log").clear();
    ok(&d.cli(&["image", "pull", &image]), "pull again");
    assert!(
        proxy.requested(&digests[3]),
        "the missing layer was fetched"
    );
    for done in &digests[..3] {
        assert!(
            !proxy.requested(done),
            "layer {done} was fetched again: {:?}",
            proxy.requests.lock().expect("log")
        );
    }
    let out = d.cli(&[
        "sandbox",
        "--image",
        &image,
        "--",
        "sh",
        "-c",
        "wc -c < /file1; wc -c < /file3",
    ]);
    assert_eq!(
        ok(&out, "resumed image runs")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1048576", "1048576"]
    );

    // kill -9 in a prune, wherever it lands: the other image stays whole.
    ok(&d.cli(&["image", "rm", &image]), "rm");
    let mut prune = Command::new(bin_dir().join("rauha"))
        .args(["image", "prune"])
        .env("RAUHA_ADDR", d.addr())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prune");
    std::thread::sleep(Duration::from_millis(30));
    d.kill9();
    let _ = prune.wait();
    d.spawn(&[]);
    assert_eq!(
        ok(
            &d.cli(&["sandbox", "--image", &other, "--", "echo", "ok"]),
            "other after prune"
        ),
        "ok\n"
    );
    ok(&d.cli(&["image", "prune"]), "prune completes");
    for gone in &digests {
        assert!(!blob(&d, gone).exists(), "{gone} outlived prune");
    }
    let stale: Vec<_> = std::fs::read_dir(d.root.join("images/snapshots"))
        .expect("snapshots")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(stale.is_empty(), "{stale:?}");
    assert_eq!(
        ok(
            &d.cli(&["sandbox", "--image", &other, "--", "echo", "ok"]),
            "other after the second prune"
        ),
        "ok\n"
    );
}

#[test]
fn images_move_through_archives() {
    if !images_ready() {
        return;
    }
    let d = Daemon::start();
    let reg = Registry::start();
    let image = reg.push_image(
        "arch:1",
        &ImageSpec::busybox(&["sh"]).file("/marker", "from the archive\n", 0o644),
    );
    ok(&d.cli(&["image", "pull", &image]), "pull");
    let digest = json(&d.cli(&["image", "inspect", &image]))["digest"].clone();
    let tar = d.dir.join("exported.tar");
    ok(
        &d.cli(&["image", "export", &image, "-o", &tar.display().to_string()]),
        "export",
    );
    ok(&d.cli(&["image", "rm", &image]), "rm");
    ok(&d.cli(&["image", "prune"]), "prune");
    let imported = ok(
        &d.cli(&["image", "import", &tar.display().to_string()]),
        "import",
    );
    assert_eq!(
        imported.trim(),
        format!("{image}@{}", digest.as_str().unwrap_or(""))
    );
    let out = d.cli(&[
        "sandbox", "--image", &image, "--pull", "never", "--", "cat", "/marker",
    ]);
    assert_eq!(ok(&out, "run the imported image"), "from the archive\n");

    // What skopeo writes: a docker-archive (docker save's format) and an
    // oci-archive whose only name is a tag (so --name is needed).
    let docker = d.dir.join("docker.tar");
    run_ok(Command::new(bin("skopeo")).args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("docker-archive:{}:other/arch:docker", docker.display()),
    ]));
    let out = ok(
        &d.cli(&["image", "import", &docker.display().to_string()]),
        "docker-archive",
    );
    assert!(
        out.starts_with("docker.io/other/arch:docker@sha256:"),
        "{out}"
    );
    let out = d.cli(&[
        "sandbox",
        "--image",
        "other/arch:docker",
        "--pull",
        "never",
        "--",
        "cat",
        "/marker",
    ]);
    assert_eq!(ok(&out, "run the docker-archive"), "from the archive\n");
    let oci = d.dir.join("oci.tar");
    run_ok(Command::new(bin("skopeo")).args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci-archive:{}:v1", oci.display()),
    ]));
    let line = fails(
        &d.cli(&["image", "import", &oci.display().to_string()]),
        "unnamed",
    );
    assert!(line.contains("--name"), "{line}");
    ok(
        &d.cli(&[
            "image",
            "import",
            "--name",
            "local/arch:oci",
            &oci.display().to_string(),
        ]),
        "--name",
    );
    assert_eq!(
        json(&d.cli(&["image", "inspect", "local/arch:oci"]))["digest"],
        digest
    );

    // Not an archive: one line, nothing left in the store's scratch space.
    let junk = d.dir.join("junk.tar");
    std::fs::write(&junk, b"this is not an image archive").expect("junk");
    let line = fails(
        &d.cli(&["image", "import", &junk.display().to_string()]),
        "junk",
    );
    assert!(line.len() < 300, "{line}");
    let ingest: Vec<_> = std::fs::read_dir(d.root.join("images/ingest"))
        .expect("ingest")
        .flatten()
        .collect();
    assert!(ingest.is_empty(), "{ingest:?}");
    ok(&d.cli(&["image", "ls"]), "serving");
}

#[test]
fn a_mirror_serves_a_registrys_images() {
    if !images_ready() {
        return;
    }
    let mut d = Daemon::start();
    let reg = Registry::start();
    reg.push_busybox_image("mirrored:1", &["sh"]);
    // The registry the image is named by answers nothing; its mirror has it.
    let gone = rauha_e2e::containerd::free_port();
    let upstream = format!("127.0.0.1:{gone}");
    d.kill9();
    d.spawn(&["--registry-mirror", &format!("{upstream}={}", reg.host())]);
    let image = format!("{upstream}/mirrored:1");
    let out = ok(
        &d.cli(&["image", "pull", &image]),
        "pull through the mirror",
    );
    assert!(out.starts_with(&format!("{image}@sha256:")), "{out}");
    let out = d.cli(&["sandbox", "--image", &image, "--", "echo", "mirrored"]);
    assert_eq!(ok(&out, "run"), "mirrored\n");
    // Not in the mirror either: the upstream's error, one line.
    let line = fails(
        &d.cli(&["image", "pull", &format!("{upstream}/absent:1")]),
        "absent",
    );
    assert!(line.contains(&upstream), "{line}");
}

#[test]
fn a_store_past_its_size_is_collected_after_a_pull() {
    if !images_ready() {
        return;
    }
    let mut d = Daemon::start();
    let reg = Registry::start();
    let first = reg.push_image(
        "first:1",
        &ImageSpec::busybox(&["sh"]).file("/a", "a", 0o644),
    );
    let second = reg.push_image(
        "second:1",
        &ImageSpec::busybox(&["sh"]).file("/b", "b", 0o644),
    );
    d.kill9();
    d.spawn(&["--image-store-max", "1Ki"]);
    ok(&d.cli(&["image", "pull", &first]), "pull first");
    let gone = json(&d.cli(&["image", "inspect", &first]))["layers"][0]["digest"]
        .as_str()
        .expect("layer")
        .to_string();
    ok(&d.cli(&["image", "rm", &first]), "rm first");
    assert!(blob(&d, &gone).exists(), "rm alone frees nothing");
    ok(&d.cli(&["image", "pull", &second]), "pull second");
    // Over 1 KiB after the pull: collected, all but what images use.
    wait_for("the collection", 10, || !blob(&d, &gone).exists());
    let out = d.cli(&[
        "sandbox", "--image", &second, "--pull", "never", "--", "cat", "/b",
    ]);
    assert_eq!(ok(&out, "the kept image runs"), "b");
}

#[test]
fn an_images_user_runs_its_processes() {
    if !images_ready() {
        return;
    }
    let d = Daemon::start();
    let reg = Registry::start();
    let image = reg.push_image(
        "user:1",
        &ImageSpec::busybox(&["sh"])
            .passwd("app:x:1000:1001::/tmp:/bin/sh")
            .group("app:x:1001:")
            .group("extra:x:2000:app")
            .user("app"),
    );
    let out = d.cli(&[
        "sandbox",
        "--image",
        &image,
        "--",
        "sh",
        "-c",
        "id -u; id -g; id -G",
    ]);
    assert_eq!(
        ok(&out, "sandbox as the image's user"),
        "1000\n1001\n1001 2000\n"
    );
    let numeric = reg.push_image("user:2", &ImageSpec::busybox(&["sh"]).user("4242:4343"));
    let out = d.cli(&[
        "sandbox",
        "--image",
        &numeric,
        "--",
        "sh",
        "-c",
        "id -u; id -g",
    ]);
    assert_eq!(ok(&out, "numeric user"), "4242\n4343\n");
    let unknown = reg.push_image("user:3", &ImageSpec::busybox(&["sh"]).user("ghost"));
    let line = fails(
        &d.cli(&["sandbox", "--image", &unknown, "--", "true"]),
        "unknown user",
    );
    assert!(
        line.contains("\"ghost\"") && line.contains("/etc/passwd"),
        "{line}"
    );
}
