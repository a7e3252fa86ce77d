// Static settings from the server's node config applied for real (busybox ip) to an interface inside a private
// network namespace made by this test: address added beside the DHCP one, default route set, entry made static.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";

const NS = `ar-cfgnet-${process.pid}`;
afterAll(() => { Bun.spawnSync(["ip", "netns", "del", NS]); });

function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

test("applyConfigNetwork adds the address and default route from the config in a real namespace", () => {
  sh(["ip", "netns", "add", NS]);
  // A veth pair inside the namespace (this kernel has no dummy driver); both ends up so d0 has carrier.
  sh(["ip", "-n", NS, "link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
  sh(["ip", "-n", NS, "link", "set", "d1", "up"]);
  sh(["ip", "-n", NS, "link", "set", "d0", "up"]);
  sh(["ip", "-n", NS, "addr", "add", "10.0.2.15/24", "dev", "d0"]); // what DHCP gave
  const mod = join(import.meta.dir, "../../src/boot/net.ts");
  const script = `import { applyConfigNetwork } from ${JSON.stringify(mod)};
const net = { configured: [{ iface: "d0", method: "dhcp", address: "10.0.2.15", prefix: 24 }], summary: "" };
const cfg = { mode: "static", ip: "10.9.8.7/24", gateway: "10.9.8.1", dns: [] };
console.log(applyConfigNetwork(net, cfg));
console.log(String(applyConfigNetwork(net, cfg)));
console.log(JSON.stringify(net.configured[0]));`;
  const out = sh(["ip", "netns", "exec", NS, process.execPath, "-e", script]).split("\n");
  expect(out[0]).toBe("Setting up d0 as static at 10.9.8.7/24 (from the server's config)");
  expect(out[1]).toBe("undefined"); // already applied: nothing to do
  expect(JSON.parse(out[2])).toMatchObject({ method: "static", address: "10.9.8.7", prefix: 24, gateway: "10.9.8.1" });
  const addrs = sh(["ip", "-n", NS, "-4", "addr", "show", "d0"]);
  expect(addrs).toContain("inet 10.9.8.7/24");
  expect(addrs).toContain("inet 10.0.2.15/24"); // the DHCP address stays until the booted system's NetworkManager takes over
  expect(sh(["ip", "-n", NS, "route", "show", "default"])).toContain("default via 10.9.8.1 dev d0");
});
