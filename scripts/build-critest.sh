#!/usr/bin/env bash
# Builds critest, the upstream CRI validation suite, from the cri-tools
# version pinned in e2e/go/go.mod (via e2e/go/tools.go), once per version,
# into $RAUHA_CACHE (default /var/cache/rauha)/critest/<version>/, linked
# from target/tools/critest. critest's main is a Go test, so it is built
# with `go test -c`, as cri-tools' own Makefile does.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out="$root/target/tools/critest"
moddir="$root/e2e/go"
pkg=sigs.k8s.io/cri-tools/cmd/critest

if [[ -x /usr/local/go/bin/go ]]; then
    go=/usr/local/go/bin/go
elif command -v go >/dev/null 2>&1; then
    go=$(command -v go)
else
    echo "build-critest: Go not found (looked at /usr/local/go/bin/go and PATH); install Go >= $(sed -n 's/^go //p' "$moddir/go.mod") from https://go.dev/dl/ into /usr/local/go" >&2
    exit 1
fi
export GOTOOLCHAIN=local

cd "$moddir"
version=$("$go" list -m -f '{{.Version}}' sigs.k8s.io/cri-tools)
cd "$root"
cached="${RAUHA_CACHE:-/var/cache/rauha}/critest/$version/critest"
if [[ -x "$cached" ]]; then
    echo "== critest $version cached ($cached)"
else
    echo "== building critest $version with $("$go" version)"
    mkdir -p "$(dirname "$cached")"
    tmp="$cached.tmp.$$"
    trap 'rm -f "$tmp"' EXIT
    start=$SECONDS
    (cd "$moddir" && "$go" test -c -mod=readonly -trimpath \
        -ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$version" \
        -o "$tmp" "$pkg")
    mv -f "$tmp" "$cached"
    trap - EXIT
    echo "== built critest $version in $((SECONDS - start))s"
fi
mkdir -p "$(dirname "$out")"
ln -sfn "$cached" "$out"
