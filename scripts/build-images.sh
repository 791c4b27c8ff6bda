#!/usr/bin/env bash
# Builds Rauha's OCI images from this repo's binaries, with no Docker and
# no network:
#   rauha-node      rauha-node (the chart's node DaemonSet, which installs
#                   the others onto the host), rauhad,
#                   containerd-shim-rauha-v2 (static), the zone agent and
#                   the rauha CLI; no shell
#   rauha-operator  the operator, run as uid 65532
# Each image is one layer: a minimal root holding the binaries (stripped)
# and the shared libraries they load (from ldd), nothing else. The layer is
# a GNU tar with sorted names, every mtime 0 and every owner 0, added with
# umoci, the config's and history's times fixed: the same binaries give the
# same digest on any machine (`--check` builds twice and compares).
#
# Usage: scripts/build-images.sh [--bin-dir DIR] [--out DIR] [--tag TAG]
#                                [--push HOST:PORT] [--check]
#   --bin-dir  where the binaries are (default target/release; run
#              `cargo build --release` and `scripts/build-shim.sh --release`)
#   --out      where the OCI layouts go (default target/images)
#   --tag      the images' tag (default: the workspace's version)
#   --push     copy both to the registry at HOST:PORT (plain http: a
#              registry on loopback) as rauha/node:TAG and rauha/operator:TAG
#   --check    build each image twice and fail unless the digests match
# Prints one line per image: NAME TAG DIGEST.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bin_dir=target/release
out=target/images
tag=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
push=""
check=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --bin-dir) bin_dir=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --push) push=$2; shift 2 ;;
        --check) check=1; shift ;;
        *) echo "build-images: unknown argument $1 (see the usage at the top of $0)" >&2; exit 2 ;;
    esac
done
for tool in umoci tar strip ldd python3; do
    command -v "$tool" >/dev/null || {
        echo "build-images: $tool not found; run scripts/install-deps.sh" >&2
        exit 1
    }
done
[[ -z $push ]] || command -v skopeo >/dev/null || {
    echo "build-images: skopeo not found (needed for --push); run scripts/install-deps.sh" >&2
    exit 1
}
linked() { ldd "$1" 2>&1 || true; }  # (ldd fails on a static binary)
shim="$bin_dir/containerd-shim-rauha-v2"
if [[ -x $shim && $(linked "$shim") != *"statically linked"* ]]; then
    echo "build-images: $shim is linked dynamically; run scripts/build-shim.sh$([[ $bin_dir == *release* ]] && echo " --release") after cargo build" >&2
    exit 1
fi
for b in rauhad rauha rauha-guest-agent containerd-shim-rauha-v2 rauha-operator rauha-node; do
    [[ -x "$bin_dir/$b" ]] || {
        echo "build-images: $bin_dir/$b is missing; run cargo build --release && scripts/build-shim.sh --release (or give --bin-dir)" >&2
        exit 1
    }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The root of an image: binaries at /usr/local/bin (stripped), each shared
# library a binary loads at the path the loader looks it up by.
stage_root() { # root binary...
    local root=$1
    shift
    mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp"
    chmod 1777 "$root/tmp"
    local b lib
    for b in "$@"; do
        strip -o "$root/usr/local/bin/$(basename "$b")" "$b"
        while read -r lib; do
            [[ -e "$root$lib" ]] && continue
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done < <(ldd "$b" 2>/dev/null | grep -o '/[^ ]*' || true)
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
}

# One image from a staged root, in OCI layout $2 under tag $tag.
pack() { # root layout entrypoint user
    local root=$1 layout=$2 entrypoint=$3 user=$4
    rm -rf "$layout"
    find "$root" -exec touch -h -d @0 {} +
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
        -C "$root" -cf "$work/layer.tar" .
    umoci init --layout "$layout"
    umoci new --image "$layout:$tag"
    umoci raw add-layer --image "$layout:$tag" --history.created 1970-01-01T00:00:00Z \
        --history.created_by "scripts/build-images.sh" "$work/layer.tar"
    umoci config --image "$layout:$tag" --no-history \
        --created 1970-01-01T00:00:00Z \
        --config.entrypoint "$entrypoint" --config.user "$user" \
        --config.env PATH=/usr/local/bin:/usr/bin:/bin \
        --config.label "org.opencontainers.image.source=https://github.com/rauha-dev/rauha" \
        --config.label "org.opencontainers.image.version=$tag"
    umoci gc --layout "$layout"
    rm -f "$work/layer.tar"
}

# The manifest digest of $tag in an OCI layout.
digest_of() {
    python3 - "$1" "$tag" <<'EOF'
import json, sys
index = json.load(open(sys.argv[1] + "/index.json"))
for m in index["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
        print(m["digest"]); break
else:
    sys.exit("no manifest tagged " + sys.argv[2])
EOF
}

build() { # name layout
    local name=$1 layout=$2 root="$work/$1-root"
    rm -rf "$root"
    case $name in
        rauha-node)
            stage_root "$root" "$bin_dir/rauha-node" "$bin_dir/rauhad" "$bin_dir/rauha" \
                "$bin_dir/rauha-guest-agent" "$bin_dir/containerd-shim-rauha-v2"
            pack "$root" "$layout" /usr/local/bin/rauha-node 0:0
            ;;
        rauha-operator)
            stage_root "$root" "$bin_dir/rauha-operator"
            pack "$root" "$layout" /usr/local/bin/rauha-operator 65532:65532
            ;;
    esac
}

mkdir -p "$out"
for name in rauha-node rauha-operator; do
    build "$name" "$out/$name"
    digest=$(digest_of "$out/$name")
    if [[ $check == 1 ]]; then
        build "$name" "$work/again"
        again=$(digest_of "$work/again")
        if [[ $digest != "$again" ]]; then
            echo "build-images: $name is not reproducible: $digest, then $again" >&2
            exit 1
        fi
    fi
    if [[ -n $push ]]; then
        repo_name=${name#rauha-}
        skopeo copy --quiet --dest-tls-verify=false \
            "oci:$out/$name:$tag" "docker://$push/rauha/$repo_name:$tag" >&2
    fi
    echo "$name $tag $digest"
done
