// Per-source rate limiting for unauthenticated calls (enrollment): a fixed window per address, bounded memory.

export interface RateLimiterOptions {
  perWindow?: number;   // requests allowed per source per window; default 30
  windowMs?: number;    // default 60 s
  maxSources?: number;  // sources tracked at once; default 10 000 (oldest windows are dropped first)
}

export class RateLimiter {
  private windows = new Map<string, { start: number; count: number }>();
  private readonly perWindow: number;
  private readonly windowMs: number;
  private readonly maxSources: number;

  constructor(o: RateLimiterOptions = {}) {
    this.perWindow = o.perWindow ?? 30;
    this.windowMs = o.windowMs ?? 60_000;
    this.maxSources = o.maxSources ?? 10_000;
  }

  /** Counts one request from `source`; false when it is over the limit for the current window. */
  allow(source: string, now = Date.now()): boolean {
    let w = this.windows.get(source);
    if (!w || now - w.start >= this.windowMs) {
      this.windows.delete(source); // re-insert: Map order then tracks window age for eviction
      if (this.windows.size >= this.maxSources) this.windows.delete(this.windows.keys().next().value!);
      w = { start: now, count: 0 };
      this.windows.set(source, w);
    }
    return ++w.count <= this.perWindow;
  }
}
