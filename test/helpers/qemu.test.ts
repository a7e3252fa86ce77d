// The QEMU helper's pure parts: the command line it builds (loopback-only forwards) and the `free -m` parser (fuzzed).
import { describe, expect, test } from "bun:test";
import { parseFreeMem, qemuArgs } from "./qemu";

describe("qemuArgs", () => {
  test("user networking with restrict=on; host forwards bound to 127.0.0.1; guest forwards to loopback through nc", () => {
    const a = qemuArgs({ kernel: "/k", initrd: "/i", append: "quiet", guestfwd: [{ guest: "10.0.2.100", hostPort: 4431 }],
      hostfwd: [{ guestPort: 22, hostPort: 2201 }] });
    const net = a[a.indexOf("-netdev") + 1];
    expect(net).toBe("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:2201-:22,guestfwd=tcp:10.0.2.100:443-cmd:nc 127.0.0.1 4431");
    expect(a).toContain("tcg");
    expect(a[a.indexOf("-m") + 1]).toBe("1024");
  });
});

describe("parseFreeMem", () => {
  const sample = `               total        used        free      shared  buff/cache   available
Mem:            1461         417        1042         154         289        1043
Swap:              0           0           0
`;
  test("reads the Mem: row of procps free -m", () => {
    expect(parseFreeMem(sample)).toEqual({ total: 1461, used: 417, free: 1042, shared: 154, buffCache: 289, available: 1043 });
  });

  test("truncated or garbled output is a clear error, never a wrong number (bounded fuzz)", () => {
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    for (let i = 0; i < 2000; i++) {
      let s: string;
      if (i % 2) s = sample.slice(0, rnd(sample.length)); // truncated
      else s = Array.from({ length: rnd(120) }, () => String.fromCharCode(rnd(128))).join(""); // noise
      try {
        const m = parseFreeMem(s);
        // Only a complete Mem: row parses; then it must be the real one.
        expect(m).toEqual(parseFreeMem(sample));
      } catch (e) {
        expect((e as Error).message).toContain("free -m printed no complete Mem: row");
      }
    }
  });
});
