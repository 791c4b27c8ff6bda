//! `kill -9` of rauhad loses no task: finished results stay, running tasks
//! are taken over by the restarted rauhad and end with their real result,
//! no client reports success without one, and no orphan is left.

use std::time::Duration;

use rauha_api::v1;
use rauha_e2e::{processes_in, ready, reap_orphans, sandbox, sandbox_request, Daemon};

#[tokio::test]
async fn kill_nine_while_tasks_run_loses_no_task_and_leaves_no_orphan() {
    if !ready() {
        return;
    }
    let mut d = Daemon::start();
    let mut finished = Vec::new();
    for i in 0..3 {
        let r = sandbox(&d, &["sh", "-c", &format!("echo done-{i}")], None, 10_000).await;
        assert_eq!(r.status, "succeeded");
        finished.push(r);
    }
    // A persistent zone with a running process survives the restart.
    let out = d.cli(&["zone", "create", "keeper"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&["run", "--zone", "keeper", "--", "sleep", "300"]);
    assert!(out.status.success());
    let keeper_proc = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let mut running = Vec::new();
    for i in 0..5 {
        let mut client = d.sandbox_client().await;
        let req = sandbox_request(
            &["sh", "-c", &format!("sleep 3; echo done{i}")],
            None,
            60_000,
        );
        running.push(tokio::spawn(async move { client.run_sandbox(req).await }));
    }
    // Wait until the 5 tasks run, then kill rauhad outright.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while processes_in(&d.cgroup_parent)
        .iter()
        .filter(|(_, c)| c.trim() == "sleep 3")
        .count()
        < 5
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the 5 tasks did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.kill9();
    for r in running {
        assert!(
            r.await.expect("join").is_err(),
            "the callers see the daemon go away"
        );
    }
    d.spawn(&[]);

    // Every finished result is there, unchanged.
    let mut client = d.sandbox_client().await;
    // The five tasks went on while rauhad was away: each ends with its
    // real result, taken over by the restarted rauhad.
    let tasks = client
        .list_tasks(v1::ListTasksRequest { limit: 0 })
        .await
        .expect("list")
        .into_inner()
        .tasks;
    let resumed: Vec<_> = tasks
        .iter()
        .filter(|t| t.command.len() == 3 && t.command[2].starts_with("sleep 3"))
        .collect();
    assert_eq!(resumed.len(), 5, "{tasks:?}");
    for t in resumed {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let result = loop {
            match client
                .get_task(v1::TaskRef {
                    task_id: t.task_id.clone(),
                })
                .await
            {
                Ok(r) => break r.into_inner(),
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "task {} never ended",
                        t.task_id
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("{s}"),
            }
        };
        assert_eq!(result.status, "succeeded", "{result:?}");
        let i = t.command[2].trim_start_matches("sleep 3; echo done");
        assert_eq!(result.stdout, format!("done{i}\n"), "{result:?}");
        assert!(
            result.events.iter().any(|e| e.kind == "task_resumed"),
            "{:?}",
            result.events
        );
    }
    for r in &finished {
        let got = client
            .get_task(v1::TaskRef {
                task_id: r.task_id.clone(),
            })
            .await
            .expect("finished task kept")
            .into_inner();
        assert_eq!(&got, r);
    }
    // The task zones are gone: no cgroup, process or mount of theirs is left.
    reap_orphans();
    let procs = processes_in(&d.cgroup_parent);
    assert!(
        procs.iter().all(|(_, c)| c.trim() != "sleep 3"),
        "orphans: {procs:?}"
    );
    let zones: std::collections::BTreeSet<_> = d
        .zone_cgroups()
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_owned()))
        .collect();
    assert_eq!(
        zones.len(),
        1,
        "only the kept zone's cgroups remain: {:?}",
        d.zone_cgroups()
    );
    assert!(
        d.host_mounts().is_empty(),
        "mounts left: {:?}",
        d.host_mounts()
    );
    let zone_dirs = std::fs::read_dir(d.root.join("zones"))
        .expect("zones dir")
        .count();
    assert_eq!(zone_dirs, 1, "only the kept zone's state dir remains");
    // The kept zone was re-adopted: its process still runs and can be stopped.
    let out = d.cli(&["ps", "--zone", "keeper", "--json"]);
    let ps: serde_json::Value = rauha_e2e::json(&out);
    assert!(ps.to_string().contains(&keeper_proc), "{ps}");
    assert!(ps.to_string().contains("running"), "{ps}");
    let out = d.cli(&["stop", &keeper_proc, "--grace", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the daemon serves new work.
    assert_eq!(
        sandbox(&d, &["echo", "again"], None, 10_000).await.stdout,
        "again\n"
    );
    let out = d.cli(&["zone", "delete", "keeper"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    reap_orphans();
    assert!(processes_in(&d.cgroup_parent).is_empty());
}

#[tokio::test]
async fn orphaned_kernel_state_is_removed_at_start() {
    if !ready() {
        return;
    }
    let mut d = Daemon::start();
    d.kill9();
    // A cgroup and a state dir that no record owns, with a process in it.
    let orphan = uuid::Uuid::new_v4().to_string();
    // v1: the pids hierarchy; v2: the unified one.
    let pids = std::path::Path::new("/sys/fs/cgroup/pids");
    let base = if pids.is_dir() {
        pids
    } else {
        std::path::Path::new("/sys/fs/cgroup")
    };
    let cg = base.join(&d.cgroup_parent).join(&orphan);
    std::fs::create_dir_all(&cg).expect("orphan cgroup");
    let mut child = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("sleep");
    std::fs::write(cg.join("cgroup.procs"), child.id().to_string()).expect("join");
    std::fs::create_dir_all(d.root.join("zones").join(&orphan)).expect("orphan dir");
    d.spawn(&[]);
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the orphan's process was killed");
    assert!(!cg.exists(), "the orphan cgroup was removed");
    assert!(
        !d.root.join("zones").join(&orphan).exists(),
        "the orphan state dir was removed"
    );
}

/// The repro: five `rauha sandbox --json` clients whose rauhad is
/// killed mid-task exit 125 with a JSON error naming their task (never 0
/// with nothing); after the restart each task is `succeeded` with its own
/// output, and `rauha task get ID --wait` returns it and exits 0.
#[test]
fn a_client_whose_rauhad_dies_fails_and_its_task_ends_after_the_restart() {
    if !ready() {
        return;
    }
    let mut d = Daemon::start();
    let clients: Vec<_> = (0..5)
        .map(|i| {
            std::process::Command::new(rauha_e2e::bin_dir().join("rauha"))
                .args(["sandbox", "--json", "--", "sh", "-c"])
                .arg(format!("sleep 3; echo done{i}"))
                .env("RAUHA_ADDR", d.addr())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("rauha")
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while processes_in(&d.cgroup_parent)
        .iter()
        .filter(|(_, c)| c.trim() == "sleep 3")
        .count()
        < 5
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the 5 tasks did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.kill9();
    let mut ids = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let out = c.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(125),
            "client {i}: stdout={} stderr={}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v = rauha_e2e::json(&out);
        let id = v["task_id"].as_str().expect("the task's id").to_string();
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("rauha task get {id} --wait"))),
            "{v}"
        );
        ids.push(id);
    }
    d.spawn(&[]);
    let mut outputs = Vec::new();
    for id in &ids {
        let out = d.cli(&["task", "get", id, "--wait", "--json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = rauha_e2e::json(&out);
        assert_eq!(r["status"], "succeeded", "{r}");
        outputs.push(r["stdout"].as_str().expect("stdout").to_string());
    }
    outputs.sort();
    let expected: Vec<String> = (0..5).map(|i| format!("done{i}\n")).collect();
    assert_eq!(outputs, expected);
}

/// A `rauha` client killed mid-task leaves its task running; the result is
/// stored, and `task get --wait` returns it.
#[test]
fn a_killed_client_leaves_its_task_running() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let mut client = std::process::Command::new(rauha_e2e::bin_dir().join("rauha"))
        .args(["sandbox", "--json", "--", "sh", "-c", "sleep 2; echo kept"])
        .env("RAUHA_ADDR", d.addr())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rauha");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !processes_in(&d.cgroup_parent)
        .iter()
        .any(|(_, c)| c.trim() == "sleep 2")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the task did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    client.kill().expect("kill the client");
    let _ = client.wait();
    let list = rauha_e2e::json(&d.cli(&["task", "list", "--json"]));
    let id = list[0]["task_id"].as_str().expect("the task").to_string();
    let out = d.cli(&["task", "get", &id, "--wait", "--json"]);
    let r = rauha_e2e::json(&out);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["stdout"], "kept\n", "{r}");
}

/// Every client that streams from rauhad fails, with what to do, when
/// rauhad goes away under it: `exec` (naming its process), `events`, and
/// `logs --follow`; none exits 0 with nothing. `logs --follow` of a
/// process that ends prints all its output and exits with its code.
#[test]
fn streams_that_lose_rauhad_fail_with_what_to_do() {
    if !ready() {
        return;
    }
    let mut d = Daemon::start();
    assert!(d.cli(&["zone", "create", "s"]).status.success());
    let out = d.cli(&[
        "run",
        "--zone",
        "s",
        "--",
        "sh",
        "-c",
        "echo one; sleep 1; echo two; exit 3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = d.cli(&["logs", &id, "--follow"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let spawn = |args: &[&str]| {
        std::process::Command::new(rauha_e2e::bin_dir().join("rauha"))
            .args(args)
            .env("RAUHA_ADDR", d.addr())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("rauha")
    };
    let exec = spawn(&["exec", "s", "--", "sh", "-c", "sleep 30"]);
    let events = spawn(&["events"]);
    let out = d.cli(&["run", "--zone", "s", "--", "sleep", "30"]);
    let long = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let follow = spawn(&["logs", &long, "--follow"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while processes_in(&d.cgroup_parent)
        .iter()
        .filter(|(_, c)| c.contains("sleep 30"))
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the processes did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    for (what, child, says) in [
        ("exec", exec, "lost rauhad while process"),
        ("events", events, "run `rauha events` again"),
        ("logs --follow", follow, "once rauhad is back"),
    ] {
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{what}: {stderr}");
        assert!(stderr.contains(says), "{what}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{what}: one line: {stderr}"
        );
    }
    d.spawn(&[]);
    d.delete_all_zones();
}

/// A task's timeout keeps counting while rauhad is away: its zone's agent
/// kills the zone's processes at the deadline, and the restarted rauhad
/// records the task `timed_out` with the output it printed.
#[test]
fn a_timeout_is_kept_while_rauhad_is_away() {
    if !ready() {
        return;
    }
    let mut d = Daemon::start();
    let client = std::process::Command::new(rauha_e2e::bin_dir().join("rauha"))
        .args(["sandbox", "--json", "--timeout", "2s", "--", "sh", "-c"])
        .arg("echo started; sleep 30 & sleep 31")
        .env("RAUHA_ADDR", d.addr())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rauha");
    let running = |d: &Daemon| {
        processes_in(&d.cgroup_parent)
            .iter()
            .filter(|(_, c)| c.trim().starts_with("sleep 3"))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while running(&d) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the task did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.kill9();
    let out = client.wait_with_output().expect("client");
    assert_eq!(out.status.code(), Some(125));
    let id = rauha_e2e::json(&out)["task_id"]
        .as_str()
        .expect("the task's id")
        .to_string();
    // No rauhad: the agent ends the zone's processes at the deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while running(&d) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the task outlived its timeout while rauhad was away: {:?}",
            processes_in(&d.cgroup_parent)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d.spawn(&[]);
    let out = d.cli(&["task", "get", &id, "--wait", "--json"]);
    let r = rauha_e2e::json(&out);
    assert_eq!(r["status"], "timed_out", "{r}");
    assert_eq!(r["stdout"], "started\n", "{r}");
    assert!(
        r["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "timed_out")),
        "{r}"
    );
    // (The zone's processes were gone before rauhad came back: checked
    // above. `duration_ms` counts until the restarted rauhad concluded the
    // task, so it includes the time rauhad was away.)
}

/// The zone's agent killed from the host mid-task: the task fails with a
/// reason that names the agent (never a success, never a silent loss),
/// and the daemon goes on serving.
#[test]
fn a_killed_zone_agent_fails_its_task_with_the_reason() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let client = std::process::Command::new(rauha_e2e::bin_dir().join("rauha"))
        .args([
            "sandbox",
            "--json",
            "--",
            "sh",
            "-c",
            "echo begun; sleep 30",
        ])
        .env("RAUHA_ADDR", d.addr())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rauha");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let agent = loop {
        let procs = processes_in(&d.cgroup_parent);
        let started = procs.iter().any(|(_, c)| c.trim() == "sleep 30");
        if let (true, Some(pid)) = (started, zone_agents(&d).first()) {
            break *pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task did not start: {procs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill with plain integers.
    unsafe { libc::kill(agent as i32, libc::SIGKILL) };
    let out = client.wait_with_output().expect("client");
    assert_ne!(
        out.status.code(),
        Some(0),
        "a task whose agent died is no success"
    );
    let r = rauha_e2e::json(&out);
    assert_ne!(r["status"], "succeeded", "{r}");
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("agent")),
        "the reason names the zone's agent: {r}"
    );
    let id = r["task_id"].as_str().expect("id");
    let stored = rauha_e2e::json(&d.cli(&["task", "get", id, "--json"]));
    assert_eq!(stored["status"], r["status"], "{stored}");
    // The daemon serves on.
    let again = d.cli(&["sandbox", "--", "echo", "ok"]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), "ok\n");
}

/// rauhad killed in the middle of a workspace commit: the restarted rauhad
/// undoes the half-made commit from its journal, makes it again from the
/// zone it took over, and the task's one result lists every change; the
/// repository holds all of them and nothing of the commit's own.
/// Starts a task that writes `FILES` files into a new repository and
/// commits them, and kills rauhad once the commit has begun; the task's id.
fn kill_mid_commit(d: &mut Daemon, repo: &std::path::Path) -> String {
    std::fs::create_dir_all(repo).expect("repo");
    std::fs::write(repo.join("README"), "before\n").expect("README");
    // Each file one more step of the commit (and two journal lines): long
    // enough that the kill lands in the middle.
    let script = format!(
        "mkdir /workspace/many && cd /workspace/many && i=0; \
         while [ $i -lt {FILES} ]; do printf '%s\\n' $i > f$i; i=$((i+1)); done; \
         echo > /workspace/README; echo wrote"
    );
    let client = std::process::Command::new(rauha_e2e::bin_dir().join("rauha"))
        .args(["sandbox", "--json", "--repo-path"])
        .arg(repo)
        .args(["--on-success", "commit", "--", "sh", "-c", &script])
        .env("RAUHA_ADDR", d.addr())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rauha");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !staging(repo) {
        assert!(
            std::time::Instant::now() < deadline,
            "the commit did not start: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    d.kill9();
    assert!(staging(repo), "the commit ended before the kill");
    let half = std::fs::read_dir(repo.join("many"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(half < FILES, "the kill came after the last file");
    let out = client.wait_with_output().expect("client");
    assert_eq!(out.status.code(), Some(125));
    rauha_e2e::json(&out)["task_id"]
        .as_str()
        .expect("the task's id")
        .to_string()
}

const FILES: usize = 9000;

/// The pids of the daemon's zone agents: each zone's PID 1 (its launcher,
/// outside the zone's pid namespace, has the same command line).
fn zone_agents(d: &Daemon) -> Vec<u32> {
    let zone_init = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .is_some_and(|l| l.split_whitespace().last() == Some("1"))
    };
    processes_in(&d.cgroup_parent)
        .into_iter()
        .filter(|(p, c)| c.starts_with("rauha-guest-agent") && zone_init(*p))
        .map(|(p, _)| p)
        .collect()
}

/// Whether a commit's staging directory is in the repository.
fn staging(repo: &std::path::Path) -> bool {
    std::fs::read_dir(repo)
        .expect("repo")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".rauha-"))
}

#[test]
fn a_commit_cut_by_a_kill_is_made_whole_after_the_restart() {
    if !ready() {
        return;
    }
    let mut d = Daemon::start();
    let repo = d.dir.join("cut-repo");
    let id = kill_mid_commit(&mut d, &repo);

    d.spawn(&[]);
    let out = d.cli(&["task", "get", &id, "--wait", "--json"]);
    let r = rauha_e2e::json(&out);
    assert_eq!(r["status"], "succeeded", "{}", r["error"]);
    assert_eq!(r["stdout"], "wrote\n");
    assert_eq!(r["workspace"], "committed", "{}", r["error"]);
    assert!(
        d.log().contains("a commit cut by rauhad's stop was undone"),
        "{}",
        d.log()
    );
    let listed = r["files_changed"].as_array().map_or(0, Vec::len);
    // The directory, its files, and README.
    assert_eq!(listed, FILES + 2, "{}", r["error"]);
    let many: Vec<_> = std::fs::read_dir(repo.join("many"))
        .expect("many")
        .flatten()
        .collect();
    assert_eq!(many.len(), FILES);
    for i in [0, FILES / 2, FILES - 1] {
        assert_eq!(
            std::fs::read_to_string(repo.join(format!("many/f{i}"))).expect("file"),
            format!("{i}\n")
        );
    }
    assert_eq!(
        std::fs::read_to_string(repo.join("README")).expect("README"),
        "\n"
    );
    assert!(!staging(&repo), "the commit's own left in the repository");
    reap_orphans();
}

/// rauhad and the zone's agent both killed in the middle of a commit: the
/// zone is rebuilt (its workspace gone), so the task ends `interrupted`,
/// and the repository is as it was before, with nothing of the commit's.
#[test]
fn a_commit_cut_with_its_zones_agent_is_undone_and_the_task_interrupted() {
    if !ready() {
        return;
    }
    let mut d = Daemon::start();
    let repo = d.dir.join("cut-repo-agent");
    let id = kill_mid_commit(&mut d, &repo);
    let agents = zone_agents(&d);
    assert_eq!(agents.len(), 1, "{:?}", processes_in(&d.cgroup_parent));
    // SAFETY: kill with plain integers.
    unsafe { libc::kill(agents[0] as i32, libc::SIGKILL) };
    d.spawn(&[]);
    let out = d.cli(&["task", "get", &id, "--wait", "--json"]);
    let r = rauha_e2e::json(&out);
    assert_eq!(r["status"], "interrupted", "{r}");
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    assert_eq!(
        std::fs::read_to_string(repo.join("README")).expect("README"),
        "before\n"
    );
    assert!(!repo.join("many").exists(), "a half commit stayed");
    assert!(
        !staging(&repo),
        "the commit's own left in the repository: {:?}\n{}",
        std::fs::read_dir(&repo)
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default(),
        d.log()
    );
    reap_orphans();
}
