// One image server: its fetcher (connection pool), health state, measured RTT and counters.
import type { RangeFetcher } from "./http";
import type { ImageUrl } from "./url";

export type SourceState = "healthy" | "degraded" | "down" | "excluded" | "probing";

export interface SourceStatus {
  url: string; state: SourceState; reason?: string; rttMs?: number;
  bytes: number; requests: number; errors: number; lastError?: string; preferredRank: number;
}

export class Source {
  state: SourceState = "down";  // until the first probe says otherwise
  reason?: string;              // why it is down/excluded/degraded
  rttMs?: number;               // smoothed RTT of probes
  bytes = 0;
  requests = 0;
  errors = 0;
  lastError?: string;
  lastFaultAt = 0;              // Date.now() of the last fault, for the fail-back hold-down
  preferredRank = 0;            // 0 = most preferred
  /** The validator this server agreed with (its own: NO_VALIDATOR for one sending none); its replies must keep it. */
  validator?: string;

  constructor(readonly url: ImageUrl, readonly fetcher: RangeFetcher, readonly index: number) {}

  get href(): string { return this.url.href; }
  get usable(): boolean { return this.state === "healthy" || this.state === "degraded"; }

  /** Records a failed request or probe. Returns true when it was usable until now (so the caller logs the change once). */
  fault(reason: string): boolean {
    this.errors++;
    this.lastError = reason;
    this.lastFaultAt = Date.now();
    if (this.state === "excluded") return false;
    const wasUp = this.usable;
    this.state = "down";
    this.reason = reason;
    return wasUp; // later failures of an already-down source are counted, not logged again
  }

  /**
   * Records a successful data request sent at `sentAt` (Date.now()). Returns true when the source came back from
   * down/probing. A request sent before the last fault proves nothing about now: it does not revive the source.
   */
  success(bytes: number, sentAt: number): boolean {
    this.requests++;
    this.bytes += bytes;
    if (this.state === "excluded" || sentAt < this.lastFaultAt) return false;
    if (this.state === "down" || this.state === "probing") {
      this.state = "healthy";
      this.reason = undefined;
      return true;
    }
    return false;
  }

  noteRtt(ms: number): void {
    this.rttMs = this.rttMs === undefined ? ms : this.rttMs * 0.7 + ms * 0.3; // smooth out one-off spikes
  }

  exclude(reason: string): void {
    this.state = "excluded";
    this.reason = reason;
  }

  status(): SourceStatus {
    return {
      url: this.href, state: this.state, reason: this.reason,
      rttMs: this.rttMs === undefined ? undefined : Math.round(this.rttMs * 100) / 100,
      bytes: this.bytes, requests: this.requests, errors: this.errors, lastError: this.lastError,
      preferredRank: this.preferredRank,
    };
  }
}
