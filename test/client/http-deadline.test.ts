// One deadline per API call (src/client/http.ts): a drip-fed reply (a mock for a fault no real server produces, a
// hostile HTTPS server on loopback) is cut at the call's timeout although every chunk arrives well within undici's
// per-chunk body timeout; a reply cut off mid-body is "unreachable" (status 0), so the node tries the next server.
import { afterAll, expect, test } from "bun:test";
import { startHostile, type Hostile } from "../helpers/hostile-https";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { ApiCallError, ApiHttp } from "../../src/client/http.ts";

const dir = scratchDir("airroot-http-deadline-");
const servers: Hostile[] = [];
afterAll(async () => { for (const s of servers) await s.close(); removeScratchDirs(); });

test("a drip-fed reply is cut at the call's deadline, as unreachable", async () => {
  const h = await startHostile(dir, (_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.write("{\"a\":\"");
    let n = 0;
    const t = setInterval(() => { if (++n > 100 || res.destroyed) { clearInterval(t); res.end("\"}"); } else res.write("x"); }, 100);
    res.on("close", () => clearInterval(t));
  });
  servers.push(h);
  const http = new ApiHttp(h.url, { ca: h.ca }, 1000);
  const t0 = performance.now();
  const e = await http.call("GET", "/api/v1/info").catch((x) => x);
  const ms = performance.now() - t0;
  await http.close();
  expect(e).toBeInstanceOf(ApiCallError);
  expect([(e as ApiCallError).status, (e as ApiCallError).code]).toEqual([0, "unreachable"]);
  expect((e as Error).message).toContain("no complete reply within 1 s");
  expect(ms).toBeLessThan(3000);
});

test("a reply cut off mid-body is unreachable (retryable), not a final error", async () => {
  const h = await startHostile(dir, (_req, res) => {
    res.writeHead(200, { "content-type": "application/json", "content-length": "100" });
    res.write("{\"a\":");
    setTimeout(() => res.socket?.destroy(), 100);
  });
  servers.push(h);
  const http = new ApiHttp(h.url, { ca: h.ca }, 5000);
  const e = await http.call("GET", "/api/v1/info").catch((x) => x);
  await http.close();
  expect(e).toBeInstanceOf(ApiCallError);
  expect([(e as ApiCallError).status, (e as ApiCallError).code]).toEqual([0, "unreachable"]);
});
