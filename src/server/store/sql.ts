// The one interface the server's records go through, whichever database holds them: the embedded SQLite file
// (sqlite.ts) or a PostgreSQL server shared by several `airroot serve` instances (postgres.ts). Statements use `?`
// placeholders and SQL both dialects accept; where they differ, a migration carries one text per dialect.
// Every call is async (PostgreSQL is a network round trip); atomicity comes from the database itself (conditional
// UPDATE/DELETE ... RETURNING, primary keys, transactions), never from a lock in one process.

export type Dialect = "sqlite" | "postgres";
export type Param = string | number | boolean | null;

export interface Db {
  readonly dialect: Dialect;
  /** Where the records are, for messages: the SQLite file, or the PostgreSQL URL without its password. */
  readonly where: string;
  all<T>(sql: string, ...params: Param[]): Promise<T[]>;
  get<T>(sql: string, ...params: Param[]): Promise<T | null>;
  /** A write; `changes` is how many rows it touched. */
  run(sql: string, ...params: Param[]): Promise<{ changes: number }>;
  /** Several statements without parameters (migrations). */
  exec(script: string): Promise<void>;
  /**
   * Runs fn in one transaction (committed when fn resolves, rolled back when it throws). Inside, use only `tx`.
   * SQLite takes the write lock at the start (BEGIN IMMEDIATE); PostgreSQL runs READ COMMITTED, so writes that must
   * not race are conditional (UPDATE ... WHERE the state still holds) or guarded by a primary key.
   */
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Numbers as the store returns them: PostgreSQL's BIGINT arrives as a string, SQLite's INTEGER as a number. */
export function num(v: unknown): number {
  return typeof v === "number" ? v : Number(v);
}
export function numOrNull(v: unknown): number | null {
  return v === null || v === undefined ? null : num(v);
}

/** A primary-key or unique constraint refused the write (SQLite: SQLITE_CONSTRAINT_*; PostgreSQL: 23505). */
export function isUniqueViolation(e: unknown): boolean {
  const x = e as { code?: unknown; errno?: unknown; message?: unknown };
  if (x?.errno === "23505" || x?.code === "23505") return true;
  return typeof x?.code === "string" && /^SQLITE_CONSTRAINT_(PRIMARYKEY|UNIQUE)$/.test(x.code);
}
