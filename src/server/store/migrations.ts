// Versioned schema migrations: each store module registers its steps at load, in order, with one SQL text per
// dialect where SQLite and PostgreSQL differ. Applied steps are recorded in schema_applied (id, time), so opening a
// database brings it up to date and never repeats a step. On PostgreSQL every step runs under one advisory lock in one
// transaction: several servers starting at once migrate the shared database exactly once.
import type { Db, Dialect } from "./sql.ts";

export interface Migration { id: string; sql: Record<Dialect, string> }
const migrations: Migration[] = [];

/** Called at module load by each store module; `postgres` defaults to the SQLite text when both accept it. */
export function registerSchema(id: string, sqlite: string, postgres = sqlite): void {
  if (!migrations.some((m) => m.id === id)) migrations.push({ id, sql: { sqlite, postgres } });
}

export function registeredMigrations(): readonly Migration[] { return migrations; }

// Any constant: it only has to be the same for every airroot server sharing the database.
const MIGRATION_LOCK = 74_130_001;

/** Applies the steps not yet recorded; returns their ids. */
export async function applyMigrations(db: Db): Promise<string[]> {
  const applied: string[] = [];
  const step = async (tx: Db, m: Migration) => {
    if (await tx.get("SELECT 1 AS x FROM schema_applied WHERE id = ?", m.id)) return;
    await tx.exec(m.sql[db.dialect]);
    await tx.run("INSERT INTO schema_applied (id, at) VALUES (?, ?)", m.id, Date.now());
    applied.push(m.id);
  };
  if (db.dialect === "postgres") {
    await db.transaction(async (tx) => {
      await tx.get("SELECT pg_advisory_xact_lock(?) IS NULL AS x", MIGRATION_LOCK);
      await tx.exec("CREATE TABLE IF NOT EXISTS schema_applied (id TEXT PRIMARY KEY, at BIGINT NOT NULL)");
      for (const m of migrations) await step(tx, m);
    });
  } else {
    await db.exec("CREATE TABLE IF NOT EXISTS schema_applied (id TEXT PRIMARY KEY, at INTEGER NOT NULL)");
    for (const m of migrations) await db.transaction((tx) => step(tx, m));
  }
  return applied;
}

/** The PostgreSQL text of a step whose SQLite INTEGER columns hold ms timestamps or sizes (beyond 32 bits). */
export const bigints = (sql: string): string => sql.replace(/\bINTEGER\b/g, "BIGINT");
