// An encrypted image's key leaves the server only in an enrolled node's mutual-TLS config: not to a node whose image
// is plain, not without a client certificate, not in /api/v1/info, not from the image files or any other path.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { initState, statePaths } from "../../src/server/state.ts";
import { serve } from "../../src/server/serve.ts";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, armNode } from "../../src/server/store/nodes.ts";
import { addImage, setProfile } from "../../src/server/store/images.ts";
import { enrollNode, NodeApi } from "../../src/client/api.ts";
import { writeImageKey } from "../../src/image/imagekeys.ts";
import { newImageKey } from "../../src/image/encrypt.ts";

afterAll(removeScratchDirs);

test("the key of an encrypted image is in the config of an enrolled node booting it, and nowhere else", async () => {
  const s = join(scratchDir(), "state");
  await initState(s, { addresses: ["10.0.2.100"] });
  const SECRET = "e".repeat(64), PLAIN = "f".repeat(64);
  const key = newImageKey();
  const hex = key.toString("hex");
  writeImageKey(s, SECRET, key);
  const db = await openDatabase(s);
  await addNode(db, { name: "n001", macs: ["52:54:00:00:00:01"], profile: "secret", net: { mode: "dhcp" } });
  await addNode(db, { name: "n002", macs: ["52:54:00:00:00:02"], profile: "plain", net: { mode: "dhcp" } });
  await addNode(db, { name: "n003", macs: ["52:54:00:00:00:03"], profile: "secret", net: { mode: "dhcp" } });
  for (const [d, p] of [[SECRET, "secret"], [PLAIN, "plain"]]) {
    await addImage(db, { digest: d, size: 8192, created: Date.now(), profile: p });
    await setProfile(db, p, d);
  }
  await armNode(db, "n001", null);
  await armNode(db, "n002", null);
  // n003 is never armed, so never enrolled: it has no certificate to ask with.
  const srv = await serve({ stateDir: s, listen: ["127.0.0.1:0"], discovery: false });
  const url = srv.localUrls[0];
  const ca = readFileSync(statePaths(s).siteCaCert, "utf8");
  try {
    const n1 = new NodeApi(url, ca, await enrollNode(url, ca, { macs: ["52:54:00:00:00:01"] }));
    const c1 = await n1.config();
    expect(c1.image?.digest).toBe(SECRET);
    expect(c1.image?.encryption).toEqual({ cipher: "aes-xts-plain64", key: hex });

    const n2 = new NodeApi(url, ca, await enrollNode(url, ca, { macs: ["52:54:00:00:00:02"] }));
    const c2 = await n2.config();
    expect(c2.image?.digest).toBe(PLAIN);
    expect(c2.image?.encryption).toBeUndefined();
    expect(JSON.stringify(c2)).not.toContain(hex);

    // The unenrolled node (and anyone else) without a client certificate: 401, no key; enrollment refuses it.
    await expect(enrollNode(url, ca, { macs: ["52:54:00:00:00:03"] })).rejects.toThrow(/identity does not match an armed node/);
    const get = async (path: string) => {
      const r = await fetch(`${url}${path}`, { tls: { ca } } as RequestInit);
      return { status: r.status, body: await r.text() };
    };
    const anon = await get("/api/v1/self/config");
    expect(anon.status).toBe(401);
    for (const path of ["/api/v1/self/config", "/api/v1/info", `/images/${SECRET}.key`, `/images/../image-keys/${SECRET}.key`,
      `/image-keys/${SECRET}.key`, `/images/%2e%2e/image-keys/${SECRET}.key`, "/images/", `/images/${SECRET}.manifest`]) {
      const r = await get(path);
      expect(r.body).not.toContain(hex);
      expect(r.body.toLowerCase()).not.toContain(key.toString("base64").toLowerCase());
      if (path !== "/api/v1/info") expect(r.status).not.toBe(200);
    }
    // The audit trail says who got which image's key, and never the key.
    const audit = readFileSync(statePaths(s).audit, "utf8");
    expect(audit.split("\n").filter((l) => l.includes('"event":"image-key"')).map((l) => JSON.parse(l)))
      .toEqual([expect.objectContaining({ outcome: "ok", node: "n001", digest: SECRET })]);
    expect(audit).not.toContain(hex);
  } finally {
    await srv.close();
    await db.close();
  }
}, 60_000);
