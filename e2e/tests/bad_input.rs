//! Bad input gets one clear line, and the daemon keeps serving.

use rauha_api::v1;
use rauha_e2e::{ready, sandbox, sandbox_request, text, Daemon};

fn one_line(s: &str) -> &str {
    let trimmed = s.trim_end();
    assert!(!trimmed.contains('\n'), "one line expected: {s:?}");
    trimmed
}

#[tokio::test]
async fn each_bad_input_is_a_clear_error_and_the_daemon_keeps_serving() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let policy = d.dir.join("bad.toml");
    std::fs::write(&policy, "[resources]\nmemory_limit = \"4Gb\"\n").expect("write");
    let out = d.cli(&[
        "zone",
        "create",
        "web",
        "--policy",
        policy.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        one_line(&err).ends_with(&format!(
            "{}:2: resources.memory_limit: \"4Gb\" is not a size; use 512Mi or 4Gi",
            policy.display()
        )),
        "{err}"
    );

    let out = d.cli(&["zone", "delete", "nope"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        one_line(&text(&out.stderr)),
        "rauha: zone \"nope\" not found; list zones with `rauha zone list`"
    );

    assert!(d.cli(&["zone", "create", "dup"]).status.success());
    let out = d.cli(&["zone", "create", "dup"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        one_line(&text(&out.stderr)),
        "rauha: zone \"dup\" already exists; pick another name or delete it with `rauha zone delete dup`"
    );

    let out = d.cli(&["zone", "create", "Not_A_Label"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        one_line(&text(&out.stderr)).contains("use only lowercase letters, digits and '-'"),
        "{}",
        text(&out.stderr)
    );

    // A name that is a zone id's shape is refused: a lookup or a delete by
    // it means the zone of that id, never this one.
    let id = "00000000-0000-0000-0000-000000000000";
    let out = d.cli(&["zone", "create", id]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        one_line(&err).contains("has the shape of a zone id") && err.len() < 300,
        "{err}"
    );
    assert!(!text(&d.cli(&["zone", "list", "--json"]).stdout).contains(id));

    // Fifty clients delete one zone at once: those that found it get OK
    // (one tore it down: the registry's unit test counts), those that
    // came after it was gone NotFound; never INTERNAL.
    assert!(d.cli(&["zone", "create", "raced"]).status.success());
    let mut deletes = Vec::new();
    for _ in 0..50 {
        let mut zones = d.zones_client().await;
        deletes.push(tokio::spawn(async move {
            zones
                .delete(v1::DeleteZoneRequest {
                    zone: "raced".into(),
                    force: false,
                })
                .await
        }));
    }
    let mut ok = 0;
    for del in deletes {
        match del.await.expect("join") {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
                assert_eq!(
                    s.message(),
                    "zone \"raced\" not found; list zones with `rauha zone list`"
                );
            }
        }
    }
    assert!(ok >= 1, "one delete at least did it");
    let listed = text(&d.cli(&["zone", "list", "--json"]).stdout);
    assert!(!listed.contains("\"raced\""), "{listed}");

    // Creates and deletes of one name, interleaved from 40 clients: each
    // ends in OK, AlreadyExists or NotFound, never INTERNAL, and the name
    // is at most one zone, whose deletion leaves nothing behind.
    let agents_before = rauha_e2e::processes_in(&d.cgroup_parent).len();
    let mut racers = Vec::new();
    for i in 0..40 {
        let mut zones = d.zones_client().await;
        racers.push(tokio::spawn(async move {
            if i % 2 == 0 {
                zones
                    .create(v1::CreateZoneRequest {
                        name: "flip".into(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
            } else {
                zones
                    .delete(v1::DeleteZoneRequest {
                        zone: "flip".into(),
                        force: true,
                    })
                    .await
                    .map(|_| ())
            }
        }));
    }
    for r in racers {
        if let Err(s) = r.await.expect("join") {
            assert!(
                matches!(s.code(), tonic::Code::AlreadyExists | tonic::Code::NotFound),
                "{s:?}"
            );
        }
    }
    let _ = d.cli(&["zone", "delete", "--force", "flip"]);
    let listed = text(&d.cli(&["zone", "list", "--json"]).stdout);
    assert!(!listed.contains("\"flip\""), "{listed}");
    assert_eq!(
        rauha_e2e::processes_in(&d.cgroup_parent).len(),
        agents_before,
        "a raced zone left processes"
    );

    // Stdio paths: rauhad makes no host directory for an output, and a
    // stdin that is not there is refused, not ignored.
    assert!(d.cli(&["zone", "create", "stdio-z"]).status.success());
    let mut processes = d.processes_client().await;
    for (stdin, stdout, says) in [
        ("", "/nonexistent-rauha/dir/x", "stdio.stdout"),
        ("/nonexistent-rauha-stdin", "", "stdio.stdin"),
        (
            "",
            "/dev/null",
            "stdio.stdout: \"/dev/null\" is outside the directories",
        ),
    ] {
        let err = processes
            .run(v1::RunRequest {
                zone: "stdio-z".into(),
                spec: sandbox_request(&["true"], None, 0).spec,
                stdio: Some(v1::StdioPaths {
                    stdin: stdin.into(),
                    stdout: stdout.into(),
                    stderr: String::new(),
                }),
                id: String::new(),
                open_stdin: false,
            })
            .await
            .expect_err("bad stdio");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(says), "{}", err.message());
    }
    assert!(!std::path::Path::new("/nonexistent-rauha").exists());
    assert!(d.cli(&["zone", "delete", "stdio-z"]).status.success());

    // Each flag's error names that flag.
    for (args, says) in [
        (
            &["sandbox", "--keep-zone", "--ttl", "abc", "--", "true"][..],
            "rauha: --ttl \"abc\" is not a duration",
        ),
        (
            &["sandbox", "--repo-path", "", "--", "true"][..],
            "rauha: --repo-path is empty; give a directory",
        ),
    ] {
        let out = d.cli(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let err = text(&out.stderr);
        assert!(one_line(&err).starts_with(says), "{args:?}: {err}");
    }

    let out = d.cli(&["logs", "not-a-uuid"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        one_line(&text(&out.stderr)),
        "rauha: id: \"not-a-uuid\" is not a valid UUID; use an id printed by `rauha run` or `rauha ps`"
    );

    let mut client = d.sandbox_client().await;
    let empty = client
        .run_sandbox(sandbox_request(&[], None, 0))
        .await
        .expect_err("empty command");
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        empty.message(),
        "spec.args: the command is empty; give a program to run, e.g. `-- sh -c 'echo hi'`"
    );

    let big = "x".repeat(10 * 1024 * 1024);
    let huge = client
        .run_sandbox(sandbox_request(&["echo", &big], None, 0))
        .await
        .expect_err("10 MB argument");
    assert_eq!(huge.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        huge.message(),
        "spec.args[1]: 10485760 bytes is longer than the 131072 bytes Linux allows for one argument; pass large data through a file"
    );

    // A 1 MB value, or one with a newline, comes back as one bounded line.
    for cwd in [format!("/{}", "x".repeat(1 << 20)), "/a\nb".to_string()] {
        let mut req = sandbox_request(&["true"], None, 0);
        if let Some(spec) = req.spec.as_mut() {
            spec.cwd = cwd.clone();
        }
        let err = client.run_sandbox(req).await.expect_err("bad cwd");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        let m = err.message();
        assert!(
            m.len() < 1100 && !m.contains('\n') && m.contains("cwd"),
            "{} bytes: {}",
            m.len(),
            &m[..m.len().min(300)]
        );
    }

    let preset = client
        .run_sandbox(v1::SandboxRequest {
            policy: Some(v1::PolicySource {
                source: Some(v1::policy_source::Source::Preset("paranoid".into())),
            }),
            ..sandbox_request(&["true"], None, 0)
        })
        .await
        .expect_err("unknown preset");
    assert_eq!(preset.message(), "policy.preset: \"paranoid\" is not a preset; use one of minimal, standard, strict or pass a TOML file");

    // Through all of that the daemon kept serving, and lost nothing.
    let r = sandbox(&d, &["echo", "still here"], None, 10_000).await;
    assert_eq!(r.stdout, "still here\n");
    let zones = d.cli(&["zone", "list", "--json"]);
    assert!(
        text(&zones.stdout).contains("\"dup\""),
        "the good zone is still there: {}",
        text(&zones.stdout)
    );
    assert!(d.cli(&["zone", "delete", "dup"]).status.success());
}

#[test]
fn an_unreachable_daemon_is_one_line() {
    if !rauha_e2e::prerequisite(
        rauha_e2e::bin_dir().join("rauha").is_file(),
        "the rauha binary (cargo build --workspace)",
    ) {
        return;
    }
    let out = std::process::Command::new(rauha_e2e::bin_dir().join("rauha"))
        .args(["zone", "list"])
        .env("RAUHA_ADDR", "unix:///nonexistent/rauhad.sock")
        .output()
        .expect("run rauha");
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        one_line(&err).starts_with("rauha: cannot reach rauhad at unix:///nonexistent/rauhad.sock"),
        "{err}"
    );
}

/// A body passed through as bytes, to send what no generated client would.
#[derive(Clone, Copy, Default)]
struct Raw;
struct RawBody;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBody;
    type Decoder = RawBody;
    fn encoder(&mut self) -> RawBody {
        RawBody
    }
    fn decoder(&mut self) -> RawBody {
        RawBody
    }
}

impl tonic::codec::Encoder for RawBody {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBody {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(buf);
        Ok(Some(bytes::Buf::copy_to_bytes(buf, n).to_vec()))
    }
}

/// The status is the code given, its message one line under 300
/// characters naming `field`.
fn refused(s: &tonic::Status, code: tonic::Code, field: &str) {
    assert_eq!(s.code(), code, "{s:?}");
    let m = s.message();
    assert!(
        m.len() < 300 && !m.contains('\n') && m.contains(field),
        "{field}: {} bytes: {m}",
        m.len()
    );
}

/// Every cgroup directory below the hierarchies' roots whose path from
/// the root starts with `prefix`.
fn cgroup_dirs_at(prefix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut roots = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for r in roots {
        let p = r.join(prefix.trim_start_matches('/'));
        if p.is_dir() {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn hostile_values_are_refused_and_leave_the_host_as_it_was() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let mut zones = d.zones_client().await;

    // cgroup_parent: only below an allowed root or rauhad's own parent,
    // and what rauhad made for it goes with the zone.
    for parent in ["/etc/passwd", "/dev/null", "/proc/1/ns/net", "/sys/../x"] {
        let before = cgroup_dirs_at(parent);
        let err = zones
            .create(v1::CreateZoneRequest {
                name: "cg".into(),
                cgroup_parent: parent.into(),
                ..Default::default()
            })
            .await
            .expect_err(parent);
        refused(&err, tonic::Code::InvalidArgument, "cgroup_parent");
        assert_eq!(
            cgroup_dirs_at(parent),
            before,
            "{parent}: a cgroup was made"
        );
    }
    let pods = format!("/{}-pods", d.cgroup_parent);
    assert!(cgroup_dirs_at(&pods).is_empty(), "{pods} is there already");
    let zone = zones
        .create(v1::CreateZoneRequest {
            name: "under-pod".into(),
            cgroup_parent: format!("{pods}/pod-x"),
            ..Default::default()
        })
        .await
        .expect("a zone below an allowed root")
        .into_inner();
    let made = cgroup_dirs_at(&format!("{pods}/pod-x/{}", zone.id));
    assert!(!made.is_empty(), "the zone's cgroup is below {pods}/pod-x");
    zones
        .delete(v1::DeleteZoneRequest {
            zone: "under-pod".into(),
            force: false,
        })
        .await
        .expect("delete");
    assert_eq!(
        cgroup_dirs_at(&pods),
        Vec::<std::path::PathBuf>::new(),
        "the cgroups rauhad made for the zone stay after it"
    );

    // A body that is not protobuf is the sender's mistake.
    let mut grpc = tonic::client::Grpc::new(d.channel().await);
    grpc.ready().await.expect("ready");
    let err = grpc
        .unary(
            tonic::Request::new(vec![0x0a, 0x7f, b'a']),
            tonic::codegen::http::uri::PathAndQuery::from_static("/rauha.v1.Zones/Create"),
            Raw,
        )
        .await
        .expect_err("malformed body");
    refused(&err, tonic::Code::InvalidArgument, "protobuf");

    // Workspace paths the zone cannot have.
    let mut sandbox_client = d.sandbox_client().await;
    for (repo, target, field) in [
        ("/tmp", "/etc/passwd", "workspace_path"),
        ("/proc", "", "repo_path"),
        ("/sys", "", "repo_path"),
        ("/tmp", "/proc/x", "workspace_path"),
    ] {
        let err = sandbox_client
            .run_sandbox(v1::SandboxRequest {
                repo_path: repo.into(),
                workspace_path: target.into(),
                ..sandbox_request(&["true"], None, 0)
            })
            .await
            .expect_err(field);
        refused(&err, tonic::Code::InvalidArgument, field);
    }

    // Policies: one line naming file, line and key, without serde's words.
    let write = |name: &str, body: &[u8]| {
        let p = d.dir.join(name);
        std::fs::write(&p, body).expect("write policy");
        p.display().to_string()
    };
    let huge_number = format!("[resources]\npids_max = 1{}\n", "0".repeat(308));
    let big = "# padding\n".repeat(5 << 20);
    for (name, body, says) in [
        (
            "negative.toml",
            &b"[resources]\npids_max = -1\n"[..],
            "negative.toml:2: resources.pids_max: -1 is negative",
        ),
        (
            "huge.toml",
            huge_number.as_bytes(),
            "huge.toml:2: resources.pids_max: the number is too large",
        ),
        (
            "two63.toml",
            &b"[resources]\npids_max = 9223372036854775808\n"[..],
            "two63.toml:2: resources.pids_max: 9223372036854775808 is out of range",
        ),
        (
            "latin1.toml",
            &b"[zone]\nhostname = \"\xff\xfe\"\n"[..],
            "latin1.toml:2: is not UTF-8 text",
        ),
        ("big.toml", big.as_bytes(), "big.toml\" is 52428800 bytes"),
        (
            "missing.toml",
            &b"[filesystem]\nwritable_paths = [\"/nonexistent-rauha/x\"]\n"[..],
            "missing.toml:2: filesystem.writable_paths: \"/nonexistent-rauha/x\" does not exist on the host",
        ),
    ] {
        let path = write(name, body);
        let out = d.cli(&["sandbox", "--policy", &path, "--", "true"]);
        assert_eq!(out.status.code(), Some(125), "{name}");
        let err = text(&out.stderr);
        let line = one_line(&err);
        assert!(
            line.contains(says) && line.len() < 300 && !line.contains("i128"),
            "{name}: {line}"
        );
    }

    // A working directory that is a file says so.
    let out = d.cli(&["sandbox", "--cwd", "/etc/passwd", "--", "true"]);
    assert!(
        text(&out.stderr).contains("\"/etc/passwd\" is a file in the zone, not a directory"),
        "{}",
        text(&out.stderr)
    );

    // Container roots: an unsupported mount, a destination with a newline,
    // a root added twice.
    let Some(bundle) = rauha_e2e::busybox_bundle(&d.dir, true) else {
        assert!(!rauha_e2e::prerequisite(
            false,
            "busybox-static (apt-get install busybox-static)"
        ));
        return;
    };
    zones
        .create(v1::CreateZoneRequest {
            name: "pod".into(),
            bundle: bundle.display().to_string(),
            ..Default::default()
        })
        .await
        .expect("a bundle zone");
    let root = |name: &str, mounts: Vec<v1::RootMount>| v1::AddRootRequest {
        zone: "pod".into(),
        name: name.into(),
        rootfs: bundle.join("rootfs").display().to_string(),
        mounts,
        ..Default::default()
    };
    let mount = |destination: &str, kind: &str, source: &str| v1::RootMount {
        destination: destination.into(),
        r#type: kind.into(),
        source: source.into(),
        options: Vec::new(),
    };
    let err = zones
        .add_root(root("c1", vec![mount("/mnt", "nfs", "server:/x")]))
        .await
        .expect_err("nfs");
    refused(&err, tonic::Code::InvalidArgument, "mounts[0]");
    let err = zones
        .add_root(root("c1", vec![mount("/a\nb", "tmpfs", "tmpfs")]))
        .await
        .expect_err("newline");
    refused(&err, tonic::Code::InvalidArgument, "mounts[0].destination");
    let err = zones
        .add_root(root(
            "c1",
            vec![mount("/data", "bind", "/nonexistent-rauha-src")],
        ))
        .await
        .expect_err("missing source");
    refused(&err, tonic::Code::InvalidArgument, "mounts[0]");
    zones.add_root(root("c1", Vec::new())).await.expect("c1");
    let err = zones
        .add_root(root("c1", Vec::new()))
        .await
        .expect_err("twice");
    refused(&err, tonic::Code::AlreadyExists, "c1");

    // Through all of it rauhad served and kept what it had.
    let listed = text(&d.cli(&["zone", "list", "--json"]).stdout);
    assert!(
        listed.contains("\"pod\"") && !listed.contains("\"cg\""),
        "{listed}"
    );
    assert!(d
        .cli(&["zone", "delete", "--force", "pod"])
        .status
        .success());
}

#[tokio::test]
async fn a_megabyte_in_any_field_is_one_short_line_naming_it() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let mb = "x".repeat(1 << 20);
    let abs = format!("/{mb}");
    let mut zones = d.zones_client().await;
    let mut sandboxes = d.sandbox_client().await;
    let mut processes = d.processes_client().await;
    let create = |f: &dyn Fn(&mut v1::CreateZoneRequest)| {
        let mut r = v1::CreateZoneRequest {
            name: "big".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let policy = |source| {
        Some(v1::PolicySource {
            source: Some(source),
        })
    };
    let mut results: Vec<(&str, tonic::Status)> = Vec::new();
    for (field, req) in [
        ("zone name", create(&|r| r.name = mb.clone())),
        ("bundle", create(&|r| r.bundle = mb.clone())),
        ("netns", create(&|r| r.netns = abs.clone())),
        ("cgroup_parent", create(&|r| r.cgroup_parent = abs.clone())),
        (
            "policy.preset",
            create(&|r| r.policy = policy(v1::policy_source::Source::Preset(mb.clone()))),
        ),
        (
            "xxxxxxxx",
            create(&|r| {
                r.policy = policy(v1::policy_source::Source::Inline(v1::InlinePolicy {
                    file: mb.clone(),
                    toml: "[resources]\npids_max = -1\n".into(),
                }))
            }),
        ),
    ] {
        results.push((field, zones.create(req).await.expect_err(field)));
    }
    let sandbox_req = |f: &dyn Fn(&mut v1::SandboxRequest)| {
        let mut r = sandbox_request(&["true"], None, 0);
        f(&mut r);
        r
    };
    for (field, req) in [
        ("on_success", sandbox_req(&|r| r.on_success = mb.clone())),
        ("repo_path", sandbox_req(&|r| r.repo_path = abs.clone())),
        (
            "secret name",
            sandbox_req(&|r| {
                r.secrets = vec![v1::SecretRef {
                    name: mb.clone(),
                    env: String::new(),
                    fd: 0,
                }]
            }),
        ),
    ] {
        results.push((field, sandboxes.run_sandbox(req).await.expect_err(field)));
    }
    let run = |stdout: &str, env: &str| v1::RunRequest {
        zone: "nope".into(),
        spec: Some(v1::ProcessSpec {
            args: vec!["true".into()],
            env: vec![env.into()],
            ..Default::default()
        }),
        stdio: Some(v1::StdioPaths {
            stdout: stdout.into(),
            ..Default::default()
        }),
        id: String::new(),
        open_stdin: false,
    };
    for (field, req) in [
        ("stdio.stdout", run(&abs, "A=1")),
        ("stdio.stdout", run("out.txt", "A=1")),
        ("spec.env[0]", run("", "A B=1")),
    ] {
        results.push((field, processes.run(req).await.expect_err(field)));
    }
    let err = zones
        .add_root(v1::AddRootRequest {
            zone: "nope".into(),
            name: mb.clone(),
            rootfs: "/".into(),
            ..Default::default()
        })
        .await
        .expect_err("root name");
    results.push(("name", err));
    for (field, s) in &results {
        refused(s, tonic::Code::InvalidArgument, field);
    }
    // Nothing was made, and rauhad serves on.
    let listed = text(&d.cli(&["zone", "list", "--json"]).stdout);
    assert!(!listed.contains("\"big\""), "{listed}");
    assert_eq!(
        sandbox(&d, &["echo", "ok"], None, 10_000).await.stdout,
        "ok\n"
    );
}
