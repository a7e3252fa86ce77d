// A hostile HTTPS server on loopback for faults no real server produces (a drip-fed body, a probe answered well and
// every real read failed, an endless chunked body, redirects): a mock for those faults only, and it says so in each
// test that uses it. The handler decides every reply; every socket is tracked and destroyed by close().
import https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki } from "./pki";

export interface Hostile {
  url: string;
  ca: string;
  requests: number;
  close(): Promise<void>;
}

export async function startHostile(dir: string, handler: (req: IncomingMessage, res: ServerResponse) => void, host = "127.0.0.1"): Promise<Hostile> {
  const pki = makeTestPki(join(dir, "hostile-pki"));
  const sockets = new Set<Socket>();
  const h: Hostile = { url: "", ca: readFileSync(pki.caCert, "utf8"), requests: 0, close: async () => {} };
  const srv = https.createServer({ cert: readFileSync(pki.serverCert), key: readFileSync(pki.serverKey) }, (req, res) => { h.requests++; handler(req, res); });
  srv.on("connection", (s: Socket) => { sockets.add(s); s.on("close", () => sockets.delete(s)); });
  await new Promise<void>((r) => srv.listen(0, host, r));
  const port = (srv.address() as { port: number }).port;
  h.url = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
  h.close = async () => { for (const s of sockets) s.destroy(); await new Promise<void>((r) => srv.close(() => r())); };
  return h;
}

/** Answers a Range request for `data` well (206, exact Content-Range, strong ETag); `null` when there is no Range. */
export function rangeReply(req: IncomingMessage, data: Uint8Array, etag = '"hostile-1"'): { start: number; end: number; headers: Record<string, string>; body: Uint8Array } | null {
  const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
  if (!m) return null;
  const start = Number(m[1]), end = Math.min(Number(m[2]), data.length - 1);
  return {
    start, end, body: data.subarray(start, end + 1),
    headers: { "content-range": `bytes ${start}-${end}/${data.length}`, "content-length": String(end - start + 1), etag },
  };
}
