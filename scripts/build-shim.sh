#!/usr/bin/env bash
# containerd-shim-rauha-v2, statically linked, as it is deployed: one runs
# per pod, so it depends on no glibc of the node's and maps no shared
# libraries (half of a dynamic shim's resident memory, docs/performance.md).
# Pass cargo's profile flags through, e.g. `--release`. Run it after any
# `cargo build` of the workspace, which links the shim dynamically again.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo rustc "$@" -p rauha-shim-v2 --bin containerd-shim-rauha-v2 -- -C target-feature=+crt-static
dir=target/debug
for a in "$@"; do [ "$a" = --release ] && dir=target/release; done
if ! ldd "$dir/containerd-shim-rauha-v2" 2>&1 | grep -q "statically linked"; then
  echo "build-shim: $dir/containerd-shim-rauha-v2 is not statically linked" >&2
  exit 1
fi
