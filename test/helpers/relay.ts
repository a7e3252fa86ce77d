// A userspace TCP relay on loopback: forwards bytes both ways, optionally delaying every chunk by N ms (added RTT,
// since this kernel has no netem), and can be told to stop forwarding to simulate a server that accepts and then stalls.
// It is a mock only for faults nginx itself cannot produce (a stall mid-transfer, extra latency).
import { createServer, connect, type Socket } from "node:net";

export interface RelayOptions {
  listenHost?: string;     // default 127.0.0.1
  listenPort?: number;     // default: a free port
  targetHost: string;
  targetPort: number;
  delayMs?: number;        // one-way delay added to each chunk in each direction (RTT grows by 2×delayMs); default 0
  maxConnections?: number; // default 256
  maxBufferedBytes?: number; // per direction; above it the reading side is paused (memory bound, not a rate limit); default 64 MiB
}

export interface Relay {
  host: string;
  port: number;
  /** Stop forwarding in both directions; connections stay open and silent (new ones are accepted, then stall too). */
  stall(): void;
  resume(): void;
  /** Connections accepted so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

export async function startRelay(o: RelayOptions): Promise<Relay> {
  const delay = o.delayMs ?? 0;
  const maxConn = o.maxConnections ?? 256;
  const maxBuf = o.maxBufferedBytes ?? 64 * 1024 * 1024;
  const sockets = new Set<Socket>();
  let stalled = false, accepted = 0;
  const held: (() => void)[] = []; // writes withheld while stalled, released (in order) on resume

  // Forward from `from` to `to`, each chunk after `delay` ms; order is kept because every chunk waits the same time.
  const pipe = (from: Socket, to: Socket) => {
    let pending = 0;
    from.on("data", (chunk: Buffer) => {
      pending += chunk.length;
      if (pending > maxBuf) from.pause();
      const deliver = () => {
        if (stalled) { held.push(deliver); return; }
        pending -= chunk.length;
        if (!to.destroyed) to.write(chunk);
        if (pending <= maxBuf && from.isPaused()) from.resume();
      };
      if (delay > 0) setTimeout(deliver, delay); else deliver();
    });
    from.on("end", () => { const fin = () => (stalled ? held.push(fin) : to.end()); delay > 0 ? setTimeout(fin, delay) : fin(); });
  };

  const server = createServer((client) => {
    if (sockets.size >= maxConn * 2) { client.destroy(); return; }
    accepted++;
    const upstream = connect({ host: o.targetHost, port: o.targetPort });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => { client.destroy(); upstream.destroy(); });
      s.on("close", () => { sockets.delete(s); client.destroy(); upstream.destroy(); });
    }
    pipe(client, upstream);
    pipe(upstream, client);
  });
  const host = o.listenHost ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.listenPort ?? 0, host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return {
    host, port,
    get accepted() { return accepted; },
    stall() { stalled = true; },
    resume() { stalled = false; for (const f of held.splice(0)) f(); },
    async close() {
      stalled = false;
      held.length = 0;
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// Names the benchmarks use for the same helper.
export const startDelayRelay = startRelay;
export type DelayRelay = Relay;
