// `airroot serve status`: every deployment server that shares the database (the servers table each `airroot serve`
// keeps its row in, store/servers.ts), with when each was last seen. Run on any of them, or anywhere the state's
// database is reachable; with SQLite it shows the one server of that state directory.
import { defineCommand } from "citty";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { openDatabase } from "../server/store/db.ts";
import { forgetServer, healthOf, listServers, type ServerRow } from "../server/store/servers.ts";
import { readConfig, statePaths } from "../server/state.ts";
import { formatDuration } from "../util/duration.ts";
import { escapeText, safeJson } from "../util/printable.ts";
import { stateArg } from "./args.ts";

function table(rows: ServerRow[], self: string | undefined, now: number): string[] {
  if (rows.length === 0) return ["no server has recorded itself in this database yet; start `airroot serve` on this state"];
  const cells = rows.map((r) => [r.id + (r.id === self ? " *" : ""), `${r.host}[${r.pid}]`, healthOf(r, now),
    `${formatDuration(Math.max(0, now - r.seen))} ago`, new Date(r.started).toISOString(), r.version, r.urls.join(" ") || "-"].map(escapeText));
  const head = ["SERVER", "HOST", "STATE", "LAST SEEN", "STARTED", "VERSION", "URLS"];
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)));
  const lines = [head, ...cells].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join("  "));
  if (self && rows.some((r) => r.id === self)) lines.push("* this state directory's server");
  return lines;
}

export const statusCommand = defineCommand({
  meta: {
    name: "status",
    description: "Show every deployment server sharing this state's database: server id, host and pid, up/stale/stopped, last seen, start time, version and the URLs nodes are told. A server is stale after three missed heartbeats (15 s apart).",
  },
  args: {
    state: stateArg,
    db: { type: "string", description: "postgres://USER@HOST[:PORT]/DATABASE or sqlite (default: config db)" },
    "db-password-file": { type: "string", description: "file whose first line is the PostgreSQL password (default: config db-password-file)" },
    json: { type: "boolean", description: "machine-readable output" },
    forget: { type: "string", description: "remove a retired server's row (its SERVER id) instead; a running server writes its row again at its next heartbeat" },
  },
  async run({ args }) {
    const stateDir = resolve(args.state);
    const self = existsSync(statePaths(stateDir).config) ? readConfig(stateDir).serverId : undefined;
    const db = await openDatabase(stateDir, { db: args.db, passwordFile: args["db-password-file"] === undefined ? undefined : resolve(args["db-password-file"]) });
    try {
      if (args.forget !== undefined) {
        if (!(await forgetServer(db, args.forget))) throw new Error(`serve status: no server ${args.forget} in ${db.where}; see \`airroot serve status\``);
        console.log(`forgot server ${args.forget}`);
        return;
      }
      const rows = await listServers(db), now = Date.now();
      if (args.json) {
        console.log(safeJson(rows.map((r) => ({ ...r, state: healthOf(r, now), lastSeenMs: now - r.seen, self: r.id === self })), 2));
        return;
      }
      for (const l of table(rows, self, now)) console.log(l);
    } finally { await db.close(); }
  },
});
