// The storm's network: a hub namespace holding a bridge with the servers' addresses (deployment servers, mirrors,
// PostgreSQL on the hub's own loopback), and one namespace per node with a veth into the bridge. 10.77.0.0/16 lives
// only inside these namespaces; remove() deletes every one of them (also after a partial setup).
const PREFIX = `ars${process.pid % 100000}`;
export const HUB = `${PREFIX}-hub`;
export const NET = "10.77";
export const serverIp = (i: number) => `${NET}.0.${1 + i}`;   // airroot serve: 10.77.0.1, .2
export const mirrorIp = (i: number) => `${NET}.0.${11 + i}`;  // nginx mirrors: 10.77.0.11, .12, .13
export const nodeIp = (i: number) => `${NET}.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`;
export const nodeNs = (i: number) => `${PREFIX}-n${i}`;
export const nodeMac = (i: number) => `52:54:00:77:${((i >> 8) & 0xff).toString(16).padStart(2, "0")}:${(i & 0xff).toString(16).padStart(2, "0")}`;

function ip(args: string[]): void {
  const r = Bun.spawnSync(["ip", ...args], { stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  if (r.exitCode !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr.toString().trim()}`);
}

export interface StormNet { nodes: number; remove(): void }

/** Hub + `nodes` node namespaces; every server address is on the hub's bridge. */
export function makeStormNet(nodes: number, servers: number, mirrors: number): StormNet {
  const made: string[] = [];
  const remove = () => { for (const ns of made.splice(0).reverse()) Bun.spawnSync(["ip", "netns", "del", ns], { stdout: "ignore", stderr: "ignore" }); };
  try {
    ip(["netns", "add", HUB]);
    made.push(HUB);
    ip(["-n", HUB, "link", "set", "lo", "up"]);
    ip(["-n", HUB, "link", "add", "br0", "type", "bridge"]);
    ip(["-n", HUB, "link", "set", "br0", "up"]);
    for (let i = 0; i < servers; i++) ip(["-n", HUB, "addr", "add", `${serverIp(i)}/16`, "dev", "br0"]);
    for (let i = 0; i < mirrors; i++) ip(["-n", HUB, "addr", "add", `${mirrorIp(i)}/16`, "dev", "br0"]);
    for (let i = 0; i < nodes; i++) {
      const ns = nodeNs(i), hubSide = `vn${i}`;
      ip(["netns", "add", ns]);
      made.push(ns);
      ip(["-n", ns, "link", "set", "lo", "up"]);
      ip(["-n", ns, "link", "add", "eth0", "address", nodeMac(i), "type", "veth", "peer", "name", hubSide, "netns", HUB]);
      ip(["-n", ns, "addr", "add", `${nodeIp(i)}/16`, "dev", "eth0"]);
      ip(["-n", ns, "link", "set", "eth0", "up"]);
      ip(["-n", HUB, "link", "set", hubSide, "master", "br0"]);
      ip(["-n", HUB, "link", "set", hubSide, "up"]);
    }
    return { nodes, remove };
  } catch (e) { remove(); throw e; }
}

/** Argument prefix running a command inside a namespace. */
export const inNs = (ns: string, cmd: string[]) => ["ip", "netns", "exec", ns, ...cmd];
