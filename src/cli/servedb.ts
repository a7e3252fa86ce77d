// `airroot serve copy-db`: a site's records from its embedded SQLite file into the PostgreSQL database several servers
// will share (store/copy.ts), so enrolled nodes stay enrolled when the site moves.
import { defineCommand } from "citty";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { openDatabase } from "../server/store/db.ts";
import { copyRecords } from "../server/store/copy.ts";
import { stateArg } from "./args.ts";

export const copyDbCommand = defineCommand({
  meta: {
    name: "copy-db",
    description: "Copy every record of STATE/airroot.db (nodes, certificates, used keys, images, profiles, the audit trail) into an empty PostgreSQL database: the one --db names, else config db. Stop airroot serve first; afterwards every server with db set uses it.",
  },
  args: {
    state: stateArg,
    db: { type: "string", description: "postgres://USER@HOST[:PORT]/DATABASE (default: config db)" },
    "db-password-file": { type: "string", description: "file whose first line is the PostgreSQL password (default: config db-password-file)" },
  },
  async run({ args }) {
    const stateDir = resolve(args.state);
    if (!existsSync(join(stateDir, "airroot.db"))) throw new Error(`copy-db: ${stateDir} holds no airroot.db to copy`);
    const to = await openDatabase(stateDir, { db: args.db, passwordFile: args["db-password-file"] === undefined ? undefined : resolve(args["db-password-file"]) });
    try {
      if (to.dialect !== "postgres") throw new Error("copy-db: name the PostgreSQL database with --db postgres://... or `airroot serve config set db postgres://...` first");
      const from = await openDatabase(stateDir, { db: "sqlite" });
      try {
        for (const r of await copyRecords(from, to)) console.log(`${r.table}: ${r.rows} row(s)`);
        console.log(`copied ${from.where} into ${to.where}`);
      } finally { await from.close(); }
    } finally { await to.close(); }
  },
});
