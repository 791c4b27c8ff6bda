#!/usr/bin/env bash
# kill -9 of rauhad at random points of a mixed load, for many cycles (CI
# runs 20 of the same in e2e/tests/kill_cycles.rs). As root:
#   bench/kill_cycles.sh [CYCLES] [POD_CYCLES]   (default 1000 and 200)
# The pod cycles need containerd and crictl (scripts/install-deps.sh,
# scripts/build-crictl.sh).
# Prints the cycles' time, how many tasks ran and how many ended
# `interrupted`; any lost task, duplicate zone or orphan fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
RAUHA_E2E_REQUIRE=1 RAUHA_KILL_CYCLES="${1:-1000}" \
  cargo test -p rauha-e2e --test kill_cycles -- --test-threads=1 --nocapture 2>&1 |
  grep -E "cycles in|test result|panicked|cycle [0-9]+:"
RAUHA_E2E_REQUIRE=1 RAUHA_POD_KILL_CYCLES="${2:-200}" \
  cargo test -p rauha-e2e --test shim_cri cri_pod_survives_kill_nine_cycles_of_rauhad \
  -- --test-threads=1 --nocapture 2>&1 |
  grep -E "cycles with a pod|test result|panicked|cycle [0-9]+:"
