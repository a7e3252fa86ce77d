// Two network namespaces joined by a veth pair, made and removed by a test: nothing leaves them.
import type { Subprocess } from "bun";

function ip(args: string[]): void {
  const r = Bun.spawnSync(["ip", ...args], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr.toString().trim()}`);
}

export interface NetnsPair {
  a: string; b: string;           // namespace names
  ifA: string; ifB: string;       // interface names inside them
  addrA: string; addrB: string;   // IPv4 addresses (/24)
  /** Runs a command inside a namespace (stdout/stderr piped). */
  spawn(ns: string, cmd: string[]): Subprocess<"ignore", "pipe", "pipe">;
  remove(): void;
}

/** Creates namespaces A and B with veth A<->B, IPv4 10.213.N.1/.2 and IPv6 link-local (waits out DAD, bounded). */
export async function makeNetnsPair(tag = Math.random().toString(36).slice(2, 8)): Promise<NetnsPair> {
  const a = `ar-${tag}-a`, b = `ar-${tag}-b`, ifA = "va", ifB = "vb";
  const n = 1 + Math.floor(Math.random() * 250);
  const p: NetnsPair = {
    a, b, ifA, ifB, addrA: `10.213.${n}.1`, addrB: `10.213.${n}.2`,
    spawn: (ns, cmd) => Bun.spawn(["ip", "netns", "exec", ns, ...cmd], { stdin: "ignore", stdout: "pipe", stderr: "pipe" }),
    remove() {
      for (const ns of [a, b]) Bun.spawnSync(["ip", "netns", "del", ns], { stdout: "ignore", stderr: "ignore" });
    },
  };
  try {
    ip(["netns", "add", a]);
    ip(["netns", "add", b]);
    ip(["-n", a, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b]);
    for (const [ns, dev, addr] of [[a, ifA, p.addrA], [b, ifB, p.addrB]] as const) {
      ip(["-n", ns, "link", "set", "lo", "up"]);
      ip(["-n", ns, "addr", "add", `${addr}/24`, "dev", dev]);
      ip(["-n", ns, "link", "set", dev, "up"]);
    }
    // Wait (bounded) until both IPv6 link-local addresses finished duplicate address detection.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const busy = [[a, ifA], [b, ifB]].some(([ns, dev]) => {
        const out = Bun.spawnSync(["ip", "-n", ns, "-6", "addr", "show", "dev", dev]).stdout.toString();
        return !/inet6 fe80::/.test(out) || /tentative/.test(out);
      });
      if (!busy) break;
      if (Date.now() > deadline) throw new Error("netns: IPv6 link-local addresses did not become usable within 10 s");
      await Bun.sleep(100);
    }
    return p;
  } catch (e) {
    p.remove();
    throw e;
  }
}

/**
 * For a child already inside a fresh network namespace (unshare --net): lo up, and a veth pair v0 (fe80::1) / v1
 * (fe80::2), both up, addresses without duplicate address detection, so a link-local server on v0 is reachable at
 * once as fe80::1%v1.
 */
export function linkLocalVethPair(): void {
  const ip = (...a: string[]) => {
    const r = Bun.spawnSync(["ip", ...a], { stderr: "pipe", timeout: 30_000 });
    if (r.exitCode !== 0) throw new Error(`ip ${a.join(" ")}: ${r.stderr.toString()}`);
  };
  ip("link", "set", "lo", "up");
  ip("link", "add", "v0", "type", "veth", "peer", "name", "v1");
  ip("link", "set", "v0", "up");
  ip("link", "set", "v1", "up");
  ip("addr", "add", "fe80::1/64", "dev", "v0", "nodad");
  ip("addr", "add", "fe80::2/64", "dev", "v1", "nodad");
}

/** Waits until something listens on TCP `port` inside namespace `ns` (ss inside it), at most `timeoutMs`. */
export async function waitForListenInNs(ns: string, port: number, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = Bun.spawnSync(["ip", "netns", "exec", ns, "ss", "-ltn", `sport = :${port}`]).stdout.toString();
    if (r.includes(`:${port}`)) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on port ${port} in namespace ${ns} within ${timeoutMs / 1000} s`);
    await Bun.sleep(100);
  }
}
