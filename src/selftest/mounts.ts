// Drives `airroot mount` / `status` / `umount` as child processes of this same binary (the FUSE daemon must live in
// another process than the HTTPS servers it reads from), and tears a mount down by every means if the polite way fails.
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { DaemonStatus } from "../mount/status";
import { holderSocketPath, statusLogPath, statusSocketPath } from "../mount/status";
import { selfCommand } from "../util/self";
import { mountsUnder, unescapeMountField } from "./scratch";
import { runAsync, runOk, type RunResult } from "./proc";

export interface MountRequest {
  urls: string[];
  mountpoint: string;
  caFile: string;
  manifestUrl?: string;
  imageKeyFile?: string;
}

/**
 * Settings that keep a selftest mount from ever hanging: readers get EIO after 15 s without a server (a root
 * filesystem would wait forever instead), and a server that stops sending is abandoned after 2 s.
 */
const SAFE_MOUNT_ARGS = ["--io-timeout", "15s", "--stall-timeout", "2s", "--cache-mb", "8"];

export function airroot(...args: string[]): string[] {
  return [...selfCommand(), ...args];
}

/** Runs `airroot mount` (detached daemon, returns once mounted). Resolves with the CLI's result and the daemon pid. */
export async function mountCli(req: MountRequest, timeoutMs = 20_000): Promise<RunResult & { pid?: number }> {
  const args = ["mount", "--ca", req.caFile, ...SAFE_MOUNT_ARGS];
  if (req.manifestUrl) args.push("--manifest", req.manifestUrl, "--image-key", req.imageKeyFile ?? "");
  const r = await runAsync(airroot(...args, ...req.urls, req.mountpoint), { timeoutMs });
  const m = /daemon pid (\d+)/.exec(r.stdout);
  return { ...r, pid: m ? Number(m[1]) : undefined };
}

export async function statusCli(mountpoint: string): Promise<DaemonStatus> {
  const out = await runOk(airroot("status", "--json", mountpoint), { timeoutMs: 10_000 });
  let st: any;
  try { st = JSON.parse(out); } catch {
    throw new Error(`\`airroot status --json ${mountpoint}\` printed something that is not JSON: ${out.slice(0, 200)}`);
  }
  // Callers read image.sources and verified: make sure those exist before anyone dereferences them.
  if (typeof st !== "object" || st === null || !Array.isArray(st.image?.sources)) {
    throw new Error(`\`airroot status --json ${mountpoint}\` printed JSON without image.sources: ${out.slice(0, 200)}`);
  }
  return st as DaemonStatus;
}

export async function umountCli(mountpoint: string): Promise<void> {
  await runOk(airroot("umount", mountpoint), { timeoutMs: 15_000 });
}

export function isMounted(mountpoint: string): boolean {
  return mountsUnder(mountpoint).includes(mountpoint);
}

/** PIDs of the processes whose argv has `mount`, `flag` and `mountpoint` (the path is unique to this selftest's temp dir). */
function mountProcesses(flag: string, mountpoint: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    let argv: string[];
    try { argv = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0"); } catch { continue; }
    if (argv.includes("mount") && argv.includes(flag) && argv.includes(mountpoint)) pids.push(Number(name));
  }
  return pids;
}

/** PIDs of airroot mount daemons serving `mountpoint`. */
export const daemonPids = (mountpoint: string) => mountProcesses("--foreground", mountpoint);

/** PIDs of the holders (the processes keeping a mount's FUSE connection across daemon restarts) of `mountpoint`. */
export const holderPids = (mountpoint: string) => mountProcesses("--holder", mountpoint);

/**
 * Gets rid of a mount and its daemon whatever state they are in: ask the daemon, then kill any daemon still there
 * (also one that was still starting and may mount at any moment), then abort the FUSE connection (the only thing that
 * frees a connection whose server is stuck) and lazy-unmount. `self` is the command that runs airroot (default:
 * this program, see selfCommand).
 */
export async function forceUnmount(mountpoint: string, opts: { self?: string[] } = {}): Promise<void> {
  if (isMounted(mountpoint)) {
    const umount = opts.self ? [...opts.self, "umount", mountpoint] : airroot("umount", mountpoint);
    await runAsync(umount, { timeoutMs: 5_000, cleanup: true });
  }
  // The holder first: it would start a new daemon for the one killed below (src/mount/holder.ts).
  for (const pid of holderPids(mountpoint)) {
    try { process.kill(pid, "SIGKILL"); } catch { /* exited meanwhile */ }
  }
  const pids = daemonPids(mountpoint);
  for (const pid of pids) {
    try { process.kill(pid, "SIGKILL"); } catch { /* exited meanwhile */ }
  }
  // A killed daemon is gone once no process names the mount point any more (a zombie's cmdline is empty).
  for (let i = 0; i < 40 && pids.length && daemonPids(mountpoint).length; i++) await Bun.sleep(50);
  if (isMounted(mountpoint)) {
    const conn = fuseConnection(mountpoint);
    if (conn !== undefined) {
      try { writeFileSync(`/sys/fs/fuse/connections/${conn}/abort`, "1"); } catch { /* already gone */ }
    }
    await runAsync(["umount", "-l", mountpoint], { timeoutMs: 5_000, cleanup: true });
  }
  for (const p of [statusLogPath(mountpoint), statusSocketPath(mountpoint), holderSocketPath(mountpoint)]) rmSync(p, { force: true });
  if (isMounted(mountpoint)) throw new Error(`${mountpoint} is still mounted after umount -l and killing its daemon`);
}

/** The FUSE connection number (the mount's device minor) from /proc/self/mountinfo, without touching the mount. */
export function fuseConnection(mountpoint: string): number | undefined {
  let text = "";
  try { text = readFileSync("/proc/self/mountinfo", "utf8"); } catch { return undefined; }
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    if (f.length > 4 && unescapeMountField(f[4]) === mountpoint) {
      const minor = Number(f[2].split(":")[1]);
      if (existsSync(`/sys/fs/fuse/connections/${minor}`)) return minor;
    }
  }
  return undefined;
}
