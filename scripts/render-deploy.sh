#!/usr/bin/env bash
# Renders the Helm chart (charts/rauha) with its default values into plain
# manifests, for a cluster without Helm: deploy/kubernetes/rauha.yaml, in
# namespace rauha-system (made first). `kubectl apply -f` it, after
# pointing its images at your registry. The chart's test fails when the
# file is stale: run this after changing the chart.
# Usage: scripts/render-deploy.sh [--stdout]
set -euo pipefail
cd "$(dirname "$0")/.."
helm=target/tools/helm
[[ -x $helm ]] || {
    echo "render-deploy: $helm not found; run scripts/build-helm.sh" >&2
    exit 1
}
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
render() {
    cat <<'HEAD'
# Generated from charts/rauha by scripts/render-deploy.sh (helm template,
# default values, namespace rauha-system): do not edit. The same install as
# `helm install rauha charts/rauha -n rauha-system --create-namespace`,
# without helm uninstall's hook: to remove it, first delete the node
# DaemonSet in the foreground, so that each node pod takes Rauha off its
# node while its RBAC still exists:
#   kubectl -n rauha-system delete daemonset rauha-node --cascade=foreground
# then `kubectl delete -f` this file.
apiVersion: v1
kind: Namespace
metadata:
  name: rauha-system
HEAD
    HELM_CACHE_HOME=$home/cache HELM_CONFIG_HOME=$home/config HELM_DATA_HOME=$home/data \
        "$helm" template rauha charts/rauha --namespace rauha-system --no-hooks
}
if [[ ${1:-} == --stdout ]]; then
    render
else
    render >deploy/kubernetes/rauha.yaml
    echo deploy/kubernetes/rauha.yaml
fi
