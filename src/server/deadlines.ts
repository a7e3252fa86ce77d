// Connection deadlines of the HTTPS listener, enforced here with our own timers: under Bun, node:tls's
// handshakeTimeout and node:http's headersTimeout / requestTimeout have no effect (a raw connection that never
// started TLS stayed open > 160 s, a partial request 120 s), so a client could hold sockets as long as it liked.
// Each connection has exactly one deadline at a time, by phase:
//   handshake   connected, TLS not complete               -> handshakeMs
//   headers     TLS up (or a response sent), no request    -> headersMs (first request) / keepAliveMs (later ones)
//   request     a request is being read and answered       -> requestMs
//   response    a response body is being streamed          -> sendStallMs, re-armed at every chunk the client took
//               (a 60 MB initramfs to a thousand booting nodes takes longer than requestMs, but must keep moving)
// A connection past its deadline is destroyed. Every socket is tracked so close() can end them all.
import type { Socket } from "node:net";

export interface DeadlineOptions {
  handshakeMs?: number;   // default 10 s
  headersMs?: number;     // default 10 s: the whole request head of the first request
  requestMs?: number;     // default 30 s: from the head to the end of the response (a slow body upload included)
  keepAliveMs?: number;   // default 30 s: between the end of one response and the next request's head
  /** default 30 s: while a response body streams, each chunk (up to 64 KiB or so) must be taken by the client in this time. */
  sendStallMs?: number;
}

type Phase = "handshake" | "headers" | "request" | "response" | "keep-alive";
interface Tracked { phase: Phase; timer?: ReturnType<typeof setTimeout> }

export const DEFAULT_DEADLINES: Required<DeadlineOptions> = { handshakeMs: 10_000, headersMs: 10_000, requestMs: 30_000, keepAliveMs: 30_000, sendStallMs: 30_000 };

export class ConnectionDeadlines {
  private readonly o: Required<DeadlineOptions>;
  private readonly conns = new Map<Socket, Tracked>();
  /** Connections destroyed for a passed deadline, by phase (for tests and the log). */
  readonly cut: Record<Phase, number> = { handshake: 0, headers: 0, request: 0, response: 0, "keep-alive": 0 };

  constructor(o: DeadlineOptions = {}, private readonly onCut?: (phase: Phase, sock: Socket) => void) {
    this.o = { ...DEFAULT_DEADLINES, ...o };
  }

  get size(): number { return this.conns.size; }

  /** A new TCP connection (before TLS). */
  connected(sock: Socket): void {
    const t: Tracked = { phase: "handshake" };
    this.conns.set(sock, t);
    sock.once("close", () => { clearTimeout(t.timer); this.conns.delete(sock); });
    this.arm(sock, t, "handshake");
  }
  /** TLS is up: the first request's head must arrive within headersMs. */
  secured(sock: Socket): void { this.enter(sock, "headers"); }
  /** A request head was parsed on this connection. */
  requestStarted(sock: Socket): void { this.enter(sock, "request"); }
  /** A response body is streaming and the client just took a chunk: the next must go within sendStallMs. */
  sending(sock: Socket): void { this.enter(sock, "response"); }
  /** Its response was sent: the connection may wait keepAliveMs for the next request. */
  responseDone(sock: Socket): void { this.enter(sock, "keep-alive"); }

  /** Destroys every tracked connection (server shutdown). */
  destroyAll(): void {
    for (const [sock, t] of this.conns) { clearTimeout(t.timer); sock.destroy(); }
    this.conns.clear();
  }

  private enter(sock: Socket, phase: Phase): void {
    const t = this.conns.get(sock);
    if (t) this.arm(sock, t, phase);
  }

  private arm(sock: Socket, t: Tracked, phase: Phase): void {
    clearTimeout(t.timer);
    t.phase = phase;
    const ms = phase === "handshake" ? this.o.handshakeMs : phase === "headers" ? this.o.headersMs
      : phase === "request" ? this.o.requestMs : phase === "response" ? this.o.sendStallMs : this.o.keepAliveMs;
    t.timer = setTimeout(() => {
      this.cut[phase]++;
      this.onCut?.(phase, sock);
      sock.destroy();
    }, ms);
    (t.timer as { unref?: () => void }).unref?.();
  }
}
