// Writes into the new root what makes it look installed from disk: NetworkManager keyfiles, hostname, machine-id,
// root's authorized keys, serial getty.
import { chmodSync, closeSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { mount, MS_BIND, MS_RDONLY, MS_REMOUNT } from "../sys/libc";
import type { ConsoleChoice } from "./console";
import type { IfaceConfig } from "./net";

export interface PersonalizeOptions {
  /** The new root (the overlay), e.g. /sysroot. */
  root: string;
  interfaces: IfaceConfig[];
  hostname?: string;
  console?: ConsoleChoice;
  /** Where to read interface MAC addresses; default /sys. */
  sysDir?: string;
  /** root's authorized_keys for the booted system (the site's admin keys). */
  authorizedKeys?: string;
  /** systemd machine id (32 lowercase hex), written to /etc/machine-id. */
  machineId?: string;
  /** The /run that switch_root moves into the new root (default /run): NetworkManager's hand-over state goes there. */
  runDir?: string;
  /** A systemd unit enabled for multi-user.target: [file name, text] (the boot reporter's airroot-booted.service). */
  unit?: [string, string];
}

const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/;

/**
 * A deterministic UUID (v5-shaped, SHA-1 over a namespace string) so the same node gets the same connection UUID
 * every boot, like an installed system whose keyfile never changes.
 */
export function stableUuid(seed: string): string {
  const h = new Bun.CryptoHasher("sha1").update(`airroot-nm:${seed}`).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = Buffer.from(h.subarray(0, 16)).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/**
 * A NetworkManager keyfile for the interface the node booted from. It matches by MAC address, not by name:
 * the initramfs calls it eth0, udev in the booted system may call it eno1. Connection name = initramfs name,
 * like the seed's `nmcli c` showing "eno1".
 */
export function nmKeyfile(c: IfaceConfig, mac: string): string {
  const lines = [
    "[connection]", `id=${c.iface}`, `uuid=${stableUuid(mac)}`, "type=ethernet", "autoconnect=true", "autoconnect-priority=100", "",
    "[ethernet]", `mac-address=${mac.toUpperCase()}`, "",
    "[ipv4]",
  ];
  if (c.method === "static" && c.address) {
    lines.push("method=manual", `address1=${c.address}/${c.prefix}${c.gateway ? `,${c.gateway}` : ""}`);
    if (c.dns?.length) lines.push(`dns=${c.dns.join(";")};`);
  } else if (c.method === "dhcp") {
    lines.push("method=auto");
  } else {
    lines.push("method=disabled");
  }
  lines.push("", "[ipv6]", "addr-gen-mode=eui64", "method=link-local", "");
  return lines.join("\n");
}

export interface PersonalizeResult {
  written: string[];
}

export function personalize(o: PersonalizeOptions): PersonalizeResult {
  const written: string[] = [];
  const put = (rel: string, text: string, mode = 0o644) => {
    const p = join(o.root, rel);
    mkdirSync(join(p, ".."), { recursive: true });
    writeFileSync(p, text, { mode });
    chmodSync(p, mode); // writeFileSync keeps the mode of an existing file
    written.push(rel);
  };
  for (const c of o.interfaces) {
    let mac = "";
    try { mac = readFileSync(join(o.sysDir ?? "/sys", "class/net", c.iface, "address"), "utf8").trim(); } catch {}
    if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)) continue; // InfiniBand and oddities: leave to the OS
    // NetworkManager ignores keyfiles readable by others.
    put(`etc/NetworkManager/system-connections/${c.iface}.nmconnection`, nmKeyfile(c, mac), 0o600);
    // Hand-over like NetworkManager's own initrd: a device state file naming the connection makes NM in the booted
    // system assume it as active (the address stays up: the root image is being read over it) instead of making an
    // "external" connection of its own.
    let ifindex = "";
    try { ifindex = readFileSync(join(o.sysDir ?? "/sys", "class/net", c.iface, "ifindex"), "utf8").trim(); } catch {}
    if (/^\d+$/.test(ifindex)) {
      const dir = join(o.runDir ?? "/run", "NetworkManager/devices");
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, ifindex), `[device]\nmanaged=true\nconnection-uuid=${stableUuid(mac)}\n`);
      written.push(`${join(o.runDir ?? "/run", "NetworkManager/devices", ifindex)}`);
    }
  }
  if (o.hostname) {
    if (!HOSTNAME.test(o.hostname) || o.hostname.length > 253) throw new Error(`hostname "${o.hostname.slice(0, 64)}" is not a valid host name`);
    put("etc/hostname", `${o.hostname}\n`);
  }
  if (o.authorizedKeys?.trim()) {
    mkdirSync(join(o.root, "root/.ssh"), { recursive: true, mode: 0o700 });
    chmodSync(join(o.root, "root/.ssh"), 0o700);
    put("root/.ssh/authorized_keys", o.authorizedKeys.endsWith("\n") ? o.authorizedKeys : o.authorizedKeys + "\n", 0o600);
  }
  if (o.machineId !== undefined) {
    if (!/^[0-9a-f]{32}$/.test(o.machineId)) throw new Error(`machine id "${o.machineId.slice(0, 40)}" is not 32 lowercase hex digits`);
    put("etc/machine-id", `${o.machineId}\n`, 0o444);
  }
  if (o.unit) {
    const [name, text] = o.unit;
    put(`etc/systemd/system/${name}`, text);
    enable(o.root, "multi-user.target.wants", name, `/etc/systemd/system/${name}`);
    written.push(`etc/systemd/system/multi-user.target.wants/${name}`);
  }
  // systemd starts a getty only on console= devices; an autodetected serial console needs one explicitly.
  if (o.console && o.console.source !== "cmdline") {
    const unit = `serial-getty@${o.console.tty}.service`;
    enable(o.root, "getty.target.wants", unit, "/lib/systemd/system/serial-getty@.service");
    written.push(`etc/systemd/system/getty.target.wants/${unit}`);
  }
  return { written };
}

/** `systemctl enable` by hand: a wants/ symlink (kept if present; lstat, as its target resolves only in the new root). */
function enable(root: string, wants: string, unit: string, target: string): void {
  const link = join(root, "etc/systemd/system", wants, unit);
  mkdirSync(join(link, ".."), { recursive: true });
  let present = false;
  try { lstatSync(link); present = true; } catch {}
  if (!present) symlinkSync(target, link);
}

/** Where the booted system finds airroot (on root's PATH; systemd's default PATH has it too). */
export const AIRROOT_IN_NEW_ROOT = "/usr/local/sbin/airroot";

/**
 * Makes the initramfs's airroot binary (the one the mount engine runs) the booted system's `airroot`, without copying
 * it into the RAM overlay: an empty file in the overlay, the binary bind-mounted read-only onto it. The mount moves
 * with the new root at switch_root. An image that ships its own file there gets it shadowed by the running version
 * (the one whose status socket and messages match). Returns the path inside the new root.
 */
export function bindAirroot(root: string, binary: string, at = AIRROOT_IN_NEW_ROOT): string {
  const target = join(root, at);
  mkdirSync(join(target, ".."), { recursive: true, mode: 0o755 });
  if (existsSync(target) && !lstatSync(target).isFile()) throw new Error(`${at} in the new root is not a regular file; not replacing it`);
  if (!existsSync(target)) closeSync(openSync(target, "w", 0o755));
  mount({ source: binary, target, fstype: null, flags: MS_BIND });
  mount({ source: binary, target, fstype: null, flags: MS_BIND | MS_REMOUNT | MS_RDONLY });
  return at;
}
