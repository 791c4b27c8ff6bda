#!/usr/bin/env bash
# A real one-node Kubernetes cluster with Rauha, on this machine, as root:
#
#   eval "$(scripts/cluster.sh up)"   # then kubectl works
#   scripts/cluster.sh status
#   scripts/cluster.sh down           # removes everything up made
#
# Under one state dir ($RAUHA_CLUSTER_DIR, default /var/lib/rauha-cluster):
# etcd (Debian's etcd-server), kube-apiserver, kube-controller-manager,
# kube-scheduler and a kubelet (upstream binaries built once per version by
# scripts/build-kubernetes.sh), a private containerd 2.x (under a small
# supervisor that starts it again when it exits: the chart restarts it) with
# the CNI bridge, a registry on 127.0.0.1 holding rauha/busybox:latest, an
# nginx stand-in, the pause image and Rauha's own images
# (scripts/build-images.sh), and Rauha installed as a user would: with
# `helm install` of charts/rauha (release rauha, namespace rauha-system),
# whose node DaemonSet puts the shim and rauhad on this node and the `rauha`
# handler into containerd's config. Everything listens on 127.0.0.1. `up` is idempotent: what runs
# already is left alone. Progress goes to stderr; stdout is only the
# `export` lines (kubectl's PATH, KUBECONFIG, RAUHA_REGISTRY, and RAUHA_ADDR
# for `rauha` against the node's rauhad). A non-root user prefixes sudo.
#
# RAUHA_BIN_DIR: where rauhad, the shim (static) and the operator are
# (default: target/release, built with cargo build --release and
# scripts/build-shim.sh --release when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
dir=${RAUHA_CLUSTER_DIR:-/var/lib/rauha-cluster}
bin=${RAUHA_BIN_DIR:-$repo/target/release}
kube=$repo/target/tools/kubernetes
ctrd=$repo/target/tools/containerd2
release=rauha
namespace=rauha-system
node=$(hostname)
# Subnets that overlap no host route (checked at `up`).
pod_subnet=${RAUHA_CLUSTER_POD_SUBNET:-10.244.0.0/24}
service_range=10.96.0.0/16
etcd_port=23790
api_port=16443
registry_port=${RAUHA_CLUSTER_REGISTRY_PORT:-15000}
bridge=rauha-cni0
cgroup_parent=rauha-cluster
pin_dir=/sys/fs/bpf/rauha-cluster

say() { echo "cluster: $*" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }

pidfile() { echo "$dir/run/$1.pid"; }
running() { local p; p=$(cat "$(pidfile "$1")" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }

# start NAME CMD...: runs CMD in the background (its own session), logging
# to logs/NAME.log, unless NAME runs already.
start() {
    local name=$1; shift
    if running "$name"; then return 0; fi
    setsid "$@" </dev/null >>"$dir/logs/$name.log" 2>&1 &
    echo $! >"$(pidfile "$name")"
    say "started $name (pid $!; log $dir/logs/$name.log)"
}

stop() {
    local name=$1 p
    p=$(cat "$(pidfile "$name")" 2>/dev/null) || return 0
    if kill -0 "$p" 2>/dev/null; then
        kill "$p" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    fi
    rm -f "$(pidfile "$name")"
}

# wait_for NAME SECONDS CMD...: until CMD succeeds; fails at once when the
# process NAME started is gone (with the end of its log).
wait_for() {
    local what=$1 secs=$2; shift 2
    for _ in $(seq $((secs * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        if [[ -f "$(pidfile "$what")" ]] && ! running "$what"; then
            tail -5 "$dir/logs/$what.log" >&2
            die "$what exited; its log: $dir/logs/$what.log"
        fi
        sleep 0.1
    done
    die "$what did not come up within ${secs}s; see $dir/logs/$what.log"
}

kubectl() { "$kube/kubectl" --kubeconfig "$dir/pki/admin.kubeconfig" "$@"; }

# cert NAME CN [O] [SANS]: a key and a certificate signed by the cluster CA.
cert() {
    local name=$1 cn=$2 org=${3:-} sans=${4:-}
    [[ -s "$dir/pki/$name.crt" ]] && return 0
    local subj="/CN=$cn"
    [[ -n "$org" ]] && subj="/O=$org$subj"
    local ext="$dir/pki/$name.ext"
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        if [[ -n "$sans" ]]; then
            echo "extendedKeyUsage=serverAuth,clientAuth"
            echo "subjectAltName=$sans"
        else
            echo "extendedKeyUsage=clientAuth"
        fi
    } >"$ext"
    openssl genrsa -out "$dir/pki/$name.key" 2048 2>/dev/null
    openssl req -new -key "$dir/pki/$name.key" -subj "$subj" -out "$dir/pki/$name.csr" 2>/dev/null
    openssl x509 -req -in "$dir/pki/$name.csr" -CA "$dir/pki/ca.crt" -CAkey "$dir/pki/ca.key" \
        -CAcreateserial -days 3650 -extfile "$ext" -out "$dir/pki/$name.crt" 2>/dev/null
    rm -f "$dir/pki/$name.csr" "$ext"
}

# kubeconfig NAME: for the client certificate NAME.
kubeconfig() {
    local name=$1
    cat >"$dir/pki/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rauha
  cluster:
    certificate-authority: $dir/pki/ca.crt
    server: https://127.0.0.1:$api_port
users:
- name: $name
  user:
    client-certificate: $dir/pki/$name.crt
    client-key: $dir/pki/$name.key
contexts:
- name: rauha
  context: {cluster: rauha, user: $name}
current-context: rauha
EOF
}

overlaps_host_route() {
    python3 - "$1" <<'EOF'
import ipaddress, subprocess, sys
net = ipaddress.ip_network(sys.argv[1])
for line in subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout.splitlines():
    dst = line.split()[0]
    # The cluster's own bridge (a second `up`) is no conflict.
    if dst == "default" or " dev rauha-cni0 " in f" {line} ":
        continue
    if net.overlaps(ipaddress.ip_network(dst, strict=False)):
        sys.exit(0)
sys.exit(1)
EOF
}

up() {
    [[ $(id -u) == 0 ]] || die "run as root (a non-root user prefixes sudo)"
    for net in "$pod_subnet" "$service_range"; do
        if overlaps_host_route "$net"; then die "$net overlaps a route of this host (ip route); set RAUHA_CLUSTER_POD_SUBNET"; fi
    done
    command -v etcd >/dev/null || die "etcd is missing: scripts/install-deps.sh installs it"
    scripts/build-kubernetes.sh >&2
    scripts/build-containerd2.sh >&2
    scripts/build-helm.sh >&2
    local b missing=""
    for b in rauhad rauha rauha-guest-agent rauha-node rauha-operator containerd-shim-rauha-v2; do
        [[ -x "$bin/$b" ]] || missing+=" $b"
    done
    if [[ -n $missing ]] || ! ldd "$bin/containerd-shim-rauha-v2" 2>&1 | grep -q "statically linked"; then
        [[ -z "${RAUHA_BIN_DIR:-}" ]] ||
            die "$bin lacks${missing:- a static containerd-shim-rauha-v2}; run cargo build --bins and scripts/build-shim.sh"
        say "building Rauha (cargo build --release, scripts/build-shim.sh --release)"
        cargo build --release --bins >&2
        scripts/build-shim.sh --release >&2
    fi
    mkdir -p "$dir"/{run,logs,pki,etcd,registry,containerd,cni/net.d,kubelet,pod-logs,helm}
    chmod 700 "$dir"
    host_state

    # Certificates, once.
    if [[ ! -s "$dir/pki/ca.crt" ]]; then
        openssl genrsa -out "$dir/pki/ca.key" 2048 2>/dev/null
        openssl req -x509 -new -key "$dir/pki/ca.key" -subj "/CN=rauha-cluster-ca" -days 3650 \
            -out "$dir/pki/ca.crt" 2>/dev/null
        openssl genrsa -out "$dir/pki/sa.key" 2048 2>/dev/null
        openssl rsa -in "$dir/pki/sa.key" -pubout -out "$dir/pki/sa.pub" 2>/dev/null
    fi
    # A CA of its own for front-proxy (request header) clients: none of the
    # cluster's client certificates can claim to be a proxy.
    if [[ ! -s "$dir/pki/front-proxy-ca.crt" ]]; then
        openssl genrsa -out "$dir/pki/front-proxy-ca.key" 2048 2>/dev/null
        openssl req -x509 -new -key "$dir/pki/front-proxy-ca.key" -subj "/CN=rauha-front-proxy-ca" \
            -days 3650 -out "$dir/pki/front-proxy-ca.crt" 2>/dev/null
    fi
    cert apiserver kube-apiserver "" \
        "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:$node,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
    cert admin admin system:masters
    cert controller-manager system:kube-controller-manager
    cert scheduler system:kube-scheduler
    cert node "system:node:$node" system:nodes
    cert kubelet-serving "$node" "" "IP:127.0.0.1,DNS:$node,DNS:localhost"
    cert operator rauha-operator
    for k in admin controller-manager scheduler node operator; do kubeconfig "$k"; done

    start etcd etcd --name rauha --data-dir "$dir/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls http://127.0.0.1:$((etcd_port + 10)) \
        --initial-advertise-peer-urls http://127.0.0.1:$((etcd_port + 10)) \
        --initial-cluster "rauha=http://127.0.0.1:$((etcd_port + 10))"
    start kube-apiserver "$kube/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --secure-port "$api_port" --advertise-address 127.0.0.1 \
        --service-cluster-ip-range "$service_range" \
        --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
        --allow-privileged=true \
        --client-ca-file "$dir/pki/ca.crt" --requestheader-client-ca-file "$dir/pki/front-proxy-ca.crt" \
        --tls-cert-file "$dir/pki/apiserver.crt" --tls-private-key-file "$dir/pki/apiserver.key" \
        --kubelet-client-certificate "$dir/pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$dir/pki/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority "$dir/pki/ca.crt" \
        --kubelet-preferred-address-types Hostname \
        --service-account-key-file "$dir/pki/sa.pub" \
        --service-account-signing-key-file "$dir/pki/sa.key" \
        --service-account-issuer https://kubernetes.default.svc
    wait_for kube-apiserver 60 kubectl get --raw /readyz
    start kube-controller-manager "$kube/kube-controller-manager" \
        --kubeconfig "$dir/pki/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$dir/pki/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$dir/pki/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port 10257 --leader-elect=false \
        --service-account-private-key-file "$dir/pki/sa.key" --root-ca-file "$dir/pki/ca.crt" \
        --cluster-signing-cert-file "$dir/pki/ca.crt" --cluster-signing-key-file "$dir/pki/ca.key" \
        --use-service-account-credentials
    start kube-scheduler "$kube/kube-scheduler" \
        --kubeconfig "$dir/pki/scheduler.kubeconfig" \
        --authentication-kubeconfig "$dir/pki/scheduler.kubeconfig" \
        --authorization-kubeconfig "$dir/pki/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false

    # The registry, with the images the cluster runs.
    cat >"$dir/registry/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $dir/registry/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$registry_port}
EOF
    start registry docker-registry serve "$dir/registry/config.yml"
    wait_for registry 20 python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$registry_port/v2/')"
    local registry=127.0.0.1:$registry_port
    scripts/push-busybox-image.py "$registry" rauha/busybox:latest sh >/dev/null
    scripts/push-busybox-image.py "$registry" rauha/pause:latest sleep 2147483647 >/dev/null
    # An nginx stand-in (e2e/probes/web_server.c, static): serves :80 as
    # root, as an ordinary web server image does.
    cc -static -Os -o "$dir/web_server" e2e/probes/web_server.c
    scripts/push-busybox-image.py --add "$dir/web_server:/usr/sbin/nginx:755" \
        "$registry" rauha/nginx:stand-in /usr/sbin/nginx -p 80 -f /var/run/nginx.pid >/dev/null

    # Rauha's images, pinned by digest in the chart's values below.
    local images node_digest operator_digest
    images=$(scripts/build-images.sh --bin-dir "$bin" --out "$dir/images" --tag cluster --push "$registry")
    node_digest=$(awk '$1 == "rauha-node" {print $3}' <<<"$images")
    operator_digest=$(awk '$1 == "rauha-operator" {print $3}' <<<"$images")

    # containerd, without Rauha: the chart adds its handler (and restarts
    # containerd through $dir/restart-containerd). Written once: the chart
    # edits it.
    if [[ ! -s "$dir/containerd/config.toml" ]]; then
        write_containerd_config "$registry"
        # What helm uninstall must give back, byte for byte (the chart's test).
        cp "$dir/containerd/config.toml" "$dir/containerd/config.toml.before-rauha"
    fi
    write_containerd_restart
    # containerd 2.x's own runc shim (for runc's handler) before Debian's;
    # RAUHA_ADDR: where the chart's rauhad listens (node.socket).
    start containerd env PATH="$ctrd:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        RAUHA_ADDR="unix://$dir/rauhad.sock" bash -c '
            pidfile=$1; shift
            trap '"'"'kill $(cat "$pidfile") 2>/dev/null; exit 0'"'"' TERM INT
            while :; do
                "$@" &
                echo $! >"$pidfile"
                wait $!
                sleep 0.2
            done' supervise "$dir/run/containerd-daemon.pid" \
        "$ctrd/containerd" --config "$dir/containerd/config.toml"
    wait_for containerd 30 "$ctrd/ctr" --address "$dir/containerd/containerd.sock" version

    write_kubelet_config
    start kubelet "$kube/kubelet" --config "$dir/kubelet/config.yaml" \
        --kubeconfig "$dir/pki/node.kubeconfig" --root-dir "$dir/kubelet/root" \
        --hostname-override "$node" --v 1
    wait_for kubelet 60 sh -c "'$kube/kubectl' --kubeconfig '$dir/pki/admin.kubeconfig' get node '$node' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"

    # Rauha, through its chart: the node DaemonSet (the shim and rauhad on
    # this node, the handler in containerd's config, the ready label once
    # rauhad answers), the CRDs, the operator and the RuntimeClass.
    write_values "$registry" "$node_digest" "$operator_digest"
    say "helm upgrade --install $release charts/rauha -n $namespace -f $dir/values.yaml"
    helm upgrade --install "$release" charts/rauha --namespace "$namespace" --create-namespace \
        -f "$dir/values.yaml" --wait --timeout 5m >&2
    wait_for containerd 60 sh -c "'$kube/kubectl' --kubeconfig '$dir/pki/admin.kubeconfig' get node '$node' -o jsonpath='{.metadata.labels.rauha\.dev/ready}' | grep -qx true"
    # The operator's identity for a second replica started by hand (the
    # operator kill test's standby): the chart's roles, bound to the
    # client certificate's user.
    kubectl create clusterrolebinding rauha-operator-user --clusterrole "$release-operator" \
        --user rauha-operator --dry-run=client -o yaml | kubectl apply -f - >&2
    kubectl create rolebinding rauha-operator-user -n "$namespace" --role "$release-operator-lease" \
        --user rauha-operator --dry-run=client -o yaml | kubectl apply -f - >&2

    say "up: node $node Ready; kubectl, RAUHA_REGISTRY and KUBECONFIG below"
    echo "export PATH=$kube:\$PATH"
    echo "export RAUHA_REGISTRY=$registry"
    echo "export KUBECONFIG=$dir/pki/admin.kubeconfig"
    echo "export RAUHA_ADDR=unix://$dir/rauhad.sock"
}

helm() {
    HELM_CACHE_HOME=$dir/helm/cache HELM_CONFIG_HOME=$dir/helm/config HELM_DATA_HOME=$dir/helm/data \
        "$repo/target/tools/helm" --kubeconfig "$dir/pki/admin.kubeconfig" "$@"
}

# The chart's values for this cluster ($dir/values.yaml, which the chart's
# install test reuses): images from the local registry by digest, the API
# server's address (no service proxy here), one operator replica, and every
# path of Rauha's on the node under $dir.
write_values() {
    local registry=$1 node_digest=$2 operator_digest=$3
    cat >"$dir/values.yaml" <<EOF
image:
  registry: $registry
  tag: cluster
apiServer: 127.0.0.1:$api_port
operator:
  replicas: 1
  digest: $operator_digest
  zoneHolderImage: $registry/rauha/pause:latest
  metricsPort: 18080
  podDisruptionBudget: {enabled: false}
node:
  digest: $node_digest
  # This machine's init refuses a pod access to its namespaces.
  hostNamespacesOf: kubelet
  installDir: $dir/opt/rauha
  stateDir: $dir/rauha
  socket: $dir/rauhad.sock
  cgroupParent: $cgroup_parent
  bpfPinDir: $pin_dir
  terminationGracePeriodSeconds: 60
  containerd:
    config: $dir/containerd/config.toml
    stateDir: $dir/containerd/state
    dropInDir: ""
    restartCommand: [$dir/restart-containerd]
EOF
}

# The chart's node.containerd.restartCommand here: the supervisor starts
# containerd again once it exits; this waits until the new one answers.
write_containerd_restart() {
    cat >"$dir/restart-containerd" <<EOF
#!/bin/sh
pidfile=$dir/run/containerd-daemon.pid
old=\$(cat "\$pidfile")
kill "\$old"
i=0
while [ \$i -lt 300 ]; do
    new=\$(cat "\$pidfile" 2>/dev/null)
    if [ -n "\$new" ] && [ "\$new" != "\$old" ] &&
        "$ctrd/ctr" --address "$dir/containerd/containerd.sock" version >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.1
    i=\$((i + 1))
done
echo "containerd did not answer within 30s of its restart; see $dir/logs/containerd.log" >&2
exit 1
EOF
    chmod 755 "$dir/restart-containerd"
}

write_containerd_config() {
    local registry=$1
    mkdir -p "$dir/containerd/hosts/$registry"
    cat >"$dir/containerd/hosts/$registry/hosts.toml" <<EOF
server = "http://$registry"
[host."http://$registry"]
  capabilities = ["pull", "resolve"]
EOF
    cat >"$dir/cni/net.d/10-rauha-cluster.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "rauha-cluster", "plugins": [
  {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_subnet"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$dir/cni/ipam"}},
  {"type": "loopback"}]}
EOF
    cat >"$dir/containerd/config.toml" <<EOF
version = 3
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "$dir/containerd/containerd.sock"
[ttrpc]
  address = "$dir/containerd/ttrpc.sock"

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "$registry/rauha/pause:latest"
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = "$dir/containerd/hosts"
  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    disable_apparmor = true
    netns_mounts_under_state_dir = true
    # Without CAP_SYS_RESOURCE every sandbox fails otherwise (../shared/ENVIRONMENT.md).
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          Root = "$dir/containerd/runc"
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["/usr/lib/cni"]
      conf_dir = "$dir/cni/net.d"
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
EOF
}

write_kubelet_config() {
    mkdir -p "$dir/kubelet/root" "$dir/kubelet/volume-plugins"
    echo "nameserver 127.0.0.1" >"$dir/kubelet/resolv.conf"
    cat >"$dir/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
resolvConf: $dir/kubelet/resolv.conf
containerRuntimeEndpoint: unix://$dir/containerd/containerd.sock
volumePluginDir: $dir/kubelet/volume-plugins
podLogsDir: $dir/pod-logs
tlsCertFile: $dir/pki/kubelet-serving.crt
tlsPrivateKeyFile: $dir/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: Webhook}
serializeImagePulls: false
# A small CI disk must not taint the node.
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
EOF
}

# What the host looked like before the cluster: restored by `down`.
host_state() {
    [[ -s "$dir/host-state" ]] && return 0
    {
        for s in kernel.panic kernel.panic_on_oops vm.overcommit_memory; do
            echo "sysctl $s $(sysctl -n "$s")"
        done
        for d in /var/log/containers /var/log/pods /var/lib/kubelet /var/lib/cni; do
            [[ -e "$d" ]] && echo "existed $d"
        done
        for c in $(iptables -S 2>/dev/null | awk '$1 == "-N" {print $2}'); do echo "chain $c"; done
    } >"$dir/host-state"
}

down() {
    [[ $(id -u) == 0 ]] || die "run as root (a non-root user prefixes sudo)"
    [[ -d "$dir" ]] || { say "nothing to remove ($dir does not exist)"; return 0; }
    # Zones first, while the chart's rauhad still answers.
    local rauha=$bin/rauha
    [[ -x $rauha ]] || rauha=$dir/opt/rauha/bin/rauha
    if [[ -S "$dir/rauhad.sock" && -x $rauha ]]; then
        for z in $(RAUHA_ADDR="unix://$dir/rauhad.sock" timeout 10 "$rauha" zone list --json 2>/dev/null |
            python3 -c 'import json,sys; [print(z["name"]) for z in json.load(sys.stdin)]' 2>/dev/null); do
            RAUHA_ADDR="unix://$dir/rauhad.sock" timeout 20 "$rauha" zone delete "$z" >/dev/null 2>&1 || true
        done
    fi
    for p in kube-scheduler kube-controller-manager kubelet; do stop "$p"; done
    # Containers and their shims (runc's and Rauha's) of this containerd.
    stop containerd
    p=$(cat "$dir/run/containerd-daemon.pid" 2>/dev/null) && kill -9 "$p" 2>/dev/null || true
    pkill -9 -f "containerd-shim.*$dir/containerd" 2>/dev/null || true
    for p in registry kube-apiserver etcd; do stop "$p"; done
    # Whatever still runs in the pods' cgroups (runc containers), then the
    # cgroups themselves, deepest first, in every hierarchy.
    for root in /sys/fs/cgroup /sys/fs/cgroup/*; do
        for cg in "$root/kubepods" "$root/$cgroup_parent" "$root/$cgroup_parent-daemon"; do
            [[ -d "$cg" ]] || continue
            find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
            sleep 0.2
            find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
        done
    done
    # rauhad (the node pod's, gone with the pods' cgroups) had its shim
    # keeper start killed shims again: those go now.
    pkill -9 -f "containerd-shim.*$dir/containerd" 2>/dev/null || true
    # Mounts under the state dir (containerd's rootfs, netns, kubelet's
    # volumes), deepest first.
    { grep -o " $dir/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$pin_dir"
    ip link del "$bridge" 2>/dev/null || true
    # The veths CNI made (their host ends name the bridge as master).
    for v in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
        ip link del "$v" 2>/dev/null || true
    done
    if [[ -s "$dir/host-state" ]]; then
        while read -r kind a b; do
            [[ $kind == sysctl ]] && sysctl -qw "$a=$b" || true
        done <"$dir/host-state"
        for c in $(iptables -S 2>/dev/null | awk '$1 == "-N" {print $2}'); do
            grep -qx "chain $c" "$dir/host-state" && continue
            { iptables -S || true; } | awk -v c="$c" '$1 == "-A" && $0 ~ ("-j " c "( |$)") {sub("^-A", "-D"); print}' |
                while read -r rule; do eval "iptables $rule" 2>/dev/null || true; done
            iptables -F "$c" 2>/dev/null || true
            iptables -X "$c" 2>/dev/null || true
        done
        for d in /var/log/containers /var/log/pods /var/lib/kubelet /var/lib/cni; do
            grep -qx "existed $d" "$dir/host-state" || rm -rf "$d"
        done
    fi
    rm -rf "$dir"
    say "down: every process, mount, veth and cgroup of the cluster is gone"
}

status() {
    for p in etcd kube-apiserver kube-controller-manager kube-scheduler registry containerd kubelet; do
        if running "$p"; then echo "$p: running (pid $(cat "$(pidfile "$p")"))"; else echo "$p: not running"; fi
    done
    if running kube-apiserver; then
        kubectl get nodes -L rauha.dev/ready 2>&1 || true
        kubectl get pods -n "$namespace" -o wide 2>&1 || true
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: scripts/cluster.sh up|down|status  (eval \"\$(scripts/cluster.sh up)\" sets up kubectl)" >&2; exit 2 ;;
esac
