// Units of the selftest: the report (outcomes, timeouts, budget, exit code), the workspace (undo order, bounded
// cleanup, refusing to delete below a live mount) and the status judge (fuzzed with arbitrary JSON).
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Report, SkipCheck, oneLine } from "../../src/selftest/report";
import { Scratch, mountsUnder, unescapeMountField } from "../../src/selftest/scratch";
import { statusProblems, assertSaneStatus, type ExpectedStatus } from "../../src/selftest/statuscheck";
import { runAsync } from "../../src/selftest/proc";

function report(budgetMs = 10_000) {
  const out: string[] = [];
  return { out, r: new Report({ write: (l) => out.push(l), budgetMs, defaultTimeoutMs: 5_000 }) };
}

describe("Report", () => {
  test("ok, FAIL and skip lines, summary and exit code", async () => {
    const { out, r } = report();
    expect(await r.check("passes", () => "detail")).toBe(true);
    expect(await r.check("throws", () => { throw new Error("broke\nsecond line"); })).toBe(false);
    expect(await r.check("skips", () => { throw new SkipCheck("no tool"); })).toBe(false);
    r.skip("not here", "why");
    expect(out).toEqual(["ok   passes (detail)", "FAIL throws: broke | second line", "skip skips (no tool)", "skip not here (why)"]);
    expect(r.finish()).toBe(1);
    expect(out.at(-1)).toMatch(/^selftest: 1 ok, 1 FAIL, 2 skipped in [\d.]+ s: the chain is NOT working here/);
  });

  test("exit code 0 without FAIL (skips do not fail)", async () => {
    const { r } = report();
    await r.check("a", async () => {});
    r.skip("b", "c");
    expect(r.finish()).toBe(0);
  });

  test("a check that hangs is failed after its timeout and the run goes on", async () => {
    const { out, r } = report();
    const t0 = Date.now();
    expect(await r.check("hangs", () => new Promise<void>(() => {}), 200)).toBe(false);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(out[0]).toMatch(/^FAIL hangs: timed out after 0\.2 s/);
  });

  test("the whole-run budget bounds every check, then refuses to start more", async () => {
    const { out, r } = report(300);
    expect(await r.check("long", () => new Promise<void>(() => {}), 60_000)).toBe(false);
    expect(await r.check("next", () => {})).toBe(false);
    expect(out[0]).toMatch(/^FAIL long: timed out/);
    expect(out[1]).toBe("FAIL next: not started: the selftest's time budget is used up");
  });

  test("oneLine folds and bounds any thrown value", () => {
    expect(oneLine("x\n\n  y")).toBe("x | y");
    expect(oneLine(undefined)).toBe("undefined");
    expect(oneLine(new Error("e".repeat(5000))).length).toBeLessThanOrEqual(603);
  });
});

describe("Scratch", () => {

  test("undo steps run newest first, each once; the dir is removed", async () => {
    const s = Scratch.create("airroot-selftest-unit-");
    const order: string[] = [];
    s.defer("a", () => { order.push("a"); });
    const runB = s.defer("b", () => { order.push("b"); });
    s.defer("c", async () => { await Bun.sleep(5); order.push("c"); });
    await runB(); await runB(); // run early: once, then gone from the stack
    writeFileSync(s.path("file"), "x");
    expect(await s.cleanup()).toEqual([]);
    expect(order).toEqual(["b", "c", "a"]);
    expect(existsSync(s.dir)).toBe(false);
    expect(await s.cleanup()).toEqual([]); // idempotent
  });

  test("a failing or hanging undo step is reported and the others still run", async () => {
    const s = Scratch.create("airroot-selftest-unit-");
    let ran = false;
    s.defer("first", () => { ran = true; });
    s.defer("hangs", () => new Promise<void>(() => {}));
    s.defer("throws", () => { throw new Error("boom"); });
    const problems = await s.cleanup(100, 5_000);
    expect(problems).toEqual(["throws: boom", "hangs: no result after 0.1 s"]);
    expect(ran).toBe(true);
    expect(existsSync(s.dir)).toBe(false);
  });

  test("the total cleanup time is bounded", async () => {
    const s = Scratch.create("airroot-selftest-unit-");
    let ran = false;
    s.defer("last", () => { ran = true; });
    s.defer("slow", () => new Promise<void>(() => {}));
    const t0 = Date.now();
    const problems = await s.cleanup(5_000, 200);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(problems).toEqual(["slow: no result after 0.2 s", "last: not done, cleanup ran out of time"]);
    expect(ran).toBe(false);
  });

  test.if(process.getuid?.() === 0)("never deletes a directory with a live mount below it (real tmpfs)", async () => {
    const s = Scratch.create("airroot-selftest-unit-");
    const mp = s.path("sub", "mnt");
    mkdirSync(mp, { recursive: true });
    expect((await runAsync(["mount", "-t", "tmpfs", "-o", "size=1m", "selftest-unit", mp])).code).toBe(0);
    try {
      writeFileSync(join(mp, "precious"), "keep me");
      expect(mountsUnder(s.dir)).toEqual([mp]);
      const problems = await s.cleanup();
      expect(problems.join(" ")).toContain(`still mounted: ${mp}`);
      expect(existsSync(join(mp, "precious"))).toBe(true);
    } finally {
      await runAsync(["umount", mp]);
      if (!mountsUnder(s.dir).length) rmSync(s.dir, { recursive: true, force: true });
    }
  });

  test("mount point escapes from /proc/mounts are decoded", () => {
    expect(unescapeMountField("/tmp/a\\040b\\011c\\134d")).toBe("/tmp/a b\tc\\d");
    expect(unescapeMountField("/plain")).toBe("/plain");
  });
});

describe("status judge", () => {
  const want: ExpectedStatus = {
    mountpoint: "/m", pid: 42, imageName: "x.sfs", imageSize: 100, urls: ["https://a/x.sfs", "https://b/x.sfs"], minBytesFetched: 100,
  };
  const good = () => ({
    mountpoint: "/m", pid: 42, argv0: "airroot", startedAt: "now",
    image: {
      name: "x.sfs", size: 100, bytesFetched: 100, readsTotal: 3,
      sources: [{ url: "https://b/x.sfs", state: "healthy" }, { url: "https://a/x.sfs", state: "healthy" }],
    },
  });

  test("a sane status passes; each wrong field is named", () => {
    expect(statusProblems(good(), want)).toEqual([]);
    expect(assertSaneStatus(good(), want).pid).toBe(42);
    const bad = good();
    bad.pid = 7;
    bad.image.sources[0].state = "down";
    bad.image.bytesFetched = 5;
    const p = statusProblems(bad, want).join("; ");
    expect(p).toContain("pid 7");
    expect(p).toContain("https://b/x.sfs down");
    expect(p).toContain("5 bytes fetched");
    expect(() => assertSaneStatus(bad, want)).toThrow(/airroot status --json/);
  });

  test("fuzz: arbitrary JSON values and mutated statuses give problems, never an exception", () => {
    const rnd = (n: number) => Math.floor(Math.random() * n);
    const junk = (depth: number): unknown => {
      switch (rnd(depth > 3 ? 5 : 8)) {
        case 0: return null;
        case 1: return rnd(1000) - 500;
        case 2: return "s".repeat(rnd(5));
        case 3: return rnd(2) === 0;
        case 4: return undefined;
        case 5: return Array.from({ length: rnd(4) }, () => junk(depth + 1));
        default: return Object.fromEntries(Array.from({ length: rnd(4) }, (_, i) => [["image", "sources", "url", "pid", "x"][rnd(5)] + (i ? i : ""), junk(depth + 1)]));
      }
    };
    const fields = ["mountpoint", "pid", "image", "image.name", "image.size", "image.sources", "image.bytesFetched", "image.readsTotal", "image.sources.0", "image.sources.0.url"];
    for (let i = 0; i < 3000; i++) {
      let value: unknown;
      if (i % 2) value = junk(0);
      else {
        const s: any = good();
        const path = fields[rnd(fields.length)].split(".");
        let o = s;
        for (const k of path.slice(0, -1)) o = o[k];
        o[path.at(-1)!] = junk(1);
        value = s;
      }
      const p = statusProblems(JSON.parse(JSON.stringify(value ?? null)), want);
      expect(Array.isArray(p)).toBe(true);
    }
  });
});

describe("children", () => {
  test("runAsync bounds a child in time and reports it", async () => {
    const r = await runAsync(["sleep", "10"], { timeoutMs: 100 });
    expect(r.timedOut).toBe(true);
    expect(r.code).not.toBe(0);
    const missing = await runAsync(["/nonexistent/airroot-no-such-tool"]);
    expect(missing.code).not.toBe(0);
  });

  test("killChildren kills running children and then refuses new ones except cleanup (in a child process)", async () => {
    const r = await runAsync([process.execPath, join(import.meta.dir, "killchildren.child.ts")], { timeoutMs: 20_000 });
    expect(r.code).toBe(0);
    const got = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
    expect(got.killMs).toBeLessThan(2_500);
    expect(got.killedCode).not.toBe(0);
    expect(got.refused.code).toBe(127);
    expect(got.refused.stderr).toContain("interrupted");
    expect(got.cleanupCode).toBe(0);
  });
});
