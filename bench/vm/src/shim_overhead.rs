//! containerd-shim-rauha-v2 against containerd-shim-runc-v2, in one
//! private containerd, with one busybox image from a registry on 127.0.0.1:
//!
//! - start latency: `ctr run -d` (container create, task create, task
//!   start) until it returns with the task running;
//! - memory: the resident set (VmRSS) of the shim processes per pod while
//!   N pods run, and, for Rauha, the zone agents' too (runc has no
//!   process of its own beside the shim).
//!
//! ```sh
//! cargo build --release --workspace --bins
//! sudo RAUHA_BIN_DIR=target/release target/release/shim-overhead [PODS]
//! ```

use std::path::Path;
use std::time::Instant;

use rauha_e2e::containerd::{
    containerd_ready, processes_mentioning, Containerd, ContainerdOpts, Registry,
};
use rauha_e2e::{ready, Daemon};

/// A `KEY:   N kB` field of a /proc file, in KiB.
fn field_kib(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of a process, in KiB: (RSS, its anonymous part, PSS).
/// PSS divides pages shared by several processes (e.g. the binary's code,
/// mapped by every shim) among them: the cost one more pod adds.
fn memory_kib(pid: i32) -> (u64, u64, u64) {
    (
        field_kib(&format!("/proc/{pid}/status"), "VmRSS:"),
        field_kib(&format!("/proc/{pid}/status"), "RssAnon:"),
        field_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:"),
    )
}

/// Copies the bytes of a process's `[heap]` mapping (for `strings`).
fn keep_heap(pid: i32, to: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let range = maps
        .lines()
        .find(|l| l.ends_with("[heap]"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .ok_or_else(|| std::io::Error::other("no [heap] mapping"))?;
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    mem.seek(SeekFrom::Start(range.0))?;
    let mut bytes = vec![0; (range.1 - range.0) as usize];
    mem.read_exact(&mut bytes)?;
    std::fs::write(to, bytes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Figures {
    start_ms: f64,
    shims: usize,
    /// Per pod, KiB: the shims' RSS, anonymous RSS, PSS.
    shim: (f64, f64, f64),
    /// Per pod, KiB: the PSS of Rauha's zone agents (none for runc).
    extra_pss: f64,
}

fn measure(ctd: &Containerd, image: &str, runtime: &str, shim_bin: &str, pods: usize) -> Figures {
    let tag = runtime.rsplit('.').nth(1).unwrap_or("x");
    let mut starts = Vec::new();
    for i in 0..pods {
        let id = format!("{tag}-{i}");
        let t = Instant::now();
        ctd.ctr_ok(&[
            "run",
            "-d",
            "--runtime",
            runtime,
            image,
            &id,
            "sleep",
            "600",
        ]);
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let address = ctd.address().display().to_string();
    let shims: Vec<i32> = processes_mentioning(shim_bin)
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(&address))
        .map(|(pid, _)| pid)
        .collect();
    let sum = shims
        .iter()
        .map(|p| memory_kib(*p))
        .fold((0, 0, 0), |a, m| (a.0 + m.0, a.1 + m.1, a.2 + m.2));
    let agents: u64 = if runtime.contains("rauha") {
        processes_mentioning("rauha-guest-agent")
            .iter()
            .map(|(p, _)| memory_kib(*p).2)
            .sum()
    } else {
        0
    };
    // For a closer look: RAUHA_BENCH_SMAPS=DIR keeps one shim's
    // /proc/PID/smaps per runtime (which mappings the memory is in).
    if let (Some(dir), Some(pid)) = (std::env::var_os("RAUHA_BENCH_SMAPS"), shims.first()) {
        let to = std::path::Path::new(&dir).join(format!("{tag}.smaps"));
        if let Err(e) = std::fs::copy(format!("/proc/{pid}/smaps"), &to) {
            eprintln!("cannot keep {}: {e}", to.display());
        }
        if let Err(e) = keep_heap(*pid, &Path::new(&dir).join(format!("{tag}.heap"))) {
            eprintln!("cannot keep the heap of {pid}: {e}");
        }
    }
    let per = |k: u64| k as f64 / pods as f64;
    for i in 0..pods {
        let id = format!("{tag}-{i}");
        let _ = ctd.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    }
    for i in 0..pods {
        let id = format!("{tag}-{i}");
        for _ in 0..50 {
            if ctd.ctr(&["task", "rm", &id]).status.success() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = ctd.ctr(&["container", "rm", &id]);
    }
    Figures {
        start_ms: median(starts),
        shims: shims.len(),
        shim: (per(sum.0), per(sum.1), per(sum.2)),
        extra_pss: per(agents),
    }
}

fn main() {
    let pods: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    if !ready() || !containerd_ready() {
        eprintln!("shim-overhead: prerequisites are missing (see above)");
        std::process::exit(1);
    }
    let d = Daemon::start();
    let reg = Registry::start();
    let image = reg.push_busybox_image("bench/busybox:1", &["sh"]);
    let ctd = Containerd::start(ContainerdOpts::for_rauha(&d, &reg));
    ctd.ctr_ok(&["image", "pull", "--plain-http", &image]);
    // One warm-up each: image unpacked, binaries in the page cache.
    for (rt, tag) in [
        ("io.containerd.runc.v2", "wr"),
        ("io.containerd.rauha.v2", "wz"),
    ] {
        ctd.ctr_ok(&["run", "--rm", "--runtime", rt, &image, tag, "true"]);
    }
    let runc = measure(
        &ctd,
        &image,
        "io.containerd.runc.v2",
        "containerd-shim-runc-v2",
        pods,
    );
    let rauha = measure(
        &ctd,
        &image,
        "io.containerd.rauha.v2",
        "containerd-shim-rauha-v2",
        pods,
    );
    println!("{pods} pods each (busybox `sleep 600`), one containerd 1.6, same run");
    println!("| runtime | start (median ms) | shims | shim RSS / pod (KiB) | of it anonymous | shim PSS / pod (KiB) | zone agent PSS / pod (KiB) |");
    println!("|---|---|---|---|---|---|---|");
    for (name, f) in [
        ("runc (containerd-shim-runc-v2)", &runc),
        ("rauha (containerd-shim-rauha-v2)", &rauha),
    ] {
        println!(
            "| {name} | {:.1} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            f.start_ms, f.shims, f.shim.0, f.shim.1, f.shim.2, f.extra_pss
        );
    }
    println!(
        "rauha/runc: start {:.2}x; shim memory per pod: RSS {:.2}x, PSS {:.2}x (goal: start <= 1x, memory <= 0.33x)",
        rauha.start_ms / runc.start_ms,
        rauha.shim.0 / runc.shim.0,
        rauha.shim.2 / runc.shim.2
    );
}
