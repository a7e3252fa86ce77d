// Node-facing URLs come from the configuration only (`advertise`, else addresses x port), never from a listen
// address; loopback or missing advertised URLs are warned about; the initramfs servers list uses the same function.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { initState, readConfig, statePaths, writeConfig } from "../../src/server/state.ts";
import { serve } from "../../src/server/serve.ts";
import { advertisedUrls, advertiseWarnings, listenerUrls, parseBaseUrl } from "../../src/server/urls.ts";
import { siteServerUrls, writeSiteConfig } from "../../src/cli/siteconfig.ts";
import type { Logger } from "../../src/util/log.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
afterAll(removeScratchDirs);

function memoryLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, info: (m) => lines.push(`info ${m}`), warn: (m) => lines.push(`warn ${m}`), error: (m) => lines.push(`error ${m}`), debug: () => {} };
}

test("advertised URLs: `advertise` when set, else every address at the port (no :443, IPv6 in brackets)", () => {
  expect(advertisedUrls({ advertise: [], addresses: ["10.0.2.100", "fd00::1"], port: 443 })).toEqual(["https://10.0.2.100", "https://[fd00::1]"]);
  expect(advertisedUrls({ advertise: [], addresses: ["10.0.2.100", "fe80::1"], port: 8443 })).toEqual(["https://10.0.2.100:8443", "https://[fe80::1]:8443"]);
  expect(advertisedUrls({ advertise: ["https://boot.example:8443"], addresses: ["10.0.2.100"], port: 443 })).toEqual(["https://boot.example:8443"]);
  expect(advertisedUrls({ advertise: [], addresses: [], port: 443 })).toEqual([]);
});

test("warnings: loopback advertised URLs (127.x, ::1, localhost) and none at all", () => {
  for (const u of ["https://127.0.0.1:8443", "https://127.1.2.3", "https://[::1]", "https://localhost:8443", "https://x.localhost"]) {
    const w = advertiseWarnings([u]);
    expect(w).toHaveLength(1);
    expect(w[0]).toContain(`${u} is a loopback address: nodes would connect to themselves`);
  }
  expect(advertiseWarnings(["https://10.0.2.100", "https://[fe80::1]", "https://boot.example"])).toEqual([]);
  expect(advertiseWarnings([])[0]).toStartWith("no advertised URL");
});

test("base URLs are validated and normalised", () => {
  expect(parseBaseUrl("https://Boot.Example:443/")).toBe("https://boot.example");
  expect(parseBaseUrl("https://[FD00:0::1]:8443/mirror/")).toBe("https://[fd00::1]:8443/mirror");
  for (const [bad, re] of [["http://10.0.0.1", /must start with https/], ["10.0.0.1", /not a URL/], ["https://a/?x=1", /query/],
    ["https://u:p@a", /user/], ["https://[fe80::1%25eth0]", /not a URL|characters/], ["https://a/b c", /characters/]] as const) {
    expect(() => parseBaseUrl(bad)).toThrow(re);
  }
});

test("listener URLs are for this machine: a wildcard listener as loopback", () => {
  expect(listenerUrls([{ host: "127.0.0.1", port: 8443 }, { host: "::", port: 443 }, { host: "0.0.0.0", port: 9 }]))
    .toEqual(["https://127.0.0.1:8443", "https://[::1]:443", "https://127.0.0.1:9"]);
});

test("a server listening on 127.0.0.1:<port> tells nodes the configured address and port, never the listener", async () => {
  const state = join(scratchDir(), "state");
  await initState(state, { addresses: ["192.0.2.10", "fd00::10"], port: 8443 });
  const log = memoryLog();
  const srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false, log });
  try {
    expect(srv.baseUrls).toEqual(["https://192.0.2.10:8443", "https://[fd00::10]:8443"]);
    expect(srv.localUrls).toEqual([`https://127.0.0.1:${srv.listening[0].port}`]);
    const info = await (await fetch(`${srv.localUrls[0]}/api/v1/info`, { tls: { ca: readFileSync(statePaths(state).siteCaCert, "utf8") } } as RequestInit)).json() as { servers: string[] };
    expect(info.servers).toEqual(srv.baseUrls);
    expect(log.lines.filter((l) => l.startsWith("warn"))).toEqual([]);
  } finally { await srv.close(); }

  // `advertise` in config.json wins over the addresses; `serve({ advertise })` (serve --advertise) over both.
  const c = readConfig(state);
  c.advertise = ["https://boot.example:9443"];
  c.peers = ["https://peer.example"];
  writeConfig(state, c);
  const a = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false });
  try { expect(a.baseUrls).toEqual(["https://boot.example:9443"]); } finally { await a.close(); }
  const b = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false, advertise: ["https://10.9.9.9/"] });
  try { expect(b.baseUrls).toEqual(["https://10.9.9.9"]); } finally { await b.close(); }

  // The initramfs servers list: the same advertised URLs, then the peers.
  expect(siteServerUrls(readConfig(state))).toEqual(["https://boot.example:9443", "https://peer.example"]);
  writeSiteConfig(state, join(state, "..", "site"));
  expect(readFileSync(join(state, "..", "site", "servers"), "utf8")).toEndWith("\nhttps://boot.example:9443\nhttps://peer.example\n");
}, 60_000);

test("loopback or missing advertised URLs are warned about on the server's log", async () => {
  const state = join(scratchDir(), "state");
  await initState(state, { addresses: ["127.0.0.1"] });
  const log = memoryLog();
  const srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false, log });
  await srv.close();
  expect(log.lines.join("\n")).toContain("warn advertised URL https://127.0.0.1 is a loopback address");
  const c = readConfig(state);
  c.addresses = [];
  writeConfig(state, c);
  const log2 = memoryLog();
  await (await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false, log: log2 })).close();
  expect(log2.lines.join("\n")).toContain("warn no advertised URL");
}, 60_000);

test("a config.json from before `advertise` existed is read with advertise = []", async () => {
  const state = join(scratchDir(), "state");
  await initState(state, { addresses: ["192.0.2.10"] });
  const p = statePaths(state).config;
  const old = JSON.parse(readFileSync(p, "utf8"));
  delete old.advertise;
  writeFileSync(p, JSON.stringify(old));
  const c = readConfig(state);
  expect(c.advertise).toEqual([]);
  expect(c.version).toBe(1);
  writeConfig(state, c);
  expect(JSON.parse(readFileSync(p, "utf8")).advertise).toEqual([]);
});

test("`serve init --advertise` records the URLs, names their hosts in the certificate, warns about loopback", async () => {
  const state = join(scratchDir(), "state");
  const r = Bun.spawnSync([process.execPath, MAIN, "serve", "init", "--state", state, "--address", "192.0.2.10",
    "--advertise", "https://boot.example:8443/", "--advertise", "https://127.0.0.1:8443"], { stdout: "pipe", stderr: "pipe" });
  const out = r.stdout.toString(), err = r.stderr.toString();
  expect(r.exitCode).toBe(0);
  expect(readConfig(state).advertise).toEqual(["https://boot.example:8443", "https://127.0.0.1:8443"]);
  expect(out).toContain("nodes are told: https://boot.example:8443 https://127.0.0.1:8443\n");
  expect(out).toMatch(/server certificate names: .*\bboot\.example\b/);
  expect(err).toContain("warning: advertised URL https://127.0.0.1:8443 is a loopback address: nodes would connect to themselves");
  const none = Bun.spawnSync([process.execPath, MAIN, "serve", "init", "--state", join(scratchDir(), "s2")], { stdout: "pipe", stderr: "pipe" });
  expect(none.exitCode).toBe(0);
  expect(none.stderr.toString()).toContain("warning: no advertised URL");
  const bad = Bun.spawnSync([process.execPath, MAIN, "serve", "init", "--state", state, "--advertise", "http://x"], { stdout: "pipe", stderr: "pipe" });
  expect(bad.exitCode).toBe(1);
  expect(bad.stderr.toString()).toContain('--advertise "http://x" must start with https://');
}, 60_000);

test("link-local: `serve init --address fe80::1` works server-side, notes the boot interface, lists it for the initramfs", async () => {
  const dir = scratchDir(), state = join(dir, "state");
  const r = Bun.spawnSync([process.execPath, MAIN, "serve", "init", "--state", state, "--address", "10.0.2.100", "--address", "FE80:0::1%eth0"], { stdout: "pipe", stderr: "pipe" });
  const out = r.stdout.toString();
  expect(r.exitCode).toBe(0);
  const c = readConfig(state);
  expect(c.addresses).toEqual(["10.0.2.100", "fe80::1"]); // the zone names this host's interface: dropped
  expect(out).toContain("nodes are told: https://10.0.2.100 https://[fe80::1]\n");
  expect(out).toContain("note: link-local https://[fe80::1]: a node resolves a link-local address on its boot interface");
  expect(out).toMatch(/server certificate names: .*\bfe80::1\b/);
  // The initramfs servers list is what serve tells nodes, link-local included (the node adds its boot interface).
  expect(siteServerUrls(c)).toEqual(["https://10.0.2.100", "https://[fe80::1]"]);
  const srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], discovery: false });
  try { expect(srv.baseUrls).toEqual(["https://10.0.2.100", "https://[fe80::1]"]); } finally { await srv.close(); }
}, 60_000);
