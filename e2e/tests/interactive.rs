//! Interactive work as a person does it, under tmux: `rauha run -it` gives
//! a prompt in the image, the zone's terminal has the window's size and
//! follows a resize, Ctrl-C reaches the process, `exit 3` is the exit code
//! and the terminal is left as it was; `exec -i` streams stdin; `attach`
//! reaches a detached terminal; `logs --follow` prints what comes later
//! and ends with the process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rauha_e2e::containerd::{containerd_ready, find_bin, Registry};
use rauha_e2e::{bin_dir, prerequisite, ready, text, Daemon};

struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(dir: &Path) -> Tmux {
        Tmux {
            socket: dir.join("tmux.sock"),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    fn screen(&self, session: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", session])
    }

    fn keys(&self, session: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", session];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Waits until the screen shows `needle` (`count` times).
    fn wait_for(&self, session: &str, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen(session);
            if screen.matches(needle).count() >= count {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never showed:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

#[test]
fn a_terminal_session_behaves_as_under_docker() {
    if !(ready()
        && containerd_ready()
        && prerequisite(find_bin("tmux").is_some(), "tmux (apt-get install tmux)"))
    {
        return;
    }
    let d = Daemon::start();
    let reg = Registry::start();
    let image = reg.push_busybox_image("shell:1", &["sh"]);
    let out = d.cli(&["zone", "create", "tz", "--image", &image]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rauha = bin_dir().join("rauha").display().to_string();
    let tmux = Tmux::new(&d.dir);
    let (before, after) = (d.dir.join("stty.before"), d.dir.join("stty.after"));
    let command = format!(
        "stty -g > {}; RAUHA_ADDR={} {rauha} run -it --zone tz {image} /bin/sh; echo EXIT=$?; stty -g > {}; sleep 600",
        before.display(),
        d.addr(),
        after.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "run",
        "-x",
        "120",
        "-y",
        "40",
        &command,
    ]);
    tmux.wait_for("run", "/ #", 1);
    tmux.keys("run", &["stty size", "Enter"]);
    tmux.wait_for("run", "40 120", 1);
    tmux.run(&["resize-window", "-t", "run", "-x", "100", "-y", "30"]);
    tmux.keys("run", &["stty size", "Enter"]);
    tmux.wait_for("run", "30 100", 1);
    // Ctrl-C ends the foreground job, not the session.
    tmux.keys("run", &["sleep 60", "Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.keys("run", &["C-c"]);
    tmux.keys("run", &["echo after-$((40+2))", "Enter"]);
    tmux.wait_for("run", "after-42", 1);
    tmux.keys("run", &["exit 3", "Enter"]);
    tmux.wait_for("run", "EXIT=3", 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !after.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_to_string(&before).expect("before"),
        std::fs::read_to_string(&after).expect("after"),
        "the terminal was not restored"
    );

    // -i without a terminal: stdin streamed, its end the end of input.
    let mut child = Command::new(bin_dir().join("rauha"))
        .args(["exec", "-i", "tz", "--", "cat"])
        .env("RAUHA_ADDR", d.addr())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exec -i");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hi\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));
    assert!(out.status.success());

    // attach to a detached terminal.
    let out = d.cli(&["run", "-d", "-it", "--zone", "tz", &image, "/bin/sh"]);
    let id = text(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && id.len() == 36,
        "{}",
        text(&out.stderr)
    );
    let command = format!(
        "RAUHA_ADDR={} {rauha} attach {id}; echo EXIT=$?; sleep 600",
        d.addr()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "attach",
        "-x",
        "80",
        "-y",
        "20",
        &command,
    ]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.keys("attach", &["echo attached-$((6*7))", "Enter"]);
    tmux.wait_for("attach", "attached-42", 1);
    tmux.keys("attach", &["exit 4", "Enter"]);
    tmux.wait_for("attach", "EXIT=4", 1);

    // logs --follow: a line written after it started, and the end.
    let out = d.cli(&[
        "run",
        "--zone",
        "tz",
        "--",
        "sh",
        "-c",
        "echo early; sleep 1; echo late",
    ]);
    let id = text(&out.stdout).trim().to_string();
    let started = Instant::now();
    let out = d.cli(&["logs", "--follow", &id]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "early\nlate\n");
    let out = d.cli(&["logs", "--tail", "1", &id]);
    assert_eq!(text(&out.stdout), "late\n");
    // --timestamps: each line after the time it came, a second apart.
    let out = d.cli(&["logs", "--timestamps", &id]);
    let stamped = text(&out.stdout);
    let lines: Vec<(&str, &str)> = stamped
        .lines()
        .map(|l| l.split_once(' ').expect("time and line"))
        .collect();
    assert_eq!(
        lines.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
        ["early", "late"],
        "{stamped}"
    );
    let ms = |t: &str| -> u64 {
        // HH:MM:SS.mmm of an RFC 3339 UTC time.
        let clock = t.split('T').nth(1).expect("time").trim_end_matches('Z');
        let parts: Vec<f64> = clock
            .split(':')
            .map(|p| p.parse().expect("number"))
            .collect();
        ((parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]) * 1000.0) as u64
    };
    let gap = ms(lines[1].0) - ms(lines[0].0);
    assert!((900..5000).contains(&gap), "{stamped}");
}
