// forceUnmount against real mounts made by the built binary: a healthy daemon is asked politely; a stuck one
// (SIGSTOP: it answers neither the kernel nor its status socket) is killed, its FUSE connection aborted and the
// mount point freed. The servers run in this process, which never touches the mount itself.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeFixtures, type Fixtures } from "../../src/selftest/fixtures";
import { daemonPids, forceUnmount, isMounted } from "../../src/selftest/mounts";
import { ImageServer } from "../../src/selftest/servers";
import { statusLogPath } from "../../src/mount/status";
import { binary, buildBinary } from "./binary";

const isRoot = process.getuid?.() === 0;
const dir = mkdtempSync(join(tmpdir(), "airroot-selftest-teardown-"));
let fx: Fixtures;
let server: ImageServer;
const mountpoints: string[] = [];

async function mount(name: string): Promise<{ mp: string; pid: number }> {
  const mp = join(dir, name);
  mkdirSync(mp);
  mountpoints.push(mp);
  const p = Bun.spawn([binary, "mount", "--ca", fx.caFile, "--io-timeout", "5s", server.url(fx.imageName), mp], { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill("SIGKILL"), 20_000);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  if (code !== 0) throw new Error(`airroot mount failed (${code}): ${err}`);
  const pid = Number(/daemon pid (\d+)/.exec(out)?.[1]);
  expect(daemonPids(mp)).toEqual([pid]);
  return { mp, pid };
}

beforeAll(async () => {
  if (!isRoot) return;
  await buildBinary();
  fx = await makeFixtures(join(dir, "fx"), { imageBytes: 2 * 1048576, squashfs: false });
  server = ImageServer.start({ host: "127.0.0.1", certPem: fx.serverCertPem, keyPem: fx.serverKeyPem, imagesDir: fx.imagesDir });
}, 90_000);

afterAll(async () => {
  for (const mp of mountpoints) await forceUnmount(mp, { self: [binary] }).catch(() => {});
  await server?.stop();
  if (mountpoints.every((mp) => !isMounted(mp))) rmSync(dir, { recursive: true, force: true });
}, 30_000);

describe("forceUnmount", () => {
  test.if(isRoot)("a healthy daemon is asked to unmount and exits; its log is removed", async () => {
    const { mp } = await mount("healthy");
    expect(isMounted(mp)).toBe(true);
    expect(existsSync(statusLogPath(mp))).toBe(true);
    await forceUnmount(mp, { self: [binary] });
    expect(isMounted(mp)).toBe(false);
    expect(daemonPids(mp)).toEqual([]);
    expect(existsSync(statusLogPath(mp))).toBe(false);
  }, 30_000);

  test.if(isRoot)("a stuck daemon (SIGSTOP) is killed and the mount freed, within seconds", async () => {
    const { mp, pid } = await mount("stuck");
    process.kill(pid, "SIGSTOP");
    const t0 = Date.now();
    await forceUnmount(mp, { self: [binary] });
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(isMounted(mp)).toBe(false);
    expect(daemonPids(mp)).toEqual([]);
  }, 30_000);

  test.if(isRoot)("nothing mounted and no daemon: a no-op", async () => {
    const mp = join(dir, "never");
    mkdirSync(mp);
    await forceUnmount(mp, { self: [binary] });
    expect(isMounted(mp)).toBe(false);
  });
});
