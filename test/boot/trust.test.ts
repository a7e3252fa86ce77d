// The boot's trust step against a real `airroot serve` (no TPM here: swtpm as a guest TPM is in test/e2e): site
// directory from `serve site-config`, enrollment with host certificates, stage reports in `node list`, the signed
// manifest with the expected digest (an older signed image is refused), copy verification, and the pure helpers.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import type { Subprocess } from "bun";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { freePort, waitForPort } from "../helpers/ports";
import { configuredServers, findTpm, reportFailure, reportStage, runTrust, serversAway, type Trusted } from "../../src/boot/trust";
import { runSequence, StepConsole, WaitError } from "../../src/boot/sequence";
import { parseReporterInput, readReporterInput, reporterInputFor, runReporter, sendBooted, startReporter, bootedUnit } from "../../src/boot/reporter";
import { ApiCallError } from "../../src/client/http";
import { statSync } from "node:fs";
import { chooseRootSource, fetchVerifiedManifest, verifyImageFile } from "../../src/boot/rootsource";
import { applyConfigNetwork } from "../../src/boot/net";
import { copyImage } from "../../src/boot/image";
import { generateHostKeys } from "../../src/boot/sshd";
import { FinalError } from "../../src/boot/sequence";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const BUN = process.execPath;
const MAC = "52:54:00:aa:05:01";
const dir = scratchDir("airroot-boot-trust-");
const state = join(dir, "state"), site = join(dir, "site");
let srv: Subprocess | undefined;
let base = "";
let port = 0;
let enrolled: Trusted | undefined;
const startServer = async () => {
  srv = Bun.spawn([BUN, MAIN, "serve", "--state", state, "--listen", `127.0.0.1:${port}`, "--no-discovery"], { stdout: "ignore", stderr: "ignore" });
  await waitForPort("127.0.0.1", port, 20_000);
};
const digests: string[] = [];

function airroot(args: string[]): string {
  const r = Bun.spawnSync([BUN, MAIN, ...args], { stdout: "pipe", stderr: "pipe", timeout: 120_000 });
  if (r.exitCode !== 0) throw new Error(`airroot ${args.join(" ")}: ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}

function pack(name: string): string {
  const tree = join(dir, name);
  mkdirSync(join(tree, "etc"), { recursive: true });
  writeFileSync(join(tree, "etc/which"), `${name}\n`);
  // The first word of pack's stdout is the digest.
  return airroot(["image", "pack", tree, "--state", state, "--profile", "p"]).trim().split(/\s+/)[0];
}

beforeAll(async () => {
  port = await freePort("127.0.0.1");
  airroot(["serve", "init", "--state", state, "--address", "127.0.0.1", "--port", String(port)]);
  digests.push(pack("old"), pack("new")); // profile p now points at "new"
  airroot(["node", "add", "n1", "--state", state, "--mac", MAC, "--profile", "p", "--ip", "10.9.8.7/24", "--gateway", "10.9.8.1"]);
  expect(airroot(["serve", "site-config", "--state", state, "--out", site])).toContain(`make initramfs SITE=${site}`);
  base = `https://127.0.0.1:${port}`;
  await startServer();
}, 180_000);

afterAll(async () => {
  srv?.kill("SIGTERM");
  await srv?.exited;
  removeScratchDirs();
});

test("site-config writes CA, image key and the server list the trust step reads", () => {
  expect(readFileSync(join(site, "ca.pem"), "utf8")).toContain("BEGIN CERTIFICATE");
  expect(readFileSync(join(site, "image-key.pem"), "utf8")).toContain("BEGIN PUBLIC KEY");
  expect(configuredServers([], join(site, "servers"))).toEqual([base]);
  expect(configuredServers(["https://a.example"], join(site, "servers"))).toEqual(["https://a.example"]);
});

test("no TPM: refused by default with what to do; with notpm=warn the node enrolls, gets host certificates and reports stages", async () => {
  const keys = await generateHostKeys(join(dir, "hostkeys"));
  const logs: string[] = [];
  const o = { siteDir: site, servers: [], macs: [MAC], hostKeys: keys, tpmDevices: [join(dir, "no-tpm")], log: (l: string) => logs.push(l) };
  const refused = await runTrust({ ...o, noTpm: "refuse" }).catch((e) => e);
  expect(refused).toBeInstanceOf(FinalError);
  expect(refused.message).toContain("airroot.notpm=warn");

  // Not armed: the server refuses the enrollment (a 4xx is final, not retried).
  expect(await runTrust({ ...o, noTpm: "warn" }).catch((e) => e.message)).toMatch(/HTTP 4\d\d/);
  airroot(["node", "arm", "n1", "--state", state, "--once"]);
  const { trusted, line } = await runTrust({ ...o, noTpm: "warn" });
  enrolled = trusted;
  expect(line).toBe(`Enrolled as n1 via ${base}`);
  expect(logs.join("\n")).toContain("no TPM");
  expect(trusted.config.name).toBe("n1");
  expect(trusted.config.image?.digest).toBe(digests[1]);
  expect(trusted.hostCertificates?.certificates.length).toBe(3);
  expect(airroot(["node", "list", "--state", state])).toContain("trusted");

  await reportStage(trusted, readFileSync(join(site, "ca.pem"), "utf8"), "root-mounted", "overlay on /sysroot", (l) => logs.push(l), digests[1]);
  const nodes = JSON.parse(airroot(["node", "list", "--state", state, "--json"]));
  expect(JSON.stringify(nodes)).toContain("root-mounted");

  // The root source comes from the config, with the expected digest; the manifest is checked against it.
  const rs = chooseRootSource({ options: { imageUrls: ["https://cmdline.example/x.sfs"], manifestUrls: [] }, config: trusted.config,
    siteImageKeyPem: readFileSync(join(site, "image-key.pem"), "utf8") })!;
  expect(rs.from).toBe("server");
  expect(rs.urls[0]).toBe(`${base}/images/${digests[1]}.sfs`);
  const ca = readFileSync(join(site, "ca.pem"), "utf8");
  const m = await fetchVerifiedManifest(rs.manifestUrls, rs.imageKeyPem!, ca, rs.expectDigest);
  expect(m.manifest.digest).toBe(digests[1]);
  // An old, validly signed manifest is refused when the server said to boot the new image.
  const oldUrl = `${base}/images/${digests[0]}.manifest`;
  expect(await fetchVerifiedManifest([oldUrl], rs.imageKeyPem!, ca, digests[1]).catch((e) => e.message)).toContain("stale or substituted");

  // Copy verification: the right file passes, a file with one flipped byte does not.
  const img = join(dir, "copy.sfs");
  writeFileSync(img, new Uint8Array(await (await fetch(rs.urls[0], { tls: { ca } } as RequestInit)).arrayBuffer()));
  await verifyImageFile(img, m.manifest);
  const bytes = readFileSync(img);
  bytes[100] ^= 1;
  writeFileSync(img, bytes);
  expect(await verifyImageFile(img, m.manifest).catch((e) => e.message)).toContain("altered or wrong file");

  // imagemethod=copy: a copy that does not match the signed manifest is that server's failure, never used.
  const src = { urls: rs.urls, caFile: join(site, "ca.pem") };
  const good = await copyImage(src, { dir: join(dir, "copy-ok"), verify: (p) => verifyImageFile(p, m.manifest) });
  expect(good.bytes).toBe(m.manifest.size);
  const old = (await fetchVerifiedManifest([oldUrl], rs.imageKeyPem!, ca)).manifest;
  expect(await copyImage(src, { dir: join(dir, "copy-bad"), verify: (p) => verifyImageFile(p, old) }).catch((e) => e.message))
    .toMatch(/could not download the image from any server: .*signed manifest says/);
}, 120_000);

test("static network from the config is applied to the boot interface's entry; cmdline-like DHCP config changes nothing", () => {
  const net = { configured: [{ iface: "eth0", method: "dhcp" as const, address: "10.0.2.15", prefix: 24 }], summary: "" };
  expect(applyConfigNetwork(net, { mode: "dhcp" }, { dryRun: true })).toBeUndefined();
  expect(applyConfigNetwork(net, { mode: "static", ip: "10.9.8.7/24", gateway: "10.9.8.1", dns: ["10.9.8.2"] }, { dryRun: true }))
    .toBe("Setting up eth0 as static at 10.9.8.7/24 (from the server's config)");
  expect(net.configured[0]).toMatchObject({ method: "static", address: "10.9.8.7", prefix: 24, gateway: "10.9.8.1", dns: ["10.9.8.2"] });
  expect(applyConfigNetwork(net, { mode: "static", ip: "10.9.8.7/24", gateway: "10.9.8.1", dns: [] }, { dryRun: true })).toBeUndefined();
  for (const bad of ["10.9.8.7", "300.1.1.1/24", "10.1.1.1/33", "x/1", ""])
    expect(() => applyConfigNetwork(net, { mode: "static", ip: bad, dns: [] }, { dryRun: true })).toThrow(/not IPV4\/PREFIX/);
});

test("root source rules: config needs a manifest and key; cmdline without manifest is unverified; nothing → undefined", () => {
  const img = { digest: "a".repeat(64), size: 1, urls: ["https://s/images/a.sfs"], manifestUrls: ["https://s/images/a.manifest"] };
  expect(() => chooseRootSource({ options: { imageUrls: [], manifestUrls: [] }, config: { image: { ...img, manifestUrls: [] }, imagePublicKey: "k" } })).toThrow(/unverifiable/);
  expect(chooseRootSource({ options: { imageUrls: [], manifestUrls: [] }, config: { image: img, imagePublicKey: "cfg" } })?.imageKeyPem).toBe("cfg");
  expect(chooseRootSource({ options: { imageUrls: [], manifestUrls: [] }, config: { image: img, imagePublicKey: "cfg" }, siteImageKeyPem: "site" })?.imageKeyPem).toBe("site");
  expect(chooseRootSource({ options: { imageUrls: ["https://x/r.sfs"], manifestUrls: [] }, config: { image: null, imagePublicKey: "k" } }))
    .toEqual({ urls: ["https://x/r.sfs"], manifestUrls: [], imageKeyPem: undefined, from: "cmdline" });
  expect(chooseRootSource({ options: { imageUrls: [], manifestUrls: [] } })).toBeUndefined();
});

test("server lists from the site file: comments and blanks ignored, junk is a clear error (fuzzed), TPM detection", () => {
  const f = join(dir, "servers-fuzz");
  writeFileSync(f, "# c\n\nhttps://a:8443/ # first\n  https://[fd00::1]\n");
  expect(configuredServers([], f)).toEqual(["https://a:8443", "https://[fd00::1]"]);
  expect(configuredServers([], join(dir, "missing"))).toEqual([]);
  writeFileSync(f, "http://a\n");
  expect(() => configuredServers([], f)).toThrow(/must be an https/);
  for (let i = 0; i < 300; i++) {
    const junk = Buffer.from(crypto.getRandomValues(new Uint8Array(i % 97))).toString(i % 2 ? "latin1" : "base64");
    writeFileSync(f, junk);
    try {
      for (const u of configuredServers([], f)) expect(new URL(u).protocol).toBe("https:");
    } catch (e) { expect(e).toBeInstanceOf(FinalError); }
  }
  expect(findTpm([join(dir, "none")])).toBeUndefined();
  expect(findTpm([join(dir, "none"), f])).toBe(`device:${f}`);
  expect(existsSync(f)).toBe(true);
});

test("stage reports are bounded: a silent server costs at most the budget and gives a warning", async () => {
  const { createServer } = await import("node:net");
  const silent = createServer(() => {}); // accepts and never answers: a black-holed server as seen from TLS
  await new Promise<void>((ok) => silent.listen(0, "127.0.0.1", ok));
  const port = (silent.address() as { port: number }).port;
  const cred = { keyPem: "", certPem: "", node: "n1", serial: "1", notAfter: "" };
  const t = { servers: [`https://127.0.0.1:${port}`], credential: cred } as never;
  const logs: string[] = [];
  const t0 = Date.now();
  await reportStage(t, readFileSync(join(site, "ca.pem"), "utf8"), "root-mounted", "x", (l) => logs.push(l), undefined, 800);
  expect(Date.now() - t0).toBeLessThan(3000);
  expect(logs[0]).toMatch(/could not report stage root-mounted within 0.8 s/);
  silent.close();
});

const nodeList = () => airroot(["node", "list", "--state", state]);
const ca = () => readFileSync(join(site, "ca.pem"), "utf8");

test("a deployment server restarting mid-boot: the trust step waits for it (one line), then goes on", async () => {
  expect(serversAway(new ApiCallError("GET x", 0, "unreachable", "refused"))).toBe(true);
  expect(serversAway(new ApiCallError("GET x", 503, "busy", "later"))).toBe(true);
  expect(serversAway(new ApiCallError("POST x", 403, "not-armed", "arm it"))).toBe(false);
  expect(serversAway(new Error("no server answered discovery (is this node added on a server, and is it on the same link?)"))).toBe(true);
  airroot(["node", "arm", "n1", "--state", state, "--once"]);
  srv!.kill("SIGTERM");
  await srv!.exited;
  const keys = await generateHostKeys(join(dir, "hostkeys-wait"));
  let text = "";
  const sc = new StepConsole({ write: (t) => { text += t; } }, () => performance.now(), 50);
  const back = Bun.sleep(3500).then(startServer); // the server comes back while the node waits
  const t0 = Date.now();
  const r = await runSequence([{ name: "trust", title: "Contacting the deployment servers", retries: 0,
    wait: { firstDelayMs: 500, maxDelayMs: 2000, option: "airroot.roottimeout" },
    run: async () => {
      const t = await runTrust({ siteDir: site, servers: [], macs: [MAC], hostKeys: keys, noTpm: "warn", tpmDevices: [join(dir, "no-tpm")], log: (l) => sc.log(l) });
      enrolled = t.trusted; // this enrollment revoked the earlier credential: the tests below use the new one
      return t.line;
    } }], {}, sc);
  await back;
  expect(r.ok).toBe(true);
  expect(Date.now() - t0).toBeGreaterThan(3000);
  expect(text.match(/waiting for a deployment server: POST https:\/\/127\.0\.0\.1:\d+\/api\/v1\/enroll: .*\(retrying every 2 s at most\)/g)?.length).toBe(1);
  expect(text).toMatch(/deployment server reachable again after \d+ s/);
  expect(text).toContain(`Enrolled as n1 via ${base}`);
  // Bounded: with the server gone and a timeout, the step gives up and names the option.
  srv!.kill("SIGTERM");
  await srv!.exited;
  const gone = await runSequence([{ name: "trust", title: "Contacting", wait: { firstDelayMs: 100, maxDelayMs: 200, timeoutMs: () => 800, option: "airroot.roottimeout" },
    run: async () => (await runTrust({ siteDir: site, servers: [], macs: [MAC], hostKeys: keys, noTpm: "warn",
      tpmDevices: [join(dir, "no-tpm")], log: () => {} })).line }], {}, new StepConsole({ write: () => {} }, () => 0, 50));
  expect(gone.ok).toBe(false);
  if (!gone.ok) expect(gone.error.message).toMatch(/^gave up waiting for a deployment server after \d+ s \(airroot\.roottimeout\): POST /);
  await startServer();
  // A refusal is not waited for: runTrust throws it as is (the step's few retries apply).
  const refused = await runTrust({ siteDir: site, servers: [], macs: [MAC], hostKeys: keys, noTpm: "warn", tpmDevices: [join(dir, "no-tpm")], log: () => {} }).catch((e) => e);
  expect(refused).not.toBeInstanceOf(WaitError);
  expect(refused.message).toMatch(/HTTP 4\d\d/);
}, 90_000);

test("a failed boot is reported as failed: STEP with the reason; node list shows the step, node show the reason", async () => {
  const logs: string[] = [];
  await reportFailure(enrolled!, ca(), "root", new Error("gave up waiting for an image server after 120 s (airroot.roottimeout): refused"), (l) => logs.push(l));
  expect(logs).toEqual([]);
  expect(nodeList()).toMatch(/n1 .*failed: root \(.* ago\)/);
  expect(airroot(["node", "show", "n1", "--state", state])).toMatch(/stage:\s+failed: root .*: root: gave up waiting for an image server after 120 s/);
  // The report itself failing is said on the console, and does not take longer than its budget.
  const t = { servers: ["https://127.0.0.1:1"], credential: enrolled!.credential };
  await reportFailure(t, ca(), "root", new Error("x"), (l) => logs.push(l), undefined, 2000);
  expect(logs[0]).toMatch(/^warning: could not report stage failed: /);
});

test("the boot reporter: switched-root when PID 1 changes, running when the booted system says so, boot-stalled otherwise", async () => {
  const socket = join(dir, "report/booted.sock");
  const input = { ...(await reporterInputFor(enrolled!, ca(), 20)), switchWaitSec: 10, socket };
  expect(JSON.stringify(input)).not.toContain("PRIVATE KEY"); // a one-boot report token, never the credential
  // A stand-in for PID 1: a shell that execs another program (the new init) after a moment.
  const init = Bun.spawn(["sh", "-c", "sleep 1; exec sleep 60"]);
  const warnings: string[] = [];
  let ready = false;
  const done = runReporter({ ...input, pid: init.pid }, (l) => { ready ||= l.includes("AIRROOT-REPORTER-READY"); }, (l) => warnings.push(l));
  await Bun.sleep(200);
  expect(ready).toBe(true);
  expect(statSync(join(dir, "report")).mode & 0o777).toBe(0o700); // only root may say the system is up
  for (let i = 0; i < 50 && !/switched-root/.test(nodeList()); i++) await Bun.sleep(200);
  expect(airroot(["node", "show", "n1", "--state", state])).toMatch(/stage:\s+switched-root .*: PID 1 is \/.*sleep/);
  expect(await sendBooted(socket)).toBe("reported");
  expect(await done).toBe("running");
  expect(nodeList()).toMatch(/n1 .*running \(/);
  expect(airroot(["node", "show", "n1", "--state", state])).toMatch(/multi-user.target reached \d+ s after switch_root/);
  expect(warnings).toEqual([]);
  init.kill("SIGKILL");
  // "running" used the token up: a second boot's reporter gets a new one.
  const init1 = Bun.spawn(["sh", "-c", "sleep 0.5; exec sleep 60"]);
  expect(await runReporter({ ...input, waitSec: 1, pid: init1.pid }, () => {}, (l) => warnings.push(l))).toBe("boot-stalled");
  expect(warnings).toHaveLength(2);
  expect(warnings[0]).toMatch(/could not report stage switched-root: .*HTTP 401 bad-report-token/);
  warnings.length = 0;
  init1.kill("SIGKILL");
  // No word within the bounded wait: boot-stalled.
  const input2 = { ...(await reporterInputFor(enrolled!, ca(), 20)), switchWaitSec: 10, socket };
  const init2 = Bun.spawn(["sh", "-c", "sleep 0.5; exec sleep 60"]);
  expect(await runReporter({ ...input2, waitSec: 1, pid: init2.pid }, () => {}, (l) => warnings.push(l))).toBe("boot-stalled");
  expect(warnings).toEqual([]);
  expect(nodeList()).toMatch(/n1 .*boot-stalled/);
  init2.kill("SIGKILL");
  // The unit the booted system runs: after multi-user.target, failure ignored, never a wait on the boot itself.
  const unit = bootedUnit("/usr/local/sbin/airroot");
  expect(unit).toContain("After=multi-user.target");
  expect(unit).toContain("WantedBy=multi-user.target");
  expect(unit).toContain("ExecStart=-/usr/local/sbin/airroot init booted");
  expect(unit).not.toContain("is-system-running");
  expect(await sendBooted(socket, 2000).catch((e) => e.message)).toMatch(/not listening/);
}, 60_000);

test("the reporter as PID 1 starts it (airroot init report, named @airroot-report): its report token only on its stdin", async () => {
  const socket = join(dir, "report2/booted.sock");
  const init = Bun.spawn(["sh", "-c", "sleep 2; exec sleep 60"]);
  const input = await reporterInputFor(enrolled!, ca(), 20);
  const pid = await startReporter({ ...input, switchWaitSec: 10, socket, pid: init.pid }, 15_000, [BUN, MAIN]);
  expect(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0]).toBe("@airroot-report");
  expect(readFileSync(`/proc/${pid}/cmdline`, "utf8")).not.toContain("PRIVATE KEY");
  expect(readFileSync(`/proc/${pid}/environ`, "utf8")).not.toContain("PRIVATE KEY");
  for (let i = 0; i < 50 && !/switched-root/.test(nodeList()); i++) await Bun.sleep(200);
  expect(await sendBooted(socket)).toBe("reported");
  for (let i = 0; i < 50 && !/running/.test(nodeList()); i++) await Bun.sleep(200);
  expect(nodeList()).toMatch(/n1 .*running/);
  for (let i = 0; i < 50 && existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8")); i++) await Bun.sleep(100);
  expect(!existsSync(`/proc/${pid}`) || /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"))).toBe(true); // done: it exits
  init.kill("SIGKILL");
  expect(typeof readReporterInput).toBe("function");
  // Its input is exactly what it needs: a credential handed to it is refused, not carried along.
  expect(() => parseReporterInput(JSON.stringify({ ...input, credential: enrolled!.credential }))).toThrow(/credential: unknown field|credential/);
  expect(() => parseReporterInput(JSON.stringify({ ...input, token: "x" }))).toThrow(/token/);
}, 60_000);
