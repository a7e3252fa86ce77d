// The selftest's check runner and report: one line per check ("ok", "FAIL", "skip"), each check time-bounded and
// the whole run held to one time budget, then a summary line; the exit code is 0 only when nothing failed.

export type Outcome = "ok" | "FAIL" | "skip";

/** Thrown by a check to report "skip" (with the reason) instead of ok or FAIL. */
export class SkipCheck extends Error {
  override name = "SkipCheck";
}

export interface CheckLine { outcome: Outcome; name: string; detail?: string; ms: number }

export interface ReportOptions {
  /** Where lines go (default: stdout). */
  write?: (line: string) => void;
  /** Budget for the whole run; checks that would start later are failed as out of time (default 55 s). */
  budgetMs?: number;
  /** Timeout of one check when it names none (default 15 s). */
  defaultTimeoutMs?: number;
}

export class Report {
  readonly lines: CheckLine[] = [];
  private readonly write: (line: string) => void;
  private readonly deadline: number;
  private readonly defaultTimeoutMs: number;
  private readonly started = Date.now();

  constructor(opts: ReportOptions = {}) {
    this.write = opts.write ?? ((line) => process.stdout.write(line + "\n"));
    this.deadline = this.started + (opts.budgetMs ?? 55_000);
    this.defaultTimeoutMs = opts.defaultTimeoutMs ?? 15_000;
  }

  /** Milliseconds left in the run's budget. */
  get remainingMs(): number { return Math.max(0, this.deadline - Date.now()); }

  /**
   * Runs one check. fn returns an optional detail for the ok line, throws for FAIL, or throws SkipCheck.
   * Resolves true only for ok, so callers can skip the checks that depend on this one.
   */
  async check(name: string, fn: () => Promise<string | void> | string | void, timeoutMs = this.defaultTimeoutMs): Promise<boolean> {
    const budget = Math.min(timeoutMs, this.remainingMs);
    const t0 = Date.now();
    if (budget <= 0) {
      this.record({ outcome: "FAIL", name, detail: "not started: the selftest's time budget is used up", ms: 0 });
      return false;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${(budget / 1000).toFixed(1)} s`)), budget);
    });
    try {
      const detail = await Promise.race([Promise.resolve().then(fn), timeout]);
      this.record({ outcome: "ok", name, detail: detail || undefined, ms: Date.now() - t0 });
      return true;
    } catch (e) {
      const skipped = e instanceof SkipCheck;
      this.record({ outcome: skipped ? "skip" : "FAIL", name, detail: oneLine(e), ms: Date.now() - t0 });
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Records a check that cannot run here, and why. */
  skip(name: string, reason: string): void {
    this.record({ outcome: "skip", name, detail: reason, ms: 0 });
  }

  /** Records a success established outside a check. */
  pass(name: string, detail?: string): void {
    this.record({ outcome: "ok", name, detail, ms: 0 });
  }

  /** Records a failure found outside a check (e.g. while cleaning up). */
  fail(name: string, reason: string): void {
    this.record({ outcome: "FAIL", name, detail: reason, ms: 0 });
  }

  /** Prints an informational line that is not a check. */
  say(text: string): void {
    this.write(text);
  }

  count(outcome: Outcome): number { return this.lines.filter((l) => l.outcome === outcome).length; }

  /** Prints the summary line and returns the exit code (0 only without FAIL). */
  finish(): number {
    const failed = this.count("FAIL");
    const secs = ((Date.now() - this.started) / 1000).toFixed(1);
    this.write(`selftest: ${this.count("ok")} ok, ${failed} FAIL, ${this.count("skip")} skipped in ${secs} s` +
      (failed ? ": the chain is NOT working here (see the FAIL lines)" : ""));
    return failed ? 1 : 0;
  }

  private record(line: CheckLine): void {
    this.lines.push(line);
    const secs = line.ms >= 100 ? ` [${(line.ms / 1000).toFixed(1)} s]` : "";
    const detail = line.detail === undefined ? "" : line.outcome === "FAIL" ? `: ${line.detail}` : ` (${line.detail})`;
    this.write(`${line.outcome.padEnd(4)} ${line.name}${detail}${secs}`);
  }
}

/** An error as one readable line (multi-line tool output is folded, very long text cut). */
export function oneLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  const folded = text.replace(/\s*\n\s*/g, " | ").trim();
  return folded.length > 600 ? `${folded.slice(0, 600)}...` : folded;
}
