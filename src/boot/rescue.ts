// The rescue path: instead of a kernel panic, say what failed, keep the debug sshd up and offer a console shell.
import { closeSync, openSync } from "node:fs";
import { powerOff } from "../sys/power";
import { reapOrphans } from "../sys/reap";

export interface RescueOptions {
  /** Why we are here; undefined for airroot.shell (a requested stop, not a failure). */
  failure?: { step: string; title: string; error: Error };
  /** The console device for the shell (e.g. /dev/ttyS0); default /dev/console. */
  tty?: string;
  /** Whether the debug sshd is (or was asked to be) running, for the message. */
  sshd: boolean;
  busybox?: string;
  write?: (text: string) => void;
  /** Stop respawning after this many shells (tests); default forever, as PID 1 must never exit. */
  maxShells?: number;
  /** "poweroff": print the reason and power off instead of a shell (airroot.rescue=poweroff). */
  then?: "shell" | "poweroff";
  /** Long-lived children Bun waits for itself (debug sshd supervisor, mount engine): never reaped by us. */
  ownChildren?: number[];
}

export function rescueMessage(o: RescueOptions): string[] {
  const lines: string[] = [];
  if (o.failure) {
    lines.push(`airroot: boot stopped at step "${o.failure.step}" (${o.failure.title}): ${o.failure.error.message}`);
  } else {
    lines.push("airroot: airroot.shell given: stopping before switch_root");
  }
  lines.push(`airroot: starting a console shell on ${o.tty ?? "/dev/console"}` +
    (o.sshd ? "; the debug sshd listens on port 2222" : "") + "; exit the shell to get a new one");
  return lines;
}

/**
 * Prints the reason and runs a login shell on the console, again and again. As PID 1 this never returns
 * (unless maxShells is set).
 */
export async function rescue(o: RescueOptions): Promise<void> {
  const write = o.write ?? ((t: string) => void process.stdout.write(t));
  if (o.then === "poweroff") {
    write(rescueMessage(o)[0] + "\n");
    write("airroot: airroot.rescue=poweroff: powering off\n");
    await Bun.sleep(200); // let the console drain
    powerOff();
  }
  for (const l of rescueMessage(o)) write(l + "\n");
  const tty = o.tty ?? "/dev/console";
  const bb = o.busybox ?? "busybox";
  // As PID 1 we inherit every orphan; processes the shell user left behind must not pile up as zombies.
  const keep = new Set(o.ownChildren ?? []);
  const reaper = process.pid === 1 ? setInterval(() => reapOrphans(keep), 5000) : undefined;
  try {
    await shellLoop(o, tty, bb, keep);
  } finally {
    clearInterval(reaper);
  }
}

async function shellLoop(o: RescueOptions, tty: string, bb: string, keep: Set<number>): Promise<void> {
  for (let n = 0; o.maxShells === undefined || n < o.maxShells; n++) {
    let fd: number | "inherit" = "inherit";
    try { fd = openSync(tty, "r+"); } catch {}
    // setsid -c makes the tty the shell's controlling terminal, so ^C and job control work.
    const p = Bun.spawn([bb, "setsid", "-c", bb, "sh", "-l"], {
      stdin: fd, stdout: fd, stderr: fd,
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", HOME: "/root", TERM: "linux", PS1: "airroot# " },
    });
    keep.add(p.pid);
    const started = Date.now();
    await p.exited;
    keep.delete(p.pid);
    if (typeof fd === "number") try { closeSync(fd); } catch {}
    // A shell that dies at once (no tty) must not spin.
    if (Date.now() - started < 2000) await Bun.sleep(2000);
  }
}
