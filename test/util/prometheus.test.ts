// The Prometheus text writer: random label values (quotes, backslashes, newlines, controls, lone surrogates, emoji)
// round-trip through the format's grammar and a real parser (promtool check metrics from Debian's prometheus)
// accepts every line; histograms, the series cap and name checks.
import { expect, test } from "bun:test";
import { escapeLabelValue, formatValue, MAX_SERIES, OVERFLOW, Registry, TextWriter, type Sample } from "../../src/util/prometheus.ts";
import { promtool } from "../helpers/promtool";

/**
 * A sample line parsed by the format's grammar (exposition format 0.0.4): metric_name [ "{" label_name "=" `"`
 * label_value `"` { "," ... } [ "," ] "}" ] value. Inside a label value, `\\`, `\"` and `\n` are the only escapes and a
 * raw line feed is not allowed. Throws on anything else, so a writer bug shows up as a parse error.
 */
function parseSample(line: string): { name: string; labels: [string, string][]; value: string } {
  let i = 0;
  const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0];
  if (!name) throw new Error(`no metric name: ${JSON.stringify(line)}`);
  i = name.length;
  const labels: [string, string][] = [];
  if (line[i] === "{") {
    i++;
    while (line[i] !== "}") {
      const ln = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i))?.[0];
      if (!ln || line.slice(i + ln.length, i + ln.length + 2) !== '="') throw new Error(`bad label at ${i}: ${JSON.stringify(line)}`);
      i += ln.length + 2;
      let v = "";
      for (;;) {
        const c = line[i++];
        if (c === undefined || c === "\n") throw new Error(`unterminated label value: ${JSON.stringify(line)}`);
        if (c === '"') break;
        if (c === "\\") {
          const e = line[i++];
          if (e === "\\") v += "\\"; else if (e === '"') v += '"'; else if (e === "n") v += "\n";
          else throw new Error(`invalid escape \\${e}: ${JSON.stringify(line)}`);
        } else v += c;
      }
      labels.push([ln, v]);
      if (line[i] === ",") i++;
      else if (line[i] !== "}") throw new Error(`expected , or } at ${i}: ${JSON.stringify(line)}`);
    }
    i++;
  }
  if (line[i] !== " ") throw new Error(`expected a space before the value: ${JSON.stringify(line)}`);
  return { name, labels, value: line.slice(i + 1) };
}

// A small seeded generator, so a failure can be replayed (the seed is in the test's message).
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 0x1_0000_0000; };
}

const SPECIAL = ["\\", '"', "\n", "\r", "\t", "\0", "{", "}", ",", "=", " ", "#", "\\n", '\\"', "\u2028", "\u202e", "\x7f", "\x85"];

function randomString(r: () => number): string {
  const n = Math.floor(r() * 40);
  let s = "";
  for (let k = 0; k < n; k++) {
    const pick = r();
    if (pick < 0.35) s += SPECIAL[Math.floor(r() * SPECIAL.length)];
    else if (pick < 0.7) s += String.fromCharCode(0x20 + Math.floor(r() * 95));
    else if (pick < 0.9) s += String.fromCharCode(0x80 + Math.floor(r() * 0xff80)); // BMP, lone surrogate halves included
    else s += String.fromCodePoint(0x10000 + Math.floor(r() * 0xfffff));
  }
  return s;
}

test("random label values round-trip through the grammar, and promtool accepts every line", () => {
  const seed = Date.now() % 1_000_000;
  const r = rng(seed);
  const values = Array.from({ length: 3000 }, () => randomString(r));
  values.push("", "\\", '"', "\n", '\\"\n\\', "\ud800", "a\udc00b", "😀");
  const w = new TextWriter();
  const per = 100;
  for (let f = 0; f * per < values.length; f++) {
    const chunk = values.slice(f * per, (f + 1) * per);
    // HELP text gets its own escaping (backslash, line feed): random text there too.
    w.family(`airroot_fuzz_${f}`, "gauge", `h ${randomString(r)}`, chunk.map((v, k): Sample => ({ labels: { i: String(f * per + k), v }, value: k })));
  }
  const text = w.text();
  const lines = text.split("\n").filter((l) => l && !l.startsWith("#"));
  expect(lines.length).toBe(values.length);
  for (const [k, line] of lines.entries()) {
    const p = parseSample(line);
    const i = Number(p.labels[0][1]);
    if (p.labels[1][1] !== values[i].toWellFormed()) throw new Error(`seed ${seed}: value ${i} ${JSON.stringify(values[i])} came back as ${JSON.stringify(p.labels[1][1])}`);
    expect(p.value).toBe(String(k % per));
  }
  const check = promtool(text);
  if (check.code !== 0 || check.out) throw new Error(`seed ${seed}: promtool said (exit ${check.code}): ${check.out.slice(0, 2000)}`);
}, 60_000);

test("escapeLabelValue: exactly backslash, double quote and line feed are escaped", () => {
  expect(escapeLabelValue('a\\b"c\nd\re\tf')).toBe('a\\\\b\\"c\\nd\re\tf');
  expect(escapeLabelValue("\ud83d")).toBe("\ufffd"); // no UTF-8 for a lone surrogate
  expect([NaN, Infinity, -Infinity, 0.25, 3].map(formatValue)).toEqual(["NaN", "+Inf", "-Inf", "0.25", "3"]);
});

test("histogram: cumulative buckets, +Inf, sum and count; the registry's page passes promtool", () => {
  const reg = new Registry();
  const h = reg.histogram("airroot_test_seconds", "A test histogram.", ["route"], [0.1, 1]);
  for (const v of [0.05, 0.1, 0.5, 2]) h.observe({ route: "a" }, v);
  const c = reg.counter("airroot_test_total", "A test counter.", ["outcome"]);
  c.touch({ outcome: "ok" });
  c.inc({ outcome: "refused" }, 2);
  let collected = 0;
  reg.gauge("airroot_test_collected", "Set at each render.");
  reg.onCollect(() => { collected++; });
  const text = reg.render();
  expect(collected).toBe(1);
  expect(text).toContain('airroot_test_seconds_bucket{route="a",le="0.1"} 2\n');
  expect(text).toContain('airroot_test_seconds_bucket{route="a",le="1"} 3\n');
  expect(text).toContain('airroot_test_seconds_bucket{route="a",le="+Inf"} 4\n');
  expect(text).toContain('airroot_test_seconds_sum{route="a"} 2.65\n');
  expect(text).toContain('airroot_test_seconds_count{route="a"} 4\n');
  expect(text).toContain('airroot_test_total{outcome="ok"} 0\n');
  expect(text).toContain('airroot_test_total{outcome="refused"} 2\n');
  expect(promtool(text)).toEqual({ code: 0, out: "" });
  expect(() => c.inc({}, -1)).toThrow("cannot add -1");
});

test("a metric stops growing at MAX_SERIES label sets: the rest is counted under one overflow series", () => {
  const reg = new Registry();
  const c = reg.counter("airroot_test_total", "Many label values.", ["who"]);
  for (let i = 0; i < MAX_SERIES + 500; i++) c.inc({ who: `n${i}` });
  const lines = reg.render().split("\n").filter((l) => l.startsWith("airroot_test_total{"));
  expect(lines.length).toBe(MAX_SERIES + 1);
  expect(lines).toContain(`airroot_test_total{who="${OVERFLOW}"} 500`);
});

test("invalid metric and label names are refused when declared, not written", () => {
  const reg = new Registry();
  expect(() => reg.counter("bad-name", "x")).toThrow('invalid Prometheus metric name "bad-name"');
  expect(() => reg.counter("ok_total", "x", ["__reserved"])).toThrow("invalid Prometheus label name");
  expect(() => reg.histogram("h_seconds", "x", ["le"])).toThrow('"le" is the bucket label');
  expect(() => reg.histogram("h2_seconds", "x", [], [1, 0.5])).toThrow("strictly increasing");
  reg.counter("dup_total", "x");
  expect(() => reg.counter("dup_total", "x")).toThrow("registered twice");
  expect(() => new TextWriter().family("m", "gauge", "x", [{ labels: { "a-b": "v" }, value: 1 }])).toThrow("invalid Prometheus label name");
});
