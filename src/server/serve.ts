// `airroot serve`: loads the state dir and runs the HTTPS server (images + node API) and the discovery responder.
import { openDatabase } from "./store/db.ts";
import "./store/nodes.ts";
import "./store/images.ts";
import { loadState } from "./state.ts";
import { startHttps } from "./https.ts";
import { createApi } from "./api.ts";
import { fileAudit, type Audit } from "./audit.ts";
import { startResponder, type Responder } from "./discovery.ts";
import type { Logger } from "../util/log.ts";
import { advertiseNotes, advertisedUrls, advertiseWarnings, listenerUrls, parseBaseUrl, siteApiUrls } from "./urls.ts";

export interface ServeOptions {
  stateDir: string;
  /** "ADDR:PORT" / "[V6]:PORT"; default every address on the configured port. */
  listen?: string[];
  /** Base URLs nodes are given for this server, instead of config.json's (`advertise`, else addresses x port). */
  advertise?: string[];
  discovery?: boolean;      // default: on unless config.discoveryPort is 0
  discoveryPort?: number;   // overrides config.discoveryPort
  log?: Logger;
  audit?: Audit;
}

export interface RunningServer {
  /** The advertised base URLs: what nodes are told (from the configuration, never from a listen address). */
  readonly baseUrls: string[];
  /** URLs of the actual listeners, for clients on this machine (a wildcard listener as loopback). */
  localUrls: string[];
  listening: { host: string; port: number }[];
  close(): Promise<void>;
}

export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`invalid --listen "${s}": use IPV4:PORT or [IPV6]:PORT (port 0 picks a free one)`);
  return { host: m[1] ?? m[2], port };
}

export async function serve(o: ServeOptions): Promise<RunningServer> {
  const st = await loadState(o.stateDir);
  const c = st.config;
  const audit = o.audit ?? fileAudit(st.paths.audit, o.log);
  const db = openDatabase(o.stateDir);
  const listen = o.listen?.length ? o.listen.map(parseListen) : [{ host: "::", port: c.port }];
  const override = o.advertise?.map((u) => parseBaseUrl(u, "--advertise"));
  const baseUrls = override?.length ? [...new Set(override)] : advertisedUrls(c);
  const handler = createApi({
    db, imagesDir: st.paths.images, serverId: c.serverId, audit, log: o.log,
    enroll: {
      nodeCa: st.nodeCa, nodeCertDays: c.nodeCertDays,
      trust: { linkLocal: c.trustLinkLocal, attached: c.trustAttached, subnets: c.trustedSubnets },
    },
    self: {
      sshCa: st.sshCa, sshCaPub: st.sshCaPub, imagePublicKey: st.imagePublicKey, rootAuthorizedKeys: c.rootAuthorizedKeys,
      domain: c.domain, sshCertDays: c.sshCertDays,
      imageBaseUrls: () => [...new Set([...baseUrls, ...c.mirrors, ...c.peers])],
      apiBaseUrls: () => siteApiUrls(baseUrls, c.peers),
    },
  });
  const start = (l: typeof listen) => startHttps({ listen: l, cert: st.serverCertPem, key: st.serverKeyPem, clientCa: st.nodeCaPem, handler, log: o.log });
  let https;
  try { https = await start(listen); } catch (e) {
    if (o.listen?.length) throw e;
    // The default [::] fails on hosts without IPv6; IPv4 alone is still useful.
    o.log?.warn(`${(e as Error).message}; falling back to 0.0.0.0:${c.port}`);
    https = await start([{ host: "0.0.0.0", port: c.port }]);
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
  for (const w of advertiseWarnings(baseUrls)) o.log?.warn(w);
  for (const n of advertiseNotes(baseUrls)) o.log?.info(n);
  const localUrls = listenerUrls(https.addresses);
  o.log?.info(`serving state=${o.stateDir}; nodes are told ${baseUrls.join(" ") || "(no URL)"}; listening on ${localUrls.join(" ")}`);
  return {
    baseUrls, localUrls, listening: https.addresses,
    async close() { await responder?.close(); await https.close(); db.close(); },
  };
}
