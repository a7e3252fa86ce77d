// The audit trail: one JSON line per security decision (enrollment, refused call, revocation) in STATE/audit.log,
// and the same event in the database's audit_log (store/auditlog.ts), which several servers share.
import { appendFileSync, chmodSync, existsSync, writeFileSync } from "node:fs";
import type { Logger } from "../util/log.ts";
import { safeJson } from "../util/printable.ts";

export interface AuditEvent {
  event: string;                         // "enroll", "mtls", "sshcert", "node.revoke", ...
  outcome: "ok" | "refused" | "error";
  remote?: string;
  node?: string;
  reason?: string;
  [k: string]: string | number | boolean | undefined;
}

export interface Audit {
  record(e: AuditEvent): void;
  /** Resolves once every event recorded so far is stored (the database trail writes behind record()). */
  flush?(): Promise<void>;
}

/** Records every event in each of `audits` (audit.log and the database). */
export function teeAudit(...audits: Audit[]): Audit & { flush(): Promise<void> } {
  return {
    record(e) { for (const a of audits) a.record(e); },
    async flush() { await Promise.all(audits.map((a) => a.flush?.())); },
  };
}

/** Audit log writing to `file` (created 0600) and echoing a short line through `log`. Never pass key material. */
export function fileAudit(file: string, log?: Logger): Audit {
  return {
    record(e) {
      // safeJson: names and reasons from remote input must not carry C1 or bidi controls into `tail audit.log`.
      const line = safeJson({ time: new Date().toISOString(), ...e });
      try {
        if (!existsSync(file)) { writeFileSync(file, "", { mode: 0o600 }); chmodSync(file, 0o600); }
        appendFileSync(file, line + "\n");
      } catch (err) {
        log?.error(`audit: cannot append to ${file}: ${(err as Error).message}`);
      }
      const msg = `audit ${e.event} ${e.outcome}${e.node ? ` node=${e.node}` : ""}${e.remote ? ` from=${e.remote}` : ""}${e.reason ? `: ${e.reason}` : ""}`;
      if (e.outcome === "ok") log?.info(msg); else log?.warn(msg);
    },
  };
}

/** Keeps events in memory (tests). */
export function memoryAudit(): Audit & { events: AuditEvent[] } {
  const events: AuditEvent[] = [];
  return { events, record: (e) => { events.push(e); } };
}
