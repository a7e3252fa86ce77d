// The audit trail in the database: one row per event, whichever server (or CLI command) recorded it, so a site with
// several deployment servers has one trail. Each row carries the same JSON line as STATE/audit.log, plus the fields
// one filters on.
import { bigints, registerSchema } from "./migrations.ts";
import { num, type Db } from "./sql.ts";
import { safeJson } from "../../util/printable.ts";
import type { Audit, AuditEvent } from "../audit.ts";
import type { Logger } from "../../util/log.ts";

const AUDIT_V1 = `
CREATE TABLE IF NOT EXISTS audit_log (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  at      INTEGER NOT NULL,          -- ms since epoch
  server  TEXT NOT NULL,             -- who recorded it: SERVERID@HOST[PID] for airroot serve, cli@HOST for a command
  event   TEXT NOT NULL,
  outcome TEXT NOT NULL,
  node    TEXT,
  remote  TEXT,
  line    TEXT NOT NULL              -- the event as one JSON line (as in audit.log)
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log(at);
`;
registerSchema("audit-v1", AUDIT_V1, bigints(AUDIT_V1).replace("BIGINT PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY"));

export interface AuditRow { id: number; at: number; server: string; event: string; outcome: string; node: string | null; remote: string | null; line: string }

export async function auditRows(db: Db, since = 0): Promise<AuditRow[]> {
  return (await db.all<AuditRow>("SELECT id, at, server, event, outcome, node, remote, line FROM audit_log WHERE at >= ? ORDER BY id", since))
    .map((r) => ({ ...r, id: num(r.id), at: num(r.at) }));
}

/**
 * An Audit that inserts each event into audit_log. record() stays synchronous for its callers (they record and then
 * refuse); the inserts run in order behind it, and flush() waits for them (close the database only after). A failed
 * insert is logged, like a failed append to audit.log.
 */
export function dbAudit(db: Db, server: string, log?: Logger): Audit & { flush(): Promise<void> } {
  let tail: Promise<void> = Promise.resolve();
  return {
    record(e: AuditEvent) {
      const at = Date.now();
      const line = safeJson({ time: new Date(at).toISOString(), server, ...e });
      tail = tail.then(async () => {
        try {
          await db.run("INSERT INTO audit_log (at, server, event, outcome, node, remote, line) VALUES (?, ?, ?, ?, ?, ?, ?)",
            at, server, e.event, e.outcome, e.node ?? null, e.remote ?? null, line);
        } catch (err) {
          log?.error(`audit: cannot record ${e.event} in the database ${db.where}: ${(err as Error).message}`);
        }
      });
    },
    flush: () => tail,
  };
}
