#!/usr/bin/env python3
"""Start-up cost of one sandboxed `/bin/true`: rauha against its peers.

Runs, in one session and interleaved round by round (each round in a
random order) so that drift on a shared machine hits every command alike:
  rauha sandbox -- /bin/true                      (host view, standard policy)
  rauha sandbox --bundle BUNDLE -- /bin/true      (busybox OCI bundle)
  both again with `zone.user_namespace = false`   (the zone's root host root:
                                                   the cost of the user namespace)
  rauha sandbox --repo-path REPO -- /bin/true     (a workspace: its overlay on a
                                                   disk-limited ext4 of its own)
  bwrap --unshare-all on the same busybox rootfs
  runc run on the same bundle
  sandlock run (if `sandlock` from `cargo install sandlock-cli` is found)
and prints the median and p95 wall time of each, and each one's ratio to
runc and to rauha. Needs root and a release build (cargo build --release).

    sudo python3 bench/startup.py [--runs 100]
"""

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_sandlock():
    for p in [shutil.which("sandlock"), "/opt/sandlock/bin/sandlock", os.path.expanduser("~/.cargo/bin/sandlock")]:
        if p and os.access(p, os.X_OK):
            return p
    return None


def make_bundle(base):
    busybox = shutil.which("busybox") or "/bin/busybox"
    rootfs = os.path.join(base, "bundle", "rootfs")
    for d in ["bin", "proc", "dev", "tmp", "etc"]:
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    shutil.copy(busybox, os.path.join(rootfs, "bin", "busybox"))
    for applet in ["sh", "true", "echo"]:
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    bundle = os.path.join(base, "bundle")
    subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
    with open(os.path.join(bundle, "config.json")) as f:
        spec = json.load(f)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    return bundle, rootfs


TAG = "rauha-bench-" + uuid.uuid4().hex[:8]
# Its own pin directory: the BPF programs it attaches go away with it.
PIN_DIR = "/sys/fs/bpf/" + TAG


def start_rauhad(base, bindir):
    sock = os.path.join(base, "rauhad.sock")
    log = open(os.path.join(base, "rauhad.log"), "w")
    proc = subprocess.Popen(
        [os.path.join(bindir, "rauhad"), "--root", os.path.join(base, "root"), "--socket", sock,
         "--cgroup-parent", TAG, "--bpf-pin-dir", PIN_DIR],
        stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(200):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            s.close()
            return proc, "unix://" + sock
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("rauhad did not start; see " + log.name)


def time_once(argv, env):
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = (time.perf_counter() - t) * 1000
    if r.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])}... failed ({r.returncode}): {r.stderr.decode()[-300:]}")
    return dt


def p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: rauhad and runc create namespaces and cgroups")
    for tool in ["bwrap", "runc"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: RAUHA_BENCH_DEPS=1 scripts/install-deps.sh installs it")
    base = tempfile.mkdtemp(prefix="rauha-bench-")
    bundle, rootfs = make_bundle(base)
    daemon, addr = start_rauhad(base, args.bin_dir)
    env = dict(os.environ, RAUHA_ADDR=addr)
    rauha = os.path.join(args.bin_dir, "rauha")
    host_users = os.path.join(base, "host-users.toml")
    with open(host_users, "w") as f:
        f.write("[zone]\nuser_namespace = false\n")
    repo = os.path.join(base, "repo")
    os.makedirs(repo)
    with open(os.path.join(repo, "README"), "w") as f:
        f.write("bench\n")
    commands = {
        "rauha sandbox (host view)": lambda i: [rauha, "sandbox", "--", "/bin/true"],
        "  same, with a workspace": lambda i: [rauha, "sandbox", "--repo-path", repo, "--", "/bin/true"],
        "rauha sandbox (bundle)": lambda i: [rauha, "sandbox", "--bundle", bundle, "--", "/bin/true"],
        "  same, host view, no userns": lambda i: [rauha, "sandbox", "--policy", host_users, "--", "/bin/true"],
        "  same, bundle, no userns": lambda i: [rauha, "sandbox", "--policy", host_users, "--bundle", bundle,
                                                "--", "/bin/true"],
        "bwrap --unshare-all": lambda i: ["bwrap", "--unshare-all", "--ro-bind", rootfs, "/", "--proc", "/proc",
                                          "--dev", "/dev", "/bin/true"],
        "runc run": lambda i: ["runc", "--root", os.path.join(base, "runc"), "run", "--bundle", bundle,
                               f"bench-{i}"],
    }
    sandlock = find_sandlock()
    if sandlock:
        commands["sandlock run"] = lambda i: [sandlock, "run", "-r", "/usr", "-r", "/lib", "-r", "/lib64",
                                              "-r", "/bin", "--", "/bin/true"]
    times = {name: [] for name in commands}
    try:
        for name, argv in commands.items():  # warm up caches once each
            time_once(argv(-1 - len(name)), env)
        # Each round in its own random order: a command always run after
        # the same one would pay for what that one leaves behind (runc's
        # teardown, a workspace's loop device) and skew its ratio.
        order = random.Random(1)
        for i in range(args.runs):
            names = list(commands)
            order.shuffle(names)
            for name in names:
                times[name].append(time_once(commands[name](i), env))
    finally:
        daemon.terminate()
        daemon.wait()
        subprocess.run(["rm", "-rf", base, PIN_DIR])
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            try:
                os.rmdir(os.path.join("/sys/fs/cgroup", hierarchy, TAG))
            except OSError:
                pass
    runc = statistics.median(times["runc run"])
    mine = statistics.median(times["rauha sandbox (bundle)"])
    print(f"{'command':<28}{'median ms':>10}{'p95 ms':>9}{'÷ runc':>9}{'÷ rauha':>9}")
    for name, xs in times.items():
        m = statistics.median(xs)
        print(f"{name:<28}{m:>10.1f}{p95(xs):>9.1f}{m / runc:>9.2f}{m / mine:>9.2f}")
    if not sandlock:
        print("sandlock: not found (cargo install sandlock-cli to include it)")
    print(f"runs: {args.runs} each, interleaved; ÷ rauha is against rauha sandbox (bundle)")


if __name__ == "__main__":
    main()
