// The "untethered" boot stage (issue 15 §3): a node booting with airroot.untether= asks for a longer-lived report
// token, reports "running" with `more` (the token is kept), then "untethered" (the token is used up). A normal token
// still ends at "running". Real `airroot serve` on loopback, real node client.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { initState, statePaths } from "../../src/server/state.ts";
import { serve, type RunningServer } from "../../src/server/serve.ts";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, armNode, getNode } from "../../src/server/store/nodes.ts";
import { enrollNode, NodeApi, reportWithToken, type NodeCredential } from "../../src/client/api.ts";
import { reporterInputFor } from "../../src/boot/reporter.ts";
import { REPORT_TOKEN_TTL_MS, UNTETHER_REPORT_TOKEN_TTL_MS } from "../../src/server/report.ts";

let state = "", url = "", siteCa = "";
let srv: RunningServer;
let db: Awaited<ReturnType<typeof openDatabase>>;
let cred: NodeCredential;

beforeAll(async () => {
  state = join(scratchDir(), "state");
  await initState(state, { addresses: ["127.0.0.1"] });
  db = await openDatabase(state);
  await addNode(db, { name: "u1", macs: ["52:54:00:00:15:01"], profile: "p", net: { mode: "dhcp" } });
  srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false });
  url = srv.localUrls[0];
  siteCa = readFileSync(statePaths(state).siteCaCert, "utf8");
  await armNode(db, "u1", null);
  cred = await enrollNode(url, siteCa, { macs: ["52:54:00:00:15:01"] });
}, 120_000);

afterAll(async () => {
  await srv?.close();
  await db?.close();
  removeScratchDirs();
}, 60_000);

const token = async (untether: boolean) => {
  const api = new NodeApi(url, siteCa, cred);
  try { return await api.reportToken({ untether }); } finally { await api.close(); }
};
const post = (body: Record<string, unknown>) => fetch(`${url}/api/v1/report`, {
  method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), tls: { ca: siteCa },
} as RequestInit).then((r) => r.status);

test("an untethering boot's token outlives running (with more) and ends at untethered; a normal token ends at running", async () => {
  const normal = await token(false);
  const left = Date.parse(normal.expires) - Date.now();
  expect(left).toBeLessThanOrEqual(REPORT_TOKEN_TTL_MS);
  expect(left).toBeGreaterThan(REPORT_TOKEN_TTL_MS - 60_000);
  await reportWithToken(url, siteCa, { node: "u1", token: normal.token, stage: "running" });
  expect(await post({ node: "u1", token: normal.token, stage: "untethered" })).toBe(401); // used up

  const long = await token(true);
  expect(Date.parse(long.expires) - Date.now()).toBeGreaterThan(UNTETHER_REPORT_TOKEN_TTL_MS - 60_000);
  await reportWithToken(url, siteCa, { node: "u1", token: long.token, stage: "running", more: true });
  expect((await getNode(db, "u1"))?.stage).toBe("running");
  await reportWithToken(url, siteCa, { node: "u1", token: long.token, stage: "untethered", detail: "/dev/loop0 reads the local copy" });
  expect(await getNode(db, "u1")).toMatchObject({ stage: "untethered", stageDetail: "/dev/loop0 reads the local copy" });
  expect(await post({ node: "u1", token: long.token, stage: "running" })).toBe(401); // used up
  expect(await post({ node: "u1", token: long.token, stage: "untethered", more: "yes" })).toBe(400);

  // The reporter's input for an untethering boot: the mount point, and a wait within the token's life.
  const input = await reporterInputFor({ servers: [url], credential: cred }, siteCa, 600, 5000, "/mnt/image");
  expect(input.untetherMount).toBe("/mnt/image");
  expect(input.untetherWaitSec).toBeGreaterThan(20 * 3600);
  expect(input.untetherWaitSec).toBeLessThanOrEqual(23 * 3600);
  // An old-style request (no body) still gets a normal token.
  const r = await fetch(`${url}/api/v1/self/report-token`, { method: "POST",
    tls: { ca: siteCa, cert: cred.certPem, key: cred.keyPem } } as RequestInit);
  expect(r.status).toBe(200);
  expect(Date.parse(((await r.json()) as { expires: string }).expires) - Date.now()).toBeLessThanOrEqual(REPORT_TOKEN_TTL_MS);
}, 60_000);
