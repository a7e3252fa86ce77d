// An ECDSA public key whose point is not on its curve is refused with a clear error: the SSH CA never signs it as a
// host key, and it is not accepted as a root key. Found in review: only the point's size and 0x04 prefix were checked.
// The forged keys are real ssh-keygen keys (nistp256/384/521) with one bit of Y flipped: the wire format stays valid
// and OpenSSH's own ssh-keygen refuses them. Real components: airroot serve (in process), the node API client,
// ssh-keygen, and the airroot binary for `serve config add root-keys`.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { privateAirroot } from "../helpers/boot";
import { initState, readConfig, statePaths } from "../../src/server/state.ts";
import { serve, type RunningServer } from "../../src/server/serve.ts";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, armNode } from "../../src/server/store/nodes.ts";
import { enrollNode, NodeApi } from "../../src/client/api.ts";
import { ApiCallError } from "../../src/client/http.ts";
import { parsePublicKey } from "../../src/pki/sshkey.ts";
import { SshFormatError } from "../../src/pki/sshwire.ts";

const CURVES = [["nistp256", 256], ["nistp384", 384], ["nistp521", 521]] as const;
let dir = "", state = "", srv: RunningServer, api: NodeApi;
let db: Awaited<ReturnType<typeof openDatabase>>;
const keys: Record<string, { good: string; forged: string }> = {};

/** A real key from ssh-keygen, and the same line with the last bit of the point's Y coordinate flipped. */
function keyPair(curve: string, bits: number): { good: string; forged: string } {
  const f = join(dir, `hk-${curve}`);
  expect(Bun.spawnSync(["ssh-keygen", "-q", "-t", "ecdsa", "-b", String(bits), "-N", "", "-f", f]).exitCode).toBe(0);
  const good = readFileSync(f + ".pub", "utf8").trim();
  const [type, b64] = good.split(" ");
  const blob = Buffer.from(b64, "base64");
  blob[blob.length - 1] ^= 1; // the point is the blob's last field
  const forged = `${type} ${blob.toString("base64")} forged`;
  writeFileSync(join(dir, `forged-${curve}.pub`), forged + "\n");
  return { good, forged };
}

beforeAll(async () => {
  dir = scratchDir();
  state = join(dir, "state");
  for (const [c, b] of CURVES) keys[c] = keyPair(c, b);
  await initState(state, { addresses: ["127.0.0.1"] });
  db = await openDatabase(state);
  await addNode(db, { name: "n1", macs: ["52:54:00:00:13:51"], profile: "p", net: { mode: "dhcp" } });
  await armNode(db, "n1", null);
  srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false, configCheckMs: 0 });
  const ca = readFileSync(statePaths(state).siteCaCert, "utf8");
  api = new NodeApi(srv.localUrls[0], ca, await enrollNode(srv.localUrls[0], ca, { macs: ["52:54:00:00:13:51"] }));
}, 60_000);

afterAll(async () => { await api?.close(); await srv?.close(); db?.close(); removeScratchDirs(); }, 60_000);

test("OpenSSH itself refuses the forged keys (they are not keys), and accepts the originals", () => {
  for (const [c] of CURVES) {
    expect(Bun.spawnSync(["ssh-keygen", "-l", "-f", join(dir, `hk-${c}.pub`)]).exitCode).toBe(0);
    expect(Bun.spawnSync(["ssh-keygen", "-l", "-f", join(dir, `forged-${c}.pub`)]).exitCode).not.toBe(0);
  }
});

test("parsePublicKey refuses a point off the curve with a clear error", () => {
  for (const [c] of CURVES) {
    expect(parsePublicKey(keys[c].good).type).toBe(`ecdsa-sha2-${c}`);
    expect(() => parsePublicKey(keys[c].forged)).toThrow(SshFormatError);
    expect(() => parsePublicKey(keys[c].forged)).toThrow(`the public point is not on the ${c} curve`);
  }
});

test("POST self/sshcert refuses a forged ECDSA host key (400 bad-host-key); nothing is signed or recorded", async () => {
  const count = async () => Number((await db.get<{ n: number }>("SELECT COUNT(*) AS n FROM ssh_host_certs"))!.n);
  for (const [c] of CURVES) {
    const before = (await count());
    const e = await api.sshCertificates([keys[c].forged]).catch((x) => x);
    expect(e).toBeInstanceOf(ApiCallError);
    expect((e as ApiCallError).status).toBe(400);
    expect((e as ApiCallError).code).toBe("bad-host-key");
    expect((e as ApiCallError).message).toContain(`hostKeys[0]: ECDSA key: the public point is not on the ${c} curve`);
    expect((await count())).toBe(before);
    // A good key next to a forged one: the whole request is refused.
    expect(await api.sshCertificates([keys[c].good, keys[c].forged]).then(() => "signed", () => "refused")).toBe("refused");
    const ok = await api.sshCertificates([keys[c].good]);
    expect(ok.certificates[0].certificate).toStartWith(`ecdsa-sha2-${c}-cert-v01@openssh.com `);
  }
  expect(readFileSync(statePaths(state).audit, "utf8")).toMatch(/"event":"sshcert","outcome":"refused".*not on the nistp256 curve/);
}, 60_000);

test("`airroot serve config add root-keys` refuses a forged ECDSA key and leaves config.json unchanged", () => {
  const before = readFileSync(statePaths(state).config, "utf8");
  const r = Bun.spawnSync([privateAirroot(), "serve", "config", "add", "root-keys", keys.nistp384.forged, "--state", state], { stdout: "pipe", stderr: "pipe" });
  expect(r.exitCode).not.toBe(0);
  expect(r.stderr.toString()).toContain("not on the nistp384 curve");
  expect(readFileSync(statePaths(state).config, "utf8")).toBe(before);
  const ok = Bun.spawnSync([privateAirroot(), "serve", "config", "add", "root-keys", keys.nistp384.good, "--state", state], { stdout: "pipe", stderr: "pipe" });
  expect(ok.exitCode).toBe(0);
  expect(readConfig(state).rootAuthorizedKeys).toEqual([keys.nistp384.good]);
}, 180_000);
