// A FUSE connection handed from one server to the next (src/fuse/mount.ts attachFuse, drain), against the real kernel:
// the first server stops answering with requests in flight (as a daemon killed with SIGKILL leaves them, read but
// never answered), a second server attaches to the same fd without INIT and, with FUSE_NOTIFY_RESEND, answers them:
// the reader sees the right bytes, not an error. Without RESEND those requests stay stuck (what a kernel before 6.9
// does); and a drained server leaves nothing to resend. Plus the session side, without the kernel.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { randomBytes, createHash } from "node:crypto";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { run } from "../helpers/run-async";
import { attachFuse, mountFuse, kernelHasResend, type ExposedFile, type FuseMount } from "../../src/fuse/mount";
import { FUSE_UNIQUE_RESEND, InitFlag, Errno, Op, INIT_FLAGS2_HAS_RESEND } from "../../src/fuse/protocol";
import { capturedSession, readIn, u32s } from "../helpers/fuse-session";
import * as codec from "../../src/fuse/codec";

const live: FuseMount[] = [];
const logs: string[] = [];
const log = (l: string) => logs.push(l);
afterEach(async () => {
  for (const m of live.splice(0)) { try { m.abort(); } catch {} await m.unmount().catch(() => {}); }
});
afterAll(() => removeScratchDirs());

const data = randomBytes(16 * 1024 * 1024);
const want = createHash("sha256").update(data).digest("hex");
const answering = (): ExposedFile => ({ name: "img", size: data.length, mtimeMs: 1_700_000_000_000,
  read: async (o, l) => data.subarray(o, o + l) });
/** A server that "died": it takes requests and never answers them. */
const dead = (): ExposedFile => ({ ...answering(), read: () => new Promise(() => {}) });

async function deadMount(): Promise<{ m: FuseMount; mp: string }> {
  const dir = scratchDir("airroot-resend-");
  const mp = join(dir, "mnt");
  mkdirSync(mp);
  const m = await mountFuse({ mountpoint: mp, files: [dead()], log, readAheadKb: 0 });
  live.push(m);
  return { m, mp };
}

/** sha256sum through the mount in a child process; resolves with its output, or "timeout" after `ms`. */
function sum(mp: string, ms: number) {
  return run(["sha256sum", join(mp, "img")], { timeoutMs: ms });
}

describe("FUSE_NOTIFY_RESEND on this kernel", () => {
  test("a second server attached to the fd answers the requests the first one took and never answered", async () => {
    const { m, mp } = await deadMount();
    expect(kernelHasResend(m.initParams())).toBe(true); // Linux 6.9+; this machine's 6.18 speaks 7.45
    const reader = sum(mp, 30_000);
    // Wait until the "dead" server holds reads (the kernel sent them, nobody will answer).
    for (let i = 0; i < 200 && m.stats().readsInFlight === 0; i++) await Bun.sleep(10);
    expect(m.stats().readsInFlight).toBeGreaterThan(0);
    // It stops reading (as a killed daemon does); its read requests stay unanswered.
    expect(await m.drain(300)).toBe(false);
    const { mount: n, resent } = attachFuse({ fd: m.fd, mountpoint: mp, files: [answering()], init: m.initParams(), log });
    live.unshift(n);
    expect(resent).toBe(true);
    const r = await reader;
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.split(" ")[0]).toBe(want);
    expect(n.stats().resentRequests).toBeGreaterThan(0);
    expect(n.stats().kernelProtocol).toBe(m.stats().kernelProtocol); // no INIT: the first one's
    await n.unmount();
  }, 60_000);

  test("without RESEND the requests the first server took stay stuck; new ones are served", async () => {
    const { m, mp } = await deadMount();
    const reader = sum(mp, 3000); // killed after 3 s: it never completes
    for (let i = 0; i < 200 && m.stats().readsInFlight === 0; i++) await Bun.sleep(10);
    await m.drain(300);
    const { mount: n, resent } = attachFuse({ fd: m.fd, mountpoint: mp, files: [answering()], init: m.initParams(), log,
      resend: false });
    live.unshift(n);
    expect(resent).toBe(false);
    const r = await reader;
    expect(r.code).not.toBe(0); // SIGKILLed while waiting for an answer that never comes
    expect(n.stats().resentRequests).toBe(0);
    // A read of other pages still works (the stuck ones hold only their own pages).
    const dd = await run(["dd", `if=${join(mp, "img")}`, "bs=1M", "skip=12", "count=1", "iflag=direct", "status=none"],
                         { timeoutMs: 10_000 });
    expect(dd.code).toBe(0);
    n.abort(); // the stuck requests end with an error only now (cleanup)
  }, 60_000);

  test("a drained server leaves nothing behind: the next one serves without RESEND", async () => {
    const dir = scratchDir("airroot-resend-");
    const mp = join(dir, "mnt");
    mkdirSync(mp);
    let slow = 0;
    const m = await mountFuse({ mountpoint: mp, log, files: [{ ...answering(),
      read: async (o, l) => { slow++; await Bun.sleep(20); return data.subarray(o, o + l); } }] });
    live.push(m);
    const reader = sum(mp, 30_000);
    for (let i = 0; i < 200 && slow < 3; i++) await Bun.sleep(10);
    expect(await m.drain(5000)).toBe(true);
    expect(m.stats().readsInFlight).toBe(0);
    const { mount: n } = attachFuse({ fd: m.fd, mountpoint: mp, files: [answering()], init: m.initParams(), log, resend: false });
    live.unshift(n);
    const r = await reader;
    expect(r.code).toBe(0);
    expect(r.stdout.split(" ")[0]).toBe(want);
    await n.unmount();
  }, 60_000);
});

describe("session resume (no kernel)", () => {
  const files = [answering()];
  test("a resumed session is ready at once, refuses a second INIT, echoes and counts re-queued uniques", async () => {
    const first = capturedSession(files);
    first.init(45, InitFlag.ASYNC_READ | InitFlag.MAX_PAGES | InitFlag.INIT_EXT);
    await first.s.ready;
    const p = first.s.initParams()!;
    expect(p.kernelMinor).toBe(45);
    const t = capturedSession(files, { resume: p });
    await t.s.ready;
    expect(t.s.stats().kernelProtocol).toBe("7.45");
    t.init();
    expect(t.last().error).toBe(-Errno.EPROTO);
    const u = 0x42n | FUSE_UNIQUE_RESEND;
    t.s.handleFrame(codec.encodeRequest(Op.READ, u, 2, readIn(0, 4096)));
    await Bun.sleep(5);
    expect(t.last().unique).toBe(u);
    expect(t.last().payload.length).toBe(4096);
    expect(t.s.stats().resentRequests).toBe(1);
  });
  test("FUSE_HAS_RESEND is read from INIT's flags2", async () => {
    const t = capturedSession(files);
    t.send(Op.INIT, 0, new Uint8Array([...u32s(7, 45, 131072, InitFlag.INIT_EXT, INIT_FLAGS2_HAS_RESEND), ...new Uint8Array(44)]));
    await t.s.ready;
    expect(kernelHasResend(t.s.initParams()!)).toBe(true);
    const old = capturedSession(files);
    old.init(37, InitFlag.ASYNC_READ); // Linux 6.1: no flags2
    await old.s.ready;
    expect(kernelHasResend(old.s.initParams()!)).toBe(false);
  });
});
