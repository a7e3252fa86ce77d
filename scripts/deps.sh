#!/usr/bin/env bash
# Installs everything airroot's build, demo and tests need on Debian 12, idempotently:
# Debian packages (real servers and tools the tests use), then Bun and node_modules from the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  ca-certificates curl openssl            # TLS tooling; curl is also the benchmark's speed limit
  nginx-light apache2                     # real image servers / mirrors
  lighttpd lighttpd-mod-openssl caddy     # the lighttpd (TLS is a separate module) and Caddy mirror configs, tested for real
  squashfs-tools util-linux kmod fio      # mksquashfs, losetup/mount, modules, random-read benchmark
  httpdirfs httpfs2                       # the HTTP filesystems `make bench` measures airroot against (bench/competitors.ts)
  swtpm swtpm-tools tpm2-tools            # software TPM and the reference TPM tools
  openssh-server openssh-client           # sshd/ssh-keygen/ssh for host keys and certificates
  qemu-system-x86 mmdebstrap zstd cpio    # whole-boot tests: root image, initramfs, VM
  iproute2 netcat-openbsd busybox-static  # network namespaces, guestfwd relays, initramfs shell
  rsync                                   # copies images to a mirror (the README walk-through)
  ipxe dnsmasq                            # network boot: Debian's iPXE binaries, a real DHCP/TFTP server for the PXE tests
  isc-dhcp-server                         # network boot: `dhcpd -t` checks the ISC config `serve dhcp-config isc` prints
  ovmf xorriso mtools dosfstools          # boot media: UEFI firmware for the tests, ISO/FAT image tools
  grub-pc-bin grub-efi-amd64-bin          # boot media: GRUB for BIOS and UEFI
  grub-efi-amd64-signed shim-signed sbsigntool  # Secure Boot: Debian's signed shim and GRUB, checking a UKI's signature (sbverify)
  systemd-boot-efi                        # signed UKI (airroot media uki): systemd-boot's EFI stub linuxx64.efi.stub
  osslsigncode                            # signed UKI: signs with a given signing time (-time), so the signed bytes are reproducible
  prometheus                              # promtool check metrics: the metrics tests parse /metrics and status --prometheus with it (its server is never started)
  postgresql                              # several servers sharing one database: the tests start their own PostgreSQL in a temporary directory (the system cluster is never started)
  nodejs                                  # encrypted images: Node.js's crypto (OpenSSL's AES-256-XTS) is the independent implementation the tests check ours against
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The servers among these are started by the tests on loopback ports of their own, never as system services: keep
  # dpkg from starting nginx, apache2, lighttpd, caddy, dhcpd, sshd, prometheus and postgresql on :80/:22/:9090/:5432
  # (where a machine has no policy of its own).
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

# Bun (pinned in package.json) and the JS dependencies, exactly as locked.
if [ ! -x node_modules/.bin/bun ] || ! node_modules/.bin/bun --version >/dev/null 2>&1 \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "deps: installing node_modules (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "deps: ok (bun $(node_modules/.bin/bun --version))"
