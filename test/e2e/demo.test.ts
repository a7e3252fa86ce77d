// `make demo` is the README's walk-through: the README's demo blocks parse, every variable they use is set, and (in
// the VM part) scripts/demo.ts runs them end to end on this machine and boots a node twice through airroot.
// Set AIRROOT_SKIP_VM=1 to skip the boot (never skipped silently); the README checks always run.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { walkthrough, readWalkthrough } from "../../scripts/demo/readme";
import { settingsProblems } from "../../scripts/demo/settings";
import { REPO } from "../helpers/boot";

const SKIP = process.env.AIRROOT_SKIP_VM === "1";
if (SKIP) console.warn("test/e2e/demo.test.ts: the demo boot is skipped because AIRROOT_SKIP_VM=1");

test("the README's walk-through: settings, commands and the service, every variable set, comments split off", () => {
  const w = readWalkthrough(join(REPO, "README.md"));
  expect(settingsProblems(w)).toEqual([]);
  const run = w.filter((l) => l.kind === "run").map((l) => l.text);
  expect(run[0]).toMatch(/^airroot serve init /);
  expect(run.some((l) => /^airroot serve config add root-keys /.test(l))).toBe(true);
  expect(run.some((l) => /^make initramfs /.test(l))).toBe(true);
  expect(w.filter((l) => l.kind === "serve").map((l) => l.text)).toEqual(["airroot serve --state $STATE --listen $LISTEN --no-discovery"]);
  for (const l of run) expect(l).not.toMatch(/#/);
});

test("walk-through parser: continuations, quoted #, unclosed blocks and settings syntax", () => {
  const md = "x\n<!-- demo:run -->\n```sh\necho 'a # b' \\\n  c   # the comment\n\n# only a comment\nls\n```\n";
  expect(walkthrough(md).map((l) => [l.text, l.comment, l.line])).toEqual([["echo 'a # b' c", "the comment", 4], ["ls", "", 8]]);
  expect(() => walkthrough("<!-- demo:run -->\n```sh\nls\n")).toThrow(/not closed/);
  expect(() => walkthrough("<!-- demo:run -->\ntext\n")).toThrow(/followed by a ```sh block/);
  expect(() => settingsProblems(walkthrough("<!-- demo:settings -->\n```sh\nexport X=1\n```\n"))).toThrow(/must be VAR=value/);
  expect(settingsProblems(walkthrough("<!-- demo:settings -->\n```sh\nSTATE=/x\nOTHER=1\n```\n<!-- demo:run -->\n```sh\nls $NOPE\n```\n")).join("\n"))
    .toMatch(/sets OTHER[\s\S]*lacks[\s\S]*uses NOPE/);
});

describe.skipIf(SKIP)("make demo", () => {
  test("runs the walk-through and boots the node twice: enrolled, on demand, systemd, then the sealed credential reused", async () => {
    const p = Bun.spawn([join(REPO, "node_modules/.bin/bun"), "run", "scripts/demo.ts"], { cwd: REPO, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
    const timer = setTimeout(() => p.kill("SIGINT"), 1_500_000);
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(timer);
    // Where the demo's time went: its headings and timed lines ("[mm:ss] ...").
    console.log(out.split("\n").filter((l) => /^(\x1b\[1m)?\[\d\d:\d\d\] (== |  node up|powering)/.test(l)).map((l) => l.replace(/\x1b\[[0-9;]*m/g, "")).join("\n"));
    if (code !== 0) throw new Error(`make demo failed (exit ${code}):\n${out.slice(-6000)}\n${err.slice(-3000)}`);
    expect(out).toMatch(/Enrolled as n001 via https:\/\/10\.0\.2\.100 \(credential sealed in the TPM\)/);
    expect(out).toMatch(/on demand from 2 servers, verified/);
    expect(out).toMatch(/^\s+\/\s+airroot\s+overlay\s+rw,.*lowerdir=\/mnt\/remote/m);
    expect(out).toMatch(/n001 .*running/);
    expect(out).toMatch(/daemon pid \d+ \(@airroot-root\)/);
    expect(out).toMatch(/Using the credential sealed in the TPM: node n001/);
    expect(out).toMatch(/demo finished in/);
  }, 1_600_000);
});
