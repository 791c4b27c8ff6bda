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

    // Stdio paths: rauhad makes no host directory for an output, and a
    // stdin that is not there is refused, not ignored.
    assert!(d.cli(&["zone", "create", "stdio-z"]).status.success());
    let mut processes = d.processes_client().await;
    for (stdin, stdout, says) in [
        ("", "/nonexistent-rauha/dir/x", "stdio.stdout"),
        ("/nonexistent-rauha-stdin", "", "stdio.stdin"),
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
