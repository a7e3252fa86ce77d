// This server's row in the shared `servers` table (store/servers.ts): written at start, refreshed every HEARTBEAT_MS
// (a timer that never keeps the process alive), marked stopped at a clean shutdown. A database that is briefly
// unreachable costs a logged line, never the server: nodes are served either way.
import { hostname } from "node:os";
import type { Db } from "./store/db.ts";
import { getServer, healthOf, markStopped, upsertServer } from "./store/servers.ts";
import type { Logger } from "../util/log.ts";
import { version } from "../version.ts";

export const HEARTBEAT_MS = 15_000;
/** Overrides the interval (ms) for one run; tests use it to see a stopped server turn stale in seconds. */
export const HEARTBEAT_ENV = "AIRROOT_HEARTBEAT_MS";
const MIN_MS = 50, MAX_MS = 3_600_000;

/** The interval: the option, else $AIRROOT_HEARTBEAT_MS, else HEARTBEAT_MS; a value out of bounds is refused. */
export function heartbeatInterval(option?: number, env = process.env[HEARTBEAT_ENV]): number {
  const v = option ?? (env === undefined || env === "" ? HEARTBEAT_MS : Number(env));
  if (!Number.isInteger(v) || v < MIN_MS || v > MAX_MS) {
    throw new Error(`heartbeat interval ${option ?? `${HEARTBEAT_ENV}=${env}`} is not a whole number of ms from ${MIN_MS} to ${MAX_MS}`);
  }
  return v;
}

export interface HeartbeatOptions {
  db: Db;
  serverId: string;
  /** The base URLs nodes are told now (they follow config reloads). */
  urls: () => string[];
  every: number;
  log?: Logger;
}

export interface Heartbeat { stop(): Promise<void> }

export async function startHeartbeat(o: HeartbeatOptions): Promise<Heartbeat> {
  const host = hostname(), pid = process.pid, started = Date.now();
  let warned = false, first = true, failing = false, inFlight: Promise<void> | undefined;
  const beat = async () => {
    try {
      const now = Date.now();
      const prev = await getServer(o.db, o.serverId);
      // Another live process under our serverId: a state directory copied whole. Said once; both keep serving. At
      // the first beat a row of this host's earlier process (a restart after a crash) is no sign of that.
      const other = prev && (prev.host !== host || (!first && prev.pid !== pid));
      first = false;
      if (other && healthOf(prev, now) === "up" && !warned) {
        warned = true;
        o.log?.warn(`server id ${o.serverId} is also in use by ${prev.host}[${prev.pid}] (a state directory copied whole?); ` +
          "`airroot serve status` shows only one of them and discovery answers as one; give each server its own state with " +
          "`airroot serve export` and `airroot serve init --join`");
      }
      await upsertServer(o.db, { id: o.serverId, host, pid, urls: o.urls(), version, started, seen: now, beat: o.every });
      if (failing) o.log?.info(`heartbeat: this server's row in the database ${o.db.where} is updated again`);
      failing = false;
    } catch (e) {
      // Once per outage, not every beat: the log stays readable through a long one.
      if (!failing) o.log?.error(`heartbeat: cannot update this server's row in the database ${o.db.where}: ${(e as Error).message}; ` +
        "`airroot serve status` shows it stale until that works again");
      failing = true;
    }
  };
  await beat();
  const timer = setInterval(() => { inFlight ??= beat().finally(() => { inFlight = undefined; }); }, o.every);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await inFlight;
      try { await markStopped(o.db, o.serverId, host, pid); } catch (e) {
        o.log?.error(`heartbeat: cannot mark this server stopped in the database ${o.db.where}: ${(e as Error).message}`);
      }
    },
  };
}
