#!/usr/bin/env bash
# Builds helm from the version pinned in e2e/go/helm/go.mod
# (helm.sh/helm/v4), once per version, into $RAUHA_CACHE (default
# /var/cache/rauha)/helm/<version>/helm, linked from target/tools/helm:
# the chart's tests run it (helm lint, helm template, helm install). GOPATH
# and GOCACHE stay at Go's defaults (outside the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
moddir="$root/e2e/go/helm"

me=build-helm
source "$root/scripts/go-env.sh"

version=$(cd "$moddir" && "$go" list -m -f '{{.Version}}' helm.sh/helm/v4)
cached="${RAUHA_CACHE:-/var/cache/rauha}/helm/$version/helm"
if [[ -x "$cached" ]]; then
    echo "== helm $version cached ($cached)"
else
    echo "== building helm $version with $("$go" version)"
    mkdir -p "$(dirname "$cached")"
    tmp="$cached.tmp.$$"
    trap 'rm -f "$tmp"' EXIT
    start=$SECONDS
    (cd "$moddir" && "$go" build -mod=readonly -trimpath \
        -ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
        -o "$tmp" helm.sh/helm/v4/cmd/helm)
    # Renamed into place: an interrupted build never leaves a "fresh" binary.
    mv -f "$tmp" "$cached"
    trap - EXIT
    echo "== built helm $version in $((SECONDS - start))s"
fi
mkdir -p "$root/target/tools"
ln -sfn "$cached" "$root/target/tools/helm"
"$root/target/tools/helm" version --short
