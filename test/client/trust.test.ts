// The node credential's life across boots, with a real swtpm and a real `airroot serve`: enroll and seal; reuse on
// the next boot without arming; revoked → evicted, refused until armed, then re-enrolled; locked → unusable until the
// next boot (swtpm restart resets the PCRs); a new TPM (fresh state) is refused by the server's recorded EK.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { freePort, waitForPort } from "../helpers/ports";
import { startSwtpm, type Swtpm } from "../helpers/swtpm";
import { statePaths } from "../../src/server/state.ts";
import { decodeCredential, encodeCredential } from "../../src/client/trust.ts";
import { CredentialError } from "../../src/tpm/credential.ts";
import type { Subprocess } from "bun";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const BUN = process.execPath;
const MAC = "52:54:00:aa:01:01";
const dir = scratchDir();
const state = join(dir, "state");
let srv: Subprocess;
let url: string;
let tpm: Swtpm;

async function airroot(args: string[], timeoutMs = 60_000): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([BUN, MAIN, ...args], { stdout: "pipe", stderr: "pipe" });
  const t = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(t);
  return { code, out, err };
}
const enroll = (...extra: string[]) => airroot(["enroll", "--server", url, "--ca", statePaths(state).siteCaCert, "--mac", MAC, "--tpm", tpm.spec, ...extra]);
async function reboot(fresh = false) {
  await tpm.stop();
  tpm = await startSwtpm(fresh ? join(dir, "tpm-new") : join(dir, "tpm"));
}

beforeAll(async () => {
  expect((await airroot(["serve", "init", "--state", state, "--address", "127.0.0.1"])).code).toBe(0);
  expect((await airroot(["node", "add", "c1", "--state", state, "--mac", MAC, "--profile", "p"])).code).toBe(0);
  const port = await freePort("127.0.0.1");
  url = `https://127.0.0.1:${port}`;
  srv = Bun.spawn([BUN, MAIN, "serve", "--state", state, "--listen", `127.0.0.1:${port}`, "--no-discovery"], { stdout: "ignore", stderr: "ignore" });
  await waitForPort("127.0.0.1", port, 20_000);
  tpm = await startSwtpm(join(dir, "tpm"));
}, 60_000);

afterAll(async () => {
  srv?.kill("SIGTERM");
  await srv?.exited;
  await tpm?.stop();
  removeScratchDirs();
});

test("enroll seals; the next boot reuses the sealed credential without arming", async () => {
  expect((await airroot(["node", "arm", "c1", "--state", state, "--once"])).code).toBe(0);
  const first = await enroll();
  expect(first.out).toContain("enrolled as c1 (credential sealed in the TPM)");
  expect(first.code).toBe(0);
  await reboot();
  const second = await enroll();
  expect(second.out).toContain("reused the credential sealed in the TPM: node c1");
  expect(second.code).toBe(0);
}, 120_000);

test("revoked: the credential is evicted, enrollment is refused until armed, then a new one is sealed", async () => {
  expect((await airroot(["node", "revoke", "c1", "--state", state])).code).toBe(0);
  const refused = await enroll();
  expect(refused.code).toBe(1);
  expect(refused.err).toContain("the server no longer accepts the sealed credential");
  expect(refused.err).toContain("identity does not match an armed node");
  const info = await airroot(["tpm", "info", "--tpm", tpm.spec]);
  expect(info.out).toMatch(/credential\s+none/);
  expect((await airroot(["node", "arm", "c1", "--state", state, "--once"])).code).toBe(0);
  const again = await enroll();
  expect(again.out).toContain("enrolled as c1 (credential sealed in the TPM)");
  await reboot();
  expect((await enroll()).out).toContain("reused the credential sealed in the TPM");
}, 120_000);

test("after the lock extend nothing in this boot can unseal; the next boot can", async () => {
  const locked = await enroll("--lock");
  expect(locked.out).toContain("TPM credential locked for this boot");
  const blocked = await enroll();
  expect(blocked.code).toBe(1);
  expect(blocked.err).toContain("already locked for this boot");
  await reboot();
  expect((await enroll()).out).toContain("reused the credential sealed in the TPM");
}, 120_000);

test("a new TPM (fresh state) is refused for its unknown EK until the admin arms with --new-tpm", async () => {
  await reboot(true);
  expect((await airroot(["node", "arm", "c1", "--state", state, "--once"])).code).toBe(0);
  const r = await enroll();
  expect(r.err).toContain("no sealed credential in the TPM: enrolling");
  expect(r.code).toBe(1);
  expect(r.err).toMatch(/TPM|EK/);
  expect(r.err).toContain("--new-tpm");
  expect(r.err).not.toMatch(/\n\s+at /); // a clear error, not a stack trace
  expect((await airroot(["node", "arm", "c1", "--state", state, "--once", "--new-tpm"])).code).toBe(0);
  expect((await enroll()).out).toContain("enrolled as c1 (credential sealed in the TPM)");
  await reboot(true);
  expect((await enroll()).out).toContain("reused the credential sealed in the TPM");
}, 120_000);

test("sealed credential bytes are parsed strictly (bounded fuzz)", () => {
  const good = { keyPem: "k", certPem: "c", node: "n", serial: "01", notAfter: "2030" };
  expect(decodeCredential(encodeCredential(good))).toEqual(good);
  const bytes = encodeCredential(good);
  for (let i = 0; i < 3000; i++) {
    const b = Uint8Array.from(bytes.subarray(0, Math.floor(Math.random() * (bytes.length + 1))));
    if (b.length && i % 2) b[Math.floor(Math.random() * b.length)] ^= 1 << Math.floor(Math.random() * 8);
    try { decodeCredential(b); } catch (e) { expect(e).toBeInstanceOf(CredentialError); }
  }
});
