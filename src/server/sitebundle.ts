// The site bundle: exactly the key material and settings another deployment server of the same site needs, in one
// JSON file (0600) that `airroot serve export` writes and `airroot serve init --join` reads: the site TLS CA, the node
// CA, the SSH CA, the image-signing key, every encrypted image's key, the database password, and config.json's
// site-wide settings. Never this server's own identity (serverId, addresses, server certificate and key), the SQLite
// database or the images: the joining server makes its own identity, and the records are shared through PostgreSQL.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { basename, join, relative } from "node:path";
import { advertisedUrls } from "./urls.ts";
import { configSchema, readConfig, statePaths, type ServerConfig } from "./state.ts";
import { imageKeyPaths } from "../image/keys.ts";
import { imageKeysDir } from "../image/imagekeys.ts";
import { readPasswordFile } from "./store/dburl.ts";
import { arr, int, obj, oneOf, opt, parseJson, SchemaError, str, type Infer } from "./schema.ts";

export const BUNDLE_FORMAT = "airroot-site-bundle";

/** config.json's fields that belong to one server, not to the site. */
const OWN_FIELDS = ["serverId", "addresses", "advertise", "dbPasswordFile"] as const;
export type SiteConfig = Omit<ServerConfig, (typeof OWN_FIELDS)[number]>;

/** The files of the bundle, relative to the state dir; private ones are written 0600. */
export function bundleFiles(stateDir: string): { name: string; private: boolean }[] {
  const p = statePaths(stateDir), img = imageKeyPaths(stateDir);
  const rel = (f: string) => relative(stateDir, f);
  return [
    { name: rel(p.siteCaCert), private: false }, { name: rel(p.siteCaKey), private: true },
    { name: rel(p.nodeCaCert), private: false }, { name: rel(p.nodeCaKey), private: true },
    { name: rel(p.sshCaPub), private: false }, { name: rel(p.sshCaKey), private: true },
    { name: rel(img.publicKey), private: false }, { name: rel(img.privateKey), private: true },
  ];
}

const FIXED = new Set(bundleFiles("/").map((f) => f.name));
const IMAGE_KEY_NAME = /^image-keys\/[0-9a-f]{64}\.key$/;
export const isPrivateBundleFile = (name: string) => IMAGE_KEY_NAME.test(name) || bundleFiles("/").some((f) => f.name === name && f.private);

/** config.json's site settings, checked as a whole config with placeholders for the server's own fields. */
const siteConfig = (v: unknown, path: string): SiteConfig => {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new SchemaError(path, "must be an object");
  const site = configSchema({ ...v, serverId: "x", addresses: [], advertise: [] }, path) as Record<string, unknown>;
  for (const k of OWN_FIELDS) delete site[k];
  return site as SiteConfig;
};

const fileName = str({ max: 128, pattern: /^(keys\/[a-z0-9.-]+|image-keys\/[0-9a-f]{64}\.key)$/, what: "a key file of the state dir" });
const bundleSchema = obj({
  format: oneOf([BUNDLE_FORMAT]),
  version: int({ min: 1, max: 1 }),
  exported: str({ max: 64 }),
  from: obj({ serverId: str({ max: 64 }), host: str({ max: 256 }), advertised: arr(str({ max: 256 }), { max: 64 }) }),
  config: siteConfig,
  files: arr(obj({ name: fileName, text: str({ max: 1 << 16 }) }), { max: 100_000 }),
  dbPassword: opt(str({ min: 1, max: 4096, pattern: /^[^\r\n]+$/, what: "one line" })),
});
export type SiteBundle = Infer<typeof bundleSchema>;

/** What another server of this site needs from this state dir (nothing is written). */
export function collectBundle(stateDir: string): SiteBundle {
  const c = readConfig(stateDir);
  const read = (name: string) => {
    const f = join(stateDir, name);
    try { return readFileSync(f, "utf8"); } catch (e) {
      throw new Error(`reading ${f}: ${(e as Error).message}; is ${stateDir} a complete state dir (\`airroot serve init\`)?`);
    }
  };
  const names = bundleFiles(stateDir).map((f) => f.name);
  const keysDir = imageKeysDir(stateDir);
  if (existsSync(keysDir)) names.push(...readdirSync(keysDir).map((n) => `image-keys/${n}`).filter((n) => IMAGE_KEY_NAME.test(n)).sort());
  const config: Record<string, unknown> = { ...c };
  for (const k of OWN_FIELDS) delete config[k];
  return {
    format: BUNDLE_FORMAT, version: 1, exported: new Date().toISOString(),
    from: { serverId: c.serverId, host: hostname(), advertised: advertisedUrls(c) },
    config: config as SiteConfig, files: names.map((name) => ({ name, text: read(name) })),
    ...(c.dbPasswordFile ? { dbPassword: bundledPassword(stateDir, c.dbPasswordFile) } : {}),
  };
}

/**
 * The database password for the bundle. A state dir copied to another host keeps config's absolute path of the
 * original; a password file that lived inside that state dir is then found by its name inside the copy.
 */
function bundledPassword(stateDir: string, file: string): string {
  const inCopy = join(stateDir, basename(file));
  const f = existsSync(file) || !existsSync(inCopy) ? file : inCopy;
  try { return readPasswordFile(f); } catch (e) {
    throw new Error(`${(e as Error).message} (config db-password-file of ${stateDir}: the joining server needs the password too)`);
  }
}

/** Checks a bundle's text: the format, every file named once, the key files a state dir needs, site settings valid. */
export function parseBundle(text: string, where: string): SiteBundle {
  let b: SiteBundle;
  try { b = parseJson(text, bundleSchema, 256 << 20); } catch (e) {
    throw new Error(`${where} is not an airroot site bundle (${(e as Error).message}); make one with \`airroot serve export --state DIR --out FILE\` on a server of the site`);
  }
  const seen = new Set<string>();
  for (const f of b.files) {
    if (seen.has(f.name)) throw new Error(`${where}: ${f.name} appears twice; export the bundle again`);
    if (!FIXED.has(f.name) && !IMAGE_KEY_NAME.test(f.name)) throw new Error(`${where}: ${f.name} is not a file of a site bundle`);
    seen.add(f.name);
  }
  const missing = [...FIXED].filter((n) => !seen.has(n));
  if (missing.length) throw new Error(`${where} lacks ${missing.join(", ")}; export the bundle again from a complete state dir`);
  return b;
}

/** A bundle from a file written by `serve export`, or straight from another server's state dir (copied over). */
export function readBundle(path: string): SiteBundle {
  // Through the same checks as a file: one path for what a join may write.
  if (existsSync(path) && existsSync(join(path, "config.json"))) return parseBundle(JSON.stringify(collectBundle(path)), path);
  let text: string;
  try { text = readFileSync(path, "utf8"); } catch (e) {
    const hint = (e as NodeJS.ErrnoException).code === "EISDIR" ? `${path} is a directory without config.json, not a state dir` : (e as Error).message;
    throw new Error(`reading the site bundle ${path}: ${hint}; give the file \`airroot serve export\` wrote, or a server's state dir`);
  }
  return parseBundle(text, path);
}
