// The heartbeat that keeps a server's row in the servers table: its interval's bounds, and a database that fails
// costing log lines, never the server.
import { expect, test } from "bun:test";
import { heartbeatInterval, HEARTBEAT_MS, startHeartbeat } from "../../src/server/heartbeat.ts";
import type { Db } from "../../src/server/store/db.ts";
import { memoryLogger } from "../../src/util/log.ts";

test("the interval: the option, else AIRROOT_HEARTBEAT_MS, else 15 s; out of bounds refused with the variable named", () => {
  expect(heartbeatInterval(undefined, undefined)).toBe(HEARTBEAT_MS);
  expect(heartbeatInterval(undefined, "")).toBe(HEARTBEAT_MS);
  expect(heartbeatInterval(undefined, "250")).toBe(250);
  expect(heartbeatInterval(1000, "250")).toBe(1000);
  for (const bad of ["10", "1.5", "soon", String(2 * 3_600_000)]) expect(() => heartbeatInterval(undefined, bad)).toThrow(`AIRROOT_HEARTBEAT_MS=${bad}`);
});

test("a database that fails: each beat logs the database and the error, start and stop still resolve", async () => {
  let calls = 0;
  const fail = async () => { calls++; throw new Error("connection refused"); };
  const db = { dialect: "postgres", where: "postgres://airroot@db.example/airroot", all: fail, get: fail, run: fail, exec: fail,
    transaction: fail, close: async () => {} } as unknown as Db;
  const log = memoryLogger();
  const hb = await startHeartbeat({ db, serverId: "s1", urls: () => [], every: 50, log });
  await Bun.sleep(180);
  await hb.stop();
  expect(calls).toBeGreaterThanOrEqual(3);
  expect(log.lines[0]).toStartWith("heartbeat: cannot update this server's row in the database postgres://airroot@db.example/airroot: connection refused;");
  expect(log.lines.filter((l) => l.includes("cannot update"))).toHaveLength(1); // once per outage
  expect(log.lines.at(-1)).toContain("cannot mark this server stopped");
});

test("after an outage the next good beat says so", async () => {
  let down = true;
  const run = async () => { if (down) throw new Error("gone"); return { changes: 1 }; };
  const db = { dialect: "sqlite", where: "x.db", get: async () => { if (down) throw new Error("gone"); return null; }, run } as unknown as Db;
  const log = memoryLogger();
  const hb = await startHeartbeat({ db, serverId: "s1", urls: () => [], every: 50, log });
  await Bun.sleep(120);
  down = false;
  await Bun.sleep(120);
  await hb.stop();
  expect(log.lines).toEqual([expect.stringContaining("cannot update"), "heartbeat: this server's row in the database x.db is updated again"]);
});
