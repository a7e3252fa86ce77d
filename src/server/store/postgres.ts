// The shared backend: a PostgreSQL database that several `airroot serve` instances (and the CLI on any of them) use
// at once, through Bun's built-in client (Bun.SQL, a pool of connections). Nothing is cached in the process: every
// check (a certificate's revocation, an enrollment window) is a query, so what one server writes every server sees
// at its next request.
import { SQL } from "bun";
import type { Db, Param } from "./sql.ts";
import { postgresTls, readRootCert, redactUrl, type SslMode } from "./dburl.ts";

type Conn = { unsafe(sql: string, params?: unknown[]): Promise<unknown[] & { count?: number | null }> & { simple(): Promise<unknown> } };

/** `?` placeholders to PostgreSQL's `$1, $2, ...` (the store's statements hold no literal question mark). */
export function numberPlaceholders(sql: string): string {
  let i = 0;
  return sql.replace(/\?/g, () => `$${++i}`);
}

export interface PostgresOptions { url: string; password?: string; maxConnections?: number }

/**
 * Bun.SQL's options for a URL's sslmode, stated in full (Bun 1.4.5, src/js/internal/sql/options.ts): the URL given to
 * Bun keeps sslmode (Bun's mode), and `tls` says the rest. Without an explicit rejectUnauthorized Bun takes it from
 * NODE_TLS_REJECT_UNAUTHORIZED, and "0" there would switch off even verify-full's checks; `ca` is the only trust
 * (no sslrootcert, no verifying mode). No sslmode: the URL as given, no `tls`: Bun's default, plaintext (unlike
 * libpq's prefer) unless PGSSLMODE is set.
 */
export function bunTlsOptions(url: string): { url: string; mode?: SslMode; tls?: false | Record<string, unknown> } {
  const t = postgresTls(url, "the database URL");
  if (!t.mode) return { url }; // as given: the current behaviour
  const u = new URL(t.url);
  u.searchParams.set("sslmode", t.mode);
  switch (t.mode) {
    case "disable": return { url: u.toString(), mode: t.mode, tls: false };
    case "require": return { url: u.toString(), mode: t.mode, tls: { rejectUnauthorized: false, serverName: t.host } };
    case "verify-ca":
    case "verify-full":
      return { url: u.toString(), mode: t.mode, tls: { ca: readRootCert(t.rootCert!), rejectUnauthorized: true, serverName: t.host } };
  }
}

export async function postgresDb(o: PostgresOptions): Promise<Db> {
  const where = redactUrl(o.url);
  const t = bunTlsOptions(o.url);
  const sql = new SQL(t.url, {
    ...(o.password !== undefined ? { password: o.password } : {}),
    ...(t.tls !== undefined ? { tls: t.tls } : {}),
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
    const code = (e as { code?: string }).code;
    const msg = (e as Error).message || code || String(e);
    const tlsFailure = isTlsFailure(e);
    const over = t.mode && t.mode !== "disable" ? ` over TLS (sslmode=${t.mode})` : "";
    throw new Error(`connecting to the database ${where}${over}: ${tlsFailure ? "TLS: " : ""}${msg}${code && !msg.includes(code) ? ` (${code})` : ""}; ${connectHint(e, t.mode)}`);
  }
  return db;
}

/** A failed TLS handshake or certificate check (Bun reports OpenSSL's verify codes and ERR_TLS_*). */
function isTlsFailure(e: unknown): boolean {
  const code = (e as { code?: string }).code ?? "";
  return /^ERR_TLS_|CERT|UNABLE_TO_|SELF_SIGNED|ERR_POSTGRES_TLS_/.test(code) || /certificate/i.test((e as Error).message ?? "");
}

function connectHint(e: unknown, mode?: SslMode): string {
  const code = (e as { code?: string }).code ?? "";
  const m = `${(e as Error).message} ${code}`;
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return "the server's certificate does not name the host in the URL: connect by a name (or address) its certificate holds in subjectAltName, or reissue the certificate";
  }
  if (code === "ERR_POSTGRES_TLS_NOT_AVAILABLE" || /does not support SSL/i.test(m)) {
    return "the server does not offer TLS: set ssl = on (with ssl_cert_file and ssl_key_file) in its postgresql.conf";
  }
  if (isTlsFailure(e)) {
    return "the server's certificate does not chain to the CA in sslrootcert: give the PEM file of the CA that signed it";
  }
  if (/no encryption/i.test(m)) {
    return `the server accepts only TLS connections from here (hostssl in pg_hba.conf)${mode === "disable" ? " and the URL says sslmode=disable" : ""}: add sslmode=verify-full&sslrootcert=CA.pem to the URL`;
  }
  if (/password|authentication/i.test(m)) {
    return "check the user and password (airroot serve config set db-password-file FILE, or --db-password-file) and pg_hba.conf";
  }
  if (/does not exist/i.test(m)) return "create the database and its owner first (createuser, createdb: see README, Several deployment servers)";
  return "is PostgreSQL running and does it accept connections from this host (listen_addresses, pg_hba.conf, firewall)?";
}
