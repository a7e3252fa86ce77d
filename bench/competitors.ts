// `make bench`, the HTTP filesystems a site could install instead of airroot (issue 17 §3): httpdirfs and httpfs2,
// both Debian packages, both FUSE over HTTP range requests. Called by bench/run.ts for each RTT row: the same image from
// the same nginx through the same delaying relay, a fresh (cold) mount for each measurement, the same sequential `dd`
// and the same fio 4 KiB random job as airroot's. A tool that is missing, fails or hangs gives a row with its error
// instead of stopping the benchmark; every step is bounded in time and every mount is taken down afterwards.
//
// Transport: httpdirfs speaks HTTPS through libcurl and is given the test CA (--cacert), like airroot. Debian's
// httpfs2 0.1.4 is built without TLS (its binary links no TLS library and rejects https:// URLs), so it reads the same
// file from a plain-HTTP server {} of the same nginx, through a relay with the same delay; its rows say so, and its
// limit is curl over that same plain HTTP. httpfs2 refuses a 206 reply without "Accept-Ranges: bytes" (nginx sends
// that header only with 200), so the plain server adds it; httpdirfs 1.2.5's own range probe fails against nginx the
// same way, hence --no-range-check (the reads themselves are ordinary range requests, checked by cmp during
// development).
//
// httpdirfs runs twice: as installed (no disk cache: each FUSE read is one range request of its size) and with
// --cache in a fresh directory of the run (8 MiB segments fetched whole and written to that directory; on a diskless
// node that directory would be RAM).
import { join } from "node:path";
import { mkdirSync, readFileSync, existsSync, rmSync } from "node:fs";

const MiB = 1048576;

export interface CompetitorResult {
  tool: Tool;
  transport: "https" | "http";
  seqBytes: number;
  seqMBs: number;
  /** Set when the sequential read hit its time bound: MB/s is then over the bytes read so far. */
  seqNote?: string;
  randIops: number;
  randP50us: number;
  randP99us: number;
  /** CPU seconds per GiB of the FUSE process during the sequential read. */
  fuseCpuPerGiB: number;
  /** Why a measurement is missing (tool not installed, mount failed, read failed or hung). */
  error?: string;
}

export interface CompetitorOptions {
  dir: string;         // scratch directory of the run
  rttMs: number;
  httpsUrl: string;    // the image through the row's HTTPS relay (or nginx itself at 0 ms)
  httpUrl: string;     // the image through the row's plain-HTTP relay (or nginx's plain listener at 0 ms)
  caCert: string;
  seqBytes: number;    // what airroot reads sequentially in this row
  randRuntimeS: number;
}

/** The random-read job, shared with airroot's rows so both run exactly the same fio. */
export function fioRandCmd(file: string, runtimeS: number): string[] {
  return ["fio", "--name=rand", `--filename=${file}`, "--rw=randread", "--bs=4k",
    "--ioengine=psync", "--numjobs=4", "--group_reporting", "--time_based", `--runtime=${runtimeS}`,
    "--readonly", "--invalidate=0", "--output-format=json"];
}
export function parseFioRand(out: string): { iops: number; p50us: number; p99us: number } {
  const job = JSON.parse(out.slice(out.indexOf("{"))).jobs[0].read;
  const pct = job.clat_ns?.percentile ?? {};
  return { iops: job.iops, p50us: (pct["50.000000"] ?? NaN) / 1000, p99us: (pct["99.000000"] ?? NaN) / 1000 };
}

/** Bounds: a competitor's sequential read stops after SEQ_LIMIT_S (partial MB/s is kept), anything else fails. */
const SEQ_LIMIT_S = 20;
const MOUNT_LIMIT_MS = 20_000;

// Asynchronous (the delaying relays run in this process); SIGKILL on timeout, the one signal that interrupts a
// process waiting on a FUSE request that never completes.
async function run(cmd: string[], timeoutMs: number): Promise<{ out: string; err: string; code: number; ms: number }> {
  const t0 = performance.now();
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", timeout: timeoutMs, killSignal: "SIGKILL" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { out, err, code: code ?? -1, ms: performance.now() - t0 };
}
const short = (s: string) => s.trim().split("\n").slice(-3).join(" / ").slice(0, 300);

function procCpuS(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(rest[11]) + Number(rest[12])) / 100;
}
const isMounted = (mnt: string) =>
  readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) => l.split(" ")[4] === mnt);
function which(tool: string): string | undefined {
  for (const d of (process.env.PATH ?? "/usr/bin:/bin").split(":").concat(["/usr/bin", "/usr/sbin"])) {
    if (existsSync(join(d, tool))) return join(d, tool);
  }
  return undefined;
}

export type Tool = "httpdirfs" | "httpdirfs --cache" | "httpfs2";
const TOOLS: Tool[] = ["httpdirfs", "httpdirfs --cache", "httpfs2"];
const binaryOf = (t: Tool) => t.split(" ")[0];
const slug = (t: Tool) => t.replace(/[^a-z0-9]+/g, "-");

interface Mounted { mnt: string; file: string; pid: number; stop(): Promise<void>; said(): string }

/** Starts the tool in the foreground on a fresh mount point and waits (bounded) until the mount is there. */
async function mountTool(tool: Tool, o: CompetitorOptions, tag: string): Promise<Mounted> {
  const mnt = join(o.dir, `mnt-${o.rttMs}-${slug(tool)}-${tag}`);
  mkdirSync(mnt);
  const log = join(o.dir, `${slug(tool)}-${o.rttMs}-${tag}.log`);
  // httpdirfs 1.2.5 ignores options given after --single-file-mode (a --cacert there leaves libcurl on the system
  // bundle): it comes last, before the URL. The cache directory is fresh for every mount (cold).
  const cacheDir = join(o.dir, `hdcache-${o.rttMs}-${tag}`);
  const cmd = tool === "httpfs2" ? ["httpfs2", "-f", o.httpUrl, mnt]
    : ["httpdirfs", "-f", "--cacert", o.caCert, "--no-range-check",
      ...(tool === "httpdirfs --cache" ? ["--cache", "--cache-location", cacheDir] : []),
      "--single-file-mode", o.httpsUrl, mnt];
  if (tool === "httpdirfs --cache") mkdirSync(cacheDir); // httpdirfs aborts on a cache location that does not exist
  const proc = Bun.spawn(cmd, { stdout: Bun.file(log), stderr: Bun.file(`${log}.err`), env: { ...process.env, XDG_CACHE_HOME: join(o.dir, "xdg-cache") } });
  const stop = async () => {
    if (isMounted(mnt)) await run(["fusermount", "-u", mnt], 10_000);
    const exited = await Promise.race([proc.exited.then(() => true), Bun.sleep(5000).then(() => false)]);
    if (!exited) { proc.kill("SIGKILL"); await Promise.race([proc.exited, Bun.sleep(5000)]); }
    if (isMounted(mnt)) await run(["umount", "-l", mnt], 10_000);
    rmSync(cacheDir, { recursive: true, force: true }); // up to the whole image per mount with --cache
  };
  // What the tool wrote, last lines (its start-up listing and per-open lines left out).
  const said = () => short([log, `${log}.err`].map((f) => (existsSync(f) ? readFileSync(f, "utf8") : "")).join("\n")
    .split("\n").filter((l) => !/^(LinkTable_print|fs_open|fs_release|file name|host name|port number|protocol|request path|auth data|file size):/.test(l)).join("\n"));
  const deadline = performance.now() + MOUNT_LIMIT_MS;
  while (!isMounted(mnt)) {
    if (proc.exitCode !== null || performance.now() > deadline) {
      await stop();
      throw new Error(`${tool} mount ${proc.exitCode !== null ? `exited (${proc.exitCode})` : `not there after ${MOUNT_LIMIT_MS / 1000} s`}: ${said() || "no message"}`);
    }
    await Bun.sleep(100);
  }
  // Both present the file under its name from the URL.
  const file = join(mnt, "image.bin");
  const st = await run(["stat", "-c", "%s", file], 30_000);
  if (st.code !== 0) { await stop(); throw new Error(`${tool}: stat of the mounted file failed: ${short(st.err)}`); }
  return { mnt, file, pid: proc.pid, stop, said };
}

async function measureTool(tool: Tool, o: CompetitorOptions): Promise<CompetitorResult> {
  const r: CompetitorResult = { tool, transport: tool === "httpfs2" ? "http" : "https", seqBytes: o.seqBytes,
    seqMBs: NaN, randIops: NaN, randP50us: NaN, randP99us: NaN, fuseCpuPerGiB: NaN };
  const errors: string[] = [];
  if (!which(binaryOf(tool))) return { ...r, error: `${binaryOf(tool)} not installed (scripts/deps.sh installs it)` };
  // Sequential: the same dd as airroot's, stopped by SIGINT after SEQ_LIMIT_S (dd then prints what it copied so far).
  try {
    const m = await mountTool(tool, o, "seq");
    try {
      const c0 = procCpuS(m.pid);
      const dd = await run(["timeout", "-s", "INT", "-k", "20", String(SEQ_LIMIT_S), "dd", `if=${m.file}`, "of=/dev/null", "bs=1M",
        `count=${o.seqBytes / MiB}`], (SEQ_LIMIT_S + 40) * 1000);
      const cpu = procCpuS(m.pid) - c0;
      // GNU dd: "268435456 bytes (268 MB, 256 MiB) copied, 2.1 s, 128 MB/s"
      const got = /(\d+) bytes .*copied, ([\d.,]+) s/.exec(dd.err);
      if (!got) throw new Error(`dd through the ${tool} mount failed (exit ${dd.code}): ${short(dd.err)}; ${tool} said: ${m.said() || "nothing"}`);
      const bytes = Number(got[1]), secs = Number(got[2].replace(",", "."));
      if (bytes === 0) throw new Error(`dd through the ${tool} mount read nothing (exit ${dd.code}): ${short(dd.err)}; ${tool} said: ${m.said() || "nothing"}`);
      r.seqBytes = bytes;
      r.seqMBs = bytes / MiB / secs;
      r.fuseCpuPerGiB = cpu / (bytes / 1024 / MiB);
      if (bytes < o.seqBytes) r.seqNote = `stopped after ${SEQ_LIMIT_S} s: ${(bytes / MiB).toFixed(0)} of ${o.seqBytes / MiB} MiB`;
      else if (dd.code !== 0) throw new Error(`dd through the ${tool} mount: exit ${dd.code}: ${short(dd.err)}; ${tool} said: ${m.said() || "nothing"}`);
    } finally {
      await m.stop();
    }
  } catch (e) {
    errors.push(`sequential: ${(e as Error).message}`);
  }
  // Random: a failed attempt is tried once more on a fresh mount (httpdirfs --cache now and then fails an open under
  // the 4 concurrent jobs); the first failure stays in the row either way.
  for (let attempt = 1; attempt <= 2 && !Number.isFinite(r.randIops); attempt++) {
    try {
      const m = await mountTool(tool, o, `rand${attempt}`);
      try {
        const fio = await run(fioRandCmd(m.file, o.randRuntimeS), (o.randRuntimeS + 60) * 1000);
        if (fio.code !== 0) {
          let jobErr = "";
          try { jobErr = `job error ${JSON.parse(fio.out.slice(fio.out.indexOf("{"))).jobs[0].error}`; } catch { /* no JSON */ }
          const said = (fio.err + "\n" + fio.out.slice(0, Math.max(0, fio.out.indexOf("{")))).trim();
          throw new Error(`fio through the ${tool} mount failed (exit ${fio.code}${jobErr ? `, ${jobErr}` : ""}): ${short(said) || "no message"}; ${tool} said: ${m.said() || "nothing"}`);
        }
        const f = parseFioRand(fio.out);
        Object.assign(r, { randIops: f.iops, randP50us: f.p50us, randP99us: f.p99us });
      } finally {
        await m.stop();
      }
    } catch (e) {
      errors.push(`random (attempt ${attempt}): ${(e as Error).message}`);
    }
  }
  if (errors.length) r.error = errors.join("; ");
  return r;
}

/** The limit of the plain-HTTP path (httpfs2's): curl over the same plain listener and relay, same bytes. */
export async function curlHttpMBs(url: string, bytes: number): Promise<number> {
  const c = await run(["curl", "-sS", "-o", "/dev/null", "-r", `0-${bytes - 1}`, "-w", "%{size_download} %{time_total}", url], 120_000);
  if (c.code !== 0) return NaN;
  const [b, s] = c.out.trim().split(" ").map(Number);
  return b / MiB / s;
}

export async function benchCompetitors(o: CompetitorOptions): Promise<CompetitorResult[]> {
  const out: CompetitorResult[] = [];
  for (const tool of TOOLS) {
    console.log(`bench: RTT +${o.rttMs} ms: ${tool} (cold sequential read, then 4 KiB random reads)`);
    const r = await measureTool(tool, o);
    if (r.error) console.log(`bench: RTT +${o.rttMs} ms: ${tool}: ${r.error}`);
    out.push(r);
  }
  return out;
}
