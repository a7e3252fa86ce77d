// `make bench`, background-fill part (`bun run bench/fill.ts`): how much a running fill (`airroot mount --fill`, what
// airroot.untether= starts on a node) slows the node's own reads. The same signed image, the same nginx behind the same
// 2 ms delaying relay (a LAN), a fresh cold mount each time: 4 KiB random reads with fio (4 jobs) and a sequential
// read, once without a fill and once while a fill runs (paced, so it runs through the whole measurement). Goal
// (issue 15): demand reads during the fill no more than 20% slower. Loopback only; each phase is bounded.
import { join } from "node:path";
import { mkdirSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../test/helpers/tmp";
import { makeTestPki } from "../test/helpers/pki";
import { startNginx, type Nginx } from "../test/helpers/nginx";
import { freePort } from "../test/helpers/ports";
import { startDelayRelay, type DelayRelay } from "../test/helpers/relay";
import { signImage } from "../test/helpers/signed-image";
import { REPO } from "../test/helpers/boot";

const MiB = 1048576;
const IMAGE_MIB = Number(process.env.BENCH_FILL_IMAGE_MIB ?? 1024);
const RTT_MS = 2;
/** The fill's pace: slow enough that it is still running when the reads end, fast enough to matter (a 10 Gb/s node
 * untethering 1 GiB at this rate takes ~25 s). */
const FILL_MBS = 40;
const SEQ_MIB = 256;
const airroot = process.env.AIRROOT_BENCH_AIRROOT ?? join(REPO, "dist", "airroot");

export interface FillRow { fill: boolean; randIops: number; randP50us: number; randP99us: number; seqMBs: number; fillMiBDuring?: number }

async function run(cmd: string[], timeoutMs = 180_000): Promise<{ out: string; err: string; code: number; ms: number }> {
  const t0 = performance.now();
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`${cmd[0]} ${cmd[1] ?? ""} failed (exit ${code}): ${err.trim().slice(0, 400)}`);
  return { out, err, code: code ?? -1, ms: performance.now() - t0 };
}

async function fillBytes(mnt: string): Promise<number> {
  const st = JSON.parse((await run([airroot, "status", "--json", mnt])).out);
  return st.fill?.fetchedBytes ?? 0;
}

async function measure(fill: boolean, o: { dir: string; url: string; manifest: string; key: string; ca: string }): Promise<FillRow> {
  const mountOne = async (tag: string) => {
    const mnt = join(o.dir, `mnt-${fill ? "fill" : "plain"}-${tag}`);
    mkdirSync(mnt);
    await run([airroot, "mount", "--ca", o.ca, "--manifest", o.manifest, "--image-key", o.key,
      ...(fill ? ["--fill", join(o.dir, `copy-${tag}.img`), "--fill-rate", String(FILL_MBS), "--untether-loop", "off"] : []), o.url, mnt]);
    if (fill) await Bun.sleep(2000); // the fill under way
    return mnt;
  };
  let mnt = await mountOne("rand");
  let randIops = NaN, randP50us = NaN, randP99us = NaN, seqMBs = NaN, fillMiBDuring = 0;
  try {
    const before = fill ? await fillBytes(mnt) : 0;
    const fio = await run(["fio", "--name=rand", `--filename=${join(mnt, "image.bin")}`, "--rw=randread", "--bs=4k", "--ioengine=psync",
      "--numjobs=4", "--group_reporting", "--time_based", "--runtime=10", "--readonly", "--invalidate=0", "--output-format=json"], 120_000);
    if (fill) fillMiBDuring += ((await fillBytes(mnt)) - before) / MiB;
    const job = JSON.parse(fio.out.slice(fio.out.indexOf("{"))).jobs[0].read;
    const pct = job.clat_ns?.percentile ?? {};
    randIops = job.iops;
    randP50us = (pct["50.000000"] ?? NaN) / 1000;
    randP99us = (pct["99.000000"] ?? NaN) / 1000;
  } finally { await run([airroot, "umount", mnt]).catch(() => {}); }
  mnt = await mountOne("seq");
  try {
    const before = fill ? await fillBytes(mnt) : 0;
    // From the middle of the image: the paced fill, which starts at chunk 0, has not copied it yet.
    const seq = await run(["dd", `if=${join(mnt, "image.bin")}`, "of=/dev/null", "bs=1M", `skip=${IMAGE_MIB / 2}`, `count=${SEQ_MIB}`, "status=none"]);
    if (fill) fillMiBDuring += ((await fillBytes(mnt)) - before) / MiB;
    seqMBs = SEQ_MIB / (seq.ms / 1000);
  } finally { await run([airroot, "umount", mnt]).catch(() => {}); }
  return { fill, randIops, randP50us, randP99us, seqMBs, ...(fill ? { fillMiBDuring } : {}) };
}

async function main(): Promise<void> {
  const dir = scratchDir("airroot-bench-fill-");
  let ng: Nginx | undefined, relay: DelayRelay | undefined;
  const rows: FillRow[] = [];
  try {
    console.log(`bench/fill: a ${IMAGE_MIB} MiB random image, signed; nginx behind a ${RTT_MS} ms relay`);
    mkdirSync(join(dir, "www"));
    await run(["dd", "if=/dev/urandom", `of=${join(dir, "www/image.bin")}`, "bs=1M", `count=${IMAGE_MIB}`, "status=none"]);
    const signed = signImage(join(dir, "www/image.bin"), join(dir, "state"), join(dir, "image.manifest"));
    writeFileSync(join(dir, "image-key.pem"), signed.publicKeyPem);
    const pki = makeTestPki(join(dir, "pki"));
    const port = await freePort("127.0.0.2");
    ng = await startNginx({ root: join(dir, "www"), listen: [{ host: "127.0.0.2", port }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, "ng") });
    relay = await startDelayRelay({ listenHost: "127.0.0.2", targetHost: "127.0.0.2", targetPort: port, delayMs: RTT_MS / 2 });
    const o = { dir, url: `https://127.0.0.2:${relay.port}/image.bin`, manifest: signed.manifest, key: join(dir, "image-key.pem"), ca: pki.caCert };
    for (const fill of [false, true]) {
      console.log(`bench/fill: ${fill ? `with a fill at ${FILL_MBS} MB/s` : "without a fill"}: 4 KiB random reads (fio, 4 jobs, 10 s), then ${SEQ_MIB} MiB sequential`);
      rows.push(await measure(fill, o));
    }
  } finally {
    await relay?.close();
    await ng?.stop().catch(() => {});
    removeScratchDirs();
  }
  const [plain, filling] = rows as [FillRow, FillRow];
  const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : "-");
  const change = (a: number, b: number) => `${a >= b ? "+" : "-"}${f(Math.abs(a / b - 1) * 100)}%`;
  console.log(`\n| +${RTT_MS} ms RTT | 4 KiB IOPS | p50 µs | p99 µs | sequential MB/s | fill MiB copied meanwhile |`);
  console.log("|---|---|---|---|---|---|");
  for (const r of rows) console.log(`| ${r.fill ? `fill at ${FILL_MBS} MB/s` : "no fill"} | ${f(r.randIops)} | ${f(r.randP50us)} | ${f(r.randP99us)} | ${f(r.seqMBs)} | ${r.fill ? f(r.fillMiBDuring ?? NaN) : "-"} |`);
  // Random reads also land on chunks the fill has already copied, which the mount then reads locally.
  console.log(`during the fill: 4 KiB p50 latency ${change(filling.randP50us, plain.randP50us)}, IOPS ${change(filling.randIops, plain.randIops)}, ` +
    `sequential MB/s ${change(filling.seqMBs, plain.seqMBs)}, sequential + fill ${f(filling.seqMBs + FILL_MBS)} MB/s ` +
    `(goal: demand reads no more than 20% slower)`);
  mkdirSync(join(import.meta.dir, "results"), { recursive: true });
  writeFileSync(join(import.meta.dir, "results", "fill.json"), JSON.stringify({ date: new Date().toISOString(), imageMiB: IMAGE_MIB, rttMs: RTT_MS, fillMBs: FILL_MBS, rows }, null, 2));
  console.log("wrote bench/results/fill.json");
}

if (import.meta.main) await main();
