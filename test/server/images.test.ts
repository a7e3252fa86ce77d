// Images through `airroot serve`'s own HTTPS layer (node:tls + node:http adapter around the static handler):
// HEAD, ranges, 416, If-Range, whole-file integrity, and a mirror certificate from `serve mirror-cert` on nginx.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync, readFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { freePort } from "../helpers/ports";
import { startNginx } from "../helpers/nginx";
import { initState, statePaths } from "../../src/server/state.ts";
import { serve, type RunningServer } from "../../src/server/serve.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
let dir: string, state: string, srv: RunningServer, url: string;
const data = randomBytes(6 * 1024 * 1024 + 123);
const digest = createHash("sha256").update(data).digest("hex");

beforeAll(async () => {
  dir = scratchDir();
  state = join(dir, "state");
  await initState(state, { addresses: ["127.0.0.1"] });
  writeFileSync(join(statePaths(state).images, `${digest}.sfs`), data);
  srv = await serve({ stateDir: state, listen: ["127.0.0.1:0", "[::1]:0"], discovery: false });
  url = srv.localUrls[0];
}, 60_000);
afterAll(async () => { await srv?.close(); removeScratchDirs(); });

async function curl(args: string[]): Promise<{ head: string; body: Buffer }> {
  const hf = join(dir, `h-${Math.random().toString(36).slice(2)}`);
  const p = Bun.spawn(["curl", "-sS", "-m", "20", "--cacert", statePaths(state).siteCaCert, "-D", hf, ...args], { stdout: "pipe", stderr: "pipe" });
  const body = Buffer.from(await new Response(p.stdout).arrayBuffer());
  await p.exited;
  return { head: readFileSync(hf, "utf8"), body };
}

test("HEAD, full GET (sha256), single range, suffix range, 416, If-Range, on IPv4 and IPv6 listeners", async () => {
  expect(srv.localUrls).toHaveLength(2);
  for (const base of srv.localUrls) {
    const u = `${base}/images/${digest}.sfs`;
    const head = await curl(["-I", u]);
    expect(head.head).toMatch(/^HTTP\/1\.1 200/);
    expect(head.head.toLowerCase()).toContain(`content-length: ${data.length}`);
    expect(head.head).toContain(`"${digest}"`);
    const full = await curl([u]);
    expect(createHash("sha256").update(full.body).digest("hex")).toBe(digest);
    const r = await curl(["-r", "1048576-2097151", u]);
    expect(r.head).toMatch(/^HTTP\/1\.1 206/);
    expect(Buffer.compare(r.body, data.subarray(1048576, 2097152))).toBe(0);
    const suffix = await curl(["-r", "-100", u]);
    expect(Buffer.compare(suffix.body, data.subarray(data.length - 100))).toBe(0);
    expect((await curl(["-r", `${data.length + 5}-`, u])).head).toMatch(/^HTTP\/1\.1 416/);
    const stale = await curl(["-r", "0-9", "-H", 'If-Range: "0000"', u]);
    expect(stale.head).toMatch(/^HTTP\/1\.1 200/);
  }
}, 60_000);

test("a client that disconnects mid-download does not disturb the server", async () => {
  const p = Bun.spawn(["curl", "-sS", "--limit-rate", "200k", "-m", "1", "--cacert", statePaths(state).siteCaCert, "-o", "/dev/null", `${url}/images/${digest}.sfs`], { stderr: "pipe" });
  await p.exited;
  const ok = await curl(["-r", "0-15", `${url}/images/${digest}.sfs`]);
  expect(Buffer.compare(ok.body, data.subarray(0, 16))).toBe(0);
}, 60_000);

test("garbage instead of HTTP over TLS gets a 400 or a closed connection, and the server keeps serving", async () => {
  const port = srv.listening[0].port;
  for (const junk of ["\x00\x01\x02\r\n\r\n", "GET /images/x HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", "A".repeat(70_000) + "\r\n\r\n"]) {
    const p = Bun.spawn(["openssl", "s_client", "-quiet", "-connect", `127.0.0.1:${port}`, "-CAfile", statePaths(state).siteCaCert],
      { stdin: "pipe", stdout: "pipe", stderr: "ignore" });
    p.stdin.write(junk);
    p.stdin.end();
    const t = setTimeout(() => p.kill("SIGKILL"), 15_000);
    const out = await new Response(p.stdout).text();
    clearTimeout(t);
    expect(out === "" || /^HTTP\/1\.1 4\d\d/.test(out)).toBe(true);
  }
  expect((await curl(["-I", `${url}/images/${digest}.sfs`])).head).toMatch(/^HTTP\/1\.1 200/);
}, 60_000);

test("`serve mirror-cert` issues a site-CA certificate that a stock nginx mirror serves and curl trusts", async () => {
  const out = join(dir, "mirror");
  const r = Bun.spawnSync([process.execPath, MAIN, "serve", "mirror-cert", "--state", state, "--address", "127.0.0.3", "--out", out]);
  expect(r.exitCode).toBe(0);
  const port = await freePort("127.0.0.3");
  const ng = await startNginx({ root: statePaths(state).dir, listen: [{ host: "127.0.0.3", port }], cert: `${out}.crt`, key: `${out}.key`, workDir: join(dir, "ng") });
  try {
    const got = await curl(["-r", "0-99", ng.urlFor(`images/${digest}.sfs`)]);
    expect(Buffer.compare(got.body, data.subarray(0, 100))).toBe(0);
  } finally { await ng.stop(); }
}, 60_000);
