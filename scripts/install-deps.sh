#!/usr/bin/env bash
# Installs what building and testing Rauha needs on Debian or Ubuntu, as root.
# Idempotent: a second run installs nothing new.
set -euo pipefail

# clang, llvm (llvm-strip), libbpf-dev (bpf_helpers.h) and bpftool (vmlinux.h
# from the kernel's BTF) build the BPF programs in ebpf/. containerd, skopeo,
# umoci, docker-registry and the CNI plugins run the containerd shim's e2e
# tests (e2e/src/containerd.rs). e2fsprogs (mkfs.ext4) makes each workspace's
# disk-limited filesystem, at run time as well. etcd-server, openssl and
# iptables run the one-node Kubernetes cluster (scripts/cluster.sh).
# apache2-utils (htpasswd) gives the image tests' registry a password; tmux
# drives the interactive tests as a person's terminal. nftables (nft) applies
# bridged zones' rules (rauhad, at run time as well).
# python3-pip installs grpcio for the stock-client test (below).
need=(build-essential pkg-config protobuf-compiler procps util-linux coreutils iproute2 busybox-static e2fsprogs
  python3 python3-pip
  clang llvm libbpf-dev bpftool
  containerd skopeo umoci docker-registry containernetworking-plugins apache2-utils tmux
  etcd-server openssl iptables nftables)
if [ "${RAUHA_BENCH_DEPS:-0}" = 1 ]; then
  need+=(bubblewrap runc iperf3)
fi
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Packages' services (etcd, containerd, the registry) are not started:
  # the tests and scripts/cluster.sh start private instances of their own.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python's grpcio as an agent framework would install it (from PyPI, a
# version that sends a Unix socket's path as :authority), for
# e2e/tests/grpc_clients.rs; once per version, outside the clone.
grpcio_version=1.85.4
export RAUHA_GRPCIO="${RAUHA_CACHE:-/var/cache/rauha}/python/grpcio-$grpcio_version"
if [ ! -e "$RAUHA_GRPCIO/grpc/__init__.py" ]; then
  echo "install-deps: installing grpcio $grpcio_version into $RAUHA_GRPCIO"
  rm -rf "$RAUHA_GRPCIO.tmp"
  /usr/bin/python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    --target "$RAUHA_GRPCIO.tmp" "grpcio==$grpcio_version"
  rm -rf "$RAUHA_GRPCIO" && mv "$RAUHA_GRPCIO.tmp" "$RAUHA_GRPCIO"
fi

if ! command -v cargo >/dev/null 2>&1; then
  for c in "$HOME/.cargo/bin/cargo" /root/.cargo/bin/cargo; do
    [ -x "$c" ] && export PATH="$(dirname "$c"):$PATH" && break
  done
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: Rust is not installed; install Rust 1.88 or newer with rustup, then run this again" >&2
  exit 1
fi
rust_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [ "$rust_minor" -lt 88 ]; then
  echo "install-deps: $(rustc --version) is too old; Rauha needs Rust 1.88 or newer (rustup update stable)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: run as root: rauhad creates namespaces and cgroups" >&2
  exit 1
fi
