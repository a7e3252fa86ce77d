// First contact with failover: an unreachable server is skipped, a refusal is final; config, host certs, stage.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { freePort } from "../helpers/ports";
import { initState, statePaths } from "../../src/server/state.ts";
import { serve, type RunningServer } from "../../src/server/serve.ts";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, armNode, getNode } from "../../src/server/store/nodes.ts";
import { firstContact } from "../../src/client/firstcontact.ts";
import { ApiCallError } from "../../src/client/http.ts";

const MAC = "52:54:00:00:00:51";
let srv: RunningServer, state: string, db: Awaited<ReturnType<typeof openDatabase>>, ca: string;

beforeAll(async () => {
  state = join(scratchDir(), "state");
  await initState(state, { addresses: ["127.0.0.1"] });
  db = await openDatabase(state);
  await addNode(db, { name: "f1", macs: [MAC], profile: "p", net: { mode: "dhcp" } });
  srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false });
  ca = readFileSync(statePaths(state).siteCaCert, "utf8");
}, 60_000);
afterAll(async () => { await srv?.close(); db?.close(); removeScratchDirs(); });

test("a refusal from the first server is final (no failover on 4xx)", async () => {
  const e = await firstContact({ siteCa: ca, servers: [srv.localUrls[0]], macs: [MAC] }).catch((x) => x);
  expect(e).toBeInstanceOf(ApiCallError);
  expect((e as ApiCallError).code).toBe("identity-mismatch");
});

test("an unreachable server is skipped; enrollment, config, host certificate and stage come from the next", async () => {
  await armNode(db, "f1", null);
  const dead = `https://127.0.0.1:${await freePort("127.0.0.1")}`;
  const hk = join(scratchDir(), "hk");
  Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hk]);
  const logs: string[] = [];
  const r = await firstContact({ siteCa: ca, servers: [dead, srv.localUrls[0]], macs: [MAC], hostKeys: [readFileSync(hk + ".pub", "utf8")], stage: "test-stage", log: (l) => logs.push(l) });
  expect(r.server).toBe(srv.localUrls[0]);
  expect(logs.join("\n")).toContain("trying the next server");
  expect(r.config.name).toBe("f1");
  expect(r.hostCertificates?.certificates[0].certificate).toStartWith("ssh-ed25519-cert-v01@openssh.com ");
  expect((await getNode(db, "f1"))!.stage).toBe("test-stage");
}, 60_000);
