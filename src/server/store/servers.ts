// The deployment servers sharing the database: each running `airroot serve` keeps one row (its serverId, host,
// advertised URLs, version, start time) and refreshes `seen` on an interval, so `airroot serve status` run anywhere
// shows every server and whether it is still there. A row is keyed by serverId: a state directory copied whole (one
// serverId, two servers) shows as one row that changes hands, and the heartbeat says so in the log.
import { bigints, registerSchema } from "./migrations.ts";
import { num, numOrNull, type Db } from "./sql.ts";

const SERVERS_V1 = `
CREATE TABLE IF NOT EXISTS servers (
  id      TEXT PRIMARY KEY,          -- config.json serverId
  host    TEXT NOT NULL,
  pid     INTEGER NOT NULL,
  urls    TEXT NOT NULL,             -- JSON array of the base URLs nodes are told
  version TEXT NOT NULL,
  started INTEGER NOT NULL,          -- ms since epoch
  seen    INTEGER NOT NULL,          -- last heartbeat
  beat    INTEGER NOT NULL,          -- the heartbeat interval (ms), so a reader can tell a late one from a gone one
  stopped INTEGER                    -- set when the server shut down cleanly
);
`;
registerSchema("servers-v1", SERVERS_V1, bigints(SERVERS_V1));

export interface ServerRow {
  id: string; host: string; pid: number; urls: string[]; version: string;
  started: number; seen: number; beat: number; stopped: number | null;
}
export type ServerHealth = "up" | "stale" | "stopped";

/** A server is stale once it missed this many heartbeats in a row (one late write is not an outage). */
export const STALE_AFTER_BEATS = 3;

export function healthOf(r: ServerRow, now = Date.now()): ServerHealth {
  if (r.stopped !== null) return "stopped";
  return now - r.seen > STALE_AFTER_BEATS * r.beat ? "stale" : "up";
}

type Raw = Omit<ServerRow, "urls"> & { urls: string };

function rowOf(r: Raw): ServerRow {
  let urls: string[] = [];
  try { const u = JSON.parse(r.urls); if (Array.isArray(u)) urls = u.filter((x) => typeof x === "string"); } catch { /* shown as none */ }
  return { ...r, urls, pid: num(r.pid), started: num(r.started), seen: num(r.seen), beat: num(r.beat), stopped: numOrNull(r.stopped) };
}

const COLUMNS = "id, host, pid, urls, version, started, seen, beat, stopped";

export async function listServers(db: Db): Promise<ServerRow[]> {
  return (await db.all<Raw>(`SELECT ${COLUMNS} FROM servers ORDER BY id`)).map(rowOf);
}

export async function getServer(db: Db, id: string): Promise<ServerRow | null> {
  const r = await db.get<Raw>(`SELECT ${COLUMNS} FROM servers WHERE id = ?`, id);
  return r ? rowOf(r) : null;
}

/** Writes this server's row (a new start, or a heartbeat: the same values with a later `seen`). */
export async function upsertServer(db: Db, r: Omit<ServerRow, "stopped">): Promise<void> {
  await db.run(`INSERT INTO servers (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)
    ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, urls = excluded.urls, version = excluded.version,
      started = excluded.started, seen = excluded.seen, beat = excluded.beat, stopped = NULL`,
  r.id, r.host, r.pid, JSON.stringify(r.urls), r.version, r.started, r.seen, r.beat);
}

/** Marks a clean shutdown, only if the row is still this process's (a copy with the same serverId may hold it). */
export async function markStopped(db: Db, id: string, host: string, pid: number, at = Date.now()): Promise<void> {
  await db.run("UPDATE servers SET stopped = ?, seen = ? WHERE id = ? AND host = ? AND pid = ?", at, at, id, host, pid);
}

/** Drops a retired server's row; true when there was one. */
export async function forgetServer(db: Db, id: string): Promise<boolean> {
  return (await db.run("DELETE FROM servers WHERE id = ?", id)).changes === 1;
}
