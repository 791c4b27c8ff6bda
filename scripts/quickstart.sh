#!/usr/bin/env bash
# The main job: install what is needed, build, start rauhad (if it is not
# already serving) and run one sandboxed task, printing its JSON result.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh

cargo build --release --workspace --bins
scripts/build-shim.sh --release
bin="$PWD/target/release"
socket=/run/rauha/rauhad.sock

if ! "$bin/rauha" info >/dev/null 2>&1; then
  mkdir -p /var/log
  nohup "$bin/rauhad" >>/var/log/rauhad.log 2>&1 &
  for _ in $(seq 1 100); do
    [ -S "$socket" ] && "$bin/rauha" info >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$bin/rauha" info >/dev/null || { echo "quickstart: rauhad did not start; see /var/log/rauhad.log" >&2; tail -5 /var/log/rauhad.log >&2; exit 1; }
  echo "quickstart: rauhad is serving on $socket (log: /var/log/rauhad.log; stop it with: pkill -x rauhad)" >&2
fi

"$bin/rauha" sandbox --json -- sh -c 'echo "hello from zone $(hostname)"; id -u; ls /'
