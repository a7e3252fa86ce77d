// `airroot serve`: loads the state dir and runs the HTTPS server (images, network boot files, node API, /metrics), the optional
// plain-HTTP listener for network boot (/boot/ only) and the discovery responder. config.json is re-read when it
// changes (checked every CONFIG_CHECK_MS, and on reloadConfig(), which the CLI calls on SIGHUP); listen addresses,
// ports and the discovery port wait for a restart.
import { readImageKey } from "../image/imagekeys.ts";
import { statSync } from "node:fs";
import { hostname } from "node:os";
import { openDatabase } from "./store/db.ts";
import { dbAudit } from "./store/auditlog.ts";
import { certCoverageWarning, hostsNotInServerCert, loadState, readConfig, type ServerConfig } from "./state.ts";
import { startHttps } from "./https.ts";
import { startHttp, type HttpServer } from "./http.ts";
import { plainHttpHandler, serveNetboot, type NetbootDeps } from "./netboot.ts";
import type { DeadlineOptions } from "./deadlines.ts";
import { createApi, type ApiDeps } from "./api.ts";
import { fileAudit, teeAudit, type Audit } from "./audit.ts";
import { startResponder, type Responder } from "./discovery.ts";
import type { Logger } from "../util/log.ts";
import { advertiseNotes, advertisedUrls, advertiseWarnings, listenerUrls, parseBaseUrl, siteApiUrls, urlHostname } from "./urls.ts";
import { CONFIG_CHECK_MS, keyOfField } from "./configedit.ts";
import { imageSourcePlan } from "./imagesources.ts";
import { METRICS_PATH, metricsResponse, ServerMetrics, timed } from "./metrics.ts";
import { heartbeatInterval, startHeartbeat, type Heartbeat } from "./heartbeat.ts";

export interface ServeOptions {
  stateDir: string;
  /** "sqlite" or a postgres:// URL shared by several servers; default: config.json's `db` (else STATE/airroot.db). */
  db?: string;
  /** The PostgreSQL password's file; default: config.json's `dbPasswordFile`. */
  dbPasswordFile?: string;
  /** "ADDR:PORT" / "[V6]:PORT"; default every address on the configured port. */
  listen?: string[];
  /** Base URLs nodes are given for this server, instead of config.json's (`advertise`, else addresses x port). */
  advertise?: string[];
  /**
   * Plain-HTTP listeners for network boot ("ADDR:PORT"); default: when config http-port is set, the hosts of the
   * HTTPS listeners on that port; none otherwise.
   */
  httpListen?: string[];
  /** Connection deadlines of both listeners (tests shorten them). */
  deadlines?: DeadlineOptions;
  discovery?: boolean;      // default: on unless config.discoveryPort is 0
  discoveryPort?: number;   // overrides config.discoveryPort
  /** How often config.json's mtime/size is checked (ms); 0: only on reloadConfig(). Default CONFIG_CHECK_MS. */
  configCheckMs?: number;
  /** How often this server's row in the servers table is refreshed (ms); default $AIRROOT_HEARTBEAT_MS, else 15 s. */
  heartbeatMs?: number;
  log?: Logger;
  audit?: Audit;
}

export interface RunningServer {
  /** The advertised base URLs: what nodes are told (from the configuration, never from a listen address). */
  readonly baseUrls: string[];
  /** URLs of the actual listeners, for clients on this machine (a wildcard listener as loopback). */
  localUrls: string[];
  listening: { host: string; port: number }[];
  /** The plain-HTTP (network boot) listeners, if any. */
  httpListening: { host: string; port: number }[];
  /** http:// URLs of those listeners for clients on this machine. */
  httpLocalUrls: string[];
  /** The configuration in use. */
  readonly config: ServerConfig;
  /** Re-reads config.json now; returns the keys that changed. Throws (keeping the old config) if the file is invalid. */
  reloadConfig(): string[];
  close(): Promise<void>;
}

export function parseListen(s: string, what = "--listen"): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`invalid ${what} "${s}": use IPV4:PORT or [IPV6]:PORT (port 0 picks a free one)`);
  return { host: m[1] ?? m[2], port };
}

// Read once at start: changing them needs new sockets (or is an identity change).
const RESTART_ONLY = ["port", "httpPort", "discoveryPort", "serverId", "version", "db", "dbPasswordFile"] as const;

export async function serve(o: ServeOptions): Promise<RunningServer> {
  const st = await loadState(o.stateDir);
  let c = st.config;
  const beatMs = heartbeatInterval(o.heartbeatMs);
  const db = await openDatabase(o.stateDir, { db: o.db, passwordFile: o.dbPasswordFile });
  // audit.log (or the caller's) and the database's audit_log, which every server sharing the database writes to.
  const trail = dbAudit(db, `${c.serverId}@${hostname()}[${process.pid}]`, o.log);
  const audit = teeAudit(o.audit ?? fileAudit(st.paths.audit, o.log), trail);
  o.log?.info(`records in ${db.dialect === "postgres" ? `PostgreSQL ${db.where}` : db.where}`);
  const listen = o.listen?.length ? o.listen.map((l) => parseListen(l)) : [{ host: "::", port: c.port }];
  const override = o.advertise?.map((u) => parseBaseUrl(u, "--advertise"));
  const advertised = (cfg: ServerConfig) => (override?.length ? [...new Set(override)] : advertisedUrls(cfg));
  let baseUrls = advertised(c);

  // The parts of the API that follow config.json; createApi reads these objects at every request.
  const enroll = (cfg: ServerConfig): ApiDeps["enroll"] => ({
    nodeCa: st.nodeCa, nodeCertDays: cfg.nodeCertDays,
    trust: { linkLocal: cfg.trustLinkLocal, attached: cfg.trustAttached, subnets: cfg.trustedSubnets },
  });
  const self = (cfg: ServerConfig): ApiDeps["self"] => ({
    sshCa: st.sshCa, sshCaPub: st.sshCaPub, imagePublicKey: st.imagePublicKey, rootAuthorizedKeys: cfg.rootAuthorizedKeys,
    domain: cfg.domain, sshCertDays: cfg.sshCertDays,
    imageBaseUrls: () => [...new Set([...baseUrls, ...c.mirrors, ...c.peers])],
    imageSources: () => imageSourcePlan(baseUrls, c),
    apiBaseUrls: () => siteApiUrls(baseUrls, c.peers),
    imageKey: (digest) => readImageKey(o.stateDir, digest),
  });
  // Counters for GET /metrics; the connection figures are read from the HTTPS listener once it is up.
  let https: Awaited<ReturnType<typeof startHttps>> | undefined;
  const metrics = new ServerMetrics(db, () => https?.connections() ?? { open: 0, cut: {} });
  const deps: ApiDeps = { db, imagesDir: st.paths.images, serverId: c.serverId, audit, log: o.log, enroll: enroll(c), self: self(c), metrics };
  const api = createApi(deps);
  const netboot: NetbootDeps = {
    bootDir: st.paths.boot, stateDir: o.stateDir, db, audit, log: o.log,
    baseUrls: () => baseUrls, httpPort: () => c.httpPort || 80, apiUrls: () => siteApiUrls(baseUrls, c.peers), cmdline: () => c.bootCmdline,
  };
  const handler: typeof api = timed(metrics, async (req, ctx) =>
    (new URL(req.url).pathname === METRICS_PATH ? await metricsResponse(metrics, req, ctx.remoteAddress, c.metricsSubnets, audit) : undefined) ??
    (await serveNetboot(req, ctx.remoteAddress, "https", netboot)) ?? api(req, ctx));

  const start = (l: typeof listen) => startHttps({ listen: l, cert: st.serverCertPem, key: st.serverKeyPem, clientCa: st.nodeCaPem, handler, log: o.log, deadlines: o.deadlines });
  try {
    try { https = await start(listen); } catch (e) {
      if (o.listen?.length) throw e;
      // The default [::] fails on hosts without IPv6; IPv4 alone is still useful.
      o.log?.warn(`${(e as Error).message}; falling back to 0.0.0.0:${c.port}`);
      https = await start([{ host: "0.0.0.0", port: c.port }]);
    }
  } catch (e) { await audit.flush(); await db.close(); throw e; } // a pool left open would keep the process alive
  let http: HttpServer | undefined;
  const httpListen = o.httpListen?.length ? o.httpListen.map((l) => parseListen(l, "--http-listen"))
    : c.httpPort ? [...new Set(https.addresses.map((a) => a.host))].map((host) => ({ host, port: c.httpPort })) : [];
  if (httpListen.length) {
    try {
      http = await startHttp({ listen: httpListen, handler: timed(metrics, plainHttpHandler(netboot)), log: o.log, deadlines: o.deadlines });
    } catch (e) { await https.close(); await audit.flush(); await db.close(); throw e; }
  }
  let responder: Responder | undefined;
  const dport = o.discoveryPort ?? c.discoveryPort;
  if ((o.discovery ?? true) && dport !== 0) {
    try {
      responder = await startResponder({ db, serverId: c.serverId, apiUrls: () => siteApiUrls(baseUrls, c.peers), port: dport, log: o.log });
    } catch (e) {
      o.log?.warn(`${(e as Error).message}; serving without discovery`);
    }
  }
  const checkUrls = () => {
    for (const w of advertiseWarnings(baseUrls)) o.log?.warn(w);
    for (const n of advertiseNotes(baseUrls)) o.log?.info(n);
    const missing = hostsNotInServerCert(o.stateDir, baseUrls.map(urlHostname));
    if (missing.length) o.log?.warn(certCoverageWarning(o.stateDir, missing));
  };
  checkUrls();
  const heartbeat: Heartbeat = await startHeartbeat({ db, serverId: c.serverId, urls: () => baseUrls, every: beatMs, log: o.log });
  const localUrls = listenerUrls(https.addresses);
  const httpLocalUrls = http ? listenerUrls(http.addresses).map((u) => u.replace(/^https:/, "http:")) : [];
  o.log?.info(`serving state=${o.stateDir}; nodes are told ${baseUrls.join(" ") || "(no URL)"}; listening on ${localUrls.join(" ")}` +
    (http ? `; network boot over plain HTTP on ${httpLocalUrls.join(" ")} (nodes are told port ${c.httpPort || 80})` : ""));
  if (http && !c.httpPort) o.log?.warn("--http-listen without config http-port: iPXE scripts over HTTP point nodes at port 80 (set it with `airroot serve config set http-port N`)");

  // ---- live configuration ----
  const fileStamp = () => { try { const s = statSync(st.paths.config); return `${s.ino}:${s.size}:${s.mtimeMs}`; } catch { return "missing"; } };
  let stamp = fileStamp();
  const reloadConfig = (): string[] => {
    stamp = fileStamp();
    const next = readConfig(o.stateDir); // throws on an invalid file: the old config stays
    const changed = [...new Set([...Object.keys(c), ...Object.keys(next)])]
      .filter((k) => JSON.stringify(next[k as keyof ServerConfig]) !== JSON.stringify(c[k as keyof ServerConfig]));
    const later = changed.filter((k) => (RESTART_ONLY as readonly string[]).includes(k));
    const now = changed.filter((k) => !later.includes(k));
    for (const k of later) o.log?.warn(`config: ${keyOfField(k)} changed in config.json; takes effect when airroot serve restarts`);
    const kept = Object.fromEntries(RESTART_ONLY.map((k) => [k, c[k]]));
    c = { ...next, ...kept } as ServerConfig;
    deps.enroll = enroll(c);
    deps.self = self(c);
    const before = baseUrls.join(" ");
    baseUrls = advertised(c);
    if (now.length) o.log?.info(`config reloaded: ${now.map(keyOfField).join(", ")} changed`);
    if (baseUrls.join(" ") !== before) {
      o.log?.info(`nodes are now told ${baseUrls.join(" ") || "(no URL)"}`);
      checkUrls();
    }
    return now.map(keyOfField);
  };
  const poll = () => {
    if (fileStamp() === stamp) return;
    try { reloadConfig(); } catch (e) { o.log?.error(`config not reloaded, keeping the previous one: ${(e as Error).message}`); }
  };
  const every = o.configCheckMs ?? CONFIG_CHECK_MS;
  const timer = every > 0 ? setInterval(poll, every) : undefined;
  timer?.unref();

  return {
    get baseUrls() { return baseUrls; },
    get config() { return c; },
    localUrls, listening: https.addresses, httpListening: http?.addresses ?? [], httpLocalUrls, reloadConfig,
    async close() { if (timer) clearInterval(timer); await responder?.close(); await http?.close(); await https.close(); await heartbeat.stop(); await audit.flush(); await db.close(); },
  };
}
