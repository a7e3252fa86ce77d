// Child processes for the selftest, always asynchronous and time-bounded: this process serves HTTPS to the FUSE
// daemon, so a synchronous wait on anything that reads the mount would stall the servers and deadlock the read.
import { accessSync, constants } from "node:fs";
import { join } from "node:path";

type Child = ReturnType<typeof Bun.spawn>;
/** Children still running: on Ctrl-C they are killed before cleanup, so none can mount something behind its back. */
const live = new Set<Child>();
let interrupted = false;

/**
 * Bun.spawn for the selftest: the child is tracked for killChildren(), and once the run is interrupted only
 * cleanup commands may start (checks still running in the background must not mount or start anything new).
 */
export function spawnChild(cmd: string[], opts: { stdout?: "pipe" | "ignore"; stderr?: "pipe" | "ignore"; env?: Record<string, string | undefined>; cleanup?: boolean } = {}) {
  if (interrupted && !opts.cleanup) throw new Error(`not starting ${cmd[0]}: the selftest was interrupted`);
  const proc = Bun.spawn(cmd, { stdin: "ignore", stdout: opts.stdout ?? "pipe", stderr: opts.stderr ?? "pipe", env: opts.env ?? process.env });
  live.add(proc);
  void proc.exited.finally(() => live.delete(proc));
  return proc;
}

/** Refuses new non-cleanup children, SIGKILLs every child still running and waits (bounded) for them to exit. */
export async function killChildren(timeoutMs = 2_000): Promise<void> {
  interrupted = true;
  const procs = [...live];
  for (const p of procs) p.kill("SIGKILL");
  await Promise.race([Promise.all(procs.map((p) => p.exited)), Bun.sleep(timeoutMs)]);
}

export interface RunResult { code: number; stdout: string; stderr: string; timedOut: boolean }

export interface RunOptions {
  timeoutMs?: number;                 // SIGKILL after this long (default 20 s)
  env?: Record<string, string | undefined>;
  cleanup?: boolean;                  // a teardown step: allowed after an interrupt
}

/** Runs a command to completion without blocking the event loop; never throws for a non-zero exit. */
export async function runAsync(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  let proc;
  try {
    proc = spawnChild(cmd, { env: opts.env, cleanup: opts.cleanup });
  } catch (e) {
    return { code: 127, stdout: "", stderr: `cannot start ${cmd[0]}: ${(e as Error).message}`, timedOut: false };
  }
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; proc.kill("SIGKILL"); }, opts.timeoutMs ?? 20_000);
  try {
    // Read both pipes to EOF: output is never left to fill a pipe and block the child.
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    return { code, stdout, stderr, timedOut };
  } finally {
    clearTimeout(timer);
  }
}

/** Like runAsync, but throws (naming the command, its exit and its stderr) unless it exits 0. */
export async function runOk(cmd: string[], opts: RunOptions = {}): Promise<string> {
  const r = await runAsync(cmd, opts);
  if (r.timedOut) throw new Error(`\`${cmd.join(" ")}\` did not finish within ${(opts.timeoutMs ?? 20_000) / 1000} s`);
  if (r.code !== 0) throw new Error(`\`${cmd.join(" ")}\` exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(-800)}`);
  return r.stdout;
}

/**
 * SHA-256 and length of a file read by a child `cat` (the read happens in another process; this one only hashes
 * the pipe), bounded in time.
 */
export async function hashViaChild(path: string, timeoutMs = 20_000): Promise<{ sha256: string; bytes: number }> {
  const proc = spawnChild(["cat", "--", path]);
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; proc.kill("SIGKILL"); }, timeoutMs);
  try {
    const hasher = new Bun.CryptoHasher("sha256");
    let bytes = 0;
    const errText = new Response(proc.stderr).text();
    for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) { hasher.update(chunk); bytes += chunk.length; }
    const code = await proc.exited;
    if (timedOut) throw new Error(`reading ${path} did not finish within ${timeoutMs / 1000} s (${bytes} bytes read)`);
    if (code !== 0) throw new Error(`reading ${path} failed after ${bytes} bytes: ${(await errText).trim() || `cat exited ${code}`}`);
    return { sha256: hasher.digest("hex"), bytes };
  } finally {
    clearTimeout(timer);
  }
}

/** Absolute path of an executable on PATH, or undefined. */
export function which(name: string): string | undefined {
  for (const dir of (process.env.PATH || "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":")) {
    if (!dir) continue;
    const p = join(dir, name);
    try { accessSync(p, constants.X_OK); return p; } catch { /* next */ }
  }
  return undefined;
}
