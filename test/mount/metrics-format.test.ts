// The mount metrics' text from status snapshots, without a mount: several mounts in one page (each metric once),
// a mount whose daemon is restarting (only the holder answered: up 0 and the holder's figures), an older daemon
// that reports fewer fields, and hostile label values (URL and validator with quotes, backslashes, newlines).
import { expect, test } from "bun:test";
import { formatMountMetrics } from "../../src/mount/metrics.ts";
import type { DaemonStatus } from "../../src/mount/status.ts";
import { promtool, sampleValue } from "../helpers/promtool";

const status = (mountpoint: string, url: string, validator: string): DaemonStatus => ({
  mountpoint, pid: 42, argv0: "@airroot-root", startedAt: "2026-12-03T10:00:00.000Z", fuse: { requests: 7, kernelProtocol: "7.45" },
  image: { name: "root.sfs", size: 1000, validator, order: "listed", uptimeSec: 5, bytesFetched: 500, cacheHits: 3, cacheMisses: 4,
    readsInFlight: 0, readsTotal: 9, sources: [{ url, state: "degraded", bytes: 500, requests: 2, errors: 1, lastError: "x", preferredRank: 0 }] },
});

test("several mounts, a restarting one, hostile label values: each metric once, promtool accepts the page", () => {
  const text = formatMountMetrics([
    { mountpoint: "/mnt/a", status: { ...status("/mnt/a", "https://10.0.0.1/root.sfs", '"abc"'), holder: { pid: 1, argv0: "h", startedAt: "", restarts: 2, takeovers: 1, resend: "supported", daemonStart: "first" } } },
    { mountpoint: "/mnt/b\n\"x\\", status: status("/mnt/b\n\"x\\", 'https://h/"q"\\\n', "W/\"w\"") },
    { mountpoint: "/mnt/c", holder: { pid: 3, argv0: "h", startedAt: "", restarts: 5, takeovers: 0, resend: "supported" } },
  ]);
  expect(promtool(text)).toEqual({ code: 0, out: "" });
  expect(text.match(/^# TYPE airroot_mount_up /gm)?.length).toBe(1);
  expect(sampleValue(text, 'airroot_mount_up{mountpoint="/mnt/a"}')).toBe(1);
  expect(sampleValue(text, 'airroot_mount_up{mountpoint="/mnt/c"}')).toBe(0);
  expect(sampleValue(text, 'airroot_mount_holder_daemon_restarts_total{mountpoint="/mnt/a"}')).toBe(2);
  expect(sampleValue(text, 'airroot_mount_holder_daemon_restarts_total{mountpoint="/mnt/c"}')).toBe(5);
  expect(sampleValue(text, 'airroot_mount_source_state{mountpoint="/mnt/b\\n\\"x\\\\",url="https://h/\\"q\\"\\\\\\n",state="degraded"}')).toBe(1);
  expect(text).toContain('validator="W/\\"w\\""');
  // An older daemon reports no cacheBytes/fetches/memory: those lines are left out, not written as NaN.
  expect(text).not.toContain("NaN");
  expect(text).not.toContain("airroot_mount_cache_bytes");
  expect(text).not.toContain('airroot_mount_source_rtt_seconds');
  expect(sampleValue(text, 'airroot_mount_daemon_start_time_seconds{mountpoint="/mnt/a"}')).toBe(Date.parse("2026-12-03T10:00:00Z") / 1000);
});
