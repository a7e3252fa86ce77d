// Where the records live: "sqlite" (the default, STATE/airroot.db) or a postgres:// URL, from --db or config.json's
// `db`. The password never goes into config.json or a message: it comes from a file (db-password-file), the URL given
// on the command line, or PGPASSWORD; every URL shown has it removed.
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
  return { kind: "postgres", url: t };
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
