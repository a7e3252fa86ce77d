// `airroot mount --fill` options and the status lines about the fill, without a mount.
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdirSync, writeFileSync } from "node:fs";
import { parseMountConfig, MountConfigError } from "../../src/mount/config";
import { formatFill } from "../../src/mount/status";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";

afterAll(removeScratchDirs);
const dir = scratchDir();
const pem = join(dir, "k.pem");
writeFileSync(pem, "-----BEGIN PUBLIC KEY-----\n");
const url = "https://127.0.0.2:8443/images/root.sfs";
const signed = { positional: [url, dir], manifest: pem, imageKey: pem };

describe("--fill options", () => {
  test("PATH or disk:DEV, a rate in MB/s, untether-loop auto by default", () => {
    const c = parseMountConfig({ ...signed, fill: join(dir, "copy.img"), fillRate: "12.5" });
    expect(c).toMatchObject({ fillPath: join(dir, "copy.img"), fillRateBytesPerSec: 12.5e6, untetherLoop: "auto" });
    expect(parseMountConfig({ ...signed, fill: "disk:/dev/vdb2", untetherLoop: "/dev/loop7" })).toMatchObject({ fillPath: "/dev/vdb2", untetherLoop: "/dev/loop7" });
    expect(parseMountConfig({ ...signed, fill: "copy.img", untetherLoop: "off" }).untetherLoop).toBe("off");
    expect(parseMountConfig(signed).fillPath).toBeUndefined();
  });

  test("refused with a reason", () => {
    const bad = (raw: Partial<Parameters<typeof parseMountConfig>[0]>, msg: RegExp) =>
      expect(() => parseMountConfig({ ...signed, ...raw })).toThrow(msg);
    bad({ manifest: undefined, imageKey: undefined, fill: "c.img" }, /--fill needs --manifest/);
    bad({ fill: "disk:" }, /--fill needs a PATH/);
    mkdirSync(join(dir, "d"));
    bad({ fill: join(dir, "d") }, /is a directory/);
    for (const r of ["0", "-1", "x", ""]) bad({ fill: "c.img", fillRate: r }, /--fill-rate must be a positive number/);
    bad({ fillRate: "5" }, /--fill-rate needs --fill/);
    bad({ fill: "c.img", untetherLoop: "/dev/sda" }, /--untether-loop must be auto, off or \/dev\/loopN/);
    bad({ untetherLoop: "auto" }, /--untether-loop needs --fill/);
    expect(() => parseMountConfig({ ...signed, fillRate: "5" })).toThrow(MountConfigError);
  });
});

describe("fill status lines", () => {
  const base = { path: "/run/airroot/copy.img", size: 200 * 1048576, chunkSize: 262144, chunks: 800, fetchedBytes: 0, reusedBytes: 0,
    startedAt: "2026-12-03T00:00:00Z" };
  test("filled %, rate, ETA; paused with the reason; untethered", () => {
    expect(formatFill({ ...base, state: "filling", chunksDone: 200, filledBytes: 50 * 1048576, rateBytesPerSec: 10e6, etaSec: 16, rateCapBytesPerSec: 20e6 })[0])
      .toBe("fill /run/airroot/copy.img: filling, filled 25.0% (50.0 of 200.0 MiB), rate 10.0 MB/s (cap 20.0 MB/s), ETA 16s");
    expect(formatFill({ ...base, state: "paused", reason: "no healthy image server", chunksDone: 400, filledBytes: 100 * 1048576, rateBytesPerSec: 0 })[0])
      .toContain("paused, filled 50.0% (100.0 of 200.0 MiB), rate 0.0 MB/s, ETA - (no healthy image server)");
    expect(formatFill({ ...base, state: "filling", chunksDone: 1, filledBytes: 262144, rateBytesPerSec: 1e5, etaSec: 125 })[0]).toContain("ETA 2m05s");
    const u = formatFill({ ...base, state: "complete", chunksDone: 800, filledBytes: base.size, rateBytesPerSec: 0, etaSec: 0,
      untether: { mode: "auto", loops: [{ dev: "/dev/loop0", at: "2026-12-03T00:01:00Z", directIo: true }] } });
    expect(u[0]).toStartWith("fill /run/airroot/copy.img: untethered, filled 100.0%");
    expect(u[1]).toBe("untethered: /dev/loop0 reads /run/airroot/copy.img since 2026-12-03T00:01:00Z (direct I/O): no image server needed");
  });
});
