import { expect, test } from "bun:test";
import { HeaderError, NO_VALIDATOR, parseContentRange, parseLastModified, parseStrongEtag, validatorOf } from "../../src/source/headers";

test("Content-Range: exact parse and rejects", () => {
  expect(parseContentRange("bytes 0-0/10")).toEqual({ start: 0, end: 0, size: 10 });
  expect(parseContentRange("bytes 131072-262143/268435456")).toEqual({ start: 131072, end: 262143, size: 268435456 });
  for (const bad of [undefined, "", "bytes */10", "bytes 0-9/*", "bytes 5-4/10", "bytes 0-10/10", "bytes -1-2/10",
    "bytes 0-1/1e3", "bytes +0-1/10", "items 0-1/10", "bytes 0-1", "bytes 0-1/10/11", "bytes 0x1-2/10",
    "bytes 1234567890123456-1234567890123457/12345678901234567", ["bytes 0-1/10"]]) {
    expect(() => parseContentRange(bad), String(bad)).toThrow(HeaderError);
  }
});

test("ETag and Last-Modified validators", () => {
  expect(parseStrongEtag('"6b071eb2-a"')).toBe('"6b071eb2-a"');
  expect(parseStrongEtag('W/"x"')).toBeUndefined();
  expect(parseStrongEtag(undefined)).toBeUndefined();
  expect(() => parseStrongEtag("noquotes")).toThrow(HeaderError);
  expect(() => parseStrongEtag('"a"b"')).toThrow(HeaderError);
  expect(parseLastModified("Wed, 25 Nov 2026 17:44:23 GMT")).toBe("2026-11-25T17:44:23.000Z");
  expect(() => parseLastModified("yesterday")).toThrow(HeaderError);
  expect(validatorOf({ etag: '"abc"', "last-modified": "Wed, 25 Nov 2026 17:44:23 GMT" })).toBe('"abc"');
  expect(validatorOf({ etag: 'W/"abc"', "last-modified": "Wed, 25 Nov 2026 17:44:23 GMT" })).toBe("Last-Modified 2026-11-25T17:44:23.000Z");
  expect(validatorOf({})).toBe(NO_VALIDATOR); // the engine decides whether such a server is usable (only with a manifest)
  expect(validatorOf({ etag: 'W/"abc"' })).toBe(NO_VALIDATOR);
});

function rng(seed: number) {
  return () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x80000000; };
}

test("fuzz: random header values only ever throw HeaderError, and parsed ranges are consistent", () => {
  const r = rng(7);
  const alpha = 'bytes 0123456789-/*"W\\ ,;:GMTWedNov\t\u00ff\u0000xe+.';
  const seeds = ["bytes 0-131071/268435456", '"6b071eb2-10000000"', "Wed, 25 Nov 2026 17:44:23 GMT"];
  for (let i = 0; i < 6000; i++) {
    let s: string;
    if (i % 2) s = Array.from({ length: Math.floor(r() * 40) }, () => alpha[Math.floor(r() * alpha.length)]).join("");
    else {
      const b = seeds[i % 3].split("");
      const pos = Math.floor(r() * (b.length + 1));
      if (r() < 0.3) b.length = pos; else if (r() < 0.5) b.splice(pos, 1); else b.splice(pos, 0, alpha[Math.floor(r() * alpha.length)]);
      s = b.join("");
    }
    for (const f of [parseContentRange, parseStrongEtag, parseLastModified, (v: string) => validatorOf({ etag: v, "last-modified": v })]) {
      try {
        const out = f(s);
        if (f === parseContentRange) {
          const cr = out as { start: number; end: number; size: number };
          expect(cr.start <= cr.end && cr.end < cr.size && Number.isSafeInteger(cr.size)).toBe(true);
        }
      } catch (e) {
        if (!(e instanceof HeaderError)) throw new Error(`non-HeaderError for ${JSON.stringify(s)}: ${e}`);
      }
    }
  }
});
