// `airroot --selftest`: checks the whole chain (PKI, signed image, HTTPS servers, range engine, FUSE mount daemon,
// squashfs on top, failover, status, TPM credential) on this machine, on loopback only, in a private temp dir that
// is removed at the end; prints one line per check and returns 0 only if nothing failed.
import { accessSync, constants, existsSync } from "node:fs";
import { engineChecks } from "./engine";
import { makeFixtures, type Fixtures } from "./fixtures";
import { mountChecks } from "./mountchecks";
import { onInterrupt, Scratch } from "./scratch";
import { ImageServer } from "./servers";
import { killChildren } from "./proc";
import { Report } from "./report";
import { tpmChecks } from "./tpmcheck";

export interface SelftestOptions {
  /** Where report lines go (default stdout). */
  write?: (line: string) => void;
  /** Time budget of the checks (default 40 s), leaving room for cleanup (at most 15 s) inside one minute. */
  budgetMs?: number;
  /** Size of the generated test image (default 24 MiB). */
  imageBytes?: number;
}

export async function runSelftest(opts: SelftestOptions = {}): Promise<number> {
  const report = new Report({ write: opts.write, budgetMs: opts.budgetMs ?? 40_000 });
  let scratch: Scratch;
  try {
    scratch = Scratch.create();
    report.say(`airroot selftest: loopback only (127.0.0.1, ::1), working in ${scratch.dir} (removed at the end)`);
  } catch (e) {
    report.fail("workspace: create a private temp dir", `${(e as Error).message} (set TMPDIR to a writable directory)`);
    return report.finish();
  }
  const ws = scratch;
  const stopListening = onInterrupt((sig) => {
    report.say(`selftest: ${sig} received: cleaning up before exiting`);
    void killChildren().then(() => ws.cleanup(3_000, 10_000)).then((problems) => {
      for (const p of problems) report.fail("cleanup", p);
      report.say(`selftest: interrupted${problems.length ? "" : "; cleaned up"}`);
      process.exit(130);
    });
  });
  try {
    await runChecks(report, ws, opts);
  } catch (e) {
    report.fail("selftest", `unexpected error: ${(e as Error).stack ?? e}`);
  } finally {
    const problems = await ws.cleanup();
    stopListening();
    if (existsSync(ws.dir) && !problems.length) problems.push(`${ws.dir} still exists`);
    if (problems.length) for (const p of problems) report.fail("cleanup", p);
    else report.pass("cleanup: servers and daemons stopped, nothing left mounted, temp dir removed");
  }
  return report.finish();
}

async function runChecks(report: Report, scratch: Scratch, opts: SelftestOptions): Promise<void> {
  // 1. Preconditions: what can run here. Without them, the mount checks are skipped, not failed.
  const root = process.getuid?.() === 0;
  const whyNoMount = !root
    ? "not root: mounting FUSE and loop devices needs root; run `sudo airroot --selftest` for the whole chain"
    : !usable("/dev/fuse") ? "no usable /dev/fuse (load the fuse module: modprobe fuse)" : undefined;
  if (root) await report.check("environment: running as root", () => {});
  else report.skip("environment: running as root", "running as uid " + process.getuid?.());
  if (root) {
    await report.check("environment: /dev/fuse is usable", () => {
      if (!usable("/dev/fuse")) throw new Error("cannot open /dev/fuse for reading and writing (modprobe fuse; in a container, pass the device)");
    });
  }

  // 2. Ephemeral PKI, image key, image and signed manifest.
  let fx: Fixtures | undefined;
  await report.check("fixtures: site CA + server certificate (127.0.0.1, ::1), unrelated CA, image key, image, signed manifest", async () => {
    fx = await makeFixtures(scratch.path("fixtures"), { imageBytes: opts.imageBytes });
    const kind = fx.squashfs ? `squashfs of ${fx.squashfs.files.length} files` : "random bytes (mksquashfs not on PATH)";
    return `${kind}, ${(fx.size / 1048576).toFixed(1)} MiB, ${Math.ceil(fx.size / fx.chunkSize)} chunks`;
  }, 25_000);
  if (!fx) {
    report.skip("everything else", "no fixtures to serve (see the FAIL above)");
    await tpmChecks(report, scratch);
    return;
  }
  const fixtures = fx;

  // 3. Three HTTPS servers in this process.
  const servers: ImageServer[] = [];
  const serversUp = await report.check("servers: 3 HTTPS image servers on loopback ephemeral ports", async () => {
    const hosts = ["127.0.0.1", hasIpv6Loopback() ? "::1" : "127.0.0.1", "127.0.0.1"] as const;
    for (const host of hosts) {
      const s = ImageServer.start({ host, certPem: fixtures.serverCertPem, keyPem: fixtures.serverKeyPem, imagesDir: fixtures.imagesDir });
      scratch.defer(`stopping the server on ${s.url("")}`, () => s.stop());
      servers.push(s);
    }
    // Each must answer with the manifest over TLS under the site CA before anything relies on it.
    for (const s of servers) {
      const res = await fetch(s.url(fixtures.manifestName), { tls: { ca: fixtures.caPem }, signal: AbortSignal.timeout(5_000) } as RequestInit);
      if (res.status !== 200) throw new Error(`${s.url(fixtures.manifestName)} answered HTTP ${res.status}`);
      await res.arrayBuffer();
    }
    return servers.map((s) => s.url("").replace(/\/images\/$/, "")).join(" ");
  });
  if (!serversUp) {
    report.skip("range engine and mount checks", "the image servers did not start (see above)");
  } else {
    // 4. The range engine in this process (no root needed), then 5. the whole chain through FUSE.
    await engineChecks(report, fixtures, servers);
    if (whyNoMount) report.skip("mount: wrong CA, mount, sha256, status, squashfs, tampered server, failover, unmount", whyNoMount);
    else await mountChecks({ report, scratch, fx: fixtures, servers });
  }

  // 6. The TPM credential lifecycle against a private swtpm.
  await tpmChecks(report, scratch);
}

function usable(path: string): boolean {
  try { accessSync(path, constants.R_OK | constants.W_OK); return true; } catch { return false; }
}

function hasIpv6Loopback(): boolean {
  try {
    const probe = Bun.listen({ hostname: "::1", port: 0, socket: { data() {} } });
    probe.stop(true);
    return true;
  } catch {
    return false;
  }
}
