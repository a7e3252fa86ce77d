// Console autodetection: SPCR parsing on synthetic tables (with fuzzing) and the choice order.
import { describe, expect, test } from "bun:test";
import { buildSpcr, parseSpcr } from "../../src/boot/spcr";
import { chooseConsole } from "../../src/boot/console";
import { parseCmdline } from "../../src/boot/cmdline";

describe("SPCR", () => {
  test("legacy COM ports and baud codes", () => {
    expect(parseSpcr(buildSpcr({ port: 0x3f8, baudCode: 7 }))).toEqual({ ok: true, tty: "ttyS0", baud: 115200, port: 0x3f8 });
    expect(parseSpcr(buildSpcr({ port: 0x2f8, baudCode: 3 }))).toMatchObject({ ok: true, tty: "ttyS1", baud: 9600 });
    expect(parseSpcr(buildSpcr({ port: 0x2e8, baudCode: 6, iface: 0x12 }))).toMatchObject({ ok: true, tty: "ttyS3", baud: 57600 });
  });

  test("rejections carry a reason", () => {
    const cases: [Uint8Array, RegExp][] = [
      [buildSpcr({ port: 0x3f8, baudCode: 0 }), /baud rate code 0/],
      [buildSpcr({ port: 0x3f8, baudCode: 7, space: 0 }), /address space 0/],
      [buildSpcr({ port: 0x9000, baudCode: 7 }), /not a legacy COM port/],
      [buildSpcr({ port: 0x3f8, baudCode: 7, iface: 3 }), /interface type 0x3/],
      [buildSpcr({ port: 0x3f8, baudCode: 7 }).subarray(0, 60), /shorter than 80/],
      [new Uint8Array(80), /signature/],
    ];
    for (const [buf, re] of cases) {
      const r = parseSpcr(buf);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.reason).toMatch(re);
    }
    const bad = buildSpcr({ port: 0x3f8, baudCode: 7 });
    bad[20] ^= 1;
    expect(parseSpcr(bad)).toEqual({ ok: false, reason: "checksum mismatch" });
  });

  test("fuzz: random bytes, mutations and truncations never throw", () => {
    let seed = 99;
    const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
    const good = buildSpcr({ port: 0x3f8, baudCode: 7 });
    for (let i = 0; i < 5000; i++) {
      let buf: Uint8Array;
      if (i % 2) { buf = good.slice(0, rnd(120)); if (buf.length) buf[rnd(buf.length)] = rnd(256); }
      else buf = new Uint8Array(rnd(200)).map(() => rnd(256));
      if (buf.length >= 8 && i % 4 === 0) new DataView(buf.buffer).setUint32(4, rnd(0xffffffff), true);
      const r = parseSpcr(buf);
      if (r.ok) expect(["ttyS0", "ttyS1", "ttyS2", "ttyS3"]).toContain(r.tty);
    }
  });
});

describe("chooseConsole", () => {
  const ports = (spec: string) => spec.split(" ").filter(Boolean).map((s, i) => ({ tty: `ttyS${i}`, exists: s !== "-", carrier: s === "C" }));
  test("console= wins over everything", () => {
    const d = chooseConsole(parseCmdline("console=ttyS1,57600"), buildSpcr({ port: 0x3f8, baudCode: 7 }), ports("C C"));
    expect(d.choice).toEqual({ tty: "ttyS1", baud: 57600, source: "cmdline" });
    expect(chooseConsole(parseCmdline("console=tty0"), null, ports("C")).choice).toBeUndefined();
  });
  test("SPCR, then the one port with carrier, then the only port", () => {
    expect(chooseConsole(parseCmdline(""), buildSpcr({ port: 0x2f8, baudCode: 7 }), ports("C -")).choice)
      .toEqual({ tty: "ttyS1", baud: 115200, source: "spcr" });
    expect(chooseConsole(parseCmdline(""), null, ports("e C e -")).choice).toEqual({ tty: "ttyS1", baud: 115200, source: "carrier" });
    expect(chooseConsole(parseCmdline(""), buildSpcr({ port: 0x3f8, baudCode: 0 }), ports("- e - -")).choice)
      .toEqual({ tty: "ttyS1", baud: 115200, source: "only-port" });
    const none = chooseConsole(parseCmdline(""), null, ports("C C"));
    expect(none.choice).toBeUndefined();
    expect(none.notes.join(" ")).toMatch(/2 with carrier/);
  });
});
