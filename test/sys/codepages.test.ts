import { expect, test } from "bun:test";
import { join } from "node:path";
import { droppableCodeRanges } from "../../src/sys/codepages";

const EXE = "/usr/local/bin/airroot";
// Trimmed smaps entries: each mapping's header line, then its fields.
const mapping = (range: string, perms: string, path: string, anonKb?: number) =>
  `${range} ${perms} 00001000 fd:01 1234                               ${path}\n` +
  `Size:              2048 kB\nRss:                512 kB\n` + (anonKb === undefined ? "" : `Anonymous:         ${anonKb} kB\n`) +
  `VmFlags: rd ex mr mw me\n`;

test("only the executable's clean read-only mappings are dropped", () => {
  const smaps = [
    mapping("00400000-00600000", "r--p", EXE, 0),           // read-only data, clean: dropped
    mapping("00600000-00a00000", "r-xp", EXE, 0),           // code, clean: dropped
    mapping("00a00000-00b00000", "r-xp", EXE, 8),           // code with a written (private) page: left alone
    mapping("00b00000-00c00000", "rw-p", EXE, 64),          // data
    mapping("00c00000-00c10000", "r--p", EXE, 64),          // relocated, then made read-only (RELRO): left alone
    mapping("00c10000-00c20000", "rw-p", EXE, 0),           // writable, not yet written: could be any moment, left alone
    mapping("7f0000000000-7f0000200000", "r-xp", "/usr/lib/x86_64-linux-gnu/libc.so.6", 0), // a library: not ours
    mapping("7f0000400000-7f0000500000", "r-xp", EXE, undefined), // no Anonymous line: unknown, left alone
    mapping("7f0000600000-7f0000700000", "r-xp", `${EXE} (deleted)`, 0), // another file's name
    mapping("7f0000800000-7f0000900000", "rwxp", "", 0),     // JIT memory
  ].join("");
  expect(droppableCodeRanges(smaps, EXE)).toEqual([{ start: 0x400000, length: 0x200000 }, { start: 0x600000, length: 0x400000 }]);
});

test("an executable replaced after start (an upgrade) is still found by its link's name", () => {
  const gone = "/airroot (deleted)";
  expect(droppableCodeRanges(mapping("00600000-00a00000", "r-xp", gone, 0), gone)).toEqual([{ start: 0x600000, length: 0x400000 }]);
});

test("malformed or empty smaps text yields nothing to drop", () => {
  expect(droppableCodeRanges("", EXE)).toEqual([]);
  expect(droppableCodeRanges("garbage\nAnonymous: 0 kB\n", EXE)).toEqual([]);
  // An inverted range is not advised.
  expect(droppableCodeRanges(mapping("00a00000-00600000", "r-xp", EXE, 0), EXE)).toEqual([]);
  for (let i = 0; i < 200; i++) {
    const junk = Array.from({ length: 40 }, () => String.fromCharCode(32 + Math.floor(Math.random() * 95))).join("");
    expect(Array.isArray(droppableCodeRanges(`${junk}\n${mapping("1000-2000", "r-xp", EXE, 0)}${junk}`, EXE))).toBe(true);
  }
});

test("a real process drops its code pages and keeps running", async () => {
  // In a child Bun process: resident file pages before and after, then enough work to run code that was dropped.
  const script = `
    import { dropExecutableCode } from ${JSON.stringify(join(import.meta.dir, "../../src/sys/codepages.ts"))};
    import { createHash } from "node:crypto";
    const file = () => Number(/RssFile:\\s+(\\d+)/.exec(require("fs").readFileSync("/proc/self/status", "utf8"))[1]);
    const before = file(), advised = dropExecutableCode(), after = file();
    const digest = createHash("sha256").update(JSON.stringify({ a: [1, 2, 3], b: "x".repeat(1000) })).digest("hex");
    console.log(JSON.stringify({ before, advised, after, digest: digest.length }));`;
  const p = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  expect(err).toBe("");
  expect(code).toBe(0);
  const r = JSON.parse(out);
  expect(r.advised).toBeGreaterThan(1 << 20);
  expect(r.after).toBeLessThan(r.before - 4096); // at least 4 MiB of code pages left the resident set (kB)
  expect(r.digest).toBe(64);
});
