#!/bin/bash
# Fetches the Debian kernel named by a suite's linux-image-amd64 into a cache dir, unpacked, with modules.dep.
# Usage: initramfs/fetch-kernel.sh [CACHE_DIR] [SUITE]   (defaults .cache/kernel and trixie; SUITE=... in the
# environment works too). Idempotent: a finished fetch is reused. Prints the kernel directory (CACHE_DIR/<version>)
# on stdout; it holds vmlinuz, lib/modules/<version>/ and `suite`.
#
# The node kernel's suite is this script's one setting (trixie = Debian 13, kernel 6.12: FUSE_NOTIFY_RESEND needs
# 6.9). The build host may run another release (Debian 12 here): the suite's package lists are fetched into
# CACHE_DIR/apt/SUITE with apt's own options, so the host's apt sources and state are never touched.
# MIRROR=URL picks the Debian mirror (default http://deb.debian.org/debian; the security suite comes from
# SECURITY_MIRROR, default http://deb.debian.org/debian-security). Lists are refreshed when a day old.
set -euo pipefail

cache="${1:-.cache/kernel}"
suite="${2:-${SUITE:-trixie}}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
security="${SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
case "$suite" in
  *[!a-z0-9-]*|"") echo "fetch-kernel: '$suite' is not a Debian suite name (e.g. trixie, bookworm)" >&2; exit 2 ;;
esac
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

me=fetch-kernel
# shellcheck source=initramfs/private-apt.sh
. "$(dirname "$0")/private-apt.sh"

# The meta package depends on exactly one versioned image package; that is the kernel we boot.
pkg="$(apt-cache "${opts[@]}" depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
if [ -z "$pkg" ]; then
  echo "fetch-kernel: $suite's linux-image-amd64 names no linux-image-6.x package; remove $apt/lists and retry" >&2
  exit 1
fi
version="${pkg#linux-image-}"
version="${version%-unsigned}"
dir="$cache/$version"

# A completed fetch leaves a stamp; anything without it is redone from scratch (an interrupted run is not trusted).
if [ -f "$dir/.complete" ]; then
  echo "$dir"
  exit 0
fi

work="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
( cd "$work" && apt-get "${opts[@]}" download -q "$pkg" >&2 ) || {
  echo "fetch-kernel: 'apt-get download $pkg' ($suite) failed; check the network or set MIRROR=URL" >&2; exit 1; }
deb="$(ls "$work"/*.deb | head -n1)"
dpkg-deb -x "$deb" "$work/root"
# trixie ships modules under usr/lib (merged /usr), bookworm under lib.
mods="$work/root/lib/modules"
[ -d "$mods" ] || mods="$work/root/usr/lib/modules"
[ -f "$work/root/boot/vmlinuz-$version" ] || { echo "fetch-kernel: $deb has no boot/vmlinuz-$version" >&2; exit 1; }
[ -d "$mods/$version" ] || { echo "fetch-kernel: $deb has no modules for $version" >&2; exit 1; }

rm -rf "$dir"
mkdir -p "$dir/lib"
mv "$work/root/boot/vmlinuz-$version" "$dir/vmlinuz"
mv "$work/root/boot/config-$version" "$dir/config" 2>/dev/null || true
mv "$mods" "$dir/lib/modules"
# The .deb ships no modules.dep/modules.alias; depmod generates them against the unpacked tree.
depmod -b "$dir" "$version"
echo "$version" > "$dir/version"
echo "$suite" > "$dir/suite"
touch "$dir/.complete"
echo "$dir"
