// The sockets a process holds, from /proc: its fds that are sockets, matched with /proc/PID/net/{tcp,udp}{,6}.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

export interface SocketEntry {
  proto: "tcp" | "tcp6" | "udp" | "udp6";
  address: string;  // local address, e.g. 127.0.0.1 or ::
  port: number;
  listening: boolean; // TCP LISTEN (UDP sockets are always "bound")
}

function hexToV4(h: string): string {
  const b = Buffer.from(h, "hex");
  return [b[3], b[2], b[1], b[0]].join(".");
}

function hexToV6(h: string): string {
  const words: string[] = [];
  for (let i = 0; i < 32; i += 8) {
    const w = Buffer.from(h.slice(i, i + 8), "hex");
    const be = Buffer.from([w[3], w[2], w[1], w[0]]).toString("hex");
    words.push(be.slice(0, 4), be.slice(4));
  }
  // The URL parser prints IPv6 in its canonical compressed form.
  return new URL(`http://[${words.join(":")}]/`).hostname.slice(1, -1);
}

/** Every TCP/UDP socket the process has open, with its local address. */
export function socketsOf(pid: number): SocketEntry[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch { /* fd closed meanwhile */ }
  }
  const out: SocketEntry[] = [];
  for (const proto of ["tcp", "tcp6", "udp", "udp6"] as const) {
    let text = "";
    try { text = readFileSync(`/proc/${pid}/net/${proto}`, "utf8"); } catch { continue; }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !inodes.has(f[9])) continue;
      const [addr, port] = f[1].split(":");
      out.push({
        proto, address: proto.endsWith("6") ? hexToV6(addr) : hexToV4(addr), port: parseInt(port, 16),
        listening: proto.startsWith("tcp") && f[3] === "0A",
      });
    }
  }
  return out;
}
