// One Redfish service (a BMC) over HTTPS: the BMC's certificate is verified against a CA or pinned by its SHA-256
// fingerprint (never skipped), every request runs under a deadline our code enforces and every reply is size-capped
// as it arrives; links are followed only on the BMC's own origin; failures are BmcErrors that name the step, the
// BMC's reply (status and its Redfish messages, escaped) and what to do.
import { Agent, buildConnector, request } from "undici/index.js"; // the real package: Bun's built-in "undici" stub ignores `ca`
import { createHash } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { escapeText } from "../util/printable.ts";
import { isObj, objOf, strOf, type Json } from "./resource.ts";

/** How the BMC's certificate is checked: exactly one of a CA (chain and host name checked) or a leaf pin. */
export interface BmcTrust {
  /** PEM of the CA that issued the BMC's certificate (or the BMC's self-signed certificate itself). */
  caPem?: string;
  /** SHA-256 of the BMC's certificate (DER), 64 upper-case hex digits. */
  fingerprint?: string;
}

export interface RedfishOptions {
  trust: BmcTrust;
  /** Deadline of each request, from sending it to the last byte of the reply. */
  timeoutMs?: number;
  /** Largest reply accepted (bytes). */
  maxBytes?: number;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
export const MAX_REPLY = 1 << 20;

/** What `openssl` prints for a certificate's fingerprint, for the messages that ask for one. */
export const FINGERPRINT_HOWTO = (hostPort: string) =>
  `openssl s_client -connect ${hostPort} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256`;

export class BmcError extends Error {
  constructor(readonly step: string, readonly detail: string, readonly status = 0, readonly hint = "") {
    super(`${step}: ${detail}${hint ? ` (${hint})` : ""}`);
    this.name = "BmcError";
  }
}

/** `sha256:AB:CD:..`, `AB:CD:..`, `abcd..` or openssl's `sha256 Fingerprint=AB:..` as 64 upper-case hex digits. */
export function parseFingerprint(s: string): string {
  const t = s.trim().replace(/^sha256\s+fingerprint\s*=\s*/i, "").replace(/^sha256:/i, "");
  const hex = t.replace(/:/g, "");
  if (!/^[0-9a-fA-F]{64}$/.test(hex) || (t.includes(":") && !/^([0-9a-fA-F]{2}:){31}[0-9a-fA-F]{2}$/.test(t))) {
    throw new BmcError("--bmc-fingerprint", `"${escapeText(s.slice(0, 120))}" is not a SHA-256 fingerprint`, 0,
      "give sha256: followed by 64 hex digits, with or without colons, as openssl x509 -fingerprint -sha256 prints it");
  }
  return hex.toUpperCase();
}

export const formatFingerprint = (hex: string) => `sha256:${hex.match(/../g)!.join(":")}`;

/** The BMC's base URL: https://HOST[:PORT] only (no user info, path, query or fragment). */
export function parseBmcUrl(s: string): URL {
  let u: URL;
  try { u = new URL(s); } catch { throw new BmcError("--bmc", `"${escapeText(s.slice(0, 200))}" is not a URL`, 0, "give https://BMC-ADDRESS[:PORT]"); }
  if (u.protocol !== "https:") throw new BmcError("--bmc", `${escapeText(s.slice(0, 200))}: only https:// is used (the password goes to the BMC)`);
  if (u.username || u.password || u.search || u.hash || (u.pathname !== "/" && u.pathname !== "")) {
    throw new BmcError("--bmc", `${escapeText(s.slice(0, 200))}: give only https://HOST[:PORT] (no user, path, query or fragment)`);
  }
  return u;
}

/** The Messages of a Redfish error reply (`error.@Message.ExtendedInfo[].Message`, else `error.message`), escaped, bounded. */
export function redfishMessages(body: unknown): string[] {
  const err = objOf(body, "error");
  const out: string[] = [];
  const info = isObj(err) ? err["@Message.ExtendedInfo"] : isObj(body) ? body["@Message.ExtendedInfo"] : undefined;
  if (Array.isArray(info)) {
    for (const m of info.slice(0, 8)) {
      const msg = strOf(m, "Message", 4096) ?? strOf(m, "MessageId", 256);
      const res = strOf(m, "Resolution", 4096);
      if (msg) out.push(escapeText((msg.length > 500 ? `${msg.slice(0, 500)}...` : msg) + (res ? ` Resolution: ${res.slice(0, 300)}` : "")));
    }
  }
  const top = strOf(err, "message", 4096);
  if (out.length === 0 && top) out.push(escapeText(top.length > 500 ? `${top.slice(0, 500)}...` : top));
  return out;
}

/** A reply's JSON (undefined for an empty body); a BmcError naming the request if it is not JSON. */
export function parseReplyJson(text: string, step: string, where: string, status: number): unknown {
  if (text.trim() === "") return undefined;
  try { return JSON.parse(text); } catch {
    throw new BmcError(step, `${where}: HTTP ${status}, reply is not JSON: "${escapeText(text.slice(0, 80))}"`, status);
  }
}

export interface Reply {
  status: number;
  /** The JSON body; undefined for an empty body. */
  body: unknown;
  header(name: string): string | undefined;
}

type Auth = { kind: "none" } | { kind: "basic"; header: string } | { kind: "session"; token: string; location?: string };

/** A connector that accepts exactly the pinned certificate and sends nothing before checking it. */
function pinnedConnector(fingerprint: string, hostPort: string) {
  const base = buildConnector({ rejectUnauthorized: false, maxCachedSessions: 0 } as never);
  return ((opts: Record<string, unknown>, cb: (err: Error | null, socket?: unknown) => void) =>
    base(opts as never, ((err: Error | null, socket: TLSSocket) => {
      if (err) { cb(err); return; }
      const raw = socket.getPeerCertificate()?.raw;
      const got = raw ? createHash("sha256").update(raw).digest("hex").toUpperCase() : "";
      if (got !== fingerprint) {
        socket.destroy();
        const e = new Error(`the BMC's certificate has fingerprint ${got ? formatFingerprint(got) : "(none)"}, not the pinned ` +
          `${formatFingerprint(fingerprint)}; nothing was sent. If the BMC's certificate was replaced, check the new one ` +
          `out of band (the BMC's console or web UI) before pinning it: ${FINGERPRINT_HOWTO(hostPort)}`) as Error & { code: string };
        e.code = "AIRROOT_PIN_MISMATCH";
        cb(e);
        return;
      }
      cb(null, socket);
    }) as never)) as never;
}

export class Redfish {
  readonly origin: string;
  private agent: Agent;
  private auth: Auth = { kind: "none" };
  private timeoutMs: number;
  private maxBytes: number;
  /** Strings never to print as the BMC sent them (the password, the session token). */
  private secrets: string[] = [];
  private interrupted = false;
  private inflight = new Set<AbortController>();
  readonly hostPort: string;

  constructor(bmc: string, readonly o: RedfishOptions) {
    const u = parseBmcUrl(bmc);
    this.origin = u.origin;
    this.hostPort = `${u.hostname}:${u.port || 443}`;
    this.timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.maxBytes = o.maxBytes ?? MAX_REPLY;
    const t = o.trust;
    if (!t.caPem === !t.fingerprint) {
      throw new BmcError("BMC certificate", t.caPem ? "give either --bmc-ca or --bmc-fingerprint, not both" :
        `no way to verify ${this.origin}'s certificate: give --bmc-ca FILE (the CA that issued it, or the BMC's ` +
        `self-signed certificate itself) or pin it with --bmc-fingerprint sha256:..., whose value you read with ` +
        `\`${FINGERPRINT_HOWTO(this.hostPort)}\` and compare with the one the BMC's console or web UI shows; ` +
        `verification is never skipped`);
    }
    const connect = t.fingerprint ? pinnedConnector(t.fingerprint, this.hostPort) : { ca: t.caPem, rejectUnauthorized: true };
    this.agent = new Agent({ connect, connections: 1 });
  }

  addSecret(s: string): void { if (s.length >= 3) this.secrets.push(s); }

  /** Text from the BMC with any secret masked (a BMC might echo the password or the token in a message). */
  mask(s: string): string {
    let out = s;
    for (const x of this.secrets) out = out.split(x).join("***").split(escapeText(x)).join("***");
    return out;
  }

  useBasic(user: string, password: string): void {
    this.auth = { kind: "basic", header: `Basic ${Buffer.from(`${user}:${password}`, "utf8").toString("base64")}` };
  }
  useSession(token: string, location?: string): void { this.auth = { kind: "session", token, location }; this.addSecret(token); }
  get session(): { location?: string } | undefined { return this.auth.kind === "session" ? { location: this.auth.location } : undefined; }
  get authKind(): Auth["kind"] { return this.auth.kind; }
  dropAuth(): void { this.auth = { kind: "none" }; }

  /**
   * The path of a link the BMC sent, if it stays on the BMC's origin: a path starting with one "/" or an absolute URL
   * with the same origin. Anything else (another host, a protocol-relative "//host", another scheme) is refused.
   */
  resolve(link: unknown, step: string): string {
    const show = typeof link === "string" ? `"${escapeText(link.slice(0, 200))}"` : typeof link;
    if (typeof link !== "string" || link.length === 0 || link.length > 2048) throw new BmcError(step, `the BMC's link ${show} is not a usable path`);
    let u: URL | undefined;
    if (/^\/(?![\/\\])/.test(link) && !/[\\\x00-\x20\x7f]/.test(link)) { try { u = new URL(link, this.origin); } catch {} }
    else if (/^https:\/\//i.test(link)) { try { u = new URL(link); } catch {} }
    // A path starting "//" would read as another host wherever it is resolved again: refused too.
    if (!u || u.origin !== this.origin || u.username || u.password || u.pathname.startsWith("//")) {
      throw new BmcError(step, `the BMC's link ${show} leads off ${this.origin}: refused (only links on the BMC itself are followed)`);
    }
    return u.pathname + u.search;
  }

  /** One request under the deadline; the reply's JSON (size-capped). Non-2xx replies come back, they do not throw. */
  async call(step: string, method: "GET" | "POST" | "PATCH" | "DELETE", path: string, body?: unknown, extra: Record<string, string> = {}): Promise<Reply> {
    const headers: Record<string, string> = { accept: "application/json", "odata-version": "4.0", ...extra };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.auth.kind === "basic") headers.authorization = this.auth.header;
    if (this.auth.kind === "session") headers["x-auth-token"] = this.auth.token;
    if (this.interrupted && method !== "DELETE") throw new BmcError(step, "interrupted", 0, "nothing more was sent but the logout");
    const ac = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; ac.abort(); }, this.timeoutMs);
    this.inflight.add(ac);
    const secs = `${this.timeoutMs / 1000} s`;
    const where = `${method} ${escapeText(path.slice(0, 200))}`;
    try {
      let res;
      try {
        res = await request(`${this.origin}${path}`, {
          method, dispatcher: this.agent, headers, signal: ac.signal,
          body: body === undefined ? undefined : JSON.stringify(body),
          headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs,
        });
      } catch (e) {
        const err = e as Error & { code?: string };
        if (this.interrupted && !timedOut) throw new BmcError(step, `${where}: interrupted`, 0, "nothing more was sent but the logout");
        if (timedOut) throw new BmcError(step, `${where}: no reply within ${secs}`, 0, "is the BMC reachable and responsive? --timeout sets the deadline");
        if (err.code === "AIRROOT_PIN_MISMATCH") throw new BmcError(step, err.message);
        if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|HOSTNAME|altname/i.test(`${err.code ?? ""} ${err.message}`)) {
          throw new BmcError(step, `${this.origin}'s certificate is not trusted: ${escapeText(err.message.slice(0, 300))}; nothing was sent`, 0,
            `give the CA that issued it with --bmc-ca, or pin the certificate with --bmc-fingerprint (read it with \`${FINGERPRINT_HOWTO(this.hostPort)}\` and compare with the BMC's console or web UI)`);
        }
        throw new BmcError(step, `${where}: ${escapeText(err.message.slice(0, 300))}`, 0, "check --bmc and that the BMC is reachable");
      }
      const declared = Number(res.headers["content-length"] ?? "0");
      if (declared > this.maxBytes) {
        res.body.destroy();
        throw new BmcError(step, `${where}: reply of ${declared} bytes exceeds the ${this.maxBytes}-byte limit`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      try {
        for await (const c of res.body) {
          size += (c as Buffer).length;
          if (size > this.maxBytes) {
            res.body.destroy();
            throw new BmcError(step, `${where}: reply exceeds the ${this.maxBytes}-byte limit (cut after ${size} bytes)`);
          }
          chunks.push(c as Buffer);
        }
      } catch (e) {
        if (e instanceof BmcError) throw e;
        if (this.interrupted && !timedOut) throw new BmcError(step, `${where}: interrupted`, 0, "nothing more was sent but the logout");
        if (timedOut) throw new BmcError(step, `${where}: reply not complete within ${secs}`, 0, "is the BMC responsive? --timeout sets the deadline");
        throw new BmcError(step, `${where}: reply cut: ${escapeText((e as Error).message.slice(0, 300))}`);
      }
      const text = Buffer.concat(chunks).toString("utf8");
      const header = (name: string): string | undefined => {
        const v = res.headers[name.toLowerCase()];
        const s = Array.isArray(v) ? v[0] : v;
        return typeof s === "string" && s.length <= 4096 ? s : undefined;
      };
      if (res.statusCode >= 300 && res.statusCode < 400) {
        throw new BmcError(step, `${where}: HTTP ${res.statusCode} redirect${header("location") ? ` to ${escapeText(header("location")!.slice(0, 200))}` : ""} refused`, res.statusCode,
          "give --bmc as the BMC's final https:// address");
      }
      let json: unknown;
      try { json = parseReplyJson(text, step, where, res.statusCode); } catch (e) {
        if (res.statusCode < 300) throw e;
        json = undefined; // an error page: the status says enough
      }
      return { status: res.statusCode, body: json, header };
    } finally {
      clearTimeout(timer);
      this.inflight.delete(ac);
    }
  }

  /** Ctrl-C: the request in flight is abandoned and no other is sent but the session's DELETE. */
  interrupt(): void {
    this.interrupted = true;
    for (const ac of this.inflight) ac.abort();
  }

  /** A GET that must answer 200 with a JSON object. */
  async get(step: string, path: string, hint = ""): Promise<{ body: Json; etag?: string }> {
    const r = await this.call(step, "GET", path);
    this.check(step, `GET ${path}`, r, hint, [200]);
    if (!isObj(r.body)) throw new BmcError(step, `GET ${escapeText(path.slice(0, 200))}: the reply is not a JSON object`, r.status);
    return { body: r.body, etag: r.header("etag") };
  }

  /** Throws a BmcError naming the reply unless its status is one of `ok`. */
  check(step: string, what: string, r: Reply, hint: string, ok = [200, 201, 202, 204]): void {
    if (ok.includes(r.status)) return;
    throw this.replyError(step, what, r, hint);
  }

  replyError(step: string, what: string, r: Reply, hint: string): BmcError {
    const msgs = redfishMessages(r.body).map((m) => this.mask(m));
    const h = hint || (r.status === 401 ? "check --user and the password" : r.status === 403 ? "the BMC account lacks the privilege (it needs ConfigureComponents, ConfigureManager or Administrator)" : "");
    return new BmcError(step, `${escapeText(what.slice(0, 240))}: HTTP ${r.status}${msgs.length ? `: ${msgs.map((m) => `"${m}"`).join("; ")}` : ""}`, r.status, h);
  }

  async close(): Promise<void> { await this.agent.close().catch(() => {}); }
}
