// Where the records live: "sqlite" (the default, STATE/airroot.db) or a postgres:// URL, from --db or config.json's
// `db`. The password never goes into config.json or a message: it comes from a file (db-password-file), the URL given
// on the command line, or PGPASSWORD; every URL shown has it removed.
//
// TLS to PostgreSQL is asked for in the URL's query, with libpq's names: sslmode=disable|require|verify-ca|verify-full
// and sslrootcert=FILE (the CA that signed the server's certificate, PEM). postgres.ts maps each mode to explicit
// Bun.SQL options; Bun's own spellings (ssl=, tls=, ssl_mode=), libpq's allow/prefer (they fall back to plaintext)
// and client certificates (sslcert, sslkey, sslpassword) are refused rather than left to Bun's defaults.
import { isAbsolute } from "node:path";
import { readFileSync } from "node:fs";

export type DbLocation = { kind: "sqlite" } | { kind: "postgres"; url: string; passwordFile?: string };

/** The URL with any password removed, for messages and `config show`. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "";
    return u.toString().replace(/^(postgres(?:ql)?:\/\/[^:@/]*):?@/, "$1@");
  } catch { return "(a database URL that does not parse)"; }
}

/**
 * Checks a database setting: "sqlite", or postgres[ql]://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE[?...]. With
 * `allowPassword` false (config.json) a password in the URL is refused: it belongs in db-password-file.
 */
export function parseDbSetting(v: string, what: string, allowPassword: boolean): DbLocation {
  const t = v.trim();
  if (t === "" || t === "sqlite") return { kind: "sqlite" };
  let u: URL;
  try { u = new URL(t); } catch { throw new Error(`${what}: "${redactUrl(t)}" is neither sqlite nor a postgres://USER@HOST[:PORT]/DATABASE URL`); }
  if (u.protocol !== "postgres:" && u.protocol !== "postgresql:") {
    throw new Error(`${what}: ${u.protocol}// is not supported; use sqlite (the default) or postgres://USER@HOST[:PORT]/DATABASE`);
  }
  if (!u.hostname) throw new Error(`${what}: ${redactUrl(t)} names no host; use postgres://USER@HOST[:PORT]/DATABASE`);
  if (u.pathname.replace(/^\//, "") === "") throw new Error(`${what}: ${redactUrl(t)} names no database; add /DATABASE`);
  if (u.password && !allowPassword) {
    throw new Error(`${what}: the URL holds a password; config.json must not: put the password in a file (mode 0600) and set db-password-file FILE`);
  }
  postgresTls(t, what);
  return { kind: "postgres", url: t };
}

export const SSL_MODES = ["disable", "require", "verify-ca", "verify-full"] as const;
export type SslMode = (typeof SSL_MODES)[number];

/**
 * The TLS settings of a postgres:// URL, checked: `mode` is undefined when the URL names no sslmode (then Bun's
 * default applies: no TLS, unless PGSSLMODE is set in the environment). `url` is the URL without sslmode and
 * sslrootcert, for the caller to state them again as explicit options.
 */
export function postgresTls(url: string, what: string): { url: string; mode?: SslMode; rootCert?: string; host: string } {
  const u = new URL(url);
  const shown = redactUrl(url);
  const keys = [...u.searchParams.keys()];
  for (const k of keys) {
    const lk = k.toLowerCase();
    if (lk !== k && (lk === "sslmode" || lk === "sslrootcert")) throw new Error(`${what}: ${shown}: write ${lk} in lower case`);
    if (["ssl", "tls", "ssl-mode", "ssl_mode"].includes(lk)) {
      throw new Error(`${what}: ${shown}: ${k}= is not supported; use sslmode=verify-full&sslrootcert=CA.pem (or sslmode=require, or sslmode=disable)`);
    }
    if (["sslcert", "sslkey", "sslpassword"].includes(lk)) {
      throw new Error(`${what}: ${shown}: ${k}= (a client certificate) is not supported; the database user authenticates with its password (db-password-file)`);
    }
  }
  for (const k of ["sslmode", "sslrootcert"]) {
    if (u.searchParams.getAll(k).length > 1) throw new Error(`${what}: ${shown}: ${k} is given more than once; give it once`);
  }
  const rawMode = u.searchParams.get("sslmode");
  const rootCert = u.searchParams.get("sslrootcert") ?? undefined;
  u.searchParams.delete("sslmode");
  u.searchParams.delete("sslrootcert");
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
  const rest = u.toString();
  if (rawMode === null) {
    if (rootCert !== undefined) throw new Error(`${what}: ${shown}: sslrootcert without sslmode; add sslmode=verify-full (or verify-ca) to verify the server against it`);
    return { url: rest, host };
  }
  const mode = rawMode as SslMode;
  if (!SSL_MODES.includes(mode)) {
    const why = rawMode === "prefer" || rawMode === "allow" ? ` (${rawMode} falls back to an unencrypted connection)` : "";
    throw new Error(`${what}: ${shown}: sslmode=${rawMode} is not supported${why}; use sslmode=verify-full with sslrootcert=CA.pem (or verify-ca, require, disable)`);
  }
  if (mode === "verify-ca" || mode === "verify-full") {
    if (!rootCert) {
      throw new Error(`${what}: ${shown}: sslmode=${mode} needs sslrootcert=FILE, the PEM file of the CA that signed the PostgreSQL server's certificate (for a publicly signed server, the system bundle, e.g. /etc/ssl/certs/ca-certificates.crt)`);
    }
    if (rootCert === "system") {
      throw new Error(`${what}: ${shown}: sslrootcert=system is not supported (Bun would use its own built-in CA list, not the system's); give a CA file, e.g. sslrootcert=/etc/ssl/certs/ca-certificates.crt`);
    }
    if (!isAbsolute(rootCert)) throw new Error(`${what}: ${shown}: sslrootcert=${rootCert} is not an absolute path; give the CA file's full path`);
  } else if (rootCert !== undefined) {
    throw new Error(`${what}: ${shown}: sslrootcert is used only by sslmode=verify-ca or verify-full, not sslmode=${mode}; use sslmode=verify-full to verify the server`);
  }
  return { url: rest, mode, rootCert, host };
}

/** The CA certificates (PEM) of sslrootcert=FILE. */
export function readRootCert(file: string): string {
  let text: string;
  try { text = readFileSync(file, "utf8"); } catch (e) {
    throw new Error(`reading sslrootcert ${file}: ${(e as Error).message}; give the PEM file of the CA that signed the PostgreSQL server's certificate`);
  }
  if (!text.includes("-----BEGIN CERTIFICATE-----")) {
    throw new Error(`sslrootcert ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA that signed the PostgreSQL server's certificate`);
  }
  return text;
}

/** The password from a file (its first line), for the PostgreSQL connection. */
export function readPasswordFile(file: string): string {
  let text: string;
  try { text = readFileSync(file, "utf8"); } catch (e) {
    throw new Error(`reading the database password file ${file}: ${(e as Error).message}; create it (one line, mode 0600) or fix db-password-file`);
  }
  const line = text.split("\n")[0].replace(/\r$/, "");
  if (!line) throw new Error(`the database password file ${file} is empty; write the password on its first line`);
  return line;
}
