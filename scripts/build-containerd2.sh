#!/usr/bin/env bash
# Builds containerd 2.x, its ctr and its runc shim (containerd-shim-runc-v2:
# containerd 2.x refuses Debian's, from 1.6) from the version pinned in
# e2e/go/containerd2/go.mod, once per version, into $RAUHA_CACHE (default
# /var/cache/rauha)/containerd/<version>/, linked from target/tools/containerd2,
# for the shim's e2e test against containerd 2.x and scripts/cluster.sh (the
# other suites run Debian's containerd 1.6).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
moddir="$root/e2e/go/containerd2"
cache="${RAUHA_CACHE:-/var/cache/rauha}"
link="$root/target/tools/containerd2"

me=build-containerd2
source "$root/scripts/go-env.sh"

cd "$moddir"
version=$("$go" list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
# Built once per version, outside the clone: a fresh clone reuses it.
out="$cache/containerd/$version"
cmds=(containerd ctr containerd-shim-runc-v2)
missing=()
for cmd in "${cmds[@]}"; do
    [[ -x "$out/$cmd" ]] || missing+=("$cmd")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "== containerd $version cached ($out)"
else
    echo "== building containerd $version (${missing[*]}) with $("$go" version)"
    mkdir -p "$out"
    start=$SECONDS
    for cmd in "${missing[@]}"; do
        tmp="$out/$cmd.tmp.$$"
        trap 'rm -f "$tmp"' EXIT
        # The snapshotters these tests never use, and whose cgo needs
        # headers: left out, as containerd's own Makefile allows.
        "$go" build -mod=readonly -trimpath -tags "no_btrfs no_devmapper no_zfs" \
            -ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$version" \
            -o "$tmp" "github.com/containerd/containerd/v2/cmd/$cmd"
        mv -f "$tmp" "$out/$cmd"
        trap - EXIT
    done
    echo "== built containerd $version in $((SECONDS - start))s"
fi
cd "$root"
mkdir -p "$root/target/tools"
# A directory from before the cache: replaced by the link.
[[ -L "$link" || ! -e "$link" ]] || rm -rf "$link"
ln -sfn "$out" "$link"
"$link/containerd" --version
