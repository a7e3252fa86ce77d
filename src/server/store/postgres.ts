// The shared backend: a PostgreSQL database that several `airroot serve` instances (and the CLI on any of them) use
// at once, through Bun's built-in client (Bun.SQL, a pool of connections). Nothing is cached in the process: every
// check (a certificate's revocation, an enrollment window) is a query, so what one server writes every server sees
// at its next request.
import { SQL } from "bun";
import type { Db, Param } from "./sql.ts";
import { redactUrl } from "./dburl.ts";

type Conn = { unsafe(sql: string, params?: unknown[]): Promise<unknown[] & { count?: number | null }> & { simple(): Promise<unknown> } };

/** `?` placeholders to PostgreSQL's `$1, $2, ...` (the store's statements hold no literal question mark). */
export function numberPlaceholders(sql: string): string {
  let i = 0;
  return sql.replace(/\?/g, () => `$${++i}`);
}

export interface PostgresOptions { url: string; password?: string; maxConnections?: number }

export async function postgresDb(o: PostgresOptions): Promise<Db> {
  const where = redactUrl(o.url);
  const sql = new SQL(o.url, {
    ...(o.password !== undefined ? { password: o.password } : {}),
    max: o.maxConnections ?? 10, idleTimeout: 60, connectionTimeout: 10,
  });
  const make = (c: Conn, inTx: boolean): Db => ({
    dialect: "postgres", where,
    all: async <T>(q: string, ...p: Param[]) => [...(await c.unsafe(numberPlaceholders(q), p))] as T[],
    get: async <T>(q: string, ...p: Param[]) => ((await c.unsafe(numberPlaceholders(q), p))[0] as T | undefined) ?? null,
    run: async (q: string, ...p: Param[]) => ({ changes: (await c.unsafe(numberPlaceholders(q), p)).count ?? 0 }),
    exec: async (script: string) => { await c.unsafe(script).simple(); },
    async transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
      if (inTx) return await fn(this);
      return (await sql.begin(async (tx) => await fn(make(tx as unknown as Conn, true)))) as T;
    },
    close: async () => { if (!inTx) await sql.close({ timeout: 5 }); },
  });
  const db = make(sql as unknown as Conn, false);
  try {
    await db.get("SELECT 1 AS x");
  } catch (e) {
    await sql.close().catch(() => {});
    throw new Error(`connecting to the database ${where}: ${(e as Error).message}; ${connectHint(e)}`);
  }
  return db;
}

function connectHint(e: unknown): string {
  const m = `${(e as Error).message} ${(e as { code?: string }).code ?? ""}`;
  if (/password|authentication/i.test(m)) {
    return "check the user and password (airroot serve config set db-password-file FILE, or --db-password-file) and pg_hba.conf";
  }
  if (/does not exist/i.test(m)) return "create the database and its owner first (createuser, createdb: see README, Several deployment servers)";
  return "is PostgreSQL running and does it accept connections from this host (listen_addresses, pg_hba.conf, firewall)?";
}
