#!/usr/bin/env python3
"""Bridged networking: zone start, TCP throughput and connect latency, against
plain network namespaces.

Starts its own rauhad on a temp root with a bridge and subnet of its own
(rbench0, 10.233.0.0/24), an "outside" namespace behind a veth of the host
(10.234.0.0/24), and, as the peer, two plain namespaces joined by one veth
pair (10.235.0.0/30): no bridge, no firewall, no BPF. Traffic goes only to
those namespaces. Measures, in the same run:

  zone start:  rauha sandbox -- /bin/true, bridged against loopback
               (interleaved, random order per round)
  throughput:  iperf3 -t SECONDS, zone -> zone and zone -> outside (through
               the zone's chain and masquerade), against netns -> netns
  connect:     median time of one TCP connect+close (python, 500 in a row),
               zone -> zone and zone -> outside, against netns -> netns

Prints medians and ratios. Needs root, a release build (cargo build
--release), iperf3 and python3 (RAUHA_BENCH_DEPS=1 scripts/install-deps.sh).

    sudo python3 bench/network.py [--runs 50] [--seconds 5]
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
TAG = "rauha-bench-net-" + uuid.uuid4().hex[:8]
PIN_DIR = "/sys/fs/bpf/" + TAG
BRIDGE, SUBNET = "rbench0", "10.233.0.0/24"
OUT_NS, OUT_HOST, OUT_ADDR = TAG + "-out", "10.234.0.1", "10.234.0.2"
PEER_A, PEER_B = TAG + "-a", TAG + "-b"

CONNECT = """
import socket,statistics,sys,time
host,port,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])
ts=[]
for _ in range(n):
    t=time.perf_counter();s=socket.create_connection((host,port),2);ts.append(time.perf_counter()-t);s.close()
print(statistics.median(ts)*1e6)
"""

ACCEPT = """
import socket,sys
s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('0.0.0.0',int(sys.argv[1])));s.listen(256)
while True:
    c,_=s.accept();c.close()
"""


def sh(*argv, check=True, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if check and r.returncode != 0:
        sys.exit(f"{' '.join(argv[:6])}... failed ({r.returncode}): {r.stderr.decode()[-400:]}")
    return r


def start_rauhad(base, bindir):
    sock = os.path.join(base, "rauhad.sock")
    log = open(os.path.join(base, "rauhad.log"), "w")
    proc = subprocess.Popen(
        [os.path.join(bindir, "rauhad"), "--root", os.path.join(base, "root"), "--socket", sock,
         "--cgroup-parent", TAG, "--bpf-pin-dir", PIN_DIR, "--bridge", BRIDGE,
         "--bridge-subnet", SUBNET],
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


def namespaces():
    sh("ip", "netns", "add", OUT_NS)
    sh("ip", "link", "add", "rbench-o", "type", "veth", "peer", "name", "eth0", "netns", OUT_NS)
    sh("ip", "addr", "add", OUT_HOST + "/24", "dev", "rbench-o")
    sh("ip", "link", "set", "rbench-o", "up")
    sh("ip", "-n", OUT_NS, "addr", "add", OUT_ADDR + "/24", "dev", "eth0")
    for dev in ["eth0", "lo"]:
        sh("ip", "-n", OUT_NS, "link", "set", dev, "up")
    sh("ip", "-n", OUT_NS, "route", "add", "default", "via", OUT_HOST)
    sh("ip", "netns", "add", PEER_A)
    sh("ip", "netns", "add", PEER_B)
    sh("ip", "-n", PEER_A, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", PEER_B)
    for ns, addr in [(PEER_A, "10.235.0.1/30"), (PEER_B, "10.235.0.2/30")]:
        sh("ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def cleanup():
    for ns in [OUT_NS, PEER_A, PEER_B]:
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", "rbench-o", check=False)
    sh("ip", "link", "del", BRIDGE, check=False)
    sh("nft", "delete", "table", "inet", BRIDGE, check=False)


def time_once(argv, env):
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit(f"{' '.join(argv[:5])}... failed ({r.returncode}): {r.stderr.decode()[-300:]}")
    return (time.perf_counter() - t) * 1000


def iperf(client_prefix, server, seconds, env):
    out = sh(*client_prefix, "iperf3", "-c", server, "-t", str(seconds), "-J", env=env).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: rauhad creates namespaces, links and nftables rules")
    for tool in ["iperf3", "nft", "python3"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: RAUHA_BENCH_DEPS=1 scripts/install-deps.sh")
    base = tempfile.mkdtemp(prefix=TAG)
    rauha = os.path.join(args.bin_dir, "rauha")
    daemon = None
    servers = []
    try:
        namespaces()
        daemon, addr = start_rauhad(base, args.bin_dir)
        env = dict(os.environ, RAUHA_ADDR=addr)
        policies = {}
        for name, body in [("loopback", 'mode = "loopback"\n'),
                           ("bridged", 'mode = "bridged"\n'),
                           ("client", f'mode = "bridged"\nallowed_zones = ["srv"]\n'
                                      f'allowed_egress = ["{OUT_ADDR}/32"]\n')]:
            path = os.path.join(base, name + ".toml")
            with open(path, "w") as f:
                f.write("[network]\n" + body)
            policies[name] = path

        print(f"zone start, {args.runs} rounds (rauha sandbox -- /bin/true)")
        times = {"loopback": [], "bridged": []}
        for _ in range(args.runs):
            for name in random.sample(list(times), len(times)):
                times[name].append(time_once(
                    [rauha, "sandbox", "--policy", policies[name], "--", "/bin/true"], env))
        base_ms = statistics.median(times["loopback"])
        for name, xs in times.items():
            m = statistics.median(xs)
            print(f"  {name:<10}{m:>8.1f} ms median  {m / base_ms:>5.2f}x loopback")

        sh(rauha, "zone", "create", "srv", "--policy", policies["bridged"], env=env)
        sh(rauha, "zone", "create", "cli", "--policy", policies["client"], env=env)
        sh(rauha, "run", "--zone", "srv", "--", "iperf3", "-s", "-p", "5201", env=env)
        sh(rauha, "run", "--zone", "srv", "--", "python3", "-c", ACCEPT, "5300", env=env)
        srv = json.loads(sh(rauha, "zone", "get", "srv", "--json", env=env).stdout)["address"]
        for ns, argv in [(OUT_NS, ["iperf3", "-s", "-p", "5201"]), (OUT_NS, ["python3", "-c", ACCEPT, "5300"]),
                         (PEER_B, ["iperf3", "-s", "-p", "5201"]), (PEER_B, ["python3", "-c", ACCEPT, "5300"])]:
            servers.append(subprocess.Popen(["ip", "netns", "exec", ns, *argv],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)
        zone = [rauha, "exec", "cli", "--"]
        peer = ["ip", "netns", "exec", PEER_A]
        print(f"\nTCP throughput, iperf3 -t {args.seconds} (Gbit/s)")
        plain = iperf(peer, "10.235.0.2", args.seconds, env)
        for name, gbps in [("zone -> zone", iperf(zone, srv, args.seconds, env)),
                           ("zone -> outside (masquerade)", iperf(zone, OUT_ADDR, args.seconds, env)),
                           ("netns -> netns (one veth pair)", plain)]:
            print(f"  {name:<32}{gbps:>8.2f}  {gbps / plain:>5.2f}x plain")
        print("\nTCP connect+close, median of 500 (µs)")
        connect = lambda prefix, host: float(
            sh(*prefix, "python3", "-c", CONNECT, host, "5300", "500", env=env).stdout)
        plain = connect(peer, "10.235.0.2")
        for name, us in [("zone -> zone", connect(zone, srv)),
                         ("zone -> outside (masquerade)", connect(zone, OUT_ADDR)),
                         ("netns -> netns (one veth pair)", plain)]:
            print(f"  {name:<32}{us:>8.1f}  {us / plain:>5.2f}x plain")
    finally:
        for s in servers:
            s.kill()
        if daemon:
            subprocess.run([rauha, "zone", "delete", "--force", "srv"], env=env, capture_output=True)
            subprocess.run([rauha, "zone", "delete", "--force", "cli"], env=env, capture_output=True)
            daemon.kill()
        cleanup()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
