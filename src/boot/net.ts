// Network bring-up: links up, IPv6 link-local, then DHCPv4 through busybox udhcpc or a static address.
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { StaticIp } from "./cmdline";
import { LEASE_DIR, parseLease, udhcpcScript, type Lease } from "./lease";
import { FinalError } from "./sequence";

export interface NetOptions {
  ip: "dhcp" | "none" | StaticIp;
  dhcpTimeoutSec?: number;   // default 30
  carrierWaitSec?: number;   // default 10
  dhcpGraceMs?: number;      // after the first lease, how long other links may still get theirs (default 3000)
  busybox?: string;          // default "busybox" (from PATH)
  sysDir?: string;           // default /sys
  leaseDir?: string;         // default /run/airroot/net
  resolvConf?: string;       // default /etc/resolv.conf
  scriptDir?: string;        // where the udhcpc script is written (must allow exec); default /etc/airroot
  /** Interfaces to use; default physicalInterfaces() (virtual ones such as veth are left out). */
  interfaces?: string[];
  log?: (line: string) => void;
}

export interface IfaceConfig {
  iface: string;
  method: "dhcp" | "static" | "link-local";
  address?: string;
  prefix?: number;
  gateway?: string;
  dns?: string[];
  linkLocal?: string;
  lease?: Lease;
}

export interface NetResult {
  configured: IfaceConfig[];
  /** The console line: "Setting up eth0 via DHCP at 10.0.2.15/24". */
  summary: string;
}

/** Physical network interfaces: not loopback, not virtual (bridges, tunnels), Ethernet or InfiniBand. */
export function physicalInterfaces(sysDir = "/sys"): string[] {
  const dir = join(sysDir, "class/net");
  let names: string[] = [];
  try { names = readdirSync(dir); } catch { return []; }
  return names.filter((n) => {
    try {
      if (realpathSync(join(dir, n)).includes("/devices/virtual/")) return false;
      const type = readFileSync(join(dir, n, "type"), "utf8").trim();
      return type === "1" || type === "32"; // ARPHRD_ETHER, ARPHRD_INFINIBAND
    } catch {
      return false;
    }
  }).sort();
}

function run(cmd: string[], what: string): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${what}: ${cmd.join(" ")} failed: ${r.stderr.toString().trim() || `exit ${r.exitCode}`}`);
  return r.stdout.toString();
}

function hasCarrier(sysDir: string, iface: string): boolean {
  try { return readFileSync(join(sysDir, "class/net", iface, "carrier"), "utf8").trim() === "1"; } catch { return false; }
}

/** The IPv6 link-local address of an interface from /proc/net/if_inet6 ("fe80::...%eth0"), if it has one yet. */
export function linkLocalAddress(iface: string, ifInet6 = "/proc/net/if_inet6"): string | undefined {
  let text = "";
  try { text = readFileSync(ifInet6, "utf8"); } catch { return undefined; }
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    // hex address, ifindex, prefix len, scope (0x20 = link), flags (0x40 = tentative), name
    if (f.length < 6 || f[5] !== iface || f[3] !== "20" || !/^[0-9a-f]{32}$/.test(f[0])) continue;
    if ((parseInt(f[4], 16) & 0x40) !== 0) continue; // still doing duplicate address detection
    return compressIpv6(f[0].match(/.{4}/g)!.map((g) => g.replace(/^0+(?=.)/, ""))) + `%${iface}`;
  }
  return undefined;
}

/** RFC 5952 text form of 8 hex groups: the longest run of two or more zero groups becomes "::". */
export function compressIpv6(groups: string[]): string {
  let best = -1, bestLen = 0;
  for (let i = 0; i < groups.length;) {
    if (groups[i] !== "0") { i++; continue; }
    let j = i;
    while (j < groups.length && groups[j] === "0") j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

async function waitFor(cond: () => boolean, timeoutMs: number, stepMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (cond()) return true;
    await Bun.sleep(stepMs);
  }
  return cond();
}

/** Runs udhcpc once on one interface (it exits after a lease or after its retries); bounded by timeoutSec. */
async function dhcp(busybox: string, iface: string, script: string, leaseDir: string, timeoutSec: number, signal?: AbortSignal): Promise<Lease> {
  rmSync(join(leaseDir, `${iface}.lease`), { force: true });
  rmSync(join(leaseDir, `${iface}.fail`), { force: true });
  // -f foreground, -q quit after the lease (the booted OS's own client takes over), -n fail instead of retrying forever,
  // -t/-T discover count and spacing so the client gives up within the timeout.
  const tries = Math.max(1, Math.floor(timeoutSec / 2));
  const proc = Bun.spawn([busybox, "udhcpc", "-f", "-q", "-n", "-i", iface, "-s", script, "-t", String(tries), "-T", "2", "-A", "1"],
    { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), (timeoutSec + 2) * 1000);
  const onAbort = () => proc.kill("SIGKILL");
  signal?.addEventListener("abort", onAbort);
  const code = await proc.exited;
  clearTimeout(timer);
  signal?.removeEventListener("abort", onAbort);
  if (signal?.aborted) throw new Error(`DHCPv4 on ${iface} stopped: another interface already has a lease`);
  const leaseFile = join(leaseDir, `${iface}.lease`);
  if (code === 0 && existsSync(leaseFile)) return parseLease(readFileSync(leaseFile, "utf8"));
  const why = existsSync(join(leaseDir, `${iface}.fail`)) ? readFileSync(join(leaseDir, `${iface}.fail`), "utf8").trim() : "";
  const err = (await new Response(proc.stderr).text()).trim().split("\n").slice(-2).join("; ");
  if (/lease of .* obtained/.test(err))
    throw new Error(`udhcpc got a lease on ${iface} but the lease script could not apply it: ${err}`);
  throw new Error(`no DHCPv4 lease on ${iface} within ${timeoutSec} s${why ? ` (${why})` : ""}${err ? `: ${err}` : ""}`);
}

/** Brings the network up as the options say; throws (naming the interface) when no interface could be configured. */
export async function configureNetwork(o: NetOptions): Promise<NetResult> {
  const bb = o.busybox ?? "busybox";
  const sysDir = o.sysDir ?? "/sys";
  const leaseDir = o.leaseDir ?? LEASE_DIR;
  const log = o.log ?? (() => {});
  run([bb, "ip", "link", "set", "lo", "up"], "loopback");
  const ifaces = o.interfaces ?? physicalInterfaces(sysDir);
  if (ifaces.length === 0) throw new Error("no network interface found (is the NIC driver in the initramfs? see airroot.modules)");
  for (const i of ifaces) {
    // IPv6 link-local is always wanted: servers may be found and reached by it.
    try { writeFileSync(`/proc/sys/net/ipv6/conf/${i}/disable_ipv6`, "0"); } catch {}
    run([bb, "ip", "link", "set", i, "up"], `link ${i}`);
  }
  const withCarrier = async () => {
    await waitFor(() => ifaces.some((i) => hasCarrier(sysDir, i)), (o.carrierWaitSec ?? 10) * 1000);
    return ifaces.filter((i) => hasCarrier(sysDir, i));
  };

  const configured: IfaceConfig[] = [];
  if (o.ip === "dhcp") {
    const up = await withCarrier();
    if (up.length === 0) throw new Error(`no carrier on ${ifaces.join(", ")} after ${o.carrierWaitSec ?? 10} s: check cabling and switch ports`);
    mkdirSync(leaseDir, { recursive: true });
    // Not under /run: dracut mounts /run noexec.
    const scriptDir = o.scriptDir ?? "/etc/airroot";
    mkdirSync(scriptDir, { recursive: true });
    const script = join(scriptDir, "udhcpc.script");
    const bbPath = bb.startsWith("/") ? bb : Bun.which(bb);
    if (!bbPath) throw new FinalError(`${bb} not found in PATH: the initramfs needs busybox (ip, udhcpc)`);
    writeFileSync(script, udhcpcScript(leaseDir, o.resolvConf, bbPath));
    chmodSync(script, 0o755);
    // All links at once; once one has a lease the others get a short grace period, so a node with several cabled
    // NICs but DHCP on one network does not wait for every timeout.
    const ac = new AbortController();
    const attempts = up.map((i) => dhcp(bb, i, script, leaseDir, o.dhcpTimeoutSec ?? 30, ac.signal));
    let grace: ReturnType<typeof setTimeout> | undefined;
    for (const a of attempts) a.then(() => { grace ??= setTimeout(() => ac.abort(), o.dhcpGraceMs ?? 3000); }, () => {});
    const results = await Promise.allSettled(attempts);
    clearTimeout(grace);
    results.forEach((r, k) => {
      if (r.status === "fulfilled") {
        const l = r.value;
        configured.push({ iface: l.iface, method: "dhcp", address: l.address, prefix: l.prefix, gateway: l.routers[0], dns: l.dns, lease: l });
      } else log((r.reason as Error).message);
    });
    if (configured.length === 0) {
      const reasons = results.map((r) => (r.status === "rejected" ? (r.reason as Error).message : "")).filter(Boolean);
      throw new Error(reasons.join("; "));
    }
  } else if (o.ip !== "none") {
    const s = o.ip;
    if (!ifaces.includes(s.iface)) throw new FinalError(`static address for ${s.iface}, but the interfaces are ${ifaces.join(", ")}`);
    run([bb, "ip", "addr", "add", `${s.address}/${s.prefix}`, "dev", s.iface], `address on ${s.iface}`);
    if (s.gateway) run([bb, "ip", "route", "replace", "default", "via", s.gateway, "dev", s.iface], `default route on ${s.iface}`);
    configured.push({ iface: s.iface, method: "static", address: s.address, prefix: s.prefix, gateway: s.gateway });
  } else {
    for (const i of await withCarrier()) configured.push({ iface: i, method: "link-local" });
  }

  // Link-local addresses appear once duplicate address detection is over (about a second).
  for (const c of configured) {
    await waitFor(() => linkLocalAddress(c.iface) !== undefined, 3000);
    c.linkLocal = linkLocalAddress(c.iface);
  }
  const summary = configured.map((c) =>
    c.method === "dhcp" ? `Setting up ${c.iface} via DHCP at ${c.address}/${c.prefix}`
      : c.method === "static" ? `Setting up ${c.iface} as static at ${c.address}/${c.prefix}`
        : `Setting up ${c.iface} with link-local ${c.linkLocal ?? "(none yet)"}`).join("; ") || "no interface with carrier";
  return { configured, summary };
}

/** The server's network settings for this node (NodeConfig.network). */
export type ConfigNetwork = { mode: "dhcp" } | { mode: "static"; ip: string; gateway?: string; dns: string[] };

/**
 * Applies static settings from the server's node config after DHCP got the node to the server: the address (and
 * gateway) is added to the first configured interface, and that interface's entry becomes static so the booted
 * system's NetworkManager keyfile carries the server's settings. The DHCP address stays until the booted system's
 * NetworkManager takes over (connections to the servers keep working). Returns a console line, or undefined when the
 * config says DHCP or already matches. `airroot.ip` on the command line wins: callers skip this then.
 */
export function applyConfigNetwork(net: NetResult, cfg: ConfigNetwork, o: { busybox?: string; dryRun?: boolean } = {}): string | undefined {
  if (cfg.mode !== "static") return undefined;
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(cfg.ip);
  if (!m || Number(m[2]) > 32 || m[1].split(".").some((x) => Number(x) > 255))
    throw new FinalError(`the server's static address "${cfg.ip.slice(0, 60)}" for this node is not IPV4/PREFIX`);
  const c = net.configured.find((x) => x.method !== "link-local") ?? net.configured[0];
  if (!c) throw new FinalError("the server gives a static address but no interface is configured to put it on");
  const address = m[1], prefix = Number(m[2]);
  if (c.address === address && c.prefix === prefix && c.gateway === cfg.gateway) return undefined;
  const bb = o.busybox ?? "busybox";
  if (!o.dryRun) {
    const r = Bun.spawnSync([bb, "ip", "addr", "add", `${address}/${prefix}`, "dev", c.iface], { stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0 && !/exists/i.test(r.stderr.toString())) throw new Error(`adding ${address}/${prefix} to ${c.iface}: ${r.stderr.toString().trim()}`);
    if (cfg.gateway) run([bb, "ip", "route", "replace", "default", "via", cfg.gateway, "dev", c.iface], `default route on ${c.iface}`);
  }
  Object.assign(c, { method: "static", address, prefix, gateway: cfg.gateway, dns: cfg.dns });
  return `Setting up ${c.iface} as static at ${address}/${prefix} (from the server's config)`;
}
