// Request routing for `airroot serve`: /images/* (static), POST /api/v1/enroll, GET /api/v1/info, the
// mutual-TLS /api/v1/self/* calls and the boot reporter's POST /api/v1/report (a one-boot token, no client
// certificate); every reply is JSON with a clear error code, every refusal audited.
import type { Db } from "./store/sql.ts";
import { serveImages } from "./static.ts";
import { ApiError, errorResponse, json } from "./apierror.ts";
import { activate, activateRequestSchema, enroll, enrollRequestSchema, type EnrollDeps } from "./enroll.ts";
import { authenticate, nodeConfig, reportStatus, sshCertificates, sshCertRequestSchema, statusRequestSchema, type SelfDeps } from "./selfapi.ts";
import { issueReportToken, reportRequestSchema, reportTokenRequestSchema, reportWithToken } from "./report.ts";
import { parseJson, SchemaError, type Validator } from "./schema.ts";
import type { Handler } from "./https.ts";
import { RateLimiter, type RateLimiterOptions } from "./ratelimit.ts";
import type { Logger } from "../util/log.ts";
import type { ServerMetrics } from "./metrics.ts";

export interface ApiDeps {
  db: Db;
  imagesDir: string;
  serverId: string;
  enroll: Omit<EnrollDeps, "db" | "audit">;
  self: Omit<SelfDeps, "db" | "audit">;
  audit: EnrollDeps["audit"];
  log?: Logger;
  enrollRateLimit?: RateLimiterOptions; // per source address; default 30 per minute (POST report: the same, counted apart)
  metrics?: ServerMetrics;               // outcomes counted for GET /metrics (metrics.ts)
}

export const API_PREFIX = "/api/v1/";

async function body<T>(req: Request, v: Validator<T>, what: string, audit: ApiDeps["audit"], remote: string): Promise<T> {
  const ct = req.headers.get("content-type") ?? "";
  if (!/^application\/json\b/i.test(ct)) throw new ApiError(415, "bad-content-type", "send the body as application/json");
  try {
    return parseJson(await req.text(), v);
  } catch (e) {
    if (e instanceof SchemaError) {
      audit.record({ event: what, outcome: "refused", remote, reason: e.message });
      throw new ApiError(400, "bad-request", e.message);
    }
    throw e;
  }
}

/** d.enroll and d.self are read at every request: `airroot serve` updates them in place when config.json changes. */
export function createApi(d: ApiDeps): Handler {
  const limiter = new RateLimiter(d.enrollRateLimit);
  const reportLimiter = new RateLimiter(d.enrollRateLimit);
  return async (req, ctx) => {
    const enrollDeps: EnrollDeps = { ...d.enroll, db: d.db, audit: d.audit };
    const selfDeps: SelfDeps = { ...d.self, db: d.db, audit: d.audit };
    const url = new URL(req.url);
    const path = url.pathname;
    try {
      const img = await serveImages(req, d.imagesDir, {
        onRefused: (reason, p, method) => d.audit.record({ event: "images", outcome: "refused", remote: ctx.remoteAddress, reason: `${method} ${p}: ${reason}` }),
      });
      if (img) return img;
      if (!path.startsWith(API_PREFIX)) throw new ApiError(404, "not-found", `no such path ${path.slice(0, 100)}`);
      const route = `${req.method} ${path.slice(API_PREFIX.length)}`;
      if (route === "GET info") {
        return json(200, { serverId: d.serverId, apiVersion: 1, serverTime: new Date().toISOString(), servers: d.self.apiBaseUrls() });
      }
      if ((route === "POST enroll" || route === "POST enroll/activate") && !limiter.allow(ctx.remoteAddress)) {
        d.audit.record({ event: "enroll", outcome: "refused", remote: ctx.remoteAddress, reason: "rate limit" });
        throw new ApiError(429, "too-many-requests", "too many enrollment attempts from this address; wait a minute");
      }
      if (route === "POST enroll") {
        const r = await enroll(enrollDeps, await body(req, enrollRequestSchema, "enroll", d.audit, ctx.remoteAddress), ctx.remoteAddress);
        d.metrics?.enrolled("challenge" in r ? "challenged" : "enrolled");
        return json(200, r);
      }
      if (route === "POST enroll/activate") {
        const r = await activate(enrollDeps, await body(req, activateRequestSchema, "enroll", d.audit, ctx.remoteAddress), ctx.remoteAddress);
        d.metrics?.enrolled("enrolled");
        return json(200, r);
      }
      if (route === "POST report") {
        // Unauthenticated TLS like enrollment: limited per source address the same way.
        if (!reportLimiter.allow(ctx.remoteAddress)) {
          d.audit.record({ event: "report", outcome: "refused", remote: ctx.remoteAddress, reason: "rate limit" });
          throw new ApiError(429, "too-many-requests", "too many reports from this address; wait a minute");
        }
        await reportWithToken(selfDeps, await body(req, reportRequestSchema, "report", d.audit, ctx.remoteAddress), ctx.remoteAddress);
        return json(200, { ok: true });
      }
      if (path.startsWith(`${API_PREFIX}self/`)) {
        const node = await authenticate(selfDeps, ctx.peer, ctx.remoteAddress, path);
        if (route === "GET self/config") {
          const r = await nodeConfig(selfDeps, node);
          d.metrics?.configServed();
          return json(200, r);
        }
        if (route === "POST self/sshcert") {
          const r = await sshCertificates(selfDeps, node, await body(req, sshCertRequestSchema, "sshcert", d.audit, ctx.remoteAddress), ctx.remoteAddress);
          d.metrics?.sshCertsServed(r.certificates.length);
          return json(200, r);
        }
        if (route === "POST self/status") {
          await reportStatus(selfDeps, node, await body(req, statusRequestSchema, "status", d.audit, ctx.remoteAddress));
          return json(200, { ok: true });
        }
        if (route === "POST self/report-token") {
          // The body is optional (nodes before untethering sent none).
          const r = req.headers.get("content-type") ? await body(req, reportTokenRequestSchema, "report-token", d.audit, ctx.remoteAddress) : {};
          return json(200, await issueReportToken(selfDeps, node, ctx.peer, ctx.remoteAddress, r));
        }
      }
      const known = ["info", "enroll", "enroll/activate", "report", "self/config", "self/sshcert", "self/status", "self/report-token"].includes(path.slice(API_PREFIX.length));
      throw known ? new ApiError(405, "method-not-allowed", `${req.method} is not allowed on ${path}`)
        : new ApiError(404, "not-found", `no API endpoint ${path.slice(0, 100)}`);
    } catch (e) {
      if (e instanceof ApiError) { d.metrics?.refused(path, e.code); return errorResponse(e); }
      d.metrics?.refused(path, undefined);
      d.log?.error(`api: ${req.method} ${path.slice(0, 200)}: ${(e as Error).stack ?? e}`);
      return json(500, { error: "internal", message: "internal server error (see the server log)" });
    }
  };
}
