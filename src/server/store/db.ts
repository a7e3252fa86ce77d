// Opening the server's records: the embedded SQLite file in the state directory (the default), or the PostgreSQL
// database named by --db or config.json's `db` (several servers sharing it). Either way every store module's
// migrations are applied before the first use, and callers see the same Db interface (sql.ts).
import { chmodSync, closeSync, constants, existsSync, openSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Db } from "./sql.ts";
import { sqliteDb } from "./sqlite.ts";
import { postgresDb } from "./postgres.ts";
import { applyMigrations } from "./migrations.ts";
import { parseDbSetting, readPasswordFile, type DbLocation } from "./dburl.ts";
import { readConfig, statePaths } from "../state.ts";
// Each record kind registers its migrations at load: importing them here means no caller can open a database
// without the full schema.
import "./nodes.ts";
import "./images.ts";
import "./auditlog.ts";
import "./servers.ts";

export type { Db } from "./sql.ts";
export { registerSchema } from "./migrations.ts";

/** The database and the files SQLite keeps beside it (write-ahead log, shared-memory index, rollback journal). */
export const DATABASE_FILES = ["airroot.db", "airroot.db-wal", "airroot.db-shm", "airroot.db-journal"];

/**
 * The database holds every node's identity and certificate records: it and its companion files are 0600, whatever
 * the umask and whatever the state directory's mode (an admin may open that up for mirrors). The file is created
 * 0600 before SQLite opens it (SQLite gives -wal and -shm the database file's mode); files of an older state dir
 * made with the umask's 0644 are narrowed at every open.
 */
function makePrivate(stateDir: string): void {
  for (const f of DATABASE_FILES) {
    const p = join(stateDir, f);
    let mode: number;
    try { mode = statSync(p).mode; } catch { continue; }
    if ((mode & 0o077) === 0) continue;
    try { chmodSync(p, mode & 0o700); } catch (e) {
      throw new Error(`${p} is readable by group or others and cannot be made private (${(e as Error).message}); run chmod 600 ${p}`);
    }
  }
}

export interface OpenOptions {
  /** "sqlite" or a postgres:// URL (may hold a password: it is never shown; TLS: ?sslmode=...&sslrootcert=..., see dburl.ts); default: config.json's `db`. */
  db?: string;
  /** A file whose first line is the PostgreSQL password; default: config.json's `dbPasswordFile`. */
  passwordFile?: string;
}

/** Which database a state dir uses: the options, else config.json (when there is one), else its SQLite file. */
export function databaseLocation(stateDir: string, o: OpenOptions = {}): DbLocation {
  const fromConfig = existsSync(statePaths(stateDir).config) && (o.db === undefined || o.passwordFile === undefined) ? readConfig(stateDir) : undefined;
  const setting = o.db ?? fromConfig?.db;
  if (setting === undefined) return { kind: "sqlite" };
  const loc = parseDbSetting(setting, o.db !== undefined ? "--db" : "config db", o.db !== undefined);
  const passwordFile = o.passwordFile ?? fromConfig?.dbPasswordFile;
  return loc.kind === "postgres" && passwordFile ? { ...loc, passwordFile } : loc;
}

async function openSqlite(stateDir: string): Promise<Db> {
  const file = join(stateDir, "airroot.db");
  try { closeSync(openSync(file, constants.O_RDWR | constants.O_CREAT, 0o600)); } catch (e) {
    throw new Error(`opening ${file}: ${(e as Error).message}; is --state the directory \`airroot serve init\` made?`);
  }
  makePrivate(stateDir);
  const db = sqliteDb(file);
  try { await applyMigrations(db); } catch (e) { await db.close(); throw e; }
  makePrivate(stateDir); // -wal and -shm exist now
  return db;
}

async function openPostgres(loc: Extract<DbLocation, { kind: "postgres" }>): Promise<Db> {
  const password = loc.passwordFile ? readPasswordFile(loc.passwordFile) : undefined;
  const db = await postgresDb({ url: loc.url, password });
  try { await applyMigrations(db); } catch (e) {
    await db.close();
    throw new Error(`updating the schema of the database ${db.where}: ${(e as Error).message}; the database user must own the database (or have CREATE on it)`);
  }
  return db;
}

export async function openDatabase(stateDir: string, o: OpenOptions = {}): Promise<Db> {
  const loc = databaseLocation(stateDir, o);
  return loc.kind === "postgres" ? await openPostgres(loc) : await openSqlite(stateDir);
}

/** Whether a state dir has records to read: its SQLite file, or a PostgreSQL database named in its config. */
export function hasDatabase(stateDir: string): boolean {
  if (existsSync(join(stateDir, "airroot.db"))) return true;
  try { return databaseLocation(stateDir).kind === "postgres"; } catch { return false; }
}
