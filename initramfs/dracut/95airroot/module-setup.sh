#!/bin/bash
# dracut module "airroot": builds airroot's initramfs with dracut, for RHEL-family sites (same content as
# initramfs/build.ts: airroot as PID 1, busybox, sshd + ssh-keygen, the needed kernel modules, the site config).
#
# Tested by test/e2e/dracut.test.ts with dracut 059 (Debian's dracut-core, unpacked, not installed) booting in QEMU;
# not yet on a RHEL-family host.
#
# Install and build:
#   cp -r initramfs/dracut/95airroot /usr/lib/dracut/modules.d/
#   install -m 0755 dist/airroot /usr/bin/airroot          # busybox must be installed too (EPEL: busybox)
#   dracut --no-hostonly --force --modules "base airroot" \
#          --omit "systemd systemd-initrd dracut-systemd network network-manager" airroot-initramfs.img
# Like confluent's diskless module, the module list is exclusive so dracut's shell /init is PID 1; our cmdline hook
# then exec's `airroot init`, which stays PID 1 until it switches root.
# The site config (CA, image key, authorized_keys, server list from `airroot serve`) is taken from /etc/airroot/site
# (or $AIRROOT_SITE_DIR); only its top-level files are copied.

check() {
    require_binaries airroot busybox sshd ssh-keygen || return 1
    # Only when asked for explicitly: this module replaces the whole boot logic.
    return 255
}

depends() {
    echo base
}

installkernel() {
    # What airroot mounts with, then the NICs common in servers and VMs (missing ones are skipped by dracut).
    hostonly='' instmods fuse overlay squashfs loop
    hostonly='' instmods virtio_pci virtio_net virtio_blk virtio_scsi e1000 e1000e igb igc ixgbe i40e iavf ice \
        bnxt_en tg3 bnx2x qede mlx4_en mlx5_core r8169 vmxnet3 hv_netvsc ena gve sfc be2net
}

install() {
    inst_binary "$(command -v airroot)" /usr/bin/airroot
    # dracut-install does not pick up all of the Bun runtime's libraries (libpthread, libdl, libm): name them.
    local lib
    for lib in $(ldd "$(command -v airroot)" | awk '/=> \// {print $3}'); do
        inst_library "$lib"
    done
    # dracut strips every executable file at the end, which would cut the application out of the Bun executable
    # (it is appended to the runtime): keep it non-executable in the image; the hook makes it executable at boot.
    chmod 0644 "$initdir/usr/bin/airroot"
    inst_binary "$(command -v busybox)" /usr/bin/busybox
    # airroot calls "busybox ip", "busybox udhcpc", "busybox sh" itself: no applet links needed.
    inst_multiple sshd ssh-keygen
    inst_multiple -o /usr/libexec/openssh/sftp-server /usr/lib/openssh/sftp-server
    inst_dir /etc/ssh /var/empty /run/sshd /etc/airroot
    # sshd's privilege separation user; root's shell must exist for the debug sshd.
    grep -q '^sshd:' "$initdir/etc/passwd" 2>/dev/null || echo 'sshd:x:74:74:Privilege-separated SSH:/usr/share/empty.sshd:/sbin/nologin' >> "$initdir/etc/passwd"
    grep -q '^root:' "$initdir/etc/passwd" 2>/dev/null || echo 'root:x:0:0:root:/root:/bin/sh' >> "$initdir/etc/passwd"
    # The site config; AIRROOT_SITE_DIR overrides where it is taken from (the image path stays /etc/airroot/site).
    local site="${AIRROOT_SITE_DIR:-/etc/airroot/site}" f
    if [[ -d "$site" ]]; then
        inst_dir /etc/airroot/site
        for f in "$site"/*; do
            [[ -f "$f" ]] && inst_simple "$f" "/etc/airroot/site/${f##*/}"
        done
    fi
    inst_hook cmdline 00 "$moddir/airroot-exec.sh"
}
