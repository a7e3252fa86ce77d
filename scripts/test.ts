// `make test`: every test. The tests that boot QEMU guests (TCG: one guest keeps one core busy for minutes) are most
// of the suite's time, so they run in two lanes at once after the others have run alone on a quiet machine (the
// deadline and timing tests must not share the CPU with a guest). Before the lanes start, the caches they share (the
// Debian kernel, the Debian root image) are made once, so two lanes never build the same thing at the same time.
//
//   bun run scripts/test.ts [--timeout MS] [--list]   --list prints the plan (files per lane) and runs nothing
//   AIRROOT_SKIP_VM=1 skips the guests (each VM test says so itself); AIRROOT_TEST_ONLY=REGEX runs the matching files
//
// Prints each lane's output with a prefix, then one summary in bun's own form (" N pass", " N fail"), which .ci/run
// reads. Exit status: non-zero if any test failed or a lane did not finish.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const REPO = join(import.meta.dir, "..");
const BUN = process.execPath;
const timeout = (() => { const i = process.argv.indexOf("--timeout"); return i > 0 ? process.argv[i + 1] : "300000"; })();
const skipVm = process.env.AIRROOT_SKIP_VM === "1";

/** Seconds per VM test file on a 2-core machine with the other lane running (CI of 2026-12-04), to balance the lanes; others count 120. */
const VM_SECONDS: Record<string, number> = {
  "test/e2e/media.test.ts": 565, "test/e2e/demo.test.ts": 490, "test/e2e/systemd.test.ts": 380,
  "test/e2e/pxe-uefi-http.test.ts": 590, "test/e2e/boot.test.ts": 200, "test/e2e/failover.test.ts": 190,
  "test/e2e/pxe.test.ts": 180, "test/e2e/uki.test.ts": 75, "test/tpm/qemu-device.test.ts": 45, "test/e2e/dracut.test.ts": 45,
};

function testFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir).sort()) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...testFiles(p));
    else if (e.endsWith(".test.ts")) out.push(relative(REPO, p));
  }
  return out;
}

const only = process.env.AIRROOT_TEST_ONLY ? new RegExp(process.env.AIRROOT_TEST_ONLY) : undefined;
const all = testFiles(join(REPO, "test")).filter((f) => !only || only.test(f));
const isVm = (f: string) => f.startsWith("test/e2e/") || /qemu-system|startVm\(|qemuLock\(/.test(readFileSync(join(REPO, f), "utf8"));
const vm = skipVm ? [] : all.filter(isVm);
const plain = all.filter((f) => !vm.includes(f));

interface Summary { pass: number; fail: number; skip: number; code: number }
/** Every "(fail) ..." line of every lane, restated after the summary so the end of a long log names what failed. */
const failedLines: string[] = [];

/** Runs `bun test` on exactly these files (a ./ path is a file, not a filter); streams its output with a prefix. */
async function lane(name: string, files: string[], env: Record<string, string> = {}): Promise<Summary> {
  const s: Summary = { pass: 0, fail: 0, skip: 0, code: 0 };
  if (!files.length) return s;
  const p = Bun.spawn([BUN, "test", "--timeout", timeout, ...files.map((f) => `./${f}`)], {
    cwd: REPO, stdout: "pipe", stderr: "pipe", stdin: "ignore", env: { ...process.env, ...env },
  });
  const prefix = name ? `[${name}] ` : "";
  const pump = async (stream: ReadableStream<Uint8Array>, to: NodeJS.WriteStream) => {
    let rest = "";
    const dec = new TextDecoder();
    for await (const chunk of stream) {
      const lines = (rest + dec.decode(chunk, { stream: true })).split("\n");
      rest = lines.pop()!;
      for (const l of lines) {
        const m = /^ *(\d+) (pass|fail|skip)$/.exec(l);
        if (m) s[m[2] as "pass" | "fail" | "skip"] = Number(m[1]);
        // bun prints each failure twice (where it happened, and again in its closing list): keep one.
        if (/^\(fail\) /.test(l) && !failedLines.includes(`${prefix}${l}`)) failedLines.push(`${prefix}${l}`);
        to.write(`${prefix}${l}\n`);
      }
    }
    if (rest) to.write(`${prefix}${rest}\n`);
  };
  await Promise.all([pump(p.stdout, process.stdout), pump(p.stderr, process.stderr), p.exited]);
  s.code = p.exitCode ?? 1;
  return s;
}

/** Splits the VM files into two lanes of about equal time, longest first. */
function balance(files: string[]): [string[], string[]] {
  const lanes: [string[], string[]] = [[], []];
  const load = [0, 0];
  for (const f of [...files].sort((a, b) => (VM_SECONDS[b] ?? 120) - (VM_SECONDS[a] ?? 120))) {
    const i = load[0] <= load[1] ? 0 : 1;
    lanes[i].push(f);
    load[i] += VM_SECONDS[f] ?? 120;
  }
  return lanes;
}

if (process.argv.includes("--list")) {
  const [a, b] = balance(vm);
  console.log(`without guests (${plain.length}):\n  ${plain.join("\n  ")}\nlane vm1:\n  ${a.join("\n  ")}\nlane vm2:\n  ${b.join("\n  ")}`);
  process.exit(0);
}

const t0 = performance.now();
const results: Summary[] = [];
console.log(`test: ${plain.length} files without guests${vm.length ? `, then ${vm.length} that boot QEMU guests in two lanes` : ""}`);
results.push(await lane("", plain));

if (vm.length) {
  // The shared caches, made once before the lanes (each is also made on demand by the tests that need it).
  const warm = Bun.spawnSync([BUN, "-e", `
    const { kernelDir } = await import(${JSON.stringify(join(REPO, "test/helpers/boot.ts"))});
    const { debianImage } = await import(${JSON.stringify(join(REPO, "test/helpers/debian-image.ts"))});
    kernelDir(); debianImage();
  `], { cwd: REPO, stdout: "inherit", stderr: "inherit" });
  if (warm.exitCode !== 0) console.error("test: warming the kernel and Debian image caches failed; the VM tests will say why");
  const [a, b] = balance(vm);
  console.log(`test: lane vm1: ${a.join(" ")}\ntest: lane vm2: ${b.join(" ")}`);
  // Each lane has its own QEMU lock: one guest per lane, two at a time on the machine.
  results.push(...await Promise.all([
    lane("vm1", a, { AIRROOT_QEMU_LOCK: "/tmp/airroot-qemu-lane1.lock" }),
    lane("vm2", b, { AIRROOT_QEMU_LOCK: "/tmp/airroot-qemu-lane2.lock" }),
  ]));
}

const total = results.reduce((t, r) => ({ pass: t.pass + r.pass, fail: t.fail + r.fail, skip: t.skip + r.skip, code: t.code || r.code }), { pass: 0, fail: 0, skip: 0, code: 0 });
console.log(`\ntest: all lanes done in ${((performance.now() - t0) / 60_000).toFixed(1)} min`);
console.log(` ${total.pass} pass`);
if (total.skip) console.log(` ${total.skip} skip`);
console.log(` ${total.fail} fail`);
if (failedLines.length) console.log(`failed:\n  ${failedLines.join("\n  ")}`);
if (total.code && !total.fail) console.log("test: a lane exited non-zero with no failed test (a crash, a timeout of the whole file, or an error outside a test); see its output above");
process.exit(total.code || total.fail ? 1 : 0);
