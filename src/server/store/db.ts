// The server's embedded database (bun:sqlite). Each record kind (images, nodes, ...) lives in its own module
// under src/server/store/ and registers its schema here, so a shared database can later replace this one
// behind the same small interfaces.
import { Database } from "bun:sqlite";
import { join } from "node:path";

export type Migration = { id: string; sql: string };
const migrations: Migration[] = [];

/** Called at module load by each store module: idempotent schema (CREATE TABLE IF NOT EXISTS ...). */
export function registerSchema(id: string, sql: string): void {
  if (!migrations.some((m) => m.id === id)) migrations.push({ id, sql });
}

export function openDatabase(stateDir: string): Database {
  const db = new Database(join(stateDir, "airroot.db"), { create: true, strict: true });
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
  return db;
}
