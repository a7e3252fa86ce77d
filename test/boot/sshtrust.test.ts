// Host certificates, sshd presenting them (checked by the real sshd -t and ssh-keygen -L), @cert-authority known_hosts
// and machine-id, with real OpenSSH tools; bad certificate replies are refused, never written.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { addKnownHostsCa, certAuthorityLine, installSshTrust, machineIdFor, writeHostCertificates } from "../../src/boot/sshtrust";
import { generateHostKeys, sshdConfig, testSshdConfig } from "../../src/boot/sshd";

afterAll(() => removeScratchDirs());

function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

async function keysAndCerts(dir: string) {
  const etc = join(dir, "etc-ssh");
  const keys = await generateHostKeys(etc);
  sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(dir, "ca")]);
  const certificates = keys.map((k, i) => {
    sh(["ssh-keygen", "-q", "-s", join(dir, "ca"), "-h", "-I", `n1-${i}`, "-n", "n1", `${k}.pub`]);
    const cert = readFileSync(`${k}-cert.pub`, "utf8");
    require("node:fs").rmSync(`${k}-cert.pub`);
    return { type: "x", serial: String(i), certificate: cert };
  });
  return { keys, reply: { principals: ["n1"], validAfter: "", validBefore: "", certificates }, caPub: readFileSync(join(dir, "ca.pub"), "utf8") };
}

test("host certificates land beside their keys and sshd accepts a config presenting them", async () => {
  const dir = scratchDir("airroot-sshtrust-");
  const { keys, reply } = await keysAndCerts(dir);
  const written = writeHostCertificates(keys, reply);
  expect(written).toEqual(keys.map((k) => `${k}-cert.pub`));
  for (const k of keys) expect(sh(["ssh-keygen", "-L", "-f", `${k}-cert.pub`])).toContain("host certificate");
  const conf = join(dir, "sshd_config");
  writeFileSync(conf, sshdConfig({ hostKeys: keys, authorizedKeys: join(dir, "ak"), pidFile: join(dir, "pid") }));
  expect(readFileSync(conf, "utf8").match(/^HostCertificate /gm)?.length).toBe(3);
  testSshdConfig(conf); // the real sshd -t loads keys and certificates and checks they match
}, 60_000);

test("a certificate of the wrong algorithm, a wrong count or junk is refused and nothing is written", async () => {
  const dir = scratchDir("airroot-sshtrust-");
  const { keys, reply } = await keysAndCerts(dir);
  const swapped = { ...reply, certificates: [reply.certificates[1], reply.certificates[0], reply.certificates[2]] };
  expect(() => writeHostCertificates(keys, swapped)).toThrow(/not an .* certificate line/);
  expect(() => writeHostCertificates(keys, { ...reply, certificates: reply.certificates.slice(1) })).toThrow(/2 host certificates for 3/);
  // Random and truncated replies (bounded): always a clear error, never a crash or a written file.
  for (let i = 0; i < 200; i++) {
    const base = reply.certificates[i % 3].certificate;
    const junk = i % 2 ? base.slice(0, Math.floor(Math.random() * base.length)) + "\n\0x" : Buffer.from(crypto.getRandomValues(new Uint8Array(i))).toString("latin1");
    const bad = { ...reply, certificates: reply.certificates.map((c, k) => (k === i % 3 ? { ...c, certificate: junk } : c)) };
    try { writeHostCertificates(keys, bad as never); } catch (e) { expect(e).toBeInstanceOf(Error); }
    for (const k of keys) if (i % 2 === 0) expect(existsSync(`${k}-cert.pub`)).toBe(false);
  }
  expect(() => writeHostCertificates(keys, { certificates: "no" } as never)).toThrow(/host certificates for 3/);
});

test("the booted system gets keys, certificates, a drop-in sshd accepts, and @cert-authority known_hosts", async () => {
  const dir = scratchDir("airroot-sshtrust-");
  const { keys, reply, caPub } = await keysAndCerts(dir);
  writeHostCertificates(keys, reply);
  const root = join(dir, "root");
  mkdirSync(join(root, "etc/ssh"), { recursive: true });
  writeFileSync(join(root, "etc/ssh/sshd_config"), "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin prohibit-password\n");
  writeFileSync(join(root, "etc/ssh/ssh_known_hosts"), "old.example ssh-ed25519 AAAA");
  const written = installSshTrust({ root, hostKeys: keys, sshCaPublicKey: caPub });
  expect(written).toContain("etc/ssh/sshd_config.d/50-airroot-hostcert.conf");
  const dropIn = readFileSync(join(root, "etc/ssh/sshd_config.d/50-airroot-hostcert.conf"), "utf8");
  expect(dropIn).toContain("HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub");
  expect(dropIn.match(/^HostKey /gm)?.length).toBe(3);
  const kh = readFileSync(join(root, "etc/ssh/ssh_known_hosts"), "utf8");
  expect(kh).toBe(`old.example ssh-ed25519 AAAA\n@cert-authority * ${caPub.trim()}\n`);
  addKnownHostsCa(join(root, "etc/ssh/ssh_known_hosts"), caPub); // idempotent
  expect(readFileSync(join(root, "etc/ssh/ssh_known_hosts"), "utf8")).toBe(kh);
  // sshd -t with the drop-in's paths rewritten to the test root proves the keys and certificates copied match.
  const conf = join(dir, "check_config");
  writeFileSync(conf, dropIn.replaceAll("/etc/ssh/", `${root}/etc/ssh/`));
  testSshdConfig(conf);
  // Without an Include the lines are appended once.
  const root2 = join(dir, "root2");
  mkdirSync(join(root2, "etc/ssh"), { recursive: true });
  writeFileSync(join(root2, "etc/ssh/sshd_config"), "Port 22");
  installSshTrust({ root: root2, hostKeys: keys });
  installSshTrust({ root: root2, hostKeys: keys });
  expect(readFileSync(join(root2, "etc/ssh/sshd_config"), "utf8").match(/^HostCertificate /gm)?.length).toBe(3);
  expect(existsSync(join(root2, "etc/ssh/ssh_known_hosts"))).toBe(false);
}, 60_000);

test("CA key lines are checked; machine-id is stable per UUID and random without one", () => {
  expect(() => certAuthorityLine("ssh-ed25519 AAAA\n@cert-authority * evil")).toThrow(/not an OpenSSH public key line/);
  expect(() => certAuthorityLine("")).toThrow();
  const u = "0b7c6f5e-1234-4a5b-8c9d-001122334455";
  expect(machineIdFor(u)).toMatch(/^[0-9a-f]{32}$/);
  expect(machineIdFor(u)).toBe(machineIdFor(u.toUpperCase()));
  expect(machineIdFor(u)).not.toBe(machineIdFor("0b7c6f5e-1234-4a5b-8c9d-001122334456"));
  expect(machineIdFor(undefined)).not.toBe(machineIdFor(undefined));
});
