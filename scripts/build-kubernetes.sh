#!/usr/bin/env bash
# Builds the upstream Kubernetes commands scripts/cluster.sh runs
# (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl)
# from the version pinned in e2e/go/kubernetes/go.mod, once per version, into
# a cache outside the clone: $RAUHA_CACHE (default /var/cache/rauha)
# /kubernetes/<version>/. target/tools/kubernetes links to it. A cold build
# takes about 6 minutes on two cores; later runs, and fresh clones on the
# same machine, reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
moddir="$root/e2e/go/kubernetes"
cache="${RAUHA_CACHE:-/var/cache/rauha}"
commands=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

me=build-kubernetes
source "$root/scripts/go-env.sh"

cd "$moddir"
version=$("$go" list -m -f '{{.Version}}' k8s.io/kubernetes)
out="$cache/kubernetes/$version"
missing=()
for cmd in "${commands[@]}"; do
    [[ -x "$out/$cmd" ]] || missing+=("$cmd")
done
if ((${#missing[@]} == 0)); then
    echo "== Kubernetes $version cached ($out)" >&2
else
    echo "== building Kubernetes $version (${missing[*]}) with $("$go" version); about 6 minutes cold" >&2
    mkdir -p "$out"
    start=$SECONDS
    major=${version#v}; major=${major%%.*}
    minor=${version#v*.}; minor=${minor%%.*}
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean"
    done
    for cmd in "${missing[@]}"; do
        tmp="$out/$cmd.tmp.$$"
        trap 'rm -f "$tmp"' EXIT
        "$go" build -p 2 -mod=readonly -trimpath -ldflags="$ldflags" \
            -o "$tmp" "k8s.io/kubernetes/cmd/$cmd"
        # Renamed into place: an interrupted build never leaves a binary
        # that looks built.
        mv -f "$tmp" "$out/$cmd"
        trap - EXIT
        echo "== built $cmd ($((SECONDS - start))s so far)" >&2
    done
fi
mkdir -p "$root/target/tools"
ln -sfn "$out" "$root/target/tools/kubernetes"
"$out/kubectl" version --client >&2
