// The servers of one image as a set: preference order, which server a request tries next, logging each change of
// state once, and the jittered background probe that brings recovered servers back (fail-back).
import type { Logger } from "../util/log";
import { SourceFault, type Expect, type RangeTimeouts } from "./http";
import { rankSources, type SourceOrder } from "./order";
import type { ImageIdentity } from "./probe";
import type { Source } from "./source";

export interface ServerSetOptions {
  order: SourceOrder;
  nodeId: string;
  /** Per source (same order as `sources`), for "spread": relative share, 0 = last resort; default 1 each. */
  weights?: number[];
  timeouts: RangeTimeouts;
  probeIntervalMs: number;
  holdDownMs: number;
  ioTimeoutMs: number;       // only for the wording of the "all down" line
  sizeOnly: boolean;         // a signed manifest verifies every chunk: a server without a validator may join (probe.ts)
  log: Logger;
  onRecovered(): void;       // a down server answers again: wake reads waiting out a backoff
}

/**
 * What replies from `s` must match: its own validator once it has agreed with the image; before that (it was down at
 * open) the image's, or, with a signed manifest, the size alone when either side sends no validator.
 */
export function expectFrom(s: Source, image: ImageIdentity, sizeOnly: boolean): Expect {
  return s.validator !== undefined ? { size: image.size, validator: s.validator } : { size: image.size, validator: image.validator, sizeOnly };
}

export const jitter = (ms: number, frac: number) => ms * (1 - frac + 2 * frac * Math.random());
export const secs = (ms: number) => `${+(ms / 1000).toFixed(1)} s`;

export class ServerSet {
  private ranked: Source[] = [];
  private readonly lastResort = new Set<Source>(); // weight 0 beside weighted sources ("spread" only)
  private active?: Source;      // the server reads currently go to (logged on change)
  private connecting?: Source;  // announced with "Connecting to", not yet successful
  private allDownSince = 0;     // 0 = at least one server answered the last pass
  private probeTimer?: ReturnType<typeof setTimeout>;
  private closed = false;

  constructor(readonly sources: Source[], private readonly image: ImageIdentity, private readonly o: ServerSetOptions) {
    // Weights count for "spread" only (order.ts); with every weight 0 (or none) no source stands back.
    const w = o.weights;
    if (o.order === "spread" && w && w.some((x) => x > 0)) sources.forEach((s, i) => { if (w[i] === 0) this.lastResort.add(s); });
    this.rerank();
  }

  /** Announces the server reads start on (after open) and starts fail-back probing. */
  start(): void {
    const first = this.preferred();
    if (first) {
      this.o.log.info(`Connecting to ${first.href}`);
      this.active = first;
      this.o.log.info(`Successfully connected to ${first.href}`);
    }
    this.scheduleProbe();
  }

  stop(): void {
    this.closed = true;
    clearTimeout(this.probeTimer);
  }

  /**
   * Next server to try: the usable ones first (`firstUsable`: weighted before last resort, each healthy then degraded,
   * by preference), then (`tryDown`) down ones.
   */
  pick(tried: Set<Source>, tryDown: boolean): Source | undefined {
    const s = this.firstUsable(tried);
    if (s || !tryDown) return s;
    for (const s of this.ranked) if (!tried.has(s) && (s.state === "down" || s.state === "probing")) return s;
    return undefined;
  }

  /** The server reads should use now (first usable by preference). */
  preferred(): Source | undefined {
    return this.firstUsable();
  }

  /** A weight-0 source while some other has a weight ("spread" only): used only when no weighted source is usable. */
  isLastResort(s: Source): boolean {
    return this.lastResort.has(s);
  }

  /**
   * Weighted sources healthy, then degraded, then the last resort ones healthy, then degraded. A degraded mirror
   * (answers again after a fault, e.g. a connect timeout under load) still comes before a healthy last resort server:
   * the deployment server, which every node needs for enrollment, serves the image only when every mirror is down.
   * A down weighted source is skipped, so reads fall through to the last resort at once.
   */
  private firstUsable(skip?: Set<Source>): Source | undefined {
    for (const reserve of [false, true]) {
      for (const state of ["healthy", "degraded"] as const) {
        for (const s of this.ranked) if (s.state === state && this.lastResort.has(s) === reserve && !skip?.has(s)) return s;
      }
    }
    return undefined;
  }

  noteAttempt(src: Source): void {
    if (src === this.active || src === this.connecting || this.allDownSince) return; // once per change, not per retry
    this.connecting = src;
    this.o.log.info(`Connecting to ${src.href}`);
  }

  noteSuccess(src: Source, bytes: number, sentAt: number): void {
    src.success(bytes, sentAt);
    // Stragglers finishing on a server we have moved away from must not flip the active server back and forth.
    if (src !== this.active && (this.preferred() === src || !this.active?.usable)) {
      this.active = src;
      this.connecting = undefined;
      this.o.log.info(`Successfully connected to ${src.href}`);
    }
    if (this.allDownSince) {
      this.o.log.info(`reads resumed after ${secs(Date.now() - this.allDownSince)} without any image server`);
      this.allDownSince = 0;
    }
  }

  noteFault(src: Source, e: SourceFault): void {
    if (e.imageChanged && src.state !== "excluded") {
      src.errors++;
      src.lastError = e.reason;
      src.exclude(e.reason); // never mixed in again
      this.o.log.error(`excluding ${src.href}: ${e.reason}`);
    } else if (src.fault(e.reason)) {
      this.o.log.error(`error while communicating with ${src.href}: ${e.reason}`);
    }
    if (src === this.connecting) this.connecting = undefined;
  }

  /** Every server failed one request in a row; logged once until a read succeeds again. */
  noteAllDown(): void {
    if (this.allDownSince) return;
    this.allDownSince = Date.now();
    this.active = undefined;
    this.connecting = undefined;
    const io = this.o.ioTimeoutMs;
    const left = this.sources.filter((s) => s.state !== "excluded").length;
    this.o.log.error(left
      ? `all image servers failed; reads wait and retry with backoff ${io ? `for up to ${secs(io)}` : "until one answers"}`
      : "no image server serves this image any more (all excluded); reads wait" + (io ? ` and fail after ${secs(io)}` : ""));
  }

  // ---- fail-back probing ----

  private rerank(): void {
    const idx = rankSources(this.o.order, this.sources.map((s, i) => ({ href: s.href, rttMs: s.rttMs, weight: this.o.weights?.[i] })), this.o.nodeId);
    this.ranked = idx.map((i) => this.sources[i]);
    this.ranked.forEach((s, rank) => { s.preferredRank = rank; });
  }

  private scheduleProbe(): void {
    if (this.closed) return;
    this.probeTimer = setTimeout(() => {
      void this.probeRound().finally(() => this.scheduleProbe());
    }, jitter(this.o.probeIntervalMs, 0.2));
    (this.probeTimer as { unref?: () => void }).unref?.(); // the FUSE session, not this timer, keeps a daemon alive
  }

  /** Probes down/degraded servers (all of them for "latency" order) and re-ranks. */
  async probeRound(): Promise<void> {
    const targets = this.sources.filter((s) => s.state !== "excluded" && (s.state !== "healthy" || this.o.order === "latency"));
    await Promise.all(targets.map((s) => this.probe(s)));
    if (!this.closed) this.rerank();
  }

  private async probe(s: Source): Promise<void> {
    const wasDown = s.state === "down";
    if (wasDown) s.state = "probing";
    try {
      const t0 = performance.now();
      const r = await s.fetcher.get(0, 1, this.o.timeouts, expectFrom(s, this.image, this.o.sizeOnly));
      s.noteRtt(performance.now() - t0);
      if (s.state !== "excluded") s.validator ??= r.validator; // a server down at open has now agreed
      if (this.closed || s.state === "excluded") return;
      if (s.state === "probing" || s.state === "degraded") {
        // Hold-down: a server that failed recently is only a fallback until it has answered for holdDownMs.
        const settled = Date.now() - s.lastFaultAt >= this.o.holdDownMs;
        if (wasDown) this.o.log.info(`${s.href} answers again${settled ? "" : `; used only as a fallback for ${secs(this.o.holdDownMs)}`}`);
        s.state = settled ? "healthy" : "degraded";
        s.reason = settled ? undefined : `recovered from: ${s.lastError ?? "fault"}`;
        if (wasDown) this.o.onRecovered();
      }
    } catch (e) {
      if (!(e instanceof SourceFault) || this.closed) return;
      // Still failing: stays down, and the hold-down restarts.
      if (s.state === "probing") { s.state = "down"; s.errors++; s.lastError = e.reason; s.reason = e.reason; s.lastFaultAt = Date.now(); }
      if (e.imageChanged || (s.state !== "down" && s.state !== "excluded")) this.noteFault(s, e);
    }
  }
}
