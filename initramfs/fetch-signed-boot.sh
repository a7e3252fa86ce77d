#!/bin/bash
# Fetches a Debian suite's Secure Boot chain for network boot: shim signed by Microsoft's UEFI CA (shim-signed) and
# the network GRUB signed by Debian (grub-efi-amd64-signed's grubnetx64.efi.signed), unpacked into a cache dir as
# shimx64.efi and grubx64.efi (the name shim loads from the directory it was itself loaded from).
# Usage: initramfs/fetch-signed-boot.sh [CACHE_DIR] [SUITE]   (defaults .cache/kernel and trixie, like fetch-kernel.sh).
# Prints the directory; it holds shimx64.efi, grubx64.efi and `versions`. Idempotent.
#
# Why the node suite's and not the build host's: Debian 12's signed network GRUB (2.06) has no http module, so under
# UEFI HTTP boot (its prefix is then (http,SERVER)/grub) it can read nothing and stops at its prompt; Debian 13's
# (2.12) reads its config, the kernel and the initramfs over HTTP. MIRROR= and SECURITY_MIRROR= as in fetch-kernel.sh.
set -euo pipefail

cache="${1:-.cache/kernel}"
suite="${2:-${SUITE:-trixie}}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
security="${SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
case "$suite" in
  *[!a-z0-9-]*|"") echo "fetch-signed-boot: '$suite' is not a Debian suite name (e.g. trixie, bookworm)" >&2; exit 2 ;;
esac
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

me=fetch-signed-boot
# shellcheck source=initramfs/private-apt.sh
. "$(dirname "$0")/private-apt.sh"

ver() { apt-cache "${opts[@]}" policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}'; }
shim="$(ver shim-signed)"; grub="$(ver grub-efi-amd64-signed)"
if [ -z "$shim" ] || [ "$shim" = "(none)" ] || [ -z "$grub" ] || [ "$grub" = "(none)" ]; then
  echo "fetch-signed-boot: $suite has no shim-signed or grub-efi-amd64-signed for amd64; remove $apt/lists and retry" >&2
  exit 1
fi
dir="$cache/signed-boot/$suite-$(printf '%s_%s' "$shim" "$grub" | tr -c 'A-Za-z0-9.+_-' '_')"
if [ -f "$dir/.complete" ]; then
  echo "$dir"
  exit 0
fi

work="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
( cd "$work" && apt-get "${opts[@]}" download -q "shim-signed=$shim" "grub-efi-amd64-signed=$grub" >&2 ) || {
  echo "fetch-signed-boot: 'apt-get download shim-signed grub-efi-amd64-signed' ($suite) failed; check the network or set MIRROR=URL" >&2; exit 1; }
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
for f in usr/lib/shim/shimx64.efi.signed usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed; do
  [ -f "$work/root/$f" ] || { echo "fetch-signed-boot: the $suite packages hold no /$f" >&2; exit 1; }
done
rm -rf "$dir"
mkdir -p "$dir"
mv "$work/root/usr/lib/shim/shimx64.efi.signed" "$dir/shimx64.efi"
mv "$work/root/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed" "$dir/grubx64.efi"
printf 'suite %s\nshim-signed %s\ngrub-efi-amd64-signed %s\n' "$suite" "$shim" "$grub" > "$dir/versions"
touch "$dir/.complete"
echo "$dir"
