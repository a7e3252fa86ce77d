// Orphan reaping as PID 1, in a PID namespace: zombies reparented to init are collected, our own children are left alone.
import { expect, test } from "bun:test";
import { join } from "node:path";
import { zombieChildren } from "../../src/sys/reap";

test("zombieChildren parses /proc and finds nothing odd for this process", () => {
  expect(zombieChildren(process.pid)).toEqual([]);
});

test("as PID 1: orphans are reaped, kept pids are not", async () => {
  const script = join(import.meta.dir, "fixtures/reap-pid1.ts");
  const p = Bun.spawn(["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc", process.execPath, script],
    { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill("SIGKILL"), 30_000);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  const r = JSON.parse(out.trim().split("\n").pop() || "{}");
  expect(r.pid).toBe(1);
  expect(r.zombiesBefore.length).toBe(3); // the three orphans, not Bun's own (already waited for) child
  expect(r.reaped.sort()).toEqual(r.zombiesBefore.filter((p: number) => p !== r.kept).sort());
  expect(r.zombiesAfter).toEqual([r.kept]);
  if (!r.pid) throw new Error(err);
}, 40_000);
