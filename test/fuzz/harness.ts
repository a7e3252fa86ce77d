// A small mutation fuzzer for the parsers of untrusted input. Each target has valid seed inputs; every case is a seed
// mutated a few times (bit flips, byte edits, splices, truncation, repetition, interesting tokens) by a seeded PRNG,
// so a failure is reproducible from its seed and case number. A case passes when the parser returns or throws one of
// the target's own error classes with a message; anything else (TypeError, RangeError, a non-Error, an empty
// message) is a crash. A case slower than `slowMs` counts as a hang; memory is checked after the run.

export interface FuzzTarget {
  name: string;
  /** Valid inputs the mutations start from (bytes; strings are UTF-8 encoded). */
  seeds: () => Promise<Uint8Array[]> | Uint8Array[];
  /** Feeds one input to the parser (and whatever consumes its result). */
  run: (input: Uint8Array) => unknown | Promise<unknown>;
  /** The error classes that count as a clean refusal. */
  refusals: (abstract new (...a: never[]) => Error)[];
  /** Interesting tokens for this format, spliced in by the mutator. */
  tokens?: string[];
}

export interface FuzzResult {
  target: string;
  cases: number;
  accepted: number;
  refused: number;
  /** Cases that crashed or hung; the first few are in `crashes`. */
  crashed: number;
  crashes: { caseNo: number; input: string; error: string }[];
  slowestMs: number;
  seconds: number;
  rssGrowthMiB: number;
}

/** xorshift32: deterministic, fast, good enough to pick mutations. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 0x100000000; };
}

const GENERIC_TOKENS = ["\r\n", "\n", "\0", "\xff", "%", "%25", "\\", "\"", "'", ":", ",", "=", " ", "\t", "-1", "0", "1e3", "0x10",
  "9007199254740993", "18446744073709551616", "NaN", "Infinity", "[]", "{}", "null", "true", "__proto__", "constructor",
  "\u009b", "\u202e", "\ud800", "é", "A".repeat(300), "9".repeat(40)];

export function mutate(input: Uint8Array, rnd: () => number, tokens: string[]): Uint8Array {
  let b = Array.from(input);
  const pick = (n: number) => Math.floor(rnd() * n);
  const all = [...tokens, ...GENERIC_TOKENS];
  const rounds = 1 + pick(4);
  for (let r = 0; r < rounds; r++) {
    const at = b.length ? pick(b.length + 1) : 0;
    switch (pick(9)) {
      case 0: if (b.length) b[pick(b.length)] ^= 1 << pick(8); break;                       // bit flip
      case 1: if (b.length) b[pick(b.length)] = pick(256); break;                           // random byte
      case 2: b.splice(at, 0, pick(256)); break;                                            // insert a byte
      case 3: if (b.length) b.splice(pick(b.length), 1 + pick(8)); break;                   // delete bytes
      case 4: b = b.slice(0, pick(b.length + 1)); break;                                    // truncate
      case 5: { const t = new TextEncoder().encode(all[pick(all.length)]); b.splice(at, 0, ...t); break; } // token
      case 6: { // repeat a slice (lengths, nesting)
        const s = pick(b.length + 1), e = Math.min(b.length, s + 1 + pick(32));
        const piece = b.slice(s, e);
        for (let k = pick(8); k > 0; k--) b.splice(at, 0, ...piece);
        break;
      }
      case 7: { const s = pick(b.length + 1); b.splice(s, pick(16), ...b.slice(pick(b.length + 1), pick(b.length + 1)).slice(0, 64)); break; } // splice
      case 8: { // overwrite a digit run with a large or odd number
        const i = b.findIndex((c, k) => k >= at && c >= 48 && c <= 57);
        if (i >= 0) { let j = i; while (j < b.length && b[j] >= 48 && b[j] <= 57) j++; b.splice(i, j - i, ...new TextEncoder().encode(all[pick(all.length)])); }
        break;
      }
    }
    if (b.length > 70_000) b = b.slice(0, 70_000);
  }
  return new Uint8Array(b);
}

const printable = (b: Uint8Array) => JSON.stringify(Buffer.from(b).toString("latin1").slice(0, 300));

export async function runTarget(t: FuzzTarget, o: { cases: number; seed?: number; slowMs?: number; maxSeconds?: number }): Promise<FuzzResult> {
  const seeds = await t.seeds();
  if (!seeds.length) throw new Error(`fuzz target ${t.name} has no seeds`);
  const rnd = prng(o.seed ?? 0x5eed);
  const slowMs = o.slowMs ?? 1000;
  const deadline = performance.now() + (o.maxSeconds ?? 600) * 1000;
  Bun.gc(true);
  const rss0 = process.memoryUsage().rss;
  const res: FuzzResult = { target: t.name, cases: 0, accepted: 0, refused: 0, crashed: 0, crashes: [], slowestMs: 0, seconds: 0, rssGrowthMiB: 0 };
  const t0 = performance.now();
  for (let i = 0; i < o.cases && performance.now() < deadline; i++) {
    // Every 16th case is an unmutated seed, so each seed's accept path runs too.
    const base = seeds[Math.floor(rnd() * seeds.length)];
    const input = i % 16 === 0 ? base : mutate(base, rnd, t.tokens ?? []);
    const c0 = performance.now();
    try {
      await t.run(input);
      res.accepted++;
    } catch (e) {
      const clean = e instanceof Error && t.refusals.some((k) => e instanceof k) && typeof e.message === "string" && e.message.length > 0;
      if (clean) res.refused++;
      else {
        res.crashed++;
        if (res.crashes.length < 5) res.crashes.push({ caseNo: i, input: printable(input), error: e instanceof Error ? `${e.name}: ${e.message}\n${e.stack?.split("\n").slice(1, 4).join("\n")}` : String(e) });
      }
    }
    const ms = performance.now() - c0;
    if (ms > res.slowestMs) res.slowestMs = ms;
    if (ms > slowMs) {
      res.crashed++;
      if (res.crashes.length < 5) res.crashes.push({ caseNo: i, input: printable(input), error: `hang: ${ms.toFixed(0)} ms for one case` });
    }
    res.cases++;
  }
  res.seconds = (performance.now() - t0) / 1000;
  Bun.gc(true);
  res.rssGrowthMiB = (process.memoryUsage().rss - rss0) / 1048576;
  return res;
}
