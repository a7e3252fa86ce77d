// The HTTPS layer on its own: idle connections are dropped, keep-alive works, the peer certificate reaches handlers.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki } from "../helpers/pki";
import { startHttps, type RequestContext } from "../../src/server/https.ts";

afterAll(removeScratchDirs);

test("idle TLS connections are closed after idleTimeoutMs; keep-alive serves several requests; peer info is passed", async () => {
  const pki = makeTestPki(join(scratchDir(), "pki"));
  const seen: RequestContext[] = [];
  const s = await startHttps({
    listen: [{ host: "127.0.0.1", port: 0 }], cert: readFileSync(pki.serverCert, "utf8"), key: readFileSync(pki.serverKey, "utf8"),
    clientCa: readFileSync(pki.caCert, "utf8"), idleTimeoutMs: 500,
    handler: async (req, ctx) => { seen.push(ctx); return new Response(new URL(req.url).pathname); },
  });
  try {
    const port = s.addresses[0].port;
    const idle = Bun.spawn(["openssl", "s_client", "-quiet", "-connect", `127.0.0.1:${port}`, "-CAfile", pki.caCert], { stdin: "pipe", stdout: "pipe", stderr: "ignore" });
    const t0 = Date.now();
    const kill = setTimeout(() => idle.kill("SIGKILL"), 10_000);
    await idle.exited;
    clearTimeout(kill);
    expect(Date.now() - t0).toBeLessThan(5_000);
    // Two requests on one connection (curl reuses it) with a certificate from the trusted CA that is only valid for
    // serverAuth: presented and identified, but not authorized as a client.
    const curl = Bun.spawn(["curl", "-sS", "-m", "10", "--cacert", pki.caCert, "--cert", pki.serverCert, "--key", pki.serverKey,
      `https://127.0.0.1:${port}/a`, `https://127.0.0.1:${port}/b`], { stdout: "pipe", stderr: "pipe" });
    expect(await new Response(curl.stdout).text()).toBe("/a/b");
    expect(seen.map((c) => c.peer.authorized)).toEqual([false, false]);
    expect(seen[0].peer.present).toBe(true);
    expect(seen[0].peer.authorizationError).toBeTruthy();
    expect(seen[0].peer.serial).toMatch(/^[0-9A-F]+$/);
    expect(seen[0].peer.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(seen[0].remoteAddress).toBe("127.0.0.1");
  } finally { await s.close(); }
}, 30_000);
