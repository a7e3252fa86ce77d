// The line logger (src/util/log.ts): prefix, levels, debug gating, control characters, the kmsg copy.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";

afterAll(removeScratchDirs);

// Run the logger in a child process so its stderr can be captured exactly.
function runLogger(code: string): string {
  const r = Bun.spawnSync([process.execPath, "-e", `import { createLogger } from ${JSON.stringify(import.meta.dir + "/../../src/util/log.ts")}; ${code}`],
    { stdout: "pipe", stderr: "pipe" });
  return r.stderr.toString();
}

test("one line per message on stderr, with the prefix; debug only when verbose", () => {
  const out = runLogger(`const l = createLogger({ prefix: "urlmount", kmsg: false }); l.info("Connecting to https://a/x"); l.debug("hidden"); l.error("bad\\nline");`);
  expect(out).toBe("urlmount: Connecting to https://a/x\nurlmount: bad line\n");
  const v = runLogger(`createLogger({ prefix: "", kmsg: false, verbose: true }).debug("shown");`);
  expect(v).toBe("shown\n");
});

test("a copy goes to kmsg with syslog priorities; a missing kmsg leaves stderr only", () => {
  const f = join(scratchDir(), "kmsg");
  writeFileSync(f, "");
  const out = runLogger(`const l = createLogger({ prefix: "p", kmsgPath: ${JSON.stringify(f)} }); l.info("i"); l.warn("w"); l.error("e"); l.info("x".repeat(2000));`);
  expect(out.split("\n").length).toBe(5);
  const k = readFileSync(f, "utf8").split("\n");
  expect(k.slice(0, 3)).toEqual(["<6>p: i", "<4>p: w", "<3>p: e"]);
  expect(k[3].length).toBeLessThan(1000); // truncated below the kernel's record limit
  const absent = join(scratchDir(), "no-kmsg");
  expect(runLogger(`createLogger({ prefix: "p", kmsgPath: ${JSON.stringify(absent)} }).info("still here");`)).toBe("p: still here\n");
  expect(existsSync(absent)).toBe(false); // never created
});
