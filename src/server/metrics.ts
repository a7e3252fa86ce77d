// `airroot serve`'s metrics: what GET /metrics answers (Prometheus text format) and who may ask. Every label value
// comes from a fixed set in this file (route classes, API error codes, outcomes, known boot stages), never from the
// request: a path, node name or stage string sent by a client could otherwise grow the series without bound.
//
// Who may read: the page gives node counts per boot stage and the site's request rates, which an attacker on the
// boot network has no business knowing, so by default only loopback may read it (a Prometheus or node_exporter on the
// server itself, or an SSH tunnel); `airroot serve config add metrics-subnets CIDR` opens it to a monitoring host or
// network. Everyone else gets 403 and an audit line.
import type { Db } from "./store/sql.ts";
import { CONTENT_TYPE, Registry } from "../util/prometheus.ts";
import { inCidr, parseCidr, parseIp, type Cidr } from "./netaddr.ts";
import { json } from "./apierror.ts";
import type { Audit } from "./audit.ts";
import { countByStage } from "./store/nodes.ts";

export const METRICS_PATH = "/metrics";

const LOOPBACK = [parseCidr("127.0.0.0/8"), parseCidr("::1/128")];

/** The API endpoints (under /api/v1/) that are their own route class; every other path falls into a broad class. */
const API_ROUTES = ["info", "enroll", "enroll/activate", "report", "self/config", "self/sshcert", "self/status", "self/report-token"] as const;

/** The route class of a request: one of a fixed, small set (the latency histogram's and the counters' label). */
export function routeClass(path: string): string {
  if (path === METRICS_PATH) return "metrics";
  if (path === "/boot" || path.startsWith("/boot/")) return "boot";
  if (path.startsWith("/images/")) return "images";
  if (path.startsWith("/api/v1/")) {
    const rest = path.slice("/api/v1/".length);
    return (API_ROUTES as readonly string[]).includes(rest) ? rest : "api-other";
  }
  return "other";
}

/**
 * Boot stages reported by airroot's own node side (`airroot enroll`'s default, init's steps, the boot reporter's).
 * A node may post any short [a-z0-9._-] word, so anything else is counted as "other".
 */
export const KNOWN_STAGES = ["enrolled", "trusted", "root-mounted", "switching-root", "switched-root", "running", "boot-stalled", "failed"] as const;

// An API error code is one of the constants in the server's source ("identity-mismatch", "replay", ...); the check
// keeps a future code built from input from turning into a label.
const CODE = /^[a-z][a-z0-9-]{0,39}$/;

export type EnrollOutcome = "enrolled" | "challenged" | "refused" | "error";

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly requests = this.registry.counter("airroot_serve_requests_total",
    "Requests answered, by route class and HTTP status.", ["route", "code"]);
  private readonly latency = this.registry.histogram("airroot_serve_request_duration_seconds",
    "Time from a request's head to its response head (bodies stream after), by route class.", ["route"]);
  private readonly enrollments = this.registry.counter("airroot_serve_enrollments_total",
    "Enrollment requests (POST enroll and enroll/activate) by outcome: enrolled (certificate issued), challenged (TPM challenge sent), refused, error.", ["outcome"]);
  private readonly refusals = this.registry.counter("airroot_serve_refusals_total",
    "API requests refused, by route class and reason (the error code in the reply).", ["route", "reason"]);
  private readonly configs = this.registry.counter("airroot_serve_config_requests_total",
    "Node config requests (GET self/config) by outcome: served, refused, error.", ["outcome"]);
  private readonly sshcerts = this.registry.counter("airroot_serve_sshcert_requests_total",
    "SSH host certificate requests (POST self/sshcert) by outcome: served, refused, error.", ["outcome"]);
  private readonly issued = this.registry.counter("airroot_serve_certificates_issued_total",
    "Certificates issued: node (client certificates, at enrollment) and ssh-host (SSH host certificates).", ["kind"]);
  private readonly nodes = this.registry.gauge("airroot_serve_nodes",
    `Nodes in the node store by last reported boot stage (none: never reported; other: a stage not in ${KNOWN_STAGES.join(", ")}).`, ["stage"]);
  private readonly started = this.registry.gauge("airroot_serve_start_time_seconds", "When this airroot serve started (Unix time).");

  private readonly db?: Db;

  constructor(db?: Db, connections?: () => { open: number; cut: Record<string, number> }) {
    for (const outcome of ["enrolled", "challenged", "refused", "error"]) this.enrollments.touch({ outcome });
    for (const outcome of ["served", "refused", "error"]) { this.configs.touch({ outcome }); this.sshcerts.touch({ outcome }); }
    for (const kind of ["node", "ssh-host"]) this.issued.touch({ kind });
    this.started.set({}, Math.round(Date.now() / 1000));
    this.db = db;
    if (connections) {
      const open = this.registry.gauge("airroot_serve_connections_open", "HTTPS connections open now.");
      const cut = this.registry.counter("airroot_serve_connections_cut_total", "HTTPS connections cut because a deadline passed (handshake, headers, request, response, keep-alive), by deadline.", ["deadline"]);
      this.registry.onCollect(() => {
        const c = connections();
        open.set({}, c.open);
        for (const [deadline, n] of Object.entries(c.cut)) cut.mirror({ deadline: CODE.test(deadline) ? deadline : "other" }, n);
      });
    }
  }

  /** One request answered (any listener), timed from its head to the handler's Response. */
  request(path: string, status: number, seconds: number): void {
    const route = routeClass(path);
    this.requests.inc({ route, code: Number.isInteger(status) && status >= 100 && status <= 599 ? String(status) : "other" });
    this.latency.observe({ route }, seconds);
  }

  /** An enrollment step that succeeded: a certificate (enrolled) or a TPM challenge (challenged). */
  enrolled(outcome: "enrolled" | "challenged"): void {
    this.enrollments.inc({ outcome });
    if (outcome === "enrolled") this.issued.inc({ kind: "node" });
  }

  configServed(): void { this.configs.inc({ outcome: "served" }); }

  sshCertsServed(certificates: number): void {
    this.sshcerts.inc({ outcome: "served" });
    this.issued.inc({ kind: "ssh-host" }, certificates);
  }

  /** An API call refused with an error code (a 4xx), or failed (a 500: code undefined). */
  refused(path: string, code: string | undefined): void {
    const route = routeClass(path);
    const outcome = code === undefined ? "error" : "refused";
    if (code !== undefined) this.refusals.inc({ route, reason: CODE.test(code) ? code : "other" });
    if (route === "enroll" || route === "enroll/activate") this.enrollments.inc({ outcome });
    else if (route === "self/config") this.configs.inc({ outcome });
    else if (route === "self/sshcert") this.sshcerts.inc({ outcome });
  }

  render(): string { return this.registry.render(); }

  /** Reads what the gauges show from the database (a query, so before render, which is synchronous). */
  async refresh(): Promise<void> {
    if (!this.db) return;
    const counts = new Map<string, number>([["none", 0], ["other", 0], ...KNOWN_STAGES.map((s) => [s, 0] as [string, number])]);
    for (const { stage, n } of await countByStage(this.db)) {
      const k = stage === null ? "none" : counts.has(stage) ? stage : "other";
      counts.set(k, counts.get(k)! + n);
    }
    this.nodes.reset();
    for (const [stage, n] of counts) this.nodes.set({ stage }, n);
  }
}

/** Whether `remote` may read /metrics: loopback always, else only from the configured subnets. */
export function metricsAllowed(remote: string, subnets: readonly string[]): boolean {
  const ip = parseIp(remote);
  if (!ip) return false;
  const nets: Cidr[] = [...LOOPBACK, ...subnets.flatMap((s) => { try { return [parseCidr(s)]; } catch { return []; } })];
  return nets.some((c) => inCidr(ip, c));
}

/** GET/HEAD /metrics: the page for an allowed reader, a 403 (audited, counted) for anyone else. */
export async function metricsResponse(m: ServerMetrics, req: Request, remote: string, subnets: readonly string[], audit: Audit): Promise<Response> {
  if (!metricsAllowed(remote, subnets)) {
    audit.record({ event: "metrics", outcome: "refused", remote, reason: "not loopback or a metrics-subnets address" });
    m.refused(METRICS_PATH, "metrics-not-allowed");
    return json(403, { error: "metrics-not-allowed", message: "metrics are served to loopback and the metrics-subnets of the server's config only (`airroot serve config add metrics-subnets CIDR`)" });
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    return json(405, { error: "method-not-allowed", message: `${req.method} is not allowed on ${METRICS_PATH}` }, { allow: "GET, HEAD" });
  }
  await m.refresh();
  return new Response(m.render(), { status: 200, headers: { "content-type": CONTENT_TYPE, "cache-control": "no-store" } });
}

/** Wraps a listener's handler so every request is counted and timed (a handler that throws counts as a 500). */
export function timed<C>(m: ServerMetrics, handler: (req: Request, ctx: C) => Promise<Response>): (req: Request, ctx: C) => Promise<Response> {
  return async (req, ctx) => {
    const t0 = performance.now();
    let status = 500;
    try {
      const r = await handler(req, ctx);
      status = r.status;
      return r;
    } finally {
      m.request(new URL(req.url).pathname, status, (performance.now() - t0) / 1000);
    }
  };
}
