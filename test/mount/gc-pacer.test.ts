// The mount daemon's memory pacing (src/mount/daemon.ts): after reads pause, one "idle" release; after a long pause
// one "long idle" release (the engine then frees its whole cache); a new read starts the cycle again.
// Generous margins: timers run late on a loaded machine, so the test waits for events instead of exact instants.
import { expect, test } from "bun:test";
import { gcPacer } from "../../src/mount/daemon";

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error("condition not reached in time");
    await Bun.sleep(10);
  }
}

test("idle, then long idle, once each per pause; a read starts over", async () => {
  const calls: boolean[] = [];
  const p = gcPacer((long) => calls.push(long), { everyBytes: 1 << 30, minIntervalMs: 100, idleMs: 20, longIdleMs: 1000 });
  try {
    await Bun.sleep(100);
    expect(calls).toEqual([]);              // nothing was read yet: nothing to release
    p.served(4096);
    const t0 = performance.now();
    await until(() => calls.length >= 1);
    expect(calls).toEqual([false]);
    expect(performance.now() - t0).toBeLessThan(1000); // the short idle came well before the long one
    await until(() => calls.length >= 2);
    expect(calls).toEqual([false, true]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(1000);
    await Bun.sleep(200);
    expect(calls).toEqual([false, true]);   // no repeats while nothing happens
    p.served(4096);
    await until(() => calls.length >= 4);
    expect(calls).toEqual([false, true, false, true]);
  } finally {
    p.stop();
  }
}, 20_000);
