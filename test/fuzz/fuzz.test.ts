// A short run of every fuzz target (the full run is `make fuzz`, 100,000 cases each): the parsers of untrusted input
// return or refuse with their own error, never crash, hang or grow memory without bound. And the harness itself
// sees a crash, a foreign exception and a hang when a target has one.
import { expect, test } from "bun:test";
import { runTarget, mutate, prng, type FuzzTarget } from "./harness";
import { TARGETS } from "./targets";

for (const t of TARGETS) {
  test(`fuzz ${t.name}: 2000 mutated cases, no crash or hang`, async () => {
    const r = await runTarget(t, { cases: 2000, seed: Date.now() & 0xffff, maxSeconds: 60 });
    if (r.crashed) throw new Error(`${r.crashed} case(s) crashed or hung:\n${r.crashes.map((c) => `case ${c.caseNo}: ${c.error}\ninput ${c.input}`).join("\n")}`);
    expect(r.cases).toBe(2000);
    expect(r.accepted).toBeGreaterThan(0); // the seeds are valid: the accept path runs
    expect(r.refused).toBeGreaterThan(0);
    expect(r.rssGrowthMiB).toBeLessThan(128);
  }, 120_000);
}

test("the harness reports a TypeError, a foreign error class and a hang as failures, a refusal as fine", async () => {
  class Refused extends Error {}
  const t: FuzzTarget = {
    name: "self-check", seeds: () => [new TextEncoder().encode("abc")], refusals: [Refused],
    run(b) {
      if (b.length === 0) throw new TypeError("boom");
      if (b[0] === 0x61 && b.length === 3) return;
      if (b.length > 6) { const t0 = performance.now(); while (performance.now() - t0 < 30); return; }
      if (b.length === 2) throw new SyntaxError("foreign");
      throw new Refused("refused");
    },
  };
  const r = await runTarget(t, { cases: 300, seed: 1, slowMs: 20 });
  expect(r.crashed).toBeGreaterThan(0);
  expect(r.crashes.some((c) => /TypeError: boom|SyntaxError: foreign|hang:/.test(c.error))).toBe(true);
  expect(r.refused).toBeGreaterThan(0);
});

test("mutations are reproducible from the seed and stay bounded in size", () => {
  const input = new TextEncoder().encode("HTTP/1.1 206 Partial Content\r\n\r\n");
  const a = prng(42), b = prng(42);
  for (let i = 0; i < 200; i++) {
    const x = mutate(input, a, ["\r\n"]), y = mutate(input, b, ["\r\n"]);
    expect(Buffer.compare(Buffer.from(x), Buffer.from(y))).toBe(0);
    expect(x.length).toBeLessThanOrEqual(70_000);
  }
});
