#!/usr/bin/env python3
"""Pod start to Running: RuntimeClass `rauha` against runc's handler on the
same kubelet, the same image, interleaved (each round in a random order). runc's
handler needs containerd 2.x's own containerd-shim-runc-v2 on the node
(Debian's, from containerd 1.6, is refused by containerd 2.x).

    eval "$(scripts/cluster.sh up)"      # as root
    python3 bench/k8s_pod_start.py [--runs 30]

Each run applies one pod (`sleep 3600` from $RAUHA_REGISTRY/rauha/busybox,
or with `--image nginx` the nginx stand-in cluster.sh pushes, serving :80
as root) and times from the apply to the API server's `Running` phase as seen by a
`kubectl get --watch`, then deletes it (not timed). Prints the median and
p95 of each, and the ratio rauha / runc. Needs runc on the node
(RAUHA_BENCH_DEPS=1 scripts/install-deps.sh).
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid


def kubectl(*args, stdin=None, check=True):
    r = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def time_pod(runtime_class, image, command):
    name = f"bench-{runtime_class}-{uuid.uuid4().hex[:8]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runtimeClassName": runtime_class,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [dict({"name": "c", "image": image}, **({"command": command} if command else {}))],
        },
    }
    watch = subprocess.Popen(
        ["kubectl", "get", "pods", "-n", "default", "--field-selector", f"metadata.name={name}",
         "--watch", "-o", "jsonpath={.status.phase}{\"\\n\"}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.3)  # the watch is open before the pod is made
    start = time.perf_counter()
    kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    took = None
    # A pod that never runs (its sandbox failing over and over) prints
    # nothing more: the watch is ended after 120 s.
    timer = threading.Timer(120, watch.kill)
    timer.start()
    for line in watch.stdout:
        if line.strip() == "Running":
            took = (time.perf_counter() - start) * 1000
            break
    timer.cancel()
    watch.kill()
    kubectl("delete", "pod", name, "-n", "default", "--grace-period=0", "--force", "--wait=true", check=False)
    if took is None:
        sys.exit(f"pod {name} ({runtime_class}) was not Running within 120 s")
    return took


def p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--image", choices=["busybox", "nginx"], default="busybox")
    args = ap.parse_args()
    registry = os.environ.get("RAUHA_REGISTRY")
    if not registry or not shutil.which("kubectl"):
        sys.exit('no cluster: eval "$(scripts/cluster.sh up)" first')
    if not shutil.which("runc"):
        sys.exit("runc is missing on the node: RAUHA_BENCH_DEPS=1 scripts/install-deps.sh installs it")
    kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": "runc"}, "handler": "runc"}))
    if args.image == "nginx":
        image, command = f"{registry}/rauha/nginx:stand-in", None
    else:
        image, command = f"{registry}/rauha/busybox:latest", ["sleep", "3600"]
    times = {"rauha": [], "runc": []}
    for rc in times:  # warm up: the image unpacked, caches hot
        time_pod(rc, image, command)
    order = random.Random(1)
    for _ in range(args.runs):
        classes = list(times)
        order.shuffle(classes)
        for rc in classes:
            times[rc].append(time_pod(rc, image, command))
    print(f"{'RuntimeClass':14} {'median ms':>10} {'p95 ms':>8}")
    for rc, xs in times.items():
        print(f"{rc:14} {statistics.median(xs):10.0f} {p95(xs):8.0f}")
    ratio = statistics.median(times["rauha"]) / statistics.median(times["runc"])
    print(f"rauha / runc (medians): {ratio:.2f}; runs: {args.runs} each, interleaved")


if __name__ == "__main__":
    main()
