// Selftest checks of the whole mount chain: `airroot mount` (a separate daemon process) → FUSE → this process's
// HTTPS servers, with a wrong CA, a clean mount, status, a squashfs on top, a tampered server, a server dying
// mid-read, and unmounting. Every read of the mount happens in a child process (see proc.ts for why).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Fixtures } from "./fixtures";
import { forceUnmount, isMounted, mountCli, statusCli, umountCli, type MountRequest } from "./mounts";
import { hashViaChild, runAsync, runOk } from "./proc";
import { SkipCheck, type Report } from "./report";
import type { Scratch } from "./scratch";
import type { ImageServer } from "./servers";
import { assertSaneStatus } from "./statuscheck";

interface Ctx { report: Report; scratch: Scratch; fx: Fixtures; servers: ImageServer[] }

export async function mountChecks(ctx: Ctx): Promise<void> {
  await wrongCa(ctx);
  await cleanMount(ctx);
  await tampered(ctx);
  await serverDies(ctx);
}

function mountpoint(ctx: Ctx, name: string): string {
  const mp = ctx.scratch.path(name);
  mkdirSync(mp, { recursive: true });
  return mp;
}

function request(ctx: Ctx, mp: string, ca = ctx.fx.caFile): MountRequest {
  return { urls: ctx.servers.map((s) => s.url(ctx.fx.imageName)), mountpoint: mp, caFile: ca };
}

/** Mounts and registers the teardown; throws with the CLI's own words when it fails. */
async function mountOrThrow(ctx: Ctx, req: MountRequest): Promise<{ pid: number; unmount: () => Promise<void> }> {
  const undo = ctx.scratch.defer(`unmounting ${req.mountpoint}`, () => forceUnmount(req.mountpoint));
  const r = await mountCli(req);
  if (r.code !== 0 || r.pid === undefined) {
    await undo();
    throw new Error(`\`airroot mount\` exited ${r.timedOut ? "(timed out)" : r.code}: ${(r.stderr || r.stdout).trim().split("\n").slice(-3).join(" | ")}`);
  }
  if (!isMounted(req.mountpoint)) throw new Error(`\`airroot mount\` said it mounted ${req.mountpoint}, but /proc/mounts has no such mount`);
  return { pid: r.pid, unmount: undo };
}

async function readThrough(ctx: Ctx, mp: string): Promise<string> {
  const { sha256, bytes } = await hashViaChild(join(mp, ctx.fx.imageName), 20_000);
  if (bytes !== ctx.fx.size) throw new Error(`read ${bytes} bytes through the mount, the image has ${ctx.fx.size}`);
  if (sha256 !== ctx.fx.digest) throw new Error(`sha256 through the mount is ${sha256}, the source's is ${ctx.fx.digest}: WRONG BYTES`);
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

async function wrongCa(ctx: Ctx): Promise<void> {
  await ctx.report.check("mount: a wrong CA is refused at mount time, nothing mounted", async () => {
    const mp = mountpoint(ctx, "mnt-wrong-ca");
    ctx.scratch.defer(`unmounting ${mp}`, () => forceUnmount(mp));
    const r = await mountCli(request(ctx, mp, ctx.fx.otherCaFile));
    if (r.code === 0) throw new Error("`airroot mount` SUCCEEDED with a CA that signed none of the servers' certificates");
    if (r.timedOut) throw new Error("`airroot mount` with a wrong CA neither failed nor mounted in time");
    if (!/certificate/i.test(r.stderr)) throw new Error(`refused, but the message does not mention the certificate: ${r.stderr.trim().slice(-300)}`);
    if (isMounted(mp)) throw new Error(`${mp} is mounted although the mount failed`);
    return `exit ${r.code}`;
  });
}

async function cleanMount(ctx: Ctx): Promise<void> {
  const { report, fx } = ctx;
  const mp = mountpoint(ctx, "mnt");
  let m: Awaited<ReturnType<typeof mountOrThrow>> | undefined;
  if (!(await report.check(`mount: ${ctx.servers.length} servers with the site CA, detached daemon`, async () => {
    m = await mountOrThrow(ctx, request(ctx, mp));
    return `daemon pid ${m.pid}`;
  }, 25_000)) || !m) {
    report.skip("mount: sha256, status, squashfs, unmount", "the mount failed (see above)");
    return;
  }
  const mounted = m;
  // squashfs first: its scattered reads (superblock, tables, files) go to the servers, not the page cache.
  await report.check("squashfs: loop-mounted read-only from the FUSE file, files match the tree", async () => {
    if (!fx.squashfs) throw new SkipCheck("the image is random bytes: mksquashfs is not on PATH");
    const root = mountpoint(ctx, "sqroot");
    const undo = ctx.scratch.defer(`unmounting ${root}`, async () => {
      if (isMounted(root)) await runAsync(["umount", "-l", root], { timeoutMs: 5_000, cleanup: true });
    });
    // The loop device reads the FUSE file from the kernel; `mount` runs as a child, so this process stays free.
    await runOk(["mount", "-t", "squashfs", "-o", "loop,ro", join(mp, fx.imageName), root], { timeoutMs: 15_000 });
    try {
      for (const f of fx.squashfs.files) {
        const got = await hashViaChild(join(root, f.path), 10_000);
        if (got.sha256 !== f.sha256) throw new Error(`${f.path} differs from the tree it was packed from`);
      }
    } finally {
      await runOk(["umount", root], { timeoutMs: 10_000 });
      await undo();
    }
    return `${fx.squashfs.files.length} files`;
  }, 25_000);

  await report.check("mount: sha256 of the image read through the FUSE mount equals the source", () => readThrough(ctx, mp), 25_000);

  await report.check("status: `airroot status --json` is sane", async () => {
    const st = assertSaneStatus(await statusCli(mp), {
      mountpoint: mp, pid: mounted.pid, imageName: fx.imageName, imageSize: fx.size,
      urls: ctx.servers.map((s) => s.url(fx.imageName)), minBytesFetched: fx.size,
    });
    return `${st.image.sources.length} sources healthy, ${(st.image.bytesFetched / 1048576).toFixed(1)} MiB fetched`;
  });

  await report.check("unmount: `airroot umount` leaves nothing in /proc/mounts and the daemon exits", async () => {
    await umountCli(mp);
    if (isMounted(mp)) throw new Error(`${mp} is still in /proc/mounts`);
    if (!(await exits(mounted.pid, 5_000))) throw new Error(`daemon pid ${mounted.pid} is still running 5 s after unmounting`);
    await mounted.unmount(); // nothing left to do but drop the undo step (and the daemon's log)
  });
}

async function tampered(ctx: Ctx): Promise<void> {
  const { fx, servers } = ctx;
  await ctx.report.check("manifest: a server serving a tampered copy is detected, bytes still right", async () => {
    const mp = mountpoint(ctx, "mnt-tampered");
    servers[0].serveFrom(fx.tamperedDir); // the first listed server is the one asked first
    try {
      const req = { ...request(ctx, mp), manifestUrl: servers[1].url(fx.manifestName), imageKeyFile: fx.imagePubFile };
      const m = await mountOrThrow(ctx, req);
      await readThrough(ctx, mp);
      const st = await statusCli(mp);
      if (!st.verified) throw new Error("status has no \"verified\" section although --manifest was given");
      if (st.verified.badChunks < 1) throw new Error("status shows 0 bad chunks although the first server serves tampered bytes");
      const bad = st.image.sources.find((s) => s.url === servers[0].url(fx.imageName));
      if (!bad || bad.errors < 1) throw new Error("the tampered server has no errors recorded in status");
      await umountCli(mp);
      await m.unmount();
      return `${st.verified.badChunks} bad chunk(s) seen, tampered server ${bad.state}`;
    } finally {
      servers[0].serveFrom(fx.imagesDir);
    }
  }, 30_000);
}

async function serverDies(ctx: Ctx): Promise<void> {
  const { fx, servers } = ctx;
  await ctx.report.check("failover: the serving server stops during a read, the read completes identically", async () => {
    const mp = mountpoint(ctx, "mnt-failover");
    const m = await mountOrThrow(ctx, request(ctx, mp));
    const victim = servers[0];
    victim.dieAfter(3); // of ~25 range requests for the image: it dies early in the read, mid-transfer
    await readThrough(ctx, mp);
    if (victim.running) throw new Error("the first server never got to die (it served fewer than 3 requests): nothing was tested");
    const st = await statusCli(mp);
    const dead = st.image.sources.find((s) => s.url === victim.url(fx.imageName));
    if (!dead) throw new Error(`status does not list the stopped server ${victim.url(fx.imageName)}`);
    if (dead.errors < 1) throw new Error("the stopped server has no errors recorded in status: its death went unnoticed");
    const others = st.image.sources.filter((s) => s !== dead).reduce((n, s) => n + s.bytes, 0);
    if (others === 0) throw new Error("no bytes came from the other servers");
    await umountCli(mp);
    await m.unmount();
    return `stopped server now ${dead.state} after ${(dead.bytes / 1048576).toFixed(1)} MiB, ${(others / 1048576).toFixed(1)} MiB from the others`;
  }, 30_000);
}

async function exits(pid: number, timeoutMs: number): Promise<boolean> {
  for (const end = Date.now() + timeoutMs; Date.now() < end; await Bun.sleep(50)) {
    let stat: string;
    try { stat = await Bun.file(`/proc/${pid}/stat`).text(); } catch { return true; }
    // A zombie counts as gone (the detached daemon is not our child; init reaps it). State follows "(comm) ".
    if (stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z") return true;
  }
  return false;
}
