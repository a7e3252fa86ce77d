// The embedded backend: one SQLite file in the state directory (bun:sqlite). bun:sqlite is synchronous on one
// connection, so while a transaction is open every other statement of this process waits for it (otherwise it would
// run inside that transaction); other processes (the CLI) are kept out by SQLite's own lock (BEGIN IMMEDIATE,
// busy_timeout).
import { Database } from "bun:sqlite";
import type { Db, Param } from "./sql.ts";

export function sqliteDb(file: string): Db {
  const raw = new Database(file, { create: true, strict: true });
  raw.exec("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;");
  let busy: Promise<void> | null = null;
  // The check and the statement run in one synchronous step: nothing can open a transaction in between.
  const whenIdle = async <T>(inTx: boolean, f: () => T): Promise<T> => {
    if (!inTx) while (busy) await busy;
    return f();
  };

  const make = (inTx: boolean): Db => ({
    dialect: "sqlite", where: file,
    all: <T>(sql: string, ...p: Param[]) => whenIdle(inTx, () => raw.query(sql).all(...p) as T[]),
    get: <T>(sql: string, ...p: Param[]) => whenIdle(inTx, () => (raw.query(sql).get(...p) as T | null) ?? null),
    run: (sql: string, ...p: Param[]) => whenIdle(inTx, () => ({ changes: raw.query(sql).run(...p).changes })),
    exec: (script: string) => whenIdle(inTx, () => { raw.exec(script); }),
    async transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
      if (inTx) return await fn(txDb); // nested: part of the open transaction
      while (busy) await busy;
      let release!: () => void;
      busy = new Promise<void>((r) => { release = r; });
      try {
        raw.exec("BEGIN IMMEDIATE");
        try {
          const out = await fn(txDb);
          raw.exec("COMMIT");
          return out;
        } catch (e) {
          if (raw.inTransaction) raw.exec("ROLLBACK");
          throw e;
        }
      } finally { busy = null; release(); }
    },
    close: () => whenIdle(inTx, () => raw.close()),
  });
  const txDb = make(true);
  return make(false);
}
