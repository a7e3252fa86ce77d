// Crash a test nginx for real, workers included. Nginx.kill() SIGKILLs the master, but its worker keeps the listening
// socket and goes on serving (and a master killed by bun's test timeout leaves orphaned workers behind), which is not a
// crash. Workers are found by the files they hold open in this instance's workDir, so only our own processes are hit.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { connect } from "node:net";
import type { Nginx } from "./nginx";

/** PIDs of nginx processes holding a file open under `workDir`. */
export function nginxPidsUsing(workDir: string): number[] {
  const pids: number[] = [];
  for (const ent of readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(ent)) continue;
    try {
      if (!readFileSync(`/proc/${ent}/cmdline`, "latin1").startsWith("nginx")) continue;
      const fds = readdirSync(`/proc/${ent}/fd`);
      if (fds.some((fd) => { try { return readlinkSync(`/proc/${ent}/fd/${fd}`).startsWith(workDir + "/"); } catch { return false; } })) {
        pids.push(Number(ent));
      }
    } catch { /* process went away */ }
  }
  return pids;
}

export async function crashNginx(ng: Nginx): Promise<void> {
  try { ng.proc.kill("SIGKILL"); } catch { /* already gone */ }
  await ng.proc.exited;
  for (const pid of nginxPidsUsing(ng.opts.workDir)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
  // Bounded wait until nothing accepts on its ports any more.
  for (const l of ng.opts.listen) {
    for (let i = 0; i < 100; i++) {
      const open = await new Promise<boolean>((resolve) => {
        const s = connect({ host: l.host, port: l.port });
        s.once("connect", () => { s.destroy(); resolve(true); });
        s.once("error", () => resolve(false));
      });
      if (!open) break;
      await Bun.sleep(20);
    }
  }
}
