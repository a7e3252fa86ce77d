// The boot sequencer's console lines, failure stop and retries.
import { expect, test } from "bun:test";
import { FinalError, runSequence, stamp, StepConsole, WaitError, type Step } from "../../src/boot/sequence";

function capture() {
  let text = "";
  let now = 0;
  const sc = new StepConsole({ write: (t) => { text += t; } }, () => now, 50);
  return { sc, get text() { return text; }, tick: (ms: number) => { now += ms; } };
}

test("one line per step stamped when written, duration for slow steps, stops at the failing step", async () => {
  const c = capture();
  const ran: string[] = [];
  const steps: Step<{}>[] = [
    { name: "a", title: "Loading drivers", run: async () => { ran.push("a"); c.tick(100); } },
    { name: "b", title: "Scanning", run: async () => { ran.push("b"); c.tick(2000); return "Setting up eth0 via DHCP at 10.0.2.15/24"; } },
    { name: "s", title: "Skipped one", run: async () => { ran.push("s"); } },
    { name: "c", title: "Console", run: async () => ({ line: "Automatic console configured for ttyS0,115200" }) },
    { name: "d", title: "Mounting", run: async () => { throw new Error("root image /x does not exist"); } },
    { name: "e", title: "Never", run: async () => { ran.push("e"); } },
  ];
  const r = await runSequence(steps, {}, c.sc, { skip: ["s"] });
  expect(r.ok).toBe(false);
  if (!r.ok) { expect(r.step).toBe("d"); expect(r.error.message).toBe("root image /x does not exist"); }
  expect(ran).toEqual(["a", "b"]);
  expect(c.text.split("\n")).toEqual([
    "[   0.100] Loading drivers...done",
    "[   2.100] Scanning...Setting up eth0 via DHCP at 10.0.2.15/24 (2.0 s)",
    "[   2.100] Skipped one...skipped",
    "[   2.100] Automatic console configured for ttyS0,115200",
    "[   2.100] Mounting...FAILED: root image /x does not exist",
    "",
  ]);
});

test("a slow step shows its title early; log lines inside a step keep lines whole", async () => {
  const c = capture();
  await runSequence([{ name: "x", title: "Waiting", run: async () => { await Bun.sleep(120); c.sc.log("still waiting"); c.tick(700); } }], {}, c.sc);
  expect(c.text).toBe("[   0.000] Waiting...\n[   0.000]   still waiting\n[   0.700] Waiting...done (0.7 s)\n");
  expect(stamp(1234567)).toBe("[1234.567]");
});

test("a log line from a step whose title is not shown yet comes after the title, not above it", async () => {
  const c = capture();
  await runSequence([{ name: "t", title: "Contacting", run: async () => { c.tick(260); c.sc.log("enrolling"); c.tick(10); return { line: "Enrolled as n1" }; } }], {}, c.sc);
  expect(c.text).toBe("[   0.260] Contacting...\n[   0.260]   enrolling\n[   0.270] Enrolled as n1\n");
});

test("stamps never go backwards: a summary line after a step's own later lines carries the time it is written", async () => {
  const c = capture();
  await runSequence([
    { name: "t", title: "Contacting the deployment servers", run: async () => {
      c.tick(1000); c.sc.log("no sealed credential in the TPM: enrolling"); c.tick(1700); c.sc.log("sealed the new credential in the TPM");
      c.tick(300); return { line: "Enrolled as n001" }; } },
    { name: "r", title: "Mounting the root filesystem", run: async () => { c.tick(40); return "overlay on /sysroot"; } },
  ], {}, c.sc);
  const stamps = c.text.trim().split("\n").map((l) => Number(/^\[\s*([\d.]+)\]/.exec(l)![1]));
  for (let i = 1; i < stamps.length; i++) expect(stamps[i]).toBeGreaterThanOrEqual(stamps[i - 1]);
  expect(c.text).toContain("[   3.000] Enrolled as n001 (3.0 s)\n[   3.040] Mounting the root filesystem...overlay on /sysroot\n");
});

test("retries: a step that fails twice then succeeds; one that keeps failing stops after its attempts", async () => {
  const c = capture();
  let n = 0, m = 0;
  const r = await runSequence([
    { name: "net", title: "Net", retries: 2, retryDelayMs: 1, run: async () => { if (++n < 3) throw new Error(`no lease ${n}`); return "up"; } },
    { name: "root", title: "Root", retries: 1, retryDelayMs: 1, run: async () => { m++; throw new Error("servers down"); } },
  ], {}, c.sc);
  expect(n).toBe(3);
  expect(m).toBe(2);
  expect(r.ok).toBe(false);
  expect(c.text).toContain("Net failed (attempt 1 of 3): no lease 1; retrying in 0.001 s");
  expect(c.text).toContain("Net...up");
  expect(c.text).toContain("Root...FAILED: servers down");
});

test("servers away: the step waits with backoff, one line per change of state (not per try), then reachable again", async () => {
  const c = capture();
  let n = 0;
  const sleeps: number[] = [];
  const t0 = performance.now();
  const r = await runSequence([{
    name: "root", title: "Mounting the root filesystem", retries: 0,
    wait: { firstDelayMs: 5, maxDelayMs: 40, timeoutMs: () => undefined },
    run: async () => {
      sleeps.push(performance.now());
      n++;
      if (n <= 4) throw new WaitError("image server", `https://10.0.2.100:${8000 + n}/images/x.manifest: Connection refused`);
      if (n <= 7) throw new WaitError("image server", "https://10.0.2.100/images/x.manifest: HTTP 503");
      return "overlay on /sysroot";
    },
  }], {}, c.sc);
  expect(r.ok).toBe(true);
  expect(n).toBe(8);
  const lines = c.text.trim().split("\n").map((l) => l.replace(/^\[\s*[\d.]+\]\s+/, ""));
  expect(lines).toEqual([
    "Mounting the root filesystem...",
    "waiting for an image server: https://10.0.2.100:8001/images/x.manifest: Connection refused (retrying every 0 s at most)",
    "still waiting for an image server: https://10.0.2.100/images/x.manifest: HTTP 503",
    "image server reachable again after 0 s",
    "Mounting the root filesystem...overlay on /sysroot",
  ]);
  // Backoff: the gaps grow (jittered 50-100%) up to the cap.
  const gaps = sleeps.slice(1).map((t, i) => t - sleeps[i]);
  expect(gaps[0]).toBeGreaterThanOrEqual(2);
  expect(Math.max(...gaps)).toBeLessThan(40 + 30);
  expect(gaps.slice(-3).every((g) => g >= 18)).toBe(true); // at the cap: 50% of 40 ms at least
  expect(performance.now() - t0).toBeLessThan(2000);
});

test("waiting is bounded by the policy's timeout (airroot.roottimeout): then the step fails naming the option", async () => {
  const c = capture();
  let n = 0;
  const t0 = performance.now();
  const r = await runSequence([{
    name: "root", title: "Mounting the root filesystem", retries: 5,
    wait: { firstDelayMs: 10, maxDelayMs: 20, timeoutMs: () => 150, option: "airroot.roottimeout" },
    run: async () => { n++; throw new WaitError("image server", "https://s/images/x.sfs: Connection refused"); },
  }], {}, c.sc);
  const took = performance.now() - t0;
  expect(r.ok).toBe(false);
  if (!r.ok) expect(r.error.message).toMatch(/^gave up waiting for an image server after 0 s \(airroot\.roottimeout\): https:\/\/s\/images\/x.sfs: Connection refused$/);
  expect(took).toBeGreaterThanOrEqual(150);
  expect(took).toBeLessThan(1000);
  expect(n).toBeGreaterThan(3);
  expect(c.text).toContain("(retrying every 0 s at most, for at most 0 s)");
  expect(c.text.match(/\]   (still )?waiting for/g)!.length).toBe(1);
  expect(c.text).not.toContain("attempt"); // waiting does not use up the step's retries
  // A FinalError (or any other error) does not wait; a step without a policy treats WaitError like any error.
  const d = capture();
  const f = await runSequence([{ name: "x", title: "X", wait: {}, run: async () => { throw new FinalError("bad config"); } }], {}, d.sc);
  expect(f.ok).toBe(false);
  expect(d.text).not.toContain("waiting");
  let m = 0;
  const g = await runSequence([{ name: "y", title: "Y", retries: 1, retryDelayMs: 1, run: async () => { m++; throw new WaitError("image server", "down"); } }], {}, d.sc);
  expect(g.ok).toBe(false);
  expect(m).toBe(2);
});
