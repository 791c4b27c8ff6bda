#!/usr/bin/env bash
# Builds crictl (the CRI CLI) into target/tools/crictl from the version pinned
# in e2e/go/go.mod (sigs.k8s.io/cri-tools, via e2e/go/tools.go). Skips the
# build when target/tools/crictl is newer than e2e/go/go.mod and go.sum.
# GOPATH and GOCACHE stay at Go's defaults (outside the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out="$root/target/tools/crictl"
moddir="$root/e2e/go"
pkg=sigs.k8s.io/cri-tools/cmd/crictl

if [[ -x /usr/local/go/bin/go ]]; then
    go=/usr/local/go/bin/go
elif command -v go >/dev/null 2>&1; then
    go=$(command -v go)
else
    echo "build-crictl: Go not found (looked at /usr/local/go/bin/go and PATH); install Go >= $(sed -n 's/^go //p' "$moddir/go.mod") from https://go.dev/dl/ into /usr/local/go" >&2
    exit 1
fi

# Never let the go command download a different toolchain; an old local Go
# fails loudly instead.
export GOTOOLCHAIN=local

if [[ -x "$out" && "$out" -nt "$moddir/go.sum" && "$out" -nt "$moddir/go.mod" ]]; then
    echo "== crictl up to date ($out)"
else
    echo "== building crictl with $("$go" version)"
    mkdir -p "$(dirname "$out")"
    cd "$moddir"
    version=$("$go" list -m -f '{{.Version}}' sigs.k8s.io/cri-tools)
    tmp="$out.tmp.$$"
    trap 'rm -f "$tmp"' EXIT
    start=$SECONDS
    "$go" build -mod=readonly -trimpath \
        -ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$version" \
        -o "$tmp" "$pkg"
    # Rename into place so an interrupted build never leaves a "fresh" binary.
    mv -f "$tmp" "$out"
    trap - EXIT
    echo "== built crictl $version in $((SECONDS - start))s"
    cd "$root"
fi

"$out" --version
