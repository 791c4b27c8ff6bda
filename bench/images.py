#!/usr/bin/env python3
"""Images: start-up of a task on a stored image, and pull time, against peers.

Starts its own docker-registry on 127.0.0.1 and its own rauhad on a temp
root, builds a busybox image from local files (umoci) and pushes it
(skopeo), and the same root filesystem as an OCI bundle. Then, interleaved
round by round (each round in a random order):

  rauha sandbox --image IMG --pull never -- /bin/true   (image already stored)
  rauha sandbox --bundle BUNDLE -- /bin/true            (the same root as a bundle)
  runc run                                              (the same bundle)

and, for a multi-layer image (busybox and four 4 MiB layers), each round
from nothing (the image removed and pruned, the directory removed):

  rauha image pull IMG                                  (into rauhad's store, unpacked)
  skopeo copy docker://IMG dir:DIR                      (blobs only, no unpack)

Prints the median and p95 of each and the ratios. Needs root, a release
build (cargo build --release), docker-registry, umoci, skopeo and runc
(scripts/install-deps.sh).

    sudo python3 bench/images.py [--runs 50] [--pulls 10]
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
TAG = "rauha-bench-img-" + uuid.uuid4().hex[:8]
PIN_DIR = "/sys/fs/bpf/" + TAG


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(argv, **kw):
    return subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kw)


def start_registry(base):
    port = free_port()
    config = os.path.join(base, "registry.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {base}/registry\n"
                f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", config], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    sys.exit("docker-registry did not start")


def make_rootfs(rootfs):
    busybox = shutil.which("busybox") or "/bin/busybox"
    for d in ["bin", "proc", "dev", "tmp", "etc"]:
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    shutil.copy(busybox, os.path.join(rootfs, "bin", "busybox"))
    for applet in ["sh", "true", "echo"]:
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))


def push(base, registry, name, rootfs, extra_layers):
    layout = os.path.join(base, "layout-" + name)
    image = f"{layout}:t"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", image])
    run(["umoci", "insert", "--no-history", "--image", image, rootfs, "/"])
    for i, path in enumerate(extra_layers):
        run(["umoci", "insert", "--no-history", "--image", image, path, f"/data/{i}"])
    run(["umoci", "config", "--no-history", "--image", image, "--config.env", "PATH=/bin",
         "--config.cmd", "sh"])
    ref = f"{registry}/{name}:1"
    run(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
         f"oci:{image}", f"docker://{ref}"])
    return ref


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
        sys.exit(f"{' '.join(argv[:4])}... failed ({r.returncode}): {r.stderr.decode()[-300:]}")
    return dt


def p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def table(times, base_name, title):
    base = statistics.median(times[base_name])
    print(f"{title:<40}{'median ms':>10}{'p95 ms':>9}{'÷ ' + base_name.split()[0]:>12}")
    for name, xs in times.items():
        m = statistics.median(xs)
        print(f"{name:<40}{m:>10.1f}{p95(xs):>9.1f}{m / base:>12.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--pulls", type=int, default=10)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: rauhad and runc create namespaces and cgroups")
    for tool in ["runc", "umoci", "skopeo", "docker-registry"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: scripts/install-deps.sh installs it")
    base = tempfile.mkdtemp(prefix="rauha-bench-img-")
    registry, host = start_registry(base)
    daemon = None
    try:
        bundle = os.path.join(base, "bundle")
        rootfs = os.path.join(bundle, "rootfs")
        make_rootfs(rootfs)
        subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
        with open(os.path.join(bundle, "config.json")) as f:
            spec = json.load(f)
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["/bin/true"]
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        small = push(base, host, "bb", rootfs, [])
        layers = []
        for i in range(4):
            d = os.path.join(base, f"layer{i}")
            os.makedirs(d)
            with open(os.path.join(d, "blob"), "wb") as f:
                f.write(os.urandom(4 << 20))
            layers.append(d)
        big = push(base, host, "multi", rootfs, layers)

        daemon, addr = start_rauhad(base, args.bin_dir)
        env = dict(os.environ, RAUHA_ADDR=addr)
        rauha = os.path.join(args.bin_dir, "rauha")
        run([rauha, "image", "pull", "--quiet", small], env=env)
        start = {
            "rauha sandbox --image (stored)": lambda i: [rauha, "sandbox", "--image", small, "--pull", "never",
                                                         "--", "/bin/true"],
            "rauha sandbox --bundle": lambda i: [rauha, "sandbox", "--bundle", bundle, "--", "/bin/true"],
            "runc run (same bundle)": lambda i: ["runc", "--root", os.path.join(base, "runc"), "run",
                                                 "--bundle", bundle, f"bench-{i}"],
        }
        times = {name: [] for name in start}
        for name, argv in start.items():
            time_once(argv(-1 - len(name)), env)
        order = random.Random(1)
        for i in range(args.runs):
            names = list(start)
            order.shuffle(names)
            for name in names:
                times[name].append(time_once(start[name](i), env))

        pulls = {"rauha image pull (4+1 layers)": [], "skopeo copy to dir:": []}
        target = os.path.join(base, "skopeo-dir")
        for i in range(args.pulls):
            names = list(pulls)
            order.shuffle(names)
            for name in names:
                if name.startswith("rauha"):
                    subprocess.run([rauha, "image", "rm", big], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                    run([rauha, "image", "prune"], env=env)
                    argv = [rauha, "image", "pull", "--quiet", big]
                else:
                    shutil.rmtree(target, ignore_errors=True)
                    argv = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{big}",
                            f"dir:{target}"]
                pulls[name].append(time_once(argv, env))
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait()
        registry.terminate()
        registry.wait()
        subprocess.run(["rm", "-rf", base, PIN_DIR])
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            try:
                os.rmdir(os.path.join("/sys/fs/cgroup", hierarchy, TAG))
            except OSError:
                pass
    table(times, "runc run (same bundle)", "start-up of /bin/true")
    print(f"runs: {args.runs} each, interleaved")
    print()
    table(pulls, "skopeo copy to dir:", "pull from a registry on 127.0.0.1")
    print(f"pulls: {args.pulls} each, interleaved; rauha's includes verifying and unpacking the layers")


if __name__ == "__main__":
    main()
