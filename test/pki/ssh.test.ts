import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, writeFileSync, chmodSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startSshd, sshWithCa } from "../helpers/sshd";
import { decodeOpenSshPrivate, ed25519Blob, encodeOpenSshPrivate, formatPublicKey, generateEd25519, parsePublicKey } from "../../src/pki/sshkey.ts";
import { issueHostCertificate, randomSshSerial } from "../../src/pki/sshcert.ts";
import { SshFormatError } from "../../src/pki/sshwire.ts";

afterAll(removeScratchDirs);

function sh(cmd: string[]): { code: number; out: string } {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode ?? -1, out: r.stdout.toString() + r.stderr.toString() };
}

function hostKey(dir: string, type: string): string {
  const f = join(dir, `host_${type}`);
  expect(sh(["ssh-keygen", "-q", "-t", type, "-N", "", "-f", f]).code).toBe(0);
  return f;
}

function certFor(ca: ReturnType<typeof generateEd25519>, keyFile: string, principals: string[], serial = randomSshSerial(),
  validBefore = new Date(Date.now() + 3_600_000)): string {
  const line = issueHostCertificate({ ca, hostKey: parsePublicKey(readFileSync(keyFile + ".pub", "utf8")), principals, serial,
    keyId: "node07", validAfter: new Date(Date.now() - 60_000), validBefore });
  writeFileSync(keyFile + "-cert.pub", line);
  return keyFile + "-cert.pub";
}

test("our OpenSSH private key file is read by ssh-keygen, and ssh-keygen's is read by us", () => {
  const dir = scratchDir();
  const k = generateEd25519();
  const f = join(dir, "ca");
  writeFileSync(f, encodeOpenSshPrivate(k, "site ssh ca"));
  chmodSync(f, 0o600);
  expect(sh(["ssh-keygen", "-y", "-f", f]).out.trim()).toBe(formatPublicKey(ed25519Blob(k.pub), "site ssh ca").trim());
  const theirs = hostKey(dir, "ed25519");
  const back = decodeOpenSshPrivate(readFileSync(theirs, "utf8"));
  expect(formatPublicKey(ed25519Blob(back.pub)).trim().split(" ")[1]).toBe(readFileSync(theirs + ".pub", "utf8").trim().split(" ")[1]);
}, 60_000);

test("ssh-keygen -L reads host certificates for ed25519, ecdsa and rsa keys with principals, validity and serial", () => {
  const dir = scratchDir();
  const ca = generateEd25519();
  for (const t of ["ed25519", "ecdsa", "rsa"]) {
    const cert = certFor(ca, hostKey(dir, t), ["node07", "node07.cluster", "10.0.2.15"], 12345n);
    const { code, out } = sh(["ssh-keygen", "-L", "-f", cert]);
    expect(code).toBe(0);
    expect(out).toContain("host certificate");
    expect(out).toContain("Serial: 12345");
    expect(out).toMatch(/Principals:\s+node07\s+node07\.cluster\s+10\.0\.2\.15/);
    expect(out).toContain('Key ID: "node07"');
  }
}, 60_000);

test("a real sshd presents the issued certificate; ssh trusts it via @cert-authority and refuses another CA", async () => {
  const dir = scratchDir();
  const ca = generateEd25519(), other = generateEd25519();
  const key = hostKey(dir, "ed25519");
  const cert = certFor(ca, key, ["node07", "127.0.0.1"]);
  const sshd = await startSshd(join(dir, "sshd"), key, cert);
  try {
    const ok = await sshWithCa(sshd, dir, formatPublicKey(ed25519Blob(ca.pub)));
    expect(ok.err).not.toContain("Host key verification failed");
    expect(ok.code).toBe(0);
    const bad = await sshWithCa(sshd, dir, formatPublicKey(ed25519Blob(other.pub)));
    expect(bad.code).not.toBe(0);
    expect(bad.err).toContain("Host key verification failed");
    // A principal the certificate does not name is refused too.
    const wrongName = await sshWithCa(sshd, dir, formatPublicKey(ed25519Blob(ca.pub)), "node08");
    expect(wrongName.code).not.toBe(0);
  } finally { await sshd.stop(); }
}, 60_000);

test("fuzz: parsePublicKey refuses malformed, truncated and wrong-type lines with SshFormatError only", () => {
  const dir = scratchDir();
  const good = readFileSync(hostKey(dir, "ecdsa") + ".pub", "utf8");
  const blob = Buffer.from(good.split(" ")[1], "base64");
  const cases: unknown[] = [null, 7, "", "ssh-ed25519", "ssh-ed25519 !!!", "ssh-dss AAAA", good.replace("ecdsa-sha2-nistp256", "ssh-ed25519")];
  for (let i = 0; i < 300; i++) {
    const b = Buffer.from(blob);
    if (i % 2) b[Math.floor(Math.random() * b.length)] ^= 0xff;
    const cut = i % 2 ? b : b.subarray(0, Math.floor(Math.random() * b.length));
    cases.push(`ecdsa-sha2-nistp256 ${cut.toString("base64")}`);
    cases.push(`ssh-ed25519 ${Buffer.from(crypto.getRandomValues(new Uint8Array(i % 80))).toString("base64")}`);
  }
  let accepted = 0;
  for (const c of cases) {
    try { parsePublicKey(c); accepted++; } catch (e) { expect(e).toBeInstanceOf(SshFormatError); }
  }
  // Flips inside the EC point's coordinates keep the structure valid (the point is not checked for being on the curve).
  expect(accepted).toBeLessThan(300);
  expect(parsePublicKey(good).type).toBe("ecdsa-sha2-nistp256");
}, 60_000);
