// `airroot serve config show|set|add|remove`: the settable keys of config.json, each value validated before anything
// is written, and the whole file written atomically (writeConfig renames a temporary file) or not at all.
import { readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { resolve } from "node:path";
import { checkEcdsaPoint, parsePublicKey } from "../pki/sshkey.ts";
import { SshFormatError, SshReader } from "../pki/sshwire.ts";
import { parseCidr, parseIp } from "./netaddr.ts";
import { SchemaError } from "./schema.ts";
import { configSchema, readConfig, writeConfig, certCoverageWarning, hostsNotInServerCert, type ServerConfig } from "./state.ts";
import { checkBootCmdline } from "./bootscript.ts";
import { advertiseNotes, advertisedUrls, advertiseWarnings, canonicalAddress, parseBaseUrl, urlHostname } from "./urls.ts";
import { formatWeightEntry, parseOrder, parseWeightEntry } from "./imagesources.ts";
import { parseDbSetting, readPasswordFile } from "./store/dburl.ts";

/** How often a running airroot serve looks at config.json's mtime and size. */
export const CONFIG_CHECK_MS = 2000;

type Field = Exclude<keyof ServerConfig, "version" | "serverId">;
type Kind = "list" | "int" | "bool" | "optional-string";

interface KeyDef {
  key: string;
  field: Field;
  kind: Kind;
  /** false: a running airroot serve keeps the old value until it restarts. */
  live: boolean;
  what: string;
  /** Validates and normalises one value (a list item or the scalar); list keys may expand one value into several. */
  parse: (v: string, key: string) => string[] | number | boolean | string;
  min?: number; max?: number;
}

const intRange = (min: number, max: number) => (v: string, key: string) => {
  if (!/^\d{1,10}$/.test(v) || Number(v) < min || Number(v) > max) throw new Error(`${key}: "${v}" is not a whole number between ${min} and ${max}`);
  return Number(v);
};

const boolean = (v: string, key: string) => {
  const t = v.toLowerCase();
  if (["true", "yes", "on", "1"].includes(t)) return true;
  if (["false", "no", "off", "0"].includes(t)) return false;
  throw new Error(`${key}: "${v}" is not true or false`);
};

const ipAddress = (v: string, key: string) => {
  if (!parseIp(v)) throw new Error(`${key}: "${v}" is not an IP address`);
  return [canonicalAddress(v)];
};

const baseUrl = (v: string, key: string) => [parseBaseUrl(v, `${key}:`)];

const subnet = (v: string, key: string) => {
  try { return [parseCidr(v).text]; } catch (e) { throw new Error(`${key}: ${(e as Error).message}`); }
};

const domain = (v: string, key: string) => {
  const d = v.trim().toLowerCase().replace(/\.$/, "");
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(d) || d.length > 200) throw new Error(`${key}: "${v}" is not a DNS domain`);
  return d;
};

// ---- root's authorized keys ----

const SK_ED25519 = "sk-ssh-ed25519@openssh.com", SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com";

/** Security-key (FIDO) public keys, which admins use and the host-key parser does not take. */
function checkSkBlob(type: string, b64: string): void {
  const blob = new Uint8Array(Buffer.from(b64, "base64"));
  const r = new SshReader(blob, "public key");
  if (r.text(64) !== type) throw new SshFormatError(`public key line says ${type} but the key is not`);
  if (type === SK_ED25519) {
    if (r.bytes().length !== 32) throw new SshFormatError("sk-ssh-ed25519 public key must be 32 bytes");
  } else {
    if (r.text(32) !== "nistp256") throw new SshFormatError("sk-ecdsa key: curve must be nistp256");
    checkEcdsaPoint("nistp256", r.bytes(), "sk-ecdsa key");
  }
  r.text(256); // application, e.g. "ssh:"
  r.end();
}

export interface RootKey { line: string; id: string; comment: string }

/** Parses one authorized_keys line (no options: the node keeps plain key lines only); throws naming what is wrong. */
export function parseRootKey(text: string): RootKey {
  const t = text.trim();
  if (/^-----BEGIN/.test(t)) throw new Error("this is a PEM block (a private key?), not an OpenSSH public key line: give the .pub file");
  const [type = "", b64 = "", ...rest] = t.split(/\s+/);
  const comment = rest.join(" ");
  if (!/^(ssh-|ecdsa-|sk-)/.test(type)) {
    throw new Error(/=/.test(type) || /^(no-|restrict|cert-authority)/.test(type)
      ? "authorized_keys options (from=, command=, restrict, ...) are not supported: give plain \"TYPE BASE64 [COMMENT]\" lines"
      : "not an OpenSSH public key line: expected \"TYPE BASE64 [COMMENT]\", e.g. the contents of ~/.ssh/id_ed25519.pub");
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new Error(`${type} key: the second field is not base64`);
  try {
    if (type === SK_ED25519 || type === SK_ECDSA) checkSkBlob(type, b64);
    else parsePublicKey(`${type} ${b64}${comment ? ` ${comment}` : ""}`);
  } catch (e) {
    if (e instanceof SshFormatError) throw new Error(`not a valid ${type} key (${e.message})`);
    throw e;
  }
  return { line: `${type} ${b64}${comment ? ` ${comment}` : ""}`, id: `${type} ${b64}`, comment };
}

const expandHome = (p: string) => (p === "~" || p.startsWith("~/") ? homedir() + p.slice(1) : p);

function readableFile(v: string): string | undefined {
  if (/\s/.test(v)) return undefined;
  const p = resolve(expandHome(v));
  try { return statSync(p).isFile() ? p : undefined; } catch { return undefined; }
}

/** A VALUE for root-keys: a key line, several lines, or a readable file of them (blank and # lines skipped). */
function rootKeyValues(v: string, key: string): string[] {
  const file = readableFile(v);
  if (file) {
    let text: string;
    try { text = readFileSync(file, "utf8"); } catch (e) { throw new Error(`${key}: cannot read ${file}: ${(e as Error).message}`); }
    const lines = text.split("\n").map((l, i) => [l.trim(), i + 1] as const).filter(([l]) => l && !l.startsWith("#"));
    if (lines.length === 0) throw new Error(`${key}: ${file} holds no public key`);
    return lines.map(([l, n]) => {
      try { return parseRootKey(l).line; } catch (e) { throw new Error(`${key}: ${file}:${n}: ${(e as Error).message}`); }
    });
  }
  if (!/\s/.test(v.trim())) {
    throw new Error(`${key}: "${v.slice(0, 80)}" is neither an OpenSSH public key line ("TYPE BASE64 [COMMENT]", quoted) nor a readable file`);
  }
  const lines = v.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  return lines.map((l, i) => {
    try { return parseRootKey(l).line; } catch (e) {
      throw new Error(`${key}: ${lines.length > 1 ? `line ${i + 1} ` : ""}"${l.length > 60 ? l.slice(0, 57) + "..." : l}": ${(e as Error).message}`);
    }
  });
}

// ---- the database ----

/** `db`: sqlite, or a postgres:// URL without a password (that goes in db-password-file). */
const dbSetting = (v: string, key: string) => {
  const loc = parseDbSetting(v, key, false);
  return loc.kind === "sqlite" ? "sqlite" : loc.url;
};

/** `db-password-file`: an existing file with the password on its first line (read now, so a typo fails here). */
const passwordFile = (v: string, key: string) => {
  const p = resolve(expandHome(v.trim()));
  try { readPasswordFile(p); } catch (e) { throw new Error(`${key}: ${(e as Error).message}`); }
  return p;
};

// ---- the keys ----

export const CONFIG_KEYS: readonly KeyDef[] = [
  { key: "advertise", field: "advertise", kind: "list", live: true, parse: baseUrl,
    what: "https:// base URLs nodes are told for this server (empty: https://ADDRESS[:PORT] for each address)" },
  { key: "addresses", field: "addresses", kind: "list", live: true, parse: ipAddress,
    what: "IP addresses nodes reach this server at (URLs when advertise is empty; server certificate names)" },
  { key: "mirrors", field: "mirrors", kind: "list", live: true, parse: baseUrl,
    what: "image mirrors (nginx/Apache from `serve mirror-config`): base URLs whose /images/ holds the images" },
  { key: "peers", field: "peers", kind: "list", live: true, parse: baseUrl, what: "other airroot servers of the site (base URLs)" },
  { key: "mirror-order", field: "mirrorOrder", kind: "optional-string", live: true, parse: parseOrder,
    what: "how nodes order the image servers: spread (default: weighted rendezvous hash of the node name, so nodes spread over the mirrors and a dead mirror's nodes spread over the rest), listed (this server, mirrors, peers, as listed), latency (lowest round-trip time first); `set mirror-order` without a value restores spread" },
  { key: "mirror-weights", field: "mirrorWeights", kind: "list", live: true, parse: (v, key) => [formatWeightEntry(parseWeightEntry(v, `${key}:`))],
    what: "URL=WEIGHT: a mirror's share of the nodes with mirror-order spread (https://m1=10 takes 10x the nodes of a mirror of weight 1; 0: last resort). Mirrors weigh 1 unless named; this server and its peers 0 while a mirror has a weight, but may be named too. `add mirrors URL --weight W` sets it with the mirror" },
  { key: "root-keys", field: "rootAuthorizedKeys", kind: "list", live: true, parse: rootKeyValues,
    what: "root's authorized SSH keys on every node: key lines or .pub files" },
  { key: "trusted-subnets", field: "trustedSubnets", kind: "list", live: true, parse: subnet,
    what: "extra subnets enrollment is accepted from, e.g. 10.1.0.0/16" },
  { key: "metrics-subnets", field: "metricsSubnets", kind: "list", live: true, parse: subnet,
    what: "subnets whose hosts may read GET /metrics besides loopback (default: loopback only), e.g. 10.0.0.5/32" },
  { key: "domain", field: "domain", kind: "optional-string", live: true, parse: domain,
    what: "DNS domain of the nodes (FQDN principal in SSH host certificates); `set domain` without a value clears it" },
  { key: "port", field: "port", kind: "int", live: false, parse: intRange(1, 65535), what: "HTTPS port airroot serve listens on by default and nodes are told" },
  { key: "discovery-port", field: "discoveryPort", kind: "int", live: false, parse: intRange(0, 65535), what: "UDP port for discovery (0: no discovery responder)" },
  { key: "node-cert-days", field: "nodeCertDays", kind: "int", live: true, parse: intRange(1, 3650), what: "validity of node client certificates, days" },
  { key: "ssh-cert-days", field: "sshCertDays", kind: "int", live: true, parse: intRange(1, 3650), what: "validity of SSH host certificates, days" },
  { key: "http-port", field: "httpPort", kind: "int", live: false, parse: intRange(0, 65535),
    what: "plain-HTTP port for network boot files (/boot/ only) that airroot serve listens on and iPXE scripts use (0: no HTTP listener)" },
  { key: "boot-cmdline", field: "bootCmdline", kind: "optional-string", live: true, parse: (v) => checkBootCmdline(v),
    what: "site kernel parameters in every per-node iPXE script, e.g. \"console=ttyS0,115200 quiet\"; `set boot-cmdline` without a value clears it" },
  { key: "db", field: "db", kind: "optional-string", live: false, parse: dbSetting,
    what: "where the records are: sqlite (the default: STATE/airroot.db) or postgres://USER@HOST[:PORT]/DATABASE, one PostgreSQL database several airroot serve instances share (no password in it: see db-password-file; TLS: ?sslmode=verify-full&sslrootcert=/path/ca.pem, or require, or disable); `set db` without a value restores sqlite" },
  { key: "db-password-file", field: "dbPasswordFile", kind: "optional-string", live: false, parse: passwordFile,
    what: "a file (mode 0600) whose first line is the PostgreSQL password for db; `set db-password-file` without a value clears it" },
  { key: "trust-link-local", field: "trustLinkLocal", kind: "bool", live: true, parse: boolean, what: "accept enrollment from link-local sources" },
  { key: "trust-attached", field: "trustAttached", kind: "bool", live: true, parse: boolean, what: "accept enrollment from this host's attached subnets" },
];

export const keyNames = () => CONFIG_KEYS.map((k) => k.key);

/** The key for a name as typed: kebab-case, or the config.json field name. */
export function configKey(name: string): KeyDef {
  const k = CONFIG_KEYS.find((d) => d.key === name || d.field === name);
  if (k) return k;
  if (name === "version" || name === "serverId" || name === "server-id") throw new Error(`${name} is not settable`);
  throw new Error(`unknown key "${name}"; valid keys: ${keyNames().join(", ")}`);
}

/** config.json field names to the keys, for "config reloaded: KEYS changed". */
export function keyOfField(field: string): string {
  return CONFIG_KEYS.find((d) => d.field === field)?.key ?? field;
}

export type Verb = "set" | "add" | "remove";

export interface EditResult {
  key: KeyDef;
  config: ServerConfig;
  changed: boolean;
  notes: string[];     // e.g. "already present"
}

function listOf(c: ServerConfig, f: Field): string[] { return [...(c[f] as string[])]; }

/** Applies one edit to a copy of the config and validates the result; throws before anything is written. */
export interface EditOptions {
  /** `add mirrors URL... --weight W`: the mirrors' weight (mirror-weights) in the same write. */
  weight?: string;
}

export function applyEdit(c0: ServerConfig, verb: Verb, name: string, values: string[], opts: EditOptions = {}): EditResult {
  const k = configKey(name);
  if (opts.weight !== undefined && !(verb === "add" && (k.key === "mirrors" || k.key === "peers"))) {
    throw new Error(`--weight goes with \`config add mirrors URL... --weight W\` (or peers), not with config ${verb} ${k.key}`);
  }
  const c = structuredClone(c0);
  const notes: string[] = [];
  if (k.kind === "list") {
    const parseAll = () => values.flatMap((v) => k.parse(v, k.key) as string[]);
    const cur = listOf(c, k.field);
    if (verb === "set") {
      (c as Record<string, unknown>)[k.field] = [...new Set(parseAll())];
    } else if (verb === "add") {
      if (values.length === 0) throw new Error(`config add ${k.key}: give at least one value`);
      const idOf = k.key === "root-keys" ? (l: string) => parseRootKey(l).id : (l: string) => l;
      const have = new Set(cur.map((l) => { try { return idOf(l); } catch { return l; } }));
      if (k.key === "mirror-weights") {
        // A URL's new weight replaces its old one.
        for (const it of parseAll()) {
          const url = parseWeightEntry(it).url, i = cur.findIndex((l) => l.startsWith(`${url}=`));
          if (i < 0) cur.push(it); else if (cur[i] === it) notes.push(`${it} is already in ${k.key}`); else cur[i] = it;
        }
      } else for (const it of parseAll()) {
        if (have.has(idOf(it))) { notes.push(`${it.length > 70 ? it.slice(0, 67) + "..." : it} is already in ${k.key}`); continue; }
        cur.push(it);
        have.add(idOf(it));
      }
      (c as Record<string, unknown>)[k.field] = cur;
    } else {
      if (values.length === 0) throw new Error(`config remove ${k.key}: give at least one value`);
      let next = cur;
      if (k.key === "root-keys") {
        // A key line or file matches by key (any comment); a single word matches keys with that comment.
        for (const v of values) {
          const word = !/\s/.test(v.trim()) && !readableFile(v);
          const ids = word ? [] : rootKeyValues(v, k.key).map((l) => parseRootKey(l).id);
          const hit = (l: string) => { try { const p = parseRootKey(l); return word ? p.comment === v.trim() : ids.includes(p.id); } catch { return l === v; } };
          if (!next.some(hit)) notes.push(`no key in root-keys matches ${v.length > 70 ? v.slice(0, 67) + "..." : v}`);
          next = next.filter((l) => !hit(l));
        }
      } else if (k.key === "mirror-weights") {
        // By URL (any weight) or by URL=WEIGHT.
        for (const v of values) {
          const url = parseBaseUrl(v.includes("=") ? v.slice(0, v.lastIndexOf("=")) : v, `${k.key}:`);
          if (!next.some((l) => l.startsWith(`${url}=`))) notes.push(`${url} has no weight in ${k.key}`);
          next = next.filter((l) => !l.startsWith(`${url}=`));
        }
      } else {
        for (const it of parseAll()) {
          if (!next.includes(it)) notes.push(`${it} is not in ${k.key}`);
          next = next.filter((x) => x !== it);
        }
      }
      (c as Record<string, unknown>)[k.field] = next;
    }
  } else {
    if (verb !== "set") throw new Error(`${k.key} is a single value: use \`airroot serve config set ${k.key} VALUE\``);
    if (k.key === "boot-cmdline" && values.length > 1) values = [values.join(" ")]; // unquoted words: one command line
    if (values.length === 0 && k.kind === "optional-string") delete (c as Record<string, unknown>)[k.field];
    else if (k.key === "boot-cmdline" && values[0].trim() === "") delete (c as Record<string, unknown>)[k.field];
    else if (values.length !== 1) throw new Error(`config set ${k.key}: give exactly one value`);
    else (c as Record<string, unknown>)[k.field] = k.parse(values[0], k.key);
  }
  if (opts.weight !== undefined) {
    const w = applyEdit(c, "add", "mirror-weights", values.flatMap((v) => k.parse(v, k.key) as string[]).map((u) => `${u}=${opts.weight}`));
    c.mirrorWeights = w.config.mirrorWeights;
  }
  if (verb !== "add" && (k.key === "mirrors" || k.key === "peers")) {
    // A mirror (or peer) that is gone takes its weight along.
    const sources = new Set([...c.mirrors, ...c.peers, ...advertisedUrls(c)]);
    const gone = c.mirrorWeights.filter((l) => !sources.has(l.slice(0, l.lastIndexOf("="))));
    for (const g of gone) notes.push(`${g} removed from mirror-weights too`);
    c.mirrorWeights = c.mirrorWeights.filter((l) => !gone.includes(l));
  }
  if (k.key === "mirror-weights" && verb !== "remove") {
    const sources = new Set([...c.mirrors, ...c.peers, ...advertisedUrls(c)]);
    for (const v of values) {
      const url = parseWeightEntry(v, `${k.key}:`).url;
      if (!sources.has(url)) throw new Error(`${k.key}: ${url} is not a mirror, a peer or a URL this server advertises; add it first (\`airroot serve config add mirrors ${url} --weight W\`)`);
    }
    const urls = c.mirrorWeights.map((l) => l.slice(0, l.lastIndexOf("=")));
    const twice = urls.find((u, i) => urls.indexOf(u) !== i);
    if (twice) throw new Error(`${k.key}: ${twice} is given two weights`);
  }
  if ((k.key === "mirror-weights" || k.key === "mirror-order" || opts.weight !== undefined) && (c.mirrorOrder ?? "spread") !== "spread" && c.mirrorWeights.length) {
    notes.push(`weights count only with mirror-order spread (now ${c.mirrorOrder}): \`airroot serve config set mirror-order spread\``);
  }
  let checked: ServerConfig;
  try {
    checked = configSchema(c, "");
    checked.trustedSubnets.forEach(parseCidr);
    checked.metricsSubnets.forEach(parseCidr);
  } catch (e) {
    // Schema errors name the config.json field ("rootAuthorizedKeys[3]: ..."): say the key instead.
    const m = (e as Error).message;
    throw new Error(e instanceof SchemaError ? m.replace(/^[A-Za-z]+/, (f) => keyOfField(f)) : `${k.key}: ${m}`);
  }
  return { key: k, config: checked, changed: JSON.stringify(checked) !== JSON.stringify(configSchema(c0, "")), notes };
}

export interface EditReport extends EditResult { warnings: string[]; written: boolean }

/** Reads config.json, applies the edit and writes it atomically if anything changed. */
export function editConfig(stateDir: string, verb: Verb, name: string, values: string[], opts: EditOptions = {}): EditReport {
  const before = readConfig(stateDir);
  const r = applyEdit(before, verb, name, values, opts);
  if (r.changed) writeConfig(stateDir, r.config);
  const warnings: string[] = [];
  if (["advertise", "addresses", "port"].includes(r.key.key)) {
    const urls = advertisedUrls(r.config);
    warnings.push(...advertiseWarnings(urls));
    r.notes.push(...advertiseNotes(urls));
    const hosts = [...r.config.addresses, ...r.config.advertise.map(urlHostname)];
    const missing = hostsNotInServerCert(stateDir, hosts);
    if (missing.length) warnings.push(certCoverageWarning(stateDir, missing));
  }
  return { ...r, warnings, written: r.changed };
}

/** A value for display: lists joined one per line by the caller; undefined as "". */
export function valueOf(c: ServerConfig, k: KeyDef): string[] | string | number | boolean {
  const v = (c as Record<string, unknown>)[k.field];
  if (k.kind === "list") return v as string[];
  return (v ?? "") as string | number | boolean;
}
