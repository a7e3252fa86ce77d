import { expect, test } from "bun:test";
import { parseDuration, formatDuration } from "../../src/util/duration";

test("durations parse with units and bare seconds", () => {
  expect(parseDuration("30")).toBe(30_000);
  expect(parseDuration("500ms")).toBe(500);
  expect(parseDuration("2m")).toBe(120_000);
  expect(parseDuration("1.5h")).toBe(5_400_000);
  expect(parseDuration("7d")).toBe(604_800_000);
  expect(formatDuration(1500)).toBe("1.5 s");
});

test("random text never parses as a duration by accident (bounded fuzz)", () => {
  for (let i = 0; i < 2000; i++) {
    const s = Array.from({ length: 1 + (i % 12) }, () => String.fromCharCode(32 + Math.floor(Math.random() * 95))).join("");
    try {
      const v = parseDuration(s);
      expect(Number.isFinite(v) && v >= 0).toBe(true);
      expect(s).toMatch(/^\s*\d/);
    } catch (e) {
      expect((e as Error).message).toStartWith("invalid duration");
    }
  }
});
