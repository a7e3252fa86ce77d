// The selftest's private workspace: a fresh temp dir plus a stack of undo steps (servers, mounts, processes) run
// in reverse order at the end, also on Ctrl-C, and never removing a directory that still has something mounted in it.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

interface Undo { what: string; fn: () => Promise<void> | void }

export class Scratch {
  private readonly undos: Undo[] = [];
  private cleaning?: Promise<string[]>;

  private constructor(readonly dir: string) {}

  static create(prefix = "airroot-selftest-"): Scratch {
    // mkdtemp makes it 0700: keys and the CA's private key live here.
    return new Scratch(mkdtempSync(join(tmpdir(), prefix)));
  }

  path(...parts: string[]): string { return join(this.dir, ...parts); }

  /** Registers an undo step; returns a function that runs it now (once) and drops it from the stack. */
  defer(what: string, fn: () => Promise<void> | void): () => Promise<void> {
    const undo: Undo = { what, fn };
    this.undos.push(undo);
    let done: Promise<void> | undefined;
    return () => (done ??= (async () => {
      const i = this.undos.indexOf(undo);
      if (i >= 0) this.undos.splice(i, 1);
      await fn();
    })());
  }

  /**
   * Runs every pending undo step (newest first, each bounded to `stepTimeoutMs`, all of them to `totalMs`), then
   * removes the temp dir unless something is still mounted below it. Returns the problems found; safe to call again.
   */
  cleanup(stepTimeoutMs = 5_000, totalMs = 15_000): Promise<string[]> {
    return (this.cleaning ??= (async () => {
      const problems: string[] = [];
      const end = Date.now() + totalMs;
      while (this.undos.length) {
        const u = this.undos.pop()!;
        const budget = Math.min(stepTimeoutMs, end - Date.now());
        if (budget <= 0) { problems.push(`${u.what}: not done, cleanup ran out of time`); continue; }
        let timer: ReturnType<typeof setTimeout> | undefined;
        try {
          await Promise.race([Promise.resolve().then(u.fn),
            new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no result after ${budget / 1000} s`)), budget); })]);
        } catch (e) {
          problems.push(`${u.what}: ${(e as Error).message}`);
        } finally {
          clearTimeout(timer);
        }
      }
      const left = mountsUnder(this.dir);
      if (left.length) {
        // rm -r would walk into a live mount: leave the dir and say what to unmount.
        problems.push(`still mounted: ${left.join(", ")}; unmount them (umount -l) and remove ${this.dir}`);
      } else {
        try { rmSync(this.dir, { recursive: true, force: true }); } catch (e) { problems.push(`removing ${this.dir}: ${(e as Error).message}`); }
      }
      return problems;
    })());
  }
}

/** Mount points at or below `dir` according to /proc/self/mounts (reading it never touches those filesystems). */
export function mountsUnder(dir: string): string[] {
  let text = "";
  try { text = readFileSync("/proc/self/mounts", "utf8"); } catch { return []; }
  return text.split("\n").map((l) => unescapeMountField(l.split(" ")[1] ?? ""))
    .filter((mp) => mp === dir || mp.startsWith(dir + "/"));
}

/** /proc/mounts escapes space, tab, newline and backslash as octal. */
export function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Calls onSignal once on SIGINT/SIGTERM/SIGHUP (so the workspace is cleaned up on Ctrl-C); returns a function that
 * removes the handlers again.
 */
export function onInterrupt(onSignal: (signal: NodeJS.Signals) => void): () => void {
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  let fired = false;
  const handler = (sig: NodeJS.Signals) => { if (!fired) { fired = true; onSignal(sig); } };
  for (const s of signals) process.on(s, handler);
  return () => { for (const s of signals) process.off(s, handler); };
}
