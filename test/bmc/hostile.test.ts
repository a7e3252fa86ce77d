// A BMC is untrusted input: `airroot node media` (the built binary) against a Redfish service on loopback whose
// replies a test turns hostile. No real BMC exists here: test/helpers/redfish.ts is a small Redfish server written for
// these tests that follows the DMTF Redfish schemas, and each test here replaces some of its replies through its hook
// with what no well-behaved BMC sends: a huge body, an endless chunked body, a slow drip past the deadline, a silent
// server, wrong types, links (@odata.id, action targets, the session's Location) pointing to another host, redirects,
// control characters and the password in messages. Each must end in a clear error (never a crash, a hang or a request
// off the BMC's origin) and the session is still deleted.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { ServerResponse } from "node:http";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { privateAirroot } from "../helpers/boot";
import { makeTestPki } from "../helpers/pki";
import { redfishError, runBinary, startRedfish, REDFISH_PASSWORD, REDFISH_USER, type RedfishOptions, type RedfishServer } from "../helpers/redfish";

let bin = "", dir = "", pwFile = "";
let pki: ReturnType<typeof makeTestPki>;
const servers: RedfishServer[] = [];
const timers = new Set<ReturnType<typeof setInterval>>();
const ISO = "http://10.0.2.100/boot/n001.iso";

beforeAll(() => {
  bin = privateAirroot();
  dir = scratchDir("airroot-bmc-hostile-");
  pki = makeTestPki(join(dir, "pki"));
  pwFile = join(dir, "pw");
  writeFileSync(pwFile, `${REDFISH_PASSWORD}\n`);
  chmodSync(pwFile, 0o600);
});
afterAll(async () => { for (const t of timers) clearInterval(t); for (const s of servers) await s.close(); removeScratchDirs(); });

async function bmc(o: RedfishOptions = {}): Promise<RedfishServer> {
  const s = await startRedfish(dir, { pki, ...o });
  servers.push(s);
  return s;
}
const run = (s: RedfishServer, sub: string, extra: string[] = []) => runBinary(bin, ["node", "media", sub, "n001", "--bmc", s.url, "--user", REDFISH_USER,
  "--password-file", pwFile, "--bmc-ca", s.caFile, "--timeout", "2", ...(sub === "attach" ? ["--url", ISO] : []), ...extra], {}, 30_000);

const json = (res: ServerResponse, status: number, body: unknown) => {
  const t = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(t)) });
  res.end(t);
};

/** Writes `piece` every `ms` until the client goes away or `max` pieces (bounded in count and time). */
function drip(res: ServerResponse, piece: string | Buffer, ms: number, max: number): void {
  let n = 0;
  const t = setInterval(() => {
    if (res.destroyed || res.writableEnded || ++n > max) { clearInterval(t); timers.delete(t); if (!res.writableEnded) res.end(); return; }
    res.write(piece);
  }, ms);
  timers.add(t);
  res.on("close", () => { clearInterval(t); timers.delete(t); });
}

const noCrash = (err: string) => { expect(err).not.toMatch(/TypeError|RangeError|ReferenceError|at .*\.ts:\d+|undefined is not/); };

describe("oversized and endless replies", () => {
  test("a declared 100 MB body: refused from the header; the session is still deleted", async () => {
    const s = await bmc({ hook: (req, res, path) => {
      if (path !== "/redfish/v1/Systems") return false;
      res.writeHead(200, { "content-type": "application/json", "content-length": String(100 << 20) });
      res.write("{");
      return true;
    } });
    const r = await run(s, "status");
    expect(r.code).toBe(1);
    expect(r.err).toContain("find the system: GET /redfish/v1/Systems: reply of 104857600 bytes exceeds the 1048576-byte limit");
    expect(s.sessions.size).toBe(0);
    noCrash(r.err);
  });

  test("an endless chunked body: cut at the 1 MiB cap, not buffered", async () => {
    const s = await bmc({ hook: (req, res, path) => {
      if (path !== "/redfish/v1/Managers/bmc/VirtualMedia") return false;
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"Members":[');
      drip(res, Buffer.alloc(64 << 10, 0x20), 2, 2000);
      return true;
    } });
    const r = await run(s, "status");
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/find the virtual media: GET \/redfish\/v1\/Managers\/bmc\/VirtualMedia: reply exceeds the 1048576-byte limit \(cut after \d+ bytes\)/);
    expect(r.ms).toBeLessThan(15_000);
    expect(s.sessions.size).toBe(0);
  });

  test("a slow drip past the deadline: cut at --timeout, whole-reply deadline (not per chunk)", async () => {
    const s = await bmc({ hook: (req, res, path) => {
      if (path !== "/redfish/v1/Systems/1") return false;
      res.writeHead(200, { "content-type": "application/json" });
      drip(res, " ", 200, 100); // a byte every 200 ms: never idle long enough for a per-chunk timeout
      return true;
    } });
    const r = await run(s, "status");
    expect(r.code).toBe(1);
    expect(r.err).toContain("find the system: GET /redfish/v1/Systems/1: reply not complete within 2 s");
    expect(r.ms).toBeLessThan(12_000);
  });

  test("a BMC that accepts and never answers: no reply within --timeout", async () => {
    const s = await bmc({ hook: (req, res, path) => path === "/redfish/v1/Managers/bmc" || path === "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset" });
    const r = await run(s, "attach");
    expect(r.code).toBe(1);
    expect(r.err).toContain("GET /redfish/v1/Managers/bmc: no reply within 2 s");
    expect(r.err).toContain("--timeout sets the deadline");
  });

  test("a 200 that is not JSON, and a redirect: refused, never followed", async () => {
    const s = await bmc({ hook: (req, res, path) => {
      if (path === "/redfish/v1/Systems") { res.writeHead(200, { "content-type": "text/html" }); res.end("<html>\x1b[31mlogin</html>"); return true; }
      return false;
    } });
    let r = await run(s, "status");
    expect(r.err).toContain('reply is not JSON: "<html>\\x1b[31mlogin</html>"');
    const t = await bmc({ hook: (req, res, path) => {
      if (path === "/redfish/v1/" || path === "/redfish/v1") { res.writeHead(302, { location: "https://203.0.113.9/redfish/v1/" }); res.end(); return true; }
      return false;
    } });
    r = await run(t, "status");
    expect(r.err).toContain("HTTP 302 redirect to https://203.0.113.9/redfish/v1/ refused");
    expect(t.log.length).toBe(1);
  });

  test("Ctrl-C while the BMC is slow: the request is abandoned, nothing more is sent, the session is still deleted", async () => {
    const s = await bmc({ hook: (req, res, path) => path === "/redfish/v1/Managers/bmc" });
    const p = Bun.spawn([bin, "node", "media", "attach", "n001", "--bmc", s.url, "--user", REDFISH_USER, "--password-file", pwFile, "--bmc-ca", s.caFile, "--url", ISO],
      { stdout: "pipe", stderr: "pipe" });
    const kill = setTimeout(() => p.kill("SIGKILL"), 20_000);
    for (let i = 0; i < 100 && !s.log.some((l) => l.path === "/redfish/v1/Managers/bmc"); i++) await Bun.sleep(50);
    const t0 = performance.now();
    p.kill("SIGINT");
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(kill);
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(code).toBe(1);
    expect(out).toContain("SIGINT: stopping after logging out");
    expect(err).toContain("GET /redfish/v1/Managers/bmc: interrupted");
    expect(s.sessions.size).toBe(0);
    const i = s.log.findIndex((l) => l.path === "/redfish/v1/Managers/bmc");
    expect(s.log.slice(i + 1).map((l) => l.method)).toEqual(["DELETE"]);
  });
});

describe("wrong types", () => {
  const cases: [string, (path: string) => unknown, string][] = [
    ["Systems is a string", (p) => p === "/redfish/v1/" ? { Systems: "/redfish/v1/Systems", Links: { Sessions: { "@odata.id": "/redfish/v1/SessionService/Sessions" } } } : undefined, "the service root has no Systems collection"],
    ["Members is an object", (p) => p === "/redfish/v1/Systems" ? { Members: { "@odata.id": "/redfish/v1/Systems/1" } } : undefined, "/redfish/v1/Systems lists no systems"],
    ["Members holds numbers and nulls", (p) => p === "/redfish/v1/Systems" ? { Members: [1, null, { "@odata.id": 7 }, [], "x"] } : undefined, "lists no systems"],
    ["the system is an array", (p) => p === "/redfish/v1/Systems/1" ? [1, 2] : undefined, "GET /redfish/v1/Systems/1: the reply is not a JSON object"],
    ["MediaTypes a number, Image an object", (p) => p.startsWith("/redfish/v1/Managers/bmc/VirtualMedia/") ? { Id: 5, MediaTypes: 5, Image: {}, Inserted: "yes" } : undefined, "no virtual media slot takes CD, DVD or USBStick media"],
    ["an @odata.id of 100 KB", (p) => p === "/redfish/v1/Managers/bmc/VirtualMedia" ? { Members: [{ "@odata.id": `/redfish/v1/${"a".repeat(100_000)}` }] } : undefined, "no virtual media slot takes CD, DVD or USBStick media (the BMC lists no slots)"],
    ["PowerState a number, Boot an array, Actions a string", (p) => p === "/redfish/v1/Systems/1" ? { Id: "1", PowerState: 1, Boot: [], Actions: "x", Links: { ManagedBy: [{ "@odata.id": "/redfish/v1/Managers/bmc" }] } } : undefined, "the system's power state is -"],
  ];
  for (const [name, body, message] of cases) {
    test(`${name}: a clear error, no crash`, async () => {
      const s = await bmc({ hook: (req, res, path) => {
        const b = req.method === "GET" ? body(path) : undefined;
        if (b === undefined) return false;
        json(res, 200, b);
        return true;
      } });
      const r = await run(s, "attach");
      expect(r.code).toBe(1);
      expect(r.err).toContain(message);
      noCrash(r.err);
      expect(s.sessions.size).toBe(0);
    });
  }
});

describe("links off the BMC's origin", () => {
  let other: RedfishServer;
  beforeAll(async () => { other = await bmc(); });

  for (const [name, link] of [["an absolute URL to another host", () => `${other.url}/redfish/v1/Systems/1`], ["a protocol-relative //host", () => `//${other.url.slice(8)}/redfish/v1/Systems/1`],
    ["http:// on the same host", () => "http://127.0.0.1/redfish/v1/Systems/1"], ["a backslash path", () => "/\\127.0.0.2/redfish/v1/Systems/1"]] as const) {
    test(`a member @odata.id that is ${name}: refused, nothing sent there`, async () => {
      const before = other.log.length;
      const s = await bmc({ hook: (req, res, path) => {
        if (path !== "/redfish/v1/Systems") return false;
        json(res, 200, { Members: [{ "@odata.id": link() }] });
        return true;
      } });
      const r = await run(s, "status");
      expect(r.code).toBe(1);
      expect(r.err).toContain("leads off " + s.url + ": refused (only links on the BMC itself are followed)");
      expect(other.log.length).toBe(before);
      expect(s.sessions.size).toBe(0);
    });
  }

  test("an InsertMedia target on another host: refused before the POST; the password never goes there", async () => {
    const before = other.log.length;
    const s = await bmc({ hook: (req, res, path) => {
      if (path !== "/redfish/v1/Managers/bmc/VirtualMedia/CD1" || req.method !== "GET") return false;
      json(res, 200, { Id: "CD1", MediaTypes: ["CD"], Inserted: false, Image: null,
        Actions: { "#VirtualMedia.InsertMedia": { target: `${other.url}/redfish/v1/Managers/bmc/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia` } } });
      return true;
    } });
    const r = await run(s, "attach");
    expect(r.code).toBe(1);
    expect(r.err).toContain("insert the image into CD1: the BMC's link");
    expect(r.err).toContain("refused");
    expect(other.log.length).toBe(before);
    expect(s.log.some((l) => l.method === "POST" && l.path.includes("InsertMedia"))).toBe(false);
  });

  test("a session Location on another host: the DELETE goes to its path on the BMC itself, nothing to the other host", async () => {
    const before = other.log.length;
    const s = await bmc({ hook: (req, res, path) => {
      if (path !== "/redfish/v1/SessionService/Sessions" || req.method !== "POST") return false;
      s.sessions.set("tok-1", "1");
      res.writeHead(201, { "content-type": "application/json", "x-auth-token": "tok-1", location: `${other.url}/redfish/v1/SessionService/Sessions/1` });
      res.end("{}");
      return true;
    } });
    const r = await run(s, "status");
    expect(r.code).toBe(0);
    expect(r.out).toContain(`the BMC names its session ${other.url}/redfish/v1/SessionService/Sessions/1: deleted on ${s.url} at the end`);
    expect(r.out).toContain("logged out");
    expect(s.sessions.size).toBe(0);
    expect(other.log.length).toBe(before);
  });

  test("a session link that is not usable at all: a warning, the session left to expire, nothing sent elsewhere", async () => {
    const s = await bmc({ hook: (req, res, path) => {
      if (path !== "/redfish/v1/SessionService/Sessions" || req.method !== "POST") return false;
      s.sessions.set("tok-2", "2");
      res.writeHead(201, { "content-type": "application/json", "x-auth-token": "tok-2", location: "ftp://elsewhere/x" });
      res.end(JSON.stringify({ "@odata.id": "//elsewhere/redfish/v1/SessionService/Sessions/2" }));
      return true;
    } });
    const r = await run(s, "status");
    expect(r.code).toBe(0);
    expect(r.out).toContain("warning: the BMC's session link ftp://elsewhere/x is not usable; the session is left to expire");
    expect(s.log.some((l) => l.method === "DELETE")).toBe(false);
  });
});

describe("messages", () => {
  test("control characters in the BMC's messages and images are escaped; the password echoed back is masked", async () => {
    const evil = `bad\x1b[2J\u009b31m\u202eevil\u0007 ${REDFISH_PASSWORD}`;
    const s = await bmc({
      slots: [{ id: "CD1", types: ["CD"] }, { id: "CD2", types: ["DVD"], image: "http://x/\x1b]0;title\x07.iso" }],
      hook: (req, res, path) => {
        if (!path.endsWith("VirtualMedia.InsertMedia")) return false;
        redfishError(res, 400, "ActionParameterValueFormatError", evil, "Resolve \u2066this\u2069.");
        return true;
      },
    });
    let r = await run(s, "status");
    expect(r.out).toContain("slot CD2 [DVD]: inserted http://x/\\x1b]0;title\\x07.iso");
    expect(r.out).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f\u0080-\u009f\u202e\u2066]/);
    r = await run(s, "attach", ["--slot", "CD1", "--force"]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("insert the image into CD1: POST /redfish/v1/Managers/bmc/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia: HTTP 400");
    expect(r.err).toContain("bad\\x1b[2J\\x9b31m\\u202eevil\\x07 ***");
    expect(r.err).toContain("Resolution: Resolve \\u2066this\\u2069.");
    expect(r.err + r.out).not.toContain(REDFISH_PASSWORD);
    expect(r.err).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f\u0080-\u009f\u202e\u2066]/);
  });

  test("a BMC that accepts InsertMedia but never shows the image: a clear error after --wait", async () => {
    const s = await bmc({ hook: (req, res, path) => {
      if (!path.endsWith("VirtualMedia.InsertMedia")) return false;
      res.writeHead(204); res.end();
      return true;
    } });
    const r = await run(s, "attach", ["--wait", "1.5"]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("the BMC accepted the InsertMedia but after 1.5 s the slot shows no image, Inserted false");
    expect(r.err).toContain("the BMC could not fetch the image?");
    expect(s.system.resets).toEqual([]);
  });

  test("an X-Auth-Token with control characters or missing: refused", async () => {
    const s = await bmc({ hook: (req, res, path) => {
      if (path !== "/redfish/v1/SessionService/Sessions" || req.method !== "POST") return false;
      res.writeHead(201, { "content-type": "application/json", location: "/redfish/v1/SessionService/Sessions/1" });
      res.end("{}");
      return true;
    } });
    const r = await run(s, "status");
    expect(r.code).toBe(1);
    expect(r.err).toContain("log in: POST /redfish/v1/SessionService/Sessions: HTTP 201 without a usable X-Auth-Token");
  });
});
