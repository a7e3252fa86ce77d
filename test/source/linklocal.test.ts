// A link-local IPv6 source with a zone id, for real: a private network namespace with a veth pair (see the child).
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki } from "../helpers/pki";
import { nginxPidsUsing } from "../helpers/crash";

let dir = "";
afterAll(() => {
  if (dir) for (const pid of nginxPidsUsing(dir)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
  removeScratchDirs();
});

test("https://[fe80::1%25v1]:port/img.bin reaches nginx over a veth pair; the certificate names fe80::1", async () => {
  dir = scratchDir();
  const pki = makeTestPki(join(dir, "pki"), ["fe80::1"]);
  const data = crypto.getRandomValues(new Uint8Array(3 * 1024 * 1024 + 17));
  writeFileSync(join(dir, "img.bin"), data);
  const proc = Bun.spawn(["unshare", "--net", "--", process.execPath, "run", join(import.meta.dir, "linklocal.child.ts"),
    dir, pki.serverCert, pki.serverKey, pki.caCert], { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000); // bounded
  const [stdout, stderr] = [await new Response(proc.stdout).text(), await new Response(proc.stderr).text()];
  await proc.exited;
  clearTimeout(timer);
  const line = stdout.trim().split("\n").pop() ?? "";
  let res: { sha?: string; shaByIndex?: string; log?: string[]; badZone?: string; error?: string };
  try { res = JSON.parse(line); } catch { throw new Error(`child printed no result:\n${stdout}\n${stderr}`); }
  expect(res.error).toBeUndefined();
  expect(res.sha).toBe(createHash("sha256").update(data).digest("hex"));
  expect(res.shaByIndex).toBe(res.sha);
  expect(res.log).toContain("Successfully connected to https://[fe80::1%25v1]:8443/img.bin");
  expect(res.badZone).toMatch(/^cannot reach any image server: https:\/\/\[fe80::1%25nosuchif\]:8443\/img.bin: cannot connect to fe80::1%nosuchif \(bad address or zone\)$/);
}, 60_000);
