// Link-local server URLs without a zone (a server set up with `--address fe80::1`): the node adds the zone of its
// boot interface to every URL it is given, and its API client, manifest fetch and image copy reach the server
// through it. Pure helpers here; the real thing in a private network namespace (see the child).
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdirSync, writeFileSync } from "node:fs";
import { mapConfigUrls, parseHttpsUrl, splitZone, zoneLinkLocalUrl, isLinkLocalV6 } from "../../src/client/zone";
import { bootZone, zoner } from "../../src/boot/linklocal";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";

afterAll(removeScratchDirs);

test("zone-less link-local hosts get %25ZONE; every other URL is left alone", () => {
  expect(zoneLinkLocalUrl("https://[fe80::1]/images/a.sfs", "2")).toBe("https://[fe80::1%252]/images/a.sfs");
  expect(zoneLinkLocalUrl("https://[fe80::1]:8443", "eth0")).toBe("https://[fe80::1%25eth0]:8443");
  expect(zoneLinkLocalUrl("https://[FE80::a:b]:443/x?y=1", "3")).toBe("https://[FE80::a:b%253]:443/x?y=1");
  expect(zoneLinkLocalUrl("https://[febf::1]/x", "3")).toBe("https://[febf::1%253]/x"); // still fe80::/10
  for (const u of ["https://[fec0::1]/x", "https://[fd00::1]/x", "https://[::1]/x", "https://[2001:db8::1]/x", "https://10.0.2.100/x",
    "https://boot.example/x", "https://[fe80::1%25eth1]/x", "https://[fe80::1%eth1]/x", "https://[nonsense]/x", "http://[fe80::1]/x"])
    expect(zoneLinkLocalUrl(u, "2")).toBe(u);
  expect(zoneLinkLocalUrl("https://[fe80::1]/x", undefined)).toBe("https://[fe80::1]/x");
  expect(isLinkLocalV6("fe80::1")).toBe(true);
  expect(isLinkLocalV6("fe7f::1")).toBe(false);
  expect(isLinkLocalV6("::ffff:10.0.0.1")).toBe(false);
});

test("zoned URLs split for URL parsers; the config's every URL is mapped", () => {
  expect(splitZone("https://[fe80::1%25eth0]:8443/a/b")).toEqual({ url: "https://[fe80::1]:8443/a/b", zone: "eth0", address: "fe80::1" });
  expect(splitZone("https://[fe80::1%2]/")).toEqual({ url: "https://[fe80::1]/", zone: "2", address: "fe80::1" });
  expect(splitZone("https://10.0.0.1/x")).toEqual({ url: "https://10.0.0.1/x" });
  expect(() => splitZone("https://[fe80::1%25a%2Fb]/")).toThrow(/zone/);
  expect(parseHttpsUrl("https://[fe80::1%25eth0]:8443/r.sfs").pathname).toBe("/r.sfs");
  const cfg = { servers: ["https://[fe80::1]:8443", "https://10.0.0.1"], image: { digest: "d", size: 1,
    urls: ["https://[fe80::1]:8443/images/d.sfs"], manifestUrls: ["https://[fe80::1]:8443/images/d.manifest"] } } as never;
  const m = mapConfigUrls(cfg, zoner("7")) as { servers: string[]; image: { urls: string[]; manifestUrls: string[] } };
  expect(m.servers).toEqual(["https://[fe80::1%257]:8443", "https://10.0.0.1"]);
  expect(m.image.urls).toEqual(["https://[fe80::1%257]:8443/images/d.sfs"]);
  expect(m.image.manifestUrls).toEqual(["https://[fe80::1%257]:8443/images/d.manifest"]);
  expect(mapConfigUrls({ ...(cfg as object), image: null } as never, zoner("7")).image).toBeNull();
});

test("the boot interface: the first with an address, else the first brought up; by index, which survives a rename", () => {
  const sys = scratchDir();
  for (const [n, i] of [["eth0", "2"], ["eth1", "3"]]) {
    mkdirSync(join(sys, "class/net", n), { recursive: true });
    writeFileSync(join(sys, "class/net", n, "ifindex"), `${i}\n`);
  }
  const net = (c: { iface: string; method: "dhcp" | "link-local" }[]) => ({ configured: c, summary: "" });
  expect(bootZone(net([{ iface: "eth0", method: "link-local" }, { iface: "eth1", method: "dhcp" }]), sys)).toBe("3");
  expect(bootZone(net([{ iface: "eth0", method: "link-local" }, { iface: "eth1", method: "link-local" }]), sys)).toBe("2");
  expect(bootZone(net([{ iface: "ib0", method: "dhcp" }]), sys)).toBe("ib0"); // no index: the name
  expect(bootZone(net([]), sys)).toBeUndefined();
  expect(bootZone(undefined, sys)).toBeUndefined();
});

test("a server set up with --address fe80::1: trust, config, manifest and copy all go through the boot interface's zone", async () => {
  const dir = scratchDir("airroot-boot-ll-");
  const proc = Bun.spawn(["unshare", "--net", "--", process.execPath, "run", join(import.meta.dir, "linklocal.child.ts"), dir],
    { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 150_000); // bounded
  const [stdout, stderr] = [await new Response(proc.stdout).text(), await new Response(proc.stderr).text()];
  await proc.exited;
  clearTimeout(timer);
  let res: Record<string, unknown>;
  try { res = JSON.parse(stdout.trim().split("\n").pop() ?? ""); } catch { throw new Error(`child printed no result:\n${stdout}\n${stderr}`); }
  expect(res.error).toBeUndefined();
  const z = `%25${res.zone}`;
  expect(res.line).toBe(`Enrolled as n1 via https://[fe80::1${z}]:8443`);
  expect(res.servers).toEqual([`https://[fe80::1${z}]:8443`]);
  expect(res.imageUrls).toEqual([`https://[fe80::1${z}]:8443/images/${res.digest}.sfs`]);
  expect(res.manifestUrls).toEqual([`https://[fe80::1${z}]:8443/images/${res.digest}.manifest`]);
  expect(res.manifestDigest).toBe(res.digest);
  expect(res.copied).toBe(true);
  expect(res.stage).toMatch(/n1 .*trusted/);
}, 180_000);
