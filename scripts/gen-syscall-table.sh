#!/usr/bin/env bash
# Regenerates node-runtime/spec/src/syscall_table.rs from the kernel UAPI header.
set -euo pipefail
hdr=${1:-/usr/include/x86_64-linux-gnu/asm/unistd_64.h}
out="$(dirname "$0")/../node-runtime/spec/src/syscall_table.rs"
{
  echo '//! x86_64 system call numbers, generated from `asm/unistd_64.h` of Linux UAPI headers.'
  echo '//! Regenerate with `scripts/gen-syscall-table.sh`.'
  echo
  echo '/// `(name, number)` for every x86_64 system call, sorted by number.'
  echo 'pub const X86_64: &[(&str, u32)] = &['
  grep '#define __NR_' "$hdr" | awk '{sub("__NR_","",$2); printf "    (\"%s\", %s),\n", $2, $3}'
  echo '];'
} >"$out"
