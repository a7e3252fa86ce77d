import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { parseMountConfig, MountConfigError } from "../../src/mount/config";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";

afterAll(removeScratchDirs);
const dir = scratchDir();
const ca = join(dir, "ca.pem");
writeFileSync(ca, "-----BEGIN CERTIFICATE-----\n");
const url = "https://127.0.0.2:8443/images/root.sfs";

describe("airroot mount options", () => {
  test("defaults are the safe ones for a root filesystem", () => {
    const c = parseMountConfig({ positional: [url, dir] });
    expect(c).toMatchObject({ urls: [url], mountpoint: dir, order: "listed", cacheMb: 8, stallTimeoutMs: 10_000, foreground: false });
    expect(c.ioTimeoutMs).toBeUndefined(); // wait forever
  });

  test("parses every option", () => {
    const c = parseMountConfig({ positional: [url, "https://[fe80::1%25eth0]/images/root.sfs", dir], ca, order: "spread", nodeId: "n1",
      cacheMb: "8", ioTimeout: "5m", stallTimeout: "750ms", foreground: true, argv0: "@airroot-root" });
    expect(c).toMatchObject({ order: "spread", nodeId: "n1", cacheMb: 8, ioTimeoutMs: 300_000, stallTimeoutMs: 750, foreground: true, argv0: "@airroot-root", caFile: ca });
    expect(c.urls).toHaveLength(2);
    expect(parseMountConfig({ positional: [url, dir], ioTimeout: "0" }).ioTimeoutMs).toBeUndefined();
    const local = parseMountConfig({ positional: [url, dir], manifest: ca, imageKey: ca, expectDigest: "b".repeat(64) });
    expect(local).toMatchObject({ manifestUrl: ca, imageKeyFile: ca, expectDigest: "b".repeat(64) });
  });

  test("--weight URL=W: by image URL or a base URL of it (longest wins), others weigh 1, only with --order spread", () => {
    const m1 = "https://m1.example/images/root.sfs", m2 = "https://m2.example:8443/images/root.sfs";
    const c = parseMountConfig({ positional: [url, m1, m2, dir], order: "spread", nodeId: "n7",
      weights: ["https://m1.example=10", `${m2}=0`, "https://m2.example:8443/=3"].slice(0, 2) });
    expect(c.weights).toEqual([1, 10, 0]);
    expect(parseMountConfig({ positional: [m1, m2, dir], order: "spread", weights: ["https://m1.example/=2.5", `${m1}=4`] }).weights).toEqual([4, 1]);
    expect(parseMountConfig({ positional: [m1, dir], order: "spread" }).weights).toBeUndefined();
    const fails = (weights: string[], re: RegExp, order = "spread") =>
      expect(() => parseMountConfig({ positional: [m1, m2, dir], order, weights })).toThrow(re);
    fails(["https://m1.example"], /--weight "https:\/\/m1.example" must be URL=WEIGHT/);
    fails(["https://m1.example=-1"], /--weight https:\/\/m1.example: "-1" is not a number from 0/);
    fails(["https://m1.example=ten"], /is not a number from 0 \(last resort\)/);
    fails(["https://m3.example=1"], /--weight https:\/\/m3.example is none of the image URLs/);
    fails(["https://m1.ex=1"], /none of the image URLs/); // a prefix only at a path boundary
    fails(["https://m1.example=1", "https://m1.example/=2"], /names https:\/\/m1.example twice/);
    fails(["https://m1.example=1"], /--weight counts only with --order spread/, "listed");
  });

  const bad: [string, Parameters<typeof parseMountConfig>[0], RegExp][] = [
    ["no mount point", { positional: [url] }, /at least one image URL and a mount point/],
    ["plain http", { positional: ["http://127.0.0.1/x.sfs", dir] }, /not an https:\/\/ URL/],
    ["URL without a file", { positional: ["https://127.0.0.1/", dir] }, /not an https:\/\/ URL of a file/],
    ["duplicate URL", { positional: [url, url, dir] }, /listed twice/],
    ["missing mount point", { positional: [url, join(dir, "nope")] }, /not an existing directory/],
    ["bad order", { positional: [url, dir], order: "random" }, /--order must be one of/],
    ["bad cache", { positional: [url, dir], cacheMb: "-1" }, /--cache-mb/],
    ["bad duration", { positional: [url, dir], ioTimeout: "soon" }, /invalid --io-timeout "soon"/],
    ["tiny stall", { positional: [url, dir], stallTimeout: "1ms" }, /at least 100ms/],
    ["unreadable CA", { positional: [url, dir], ca: join(dir, "missing.pem") }, /--ca .*cannot read \(ENOENT\)/],
    ["manifest without key", { positional: [url, dir], manifest: "https://127.0.0.1/m" }, /--manifest needs --image-key/],
    ["key without manifest", { positional: [url, dir], imageKey: ca }, /--image-key needs --manifest/],
    ["missing manifest file", { positional: [url, dir], manifest: join(dir, "none.manifest"), imageKey: ca }, /--manifest .*cannot read \(ENOENT\)/],
    ["manifest over http", { positional: [url, dir], manifest: "http://127.0.0.1/m", imageKey: ca }, /neither an https:\/\/ URL nor a local file/],
    ["short digest", { positional: [url, dir], manifest: ca, imageKey: ca, expectDigest: "abc" }, /--expect-digest must be 64 lower-case hex/],
    ["digest without manifest", { positional: [url, dir], expectDigest: "a".repeat(64) }, /--expect-digest needs --manifest/],
  ];
  for (const [name, raw, msg] of bad) {
    test(`refuses ${name} with a clear message`, () => {
      let err: unknown;
      try { parseMountConfig(raw); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(MountConfigError);
      expect((err as Error).message).toMatch(msg);
      expect((err as Error).message).toStartWith("airroot mount: ");
    });
  }
});
