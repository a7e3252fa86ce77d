// The server's state directory: layout, config.json, and `serve init` (CAs, server certificate, SSH CA, image key).
import { x509 } from "../pki/x509.ts";
import { chmodSync, closeSync, existsSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeFileSync, writeSync, renameSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { join } from "node:path";
import { createCa, issueServerCert, loadCa, type Ca } from "../pki/x509ca.ts";
import { decodeOpenSshPrivate, ed25519Blob, encodeOpenSshPrivate, formatPublicKey, generateEd25519, type Ed25519Key } from "../pki/sshkey.ts";
import { ensureImageKey, readImagePublicKey } from "../image/keys.ts";
import { arr, bool, int, obj, oneOf, opt, parseJson, str, withDefault, type Infer } from "./schema.ts";
import { ORDERS } from "../source/order.ts";
import { parseWeightEntry } from "./imagesources.ts";
import { advertiseNotes, advertisedUrls, canonicalAddress, advertiseWarnings, parseBaseUrl, urlHostname } from "./urls.ts";
import { hostAddresses, parseCidr, parseIp } from "./netaddr.ts";

export function statePaths(stateDir: string) {
  const k = (f: string) => join(stateDir, "keys", f);
  return {
    dir: stateDir,
    keys: join(stateDir, "keys"),
    images: join(stateDir, "images"),
    boot: join(stateDir, "boot"),   // network boot files (kernel, initramfs, iPXE), `serve boot-files`
    db: join(stateDir, "airroot.db"),
    config: join(stateDir, "config.json"),
    audit: join(stateDir, "audit.log"),
    siteCaCert: k("site-ca.crt"), siteCaKey: k("site-ca.key"),
    serverCert: k("server.crt"), serverKey: k("server.key"),
    nodeCaCert: k("node-ca.crt"), nodeCaKey: k("node-ca.key"),
    sshCaKey: k("ssh-ca"), sshCaPub: k("ssh-ca.pub"),
  };
}
export type StatePaths = ReturnType<typeof statePaths>;

const address = str({ max: 64, pattern: /^[0-9A-Fa-f.:]+$/, what: "an IP address" });
const subnet = str({ max: 64, pattern: /^[0-9A-Fa-f.:]+\/\d{1,3}$/, what: "a subnet like 10.1.0.0/16" });
const baseUrl = str({ max: 256, pattern: /^https:\/\/[A-Za-z0-9.\-\[\]:]+(\/[A-Za-z0-9._~\-\/]*)?$/, what: "an https:// base URL" });

export const configSchema = obj({
  version: int({ min: 1, max: 1 }),
  serverId: str({ max: 64, pattern: /^[A-Za-z0-9-]+$/ }),
  addresses: arr(address, { max: 64 }),      // addresses nodes reach this server at (for URLs and SANs)
  // Base URLs nodes are given for this server; empty: https://ADDRESS[:PORT] for each address. Missing in state
  // dirs made before it existed, hence the default.
  advertise: withDefault(arr(baseUrl, { max: 64 }), []),
  port: int({ min: 1, max: 65535 }),
  domain: opt(str({ max: 200, pattern: /^[a-z0-9.-]+$/, what: "a DNS domain" })),
  trustedSubnets: arr(subnet, { max: 256 }),
  trustLinkLocal: bool,
  trustAttached: bool,
  mirrors: arr(baseUrl, { max: 64 }),        // extra image mirrors (nginx/apache), base URLs whose /images/ mirrors ours
  peers: arr(baseUrl, { max: 64 }),          // other airroot servers sharing this site (their base URLs)
  // How nodes order the image servers (src/source/order.ts) and each one's weight for "spread", as "URL=WEIGHT"
  // (checked further by imagesources.ts). Missing in older state dirs.
  mirrorOrder: withDefault(oneOf(ORDERS), "spread"),
  mirrorWeights: withDefault(arr(str({ max: 300, pattern: /^https:\/\/[A-Za-z0-9.\-\[\]:]+(\/[A-Za-z0-9._~\-\/]*)?=\d{1,7}(\.\d{1,6})?$/, what: "URL=WEIGHT" }), { max: 192 }), []),
  rootAuthorizedKeys: arr(str({ max: 16_384 }), { max: 256 }),
  discoveryPort: int({ min: 0, max: 65535 }), // 0 disables the multicast responder
  nodeCertDays: int({ min: 1, max: 3650 }),
  sshCertDays: int({ min: 1, max: 3650 }),
  // The plain-HTTP port for network boot files (/boot/ only) that nodes are told and serve listens on; 0: off.
  httpPort: withDefault(int({ min: 0, max: 65535 }), 0),
  // Site kernel parameters in every iPXE script (console=...); checked further by checkBootCmdline (netboot).
  // Who may read GET /metrics besides loopback (src/server/metrics.ts); missing in older state dirs.
  metricsSubnets: withDefault(arr(subnet, { max: 256 }), []),
  bootCmdline: opt(str({ max: 1024, pattern: /^[\x21-\x7e]+( [\x21-\x7e]+)*$/, what: "kernel parameters (printable ASCII, single spaces)" })),
  // Where the records are: missing or "sqlite" for STATE/airroot.db, or a postgres:// URL (without a password)
  // that several servers share (store/db.ts); the password comes from dbPasswordFile.
  db: opt(str({ max: 1024, pattern: /^(sqlite|postgres(ql)?:\/\/[\x21-\x7e]+)$/, what: "sqlite or a postgres:// URL" })),
  dbPasswordFile: opt(str({ max: 4096, pattern: /^\/[\x21-\x7e]*$/, what: "an absolute file path" })),
});
export type ServerConfig = Infer<typeof configSchema>;

export const DEFAULT_PORT = 443;
export const DEFAULT_DISCOVERY_PORT = 7413;

export function defaultConfig(): ServerConfig {
  return {
    version: 1, serverId: randomBytes(8).toString("hex"), addresses: [], advertise: [], port: DEFAULT_PORT, trustedSubnets: [],
    trustLinkLocal: true, trustAttached: true, mirrors: [], peers: [], mirrorOrder: "spread", mirrorWeights: [], rootAuthorizedKeys: [],
    discoveryPort: DEFAULT_DISCOVERY_PORT, nodeCertDays: 365, sshCertDays: 365, httpPort: 0, metricsSubnets: [],
  };
}

export function readConfig(stateDir: string): ServerConfig {
  const p = statePaths(stateDir).config;
  let text: string;
  try { text = readFileSync(p, "utf8"); } catch (e) {
    throw new Error(`reading ${p}: ${(e as Error).message}; run \`airroot serve init --state ${stateDir} --address ...\` first`);
  }
  try {
    const c = parseJson(text, configSchema, 1 << 20);
    c.trustedSubnets.forEach(parseCidr);
    c.metricsSubnets.forEach(parseCidr);
    c.mirrorWeights.forEach((e) => parseWeightEntry(e));
    return c;
  } catch (e) { throw new Error(`${p}: ${(e as Error).message}`); }
}

export function writeConfig(stateDir: string, c: ServerConfig): void {
  const p = statePaths(stateDir).config, tmp = `${p}.${randomBytes(4).toString("hex")}.tmp`;
  writeFileSync(tmp, JSON.stringify(configSchema(c, ""), null, 2) + "\n", { mode: 0o600 });
  renameSync(tmp, p);
}

/** Writes a file only if it does not exist (never clobbers a key), durably and with its final mode from the start. */
export function writeNew(path: string, data: string, mode: number): boolean {
  if (existsSync(path)) return false;
  const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  const fd = openSync(tmp, "wx", mode);
  try { writeSync(fd, data); fsyncSync(fd); } finally { closeSync(fd); }
  chmodSync(tmp, mode);
  try { linkSync(tmp, path); return true; } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  } finally { unlinkSync(tmp); }
}

const ipKey = (a: string) => { const ip = parseIp(a); return ip ? `${ip.v}:${Buffer.from(ip.bytes).toString("hex")}` : a; };

/** The names in a certificate's SANs: IP addresses as comparable keys, DNS names in lower case. */
function certificateNames(pem: string): Set<string> {
  const san = new x509.X509Certificate(pem).getExtension(x509.SubjectAlternativeNameExtension);
  return new Set((san?.names.items ?? []).flatMap((n) => n.type === "ip" ? [ipKey(n.value)] : n.type === "dns" ? [n.value.toLowerCase()] : []));
}

/** The hosts (IP addresses or DNS names) the server certificate in the state dir does not name; [] without one. */
export function hostsNotInServerCert(stateDir: string, hosts: string[]): string[] {
  const f = statePaths(stateDir).serverCert;
  if (!existsSync(f)) return [];
  const names = certificateNames(readFileSync(f, "utf8"));
  return [...new Set(hosts)].filter((h) => !names.has(parseIp(h) ? ipKey(h) : h.toLowerCase()));
}

/** The warning for hosts the server certificate does not name. */
export function certCoverageWarning(stateDir: string, missing: string[]): string {
  const p = statePaths(stateDir);
  return `the server certificate does not cover ${missing.join(", ")}; nodes using those will fail TLS. ` +
    `To re-issue it, move ${p.serverCert} and ${p.serverKey} aside and run \`airroot serve init --state ${stateDir}\` again.`;
}

/** Either both halves exist (kept), or neither (create); one half alone is an operator problem, not ours to paper over. */
function pairState(a: string, b: string): "both" | "none" {
  const ea = existsSync(a), eb = existsSync(b);
  if (ea && eb) return "both";
  if (!ea && !eb) return "none";
  throw new Error(`state: ${ea ? a : b} exists but ${ea ? b : a} does not; restore the missing file from backup or remove both to start over`);
}

export interface InitOptions {
  addresses: string[];
  advertise?: string[];
  port?: number;
  trustedSubnets?: string[];
  domain?: string;
}

export interface InitResult {
  created: string[]; kept: string[];
  sans: string[];        // only when the server cert was made
  advertised: string[];  // the base URLs nodes are given for this server
  warnings: string[];
  notes: string[];
}

/** Server certificate SANs: the given addresses, every host address (IPv6 link-local without zone), the host name. */
export function serverSans(addresses: string[]): string[] {
  const set = new Set<string>();
  for (const a of [...addresses, ...hostAddresses().map((h) => h.address)]) set.add(a.replace(/%.*$/, ""));
  set.add("localhost");
  const h = hostname();
  if (/^[A-Za-z0-9.-]+$/.test(h)) set.add(h);
  return [...set];
}

/** Creates what is missing in the state dir; re-running never replaces an existing key or certificate. */
export async function initState(stateDir: string, o: InitOptions): Promise<InitResult> {
  for (const a of o.addresses) if (!parseIp(a)) throw new Error(`serve init: --address "${a}" is not an IP address`);
  // A zone (fe80::1%eth0) names an interface of this host; nodes resolve link-local on their own boot interface.
  const addresses = o.addresses.map(canonicalAddress);
  for (const s of o.trustedSubnets ?? []) parseCidr(s);
  const advertise = (o.advertise ?? []).map((u) => parseBaseUrl(u, "serve init: --advertise"));
  const p = statePaths(stateDir);
  const r: InitResult = { created: [], kept: [], sans: [], advertised: [], warnings: [], notes: [] };
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  chmodSync(stateDir, 0o700);
  mkdirSync(p.keys, { recursive: true, mode: 0o700 });
  chmodSync(p.keys, 0o700);
  mkdirSync(p.images, { recursive: true, mode: 0o755 }); // inside the 0700 state dir; mirrors copy it out with rsync
  const note = (created: boolean, ...files: string[]) => (created ? r.created : r.kept).push(...files);

  if (pairState(p.siteCaCert, p.siteCaKey) === "none") {
    const ca = await createCa("airroot site CA");
    writeNew(p.siteCaKey, ca.keyPem, 0o600);
    writeNew(p.siteCaCert, ca.certPem, 0o644);
    note(true, p.siteCaCert, p.siteCaKey);
  } else note(false, p.siteCaCert, p.siteCaKey);

  const urlHosts = advertise.map(urlHostname);
  if (pairState(p.serverCert, p.serverKey) === "none") {
    r.sans = serverSans([...addresses, ...urlHosts]);
    const site = await loadCa(readFileSync(p.siteCaCert, "utf8"), readFileSync(p.siteCaKey, "utf8"));
    const s = await issueServerCert(site, r.sans, `airroot server ${hostname()}`);
    writeNew(p.serverKey, s.keyPem, 0o600);
    writeNew(p.serverCert, s.certPem, 0o644);
    note(true, p.serverCert, p.serverKey);
  } else {
    note(false, p.serverCert, p.serverKey);
    const missing = hostsNotInServerCert(stateDir, [...addresses, ...urlHosts]);
    if (missing.length) r.warnings.push(certCoverageWarning(stateDir, missing));
  }

  if (pairState(p.nodeCaCert, p.nodeCaKey) === "none") {
    const ca = await createCa("airroot node CA");
    writeNew(p.nodeCaKey, ca.keyPem, 0o600);
    writeNew(p.nodeCaCert, ca.certPem, 0o644);
    note(true, p.nodeCaCert, p.nodeCaKey);
  } else note(false, p.nodeCaCert, p.nodeCaKey);

  if (pairState(p.sshCaKey, p.sshCaPub) === "none") {
    const k = generateEd25519();
    writeNew(p.sshCaKey, encodeOpenSshPrivate(k, "airroot ssh ca"), 0o600);
    writeNew(p.sshCaPub, formatPublicKey(ed25519Blob(k.pub), "airroot-ssh-ca"), 0o644);
    note(true, p.sshCaKey, p.sshCaPub);
  } else note(false, p.sshCaKey, p.sshCaPub);

  const img = ensureImageKey(stateDir);
  note(img.created, img.privateKey, img.publicKey);

  const c = existsSync(p.config) ? readConfig(stateDir) : defaultConfig();
  if (addresses.length) c.addresses = [...new Set([...c.addresses, ...addresses])];
  if (advertise.length) c.advertise = [...new Set([...c.advertise, ...advertise])];
  if (o.port) c.port = o.port;
  if (o.trustedSubnets?.length) c.trustedSubnets = [...new Set([...c.trustedSubnets, ...o.trustedSubnets])];
  if (o.domain) c.domain = o.domain;
  const hadConfig = existsSync(p.config);
  writeConfig(stateDir, c);
  note(!hadConfig, p.config);
  r.advertised = advertisedUrls(c);
  r.warnings.push(...advertiseWarnings(r.advertised));
  r.notes.push(...advertiseNotes(r.advertised));
  return r;
}

/** Everything `serve` needs from the state dir, loaded and checked once at start. */
export interface LoadedState {
  paths: StatePaths;
  config: ServerConfig;
  nodeCa: Ca;
  sshCa: Ed25519Key;
  sshCaPub: string;
  siteCaPem: string;
  serverCertPem: string;
  serverKeyPem: string;
  nodeCaPem: string;
  imagePublicKey: string;
}

export async function loadState(stateDir: string): Promise<LoadedState> {
  const paths = statePaths(stateDir);
  const config = readConfig(stateDir);
  const read = (f: string) => {
    try { return readFileSync(f, "utf8"); } catch (e) {
      throw new Error(`reading ${f}: ${(e as Error).message}; run \`airroot serve init --state ${stateDir}\``);
    }
  };
  for (const f of [paths.siteCaKey, paths.serverKey, paths.nodeCaKey, paths.sshCaKey]) {
    if (existsSync(f) && (statSync(f).mode & 0o077) !== 0) throw new Error(`${f} is readable by group or others; run chmod 600 ${f}`);
  }
  const nodeCaPem = read(paths.nodeCaCert);
  return {
    paths, config,
    nodeCa: await loadCa(nodeCaPem, read(paths.nodeCaKey)),
    sshCa: decodeOpenSshPrivate(read(paths.sshCaKey)),
    sshCaPub: read(paths.sshCaPub).trim(),
    siteCaPem: read(paths.siteCaCert),
    serverCertPem: read(paths.serverCert),
    serverKeyPem: read(paths.serverKey),
    nodeCaPem,
    imagePublicKey: readImagePublicKey(stateDir),
  };
}
