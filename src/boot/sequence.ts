// The boot sequencer: runs named steps in order, prints one console line per step with elapsed time, stops at a failure.
import { readFileSync } from "node:fs";

export interface StepResult {
  /** Text after the title, e.g. "done" or "Setting up eth0 via DHCP at 10.0.2.15/24". Default "done". */
  summary?: string;
  /** Replaces the whole "Title...summary" line, e.g. "Automatic console configured for ttyS0,115200". */
  line?: string;
}

export interface Step<C> {
  /** Short name used by airroot.skip and in failure reports ("drivers"). */
  name: string;
  /** Console text before the result ("Loading drivers"). */
  title: string;
  run(ctx: C): Promise<StepResult | string | void>;
  /** Extra attempts after a failure, for steps where waiting can help (network, servers). Default 0. */
  retries?: number;
  /** Delay before the first retry; doubles each time (default 2000 ms). */
  retryDelayMs?: number;
  /** How a WaitError from this step is waited out (without it: like any other error, `retries` bound it). */
  wait?: WaitPolicy<C>;
}

/** Waiting out servers that are away: backoff from firstDelayMs doubling to maxDelayMs, jittered, until timeoutMs. */
export interface WaitPolicy<C> {
  /** How long to keep waiting, from the step's first WaitError; undefined = for ever. */
  timeoutMs?: (ctx: C) => number | undefined;
  /** Named in the failure when the time is up, e.g. "airroot.roottimeout". */
  option?: string;
  firstDelayMs?: number; // default 1000
  maxDelayMs?: number;   // default 30000
}

/** A step failure that waiting cannot fix (bad configuration, missing local file): no retries. */
export class FinalError extends Error {
  override name = "FinalError";
}

/**
 * A step failure that waiting fixes: the servers it needs are away (restarting, rebooting, a boot storm). A step with
 * a wait policy retries it with backoff and prints one line per change of state, not one per attempt.
 */
export class WaitError extends Error {
  override name = "WaitError";
  /** `what`: the kind of server waited for, e.g. "image server"; `message`: why the last attempt failed. */
  constructor(readonly what: string, message: string) { super(message); }
}

const article = (what: string) => (/^[aeiou]/i.test(what) ? `an ${what}` : `a ${what}`);
/** A reason without its numbers (ports, times, counts), to tell a new state from the same one again. */
const stateOf = (reason: string) => reason.replace(/\d+/g, "#");

export interface Console {
  /** Writes text as-is (no newline added). */
  write(text: string): void;
}

export type SequenceOutcome =
  | { ok: true; elapsedMs: number }
  | { ok: false; step: string; title: string; error: Error; elapsedMs: number };

export interface SequenceOptions {
  out?: Console;
  /** Step names not to run; they print "skipped". */
  skip?: string[];
  /** Milliseconds since boot for the timestamp; default: time since the sequence started. */
  clock?: () => number;
}

/** Formats the timestamp column: "[  12.345]" like the kernel's printk time. */
export function stamp(ms: number): string {
  return `[${(ms / 1000).toFixed(3).padStart(8)}]`;
}

/**
 * A line-oriented console writer for steps: a step's own log lines ("  note: ...") end the pending
 * "Title..." line first so the output stays one thought per line.
 */
export class StepConsole {
  private title: string | undefined;
  private startedAt = 0;
  private shown = false; // the "Title..." part is already on the console
  private announced = false; // the title was printed once in this step (log lines followed)
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** A step still running after showAfterMs shows its title, so a hang is visible. */
  constructor(private readonly out: Console, private readonly clock: () => number, private readonly showAfterMs = 1500) {}

  begin(title: string): void {
    this.title = title;
    this.startedAt = this.clock();
    this.shown = false;
    this.announced = false;
    // Whole lines are written at the end of a step (the console may change during it); slow steps show early.
    this.timer = setTimeout(() => this.show(), this.showAfterMs);
  }

  private show(): void {
    if (this.title === undefined || this.shown) return;
    clearTimeout(this.timer);
    this.out.write(`${stamp(this.clock())} ${this.title}...`);
    this.shown = true;
    this.announced = true;
  }

  /**
   * Ends the current step with "...text", or replaces its whole line with `line`. Every line is stamped with the time
   * it is written (so stamps never go backwards, even after a step's own log lines); steps that took a while get their
   * duration appended.
   */
  end(text: string, line?: string): void {
    clearTimeout(this.timer);
    const now = this.clock();
    const took = now - this.startedAt;
    const dur = took >= 500 ? ` (${(took / 1000).toFixed(1)} s)` : "";
    if (this.shown) this.out.write(line !== undefined ? `\n${stamp(now)} ${line}${dur}\n` : `${text}${dur}\n`);
    else this.out.write(`${stamp(now)} ${line ?? `${this.title}...${text}`}${dur}\n`);
    this.title = undefined;
    this.shown = false;
  }

  /** An extra line from inside a step (progress, warnings). */
  log(line: string): void {
    // A log line inside a step interrupts its pending "Title..." line; end() then repeats the title in full.
    // A title not shown yet goes first, so the step's own lines never appear above (and stamped after) it.
    if (this.title !== undefined && !this.shown && !this.announced) { this.show(); }
    if (this.shown) { this.out.write("\n"); this.shown = false; }
    this.out.write(`${stamp(this.clock())}   ${line}\n`);
  }
}

export const stdoutConsole: Console = { write: (t) => void process.stdout.write(t) };

/** Runs steps in order. A thrown error stops the sequence and is returned (never rethrown) with the step's name. */
export async function runSequence<C>(steps: Step<C>[], ctx: C, sc: StepConsole, opts: { skip?: string[] } = {}): Promise<SequenceOutcome> {
  const t0 = performance.now();
  const skip = new Set(opts.skip ?? []);
  for (const step of steps) {
    sc.begin(step.title);
    if (skip.has(step.name)) { sc.end("skipped"); continue; }
    const attempts = 1 + (step.retries ?? 0);
    let delay = step.retryDelayMs ?? 2000;
    // Waiting (WaitError with a wait policy): when it started, the last state shown, the next backoff delay.
    let waitingSince: number | undefined, waitState = "", waitWhat = "", waitDelay = step.wait?.firstDelayMs ?? 1000;
    for (let attempt = 1; ;) {
      try {
        const r = await step.run(ctx);
        const res: StepResult = typeof r === "string" ? { summary: r } : (r ?? {});
        if (waitingSince !== undefined) sc.log(`${waitWhat} reachable again after ${Math.round((performance.now() - waitingSince) / 1000)} s`);
        sc.end(res.summary ?? "done", res.line);
        break;
      } catch (e) {
        const error = e instanceof Error ? e : new Error(String(e));
        if (error instanceof WaitError && step.wait) {
          const w = step.wait;
          const now = performance.now();
          const limit = w.timeoutMs?.(ctx);
          if (waitingSince === undefined) {
            waitingSince = now;
            waitWhat = error.what;
            const until = limit === undefined ? "" : `, for at most ${Math.round(limit / 1000)} s`;
            sc.log(`waiting for ${article(error.what)}: ${error.message} (retrying every ${Math.round((w.maxDelayMs ?? 30_000) / 1000)} s at most${until})`);
            waitState = stateOf(error.message);
          } else if (stateOf(error.message) !== waitState) {
            sc.log(`still waiting for ${article(error.what)}: ${error.message}`);
            waitState = stateOf(error.message);
          }
          const left = limit === undefined ? Infinity : waitingSince + limit - now;
          if (left > 0) {
            // Jitter (50-100% of the delay) spreads a boot storm's retries once the server is back.
            await Bun.sleep(Math.min(left, waitDelay * (0.5 + Math.random() / 2)));
            waitDelay = Math.min(waitDelay * 2, w.maxDelayMs ?? 30_000);
            continue;
          }
          const gaveUp = new Error(`gave up waiting for ${article(error.what)} after ${Math.round((now - waitingSince) / 1000)} s` +
            `${w.option ? ` (${w.option})` : ""}: ${error.message}`);
          sc.end(`FAILED: ${gaveUp.message}`);
          return { ok: false, step: step.name, title: step.title, error: gaveUp, elapsedMs: performance.now() - t0 };
        }
        if (attempt < attempts && !(error instanceof FinalError)) {
          sc.log(`${step.title} failed (attempt ${attempt} of ${attempts}): ${error.message}; retrying in ${delay / 1000} s`);
          await Bun.sleep(delay);
          delay *= 2;
          attempt++;
          continue;
        }
        sc.end(`FAILED: ${error.message}`);
        return { ok: false, step: step.name, title: step.title, error, elapsedMs: performance.now() - t0 };
      }
    }
  }
  return { ok: true, elapsedMs: performance.now() - t0 };
}

/** Milliseconds since the kernel booted (/proc/uptime), or since this process started when /proc is not there yet. */
export function uptimeClock(): () => number {
  const fallbackStart = performance.now();
  return () => {
    try {
      const text = readFileSync("/proc/uptime", "utf8");
      const s = Number.parseFloat(text);
      if (Number.isFinite(s)) return s * 1000;
    } catch {}
    return performance.now() - fallbackStart;
  };
}
