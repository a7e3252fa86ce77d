import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "./tmp";
import { makeTestPki } from "./pki";
import { startNginx } from "./nginx";
import { freePort } from "./ports";

afterAll(removeScratchDirs);

test("test harness: nginx serves ranges over TLS on 127.x and ::1", async () => {
  const dir = scratchDir();
  const pki = makeTestPki(join(dir, "pki"));
  writeFileSync(join(dir, "hello.txt"), "hello world");
  const p1 = await freePort("127.0.0.2"), p2 = await freePort("::1");
  const ng = await startNginx({ root: dir, listen: [{ host: "127.0.0.2", port: p1 }, { host: "::1", port: p2 }],
    cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, "ng") });
  try {
    for (const i of [0, 1]) {
      const r = Bun.spawnSync(["curl", "-sS", "--cacert", pki.caCert, "-r", "0-4", ng.urlFor("hello.txt", i)]);
      expect(r.stderr.toString() + r.stdout.toString()).toBe("hello");
    }
  } finally { await ng.stop(); }
});
