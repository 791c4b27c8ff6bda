#!/usr/bin/env bash
# Builds containerd 2.x and its ctr into target/tools/containerd2/ from the
# version pinned in e2e/go/containerd2/go.mod, for the shim's e2e test
# against containerd 2.x (the suites otherwise run Debian's containerd 1.6).
# Skips the build when both binaries are newer than go.mod and go.sum.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out="$root/target/tools/containerd2"
moddir="$root/e2e/go/containerd2"

if [[ -x /usr/local/go/bin/go ]]; then
    go=/usr/local/go/bin/go
elif command -v go >/dev/null 2>&1; then
    go=$(command -v go)
else
    echo "build-containerd2: Go not found (looked at /usr/local/go/bin/go and PATH); install Go >= $(sed -n 's/^go //p' "$moddir/go.mod") from https://go.dev/dl/ into /usr/local/go" >&2
    exit 1
fi
export GOTOOLCHAIN=local

fresh() { [[ -x "$out/$1" && "$out/$1" -nt "$moddir/go.sum" && "$out/$1" -nt "$moddir/go.mod" ]]; }
if fresh containerd && fresh ctr; then
    echo "== containerd 2.x up to date ($out)"
else
    cd "$moddir"
    version=$("$go" list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
    echo "== building containerd $version with $("$go" version)"
    mkdir -p "$out"
    start=$SECONDS
    for cmd in containerd ctr; do
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
    cd "$root"
fi
"$out/containerd" --version
