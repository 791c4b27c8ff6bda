#!/usr/bin/env python3
"""Placement throughput: how fast the operator places SandboxTasks, against
the API server's own ceiling for the same writes.

    eval "$(scripts/cluster.sh up)"        # as root
    python3 bench/k8s_placement.py [--nodes 200] [--tasks 500]

Makes NODES Node objects that no kubelet backs (`bench-node-N`, labelled
ready for Rauha and `rauha.dev/bench=true`), kept Ready by this script (it
renews their Leases and heartbeats their status, as kwok does), and a Zone
whose nodeSelector picks only them: tasks are placed, never run. Then:

  ceiling: TASKS plain pod creates (the pods a placement makes, bound to
           the fake nodes), as fast as the API server takes them;
  rauha:   TASKS SandboxTasks created the same way, timed from each create
           to its status reaching Scheduled (seen on a watch).

Prints tasks placed per second, p50/p99 create-to-Scheduled, the ceiling's
creates per second, and their ratio. Cleans up what it made.
"""

import argparse
import concurrent.futures
import json
import os
import ssl
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid


def kubeconfig():
    path = os.environ.get("KUBECONFIG")
    if not path or not os.path.exists(path):
        sys.exit('no cluster: eval "$(scripts/cluster.sh up)" first')
    conf = {}
    for line in open(path):
        line = line.strip()
        for key in ["server", "certificate-authority", "client-certificate", "client-key"]:
            if line.startswith(key + ":"):
                conf[key] = line.split(":", 1)[1].strip()
    ctx = ssl.create_default_context(cafile=conf["certificate-authority"])
    ctx.load_cert_chain(conf["client-certificate"], conf["client-key"])
    return conf["server"], ctx


SERVER, TLS = kubeconfig()


def call(method, path, body=None, content_type="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(SERVER + path, data=data, method=method,
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, context=TLS, timeout=60) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        if e.code == 404 and method == "DELETE":
            return None
        raise SystemExit(f"{method} {path}: {e.code} {e.read()[:300]!r}")


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def node_status():
    return {"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "kept ready by bench/k8s_placement.py",
                        "lastHeartbeatTime": now_rfc3339(), "lastTransitionTime": now_rfc3339()}],
        "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
        "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
    }}


def make_nodes(names):
    for n in names:
        call("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": n, "labels": {"rauha.dev/ready": "true", "rauha.dev/bench": "true"}}})
        call("PATCH", f"/api/v1/nodes/{n}/status", node_status(), "application/merge-patch+json")
        call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n},
            "spec": {"holderIdentity": n, "leaseDurationSeconds": 40,
                     "renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())}})


def keep_ready(names, stop):
    """Renews the fake nodes' Leases and heartbeats their status."""
    while not stop.wait(10):
        for n in names:
            call("PATCH", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{n}",
                 {"spec": {"renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())}},
                 "application/merge-patch+json")
            call("PATCH", f"/api/v1/nodes/{n}/status", node_status(), "application/merge-patch+json")


def watch_scheduled(names, seen, done):
    """Records when each task's status first says Scheduled."""
    path = "/apis/rauha.dev/v1alpha1/namespaces/default/sandboxtasks?watch=1&labelSelector=rauha.dev%2Fbench%3Dtrue"
    req = urllib.request.Request(SERVER + path)
    with urllib.request.urlopen(req, context=TLS, timeout=600) as r:
        for line in r:
            ev = json.loads(line)
            obj = ev.get("object", {})
            name = obj.get("metadata", {}).get("name")
            if name in names and name not in seen and obj.get("status", {}).get("phase") == "Scheduled":
                seen[name] = time.perf_counter()
                if len(seen) == len(names):
                    done.set()
                    return


def p(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    tag = uuid.uuid4().hex[:6]
    nodes = [f"bench-node-{tag}-{i}" for i in range(args.nodes)]
    registry = os.environ.get("RAUHA_REGISTRY", "127.0.0.1:15000")
    image = f"{registry}/rauha/busybox:latest"
    stop = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(args.workers)
    try:
        print(f"making {args.nodes} nodes", file=sys.stderr)
        make_nodes(nodes)
        threading.Thread(target=keep_ready, args=(nodes, stop), daemon=True).start()
        zone = f"bench-{tag}"
        call("POST", "/apis/rauha.dev/v1alpha1/namespaces/default/zones", {
            "apiVersion": "rauha.dev/v1alpha1", "kind": "Zone",
            "metadata": {"name": zone},
            "spec": {"preset": "standard", "placement": {"nodeSelector": {"rauha.dev/bench": "true"}}}})

        # The ceiling: the same pods, created directly.
        def pod(i):
            call("POST", "/api/v1/namespaces/default/pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"bench-ceiling-{tag}-{i}", "labels": {"rauha.dev/bench-ceiling": tag}},
                "spec": {"nodeName": nodes[i % len(nodes)], "runtimeClassName": "rauha",
                         "automountServiceAccountToken": False,
                         "containers": [{"name": "task", "image": image, "command": ["true"]}]}})
        t0 = time.perf_counter()
        list(pool.map(pod, range(args.tasks)))
        ceiling = args.tasks / (time.perf_counter() - t0)

        names = [f"bench-{tag}-{i}" for i in range(args.tasks)]
        seen, done = {}, threading.Event()
        threading.Thread(target=watch_scheduled, args=(set(names), seen, done), daemon=True).start()
        time.sleep(1)
        created = {}

        def task(name):
            created[name] = time.perf_counter()
            call("POST", "/apis/rauha.dev/v1alpha1/namespaces/default/sandboxtasks", {
                "apiVersion": "rauha.dev/v1alpha1", "kind": "SandboxTask",
                "metadata": {"name": name, "labels": {"rauha.dev/bench": "true"}},
                "spec": {"image": image, "command": ["true"], "zoneRef": zone}})
        t0 = time.perf_counter()
        list(pool.map(task, names))
        if not done.wait(600):
            sys.exit(f"only {len(seen)} of {len(names)} tasks were Scheduled within 600 s")
        placed = args.tasks / (max(seen.values()) - t0)
        lat = [(seen[n] - created[n]) * 1000 for n in names]
        print(f"nodes {args.nodes}, tasks {args.tasks}, {args.workers} client threads")
        print(f"API server ceiling (plain pod creates): {ceiling:8.1f} /s")
        print(f"tasks placed (create to Scheduled):     {placed:8.1f} /s   ratio {placed / ceiling:.2f}")
        print(f"create-to-Scheduled: p50 {p(lat, 0.5):.0f} ms, p99 {p(lat, 0.99):.0f} ms")
    finally:
        stop.set()
        print("cleaning up", file=sys.stderr)
        call("DELETE", "/apis/rauha.dev/v1alpha1/namespaces/default/sandboxtasks?labelSelector=rauha.dev%2Fbench%3Dtrue")
        call("DELETE", f"/api/v1/namespaces/default/pods?labelSelector=rauha.dev%2Fbench-ceiling%3D{tag}&gracePeriodSeconds=0")
        call("DELETE", f"/apis/rauha.dev/v1alpha1/namespaces/default/zones/bench-{tag}")
        # The task pods on fake nodes have no kubelet to finish them.
        deadline = time.time() + 120
        while time.time() < deadline:
            left = call("GET", "/api/v1/namespaces/default/pods?labelSelector=rauha.dev%2Ftask")["items"]
            left = [p_ for p_ in left if p_["spec"].get("nodeName", "").startswith(f"bench-node-{tag}")]
            for p_ in left:
                call("DELETE", f"/api/v1/namespaces/default/pods/{p_['metadata']['name']}?gracePeriodSeconds=0")
            if not left:
                break
            time.sleep(1)
        for n in nodes:
            call("DELETE", f"/api/v1/nodes/{n}")
            call("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{n}")


if __name__ == "__main__":
    main()
