// Moving a site from its embedded SQLite file to a shared PostgreSQL database: every record copied as it is (node
// identities, enrollment windows, certificates and used keys, so enrolled nodes stay enrolled; images, profiles,
// boots, the audit trail), in one transaction on the target, which must hold no records yet.
import type { Db } from "./sql.ts";

/** The tables in an order that satisfies their foreign keys; tables with an id sequence are marked. */
const TABLES: { name: string; sequence?: string }[] = [
  { name: "nodes" }, { name: "node_macs" }, { name: "node_certs" }, { name: "used_node_keys" }, { name: "ssh_host_certs" },
  { name: "pending_challenges" }, { name: "report_tokens" },
  { name: "images" }, { name: "profiles" }, { name: "profile_history", sequence: "id" }, { name: "image_boots" },
  { name: "audit_log", sequence: "id" },
];

export interface CopyResult { table: string; rows: number }

export async function copyRecords(from: Db, to: Db): Promise<CopyResult[]> {
  return await to.transaction(async (tx) => {
    for (const t of ["nodes", "images", "audit_log"]) {
      if (await tx.get(`SELECT 1 AS x FROM ${t} LIMIT 1`)) {
        throw new Error(`the target database ${to.where} already holds records (table ${t}); copy into a new, empty database`);
      }
    }
    const out: CopyResult[] = [];
    for (const t of TABLES) {
      const rows = await from.all<Record<string, string | number | null>>(`SELECT * FROM ${t.name}`);
      for (const r of rows) {
        const cols = Object.keys(r);
        await tx.run(`INSERT INTO ${t.name} (${cols.join(", ")}) VALUES (${cols.map(() => "?").join(", ")})`, ...cols.map((c) => r[c]));
      }
      if (t.sequence && to.dialect === "postgres" && rows.length) {
        // Rows keep their ids; the sequence continues after the highest.
        await tx.get(`SELECT setval(pg_get_serial_sequence('${t.name}', '${t.sequence}'), (SELECT MAX(${t.sequence}) FROM ${t.name})) IS NULL AS x`);
      }
      out.push({ table: t.name, rows: rows.length });
    }
    return out;
  });
}
