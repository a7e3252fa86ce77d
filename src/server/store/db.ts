// The server's embedded database (bun:sqlite). Each record kind (images, nodes, ...) lives in its own module
// under src/server/store/ and registers its schema here, so a shared database can later replace this one
// behind the same small interfaces.
import { Database } from "bun:sqlite";
import { chmodSync, closeSync, constants, openSync, statSync } from "node:fs";
import { join } from "node:path";

export type Migration = { id: string; sql: string };
const migrations: Migration[] = [];

/** Called at module load by each store module: idempotent schema (CREATE TABLE IF NOT EXISTS ...). */
export function registerSchema(id: string, sql: string): void {
  if (!migrations.some((m) => m.id === id)) migrations.push({ id, sql });
}

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

export function openDatabase(stateDir: string): Database {
  const file = join(stateDir, "airroot.db");
  try { closeSync(openSync(file, constants.O_RDWR | constants.O_CREAT, 0o600)); } catch (e) {
    throw new Error(`opening ${file}: ${(e as Error).message}; is --state the directory \`airroot serve init\` made?`);
  }
  makePrivate(stateDir);
  const db = new Database(file, { create: true, strict: true });
  db.exec("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;");
  db.exec("CREATE TABLE IF NOT EXISTS schema_applied (id TEXT PRIMARY KEY, at INTEGER NOT NULL)");
  for (const m of migrations) {
    const done = db.query("SELECT 1 FROM schema_applied WHERE id = ?").get(m.id);
    if (done) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.query("INSERT INTO schema_applied (id, at) VALUES (?, ?)").run(m.id, Date.now());
    })();
  }
  makePrivate(stateDir); // -wal and -shm exist now
  return db;
}
