// The X.509 code must also work bundled and minified (as in dist/airroot), where module evaluation order differs.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";

afterAll(removeScratchDirs);

test("a minified bundle creates a CA and verifies a CSR", async () => {
  const dir = scratchDir();
  const src = join(import.meta.dir, "../../src/pki");
  writeFileSync(join(dir, "entry.ts"), `
    import { createCa, loadCa, issueClientCert } from "${src}/x509ca.ts";
    import { makeCsr, verifyCsr } from "${src}/csr.ts";
    const c = await createCa("bundle test");
    const ca = await loadCa(c.certPem, c.keyPem);
    const v = await verifyCsr((await makeCsr("n")).csrPem);
    const cert = await issueClientCert(ca, v.publicKey, "n", "1A2B");
    console.log(cert.serialNumber.toUpperCase());
  `);
  const build = await Bun.build({ entrypoints: [join(dir, "entry.ts")], target: "bun", minify: true, outdir: join(dir, "out") });
  expect(build.success).toBe(true);
  const r = Bun.spawnSync([process.execPath, join(dir, "out", "entry.js")], { stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  expect(r.stderr.toString()).toBe("");
  expect(r.stdout.toString().trim()).toBe("1A2B");
}, 60_000);
