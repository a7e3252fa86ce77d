#!/bin/bash
# Fetches the Debian bookworm kernel named by linux-image-amd64 into a cache dir, unpacked, with modules.dep.
# Usage: initramfs/fetch-kernel.sh [CACHE_DIR]   (default .cache/kernel). Idempotent: a finished fetch is reused.
# Prints the kernel directory (CACHE_DIR/<version>) on stdout; it holds vmlinuz and lib/modules/<version>/.
set -euo pipefail

cache="${1:-.cache/kernel}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

# The meta package depends on exactly one versioned image package; that is the kernel we boot.
pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
if [ -z "$pkg" ]; then
  echo "fetch-kernel: apt-cache names no linux-image-6.x package for linux-image-amd64; run 'apt-get update' first" >&2
  exit 1
fi
version="${pkg#linux-image-}"
dir="$cache/$version"

# A completed fetch leaves a stamp; anything without it is redone from scratch (an interrupted run is not trusted).
if [ -f "$dir/.complete" ]; then
  echo "$dir"
  exit 0
fi

work="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
( cd "$work" && apt-get download -q "$pkg" >&2 ) || {
  echo "fetch-kernel: 'apt-get download $pkg' failed; check apt sources and network" >&2; exit 1; }
deb="$(ls "$work"/*.deb | head -n1)"
dpkg-deb -x "$deb" "$work/root"
[ -f "$work/root/boot/vmlinuz-$version" ] || { echo "fetch-kernel: $deb has no boot/vmlinuz-$version" >&2; exit 1; }
# The .deb ships no modules.dep/modules.alias; depmod generates them against the unpacked tree.
depmod -b "$work/root" "$version"

rm -rf "$dir"
mkdir -p "$dir/lib"
mv "$work/root/boot/vmlinuz-$version" "$dir/vmlinuz"
mv "$work/root/boot/config-$version" "$dir/config" 2>/dev/null || true
mv "$work/root/lib/modules" "$dir/lib/modules"
echo "$version" > "$dir/version"
touch "$dir/.complete"
echo "$dir"
