// `airroot mount` without --foreground behaves like mount(8): it returns once the filesystem is ready and a
// detached daemon keeps serving it. The daemon reports readiness with one line on a pipe.
import { spawn } from "node:child_process";
import { selfCommand } from "../util/self";

export const READY_LINE = "AIRROOT-MOUNT-READY";

export async function startDetachedDaemon(mountArgs: string[], argv0?: string): Promise<number> {
  const [exe, ...pre] = selfCommand();
  const child = spawn(exe, [...pre, "mount", "--foreground", "--notify-ready", ...mountArgs], {
    argv0: argv0 ?? exe, detached: true, stdio: ["ignore", "pipe", "inherit"],
  });
  return await new Promise<number>((resolve, reject) => {
    let seen = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      seen += chunk.toString();
      if (seen.includes(READY_LINE)) {
        child.stdout!.destroy();
        child.unref();
        resolve(child.pid!);
      }
    });
    child.once("exit", (code, signal) =>
      reject(new Error(`the mount daemon exited before the mount was ready (${signal ?? `exit code ${code}`}); see the messages above`)));
    child.once("error", (e) => reject(new Error(`cannot start the mount daemon: ${e.message}`)));
  });
}
