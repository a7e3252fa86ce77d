// `make bench`: airroot's read path against the limit measured in the same run on the same machine
// (curl downloading the same file over the same HTTPS), and next to the HTTP filesystems a site could install instead
// (httpdirfs, httpfs2: bench/competitors.ts) on the same rows. Loopback only; every phase is bounded in size and time.
// Prints a table and writes bench/results/latest.json.
import { join } from "node:path";
import { mkdirSync, writeFileSync, readFileSync, existsSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../test/helpers/tmp";
import { makeTestPki } from "../test/helpers/pki";
import { startNginx, type Nginx } from "../test/helpers/nginx";
import { freePort, waitForPort } from "../test/helpers/ports";
import { startDelayRelay, type DelayRelay } from "../test/helpers/relay";
import { benchVerify } from "../src/image/verify";
import { statusFieldMiB } from "../src/util/procmem";
import { benchCompetitors, curlHttpMBs, fioRandCmd, parseFioRand, type CompetitorResult } from "./competitors";

const MiB = 1048576;
const IMAGE_MIB = Number(process.env.BENCH_IMAGE_MIB ?? 1024);
// BENCH_RTTS=2,20 runs only those rows (quick tuning runs); `make bench` runs all three.
const RTTS_MS = (process.env.BENCH_RTTS ?? "0,2,20").split(",").map(Number);
const airroot = process.env.AIRROOT_BENCH_AIRROOT ?? join(import.meta.dir, "..", "dist", "airroot");
// The other HTTP filesystems (httpdirfs, httpfs2) on the same rows (bench/competitors.ts); BENCH_SKIP_COMPETITORS=1
// leaves them out.
const COMPETITORS = process.env.BENCH_SKIP_COMPETITORS !== "1";

interface Row { rttMs: number; curlMBs: number; seqMBs: number; seqRatio: number; seqBytes: number;
  randIops: number; randP50us: number; randP99us: number; daemonIdleRssMiB: number; daemonRssMiB: number;
  daemonPeakRssMiB: number; daemonAnonMiB: number; // RssAnon: private memory; VmRSS also counts the executable's pages in use (src/sys/codepages.ts)
  cpu: CpuPerGiB;
  /** curl over the plain-HTTP server of the same nginx (the limit of httpfs2, which has no TLS). */
  curlHttpMBs?: number; competitors?: CompetitorResult[] }
/**
 * CPU seconds per GiB moved, per process, for the two sequential transfers of a row: where the limit comes from when
 * both share the machine's cores (this process's own share is the delaying relay at 2/20 ms).
 */
interface CpuPerGiB { curl: number; nginxForCurl: number; relayForCurl: number;
  daemon: number; dd: number; nginxForAirroot: number; relayForAirroot: number }

// Always asynchronous: the delaying relays run in this process, so a blocking spawn would stall them.
async function run(cmd: string[], timeoutMs = 300_000): Promise<{ out: string; err: string; code: number; ms: number; cpuS: number }> {
  const t0 = performance.now();
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const cpuS = Number(p.resourceUsage()?.cpuTime.total ?? NaN) / 1e6;
  return { out, err, code: code ?? -1, ms: performance.now() - t0, cpuS };
}
/** user+system CPU seconds of a process so far (/proc/PID/stat, clock ticks of 1/100 s). */
function procCpuS(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(rest[11]) + Number(rest[12])) / 100;
}
/** CPU seconds so far of every nginx worker (the master only supervises). */
function nginxCpuS(servers: Nginx[]): number {
  let sum = 0;
  for (const s of servers) {
    const kids = readFileSync(`/proc/${s.proc.pid}/task/${s.proc.pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
    for (const k of kids) { try { sum += procCpuS(Number(k)); } catch { /* gone */ } }
  }
  return sum;
}
const selfCpuS = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
function must(r: Awaited<ReturnType<typeof run>>, what: string) {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${r.err.trim().slice(0, 500)}`);
  return r;
}

/** How much to read sequentially at a given RTT, so the whole benchmark stays within a few minutes. */
const REST_S = 65; // past the daemon's 60 s long-idle release (src/mount/daemon.ts)
const seqBytesFor = (rtt: number) => Math.min(IMAGE_MIB, rtt >= 20 ? 256 : IMAGE_MIB) * MiB;
const randRuntimeS = (rtt: number) => (rtt >= 20 ? 15 : 10);

async function daemonPid(mnt: string): Promise<number> {
  const r = must(await run([airroot, "status", "--json", mnt]), "airroot status");
  return JSON.parse(r.out).pid;
}
const rssMiB = (pid: number, field: "VmRSS" | "VmHWM" | "RssAnon") => statusFieldMiB(readFileSync(`/proc/${pid}/status`, "utf8"), field);

async function main() {
  if (!existsSync(airroot)) throw new Error("dist/airroot missing: run make first");
  const dir = scratchDir("airroot-bench-");
  const servers: Nginx[] = [];
  const relays: DelayRelay[] = [];
  const rows: Row[] = [];
  let serving: { nginxMBs: number; airrootMBs: number } | undefined;
  let atRest: { rttMs: number; seconds: number; vmRssMiB: number; rssAnonMiB: number } | undefined;
  try {
    console.log(`bench: making a ${IMAGE_MIB} MiB random image`);
    mkdirSync(join(dir, "www"));
    must(await run(["dd", "if=/dev/urandom", `of=${join(dir, "www", "image.bin")}`, "bs=1M", `count=${IMAGE_MIB}`, "status=none"]), "dd");
    const pki = makeTestPki(join(dir, "pki"));
    for (const host of ["127.0.0.2", "127.0.0.3"]) {
      const port = await freePort(host);
      // The first server also serves plain HTTP (httpfs2 has no TLS); httpfs2 wants "Accept-Ranges: bytes" in a 206.
      const plain = COMPETITORS && host === "127.0.0.2" ? { listen: [{ host, port: await freePort(host) }], extra: "add_header Accept-Ranges bytes;" } : undefined;
      servers.push(await startNginx({ root: join(dir, "www"), listen: [{ host, port }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, `ng-${host}`), plain }));
    }
    for (const rtt of RTTS_MS) {
      // Each RTT gets its own front door: a relay that delays each chunk by rtt/2 each way (no bandwidth cap).
      const urls: string[] = [];
      for (const s of servers) {
        const l = s.opts.listen[0];
        if (rtt === 0) { urls.push(s.urlFor("image.bin")); continue; }
        const relay = await startDelayRelay({ listenHost: l.host, targetHost: l.host, targetPort: l.port, delayMs: rtt / 2 });
        relays.push(relay);
        urls.push(`https://${l.host}:${relay.port}/image.bin`);
      }
      // The plain-HTTP door of the first server, through its own relay with the same delay.
      let httpUrl = "";
      const pl = servers[0].opts.plain?.listen[0];
      if (pl && rtt === 0) httpUrl = `http://${pl.host}:${pl.port}/image.bin`;
      else if (pl) {
        const relay = await startDelayRelay({ listenHost: pl.host, targetHost: pl.host, targetPort: pl.port, delayMs: rtt / 2 });
        relays.push(relay);
        httpUrl = `http://${pl.host}:${relay.port}/image.bin`;
      }
      const bytes = seqBytesFor(rtt);
      console.log(`bench: RTT +${rtt} ms: curl limit over ${bytes / MiB} MiB`);
      const ng0 = nginxCpuS(servers), self0 = selfCpuS();
      const curl = must(await run(["curl", "-sS", "-o", "/dev/null", "--cacert", pki.caCert, "-r", `0-${bytes - 1}`, "-w", "%{size_download} %{time_total}", urls[0]]), "curl");
      const [cBytes, cSecs] = curl.out.trim().split(" ").map(Number);
      const curlMBs = cBytes / MiB / cSecs;
      const gib = bytes / 1024 / MiB;
      const cpu: CpuPerGiB = { curl: curl.cpuS / gib, nginxForCurl: (nginxCpuS(servers) - ng0) / gib, relayForCurl: (selfCpuS() - self0) / gib,
        daemon: NaN, dd: NaN, nginxForAirroot: NaN, relayForAirroot: NaN };

      // Sequential and random each on a fresh mount: a new FUSE inode starts with an empty page cache (cold).
      const mount = async (tag: string) => {
        const mnt = join(dir, `mnt-${rtt}-${tag}`);
        mkdirSync(mnt);
        must(await run([airroot, "mount", "--ca", pki.caCert, ...urls, mnt]), "airroot mount");
        return mnt;
      };
      let mnt = await mount("seq");
      let seqMBs = NaN, daemonIdleRssMiB = NaN, daemonRssMiB = NaN, daemonPeakRssMiB = NaN, daemonAnonMiB = NaN;
      try {
        const pid = await daemonPid(mnt);
        daemonIdleRssMiB = rssMiB(pid, "VmRSS");
        console.log(`bench: RTT +${rtt} ms: cold sequential read through airroot mount`);
        const d0 = procCpuS(pid), n0 = nginxCpuS(servers), s0 = selfCpuS();
        const seq = must(await run(["dd", `if=${join(mnt, "image.bin")}`, "of=/dev/null", "bs=1M", `count=${bytes / MiB}`, "status=none"]), "dd through the mount");
        Object.assign(cpu, { daemon: (procCpuS(pid) - d0) / gib, dd: seq.cpuS / gib, nginxForAirroot: (nginxCpuS(servers) - n0) / gib,
          relayForAirroot: (selfCpuS() - s0) / gib });
        seqMBs = bytes / MiB / (seq.ms / 1000);
        daemonRssMiB = rssMiB(pid, "VmRSS");
        daemonPeakRssMiB = rssMiB(pid, "VmHWM");
        daemonAnonMiB = rssMiB(pid, "RssAnon");
        if (rtt === RTTS_MS[0]) {
          // At rest: the daemon gives memory back after 1 s without reads and its whole cache after 60 s.
          console.log(`bench: RTT +${rtt} ms: daemon memory at rest (${REST_S} s after the read)`);
          await Bun.sleep(REST_S * 1000);
          atRest = { rttMs: rtt, seconds: REST_S, vmRssMiB: rssMiB(pid, "VmRSS"), rssAnonMiB: rssMiB(pid, "RssAnon") };
        }
      } finally {
        await run([airroot, "umount", mnt]);
      }
      mnt = await mount("rand");
      try {
        console.log(`bench: RTT +${rtt} ms: cold 4 KiB random reads (fio, 4 jobs)`);
        const fio = must(await run(fioRandCmd(join(mnt, "image.bin"), randRuntimeS(rtt)), 120_000), "fio");
        const f = parseFioRand(fio.out);
        rows.push({ rttMs: rtt, curlMBs, seqMBs, seqRatio: seqMBs / curlMBs, seqBytes: bytes,
          randIops: f.iops, randP50us: f.p50us, randP99us: f.p99us,
          daemonIdleRssMiB, daemonRssMiB, daemonPeakRssMiB, daemonAnonMiB, cpu });
      } finally {
        await run([airroot, "umount", mnt]);
      }
      if (COMPETITORS) {
        const row = rows[rows.length - 1];
        row.curlHttpMBs = await curlHttpMBs(httpUrl, bytes);
        row.competitors = await benchCompetitors({ dir, rttMs: rtt, httpsUrl: urls[0], httpUrl, caCert: pki.caCert, seqBytes: bytes, randRuntimeS: randRuntimeS(rtt) });
      }
    }
    serving = await benchServing(dir, servers[0], pki.caCert);
  } finally {
    for (const r of relays) await r.close();
    for (const s of servers) await s.stop().catch(() => {});
    removeScratchDirs();
  }
  const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : "-");
  console.log("\n| added RTT | curl MB/s (limit) | airroot seq MB/s | ratio | 4k rand IOPS | p50 µs | p99 µs | daemon VmRSS MiB idle / after read (peak) | daemon RssAnon MiB after read |");
  console.log("|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) console.log(`| ${r.rttMs} ms | ${fmt(r.curlMBs)} | ${fmt(r.seqMBs)} | ${fmt(r.seqRatio * 100)}% | ${fmt(r.randIops)} | ${fmt(r.randP50us)} | ${fmt(r.randP99us)} | ${fmt(r.daemonIdleRssMiB, 1)} / ${fmt(r.daemonRssMiB, 1)} (${fmt(r.daemonPeakRssMiB, 1)}) | ${fmt(r.daemonAnonMiB, 1)} |`);
  console.log("\nCPU seconds per GiB, sequential (curl's side | airroot's side; relay = the delaying relay in this process):");
  console.log("| added RTT | curl | nginx | relay | sum | airroot daemon | dd | nginx | relay | sum |");
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) {
    const c = r.cpu, f = (n: number) => fmt(n, 2);
    console.log(`| ${r.rttMs} ms | ${f(c.curl)} | ${f(c.nginxForCurl)} | ${f(c.relayForCurl)} | ${f(c.curl + c.nginxForCurl + c.relayForCurl)} | ` +
      `${f(c.daemon)} | ${f(c.dd)} | ${f(c.nginxForAirroot)} | ${f(c.relayForAirroot)} | ${f(c.daemon + c.dd + c.nginxForAirroot + c.relayForAirroot)} |`);
  }
  if (rows.some((r) => r.competitors)) {
    console.log("\nNext to other HTTP filesystems (same image, same nginx, same relay and RTT; cold mounts; httpfs2 has no TLS: plain HTTP, against curl over plain HTTP):");
    console.log("| added RTT | filesystem | transport | seq MB/s | % of curl (same transport) | 4k rand IOPS | p50 µs | p99 µs | FUSE process CPU s/GiB (seq) |");
    console.log("|---|---|---|---|---|---|---|---|---|");
    for (const r of rows) {
      if (!r.competitors) continue;
      console.log(`| ${r.rttMs} ms | airroot | https | ${fmt(r.seqMBs)} | ${fmt(r.seqRatio * 100)}% | ${fmt(r.randIops)} | ${fmt(r.randP50us)} | ${fmt(r.randP99us)} | ${fmt(r.cpu.daemon, 2)} |`);
      for (const c of r.competitors) {
        const limit = c.transport === "http" ? r.curlHttpMBs ?? NaN : r.curlMBs;
        const pct = c.seqMBs / limit * 100;
        // A median below 20 µs is the page cache answering: the random reads had already covered the (small) file.
        const cached = c.randP50us < 20 ? " (page cache: the reads covered the file)" : "";
        console.log(`| ${r.rttMs} ms | ${c.tool} | ${c.transport} | ${fmt(c.seqMBs, c.seqMBs < 10 ? 1 : 0)}${c.seqNote ? ` (${c.seqNote})` : ""} | ${fmt(pct, pct < 10 ? 1 : 0)}% | ` +
          `${fmt(c.randIops)}${cached} | ${fmt(c.randP50us)} | ${fmt(c.randP99us)} | ${fmt(c.fuseCpuPerGiB, 2)} |${c.error ? ` ${Number.isFinite(c.seqMBs) && Number.isFinite(c.randIops) ? "measured after a failed attempt:" : "failed:"} ${c.error}` : ""}`);
      }
    }
    console.log(`curl over plain HTTP (httpfs2's limit): ${rows.map((r) => `${r.rttMs} ms ${fmt(r.curlHttpMBs ?? NaN)} MB/s`).join(", ")}`);
  }
  if (atRest) console.log(`\ndaemon at rest ${atRest.seconds} s after the ${atRest.rttMs} ms read: VmRSS ${fmt(atRest.vmRssMiB, 1)} MiB, RssAnon ${fmt(atRest.rssAnonMiB, 1)} MiB`);
  if (serving) console.log(`\nserving the same image to curl: airroot serve ${fmt(serving.airrootMBs)} MB/s, nginx ${fmt(serving.nginxMBs)} MB/s (ratio ${fmt(serving.airrootMBs / serving.nginxMBs * 100)}%)`);
  const verify = benchVerify();
  console.log(`\nmanifest verification (SHA-256 of 256 KiB chunks in the read path): ${verify.mbPerSecond.toFixed(0)} MB/s`);
  mkdirSync(join(import.meta.dir, "results"), { recursive: true });
  const out = { date: new Date().toISOString(), imageMiB: IMAGE_MIB, rows, atRest, verifyMBs: verify.mbPerSecond, serving,
    targets: { seqRatioNoRtt: 0.8, seqRatio2ms: 0.6, daemonRssMiB: 64 } };
  writeFileSync(join(import.meta.dir, "results", "latest.json"), JSON.stringify(out, null, 2));
  console.log(`\nwrote bench/results/latest.json`);
  // A running background fill against the node's own reads: its own entry point, bounded.
  // BENCH_SKIP_FILL=1 leaves it out (quick runs); `make bench` always runs it.
  if (process.env.BENCH_SKIP_FILL === "1") console.log("bench: fill benchmark skipped (BENCH_SKIP_FILL=1)");
  else if (await Bun.spawn([process.execPath, "run", join(import.meta.dir, "fill.ts")], { stdout: "inherit", stderr: "inherit", timeout: 600_000 }).exited !== 0) throw new Error("bench/fill.ts failed");
  // Boot benchmark (QEMU, on demand vs imagemethod=copy): its own entry point, bounded per boot.
  // BENCH_SKIP_BOOT=1 leaves it out (quick runs of the read path while tuning); `make bench` always runs it.
  if (process.env.BENCH_SKIP_BOOT === "1") { console.log("bench: boot benchmark skipped (BENCH_SKIP_BOOT=1)"); return; }
  if (await Bun.spawn([process.execPath, "run", join(import.meta.dir, "boot.ts")], { stdout: "inherit", stderr: "inherit", timeout: 900_000 }).exited !== 0) throw new Error("bench/boot.ts failed");
}

/** `airroot serve` against nginx, same file, same client (curl, best of two whole downloads each). */
async function benchServing(dir: string, nginx: Nginx, nginxCa: string): Promise<{ nginxMBs: number; airrootMBs: number }> {
  console.log("bench: serving throughput, airroot serve vs nginx");
  const state = join(dir, "serve-state");
  must(await run([airroot, "serve", "init", "--state", state, "--address", "127.0.0.4"]), "airroot serve init");
  const image = join(dir, "www", "image.bin");
  const digest = must(await run(["sha256sum", image]), "sha256sum").out.split(" ")[0];
  must(await run(["ln", image, join(state, "images", `${digest}.sfs`)]), "ln");
  const port = await freePort("127.0.0.4");
  const srv = Bun.spawn([airroot, "serve", "--state", state, "--listen", `127.0.0.4:${port}`, "--no-discovery"], { stdout: "ignore", stderr: "ignore" });
  try {
    await waitForPort("127.0.0.4", port, 20_000);
    const speed = async (url: string, ca: string) => {
      let best = 0;
      for (let i = 0; i < 2; i++) {
        const r = must(await run(["curl", "-sS", "-o", "/dev/null", "--cacert", ca, "-w", "%{speed_download}", url]), `curl ${url}`);
        best = Math.max(best, Number(r.out) / MiB);
      }
      return best;
    };
    const airrootMBs = await speed(`https://127.0.0.4:${port}/images/${digest}.sfs`, join(state, "keys", "site-ca.crt"));
    const nginxMBs = await speed(nginx.urlFor("image.bin"), nginxCa);
    return { nginxMBs, airrootMBs };
  } finally {
    srv.kill("SIGTERM");
    await srv.exited;
  }
}

await main();
