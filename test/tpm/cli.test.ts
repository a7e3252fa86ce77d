// `airroot tpm ...` end to end against swtpm: info, seal/unseal/lock/evict, identity + makecredential + activate.
import { afterAll, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { startSwtpm } from "../helpers/swtpm";

afterAll(removeScratchDirs);

const MAIN = resolve(import.meta.dir, "../../src/cli/main.ts");
function airroot(args: string[], cwd: string) {
  const r = Bun.spawnSync([process.execPath, MAIN, ...args], { cwd, stdout: "pipe", stderr: "pipe", timeout: 60_000 });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

test("airroot tpm: seal, info, unseal, lock, unseal refused, evict; identity/makecredential/activate round trip", async () => {
  const dir = scratchDir();
  const sw = await startSwtpm(join(dir, "tpm"));
  try {
    const t = ["--tpm", sw.spec];
    const cred = new Uint8Array(3000).map((_, i) => (i * 31) & 0xff);
    writeFileSync(join(dir, "cred.bin"), cred);

    let r = airroot(["tpm", "seal", "cred.bin", ...t, "--bank", "sha256"], dir);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/sealed 3000 bytes: object 0x81000100, PCR 15 \(sha256\)/);
    r = airroot(["tpm", "info", ...t], dir);
    expect(r.out).toMatch(/manufacturer\s+IBM/);
    expect(r.out).toMatch(/credential\s+sealed at 0x81000100 to PCR 15 \(sha256\), 3000 bytes/);
    r = airroot(["tpm", "unseal", "out.bin", ...t], dir);
    expect(r.code).toBe(0);
    expect(Buffer.from(readFileSync(join(dir, "out.bin"))).equals(Buffer.from(cred))).toBe(true);
    r = airroot(["tpm", "pcrread", "--pcrs", "15", "--bank", "sha256", ...t], dir);
    expect(r.out).toMatch(/sha256:\n\s+15: 0x0{64}/);
    r = airroot(["tpm", "lock", ...t], dir);
    expect(r.out).toMatch(/locked: PCR 15 extended in sha1, sha256, sha384, sha512/);
    r = airroot(["tpm", "unseal", "out2.bin", ...t], dir);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/locked for this boot/);
    r = airroot(["tpm", "evict", ...t], dir);
    expect(r.out).toMatch(/removed 1 sealed credential/);
    r = airroot(["tpm", "unseal", "out3.bin", ...t], dir);
    expect(r.err).toMatch(/no sealed airroot credential/);

    r = airroot(["tpm", "identity", "--ek-pub-out", "ek.pub", ...t], dir);
    expect(r.code).toBe(0);
    const name = /ak-name\s+([0-9a-f]+)/.exec(r.out)![1];
    writeFileSync(join(dir, "secret.bin"), "0123456789abcdef");
    r = airroot(["tpm", "makecredential", "--ek-pub", "ek.pub", "--name", name, "--secret", "secret.bin", "--out", "c.blob"], dir);
    expect(r.code).toBe(0);
    r = airroot(["tpm", "activate", "c.blob", "got.bin", ...t], dir);
    expect(r.code).toBe(0);
    expect(readFileSync(join(dir, "got.bin"), "utf8")).toBe("0123456789abcdef");

    r = airroot(["tpm", "info", "--tpm", "device:/nonexistent/tpmrm0"], dir);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/no TPM: could not open \/nonexistent\/tpmrm0/);
  } finally { await sw.stop(); }
}, 120_000);
