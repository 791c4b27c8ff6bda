//! containerd-shim-rauha-v2 under a real containerd (Debian's 1.6), driven
//! with `ctr`: each container is a zone of the real rauhad; output, exit
//! codes, exec, kill, pause/resume, metrics and ps go through the shim.

use std::process::Output;

use rauha_e2e::containerd::{
    containerd_ready, mounts_under, processes_mentioning, Containerd, ContainerdOpts, Registry,
};
use rauha_e2e::{assert_only_fds, bin_dir, prerequisite, ready, text, Daemon, Leaks, LIST_OWN_FDS};

const RUNTIME: &str = "io.containerd.rauha.v2";

fn shim_ready() -> bool {
    ready()
        && containerd_ready()
        && prerequisite(
            bin_dir().join("containerd-shim-rauha-v2").is_file(),
            "containerd-shim-rauha-v2 (run `cargo build --workspace --bins` first)",
        )
}

fn zones(d: &Daemon) -> Vec<String> {
    let out = d.cli(&["zone", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("zone list JSON");
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|z| z.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Whether task `id` is STOPPED within `tries` checks 100 ms apart.
fn wait_stopped(ctd: &Containerd, id: &str, tries: usize) -> bool {
    for _ in 0..tries {
        if task_status(ctd, id) == "STOPPED" {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

fn task_status(ctd: &Containerd, id: &str) -> String {
    let list = ctd.ctr_ok(&["task", "ls"]);
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("")
        .to_string()
}

#[test]
fn ctr_runs_containers_as_zones() {
    if !shim_ready() {
        return;
    }
    // rauhad inherits descriptors it was never meant to have: no container
    // may see them (docs/security.md).
    let leaks = Leaks::new(&std::env::temp_dir().join(format!("rauha-ctr-{}", std::process::id())));
    let d = Daemon::start_inheriting(&leaks.inherit());
    let reg = Registry::start();
    let image = reg.push_busybox_image("e2e/busybox:1", &["sh"]);
    let ctd = Containerd::start(ContainerdOpts::for_rauha(&d, &reg));
    ctd.ctr_ok(&["image", "pull", "--plain-http", &image]);
    // Every event the shim publishes, as containerd forwards them.
    let events = std::process::Command::new("ctr")
        .args(["--address", &ctd.address().display().to_string(), "events"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ctr events");

    // Output reaches ctr, and the zone is gone with the container.
    let out = ctd.ctr_ok(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        &image,
        "c1",
        "echo",
        "hi",
    ]);
    assert_eq!(out, "hi\n", "shim log:\n{}", ctd.log());
    assert!(zones(&d).is_empty(), "zones left: {:?}", zones(&d));

    // stdout and stderr stay apart; a non-zero exit code reaches ctr.
    let out = ctd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        &image,
        "c2",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));

    // The container's process holds its stdio and nothing of containerd's,
    // the shim's, rauhad's or the agent's (docs/security.md).
    let out = ctd.ctr_ok(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        &image,
        "c5",
        "sh",
        "-c",
        LIST_OWN_FDS,
    ]);
    assert_only_fds(&out, &[0, 1, 2], "ctr run");

    // stdin goes in, and its end reaches the process.
    let mut child = ctd.ctr_attached(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        &image,
        "c3",
        "sh",
        "-c",
        "cat; echo done",
    ]);
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"from stdin\n").expect("write");
    }
    let out = child.wait_with_output().expect("ctr -i");
    assert_eq!(ok(out, "ctr run with stdin"), "from stdin\ndone\n");

    // A terminal: ctr -t gives the process a pty (and resizes it).
    if prerequisite(
        std::path::Path::new("/usr/bin/script").is_file(),
        "script (util-linux), to give ctr a terminal",
    ) {
        let ctr = format!(
            "ctr --address {} --namespace {} run --rm -t --runtime {RUNTIME} {image} c6 sh -c 'tty; sleep 0.5; stty size; stty -a | head -2'",
            ctd.address().display(),
            ctd.namespace()
        );
        let out = std::process::Command::new("script")
            .args([
                "-qec",
                &format!("stty rows 33 cols 101; {ctr}"),
                "/dev/null",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script");
        let s = ok(out, "ctr run -t");
        assert!(s.contains("/dev/pts/"), "{s}");
        assert!(s.contains("33 101"), "{s}");
    }

    // A long-running task: exec, ps, metrics, pause, resume, kill.
    ctd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        &image,
        "c4",
        "sleep",
        "300",
    ]);
    assert_eq!(task_status(&ctd, "c4"), "RUNNING");
    let zone_names = zones(&d);
    assert_eq!(zone_names, vec![format!("{}-c4", ctd.namespace())]);
    let out = ctd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "c4",
        "sh",
        "-c",
        "echo inside; hostname",
    ]);
    assert!(out.starts_with("inside\n"), "{out}");
    let out = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "c4",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = ctd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e3",
        "c4",
        "sh",
        "-c",
        LIST_OWN_FDS,
    ]);
    assert_only_fds(&out, &[0, 1, 2], "ctr task exec");
    leaks.untouched();

    let ps = ctd.ctr_ok(&["task", "ps", "c4"]);
    let pids: Vec<u32> = ps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(pids.len(), 1, "{ps}");
    // The pid is the host's: /proc shows the zone's sleep.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids[0])).expect("host pid");
    assert!(text(&cmdline).starts_with("sleep"), "{}", text(&cmdline));

    let metrics = ctd.ctr_ok(&["task", "metrics", "c4"]);
    assert!(metrics.contains("memory.usage_in_bytes"), "{metrics}");
    assert!(metrics.contains("pids.current"), "{metrics}");

    ctd.ctr_ok(&["task", "pause", "c4"]);
    assert_eq!(task_status(&ctd, "c4"), "PAUSED");
    let state = std::fs::read_to_string(format!("/proc/{}/status", pids[0])).expect("status");
    assert!(
        state.contains("State:\tS") || state.contains("State:\tD"),
        "{state}"
    );
    ctd.ctr_ok(&["task", "resume", "c4"]);
    assert_eq!(task_status(&ctd, "c4"), "RUNNING");

    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "c4"]);
    let stopped = wait_stopped(&ctd, "c4", 50);
    assert!(
        stopped,
        "c4 did not stop: {}\nprocess: {:?}\nrauhad log:\n{}\ncontainerd log:\n{}",
        ctd.ctr_ok(&["task", "ls"]),
        std::fs::read_to_string(format!("/proc/{}/status", pids[0])).map(|s| s
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")),
        d.log(),
        ctd.log()
    );
    ctd.ctr_ok(&["task", "rm", "c4"]);
    ctd.ctr_ok(&["container", "rm", "c4"]);
    assert!(zones(&d).is_empty(), "zones left: {:?}", zones(&d));

    // The shim published each task event containerd knows.
    // SAFETY: kill with plain integers, on our child.
    unsafe { libc::kill(events.id() as i32, libc::SIGTERM) };
    let seen = text(&events.wait_with_output().expect("ctr events").stdout);
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        assert!(seen.contains(topic), "no {topic} event in:\n{seen}");
    }
    // The bodies decode by their type URLs (ctr drops an event it cannot
    // decode): the exit of the container that exited 7 carries its status.
    assert!(
        seen.lines()
            .any(|l| l.contains("/tasks/exit") && l.contains("\"exit_status\":7")),
        "no decoded exit event with status 7 in:\n{seen}"
    );

    // An invalid policy annotation fails the create with the parser's message.
    let out = ctd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--annotation",
        "rauha.dev/policy=[network]\nmode = \"warp\"",
        &image,
        "c5",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("mode"), "{}", text(&out.stderr));
    let _ = ctd.ctr(&["container", "rm", "c5"]);
    assert!(zones(&d).is_empty(), "zones left: {:?}", zones(&d));

    // Nothing is left: no zones, no shims, no mounts of the containers.
    let shims = processes_mentioning("containerd-shim-rauha-v2");
    let mut waited = 0;
    let mut shims = shims;
    while !shims.is_empty() && waited < 50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
        shims = processes_mentioning("containerd-shim-rauha-v2");
    }
    assert!(shims.is_empty(), "shims left: {shims:?}");
    assert!(
        mounts_under(ctd.dir()).is_empty(),
        "{:?}",
        mounts_under(ctd.dir())
    );
}

#[test]
fn running_tasks_survive_containerd_and_rauhad_restarts() {
    if !shim_ready() {
        return;
    }
    let mut d = Daemon::start();
    let reg = Registry::start();
    let image = reg.push_busybox_image("e2e/busybox:1", &["sh"]);
    let mut ctd = Containerd::start(ContainerdOpts::for_rauha(&d, &reg));
    ctd.ctr_ok(&["image", "pull", "--plain-http", &image]);
    // Its output goes to a log file (containerd hands the shim file://).
    let log = ctd.dir().join("r1.log");
    let log_uri = format!("file://{}", log.display());
    ctd.ctr_ok(&[
        "run",
        "-d",
        "--log-uri",
        &log_uri,
        "--runtime",
        RUNTIME,
        &image,
        "r1",
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done",
    ]);

    // containerd restarts: it finds the shim again, the task still runs.
    ctd.restart();
    assert_eq!(
        task_status(&ctd, "r1"),
        "RUNNING",
        "containerd log:\n{}",
        ctd.log()
    );
    let out = ctd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "r1",
        "echo",
        "after containerd",
    ]);
    assert_eq!(out, "after containerd\n");

    // An attached task that echoes each line of its stdin.
    let mut r2 = ctd.ctr_attached(&[
        "run",
        "--runtime",
        RUNTIME,
        &image,
        "r2",
        "sh",
        "-c",
        "while read l; do echo got $l; done; echo stdin ended",
    ]);
    let mut r2_in = r2.stdin.take().expect("stdin");
    let (line_tx, lines) = std::sync::mpsc::channel::<String>();
    let r2_out = r2.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(r2_out)
            .lines()
            .map_while(Result::ok)
        {
            let _ = line_tx.send(line);
        }
    });
    let next_line = || lines.recv_timeout(std::time::Duration::from_secs(10));
    {
        use std::io::Write;
        writeln!(r2_in, "one").expect("write stdin");
    }
    assert_eq!(next_line().as_deref(), Ok("got one"));

    // rauhad down: a call fails with one clear line; the task is not lost.
    d.kill9();
    let out = ctd.ctr(&["task", "exec", "--exec-id", "e2", "r1", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("rauhad is not reachable"),
        "{}",
        text(&out.stderr)
    );
    let _ = ctd.ctr(&["task", "delete", "--exec-id", "e2", "r1"]);
    d.spawn(&[]);
    assert_eq!(task_status(&ctd, "r1"), "RUNNING");
    // The restarted rauhad reads r2's stdin on from its FIFO (nothing was
    // written while it was down: a write with no reader is the writer's
    // EPIPE). Written once it holds the FIFO open again.
    let holds_stdin = || {
        std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
            .map(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .map(|t| t.to_string_lossy().ends_with("r2-stdin"))
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false)
    };
    let mut waited = 0;
    while !holds_stdin() && waited < 300 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    }
    if !holds_stdin() {
        let ctr_state = r2.try_wait();
        let mut ctr_err = String::new();
        if let Some(mut e) = r2.stderr.take() {
            if matches!(ctr_state, Ok(Some(_))) {
                use std::io::Read;
                let _ = e.read_to_string(&mut ctr_err);
            }
        }
        panic!(
            "the restarted rauhad did not reopen r2's stdin; ctr: {ctr_state:?} {ctr_err}\nrauhad log:\n{}\ncontainerd log:\n{}",
            d.log(),
            ctd.log()
        );
    }
    {
        use std::io::Write;
        writeln!(r2_in, "two").expect("write stdin");
    }
    let two = next_line();
    assert_eq!(two.as_deref(), Ok("got two"), "rauhad log:\n{}", d.log());
    // Its end reaches the task, which ends; ctr returns its status.
    drop(r2_in);
    assert_eq!(next_line().as_deref(), Ok("stdin ended"));
    let status = r2.wait().expect("ctr run");
    assert!(status.success(), "ctr run: {status}");
    let _ = ctd.ctr(&["task", "rm", "r2"]);
    ctd.ctr_ok(&["container", "rm", "r2"]);
    // The restarted rauhad writes the task's output where it went before.
    let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let after = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert!(
        before > 0 && after > before,
        "log {before} -> {after} bytes"
    );
    let ticks = std::fs::read_to_string(&log).expect("log");
    assert!(ticks.starts_with("tick 1\n"), "{ticks}");
    let out = ctd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e3",
        "r1",
        "echo",
        "after rauhad",
    ]);
    assert_eq!(out, "after rauhad\n");

    // Its end still reaches containerd, and nothing is left.
    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "r1"]);
    let stopped = wait_stopped(&ctd, "r1", 100);
    assert!(stopped, "{}\n{}", ctd.ctr_ok(&["task", "ls"]), d.log());
    ctd.ctr_ok(&["task", "rm", "r1"]);
    ctd.ctr_ok(&["container", "rm", "r1"]);
    assert!(zones(&d).is_empty(), "zones left: {:?}", zones(&d));
}

/// The NUL-separated strings of a /proc file (cmdline, environ).
fn proc_strings(pid: i32, file: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[test]
fn a_killed_shim_is_started_again_and_its_tasks_run_on() {
    if !shim_ready() {
        return;
    }
    let mut d = Daemon::start();
    let reg = Registry::start();
    let image = reg.push_busybox_image("e2e/busybox:1", &["sh"]);
    let mut ctd = Containerd::start(ContainerdOpts::for_rauha(&d, &reg));
    ctd.ctr_ok(&["image", "pull", "--plain-http", &image]);
    for id in ["s1", "s2", "s3", "s4"] {
        ctd.ctr_ok(&[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            &image,
            id,
            "sleep",
            "600",
        ]);
    }
    let zone_of = |id: &str| {
        zones(&d)
            .into_iter()
            .find(|z| z.contains(id))
            .unwrap_or_else(|| panic!("{id}'s zone in {:?}", zones(&d)))
    };
    let shims_of = |ctd: &Containerd, id: &str| -> Vec<i32> {
        ctd.shim_pids()
            .into_iter()
            .filter(|(pid, _)| {
                let args = proc_strings(*pid, "cmdline");
                args.windows(2).any(|w| w[0] == "-id" && w[1] == id)
            })
            .map(|(pid, _)| pid)
            .collect()
    };
    let shim_of = |ctd: &Containerd, id: &str| -> i32 {
        let found = shims_of(ctd, id);
        assert_eq!(found.len(), 1, "the shim of {id}: {:?}", ctd.shim_pids());
        found[0]
    };
    // The shim rauhad's keeper starts in place of `old`.
    let next_shim = |ctd: &Containerd, id: &str, old: i32| -> Option<i32> {
        for _ in 0..100 {
            if let [pid] = shims_of(ctd, id)[..] {
                if pid != old {
                    return Some(pid);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    };
    let kill9 = |pid: i32| {
        // SAFETY: kill with plain integers.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        for _ in 0..100 {
            // Gone, or a zombie its (sub)reaper has not collected yet.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            if matches!(state, None | Some(Some('Z'))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("shim {pid} did not die");
    };
    let ended = |ctd: &Containerd, id: &str, zone: &str| {
        for _ in 0..100 {
            if !zones(&d).iter().any(|z| z == zone) && task_status(ctd, id).is_empty() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    };

    // A shim killed while containerd runs, with a request in flight (the
    // Wait of an exec that ends 3 s later): rauhad's keeper starts the
    // shim again on containerd's open connection; the new shim answers
    // the Wait, and the task runs on.
    let s1_shim = shim_of(&ctd, "s1");
    let waiting = ctd.ctr_attached(&[
        "task",
        "exec",
        "--exec-id",
        "w1",
        "s1",
        "sh",
        "-c",
        "sleep 3; exit 5",
    ]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    kill9(s1_shim);
    let s1_new = next_shim(&ctd, "s1", s1_shim).unwrap_or_else(|| {
        panic!(
            "no shim of s1 after {s1_shim} was killed: {:?}\nrauhad log:\n{}\ncontainerd log:\n{}",
            ctd.shim_pids(),
            d.log(),
            ctd.log()
        )
    });
    let out = waiting.wait_with_output().expect("ctr task exec");
    assert_eq!(
        out.status.code(),
        Some(5),
        "the exec's Wait across the shim's restart: {}\ncontainerd log:\n{}",
        text(&out.stderr),
        ctd.log()
    );
    assert_eq!(task_status(&ctd, "s1"), "RUNNING");
    assert_eq!(
        ctd.ctr_ok(&["task", "exec", "--exec-id", "e1", "s1", "echo", "after"]),
        "after\n"
    );
    let ps = ctd.ctr_ok(&["task", "ps", "s1"]);
    assert_eq!(ps.lines().count(), 2, "{ps}");

    // A shim killed while containerd is down: started again, it waits for
    // containerd, which finds it at the same address.
    let s2_shim = shim_of(&ctd, "s2");
    ctd.stop();
    kill9(s2_shim);
    let s2_new = next_shim(&ctd, "s2", s2_shim);
    assert!(s2_new.is_some(), "no shim of s2: {}", d.log());
    ctd.spawn();
    assert_eq!(task_status(&ctd, "s2"), "RUNNING", "{}", ctd.log());
    assert_eq!(
        ctd.ctr_ok(&["task", "exec", "--exec-id", "e1", "s2", "echo", "found"]),
        "found\n"
    );

    // A shim that keeps dying is started again five times in a minute,
    // then left dead: containerd runs its `delete`, the task ends and its
    // zone goes, as for runc's shim. Its neighbours are untouched.
    let s3_zone = zone_of("s3");
    let mut pid = shim_of(&ctd, "s3");
    for round in 1..=5 {
        kill9(pid);
        pid = next_shim(&ctd, "s3", pid)
            .unwrap_or_else(|| panic!("no shim of s3 after kill {round}: {}", d.log()));
    }
    kill9(pid);
    assert!(
        ended(&ctd, "s3", &s3_zone),
        "after its shim died six times, s3 is {:?} and zones are {:?}\n{}",
        task_status(&ctd, "s3"),
        zones(&d),
        d.log()
    );
    assert_eq!(task_status(&ctd, "s1"), "RUNNING");

    // A shim that dies while rauhad is down is not started again (the
    // keeper went with rauhad): containerd ends its task, and its `delete`
    // leaves the zone for rauhad, which removes it once it is back.
    let s4_zone = zone_of("s4");
    let s4_shim = shim_of(&ctd, "s4");
    d.kill9();
    kill9(s4_shim);
    let mut s4_status = task_status(&ctd, "s4");
    for _ in 0..100 {
        if s4_status.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        s4_status = task_status(&ctd, "s4");
    }
    assert!(s4_status.is_empty(), "s4 is {s4_status:?}\n{}", ctd.log());
    d.spawn(&[]);
    let mut left = zones(&d);
    for _ in 0..150 {
        if !left.contains(&s4_zone) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = zones(&d);
    }
    assert!(
        !left.contains(&s4_zone),
        "s4's zone after rauhad is back: {left:?}\n{}",
        d.log()
    );
    // The others went on, and their shims deposit with the new rauhad.
    assert_eq!(task_status(&ctd, "s1"), "RUNNING");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let s1_now = shim_of(&ctd, "s1");
    kill9(s1_now);
    assert!(
        next_shim(&ctd, "s1", s1_now).is_some(),
        "no shim of s1 after a kill with the restarted rauhad: {}",
        d.log()
    );
    assert_eq!(
        ctd.ctr_ok(&["task", "exec", "--exec-id", "e2", "s1", "echo", "again"]),
        "again\n"
    );

    // Their ends still reach containerd; deleted on purpose, the shims
    // exit and are not started again; nothing is left.
    for id in ["s1", "s2"] {
        ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
        assert!(wait_stopped(&ctd, id, 100), "{id}: {}", d.log());
        ctd.ctr_ok(&["task", "rm", id]);
    }
    for id in ["s1", "s2", "s3", "s4"] {
        ctd.ctr_ok(&["container", "rm", id]);
    }
    assert!(zones(&d).is_empty(), "zones left: {:?}", zones(&d));
    let mut left = ctd.shim_pids();
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = ctd.shim_pids();
    }
    assert!(left.is_empty(), "shims left: {left:?} (s1 was {s1_new})");
    assert!(
        mounts_under(ctd.dir()).is_empty(),
        "{:?}",
        mounts_under(ctd.dir())
    );
}
