// HTTPS JSON calls from a node to an airroot server: the site CA pins the server, an optional client certificate
// authenticates the node; replies are size-capped and every failure names the call and what to do.
import { Agent, buildConnector, request } from "undici/index.js"; // the real package: Bun's built-in "undici" stub ignores `ca`
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { splitZone } from "./zone.ts";

export interface TlsIdentity { ca: string; cert?: string; key?: string }

/**
 * An undici Agent for one https server, pinned to `tlsId.ca`. For a zoned URL the connection goes to address%zone
 * (getaddrinfo takes the scope) and the certificate must name the address without the zone. Returns the URL to
 * request (without the zone).
 */
export function httpsAgent(url: string, tlsId: TlsIdentity, connections = 4, connectTimeoutMs = API_TIMEOUT_MS): { url: string; agent: Agent } {
  const z = splitZone(url);
  const tls = { ca: tlsId.ca, cert: tlsId.cert, key: tlsId.key, rejectUnauthorized: true, timeout: connectTimeoutMs };
  if (!z.zone) return { url, agent: new Agent({ connect: tls, connections }) };
  const scoped = `${z.address}%${z.zone}`;
  const base = buildConnector({ ...tls, checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(z.address!, cert) } as never);
  const connect = ((opts: Record<string, unknown>, cb: never) => base({ ...opts, hostname: scoped } as never, cb)) as never;
  return { url: z.url, agent: new Agent({ connect, connections }) };
}

export class ApiCallError extends Error {
  constructor(readonly call: string, readonly status: number, readonly code: string, message: string) {
    super(`${call}: ${status ? `HTTP ${status} ${code}: ` : ""}${message}`);
    this.name = "ApiCallError";
  }
  /** The server no longer accepts our certificate: the node must enroll again (once an admin arms it). */
  get needsEnrollment(): boolean { return this.status === 401; }
}

export const MAX_REPLY = 1 << 20;

/**
 * The most one API call may take, connect and TLS handshake to the last byte of the reply: a server that accepts and
 * then hangs (stopped, black-holed, trickling) costs the node this long once before it tries the next server.
 */
export const API_TIMEOUT_MS = 15_000;

export class ApiHttp {
  private agent: Agent;
  /** baseUrl without an IPv6 zone (the agent connects through the zone). */
  private target: string;
  constructor(readonly baseUrl: string, tlsId: TlsIdentity, private timeoutMs = API_TIMEOUT_MS) {
    if (!/^https:\/\//.test(baseUrl)) throw new Error(`server URL "${baseUrl}" must start with https://`);
    const a = httpsAgent(baseUrl, tlsId, 4, timeoutMs);
    this.agent = a.agent;
    this.target = a.url;
  }

  async call<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
    const call = `${method} ${this.baseUrl}${path}`;
    // One deadline for the whole call (undici's own timeouts are per phase: a trickling reply would outlast them).
    const signal = AbortSignal.timeout(this.timeoutMs);
    const unreachable = (e: unknown) => new ApiCallError(call, 0, "unreachable",
      `${signal.aborted ? `no complete reply within ${this.timeoutMs / 1000} s` : (e as Error).message} (check the URL, the network and that --ca is the site CA)`);
    let res;
    try {
      res = await request(`${this.target.replace(/\/$/, "")}${path}`, {
        method, dispatcher: this.agent, signal,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs,
      });
    } catch (e) {
      throw unreachable(e);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const c of res.body) {
        size += (c as Buffer).length;
        if (size > MAX_REPLY) { res.body.destroy(); throw new ApiCallError(call, res.statusCode, "reply-too-large", `reply exceeds ${MAX_REPLY} bytes`); }
        chunks.push(c as Buffer);
      }
    } catch (e) {
      // A reply cut off (the server died or hung mid-reply) is "unreachable": the next server is tried.
      if (e instanceof ApiCallError) throw e;
      throw unreachable(e);
    }
    const text = Buffer.concat(chunks).toString("utf8");
    let data: unknown;
    try { data = JSON.parse(text); } catch {
      throw new ApiCallError(call, res.statusCode, "bad-reply", `reply is not JSON: ${text.slice(0, 80).replace(/[^\x20-\x7e]/g, "?")}`);
    }
    if (res.statusCode !== 200) {
      const e = data as { error?: unknown; message?: unknown };
      throw new ApiCallError(call, res.statusCode, typeof e?.error === "string" ? e.error : "error",
        typeof e?.message === "string" ? e.message.slice(0, 500) : "no message");
    }
    return data as T;
  }

  async close(): Promise<void> { await this.agent.close(); }
}

export interface HttpsGetReply {
  status: number;
  header(name: string): string | null;
  body: AsyncIterable<Uint8Array>;
  /** Releases the connection (after the body was read, or to abandon it). */
  close(): Promise<void>;
}

/**
 * A GET of an https URL pinned to `ca`, for downloads (a whole image). Redirects are not followed (a 3xx comes back as
 * is). A URL with an IPv6 zone goes through undici with httpsAgent (fetch refuses zones); any other through fetch.
 */
export async function httpsGet(url: string, ca: string, signal?: AbortSignal): Promise<HttpsGetReply> {
  const z = splitZone(url);
  if (!z.zone) {
    const res = await fetch(url, { tls: { ca }, redirect: "manual", signal } as RequestInit);
    const body = res.body ?? (async function* () {})();
    return { status: res.status, header: (n) => res.headers.get(n), body: body as AsyncIterable<Uint8Array>,
      close: async () => { try { await res.body?.cancel(); } catch {} } };
  }
  const { url: target, agent } = httpsAgent(url, { ca }, 1);
  try {
    const res = await request(target, { method: "GET", dispatcher: agent, signal });
    return {
      status: res.statusCode,
      header: (n) => { const v = res.headers[n.toLowerCase()]; return v === undefined ? null : Array.isArray(v) ? v.join(", ") : String(v); },
      body: res.body as AsyncIterable<Uint8Array>,
      close: async () => { try { res.body.destroy(); } catch {} await agent.close().catch(() => {}); },
    };
  } catch (e) {
    await agent.close().catch(() => {});
    throw e;
  }
}
