//! `kill -9` of rauhad at random points of a mixed load, over and over:
//! after each restart every task has exactly one result (its real one, or
//! `interrupted` with a reason), no zone is recorded twice, and nothing of
//! the kernel is left that no record owns. `bench/kill_cycles.sh` runs the
//! same for 1,000 cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rauha_e2e::{bin_dir, json, processes_in, ready, reap_orphans, text, Daemon};

/// Cycles in CI (the budget is 4 minutes); `RAUHA_KILL_CYCLES` sets more
/// (`bench/kill_cycles.sh`).
fn cycles() -> usize {
    std::env::var("RAUHA_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// A client of the load: its command line and what a success prints.
struct Client {
    child: Child,
    /// What the task's stdout is when it ran to the end.
    expect: Option<String>,
}

fn rauha(d: &Daemon, args: &[&str]) -> Command {
    let mut c = Command::new(bin_dir().join("rauha"));
    c.args(args)
        .env("RAUHA_ADDR", d.addr())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A cheap pseudo-random number from the clock (no dependency for it).
fn random_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (nanos / 1000) % n.max(1)
}

/// The load of one cycle: short and long sandbox tasks, a workspace commit,
/// a `run` in a kept zone, and a zone created and deleted.
fn start_load(d: &Daemon, cycle: usize, repo: &std::path::Path) -> Vec<Client> {
    let mut clients = Vec::new();
    for (i, script) in ["echo short", "sleep 1; echo long"].iter().enumerate() {
        let expect = if i == 0 { "short\n" } else { "long\n" };
        clients.push(Client {
            child: rauha(d, &["sandbox", "--json", "--", "sh", "-c", script])
                .spawn()
                .expect("rauha"),
            expect: Some(expect.into()),
        });
    }
    let write = format!("echo {cycle} > /workspace/c{cycle}; echo wrote");
    clients.push(Client {
        child: rauha(
            d,
            &[
                "sandbox",
                "--json",
                "--repo-path",
                repo.to_str().expect("utf8"),
                "--on-success",
                "commit",
                "--",
                "sh",
                "-c",
                &write,
            ],
        )
        .spawn()
        .expect("rauha"),
        expect: Some("wrote\n".into()),
    });
    let create = format!("z{cycle}");
    let delete = format!("z{}", cycle.wrapping_sub(1));
    let mut others = vec![
        vec!["run", "--zone", "kept", "--", "true"],
        vec!["zone", "create", create.as_str()],
    ];
    if cycle > 0 {
        others.push(vec!["zone", "delete", "--force", delete.as_str()]);
    }
    for args in others {
        clients.push(Client {
            child: rauha(d, &args).spawn().expect("rauha"),
            expect: None,
        });
    }
    clients
}

/// Every zone and state the kernel holds under this daemon, against its
/// records: cgroups, state dirs, mounts and processes that no zone owns.
fn orphans(d: &Daemon) -> Vec<String> {
    let out = d.cli(&["zone", "list", "--json"]);
    let zones: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let ids: BTreeSet<String> = zones
        .iter()
        .filter_map(|z| z["id"].as_str().map(str::to_string))
        .collect();
    let mut found = Vec::new();
    for cg in d.zone_cgroups() {
        let name = cg
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !ids.contains(&name) {
            found.push(format!("cgroup {}", cg.display()));
        }
    }
    for dir in std::fs::read_dir(d.root.join("zones"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = dir.file_name().to_string_lossy().into_owned();
        if !ids.contains(&name) {
            found.push(format!("state dir {name}"));
        }
    }
    for m in d.host_mounts() {
        if !ids.iter().any(|id| m.contains(id.as_str())) {
            found.push(format!("mount {m}"));
        }
    }
    for (pid, command) in processes_in(&d.cgroup_parent) {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if !ids.iter().any(|id| cgroup.contains(id.as_str())) {
            found.push(format!("process {pid} {}", command.trim()));
        }
    }
    for entry in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let backing =
            std::fs::read_to_string(entry.path().join("loop/backing_file")).unwrap_or_default();
        if backing.starts_with(d.root.to_str().expect("utf8"))
            && !ids.iter().any(|id| backing.contains(id.as_str()))
        {
            found.push(format!("loop device {}", backing.trim()));
        }
    }
    found.extend(d.bpf_orphans(&ids, &[]));
    found
}

/// Polls the task list until no task runs (at most `limit`).
fn settled_tasks(d: &Daemon, limit: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let out = d.cli(&["task", "list", "--json"]);
        let tasks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if tasks.iter().all(|t| t["status"] != "running") || Instant::now() > deadline {
            return tasks;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_nine_at_random_points_loses_no_task_and_leaves_no_orphan() {
    if !ready() {
        return;
    }
    let started = Instant::now();
    let mut d = Daemon::start();
    let repo = d.dir.join("repo");
    std::fs::create_dir_all(&repo).expect("repo");
    std::fs::write(repo.join("README"), "cycles\n").expect("README");
    let out = d.cli(&["zone", "create", "kept"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Every task id a client learnt, with what its success prints.
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let mut interrupted: BTreeSet<String> = BTreeSet::new();
    let mut resumed_tasks: BTreeSet<String> = BTreeSet::new();
    let mut checked: BTreeSet<String> = BTreeSet::new();
    let cycles = cycles();
    for cycle in 0..cycles {
        let clients = start_load(&d, cycle, &repo);
        std::thread::sleep(Duration::from_millis(random_below(900)));
        d.kill9();
        for c in clients {
            let out = c.child.wait_with_output().expect("client");
            // No client reports success without a result: 0 comes with
            // the result, a lost rauhad is 125 with the task's id.
            if let (Some(want), Ok(v)) = (
                c.expect,
                serde_json::from_slice::<serde_json::Value>(&out.stdout),
            ) {
                if out.status.success() {
                    assert_eq!(v["stdout"], want.as_str(), "cycle {cycle}: {v}");
                }
                if let Some(id) = v["task_id"].as_str() {
                    expected.insert(id.to_string(), want);
                }
            }
        }
        d.spawn(&[]);
        let tasks = settled_tasks(&d, Duration::from_secs(15));
        // One record per task, none running, each its real result or
        // interrupted with a reason.
        let ids: BTreeSet<&str> = tasks.iter().filter_map(|t| t["task_id"].as_str()).collect();
        assert_eq!(
            ids.len(),
            tasks.len(),
            "cycle {cycle}: a task twice: {tasks:?}"
        );
        // Each task's whole record once it has settled, and every one of
        // them again every 50 cycles (a later restart must not change a
        // stored result): checking all each cycle would make a long run
        // quadratic.
        let recheck = cycle % 50 == 49 || cycle + 1 == cycles;
        for t in &tasks {
            let id = t["task_id"].as_str().expect("id");
            assert_ne!(t["status"], "running", "cycle {cycle}: {t}");
            if !recheck && checked.contains(id) {
                continue;
            }
            checked.insert(id.to_string());
            let out = d.cli(&["task", "get", id, "--json"]);
            let r = json(&out);
            match r["status"].as_str() {
                Some("interrupted") => {
                    interrupted.insert(id.to_string());
                    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
                }
                Some("succeeded") => {
                    let resumed = r["events"]
                        .as_array()
                        .is_some_and(|e| e.iter().any(|e| e["kind"] == "task_resumed"));
                    if resumed {
                        resumed_tasks.insert(id.to_string());
                    }
                    // Its real output, whole, even when the killed rauhad
                    // never read what the agent had sent it (sent again).
                    if let Some(want) = expected.get(id) {
                        assert_eq!(
                            r["stdout"],
                            want.as_str(),
                            "cycle {cycle} (taken over: {resumed}): {r}"
                        );
                        // A commit, even one rauhad's kill cut (undone and
                        // made again, or finished), reports what it wrote.
                        if want == "wrote\n" {
                            assert_eq!(r["workspace"], "committed", "cycle {cycle}: {r}");
                            let paths: Vec<&str> = r["files_changed"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|c| c["path"].as_str())
                                .collect();
                            assert!(
                                paths.len() == 1 && paths[0].starts_with('c'),
                                "cycle {cycle}: {r}"
                            );
                        }
                    }
                }
                other => panic!("cycle {cycle}: task {id} ended {other:?}: {r}"),
            }
        }
        // No zone twice, nothing orphaned.
        let out = d.cli(&["zone", "list", "--json"]);
        let zones: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("zones");
        let names: BTreeSet<&str> = zones.iter().filter_map(|z| z["name"].as_str()).collect();
        assert_eq!(
            names.len(),
            zones.len(),
            "cycle {cycle}: a zone twice: {zones:?}"
        );
        // A commit is whole or absent: no staging directory is left, and
        // each cycle's file holds its cycle or is not there.
        for entry in std::fs::read_dir(&repo).expect("repo").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".rauha-commit-"),
                "cycle {cycle}: {name} left"
            );
            if let Some(n) = name.strip_prefix('c') {
                let content = std::fs::read_to_string(entry.path()).expect("read");
                assert_eq!(content.trim(), n, "cycle {cycle}: {name}");
            }
        }
        reap_orphans();
        let left = orphans(&d);
        assert!(left.is_empty(), "cycle {cycle}: orphans: {left:?}");
    }
    eprintln!(
        "{cycles} cycles in {:.0?}: {} tasks known to their clients, {} interrupted, {} taken over after a restart, every one with its whole output",
        started.elapsed(),
        expected.len(),
        interrupted.len(),
        resumed_tasks.len(),
    );
}
