// `airroot status --prometheus`: a mount daemon's status as Prometheus text, for node_exporter's textfile collector
// (a mount daemon opens no TCP port, so it is read through its status socket by this one-shot command). The label
// values are the mount point and the source URLs the admin gave, escaped by the writer; one series per source.
import { TextWriter, type Labels, type MetricType, type Sample } from "../util/prometheus.ts";
import type { SourceState } from "../source/source.ts";
import type { HolderInfo } from "./holder";
import { fetchAllStatus, fetchStatus, type DaemonStatus } from "./status";
import { fetchHolderStatus } from "./takeover";

const STATES: readonly SourceState[] = ["healthy", "degraded", "down", "excluded", "probing"];
const MiB = 1048576;

/** One mount: its daemon's status, or (between a daemon's death and its restart) only its holder's. */
export interface MountSnapshot {
  mountpoint: string;
  status?: DaemonStatus;
  holder?: HolderInfo;
}

type Family = { name: string; type: MetricType; help: string; samples: Sample[] };

/** Prometheus text for these mounts; each metric once, with a sample per mount (and per source). */
export function formatMountMetrics(mounts: readonly MountSnapshot[]): string {
  const families = new Map<string, Family>();
  const add = (name: string, type: MetricType, help: string, labels: Labels, value: number | undefined) => {
    if (value === undefined || !Number.isFinite(value)) return; // a field an older daemon does not report
    const full = `airroot_mount_${name}`;
    let f = families.get(full);
    if (!f) families.set(full, (f = { name: full, type, help, samples: [] }));
    f.samples.push({ labels, value });
  };
  // Older daemons answer with fewer fields: read the optional ones without trusting the type.
  const num = (o: object | undefined, k: string): number | undefined => {
    const v = (o as Record<string, unknown> | undefined)?.[k];
    return typeof v === "number" ? v : undefined;
  };

  for (const m of mounts) {
    const mp = { mountpoint: m.mountpoint };
    const s = m.status;
    add("up", "gauge", "1 if the mount daemon answered on its status socket, 0 if only its holder did (a daemon is restarting; readers wait).", mp, s ? 1 : 0);
    const holder = s?.holder ?? m.holder;
    if (holder) {
      add("holder_daemon_restarts_total", "counter", "Daemons the holder restarted after one died.", mp, holder.restarts);
      add("holder_takeovers_total", "counter", "Live upgrades (airroot mount --takeover) of this mount.", mp, holder.takeovers);
    }
    if (!s) continue;
    const img = s.image;
    add("info", "gauge", "The mount's image and settings (value 1).", { ...mp, image: img.name, validator: img.validator, order: img.order, argv0: s.argv0 }, 1);
    add("daemon_start_time_seconds", "gauge", "When this mount daemon started (Unix time).", mp, Date.parse(s.startedAt) / 1000);
    add("image_size_bytes", "gauge", "Size of the remote image.", mp, img.size);
    add("fetched_bytes_total", "counter", "Image bytes accepted from the servers.", mp, img.bytesFetched);
    add("cache_hits_total", "counter", "Blocks served from the RAM block cache.", mp, img.cacheHits);
    add("cache_misses_total", "counter", "Blocks that needed a fetch.", mp, img.cacheMisses);
    add("cache_bytes", "gauge", "Bytes in the RAM block cache.", mp, num(img, "cacheBytes"));
    add("image_blocks_bytes", "gauge", "Every image block held (cached, being fetched, held by a read or spare).", mp, num(img, "blockBytes"));
    add("reads_total", "counter", "Reads answered.", mp, img.readsTotal);
    add("reads_in_flight", "gauge", "Reads being answered now.", mp, img.readsInFlight);
    add("coalesced_reads_total", "counter", "Blocks a read found already being fetched (it joined that fetch).", mp, num(img, "coalescedReads"));
    add("range_requests_total", "counter", "Range requests sent to the servers, failed ones included.", mp, num(img, "fetches"));
    add("readahead_bytes_total", "counter", "Bytes requested by readahead.", mp, num(img, "readaheadBytes"));
    add("fuse_requests_total", "counter", "FUSE requests from the kernel.", mp, num(s.fuse, "requests"));
    add("fuse_resent_requests_total", "counter", "Requests the kernel queued again after a daemon crash (FUSE_NOTIFY_RESEND) that were answered.", mp, num(s.fuse, "resentRequests"));
    if (s.memory) {
      add("memory_rss_bytes", "gauge", "The daemon's resident memory (VmRSS).", mp, s.memory.vmRssMiB * MiB);
      add("memory_private_bytes", "gauge", "The daemon's private resident memory (RssAnon).", mp, s.memory.rssAnonMiB * MiB);
    }
    if (s.fill) {
      const f = s.fill;
      add("fill_ratio", "gauge", "Share of the image in the --fill local copy, verified (0 to 1).", mp, f.size > 0 ? f.filledBytes / f.size : 1);
      add("fill_bytes", "gauge", "Verified bytes in the --fill local copy.", mp, f.filledBytes);
      add("fill_rate_bytes_per_second", "gauge", "Fill rate over the last 10 s.", mp, f.rateBytesPerSec);
      add("fill_paused", "gauge", "1 while the fill waits for a healthy image server.", mp, f.state === "paused" ? 1 : 0);
      add("untethered", "gauge", "1 once a loop device reads the local copy instead of this mount (no image server needed).", mp,
        (f.untether?.loops.length ?? 0) > 0 ? 1 : 0);
    }
    if (s.verified) add("verified_bad_chunks_total", "counter", "Chunks that failed the signed manifest's check (refetched elsewhere).", mp, s.verified.badChunks);
    for (const src of img.sources) {
      const sl = { ...mp, url: src.url };
      add("source_bytes_total", "counter", "Bytes received from each source.", sl, src.bytes);
      add("source_requests_total", "counter", "Successful range requests to each source.", sl, src.requests);
      add("source_errors_total", "counter", "Failed requests and probes of each source.", sl, src.errors);
      add("source_rtt_seconds", "gauge", "Smoothed probe round-trip time of each source.", sl, src.rttMs === undefined ? undefined : src.rttMs / 1000);
      add("source_rank", "gauge", "Each source's preference (0: most preferred).", sl, src.preferredRank);
      for (const state of STATES) {
        add("source_state", "gauge", `Each source's state: 1 for the one it is in (${STATES.join(", ")}).`, { ...sl, state }, src.state === state ? 1 : 0);
      }
    }
  }
  const w = new TextWriter();
  for (const f of families.values()) w.family(f.name, f.type, f.help, f.samples);
  return w.text();
}

/** Reads one mount (or every one here) and formats it; throws like `airroot status` when nothing answers. */
export async function mountMetrics(mountpoint?: string): Promise<string> {
  if (!mountpoint) {
    const all = await fetchAllStatus();
    if (!all.length) throw new Error("no airroot mount daemon is running here (no status socket answered in /run/airroot/mounts)");
    return formatMountMetrics(all.map((status) => ({ mountpoint: status.mountpoint, status })));
  }
  try {
    return formatMountMetrics([{ mountpoint, status: await fetchStatus(mountpoint) }]);
  } catch (e) {
    const h = await fetchHolderStatus(mountpoint).catch(() => undefined);
    if (!h) throw e;
    return formatMountMetrics([{ mountpoint, holder: h.holder }]);
  }
}
