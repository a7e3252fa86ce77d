// The admin and node commands as a user runs them: serve init (idempotent), node add/list/arm/show/revoke/remove,
// `airroot serve` as a process and `airroot enroll` against it writing key, cert and SSH host certificates.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, statSync, existsSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { freePort, waitForPort } from "../helpers/ports";
import { statePaths } from "../../src/server/state.ts";
import { startSwtpm } from "../helpers/swtpm";
import { tpmOptions } from "../../src/cli/enroll.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const BUN = process.execPath;
afterAll(removeScratchDirs);

async function airroot(args: string[], timeoutMs = 30_000): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([BUN, MAIN, ...args], { stdout: "pipe", stderr: "pipe" });
  const t = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(t);
  return { code, out, err };
}

test("serve init creates private keys once; re-running keeps them byte for byte", async () => {
  const state = join(scratchDir(), "state");
  const r1 = await airroot(["serve", "init", "--state", state, "--address", "127.0.0.1", "--trusted-subnet", "10.1.0.0/16"]);
  expect(r1.code).toBe(0);
  expect(r1.out).toContain("server certificate names: 127.0.0.1");
  // Every file of a fresh state dir is reported as created, the image key pair included.
  expect(r1.out).toContain(`created ${join(state, "keys/image.key")}\n`);
  expect(r1.out).toContain(`created ${join(state, "keys/image.pub")}\n`);
  expect(r1.out).not.toContain("kept");
  const p = statePaths(state);
  const before = [p.siteCaKey, p.serverKey, p.nodeCaKey, p.sshCaKey].map((f) => readFileSync(f, "utf8"));
  for (const f of [p.siteCaKey, p.serverKey, p.nodeCaKey, p.sshCaKey, join(state, "keys/image.key")]) expect(statSync(f).mode & 0o777).toBe(0o600);
  const r2 = await airroot(["serve", "init", "--state", state, "--address", "127.0.0.1", "--address", "127.0.0.9"]);
  expect(r2.code).toBe(0);
  expect(r2.out).not.toContain("created");
  expect(r2.out).toContain(`kept    ${join(state, "keys/image.key")}\n`);
  expect(r2.err).toContain("does not cover 127.0.0.9;");
  expect([p.siteCaKey, p.serverKey, p.nodeCaKey, p.sshCaKey].map((f) => readFileSync(f, "utf8"))).toEqual(before);
  expect(JSON.parse(readFileSync(p.config, "utf8")).trustedSubnets).toEqual(["10.1.0.0/16"]);
  const bad = await airroot(["serve", "init", "--state", state, "--address", "not-an-ip"]);
  expect(bad.code).toBe(1);
  expect(bad.err).toContain('--address "not-an-ip" is not an IP address');
}, 60_000);

test("node commands, then `airroot serve` + `airroot enroll` end to end; list shows the last stage", async () => {
  const dir = scratchDir();
  const state = join(dir, "state");
  expect((await airroot(["serve", "init", "--state", state, "--address", "127.0.0.1"])).code).toBe(0);
  const add = await airroot(["node", "add", "n1", "--state", state, "--mac", "52-54-00-AA-00-01", "--profile", "compute", "--dhcp"]);
  expect(add.code).toBe(0);
  const dup = await airroot(["node", "add", "n2", "--state", state, "--mac", "52:54:00:aa:00:01", "--profile", "compute"]);
  expect(dup.err).toContain("MAC 52:54:00:aa:00:01 already belongs to node n1");
  expect((await airroot(["node", "add", "n3", "--state", state, "--mac", "zz", "--profile", "x"])).err).toContain('invalid MAC address "zz"');
  expect((await airroot(["node", "arm", "n1", "--state", state, "--for", "30m"])).out).toContain("n1 armed until");

  const port = await freePort("127.0.0.1");
  const srv = Bun.spawn([BUN, MAIN, "serve", "--state", state, "--listen", `127.0.0.1:${port}`, "--no-discovery"], { stdout: "pipe", stderr: "pipe" });
  try {
    await waitForPort("127.0.0.1", port, 20_000);
    const out = join(dir, "cred");
    const hk = join(dir, "ssh_host_ecdsa_key");
    expect(Bun.spawnSync(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", hk]).exitCode).toBe(0);
    const e = await airroot(["enroll", "--server", `https://127.0.0.1:${port}`, "--ca", statePaths(state).siteCaCert, "--out", out,
      "--mac", "52:54:00:aa:00:01", "--host-key", hk + ".pub"]);
    expect(e.err).toBe("");
    expect(e.code).toBe(0);
    expect(e.out).toContain("enrolled as n1");
    expect(statSync(join(out, "node.key")).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(join(out, "config.json"), "utf8")).name).toBe("n1");
    expect(existsSync(hk + "-cert.pub")).toBe(true);
    expect(Bun.spawnSync(["ssh-keygen", "-L", "-f", hk + "-cert.pub"]).stdout.toString()).toContain("ecdsa-sha2-nistp256-cert-v01@openssh.com host certificate");
    // The window closed: a second enrollment is refused with a clear message.
    const again = await airroot(["enroll", "--server", `https://127.0.0.1:${port}`, "--ca", statePaths(state).siteCaCert, "--out", join(dir, "cred2"), "--mac", "52:54:00:aa:00:01"]);
    expect(again.code).toBe(1);
    expect(again.err).toContain("identity does not match an armed node");
    // A wrong CA for the server is refused by the client.
    const other = join(dir, "other.crt");
    Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", join(dir, "o.key"), "-out", other, "-days", "1", "-subj", "/CN=o"]);
    const wrongCa = await airroot(["enroll", "--server", `https://127.0.0.1:${port}`, "--ca", other, "--out", join(dir, "cred3"), "--mac", "52:54:00:aa:00:01"]);
    expect(wrongCa.code).toBe(1);
    expect(wrongCa.err).toContain("unable to verify the first certificate");

    const list = await airroot(["node", "list", "--state", state]);
    expect(list.out).toMatch(/n1\s+compute\s+dhcp\s+-\s+enrolled\s+enrolled \(/);
    expect((await airroot(["node", "show", "n1", "--state", state])).out).toContain("stage:     enrolled");
    expect((await airroot(["node", "revoke", "n1", "--state", state])).out).toContain("revoked 1 certificate(s)");
    expect((await airroot(["node", "list", "--state", state])).out).toContain("revoked");
    expect((await airroot(["node", "remove", "n1", "--state", state])).out).toContain("n1 removed");
    expect((await airroot(["node", "show", "n1", "--state", state])).err).toContain("no node named n1");
  } finally {
    srv.kill("SIGTERM");
    await srv.exited;
  }
  const auditLog = readFileSync(statePaths(state).audit, "utf8");
  expect(auditLog).toContain('"event":"node.revoke"');
  expect(auditLog).not.toMatch(/PRIVATE KEY|BEGIN/);
}, 60_000);

test("`airroot enroll --tpm swtpm:HOST:PORT` enrolls through the TPM challenge", async () => {
  const dir = scratchDir();
  const state = join(dir, "state");
  expect((await airroot(["serve", "init", "--state", state, "--address", "127.0.0.1"])).code).toBe(0);
  expect((await airroot(["node", "add", "t1", "--state", state, "--mac", "52:54:00:aa:00:09", "--profile", "p"])).code).toBe(0);
  expect((await airroot(["node", "arm", "t1", "--state", state, "--once"])).code).toBe(0);
  const port = await freePort("127.0.0.1");
  const srv = Bun.spawn([BUN, MAIN, "serve", "--state", state, "--listen", `127.0.0.1:${port}`, "--no-discovery"], { stdout: "pipe", stderr: "pipe" });
  const tpm = await startSwtpm(join(dir, "tpm"));
  try {
    await waitForPort("127.0.0.1", port, 20_000);
    const e = await airroot(["enroll", "--server", `https://127.0.0.1:${port}`, "--ca", statePaths(state).siteCaCert, "--out", join(dir, "cred"),
      "--mac", "52:54:00:aa:00:09", "--tpm", tpm.spec]);
    expect(e.err).toBe("no sealed credential in the TPM: enrolling\nsealed the new credential in the TPM\n");
    expect(e.out).toContain("enrolled as t1 (credential sealed in the TPM)");
    expect((await airroot(["node", "show", "t1", "--state", state])).out).toContain("tpm ek:    recorded");
  } finally {
    srv.kill("SIGTERM");
    await srv.exited;
    await tpm.stop();
  }
}, 60_000);

test("`--no-tpm warn` is read with its value and keeps --tpm (citty alone would parse it as tpm=false)", () => {
  expect(tpmOptions(["--tpm", "swtpm:127.0.0.1:2321", "--no-tpm", "warn"])).toEqual({ tpm: "swtpm:127.0.0.1:2321", noTpm: "warn" });
  expect(tpmOptions(["--no-tpm=warn", "--tpm=device"])).toEqual({ tpm: "device", noTpm: "warn" });
  expect(tpmOptions(["--tpm", "device"])).toEqual({ tpm: "device", noTpm: "refuse" });
  expect(tpmOptions([])).toEqual({ tpm: undefined, noTpm: "refuse" });
  expect(() => tpmOptions(["--tpm", "device", "--no-tpm", "maybe"])).toThrow('--no-tpm must be refuse or warn (got "maybe")');
  expect(() => tpmOptions(["--tpm", "device", "--no-tpm"])).toThrow("--no-tpm must be refuse or warn");
});

test("`airroot enroll --tpm SPEC --no-tpm warn` without a TPM enrolls loudly; without --no-tpm warn it refuses", async () => {
  const dir = scratchDir();
  const state = join(dir, "state");
  expect((await airroot(["serve", "init", "--state", state, "--address", "127.0.0.1"])).code).toBe(0);
  expect((await airroot(["node", "add", "w1", "--state", state, "--mac", "52:54:00:aa:00:0a", "--profile", "p"])).code).toBe(0);
  const port = await freePort("127.0.0.1");
  const srv = Bun.spawn([BUN, MAIN, "serve", "--state", state, "--listen", `127.0.0.1:${port}`, "--no-discovery"], { stdout: "pipe", stderr: "pipe" });
  const enroll = (out: string, ...extra: string[]) => airroot(["enroll", "--server", `https://127.0.0.1:${port}`, "--ca", statePaths(state).siteCaCert,
    "--out", join(dir, out), "--mac", "52:54:00:aa:00:0a", "--tpm", `device:${join(dir, "no-such-tpm")}`, ...extra]);
  try {
    await waitForPort("127.0.0.1", port, 20_000);
    expect((await airroot(["node", "arm", "w1", "--state", state, "--once"])).code).toBe(0);
    const refused = await enroll("cred1");
    expect(refused.code).toBe(1);
    expect(refused.err).toContain("no TPM");
    const warned = await enroll("cred2", "--no-tpm", "warn");
    expect(warned.err).toContain("continuing WITHOUT a TPM");
    expect(warned.code).toBe(0);
    expect(warned.out).toContain("enrolled as w1");
  } finally {
    srv.kill("SIGTERM");
    await srv.exited;
  }
}, 60_000);
