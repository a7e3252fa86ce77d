// HTTPS JSON calls from a node to an airroot server: the site CA pins the server, an optional client certificate
// authenticates the node; replies are size-capped and every failure names the call and what to do.
import { Agent, request } from "undici/index.js"; // the real package: Bun's built-in "undici" stub ignores `ca`

export interface TlsIdentity { ca: string; cert?: string; key?: string }

export class ApiCallError extends Error {
  constructor(readonly call: string, readonly status: number, readonly code: string, message: string) {
    super(`${call}: ${status ? `HTTP ${status} ${code}: ` : ""}${message}`);
    this.name = "ApiCallError";
  }
  /** The server no longer accepts our certificate: the node must enroll again (once an admin arms it). */
  get needsEnrollment(): boolean { return this.status === 401; }
}

export const MAX_REPLY = 1 << 20;

export class ApiHttp {
  private agent: Agent;
  constructor(readonly baseUrl: string, tlsId: TlsIdentity, private timeoutMs = 15_000) {
    if (!/^https:\/\//.test(baseUrl)) throw new Error(`server URL "${baseUrl}" must start with https://`);
    this.agent = new Agent({ connect: { ca: tlsId.ca, cert: tlsId.cert, key: tlsId.key, rejectUnauthorized: true }, connections: 4 });
  }

  async call<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
    const call = `${method} ${this.baseUrl}${path}`;
    let res;
    try {
      res = await request(`${this.baseUrl.replace(/\/$/, "")}${path}`, {
        method, dispatcher: this.agent,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs,
      });
    } catch (e) {
      throw new ApiCallError(call, 0, "unreachable", `${(e as Error).message} (check the URL, the network and that --ca is the site CA)`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of res.body) {
      size += (c as Buffer).length;
      if (size > MAX_REPLY) { res.body.destroy(); throw new ApiCallError(call, res.statusCode, "reply-too-large", `reply exceeds ${MAX_REPLY} bytes`); }
      chunks.push(c as Buffer);
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
