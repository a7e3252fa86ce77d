// The server's metrics without a listener: route classes stay a fixed set whatever the path, who may read the page,
// nodes per stage from a real node store (an unknown stage counted as "other"), the page's status codes.
import { afterAll, expect, test } from "bun:test";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { promtool, sampleValue } from "../helpers/promtool";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode, setStage } from "../../src/server/store/nodes.ts";
import { memoryAudit } from "../../src/server/audit.ts";
import { metricsAllowed, metricsResponse, routeClass, ServerMetrics } from "../../src/server/metrics.ts";

afterAll(removeScratchDirs);

test("route classes: API endpoints by name, everything else a broad class, never the path", () => {
  expect(["/metrics", "/boot/ipxe/n1.ipxe", "/boot", "/images/abc.sfs", "/api/v1/enroll", "/api/v1/self/config", "/api/v1/self/config/x",
    "/api/v1/n1\"\n", "/api/v2/x", "/", "/metricsx"].map(routeClass))
    .toEqual(["metrics", "boot", "boot", "images", "enroll", "self/config", "api-other", "api-other", "other", "other", "other"]);
});

test("who may read /metrics: loopback (v4, v6, v4-mapped), then only the configured subnets", () => {
  for (const a of ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"]) expect([a, metricsAllowed(a, [])]).toEqual([a, true]);
  for (const a of ["10.0.2.15", "fe80::1", "::", "0.0.0.0", "", "not-an-ip", "::ffff:10.0.0.1"]) expect([a, metricsAllowed(a, [])]).toEqual([a, false]);
  expect(metricsAllowed("10.0.0.5", ["10.0.0.5/32"])).toBe(true);
  expect(metricsAllowed("10.0.0.6", ["10.0.0.5/32"])).toBe(false);
  expect(metricsAllowed("fd00::9", ["fd00::/64"])).toBe(true);
});

test("nodes per stage come from the node store; unknown stages count as other; 403 and 405 answers", async () => {
  const db = await openDatabase(scratchDir());
  for (const n of ["a", "b", "c", "d"]) await addNode(db, { name: n, macs: [], profile: "p", net: { mode: "dhcp" } });
  await setStage(db, "a", "running", null, null);
  await setStage(db, "b", "running", null, null);
  await setStage(db, "c", "my-own-stage", null, null); // a node may post any [a-z0-9._-] word
  const m = new ServerMetrics(db);
  const audit = memoryAudit();
  const ok = await metricsResponse(m, new Request("https://x/metrics"), "127.0.0.1", [], audit);
  expect(ok.status).toBe(200);
  expect(ok.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  const page = await ok.text();
  expect(promtool(page)).toEqual({ code: 0, out: "" });
  expect(sampleValue(page, 'airroot_serve_nodes{stage="running"}')).toBe(2);
  expect(sampleValue(page, 'airroot_serve_nodes{stage="other"}')).toBe(1);
  expect(sampleValue(page, 'airroot_serve_nodes{stage="none"}')).toBe(1);
  expect(page).not.toContain("my-own-stage");
  // The next scrape sees the store as it is then.
  await setStage(db, "d", "failed", null, null);
  const again = await (await metricsResponse(m, new Request("https://x/metrics"), "::1", [], audit)).text();
  expect(sampleValue(again, 'airroot_serve_nodes{stage="none"}')).toBe(0);
  expect(sampleValue(again, 'airroot_serve_nodes{stage="failed"}')).toBe(1);

  const refused = await metricsResponse(m, new Request("https://x/metrics"), "10.0.2.15", [], audit);
  expect(refused.status).toBe(403);
  expect(((await refused.json()) as { error: string }).error).toBe("metrics-not-allowed");
  expect(audit.events).toEqual([{ event: "metrics", outcome: "refused", remote: "10.0.2.15", reason: "not loopback or a metrics-subnets address" }]);
  const post = await metricsResponse(m, new Request("https://x/metrics", { method: "POST" }), "127.0.0.1", [], audit);
  expect(post.status).toBe(405);
  expect(sampleValue(m.render(), 'airroot_serve_refusals_total{route="metrics",reason="metrics-not-allowed"}')).toBe(1);
  await db.close();
});
