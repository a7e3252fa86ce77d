// TPM-bound enrollment against real swtpm instances: the server's MakeCredential challenge is answered by the
// node's TPM; the EK is recorded, and later enrollments succeed only from that same TPM.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startSwtpm, type Swtpm } from "../helpers/swtpm";
import { initState, statePaths } from "../../src/server/state.ts";
import { serve, type RunningServer } from "../../src/server/serve.ts";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, armNode, certsOf, getNode } from "../../src/server/store/nodes.ts";
import { enrollNode, type TpmProver } from "../../src/client/api.ts";
import { tpmProver } from "../../src/client/tpmprover.ts";
import { ApiCallError } from "../../src/client/http.ts";

const MAC = "52:54:00:00:00:31";
let dir: string, state: string, srv: RunningServer, url: string, ca: string, db: Awaited<ReturnType<typeof openDatabase>>;
let tpmA: Swtpm, tpmB: Swtpm;

beforeAll(async () => {
  dir = scratchDir();
  state = join(dir, "state");
  await initState(state, { addresses: ["127.0.0.1"] });
  db = await openDatabase(state);
  await addNode(db, { name: "t1", macs: [MAC], profile: "p", net: { mode: "dhcp" } });
  srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false });
  url = srv.localUrls[0];
  ca = readFileSync(statePaths(state).siteCaCert, "utf8");
  tpmA = await startSwtpm(join(dir, "tpmA"));
  tpmB = await startSwtpm(join(dir, "tpmB"));
}, 60_000);

afterAll(async () => {
  await srv?.close();
  await tpmA?.stop();
  await tpmB?.stop();
  await db?.close();
  removeScratchDirs();
}, 60_000);

async function code(p: Promise<unknown>): Promise<string> {
  try { await p; } catch (e) { expect(e).toBeInstanceOf(ApiCallError); return (e as ApiCallError).code; }
  return "ok";
}

test("a node with a TPM enrolls through the ActivateCredential challenge; its EK is recorded", async () => {
  await armNode(db, "t1", null);
  const prover = await tpmProver(tpmA.spec);
  const cred = await enrollNode(url, ca, { macs: [MAC] }, prover);
  expect(cred.node).toBe("t1");
  expect((await getNode(db, "t1"))!.ekPublic).toBe(prover.identity.ekPublic);
  expect(readFileSync(statePaths(state).audit, "utf8")).toContain('"tpm":"proven"');
}, 120_000);

test("later enrollments: without a TPM or with another TPM refused; the same TPM accepted", async () => {
  await armNode(db, "t1", null);
  expect(await code(enrollNode(url, ca, { macs: [MAC] }))).toBe("ek-mismatch");
  expect(await code(enrollNode(url, ca, { macs: [MAC] }, await tpmProver(tpmB.spec)))).toBe("ek-mismatch");
  expect((await getNode(db, "t1"))!.armed).toBe(true);
  expect((await enrollNode(url, ca, { macs: [MAC] }, await tpmProver(tpmA.spec))).node).toBe("t1");
}, 120_000);

test("claiming another TPM's EK without holding it fails the proof; the challenge cannot be answered twice", async () => {
  await armNode(db, "t1", null);
  const real = await tpmProver(tpmA.spec), other = await tpmProver(tpmB.spec);
  const before = (await certsOf(db, "t1")).length;
  // Presents A's (recorded) identity but can only run ActivateCredential on B: the secret comes out wrong.
  const impostor: TpmProver = {
    identity: real.identity,
    activate: async (blob, secret) => other.activate(blob, secret).catch(() => new Uint8Array(32)),
  };
  expect(await code(enrollNode(url, ca, { macs: [MAC] }, impostor))).toBe("tpm-proof-failed");
  expect(await certsOf(db, "t1")).toHaveLength(before);
  // A replayed answer to a consumed challenge is refused (the id is gone after the first answer).
  const post = async (path: string, body: unknown) => {
    const p = Bun.spawn(["curl", "-sS", "--cacert", statePaths(state).siteCaCert, "-H", "content-type: application/json",
      "--data-binary", JSON.stringify(body), `${url}${path}`], { stdout: "pipe" });
    return JSON.parse(await new Response(p.stdout).text());
  };
  const { makeCsr } = await import("../../src/pki/csr.ts");
  const r1 = await post("/api/v1/enroll", { macs: [MAC], csr: (await makeCsr("t1")).csrPem, tpm: real.identity });
  const challengeId: string = r1.challenge.id;
  const { challengeFromWire } = await import("../../src/tpm/makecredential.ts");
  const blob = challengeFromWire(r1.challenge);
  const secret = Buffer.from(await real.activate(blob.credentialBlob, blob.secret)).toString("base64");
  const ok = await post("/api/v1/enroll/activate", { id: challengeId, secret });
  expect(ok.node).toBe("t1");
  const again = await post("/api/v1/enroll/activate", { id: challengeId, secret });
  expect(again.error).toBe("unknown-challenge");
  expect(await certsOf(db, "t1")).toHaveLength(before + 1);
}, 120_000);

test("a malformed TPM identity is a 400, not a crash", async () => {
  await armNode(db, "t1", null);
  const bogus: TpmProver = { identity: { ekPublic: "AAECAwQ=", akPublic: "AAECAwQ=" }, activate: async () => new Uint8Array(0) };
  expect(await code(enrollNode(url, ca, { macs: [MAC] }, bogus))).toBe("ek-mismatch"); // recorded EK differs
  await db.run("UPDATE nodes SET ek_public = NULL WHERE name = 't1'");
  expect(await code(enrollNode(url, ca, { macs: [MAC] }, bogus))).toBe("bad-tpm-identity");
}, 60_000);
