// The mount daemon's memory pacing (src/mount/daemon.ts): after reads pause, one "idle" release; after a long pause
// one "long idle" release (the engine then frees its whole cache); a new read starts the cycle again.
import { expect, test } from "bun:test";
import { gcPacer } from "../../src/mount/daemon";

test("idle, then long idle, once each per pause; a read starts over", async () => {
  const calls: boolean[] = [];
  const p = gcPacer((long) => calls.push(long), { everyBytes: 1 << 30, minIntervalMs: 100, idleMs: 20, longIdleMs: 150 });
  try {
    await Bun.sleep(100);
    expect(calls).toEqual([]);              // nothing was read yet: nothing to release
    p.served(4096);
    await Bun.sleep(80);
    expect(calls).toEqual([false]);
    await Bun.sleep(200);
    expect(calls).toEqual([false, true]);
    await Bun.sleep(100);
    expect(calls).toEqual([false, true]);   // no repeats while nothing happens
    p.served(4096);
    await Bun.sleep(300);
    expect(calls).toEqual([false, true, false, true]);
  } finally {
    p.stop();
  }
});
