// The whole first contact as a node sees it, across a link the test creates: `airroot serve` in one network
// namespace, `airroot enroll` without --server in another: multicast discovery, enrollment from an attached
// subnet, config and SSH host certificate.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeNetnsPair, type NetnsPair, waitForListenInNs } from "../helpers/netns";
import { statePaths } from "../../src/server/state.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const BUN = process.execPath;
const MAC = "52:54:00:77:00:01";
let net: NetnsPair, dir: string, state: string, server: ReturnType<NetnsPair["spawn"]> | undefined;

function airroot(args: string[]): { code: number; out: string; err: string } {
  const r = Bun.spawnSync([BUN, MAIN, ...args], { stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  return { code: r.exitCode ?? -1, out: r.stdout.toString(), err: r.stderr.toString() };
}

beforeAll(async () => {
  dir = scratchDir();
  state = join(dir, "state");
  net = await makeNetnsPair();
  expect(airroot(["serve", "init", "--state", state, "--address", net.addrA, "--port", "8443"]).code).toBe(0);
  expect(airroot(["node", "add", "n1", "--state", state, "--mac", MAC, "--profile", "compute"]).code).toBe(0);
  expect(airroot(["node", "arm", "n1", "--state", state, "--for", "10m"]).code).toBe(0);
  server = net.spawn(net.a, [BUN, MAIN, "serve", "--state", state, "--listen", `${net.addrA}:8443`]);
  // Bounded wait for the listener inside namespace A.
  await waitForListenInNs(net.a, 8443, "airroot serve");
}, 60_000);

afterAll(async () => {
  server?.kill("SIGTERM");
  await server?.exited;
  net?.remove();
  removeScratchDirs();
}, 60_000);

test("a node that knows no server address discovers it, enrolls, gets its config and host certificate", async () => {
  const out = join(dir, "cred");
  const hk = join(dir, "ssh_host_ed25519_key");
  expect(Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hk]).exitCode).toBe(0);
  const p = net.spawn(net.b, [BUN, MAIN, "enroll", "--ca", statePaths(state).siteCaCert, "--out", out, "--mac", MAC, "--host-key", hk]);
  const t = setTimeout(() => p.kill("SIGKILL"), 40_000);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(t);
  expect(stderr).toContain(`discovered https://${net.addrA}:8443`);
  expect(code).toBe(0);
  expect(stdout).toContain("enrolled as n1");
  const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
  expect(cfg.servers).toEqual([`https://${net.addrA}:8443`]);
  const l = Bun.spawnSync(["ssh-keygen", "-L", "-f", hk + "-cert.pub"]).stdout.toString();
  // A DHCP node's certificate names what the server recorded (its name), never the address it sent from.
  expect(l).toMatch(/Principals: \n\s+n1\n\s+Critical/);
  expect(l).not.toContain(net.addrB);
  const audit = readFileSync(statePaths(state).audit, "utf8");
  expect(audit).toContain(`"network":"attached subnet 10.213.`);
}, 60_000);
