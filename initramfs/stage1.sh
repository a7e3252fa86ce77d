#!/usr/bin/busybox sh
# /init of the boot media's first stage (initramfs/build.ts --stage1, `airroot media iso`): the media carries the
# kernel, this small initramfs (busybox, curl, zstd, NIC modules, the site directory) and the SHA-256 of the full
# airroot initramfs. This script brings the network up, fetches that initramfs from the site's servers over HTTPS
# (certificate checked against the site CA), checks its size and SHA-256 against the digest recorded on the media,
# unpacks it over this root and hands over to its /init, so `airroot init` runs as PID 1 exactly as after a network
# boot. No byte of the fetched file is used before its digest matched. Every wait is bounded.
export PATH=/usr/bin:/usr/sbin
SITE=/etc/airroot/site
WANT=/etc/airroot/stage2   # "SHA256 SIZE PATH" written by `airroot media`
say() { echo "airroot media: $*"; }

/usr/bin/busybox mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev 2>/dev/null

cmdline="$(cat /proc/cmdline)"
param() { # the last NAME=VALUE of the command line
  v=""; for w in $cmdline; do case "$w" in "$1="*) v="${w#*=}";; esac; done; echo "$v"
}
flag() { for w in $cmdline; do [ "$w" = "$1" ] && return 0; done; return 1; }

give_up() {
  say "FAILED: $*"
  if [ "$(param airroot.rescue)" = poweroff ]; then say "powering off (airroot.rescue=poweroff)"; poweroff -f; fi
  say "a shell on the console; fix and 'exit' to retry the whole first stage"
  setsid cttyhack sh
  exec /init
}

[ -r "$WANT" ] || give_up "$WANT is missing: this media was not built by 'airroot media'"
read -r want_sha want_size want_path < "$WANT"
case "$want_sha" in *[!0-9a-f]*|"") give_up "$WANT holds no SHA-256";; esac
[ ${#want_sha} -eq 64 ] || give_up "$WANT holds no SHA-256"
case "$want_size" in *[!0-9]*|"") give_up "$WANT holds no size";; esac
case "$want_path" in /*) ;; *) give_up "$WANT holds no URL path";; esac
say "first stage: fetching the airroot initramfs (${want_size} bytes, sha256 ${want_sha}) from the site's servers"

# Drivers: modules for the devices present, twice (virtio_pci creates the virtio devices virtio_net binds to).
for pass in 1 2; do
  for a in $(cat /sys/bus/*/devices/*/modalias 2>/dev/null | sort -u); do modprobe -q "$a" 2>/dev/null; done
done

# Network: airroot.ip=IFACE:ADDR/PREFIX[:GATEWAY], none, or DHCP on every link with carrier (as airroot init does).
ifaces=""
ipp="$(param airroot.ip)"
case "$ipp" in
  none) give_up "airroot.ip=none: the first stage needs the network to fetch the initramfs";;
  ""|dhcp)
    for d in /sys/class/net/*; do n="${d##*/}"; [ "$n" = lo ] && continue; ip link set "$n" up; ifaces="$ifaces $n"; done
    [ -n "$ifaces" ] || give_up "no network interface (no driver for this NIC in the first stage?)"
    sleep 2
    got=""
    for n in $ifaces; do
      [ "$(cat /sys/class/net/$n/carrier 2>/dev/null)" = 1 ] || continue
      if udhcpc -i "$n" -n -q -f -t 8 -T 2 -s /etc/airroot/udhcpc.sh >/dev/null 2>&1; then got="$n"; break; fi
    done
    [ -n "$got" ] || give_up "no DHCPv4 lease on:$ifaces"
    say "network: $(ip -4 -o addr show dev "$got" | awk '{print $2, $4}')";;
  *)
    n="${ipp%%:*}"; rest="${ipp#*:}"; addr="${rest%%:*}"; gw=""; [ "$rest" != "$addr" ] && gw="${rest#*:}"
    ip link set "$n" up 2>/dev/null || give_up "airroot.ip=$ipp: no interface $n"
    ip addr add "$addr" dev "$n" || give_up "airroot.ip=$ipp: cannot set $addr on $n"
    [ -n "$gw" ] && { ip route add default via "$gw" dev "$n" || give_up "airroot.ip=$ipp: cannot route via $gw"; }
    ifaces="$n"; sleep 2
    say "network: $n $addr${gw:+ via $gw} (airroot.ip)";;
esac

# Servers: airroot.server (comma-separated), else the site's servers list; https only, tried in order.
servers="$(param airroot.server | tr ',' ' ')"
[ -n "$servers" ] || servers="$(grep -v -e '^#' -e '^[[:space:]]*$' $SITE/servers 2>/dev/null)"
[ -n "$servers" ] || give_up "no server: neither airroot.server= nor $SITE/servers"
[ -r $SITE/ca.pem ] || give_up "$SITE/ca.pem is missing: the servers' certificates cannot be checked"

ok=""
f0=$(cut -d' ' -f1 /proc/uptime)
for round in 1 2 3 4 5 6; do
  for s in $servers; do
    case "$s" in https://*) ;; *) say "skipping $s: not https"; continue;; esac
    url="${s%/}$want_path"
    rm -f /stage2
    if curl -q --fail --silent --show-error --cacert $SITE/ca.pem --connect-timeout 10 --max-time 600 \
        --max-filesize "$want_size" -o /stage2 "$url" 2>/tmp/curl.err; then
      size=$(stat -c %s /stage2)
      sha=$(sha256sum /stage2 | cut -d' ' -f1)
      if [ "$size" = "$want_size" ] && [ "$sha" = "$want_sha" ]; then ok="$url"; break 2; fi
      say "$url: sha256 $sha, $size bytes: not the initramfs this media was built for (sha256 $want_sha, $want_size bytes); rebuild the media or install that initramfs with 'airroot serve boot-files'"
    else
      say "$url: $(tail -n1 /tmp/curl.err)"
    fi
  done
  [ $round -lt 6 ] && { say "retrying in $((round * 5)) s"; sleep $((round * 5)); }
done
rm -f /stage2.part
[ -n "$ok" ] || { rm -f /stage2; give_up "no server gave the initramfs with sha256 $want_sha"; }
say "fetched $ok in $(awk -v a="$f0" '{printf "%.1f", $1 - a}' /proc/uptime) s, sha256 verified"

# Hand a clean network to airroot init (it configures the links itself), then unpack and run the real /init.
killall udhcpc 2>/dev/null
for n in $ifaces; do ip addr flush dev "$n"; ip route flush dev "$n" 2>/dev/null; ip link set "$n" down; done
case "$(head -c 4 /stage2 | od -An -tx1 | tr -d ' ')" in
  28b52ffd) unpack="zstd -dc /stage2";;
  fd377a58) unpack="unxz -c /stage2";;
  *) give_up "the fetched initramfs is neither zstd nor xz";;
esac
umount /sys; umount /dev 2>/dev/null
t0=$(cut -d' ' -f1 /proc/uptime)
$unpack | cpio -i -d -m -u 2>/tmp/cpio.err || give_up "unpacking the initramfs: $(tail -n1 /tmp/cpio.err)"
rm -f /stage2
say "unpacked in $(awk -v a="$t0" '{printf "%.1f", $1 - a}' /proc/uptime) s; starting airroot"
umount /proc
exec /init
