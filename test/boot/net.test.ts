// Network step against real components: busybox udhcpd as the DHCP server and our udhcpc glue as the client,
// each in a network namespace this test creates, joined by a veth pair (no traffic leaves the namespaces).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";

const tag = `ar${process.pid % 100000}`;
const SRV = `${tag}-srv`, CLI = `${tag}-cli`;
const VS = `${tag}s`, VC = `${tag}c`; // interface names (<= 15 chars)
const VS2 = `${tag}t`, VC2 = `${tag}d`; // a second link whose far end has no DHCP server
let dir = "";
let udhcpd: Subprocess | undefined;

function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

beforeAll(() => {
  dir = scratchDir("airroot-net-");
  sh(["ip", "netns", "add", SRV]);
  sh(["ip", "netns", "add", CLI]);
  sh(["ip", "link", "add", VS, "netns", SRV, "type", "veth", "peer", "name", VC, "netns", CLI]);
  sh(["ip", "link", "add", VS2, "netns", SRV, "type", "veth", "peer", "name", VC2, "netns", CLI]);
  sh(["ip", "-n", SRV, "addr", "add", "10.77.0.1/24", "dev", VS]);
  sh(["ip", "-n", SRV, "link", "set", VS, "up"]);
  sh(["ip", "-n", SRV, "link", "set", VS2, "up"]);
  writeFileSync(join(dir, "udhcpd.conf"), [
    "start 10.77.0.100", "end 10.77.0.110", `interface ${VS}`, `lease_file ${join(dir, "udhcpd.leases")}`,
    `pidfile ${join(dir, "udhcpd.pid")}`, "opt subnet 255.255.255.0", "opt router 10.77.0.1", "opt dns 10.77.0.53",
    "opt domain cluster.test", "option lease 3600"].join("\n") + "\n");
  writeFileSync(join(dir, "udhcpd.leases"), "");
  udhcpd = Bun.spawn(["ip", "netns", "exec", SRV, "busybox", "udhcpd", "-f", join(dir, "udhcpd.conf")], { stdout: "ignore", stderr: "pipe" });
});

afterAll(async () => {
  udhcpd?.kill("SIGKILL");
  await udhcpd?.exited;
  for (const ns of [SRV, CLI]) Bun.spawnSync(["ip", "netns", "del", ns]);
  removeScratchDirs();
});

async function client(ip: unknown, ifaces = VC): Promise<any> {
  const p = Bun.spawn(["ip", "netns", "exec", CLI, process.execPath, join(import.meta.dir, "fixtures/net-client.ts"),
    JSON.stringify(ip), ifaces, join(dir, "leases"), join(dir, "resolv.conf")], { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill("SIGKILL"), 40_000);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  const line = out.trim().split("\n").pop() ?? "";
  try { return JSON.parse(line); } catch { throw new Error(`client printed no JSON: ${out} ${err}`); }
}

test("DHCPv4 through udhcpc: address, route, resolv.conf, lease recorded, IPv6 link-local", async () => {
  const r = await client("dhcp");
  expect(r.ok).toBe(true);
  expect(r.summary).toMatch(new RegExp(`^Setting up ${VC} via DHCP at 10\\.77\\.0\\.1(0[0-9]|10)/24$`));
  const c = r.configured[0];
  expect(c).toMatchObject({ iface: VC, method: "dhcp", prefix: 24, gateway: "10.77.0.1", dns: ["10.77.0.53"] });
  expect(c.lease.serverId).toBe("10.77.0.1");
  expect(c.lease.domain).toBe("cluster.test");
  expect(c.linkLocal).toMatch(new RegExp(`^fe80::[0-9a-f:]+%${VC}$`));
  expect(sh(["ip", "-n", CLI, "-4", "addr", "show", "dev", VC])).toContain(`inet ${c.address}/24`);
  expect(sh(["ip", "-n", CLI, "route"])).toContain(`default via 10.77.0.1 dev ${VC}`);
  expect(readFileSync(join(dir, "resolv.conf"), "utf8")).toBe("search cluster.test\nnameserver 10.77.0.53\n");
}, 60_000);

test("two links, DHCP on one: the step ends shortly after the first lease instead of waiting out the other", async () => {
  Bun.spawnSync(["ip", "-n", CLI, "-4", "addr", "flush", "dev", VC]);
  const t0 = Date.now();
  const r = await client("dhcp", `${VC},${VC2}`);
  expect(r.ok).toBe(true);
  expect(r.configured.map((c: any) => c.iface)).toEqual([VC]);
  expect(Date.now() - t0).toBeLessThan(9_000); // the DHCP timeout is 10 s
}, 60_000);

test("static address and gateway", async () => {
  const r = await client({ iface: VC, address: "10.77.0.5", prefix: 24, gateway: "10.77.0.1" });
  expect(r.ok).toBe(true);
  expect(r.summary).toBe(`Setting up ${VC} as static at 10.77.0.5/24`);
  expect(sh(["ip", "-n", CLI, "-4", "addr", "show", "dev", VC])).toContain("inet 10.77.0.5/24");
}, 60_000);

test("no DHCP server: the step fails naming the interface and the timeout", async () => {
  udhcpd?.kill("SIGKILL");
  await udhcpd?.exited;
  Bun.spawnSync(["ip", "-n", CLI, "-4", "addr", "flush", "dev", VC]);
  const r = await client("dhcp");
  expect(r.ok).toBe(false);
  expect(r.error).toMatch(new RegExp(`no DHCPv4 lease on ${VC} within 10 s`));
}, 60_000);
