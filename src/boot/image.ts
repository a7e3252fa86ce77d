// Where the root image comes from: a local file, the on-demand HTTPS mount (`airroot mount` daemon), or a full copy in RAM.
import { closeSync, existsSync, mkdirSync, openSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { startDetachedDaemon } from "../mount/background";
import { parseImageUrl } from "../source/url";
import { httpsGet } from "../client/http";
import type { SourceOrder } from "../source/order";

export interface ImageSource {
  /** https URLs of the same image on several servers, in preference order. */
  urls: string[];
  /** PEM file of the CA that must have signed the servers' certificates. */
  caFile: string;
  /** Signed manifest URL and the image-signing public key (PEM file), verified chunk by chunk by the mount engine. */
  manifestUrl?: string;
  imageKeyFile?: string;
  /** The digest the server told this node to boot: the mount engine refuses a manifest for any other image. */
  expectDigest?: string;
  /** Source order for the mount engine (default listed: urls as given); "spread" hashes nodeId with the weights. */
  order?: SourceOrder;
  nodeId?: string;
  /** One per URL of `urls` (same order), for "spread". */
  weights?: number[];
  /** airroot.untether: the local copy (a file in RAM or a block device) the daemon fills, then switches the loop to. */
  fillPath?: string;
  /** airroot.untetherrate: the fill's cap in MB/s (none: no cap). */
  fillRateMBps?: number;
}

/** The `airroot mount` arguments for the root image (without the mount point). */
export function rootMountArgs(src: ImageSource): string[] {
  const args = ["--ca", src.caFile, "--argv0", ROOT_DAEMON_ARGV0];
  if (src.order && src.order !== "listed") args.push("--order", src.order);
  if (src.order === "spread" && src.nodeId) args.push("--node-id", src.nodeId);
  if (src.order === "spread" && src.weights?.length === src.urls.length && src.weights.some((w) => w !== 1)) {
    src.urls.forEach((u, i) => args.push("--weight", `${u}=${src.weights![i]}`));
  }
  if (src.manifestUrl && src.imageKeyFile) args.push("--manifest", src.manifestUrl, "--image-key", src.imageKeyFile);
  if (src.manifestUrl && src.expectDigest) args.push("--expect-digest", src.expectDigest);
  // auto: the loop device init attaches after the mount (and any later one on the same file) is switched.
  if (src.fillPath && src.manifestUrl) {
    args.push("--fill", src.fillPath, "--untether-loop", "auto");
    if (src.fillRateMBps !== undefined) args.push("--fill-rate", String(src.fillRateMBps));
  }
  return [...args, ...src.urls];
}

/** Name of the mount engine process: '@' makes systemd spare it at switch-root and shutdown (it serves /). */
export const ROOT_DAEMON_ARGV0 = "@airroot-root";

/**
 * Starts the mount engine as a detached daemon exposing the image at `mountpoint/<file name>` and returns that path.
 * The daemon lives in the initramfs environment for the whole uptime; it is made unattractive to the OOM killer,
 * because if it dies every read of / fails.
 */
export async function mountImageOnDemand(src: ImageSource, mountpoint = "/mnt/image", log?: (line: string) => void): Promise<{ path: string; pid: number }> {
  checkSource(src);
  mkdirSync(mountpoint, { recursive: true });
  const pid = await withStderrLines(log, () => startDetachedDaemon([...rootMountArgs(src), mountpoint], mountpoint, ROOT_DAEMON_ARGV0));
  try { writeFileSync(`/proc/${pid}/oom_score_adj`, "-1000"); } catch {}
  // The engine names the file after the first URL's (decoded) file name; the URL may carry an IPv6 zone.
  const path = join(mountpoint, parseImageUrl(src.urls[0]).name);
  if (!existsSync(path)) throw new Error(`the mount engine is ready but ${path} does not exist`);
  return { path, pid };
}

/**
 * Routes what `fn` writes to process.stderr (the mount engine echoes its start-up log there) into `log` line by line,
 * so it does not break the boot's one-line-per-step console.
 */
async function withStderrLines<T>(log: ((line: string) => void) | undefined, fn: () => Promise<T>): Promise<T> {
  if (!log) return await fn();
  const orig = process.stderr.write;
  let buf = "";
  process.stderr.write = ((chunk: string | Uint8Array) => {
    buf += typeof chunk === "string" ? chunk : new TextDecoder().decode(chunk);
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) { log(buf.slice(0, i)); buf = buf.slice(i + 1); }
    return true;
  }) as typeof process.stderr.write;
  try {
    return await fn();
  } finally {
    process.stderr.write = orig;
    if (buf) log(buf);
  }
}

/**
 * The root image's local files (a copied image, the verified manifest and image key the mount daemons read), in the
 * initramfs's own RAM: not under /run, which moves into the booted system at switch_root.
 */
export const ROOT_STATE_DIR = "/var/lib/airroot";

function checkSource(src: ImageSource): void {
  if (src.urls.length === 0) throw new Error("no image URL");
  const names = new Set(src.urls.map((u) => parseImageUrl(u).name));
  if (names.size !== 1) throw new Error(`the image URLs name different files (${[...names].join(", ")}); they must be mirrors of one image`);
  if (!existsSync(src.caFile)) throw new Error(`site CA ${src.caFile} is missing: build the initramfs with --site from \`airroot serve\``);
}

export interface CopyOptions {
  /** Where to keep the copy; default ROOT_STATE_DIR (initramfs RAM, hidden from the booted system). */
  dir?: string;
  progress?: (line: string) => void;
  /** Per-server limit for the whole download; default 30 minutes. */
  timeoutMs?: number;
  /** Checks the finished file (e.g. against the signed manifest); a failure moves on to the next server. */
  verify?: (path: string) => Promise<void>;
  /** The image's size when known (the signed manifest): a longer body is cut, not written on into RAM. */
  maxBytes?: number;
}

/**
 * imagemethod=copy: downloads the whole image into RAM first (like xCAT stateless), trying each server in turn,
 * with a progress line every 10%. Returns the local path.
 * With `verify`, a copy that does not match (the signed manifest) counts as that server's failure.
 */
export async function copyImage(src: ImageSource, o: CopyOptions = {}): Promise<{ path: string; bytes: number; url: string }> {
  checkSource(src);
  const dir = o.dir ?? ROOT_STATE_DIR;
  mkdirSync(dir, { recursive: true });
  const path = join(dir, parseImageUrl(src.urls[0]).name);
  const ca = await Bun.file(src.caFile).text();
  const errors: string[] = [];
  for (const url of src.urls) {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), o.timeoutMs ?? 30 * 60_000);
    let fd = -1;
    let res: Awaited<ReturnType<typeof httpsGet>> | undefined;
    try {
      // No redirects: the image comes only from the URLs the config names (never plain http, never another host).
      res = await httpsGet(url, ca, ac.signal);
      if (res.status >= 300 && res.status < 400) throw new Error(`HTTP ${res.status} redirect to ${(res.header("location") ?? "").slice(0, 200)} refused`);
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      const total = Number(res.header("content-length") ?? "0");
      fd = openSync(path, "w", 0o600);
      let got = 0, nextReport = 10;
      for await (const chunk of res.body) {
        got += chunk.length;
        if (o.maxBytes !== undefined && got > o.maxBytes) throw new Error(`more than the ${o.maxBytes} bytes the image has`);
        if (total > 0 && got > total) throw new Error(`more than the ${total} bytes announced`);
        writeSync(fd, chunk);
        if (total > 0 && (got * 100) / total >= nextReport) {
          o.progress?.(`Downloading ${url}: ${Math.floor((got * 100) / total)}% (${(got / 1048576).toFixed(1)} of ${(total / 1048576).toFixed(1)} MiB)`);
          nextReport = Math.floor((got * 100) / total / 10) * 10 + 10;
        }
      }
      if (total > 0 && got !== total) throw new Error(`got ${got} of ${total} bytes`);
      closeSync(fd);
      fd = -1;
      if (o.verify) await o.verify(path);
      return { path, bytes: got, url };
    } catch (e) {
      errors.push(`${url}: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
      if (fd >= 0) closeSync(fd);
      await res?.close();
    }
  }
  throw new Error(`could not download the image from any server: ${errors.join("; ")}`);
}
