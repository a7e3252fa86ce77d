// Stopping a server the tests started: SIGTERM (the web servers' masters stop their workers on it), a bounded wait,
// then SIGKILL, so a server that hangs on shutdown cannot hang the suite.
import type { Subprocess } from "bun";

export async function stopProcess(proc: Subprocess, graceMs = 10_000): Promise<void> {
  proc.kill("SIGTERM");
  const done = await Promise.race([proc.exited.then(() => true), Bun.sleep(graceMs).then(() => false)]);
  if (!done) proc.kill("SIGKILL");
  await proc.exited;
}
