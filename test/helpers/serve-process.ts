// A real `airroot serve` process on a free loopback port (discovery off), for tests that drive it from outside.
import type { Subprocess } from "bun";
import { freePort, waitForPort } from "./ports";

export interface ServeProcess { proc: Subprocess; port: number; url: string; stop(): Promise<void> }

export interface ServeProcessOptions {
  /** Extra variables for the process (e.g. AIRROOT_HEARTBEAT_MS), on top of this one's environment. */
  env?: Record<string, string>;
  /** Where its stdout and stderr go (default: discarded). */
  log?: string;
}

/** cmd: how to run airroot (the built binary, or [bun, main.ts]); resolves once the listener accepts connections. */
export async function startServeProcess(cmd: string[], state: string, waitMs = 30_000, o: ServeProcessOptions = {}): Promise<ServeProcess> {
  const port = await freePort("127.0.0.1");
  const out = o.log ? Bun.file(o.log) : "ignore", err = o.log ? Bun.file(`${o.log}.err`) : "ignore";
  const proc = Bun.spawn([...cmd, "serve", "--state", state, "--listen", `127.0.0.1:${port}`, "--no-discovery"],
    { stdout: out, stderr: err, env: { ...process.env, ...o.env } });
  const stop = async () => { proc.kill("SIGTERM"); await proc.exited; };
  try { await waitForPort("127.0.0.1", port, waitMs); } catch (e) { proc.kill("SIGKILL"); throw e; }
  return { proc, port, url: `https://127.0.0.1:${port}`, stop };
}
