#!/usr/bin/env bash
# Builds crictl (the CRI CLI) and critest (the CRI validation suite) from
# the version pinned in e2e/go/go.mod (sigs.k8s.io/cri-tools, via
# e2e/go/tools.go), and the ginkgo CLI critest runs its tests in parallel
# with (`critest -parallel N`), once per version, into $RAUHA_CACHE (default
# /var/cache/rauha)/<tool>/<version>/, linked from target/tools/<tool>.
# GOPATH and GOCACHE stay at Go's defaults (outside the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out="$root/target/tools/crictl"
moddir="$root/e2e/go"

me=build-crictl
source "$root/scripts/go-env.sh"

cd "$moddir"
version=$("$go" list -m -f '{{.Version}}' sigs.k8s.io/cri-tools)
cd "$root"
# Built once per version, outside the clone: a fresh clone reuses it.
# critest's main is a Go test: built with `go test -c`, as cri-tools'
# Makefile does.
ginkgo_version=$(cd "$moddir" && "$go" list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)
for tool in crictl critest ginkgo; do
    v=$version
    package="sigs.k8s.io/cri-tools/cmd/$tool"
    if [[ $tool == ginkgo ]]; then
        v=$ginkgo_version
        package=github.com/onsi/ginkgo/v2/ginkgo
    fi
    cached="${RAUHA_CACHE:-/var/cache/rauha}/$tool/$v/$tool"
    if [[ -x "$cached" ]]; then
        echo "== $tool $v cached ($cached)"
    else
        echo "== building $tool $v with $("$go" version)"
        mkdir -p "$(dirname "$cached")"
        tmp="$cached.tmp.$$"
        trap 'rm -f "$tmp"' EXIT
        start=$SECONDS
        build=(build)
        [[ $tool == critest ]] && build=(test -c)
        (cd "$moddir" && "$go" "${build[@]}" -mod=readonly -trimpath \
            -ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$version" \
            -o "$tmp" "$package")
        # Renamed into place so an interrupted build never leaves a "fresh" binary.
        mv -f "$tmp" "$cached"
        trap - EXIT
        echo "== built $tool $v in $((SECONDS - start))s"
    fi
    mkdir -p "$root/target/tools"
    ln -sfn "$cached" "$root/target/tools/$tool"
done
"$out" --version
