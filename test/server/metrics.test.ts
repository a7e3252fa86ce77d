// GET /metrics of a real `airroot serve` (the built binary) in a network namespace, with a node enrolling from
// another namespace across a veth link: counters move with an enrollment, a refused one, the config and SSH host
// certificate requests; the page passes promtool; a reader on the boot network is refused (403, audited) until
// `serve config add metrics-subnets` names it, which a running server picks up without a restart.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { existsSync, readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeNetnsPair, type NetnsPair, waitForListenInNs } from "../helpers/netns";
import { promtool, sampleValue } from "../helpers/promtool";
import { statePaths } from "../../src/server/state.ts";

const AIRROOT = join(import.meta.dir, "../../dist/airroot");
const MAC = "52:54:00:6d:00:01";
const PORT = 8443;
let net: NetnsPair, dir: string, state: string, server: ReturnType<NetnsPair["spawn"]> | undefined;

function airroot(args: string[]): { code: number; out: string; err: string } {
  const r = Bun.spawnSync([AIRROOT, ...args], { stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  return { code: r.exitCode ?? -1, out: r.stdout.toString(), err: r.stderr.toString() };
}

/** Runs a command in a namespace to its end (bounded). */
async function inNs(ns: string, cmd: string[], timeoutMs = 30_000): Promise<{ code: number; out: string; err: string }> {
  const p = net.spawn(ns, cmd);
  const t = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(t);
  return { code, out, err };
}

/** GET /metrics with curl (what a scraper does) from namespace `ns` to `host`: status, content type, body. */
async function scrape(ns: string, host: string): Promise<{ status: number; type: string; body: string }> {
  const out = join(dir, `scrape-${Math.random().toString(36).slice(2)}`);
  const r = await inNs(ns, ["curl", "-sS", "--cacert", statePaths(state).siteCaCert, "-o", out, "-w", "%{http_code} %{content_type}",
    `https://${host}:${PORT}/metrics`]);
  if (r.code !== 0) throw new Error(`curl: ${r.err}`);
  const [status, ...type] = r.out.split(" ");
  return { status: Number(status), type: type.join(" "), body: readFileSync(out, "utf8") };
}

beforeAll(async () => {
  if (!existsSync(AIRROOT)) throw new Error(`${AIRROOT} is missing: run \`make\` (make test builds it first)`);
  dir = scratchDir();
  state = join(dir, "state");
  net = await makeNetnsPair();
  expect(airroot(["serve", "init", "--state", state, "--address", net.addrA, "--address", "127.0.0.1", "--port", String(PORT)]).code).toBe(0);
  expect(airroot(["node", "add", "n1", "--state", state, "--mac", MAC, "--profile", "compute"]).code).toBe(0);
  expect(airroot(["node", "add", "n2", "--state", state, "--mac", "52:54:00:6d:00:02", "--profile", "compute"]).code).toBe(0);
  expect(airroot(["node", "arm", "n1", "--state", state, "--for", "10m"]).code).toBe(0);
  server = net.spawn(net.a, [AIRROOT, "serve", "--state", state, "--listen", `0.0.0.0:${PORT}`, "--no-discovery"]);
  await waitForListenInNs(net.a, PORT, "airroot serve");
}, 60_000);

afterAll(async () => {
  server?.kill("SIGTERM");
  await server?.exited;
  net?.remove();
  removeScratchDirs();
}, 60_000);

test("an enrollment, a refused one, config and sshcert requests move the counters; promtool accepts the page", async () => {
  const hk = join(dir, "ssh_host_ed25519_key");
  expect(Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hk]).exitCode).toBe(0);
  const enroll = (out: string) => inNs(net.b, [AIRROOT, "enroll", "--server", `https://${net.addrA}:${PORT}`, "--ca", statePaths(state).siteCaCert,
    "--out", join(dir, out), "--mac", MAC, "--host-key", hk + ".pub"]);
  const ok = await enroll("cred");
  expect(ok.err).toBe("");
  expect(ok.out).toContain("enrolled as n1");
  const again = await enroll("cred2"); // the window closed
  expect(again.code).toBe(1);
  expect(again.err).toContain("identity does not match an armed node");
  // A path the client chose never becomes a label: it is counted as a route class.
  const odd = await inNs(net.b, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", statePaths(state).siteCaCert,
    `https://${net.addrA}:${PORT}/api/v1/probe-7f3a%22%0A`]);
  expect(odd.out).toBe("404");

  const page = await scrape(net.a, "127.0.0.1");
  expect(page.status).toBe(200);
  expect(page.type).toBe("text/plain; version=0.0.4; charset=utf-8");
  expect(promtool(page.body)).toEqual({ code: 0, out: "" });
  const v = (series: string) => sampleValue(page.body, series);
  expect(v('airroot_serve_enrollments_total{outcome="enrolled"}')).toBe(1);
  expect(v('airroot_serve_enrollments_total{outcome="refused"}')).toBe(1);
  expect(v('airroot_serve_refusals_total{route="enroll",reason="identity-mismatch"}')).toBe(1);
  expect(v('airroot_serve_config_requests_total{outcome="served"}')).toBe(1);
  expect(v('airroot_serve_sshcert_requests_total{outcome="served"}')).toBe(1);
  expect(v('airroot_serve_certificates_issued_total{kind="node"}')).toBe(1);
  expect(v('airroot_serve_certificates_issued_total{kind="ssh-host"}')).toBe(1);
  expect(v('airroot_serve_requests_total{route="enroll",code="200"}')).toBe(1);
  expect(v('airroot_serve_requests_total{route="enroll",code="403"}')).toBe(1);
  expect(v('airroot_serve_requests_total{route="api-other",code="404"}')).toBe(1);
  expect(v('airroot_serve_request_duration_seconds_count{route="enroll"}')).toBe(2);
  expect(v('airroot_serve_request_duration_seconds_bucket{route="enroll",le="+Inf"}')).toBe(2);
  expect(v('airroot_serve_request_duration_seconds_count{route="self/config"}')).toBe(1);
  // Nodes per stage, read from the node store: n1 reported "enrolled", n2 never reported.
  expect(v('airroot_serve_nodes{stage="enrolled"}')).toBe(1);
  expect(v('airroot_serve_nodes{stage="none"}')).toBe(1);
  expect(v('airroot_serve_nodes{stage="running"}')).toBe(0);
  expect(v("airroot_serve_connections_open")).toBeGreaterThanOrEqual(1);
  expect(page.body).not.toContain("probe-7f3a");
  expect(page.body).not.toMatch(/\bn1\b|52:54:00/); // no node name or MAC in any label
}, 90_000);

test("a reader on the boot network gets 403 (audited) until config metrics-subnets names it; a running server picks that up", async () => {
  const refused = await scrape(net.b, net.addrA);
  expect(refused.status).toBe(403);
  expect(JSON.parse(refused.body).error).toBe("metrics-not-allowed");
  expect(refused.body).not.toContain("airroot_serve");
  const audit = readFileSync(statePaths(state).audit, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  expect(audit.some((e) => e.event === "metrics" && e.outcome === "refused" && e.remote === net.addrB)).toBe(true);

  const add = airroot(["serve", "config", "add", "metrics-subnets", `${net.addrB}/32`, "--state", state]);
  expect(add.code).toBe(0);
  let page = refused;
  for (const deadline = Date.now() + 15_000; Date.now() < deadline; await Bun.sleep(250)) {
    page = await scrape(net.b, net.addrA);
    if (page.status === 200) break;
  }
  expect(page.status).toBe(200);
  expect(promtool(page.body)).toEqual({ code: 0, out: "" });
  expect(sampleValue(page.body, 'airroot_serve_refusals_total{route="metrics",reason="metrics-not-allowed"}')).toBeGreaterThanOrEqual(1);
  // Loopback keeps working whatever the list says.
  expect((await scrape(net.a, "127.0.0.1")).status).toBe(200);
}, 60_000);
