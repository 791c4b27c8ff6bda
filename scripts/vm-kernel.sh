#!/usr/bin/env bash
# Fetches Debian's 6.1 kernel (CONFIG_BPF_LSM=y, BTF, cgroup v2) for the e2e
# VM tests (e2e/src/vm.rs), and installs what booting it needs. As root.
#
#   scripts/vm-kernel.sh [DEST_DIR]      (default: target/vm/kernel)
#
# Leaves:
#   DEST_DIR/vmlinuz    the kernel image (bzImage, XZ-compressed)
#   DEST_DIR/vmlinux    the same kernel uncompressed (an ELF with a PVH entry:
#                       QEMU boots it directly, skipping the ~3 s the XZ
#                       decompression takes under TCG)
#   DEST_DIR/version    its release, e.g. 6.1.0-56-amd64
#   DEST_DIR/package    the package name and version it came from
#   DEST_DIR/tree/      the unpacked package (lib/modules/<version>/...)
#
# Idempotent: when the kernel is there and the packages are installed, a
# second run does nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-"$here/target/vm/kernel"}

# qemu-system-x86: qemu-system-x86_64; busybox-static: the guest's userland;
# binutils: strip (shrinks the debug binaries copied into the initramfs);
# xz-utils: unpacks vmlinux from vmlinuz.
need=(qemu-system-x86 busybox-static binutils xz-utils)

missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

have_kernel() {
  [ -s "$dest/vmlinuz" ] && [ -s "$dest/vmlinux" ] && [ -s "$dest/version" ]
}

if [ "${#missing[@]}" -eq 0 ] && have_kernel; then
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "vm-kernel: run as root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

# The newest linux-image-6.1.0-N-amd64 that apt can download (not -dbg,
# -unsigned, -cloud or -rt).
newest_kernel() {
  apt-cache pkgnames linux-image-6.1.0- 2>/dev/null |
    grep -E '^linux-image-6\.1\.0-[0-9]+-amd64$' |
    sort -V -r |
    while read -r pkg; do
      cand=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
      if [ -n "$cand" ] && [ "$cand" != "(none)" ]; then
        echo "$pkg"
        return 0
      fi
    done
}

updated=0
if [ "${#missing[@]}" -gt 0 ]; then
  echo "vm-kernel: installing ${missing[*]}" >&2
  apt-get update -qq
  updated=1
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# vmlinux: the XZ stream inside the bzImage, decompressed (xz reports the
# bytes after the stream as garbage: the output is still whole, so check it).
extract_vmlinux() {
  local image=$1 out=$2 off
  off=$(LC_ALL=C grep -abo $'\xfd7zXZ' "$image" | head -n1 | cut -d: -f1 || true)
  if [ -z "$off" ]; then
    echo "vm-kernel: no XZ stream in $image" >&2
    return 1
  fi
  tail -c +"$((off + 1))" "$image" | xz -dc >"$out.new" 2>/dev/null || true
  if [ "$(head -c 4 "$out.new" | od -An -tx1 | tr -d ' \n')" != 7f454c46 ]; then
    echo "vm-kernel: $image did not unpack to an ELF vmlinux" >&2
    rm -f "$out.new"
    return 1
  fi
  mv "$out.new" "$out"
}

if have_kernel; then
  exit 0
fi
if [ -s "$dest/vmlinuz" ] && [ -s "$dest/version" ]; then
  extract_vmlinux "$dest/vmlinuz" "$dest/vmlinux"
  exit 0
fi

pkg=$(newest_kernel || true)
if [ -z "$pkg" ] && [ "$updated" = 0 ]; then
  apt-get update -qq
  pkg=$(newest_kernel || true)
fi
if [ -z "$pkg" ]; then
  echo "vm-kernel: apt knows no linux-image-6.1.0-*-amd64 package (is bookworm in sources.list?)" >&2
  exit 1
fi

mkdir -p "$dest"
work=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "vm-kernel: fetching $pkg" >&2
# apt's sandbox user cannot write to a root-only directory: download as root.
(cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
deb=$(ls "$work"/*.deb)
dpkg-deb -x "$deb" "$work/tree"

image=$(ls "$work"/tree/boot/vmlinuz-* | head -n1)
version=${image##*/vmlinuz-}
if [ ! -s "$image" ] || [ -z "$version" ]; then
  echo "vm-kernel: $deb holds no /boot/vmlinuz-*" >&2
  exit 1
fi

rm -rf "$dest/tree"
mv "$work/tree" "$dest/tree"
cp "$dest/tree/boot/vmlinuz-$version" "$dest/vmlinuz.new"
echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" >"$dest/package"
extract_vmlinux "$dest/vmlinuz.new" "$dest/vmlinux"
echo "$version" >"$dest/version.new"
# vmlinuz and version last, so a half-done run is redone.
mv "$dest/vmlinuz.new" "$dest/vmlinuz"
mv "$dest/version.new" "$dest/version"
echo "vm-kernel: $version in $dest" >&2
