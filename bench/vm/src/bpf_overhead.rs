//! The cost of Rauha's BPF-LSM hooks on an open/close-heavy loop, inside
//! the VM kernel that allows them (Debian 6.1 under QEMU TCG).
//!
//! A process in a zone's cgroup opens and closes one file N times, with the
//! programs attached and, in the same VM and round after round, with their
//! links unpinned (detached). Prints each run, the medians and the ratio.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! sudo RAUHA_BIN_DIR=target/release target/release/bpf-overhead [ROUNDS] [N]
//! ```

use std::time::Duration;

use rauha_e2e::vm::{start_rauhad, vm_ready, VmSpec};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    if !vm_ready() {
        eprintln!("bpf-overhead: the VM prerequisites are missing (see above)");
        std::process::exit(1);
    }
    let start = start_rauhad("--enforcement required");
    let script = format!(
        r#"
P=/usr/local/bin/rauha-probe
{start}
rauha zone create za >/dev/null
ZA=/sys/fs/cgroup/rauha-vm/$(rauha zone get za --json | grep -m1 '"id"' | sed 's/.*"id": *"\([^"]*\)".*/\1/')/work
$P join $ZA $P openloop 1000 $P >/dev/null
for r in $(seq 1 {rounds}); do
  echo "attached $($P join $ZA $P openloop {n} $P)"
  echo "host-attached $($P openloop {n} $P)"
  kill -9 $rauhad; sleep 0.2
  rm -rf /sys/fs/bpf/rauha/links
  echo "detached $($P join $ZA $P openloop {n} $P)"
  echo "host-detached $($P openloop {n} $P)"
  {start}
done
"#
    );
    let out = VmSpec::new()
        .rauha_binaries()
        .memory_mb(1024)
        .timeout(Duration::from_secs(1800))
        .script(script)
        .run();
    if !out.success() {
        eprintln!("bpf-overhead: the VM run failed:\n{}", out.describe());
        std::process::exit(1);
    }
    let mut attached = Vec::new();
    let mut detached = Vec::new();
    let mut host_attached = Vec::new();
    let mut host_detached = Vec::new();
    for line in out.output.lines() {
        // "attached openloop N: X ns"
        let mut words = line.split_whitespace();
        let (Some(kind), Some(ns)) = (words.next(), words.nth(2)) else {
            continue;
        };
        let Ok(ns) = ns.parse::<f64>() else { continue };
        match kind {
            "attached" => attached.push(ns),
            "detached" => detached.push(ns),
            "host-attached" => host_attached.push(ns),
            "host-detached" => host_detached.push(ns),
            _ => {}
        }
    }
    println!("open+close of one file by a process in a zone, {n} times per run, {rounds} rounds, interleaved");
    println!("programs attached (ns/op): {attached:?}");
    println!("programs detached (ns/op): {detached:?}");
    let (a, d) = (median(attached), median(detached));
    println!(
        "in a zone, median: attached {a:.0} ns, detached {d:.0} ns, ratio {:.3} (overhead {:+.1}%)",
        a / d,
        (a / d - 1.0) * 100.0
    );
    let (ha, hd) = (median(host_attached), median(host_detached));
    println!(
        "outside every zone, median: attached {ha:.0} ns, detached {hd:.0} ns, ratio {:.3} (overhead {:+.1}%)",
        ha / hd,
        (ha / hd - 1.0) * 100.0
    );
}
