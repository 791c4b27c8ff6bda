//! The copy-on-write workspace: dry run, commit, failed tasks, symlinks.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use rauha_e2e::{busybox_bundle, json, ready, text, tree_snapshot, Daemon};

/// A small repository: a text file to edit, one to delete, a binary file,
/// a script and a nested directory.
fn repo(d: &Daemon) -> PathBuf {
    let repo = d.dir.join("repo");
    std::fs::create_dir_all(repo.join("src/nested")).expect("repo");
    std::fs::write(repo.join("README"), "hello\nworld\n").expect("w");
    std::fs::write(repo.join("old.txt"), "to be deleted\n").expect("w");
    std::fs::write(repo.join("src/nested/data.bin"), [0u8, 1, 2, 255]).expect("w");
    std::fs::write(repo.join("run.sh"), "#!/bin/sh\necho run\n").expect("w");
    std::fs::set_permissions(repo.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    repo
}

const EDIT: &str = "cd /workspace && printf 'hello\\nrauha\\n' > README && rm old.txt && echo new > src/added.txt && chmod 700 run.sh";

fn changes(r: &serde_json::Value) -> Vec<(String, String)> {
    r["files_changed"]
        .as_array()
        .expect("files_changed")
        .iter()
        .map(|c| {
            (
                c["path"].as_str().expect("path").to_string(),
                c["kind"].as_str().expect("kind").to_string(),
            )
        })
        .collect()
}

fn expected() -> Vec<(String, String)> {
    [
        ("README", "modified"),
        ("old.txt", "deleted"),
        ("run.sh", "modified"),
        ("src/added.txt", "added"),
    ]
    .iter()
    .map(|(p, k)| (p.to_string(), k.to_string()))
    .collect()
}

fn sandbox(d: &Daemon, repo: &Path, extra: &[&str], script: &str) -> serde_json::Value {
    let mut args = vec![
        "sandbox",
        "--json",
        "--repo-path",
        repo.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let out = d.cli(&args);
    json(&out)
}

#[test]
fn dry_run_leaves_the_repo_identical_and_lists_exactly_the_changes() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let repo = repo(&d);
    let before = tree_snapshot(&repo);
    let r = sandbox(&d, &repo, &["--dry-run"], EDIT);
    assert_eq!(r["status"], "succeeded", "{}", r["stderr"]);
    assert_eq!(
        tree_snapshot(&repo),
        before,
        "the repo is byte-identical after a dry run"
    );
    assert_eq!(changes(&r), expected());
    assert_eq!(r["workspace"], "discarded");
    let readme = r["files_changed"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["path"] == "README")
        .cloned()
        .expect("README");
    let diff = readme["diff"].as_str().expect("a text file has a diff");
    assert!(diff.contains("-world") && diff.contains("+rauha"), "{diff}");
    let script = r["files_changed"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["path"] == "run.sh")
        .cloned()
        .expect("run.sh");
    assert_eq!(
        (script["old_mode"].as_u64(), script["mode"].as_u64()),
        (Some(0o755), Some(0o700))
    );
}

#[test]
fn commit_applies_exactly_the_changes_and_failures_change_nothing() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let repo = repo(&d);
    let before = tree_snapshot(&repo);
    let failing = sandbox(
        &d,
        &repo,
        &["--on-success", "commit"],
        &format!("{EDIT}; exit 1"),
    );
    assert_eq!(failing["status"], "failed");
    assert_eq!(tree_snapshot(&repo), before, "a failed task never commits");
    let timed_out = sandbox(
        &d,
        &repo,
        &["--on-success", "commit", "--timeout", "1s"],
        &format!("{EDIT}; sleep 30"),
    );
    assert_eq!(timed_out["status"], "timed_out");
    assert_eq!(
        tree_snapshot(&repo),
        before,
        "a timed-out task never commits"
    );

    let r = sandbox(&d, &repo, &["--on-success", "commit"], EDIT);
    assert_eq!(r["status"], "succeeded", "{}", r["stderr"]);
    assert_eq!(r["workspace"], "committed");
    assert_eq!(changes(&r), expected());
    assert_eq!(
        std::fs::read_to_string(repo.join("README")).expect("README"),
        "hello\nrauha\n"
    );
    assert!(!repo.join("old.txt").exists());
    assert_eq!(
        std::fs::read_to_string(repo.join("src/added.txt")).expect("added"),
        "new\n"
    );
    assert_eq!(
        std::fs::metadata(repo.join("run.sh"))
            .expect("run.sh")
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
    assert_eq!(
        std::fs::read(repo.join("src/nested/data.bin")).expect("untouched"),
        [0u8, 1, 2, 255]
    );
    assert!(
        std::fs::read_dir(&repo)
            .expect("repo")
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(".rauha")),
        "no staging left"
    );
}

/// A commit that fails (a setuid bit is refused) fails the task: status
/// `failed`, the reason in `error`, a non-zero exit, and nothing applied.
#[test]
fn a_failed_commit_fails_the_task() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let repo = repo(&d);
    let before = tree_snapshot(&repo);
    let script = "cd /workspace && echo x > setuid && chmod 4755 setuid && echo y > other";
    let r = sandbox(&d, &repo, &["--on-success", "commit"], script);
    assert_eq!(r["workspace"], "commit_failed", "{r}");
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["exit_code"], 0, "the task's own code stays: {r}");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("commit failed")),
        "{r}"
    );
    assert_eq!(tree_snapshot(&repo), before, "nothing was applied");
    let out = d.cli(&[
        "sandbox",
        "--repo-path",
        repo.to_str().expect("utf8"),
        "--on-success",
        "commit",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed commit exits non-zero: {}",
        text(&out.stderr)
    );
}

/// The diff is the commit: a background process of the task keeps
/// rewriting a file at the same size while the task ends; what the result
/// reports of that file is byte for byte what lands in the repository, in
/// 50 runs, with and without `--keep-zone` (whose processes live on).
#[test]
fn the_reported_diff_is_what_was_committed() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let repo = repo(&d);
    let script = "cd /workspace && (i=0; while :; do i=$((i+1)); printf '%08d\\n' $i > flip.txt; done) & sleep 0.2";
    for run in 0..50 {
        let _ = std::fs::remove_file(repo.join("flip.txt"));
        let keep = run % 2 == 1;
        let mut extra = vec!["--on-success", "commit"];
        if keep {
            extra.push("--keep-zone");
        }
        let r = sandbox(&d, &repo, &extra, script);
        if keep {
            let zone = r["zone_id"].as_str().expect("zone_id");
            let out = d.cli(&["zone", "delete", "--force", zone]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        assert_eq!(r["status"], "succeeded", "run {run}: {r}");
        assert_eq!(r["workspace"], "committed", "run {run}: {r}");
        let flip = r["files_changed"]
            .as_array()
            .expect("files_changed")
            .iter()
            .find(|c| c["path"] == "flip.txt")
            .unwrap_or_else(|| panic!("run {run}: flip.txt is listed: {r}"))
            .clone();
        let reported: String = flip["diff"]
            .as_str()
            .unwrap_or("")
            .lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .map(|l| format!("{}\n", &l[1..]))
            .collect();
        let committed = std::fs::read_to_string(repo.join("flip.txt")).expect("committed");
        assert_eq!(
            reported, committed,
            "run {run} (keep_zone {keep}): the diff reports what was committed: {flip}"
        );
        assert_eq!(flip["size"], committed.len(), "run {run}: {flip}");
    }
}

/// Every file type is listed or refused: a fifo the task made is listed as
/// `special`, held back, and the rest of the commit lands.
#[test]
fn a_fifo_is_listed_and_held_back() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let repo = repo(&d);
    let r = sandbox(
        &d,
        &repo,
        &["--on-success", "commit"],
        "cd /workspace && mkfifo pipe && echo x > beside.txt",
    );
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["workspace"], "committed", "{r}");
    let fifo = r["files_changed"]
        .as_array()
        .expect("files_changed")
        .iter()
        .find(|c| c["path"] == "pipe")
        .unwrap_or_else(|| panic!("the fifo is listed: {r}"))
        .clone();
    assert_eq!(fifo["file_type"], "special", "{fifo}");
    assert!(
        fifo["held_back"]
            .as_str()
            .is_some_and(|h| h.contains("never committed")),
        "{fifo}"
    );
    assert!(!repo.join("pipe").exists(), "the fifo was not committed");
    assert_eq!(
        std::fs::read_to_string(repo.join("beside.txt")).expect("committed"),
        "x\n"
    );
}

/// A commit never applies what the host would run: a git hook or a
/// `core.fsmonitor` planted under `.git/` is listed, marked held back, and
/// left out; the policy's `task.hold_back = []` is the explicit way in.
#[test]
fn a_commit_holds_back_git_metadata() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let repo = repo(&d);
    std::fs::create_dir_all(repo.join(".git/hooks")).expect(".git");
    std::fs::write(repo.join(".git/config"), "[core]\n\tbare = false\n").expect("config");
    let git_before = tree_snapshot(&repo.join(".git"));
    let plant =
        "cd /workspace && printf '#!/bin/sh\\necho ran > /tmp/hook\\n' > .git/hooks/post-checkout \
         && chmod 755 .git/hooks/post-checkout \
         && printf '\\tfsmonitor = echo ran\\n' >> .git/config && echo new > src/added.txt";
    let r = sandbox(&d, &repo, &["--on-success", "commit"], plant);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["workspace"], "committed", "{r}");
    assert_eq!(
        std::fs::read_to_string(repo.join("src/added.txt")).expect("the rest is committed"),
        "new\n"
    );
    assert_eq!(
        tree_snapshot(&repo.join(".git")),
        git_before,
        "nothing under .git changed on the host: {r}"
    );
    assert!(!repo.join(".git/hooks/post-checkout").exists());
    let held: Vec<&str> = r["files_changed"]
        .as_array()
        .expect("files_changed")
        .iter()
        .filter(|c| c["held_back"].is_string())
        .filter_map(|c| c["path"].as_str())
        .collect();
    assert_eq!(
        held,
        [".git/config", ".git/hooks/post-checkout"],
        "each .git change is listed as held back: {r}"
    );
    // A policy that holds nothing back commits them: the explicit choice.
    let policy = d.dir.join("commit-git.toml");
    std::fs::write(&policy, "[task]\nhold_back = []\n").expect("policy");
    let r = sandbox(
        &d,
        &repo,
        &[
            "--on-success",
            "commit",
            "--policy",
            policy.to_str().expect("utf8"),
        ],
        "cd /workspace && echo '# reviewed' >> .git/config",
    );
    assert_eq!(r["workspace"], "committed", "{r}");
    assert!(std::fs::read_to_string(repo.join(".git/config"))
        .expect("config")
        .ends_with("# reviewed\n"));
    // So does the flag, for one task, under the default policy.
    let r = sandbox(
        &d,
        &repo,
        &["--on-success", "commit", "--commit-git-metadata"],
        "cd /workspace && echo '# flagged' >> .git/config",
    );
    assert_eq!(r["workspace"], "committed", "{r}");
    assert!(std::fs::read_to_string(repo.join(".git/config"))
        .expect("config")
        .ends_with("# flagged\n"));
}

#[test]
fn a_planted_symlink_cannot_make_the_commit_write_outside_the_repo() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let repo = repo(&d);
    let outside = d.dir.join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    symlink(&outside, repo.join("escape")).expect("a symlink already in the repo");
    let before_outside = tree_snapshot(&outside);
    // Through the zone: plant a link to the outside and write through it,
    // and replace the repo's own link by a directory with a file.
    let script = format!(
        "cd /workspace && ln -s {out} planted && echo evil > planted/evil.txt; rm escape && mkdir escape && echo evil > escape/evil.txt; true",
        out = outside.display()
    );
    let r = sandbox(&d, &repo, &["--on-success", "commit"], &script);
    assert_eq!(
        tree_snapshot(&outside),
        before_outside,
        "nothing was written outside the repo: {}",
        r
    );
    assert!(!outside.join("evil.txt").exists());
    // Whatever was committed stays inside the repo.
    if repo.join("escape").is_dir() && !repo.join("escape").is_symlink() {
        assert_eq!(
            std::fs::read_to_string(repo.join("escape/evil.txt")).expect("in repo"),
            "evil\n"
        );
    }
}

#[test]
fn the_workspace_works_in_a_bundle_zone_too() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let repo = repo(&d);
    let bundle = busybox_bundle(&d.dir, true).expect("busybox bundle");
    let r = sandbox(
        &d,
        &repo,
        &[
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--on-success",
            "commit",
        ],
        "PATH=/bin; cd /workspace && echo from-bundle > bundle.txt && cat README",
    );
    assert_eq!(r["status"], "succeeded", "{}", r["stderr"]);
    assert_eq!(r["stdout"], "hello\nworld\n");
    assert_eq!(
        std::fs::read_to_string(repo.join("bundle.txt")).expect("committed"),
        "from-bundle\n"
    );
}

#[test]
fn dry_run_prints_the_changes_for_people() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let repo = repo(&d);
    let out = d.cli(&[
        "sandbox",
        "--repo-path",
        repo.to_str().expect("utf8"),
        "--dry-run",
        "--",
        "sh",
        "-c",
        EDIT,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("4 change(s) in the workspace, discarded"),
        "{err}"
    );
    assert!(
        err.contains("  M README")
            && err.contains("  D old.txt")
            && err.contains("  A src/added.txt"),
        "{err}"
    );
    assert!(err.contains("+rauha"), "the diff is shown: {err}");
}

/// A zone's `/proc/self/mountinfo` names no host path that its policy did
/// not give it: not the repository's, not the state dir's, not the zone's
/// id, on the host view and in a bundle zone (whose root shows the bundle's
/// own path, which the user gave it, as under runc).
#[test]
fn the_zones_mountinfo_names_no_host_path() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let repo = repo(&d);
    let bundle = busybox_bundle(&d.dir, true).expect("busybox bundle");
    let bundle_arg = bundle.to_str().expect("utf8").to_string();
    for extra in [vec![], vec!["--bundle", bundle_arg.as_str()]] {
        let r = sandbox(
            &d,
            &repo,
            &extra,
            "PATH=/bin:/usr/bin; cat /proc/self/mountinfo",
        );
        assert_eq!(r["status"], "succeeded", "{r}");
        let mountinfo = r["stdout"].as_str().expect("stdout");
        assert!(mountinfo.contains(" /workspace "), "{mountinfo}");
        let zone = r["zone_id"].as_str().expect("zone_id");
        let root = d.root.to_str().expect("utf8");
        let repo_path = repo.to_str().expect("utf8");
        if extra.is_empty() {
            assert!(
                !mountinfo.contains(d.dir.to_str().expect("utf8")),
                "{mountinfo}"
            );
        }
        for secret in [root, repo_path, zone] {
            assert!(
                !mountinfo.contains(secret),
                "{secret} shows in the zone's mountinfo ({extra:?}):\n{mountinfo}"
            );
        }
    }
}

/// Bytes free for an unprivileged writer on the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statvfs writes into the zeroed struct we own.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0, "statvfs");
        st.f_bavail * st.f_frsize
    }
}

/// Loop devices whose backing file is under `dir`.
fn loops_under(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .filter(|f| f.starts_with(dir.to_str().expect("utf8")))
        .collect()
}

/// A zone's workspace holds at most its policy's `disk_limit` on the host:
/// a 3 GiB write under a 512Mi limit stops with ENOSPC, the result says the
/// limit was reached, the host's free space drops by at most the limit, and
/// nothing of it is left once the zone is gone.
#[test]
fn a_full_workspace_stops_at_its_disk_limit() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let repo = repo(&d);
    let policy = d.dir.join("disk.toml");
    std::fs::write(&policy, "[resources]\ndisk_limit = \"512Mi\"\n").expect("policy");
    let before = free_bytes(&d.root);
    let r = sandbox(
        &d,
        &repo,
        &["--policy", policy.to_str().expect("utf8"), "--keep-zone"],
        "dd if=/dev/zero of=/workspace/fill bs=1M count=3072 2>&1; echo rc=$?",
    );
    let during = free_bytes(&d.root);
    let zone = r["zone_id"].as_str().expect("zone_id").to_string();
    let stdout = r["stdout"].as_str().expect("stdout");
    assert!(
        stdout.contains("No space left on device") && stdout.contains("rc=1"),
        "{r}"
    );
    let events: Vec<&str> = r["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(events.contains(&"disk_limit_reached"), "{r}");
    let used = before.saturating_sub(during);
    assert!(
        used <= (512 << 20) + (32 << 20),
        "the host lost {} MiB for a 512 MiB limit",
        used >> 20
    );
    assert!(d
        .cli(&["zone", "delete", "--force", &zone])
        .status
        .success());
    assert!(
        loops_under(&d.root).is_empty(),
        "{:?}",
        loops_under(&d.root)
    );
}

/// rauhad's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// 150,000 files with long names: rauhad's memory stays within 64 MiB of
/// before, the result lists the policy's `task.max_changes` (10,000) and
/// counts the rest, its stored record stays small, and a commit is refused
/// whole rather than applied in part.
#[test]
fn a_huge_change_set_is_capped_and_counted() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let repo = repo(&d);
    // Warm up: the first task loads what every task needs.
    assert!(d.cli(&["sandbox", "--", "true"]).status.success());
    let before = rss(d.pid());
    let tree = tree_snapshot(&repo);
    let long = "x".repeat(180);
    let script =
        format!("cd /workspace && seq -f '%06.0f-{long}' 150000 | xargs touch && echo made");
    let r = sandbox(&d, &repo, &["--on-success", "commit"], &script);
    let after = rss(d.pid());
    assert_eq!(r["stdout"], "made\n", "{}", r["stderr"]);
    assert_eq!(
        r["files_changed"].as_array().expect("files_changed").len(),
        10_000
    );
    assert_eq!(r["files_changed_unlisted"], 140_000, "{}", r["error"]);
    assert_eq!(r["workspace"], "commit_failed");
    assert_eq!(r["status"], "failed");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("task.max_changes")),
        "{}",
        r["error"]
    );
    assert_eq!(tree_snapshot(&repo), tree, "nothing was committed");
    assert!(
        after < before + (64 << 20),
        "rauhad grew from {} to {} MiB",
        before >> 20,
        after >> 20
    );
    let task = r["task_id"].as_str().expect("task_id");
    let out = d.cli(&["task", "get", task, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stdout.len() < 8 << 20,
        "the stored record is {} bytes",
        out.stdout.len()
    );
}
