// `airroot serve init --join`: a new deployment server of an existing site. From a site bundle (sitebundle.ts) it
// gets the site's CAs, SSH CA, image keys and database settings; `initState` then gives it what is its own: a new
// serverId, and a server certificate for its own addresses signed by the site CA. The state dir is built beside its
// final place and renamed into it, so a failed join leaves nothing half made, and an existing state is never touched.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { basename, dirname, join } from "node:path";
import { x509 } from "../pki/x509.ts";
import { defaultConfig, initState, readConfig, statePaths, writeConfig, writeNew, type InitOptions, type InitResult } from "./state.ts";
import { isPrivateBundleFile, type SiteBundle } from "./sitebundle.ts";
import { advertisedUrls, parseBaseUrl } from "./urls.ts";

export interface JoinResult extends InitResult {
  serverId: string;
  /** The other server's URLs, now in this one's peers. */
  peersAdded: string[];
}

function refuseExisting(stateDir: string): void {
  if (!existsSync(stateDir)) return;
  if (!statSync(stateDir).isDirectory()) throw new Error(`serve init --join: ${stateDir} exists and is not a directory; give a new --state`);
  if (readdirSync(stateDir).length) {
    throw new Error(`serve init --join: ${stateDir} already exists and is not empty; a joining server starts from a new state dir ` +
      `(give a new --state, or move ${stateDir} aside; \`airroot serve init --state ${stateDir}\` without --join completes an existing one)`);
  }
}

/** Whether the site CA in the bundle signed the new server certificate (its key and certificate belong together). */
async function chainsToSiteCa(stateDir: string): Promise<boolean> {
  const p = statePaths(stateDir);
  const site = new x509.X509Certificate(readFileSync(p.siteCaCert, "utf8"));
  return await new x509.X509Certificate(readFileSync(p.serverCert, "utf8")).verify({ publicKey: site, signatureOnly: true });
}

export async function joinState(stateDir: string, bundle: SiteBundle, o: InitOptions): Promise<JoinResult> {
  refuseExisting(stateDir);
  mkdirSync(dirname(stateDir), { recursive: true });
  const tmp = join(dirname(stateDir), `.${basename(stateDir)}.join-${randomBytes(6).toString("hex")}`);
  mkdirSync(tmp, { mode: 0o700 });
  try {
    for (const d of ["keys", "image-keys"]) mkdirSync(join(tmp, d), { mode: 0o700 });
    for (const f of bundle.files) writeNew(join(tmp, f.name), f.text, isPrivateBundleFile(f.name) ? 0o600 : 0o644);
    const passwordFile = join(stateDir, "db-password");
    if (bundle.dbPassword) writeNew(join(tmp, "db-password"), bundle.dbPassword + "\n", 0o600);
    // A serverId of its own: two servers under one id show as one in `serve status` and in discovery.
    const serverId = defaultConfig().serverId;
    writeConfig(tmp, { ...bundle.config, serverId, addresses: [], advertise: [], ...(bundle.dbPassword ? { dbPasswordFile: passwordFile } : {}) });

    const r = await initState(tmp, o);
    if (!(await chainsToSiteCa(tmp))) {
      throw new Error("serve init --join: the site CA's key in the bundle does not match its certificate; export the bundle again from a working server");
    }
    const c = readConfig(tmp);
    const own = new Set(advertisedUrls(c));
    const isBaseUrl = (u: string) => { try { return parseBaseUrl(u) === u; } catch { return false; } };
    const peersAdded = bundle.from.advertised.filter((u) => isBaseUrl(u) && !own.has(u) && !c.peers.includes(u));
    if (peersAdded.length) { c.peers = [...c.peers, ...peersAdded]; writeConfig(tmp, c); }

    renameSync(tmp, stateDir); // onto nothing or an empty directory: atomic
    const parent = openSync(dirname(stateDir), "r");
    try { fsyncSync(parent); } finally { closeSync(parent); }
    const here = (f: string) => (f.startsWith(tmp + "/") ? stateDir + f.slice(tmp.length) : f);
    if (!c.db || c.db === "sqlite") {
      r.warnings.push(`the site keeps its records in SQLite (config db is not set): this server has its own, empty ${statePaths(stateDir).db}, ` +
        "so nodes enrolled through the other server are unknown here; share a PostgreSQL database (README, \"Several deployment servers\")");
    }
    return { ...r, created: r.created.map(here), kept: r.kept.map(here), serverId, peersAdded };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
