import { expect, test } from "bun:test";
import { RateLimiter } from "../../src/server/ratelimit.ts";

test("fixed window per source; other sources unaffected; a new window resets; memory is bounded", () => {
  const r = new RateLimiter({ perWindow: 3, windowMs: 1000, maxSources: 2 });
  expect([1, 2, 3, 4].map(() => r.allow("a", 0))).toEqual([true, true, true, false]);
  expect(r.allow("b", 10)).toBe(true);
  expect(r.allow("a", 999)).toBe(false);
  expect(r.allow("a", 1000)).toBe(true);
  // A third source evicts the oldest window ("b"), which therefore starts afresh.
  expect(r.allow("c", 1001)).toBe(true);
  expect([1, 2, 3].map(() => r.allow("b", 1002))).toEqual([true, true, true]);
});
