// Profiling harness for the read path: one nginx on loopback, a random image, and either the range engine alone
// (`--mode engine`: the FUSE kernel's pattern of N concurrent sequential reads, in process) or the whole mount daemon in
// this process (`--mode fuse`: dd through a real FUSE mount). Prints MB/s, this process's CPU and RSS (now/peak) and
// nginx's CPU, so levers can be compared in one place. Run under `bun --cpu-prof-md` to see where the CPU goes.
// `--mode bin` runs the compiled daemon (as make bench does) and also prints its CPU per thread (main, fetch, writer...);
// with `--series`, its memory every 20 ms of the read. `--mode curl` measures the limit (curl over the same HTTPS).
//   node_modules/.bin/bun run bench/profile-read.ts --mode fuse --mib 512 [--cache-mb 32] [--rtt 2]
import { join } from "node:path";
import { mkdirSync, readFileSync, readdirSync } from "node:fs";
import { parseArgs } from "node:util";
import { scratchDir, removeScratchDirs } from "../test/helpers/tmp";
import { makeTestPki } from "../test/helpers/pki";
import { startNginx, type Nginx } from "../test/helpers/nginx";
import { freePort } from "../test/helpers/ports";
import { startDelayRelay, type DelayRelay } from "../test/helpers/relay";
import { RemoteImage } from "../src/source/image";
import { startMountDaemon } from "../src/mount/daemon";
import { createLogger } from "../src/util/log";
import { statusFieldMiB } from "../src/util/procmem";

const MiB = 1048576;
const { values: a } = parseArgs({ options: {
  mode: { type: "string", default: "fuse" }, mib: { type: "string", default: "512" }, "cache-mb": { type: "string", default: "32" },
  rtt: { type: "string", default: "0" }, series: { type: "boolean", default: false }, inflight: { type: "string", default: "16" }, "read-kb": { type: "string", default: "1024" },
} });
const IMAGE_MIB = Number(a.mib), RTT = Number(a.rtt), CACHE_MB = Number(a["cache-mb"]);

const procStatus = (pid: number | "self", field: string) => statusFieldMiB(readFileSync(`/proc/${pid}/status`, "utf8"), field);
/** CPU seconds per thread ("tid:name"): which of the daemon's threads (main, fetch, writer, JIT, GC) does the work. */
function threadCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
      out.set(`${tid}:${f.slice(f.indexOf("(") + 1, f.lastIndexOf(")"))}`, (Number(rest[11]) + Number(rest[12])) / 100);
    } catch { /* the thread ended meanwhile */ }
  }
  return out;
}
/** The process's resident memory (MiB) by kind of mapping: the executable, [heap], [stack], anonymous, other files. */
function smapsByMapping(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let name = "";
  try {
    for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
      const head = /^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \d+\s*(.*)$/.exec(line);
      if (head) { name = head[2].startsWith("/") ? (head[2].endsWith("/airroot") ? `executable ${head[1]}` : "other files") : head[2] || "anonymous"; continue; }
      const rss = /^Rss:\s+(\d+) kB/.exec(line);
      if (rss) out.set(name, (out.get(name) ?? 0) + Number(rss[1]) / 1024);
    }
  } catch { /* the daemon ended */ }
  return out;
}
/** /proc/PID/schedstat: [ns on CPU, ns runnable but waiting for a CPU, time slices]; zeros once the process is gone. */
function schedStat(pid: number): number[] {
  try { return readFileSync(`/proc/${pid}/schedstat`, "utf8").trim().split(" ").map(Number); } catch { return [0, 0, 0]; }
}
/** The machine's CPU time so far (jiffies): [busy, idle + iowait]. */
function machineCpu(): [number, number] {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + f[4];
  return [f.reduce((x, y) => x + y, 0) - idle, idle];
}
/** user+system CPU seconds of a process and its threads. */
function cpuSec(pid: number | "self"): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(rest[11]) + Number(rest[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}
const nginxWorkers = (ng: Nginx) =>
  Bun.spawnSync(["pgrep", "-P", String(ng.proc.pid)]).stdout.toString().trim().split("\n").filter(Boolean).map(Number);
const nginxCpu = (ng: Nginx) => nginxWorkers(ng).reduce((s, k) => s + cpuSec(k), 0);

/**
 * Each process's share of a transfer's time, from /proc/PID/schedstat: on a CPU, runnable but waiting for one, and
 * slices. `running` are there before and after; `child` ends with the transfer, so its last reading is polled.
 */
function schedShares(running: [string, number][], child: [string, number]): { end(): string } {
  const t0 = performance.now(), before = running.map(([, pid]) => schedStat(pid));
  let childLast = [0, 0, 0];
  const poll = setInterval(() => { const v = schedStat(child[1]); if (v[0]) childLast = v; }, 5);
  return {
    end() {
      clearInterval(poll);
      const wallNs = (performance.now() - t0) * 1e6;
      const share = (label: string, a: number[], b: number[]) => `${label} on CPU ${((b[0] - a[0]) / wallNs * 100).toFixed(0)}%, ` +
        `waiting for one ${((b[1] - a[1]) / wallNs * 100).toFixed(0)}%, ${b[2] - a[2]} slices`;
      return [share(child[0], [0, 0, 0], childLast), ...running.map(([label, pid], i) => share(label, before[i], schedStat(pid)))].join("; ");
    },
  };
}

async function main() {
  const dir = scratchDir("airroot-prof-");
  let ng: Nginx | undefined;
  let relay: DelayRelay | undefined;
  try {
    mkdirSync(join(dir, "www"));
    Bun.spawnSync(["dd", "if=/dev/urandom", `of=${join(dir, "www", "image.bin")}`, "bs=1M", `count=${IMAGE_MIB}`, "status=none"]);
    const pki = makeTestPki(join(dir, "pki"));
    const host = "127.0.0.2", port = await freePort(host);
    ng = await startNginx({ root: join(dir, "www"), listen: [{ host, port }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, "ng") });
    let url = ng.urlFor("image.bin");
    if (RTT > 0) {
      relay = await startDelayRelay({ listenHost: host, targetHost: host, targetPort: port, delayMs: RTT / 2 });
      url = `https://${host}:${relay.port}/image.bin`;
    }
    const ca = readFileSync(pki.caCert);
    const log = createLogger({ prefix: "prof", kmsg: false });
    const cpu0 = cpuSec("self"), ng0 = nginxCpu(ng), t0 = performance.now();
    const bytes = IMAGE_MIB * MiB;
    if (a.mode === "curl") {
      // The limit, as make bench measures it, with the machine's CPU use beside it.
      const m0 = machineCpu();
      const c = Bun.spawn(["curl", "-sS", "-o", "/dev/null", "--cacert", pki.caCert, "-w", "%{size_download} %{time_total}", url], { stdout: "pipe" });
      const sched = schedShares(nginxWorkers(ng).map((pid) => ["nginx", pid]), ["curl", c.pid]);
      const [out] = await Promise.all([new Response(c.stdout).text(), c.exited]);
      console.log(`scheduler, share of the download's time: ${sched.end()}`);
      const m1 = machineCpu(), busy = m1[0] - m0[0], idle = m1[1] - m0[1];
      const [n, secs] = out.trim().split(" ").map(Number);
      console.log(`mode curl rtt ${RTT} ms: ${(n / MiB / secs).toFixed(0)} MB/s; nginx ${(nginxCpu(ng) - ng0).toFixed(2)} s; ` +
        `the machine's CPUs ${(100 * busy / (busy + idle)).toFixed(0)}% busy`);
    } else if (a.mode === "engine") {
      const img = await RemoteImage.open([url], { ca, cacheMb: CACHE_MB, log });
      const readLen = Number(a["read-kb"]) * 1024, inflight = Number(a.inflight);
      let next = 0;
      const worker = async () => {
        while (next < bytes) { const off = next; next += readLen; const b = await img.read(off, readLen); if (b.length !== Math.min(readLen, bytes - off)) throw new Error("short"); }
      };
      await Promise.all(Array.from({ length: inflight }, worker));
      report(bytes, t0, cpu0, ng0, ng);
      detail(img);
      await img.close();
    } else if (a.mode === "bin") {
      // The compiled daemon (dist/airroot or $AIRROOT_BIN), as `make bench` runs it; RSS is the daemon's.
      const bin = process.env.AIRROOT_BIN ?? join(import.meta.dir, "..", "dist", "airroot");
      const mnt = join(dir, "mnt");
      mkdirSync(mnt);
      // Asynchronous spawns only: the delaying relay runs in this process.
      const m = await run([bin, "mount", "--ca", pki.caCert, "--cache-mb", String(CACHE_MB), url, mnt]);
      if (m.code !== 0) throw new Error(`mount failed: ${m.err}`);
      try {
        const pid = JSON.parse((await run([bin, "status", "--json", mnt])).out).pid;
        const idle = procStatus(pid, "VmRSS"), idleAnon = procStatus(pid, "RssAnon"), c0 = cpuSec(pid), n0 = nginxCpu(ng), t1 = performance.now();
        const threads0 = threadCpu(pid), machine0 = machineCpu();
        const idleMap = smapsByMapping(pid);
        const p = Bun.spawn(["dd", `if=${join(mnt, "image.bin")}`, "of=/dev/null", "bs=1M", "status=none"], { stdout: "ignore", stderr: "inherit", timeout: 300_000 });
        // Where the RSS is at its largest during the read: sampled every 200 ms, the sample with the most VmRSS kept.
        let peakMap = idleMap, peakSum = 0;
        const sampler = setInterval(() => {
          const m = smapsByMapping(pid), sum = [...m.values()].reduce((x, y) => x + y, 0);
          if (sum > peakSum) { peakSum = sum; peakMap = m; }
        }, 200);
        // --series: the daemon's memory every 20 ms (where in the read the peak comes: file = code and data pages).
        const series = a.series ? setInterval(() => console.log(`  t ${((performance.now() - t1) / 1000).toFixed(2)} s: ` +
          ["VmRSS", "RssFile", "RssAnon", "VmHWM"].map((f) => `${f} ${procStatus(pid, f).toFixed(1)}`).join(" ")), 20) : undefined;
        // The three processes that share the machine's cores during the read.
        const sched = schedShares([["daemon main thread", pid], ...nginxWorkers(ng).map((w): [string, number] => ["nginx", w])], ["dd", p.pid]);
        await p.exited;
        console.log(`scheduler, share of the read's time: ${sched.end()}`);
        clearInterval(sampler);
        clearInterval(series);
        const s = (performance.now() - t1) / 1000;
        const after = procStatus(pid, "VmRSS"), afterAnon = procStatus(pid, "RssAnon"), cpu = cpuSec(pid) - c0;
        const machine1 = machineCpu(), busy = machine1[0] - machine0[0], idleJ = machine1[1] - machine0[1];
        const perThread = [...threadCpu(pid)].map(([k, v]) => [k, v - (threads0.get(k) ?? 0)] as const).filter(([, v]) => v >= 0.01);
        await Bun.sleep(1500);
        // RssAnon is the daemon's private memory; VmRSS adds the executable's pages in use (~20-35 MiB, src/sys/codepages.ts).
        console.log(`mode bin rtt ${RTT} ms cache ${CACHE_MB} MiB: ${(bytes / MiB / s).toFixed(0)} MB/s; cpu daemon ${cpu.toFixed(2)} s ` +
          `(${(cpu / (bytes / 1024 / MiB)).toFixed(2)} s/GiB), nginx ${(nginxCpu(ng) - n0).toFixed(2)} s over ${s.toFixed(2)} s; ` +
          `daemon RSS idle ${idle.toFixed(0)} MiB, after ${after.toFixed(0)}, 1.5 s later ${procStatus(pid, "VmRSS").toFixed(0)} ` +
          `(peak ${procStatus(pid, "VmHWM").toFixed(0)}); RssAnon idle ${idleAnon.toFixed(0)}, after ${afterAnon.toFixed(0)}, ` +
          `1.5 s later ${procStatus(pid, "RssAnon").toFixed(0)}; the machine's CPUs ${(100 * busy / (busy + idleJ)).toFixed(0)}% busy`);
        const names = [...new Set([...idleMap.keys(), ...peakMap.keys()])].sort((x, y) => (peakMap.get(y) ?? 0) - (peakMap.get(x) ?? 0));
        console.log(`daemon RSS by mapping, idle -> largest sample during the read (MiB): ` +
          names.map((n) => `${n} ${(idleMap.get(n) ?? 0).toFixed(1)} -> ${(peakMap.get(n) ?? 0).toFixed(1)}`).join("; "));
        console.log(`daemon threads (CPU s): ${perThread.map(([k, v]) => `${k}=${v.toFixed(2)}`).join(" ")}`);
      } finally {
        await run([bin, "umount", mnt]);
      }
    } else {
      const mnt = join(dir, "mnt");
      mkdirSync(mnt);
      const d = await startMountDaemon({ urls: [url], mountpoint: mnt, caFile: pki.caCert, order: "listed", cacheMb: CACHE_MB,
        stallTimeoutMs: 10_000, foreground: true, verbose: false }, log);
      try {
        const t1 = performance.now();
        const p = Bun.spawn(["dd", `if=${join(mnt, "image.bin")}`, "of=/dev/null", "bs=1M", "status=none"], { stdout: "ignore", stderr: "inherit", timeout: 300_000 });
        await p.exited;
        report(bytes, t1, cpu0, ng0, ng);
        detail(d.image);
      } finally {
        await d.stop("profile done");
      }
    }
  } finally {
    await relay?.close();
    await ng?.stop().catch(() => {});
    removeScratchDirs();
  }
}

/** Where the memory is: JS heap vs ArrayBuffers, and the engine's block pool. */
function detail(img: RemoteImage) {
  const m = process.memoryUsage(), M = (n: number) => (n / MiB).toFixed(0);
  const pool = (img as unknown as { pool?: { stats(): unknown } }).pool?.stats();
  console.log(`heap ${M(m.heapUsed)}/${M(m.heapTotal)} MiB, external ${M(m.external)} MiB, arrayBuffers ${M(m.arrayBuffers)} MiB; ` +
    `pool ${JSON.stringify(pool)}; fetches ${img.status().fetches}`);
}

async function run(cmd: string[]): Promise<{ out: string; err: string; code: number }> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", timeout: 60_000 });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { out, err, code: code ?? -1 };
}

function report(bytes: number, t0: number, cpu0: number, ng0: number, ng: Nginx) {
  const s = (performance.now() - t0) / 1000;
  console.log(`mode ${a.mode} rtt ${RTT} ms cache ${CACHE_MB} MiB: ${(bytes / MiB / s).toFixed(0)} MB/s; ` +
    `cpu self ${(cpuSec("self") - cpu0).toFixed(2)} s, nginx ${(nginxCpu(ng) - ng0).toFixed(2)} s over ${s.toFixed(2)} s; ` +
    `RSS ${procStatus("self", "VmRSS").toFixed(0)} MiB (peak ${procStatus("self", "VmHWM").toFixed(0)})`);
}

await main();
