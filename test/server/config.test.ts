// `airroot serve config show|set|add|remove`: every key, validation before anything is written, and a running
// `airroot serve` that picks changes up (timer and SIGHUP) while keeping restart-only settings and bad files out.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { freePort, waitForPort } from "../helpers/ports";
import { initState, readConfig, statePaths } from "../../src/server/state.ts";
import { applyEdit, editConfig, parseRootKey } from "../../src/server/configedit.ts";
import { serve } from "../../src/server/serve.ts";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, armNode } from "../../src/server/store/nodes.ts";
import { addImage, setProfile } from "../../src/server/store/images.ts";
import { enrollNode, NodeApi } from "../../src/client/api.ts";
import type { Logger } from "../../src/util/log.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const BUN = process.execPath;
afterAll(removeScratchDirs);

async function airroot(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn([BUN, MAIN, ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

function sshKey(dir: string, name: string, type = "ed25519"): string {
  const f = join(dir, name);
  expect(Bun.spawnSync(["ssh-keygen", "-q", "-t", type, "-N", "", "-C", `${name}@test`, "-f", f]).exitCode).toBe(0);
  return f;
}

let dir: string, state: string;
beforeAll(async () => {
  dir = scratchDir();
  state = join(dir, "state");
  await initState(state, { addresses: ["10.0.2.100"] });
}, 60_000);

describe("serve config (CLI)", () => {
  test("add, remove, set on list keys; values are normalised; the result is printed with when it takes effect", async () => {
    const cfg = (a: string[]) => airroot(["serve", "config", ...a, "--state", state]);
    let r = await cfg(["add", "mirrors", "https://10.0.2.101/", "https://Mirror.Example:8443"]);
    expect(r.code).toBe(0);
    expect(r.out).toBe("mirrors: https://10.0.2.101 https://mirror.example:8443\na running airroot serve picks this up within 2 s (at once on SIGHUP)\n");
    r = await cfg(["add", "mirrors", "https://10.0.2.101"]);
    expect(r.out).toContain("(unchanged)");
    expect(r.err).toContain("note: https://10.0.2.101 is already in mirrors");
    r = await cfg(["remove", "mirrors", "https://mirror.example:8443"]);
    expect(readConfig(state).mirrors).toEqual(["https://10.0.2.101"]);
    expect((await cfg(["add", "peers", "https://10.0.2.102"])).code).toBe(0);
    expect((await cfg(["add", "addresses", "FD00:0::5", "10.0.2.105"])).code).toBe(0);
    expect(readConfig(state).addresses).toEqual(["10.0.2.100", "fd00::5", "10.0.2.105"]);
    r = await cfg(["add", "trusted-subnets", "10.1.0.0/16"]);
    expect(r.code).toBe(0);
    r = await cfg(["set", "advertise", "https://boot.example:8443"]);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/warning: the server certificate does not cover .*\bboot\.example; nodes using those will fail TLS/);
    r = await cfg(["set", "advertise"]); // empty: back to addresses x port
    expect(readConfig(state).advertise).toEqual([]);
    const c = readConfig(state);
    expect([c.peers, c.trustedSubnets]).toEqual([["https://10.0.2.102"], ["10.1.0.0/16"]]);
    r = await cfg(["add", "advertise", "https://127.0.0.1:8443"]);
    expect(r.err).toContain("warning: advertised URL https://127.0.0.1:8443 is a loopback address");
    await cfg(["set", "advertise"]);
  }, 60_000);

  test("root-keys: from .pub files (each line) and quoted key lines; removed by key, file or comment; junk refused naming the line", async () => {
    const cfg = (a: string[]) => airroot(["serve", "config", ...a, "--state", state]);
    const a = sshKey(dir, "alice"), b = sshKey(dir, "bob", "ecdsa");
    const both = join(dir, "both.pub");
    writeFileSync(both, `# admins\n${readFileSync(a + ".pub", "utf8")}\n${readFileSync(b + ".pub", "utf8")}`);
    let r = await cfg(["add", "root-keys", both]);
    expect(r.code).toBe(0);
    expect(readConfig(state).rootAuthorizedKeys).toEqual([readFileSync(a + ".pub", "utf8").trim(), readFileSync(b + ".pub", "utf8").trim()]);
    // The same key with another comment is the same key.
    const [t, k] = readFileSync(a + ".pub", "utf8").split(" ");
    r = await cfg(["add", "root-keys", `${t} ${k} other-comment`]);
    expect(r.err).toContain("is already in root-keys");
    expect(readConfig(state).rootAuthorizedKeys).toHaveLength(2);
    r = await cfg(["remove", "root-keys", "bob@test"]);
    expect(readConfig(state).rootAuthorizedKeys).toEqual([readFileSync(a + ".pub", "utf8").trim()]);
    r = await cfg(["remove", "root-keys", a + ".pub"]);
    expect(readConfig(state).rootAuthorizedKeys).toEqual([]);
    r = await cfg(["set", "root-keys", readFileSync(b + ".pub", "utf8").trim(), a + ".pub"]);
    expect(readConfig(state).rootAuthorizedKeys).toHaveLength(2);

    // Bad input: a clear message, exit 1, config.json untouched (same bytes, same inode).
    const p = statePaths(state).config;
    const before = readFileSync(p, "utf8"), ino = statSync(p).ino;
    const junkFile = join(dir, "junk.pub");
    writeFileSync(junkFile, `${readFileSync(a + ".pub", "utf8")}ssh-ed25519 AAAAnotakey x\n`);
    for (const [value, msg] of [
      [junkFile, `${junkFile}:2: not a valid ssh-ed25519 key`],
      [a, `${a}:1: this is a PEM block (a private key?)`],
      ["junk", '"junk" is neither an OpenSSH public key line'],
      ["ssh-dss AAAAB3NzaC1kc3MAAACBAP x", "not a valid ssh-dss key"],
      ['from="10.0.0.1" ssh-ed25519 AAAA x', "authorized_keys options"],
      ["hello world", "not an OpenSSH public key line"],
    ]) {
      r = await cfg(["add", "root-keys", value]);
      expect([value, r.code]).toEqual([value, 1]);
      expect(r.err).toContain(msg);
    }
    expect(readFileSync(p, "utf8")).toBe(before);
    expect(statSync(p).ino).toBe(ino);
  }, 60_000);

  test("single settings: set validates; restart-only ones say so; add/remove on them, unknown keys and serverId refused", async () => {
    const cfg = (a: string[]) => airroot(["serve", "config", ...a, "--state", state]);
    let r = await cfg(["set", "port", "8443"]);
    expect(r.out).toBe("port: 8443\nport takes effect when airroot serve restarts (a running server keeps the old value)\n");
    r = await cfg(["set", "discovery-port", "0"]);
    expect(r.out).toContain("discovery-port takes effect when airroot serve restarts");
    for (const [k, v] of [["node-cert-days", "30"], ["ssh-cert-days", "7"], ["trust-link-local", "false"], ["trust-attached", "no"], ["domain", "Cluster.Example."]]) {
      r = await cfg(["set", k, v]);
      expect([k, r.code, r.out]).toEqual([k, 0, expect.stringContaining("picks this up")]);
    }
    const c = readConfig(state);
    expect([c.port, c.discoveryPort, c.nodeCertDays, c.sshCertDays, c.trustLinkLocal, c.trustAttached, c.domain]).toEqual([8443, 0, 30, 7, false, false, "cluster.example"]);
    await cfg(["set", "domain"]);
    expect(readConfig(state).domain).toBeUndefined();
    const before = readFileSync(statePaths(state).config, "utf8");
    for (const [args, msg] of [
      [["set", "port", "70000"], 'port: "70000" is not a whole number between 1 and 65535'],
      [["set", "port", "80", "81"], "give exactly one value"],
      [["set", "node-cert-days", "0"], "between 1 and 3650"],
      [["set", "trust-attached", "maybe"], '"maybe" is not true or false'],
      [["set", "domain", "a b"], '"a b" is not a DNS domain'],
      [["add", "port", "80"], "port is a single value"],
      [["add", "mirrors", "http://10.0.2.101"], 'mirrors: "http://10.0.2.101" must start with https://'],
      [["add", "addresses", "10.0.2"], 'addresses: "10.0.2" is not an IP address'],
      [["add", "trusted-subnets", "10.1.0.0/33"], 'invalid subnet "10.1.0.0/33"'],
      [["add", "mirrors"], "give at least one value"],
      [["set", "prot", "1"], 'unknown key "prot"; valid keys: advertise, addresses, mirrors, peers, mirror-order, mirror-weights, root-keys, trusted-subnets, metrics-subnets, domain, port, discovery-port, node-cert-days, ssh-cert-days, http-port, boot-cmdline, db, db-password-file, trust-link-local, trust-attached'],
      [["set", "serverId", "x"], "serverId is not settable"],
    ] as const) {
      r = await cfg([...args]);
      expect([args.join(" "), r.code]).toEqual([args.join(" "), 1]);
      expect(r.err).toContain(msg);
    }
    expect(readFileSync(statePaths(state).config, "utf8")).toBe(before);
    await cfg(["set", "port", "443"]);
    await cfg(["set", "discovery-port", "7413"]);
  }, 60_000);

  test("show: all settings, one KEY (lists one per line), --json", async () => {
    const all = await airroot(["serve", "config", "show", "--state", state]);
    expect(all.code).toBe(0);
    expect(all.out).toMatch(/^advertise: +-$/m);
    expect(all.out).toMatch(/^mirrors: +https:\/\/10\.0\.2\.101$/m);
    expect(all.out).toMatch(/^port: +443$/m);
    expect(all.out).toContain("nodes are told: https://10.0.2.100 https://[fd00::5] https://10.0.2.105 (from addresses and port)");
    expect((await airroot(["serve", "config", "show", "addresses", "--state", state])).out).toBe("10.0.2.100\nfd00::5\n10.0.2.105\n");
    expect((await airroot(["serve", "config", "show", "trust-link-local", "--state", state])).out).toBe("false\n");
    expect(JSON.parse((await airroot(["serve", "config", "show", "mirrors", "--json", "--state", state])).out)).toEqual(["https://10.0.2.101"]);
    expect(JSON.parse((await airroot(["serve", "config", "show", "--json", "--state", state])).out)).toEqual(readConfig(state));
    expect((await airroot(["serve", "config", "show", "nope", "--state", state])).err).toContain('unknown key "nope"; valid keys: advertise,');
  }, 60_000);

  test("--help on config and each verb", async () => {
    for (const verb of ["", "show", "set", "add", "remove"]) {
      const r = await airroot(["serve", "config", ...(verb ? [verb] : []), "--help"]);
      expect(r.code).toBe(0);
      expect(r.out).toContain(verb ? `config ${verb}` : "show|set|add|remove");
      if (verb && verb !== "show") expect(r.out).toContain("root-keys (list)");
    }
  }, 60_000);
});

test("parseRootKey accepts OpenSSH key types incl. security keys, normalises whitespace", () => {
  const k = parseRootKey("  ssh-ed25519\tAAAAC3NzaC1lZDI1NTE5AAAAIBObR6ho4uj3i2FTwchwo1RchHQ9eIzPKYjuM0I5ihTt  me  at host ");
  expect(k.line).toBe("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBObR6ho4uj3i2FTwchwo1RchHQ9eIzPKYjuM0I5ihTt me at host");
  // sk-ssh-ed25519@openssh.com: type, 32-byte key, application.
  const str = (b: Uint8Array) => { const l = Buffer.alloc(4); l.writeUInt32BE(b.length); return Buffer.concat([l, b]); };
  const blob = Buffer.concat([str(Buffer.from("sk-ssh-ed25519@openssh.com")), str(new Uint8Array(32).fill(7)), str(Buffer.from("ssh:"))]);
  expect(parseRootKey(`sk-ssh-ed25519@openssh.com ${blob.toString("base64")} yubi`).comment).toBe("yubi");
  expect(() => parseRootKey(`sk-ssh-ed25519@openssh.com ${blob.subarray(0, 40).toString("base64")}`)).toThrow(/not a valid/);
});

test("an edit that fails leaves config.json as it was; applyEdit never touches its input", async () => {
  const s = join(scratchDir(), "state");
  await initState(s, { addresses: ["10.0.2.100"] });
  const c = readConfig(s);
  const copy = structuredClone(c);
  expect(applyEdit(c, "add", "mirrors", ["https://m.example"]).config.mirrors).toEqual(["https://m.example"]);
  expect(c).toEqual(copy);
  // Too many entries fails the schema as a whole: nothing is written.
  const many = Array.from({ length: 65 }, (_, i) => `https://m${i}.example`);
  const before = readFileSync(statePaths(s).config, "utf8");
  expect(() => editConfig(s, "set", "mirrors", many)).toThrow(/^mirrors: has more than 64 entries$/);
  expect(readFileSync(statePaths(s).config, "utf8")).toBe(before);
}, 60_000);

function memoryLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, info: (m) => lines.push(`info ${m}`), warn: (m) => lines.push(`warn ${m}`), error: (m) => lines.push(`error ${m}`), debug: () => {} };
}

async function until<T>(what: string, f: () => Promise<T> | T, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(v)} after ${ms} ms`);
    await Bun.sleep(50);
  }
}

test("a running server serves mirrors and root keys added by `serve config add` afterwards, without a restart", async () => {
  const s = join(scratchDir(), "state");
  await initState(s, { addresses: ["10.0.2.100"] });
  const MAC = "52:54:00:00:00:31", DIGEST = "b".repeat(64);
  const db = await openDatabase(s);
  await addNode(db, { name: "live1", macs: [MAC], profile: "compute", net: { mode: "dhcp" } });
  await addImage(db, { digest: DIGEST, size: 4096, created: Date.now(), profile: "compute" });
  await setProfile(db, "compute", DIGEST);
  await armNode(db, "live1", null);
  const log = memoryLog();
  const srv = await serve({ stateDir: s, listen: ["127.0.0.1:0"], discovery: false, configCheckMs: 100, log });
  const siteCa = readFileSync(statePaths(s).siteCaCert, "utf8");
  const api = new NodeApi(srv.localUrls[0], siteCa, await enrollNode(srv.localUrls[0], siteCa, { macs: [MAC] }));
  try {
    expect((await api.config()).image?.urls).toEqual([`https://10.0.2.100/images/${DIGEST}.sfs`]);
    const key = readFileSync(sshKey(dir, "live") + ".pub", "utf8").trim();
    const r = await airroot(["serve", "config", "add", "mirrors", "https://10.0.2.101", "--state", s]);
    expect(r.code).toBe(0);
    expect((await airroot(["serve", "config", "add", "root-keys", key, "--state", s])).code).toBe(0);
    const c = await until("node config", () => api.config(), (c) => c.rootAuthorizedKeys.length === 1 && (c.image?.urls.length ?? 0) === 2);
    expect(c.image?.urls).toEqual([`https://10.0.2.100/images/${DIGEST}.sfs`, `https://10.0.2.101/images/${DIGEST}.sfs`]);
    expect(c.image?.manifestUrls[1]).toBe(`https://10.0.2.101/images/${DIGEST}.manifest`);
    expect(c.rootAuthorizedKeys).toEqual([key]);
    // One reload per change, or one for both when the second edit lands before the server's next look (100 ms).
    const reloads = log.lines.filter((l) => l.startsWith("info config reloaded: ")).join("\n");
    expect(reloads).toMatch(/^info config reloaded: (mirrors|mirrors, root-keys) changed$/m);
    expect(reloads).toMatch(/^info config reloaded: (root-keys|mirrors, root-keys) changed$/m);

    // An invalid file is not taken: the old config stays and the error is logged; the next good file is taken.
    const p = statePaths(s).config;
    const good = readFileSync(p, "utf8");
    writeFileSync(p, good.replace('"port": 443', '"port": "443"'));
    await until("error line", () => log.lines.filter((l) => l.startsWith("error")), (e) => e.length > 0);
    expect(log.lines.find((l) => l.startsWith("error"))).toContain("config not reloaded, keeping the previous one:");
    expect(log.lines.find((l) => l.startsWith("error"))).toContain("port: must be an integer");
    expect((await api.config()).image?.urls).toHaveLength(2);
    writeFileSync(p, good.replace('"https://10.0.2.101"', '"https://10.0.2.109"'));
    await until("mirror replaced", async () => (await api.config()).image?.urls[1], (u) => u === `https://10.0.2.109/images/${DIGEST}.sfs`);

    // Restart-only settings: logged, not applied (nodes keep being told the port the server was started with).
    expect((await airroot(["serve", "config", "set", "port", "8443", "--state", s])).code).toBe(0);
    await until("restart warning", () => log.lines, (l) => l.some((x) => x.includes("port changed in config.json; takes effect when airroot serve restarts")));
    expect(srv.baseUrls).toEqual(["https://10.0.2.100"]);
    expect(srv.config.port).toBe(443);
    // Live settings change what nodes are told at once.
    expect((await airroot(["serve", "config", "set", "advertise", "https://10.0.2.100:9443", "--state", s])).code).toBe(0);
    await until("advertise", () => srv.baseUrls, (b) => b[0] === "https://10.0.2.100:9443");
    expect((await api.config()).servers).toEqual(["https://10.0.2.100:9443"]);
  } finally {
    await api.close();
    await srv.close();
    await db.close();
  }
}, 60_000);

test("`airroot serve` re-reads config.json on SIGHUP and logs what changed", async () => {
  const s = join(scratchDir(), "state");
  expect((await airroot(["serve", "init", "--state", s, "--address", "10.0.2.100"])).code).toBe(0);
  const port = await freePort("127.0.0.1");
  const p = Bun.spawn([BUN, MAIN, "serve", "--state", s, "--listen", `127.0.0.1:${port}`, "--no-discovery"], { stdout: "pipe", stderr: "pipe" });
  const ca = readFileSync(statePaths(s).siteCaCert, "utf8");
  const info = async () => ((await (await fetch(`https://127.0.0.1:${port}/api/v1/info`, { tls: { ca } } as RequestInit)).json()) as { servers: string[] }).servers;
  try {
    await waitForPort("127.0.0.1", port, 20_000);
    expect(await info()).toEqual(["https://10.0.2.100"]);
    expect((await airroot(["serve", "config", "add", "peers", "https://10.0.2.102", "--state", s])).code).toBe(0);
    p.kill("SIGHUP");
    await until("peers", info, (v) => v.length === 2);
    expect(await info()).toEqual(["https://10.0.2.100", "https://10.0.2.102"]);
    p.kill("SIGHUP"); // nothing changed since: said so
    await Bun.sleep(300);
  } finally {
    p.kill("SIGTERM");
    await p.exited;
  }
  const err = await new Response(p.stderr).text();
  expect(err).toContain("config reloaded: peers changed");
  expect(err).toContain("SIGHUP: config.json re-read, nothing changed");
}, 60_000);
