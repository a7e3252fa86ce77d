// Child of linklocal.test.ts, run inside a fresh network namespace (unshare --net): a veth pair with link-local
// addresses, a real `airroot serve` set up with `--address fe80::1` (so it hands nodes https://[fe80::1]:8443/...),
// and the node's trust step, manifest check and image copy through the boot interface's zone. Prints one JSON line.
import { linkLocalVethPair } from "../helpers/netns";
import { join } from "node:path";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { runTrust } from "../../src/boot/trust";
import { zoner } from "../../src/boot/linklocal";
import { fetchVerifiedManifest } from "../../src/boot/rootsource";
import { copyImage } from "../../src/boot/image";
import { generateHostKeys } from "../../src/boot/sshd";
import { waitForPort } from "../helpers/ports";

const [dir] = process.argv.slice(2);
const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const MAC = "52:54:00:aa:0c:01";
function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", timeout: 120_000 });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}
const airroot = (args: string[]) => sh([process.execPath, MAIN, ...args]);
let srv: Subprocess | undefined;
const out: Record<string, unknown> = {};
try {
  // Only inside this namespace: our own links and addresses.
  linkLocalVethPair();
  const state = join(dir, "state"), site = join(dir, "site");
  airroot(["serve", "init", "--state", state, "--address", "fe80::1", "--port", "8443"]);
  const tree = join(dir, "tree");
  mkdirSync(join(tree, "etc"), { recursive: true });
  writeFileSync(join(tree, "etc/which"), "linklocal\n");
  airroot(["image", "pack", tree, "--state", state, "--profile", "p"]);
  airroot(["node", "add", "n1", "--state", state, "--mac", MAC, "--profile", "p"]);
  airroot(["node", "arm", "n1", "--state", state, "--once"]);
  airroot(["serve", "site-config", "--state", state, "--out", site]);
  srv = Bun.spawn([process.execPath, MAIN, "serve", "--state", state, "--listen", "[::]:8443", "--no-discovery"], { stdout: "ignore", stderr: "pipe" });
  await waitForPort("::1", 8443, 20_000);
  // The node booted on v1 (index from `ip`: /sys here is the host's).
  const idx = /^(\d+):/.exec(sh(["ip", "-o", "link", "show", "v1"]))![1];
  out.zone = idx;
  const keys = await generateHostKeys(join(dir, "hostkeys"));
  const logs: string[] = [];
  const { trusted, line } = await runTrust({ siteDir: site, servers: ["https://[fe80::1]:8443"], noTpm: "warn", macs: [MAC],
    hostKeys: keys, tpmDevices: [join(dir, "no-tpm")], mapUrl: zoner(idx), log: (l) => logs.push(l) });
  out.line = line;
  out.servers = trusted.servers;
  out.imageUrls = trusted.config.image?.urls;
  out.manifestUrls = trusted.config.image?.manifestUrls;
  const ca = readFileSync(join(site, "ca.pem"), "utf8");
  const m = await fetchVerifiedManifest(trusted.config.image!.manifestUrls, readFileSync(join(site, "image-key.pem"), "utf8"), ca, trusted.config.image!.digest);
  out.manifestDigest = m.manifest.digest;
  out.digest = trusted.config.image!.digest;
  const c = await copyImage({ urls: trusted.config.image!.urls, caFile: join(site, "ca.pem") }, { dir: join(dir, "copy"), maxBytes: m.manifest.size });
  out.copied = c.bytes === m.manifest.size;
  out.stage = airroot(["node", "list", "--state", state]);
} catch (e) {
  out.error = String((e as Error)?.stack ?? e);
} finally {
  srv?.kill("SIGKILL");
}
console.log(JSON.stringify(out));
process.exit(0);
