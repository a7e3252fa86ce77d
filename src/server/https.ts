// The HTTPS listener: node:tls (Bun.serve cannot show the client certificate) feeding node:http, with requests and
// responses converted to web Request/Response so handlers stay transport-free; bodies are size-capped.
import tls from "node:tls";
import http from "node:http";
import type net from "node:net";
import type { Socket } from "node:net";
import { createHash } from "node:crypto";
import type { PeerInfo } from "./selfapi.ts";
import type { Logger } from "../util/log.ts";
import { ConnectionDeadlines, type DeadlineOptions } from "./deadlines.ts";

export interface RequestContext { remoteAddress: string; peer: PeerInfo }
export type Handler = (req: Request, ctx: RequestContext) => Promise<Response>;

export interface HttpsOptions {
  listen: { host: string; port: number }[];
  cert: string;              // server certificate chain (PEM)
  key: string;               // server private key (PEM)
  clientCa: string;          // CA(s) whose client certificates count as authorized (the node CA)
  handler: Handler;
  maxBodyBytes?: number;     // default 64 KiB: the API has no large uploads
  idleTimeoutMs?: number;    // default 120 s without any traffic on a connection
  /** Handshake, request-head, request and keep-alive deadlines (src/server/deadlines.ts); enforced by our timers. */
  deadlines?: DeadlineOptions;
  log?: Logger;
}

export interface HttpsServer {
  addresses: { host: string; port: number }[];
  /** Connections open now, and those cut for a passed deadline. */
  connections(): { open: number; cut: Record<string, number> };
  close(): Promise<void>;
}

const MAX_URL = 4096;

function peerOf(sock: tls.TLSSocket): PeerInfo {
  let serial: string | undefined, fingerprint: string | undefined;
  try {
    const c = sock.getPeerCertificate(false) as { serialNumber?: string; raw?: Buffer } | undefined;
    serial = c && typeof c.serialNumber === "string" && c.serialNumber ? c.serialNumber : undefined;
    fingerprint = c?.raw ? createHash("sha256").update(c.raw).digest("hex") : undefined;
  } catch { serial = undefined; }
  const err = (sock as { authorizationError?: Error | string }).authorizationError;
  return { present: serial !== undefined, authorized: sock.authorized === true, authorizationError: err ? String(err) : undefined, serial, fingerprint };
}

async function readBody(req: http.IncomingMessage, max: number): Promise<Uint8Array | "too-large"> {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > max) return "too-large";
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > max) return "too-large";
    chunks.push(c);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

/**
 * A header name as servers conventionally spell it (content-length -> Content-Length, etag -> ETag). Web Headers
 * hand names back in lower case; HTTP says case does not matter, but some clients compare them exactly: GRUB's HTTP
 * client (Debian 13's signed network GRUB, the Secure Boot chain) finds no "Content-Length: " in lower case, takes
 * the file as empty and stops at its prompt.
 */
export function conventionalHeaderName(name: string): string {
  if (name === "etag") return "ETag";
  if (name === "www-authenticate") return "WWW-Authenticate";
  return name.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
}

async function sendResponse(res: http.ServerResponse, r: Response, head: boolean, onProgress: () => void): Promise<void> {
  const headers: Record<string, string | string[]> = {};
  r.headers.forEach((v, k) => { headers[conventionalHeaderName(k)] = v; });
  res.writeHead(r.status, headers);
  if (!r.body || head) { res.end(); r.body?.cancel().catch(() => {}); return; }
  const reader = r.body.getReader();
  let aborted = false;
  res.on("close", () => { if (!res.writableFinished) { aborted = true; reader.cancel().catch(() => {}); } });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || aborted) break;
      if (!res.write(value)) {
        await new Promise<void>((ok) => {
          const resume = () => { res.off("drain", resume); res.off("close", resume); ok(); };
          res.on("drain", resume);
          res.on("close", resume);
        });
      }
      onProgress(); // the client took this chunk: the send-stall deadline starts again
    }
  } finally { if (!aborted) res.end(); }
}

const plain = (res: http.ServerResponse, status: number, code: string, message: string) => {
  res.writeHead(status, { "content-type": "application/json", connection: "close" });
  res.end(JSON.stringify({ error: code, message }));
};

export interface RequestServerOptions {
  handler: Handler;
  maxBodyBytes?: number;
  deadlines: ConnectionDeadlines;
  log?: Logger;
  /** "https" or "http": log prefix. */
  label: string;
  peer: (sock: Socket) => PeerInfo;
}

/**
 * The node:http server shared by the HTTPS and the plain-HTTP listener: requests converted to web Requests (path
 * checked, body capped), the handler's Response streamed back, every phase under the connection deadlines. The
 * listeners hand it their connections with emit("connection").
 */
export function requestServer(o: RequestServerOptions): http.Server {
  const max = o.maxBodyBytes ?? 64 * 1024;
  const deadlines = o.deadlines;
  return http.createServer(async (req, res) => {
    const sock = req.socket;
    const remoteAddress = (sock.remoteAddress ?? "").replace(/^::ffff:/, "");
    deadlines.requestStarted(sock);
    res.once("finish", () => deadlines.responseDone(sock));
    try {
      const url = req.url ?? "/";
      if (!url.startsWith("/") || url.length > MAX_URL) return plain(res, 400, "bad-request", "request target must be a path shorter than 4 KiB");
      const method = req.method ?? "GET";
      let body: Uint8Array | undefined;
      if (method !== "GET" && method !== "HEAD") {
        const b = await readBody(req, max);
        if (b === "too-large") return plain(res, 413, "body-too-large", `request body is larger than ${max} bytes`);
        body = b;
      }
      const headers = new Headers();
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v); else if (Array.isArray(v)) headers.set(k, v.join(", "));
      let request: Request;
      try { request = new Request(`${o.label === "http" ? "http" : "https"}://airroot.invalid${url}`, { method, headers, body }); } catch {
        return plain(res, 400, "bad-request", "malformed request target or headers");
      }
      const response = await o.handler(request, { remoteAddress, peer: o.peer(sock) });
      await sendResponse(res, response, method === "HEAD", () => deadlines.sending(sock));
    } catch (e) {
      o.log?.error(`${o.label}: ${req.method} ${req.url?.slice(0, 200)} from ${remoteAddress}: ${(e as Error).message}`);
      if (!res.headersSent) plain(res, 500, "internal", "internal server error (see the server log)");
      else res.destroy();
    }
  });
}

/** Starts one TLS listener per address; each connection is handed to a shared node:http server. */
export async function startHttps(o: HttpsOptions): Promise<HttpsServer> {
  const deadlines = new ConnectionDeadlines(o.deadlines, (phase, sock) =>
    o.log?.debug(`https: connection from ${sock.remoteAddress ?? "?"} cut: ${phase} deadline passed`));
  const httpServer = requestServer({ handler: o.handler, maxBodyBytes: o.maxBodyBytes, deadlines, log: o.log, label: "https", peer: (sock) => peerOf(sock as tls.TLSSocket) });
  const { servers, addresses } = await listenAll("https", o.listen, () => {
    const s = tls.createServer({
      cert: o.cert, key: o.key, ca: o.clientCa,
      requestCert: true, rejectUnauthorized: false, // the handshake succeeds without a client cert: /images and /enroll need none
      minVersion: "TLSv1.2",
    }, (sock) => {
      deadlines.secured(sock);
      // A connection with no traffic either way for this long is dropped (a stalled reader of a long reply).
      sock.setTimeout(o.idleTimeoutMs ?? 120_000, () => sock.destroy());
      httpServer.emit("connection", sock);
    });
    s.on("connection", (sock: tls.TLSSocket) => deadlines.connected(sock));
    s.on("tlsClientError", () => { /* failed handshakes are the client's problem; nothing to log per attempt */ });
    return s;
  });
  return {
    addresses,
    connections: () => ({ open: deadlines.size, cut: { ...deadlines.cut } }),
    close: () => closeAll(servers, deadlines, httpServer),
  };
}

type Listen = { host: string; port: number };

/** Listens with one server per address (made by `make`); on any failure closes those already listening. */
export async function listenAll(label: string, listen: Listen[], make: (l: Listen) => net.Server): Promise<{ servers: net.Server[]; addresses: Listen[] }> {
  const servers: net.Server[] = [];
  const addresses: Listen[] = [];
  try {
    for (const l of listen) {
      const s = make(l);
      await new Promise<void>((ok, fail) => { s.once("error", fail); s.listen(l.port, l.host, () => { s.off("error", fail); ok(); }); });
      servers.push(s);
      const a = s.address();
      addresses.push({ host: l.host, port: typeof a === "object" && a ? a.port : l.port });
    }
  } catch (e) {
    for (const s of servers) s.close();
    throw new Error(`${label}: cannot listen on ${listen.map((l) => `${l.host}:${l.port}`).join(", ")}: ${(e as Error).message}`);
  }
  return { servers, addresses };
}

/** Stops listening and ends every connection, whatever its phase (mid-handshake included), or close() would wait on the clients. */
export async function closeAll(servers: net.Server[], deadlines: ConnectionDeadlines, httpServer: http.Server): Promise<void> {
  const closed = Promise.all(servers.map((s) => new Promise<void>((ok) => s.close(() => ok()))));
  deadlines.destroyAll();
  await Promise.race([closed, Bun.sleep(2000)]);
  httpServer.close();
}
