// The thin commands: `airroot image pack|list|gc` run as a process, and `serve mirror-config` (exported for part B's
// serve command) through citty, plus mirror-config's input validation.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { runCommand } from "citty";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTree } from "./tree";
import { mirrorConfigCommand } from "../../src/cli/image";
import { mirrorConfig } from "../../src/server/mirror";
import { checkStoredImage } from "../../src/image/check";

setDefaultTimeout(60_000);
afterAll(removeScratchDirs);

const cli = [process.execPath, join(import.meta.dir, "..", "..", "src", "cli", "main.ts")];
function run(args: string[]) {
  const r = Bun.spawnSync([...cli, ...args], { stdout: "pipe", stderr: "pipe", timeout: 60_000, env: { ...process.env, NO_COLOR: "1" } });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

describe("airroot image", () => {
  test("pack, list, gc through the CLI", () => {
    const base = scratchDir();
    const tree = makeTree(join(base, "root"), "", 100_000);
    const state = join(base, "state");
    const p = run(["image", "pack", tree, "--profile", "compute", "--state", state]);
    expect(p.err).toContain("mksquashfs");
    expect(p.code).toBe(0);
    const digest = p.out.split(/\s+/)[0];
    expect(digest).toMatch(/^[0-9a-f]{64}$/);
    const again = run(["image", "pack", tree, "--profile", "compute", "--state", state]);
    expect(again.out).toContain("existing image reused");
    const list = JSON.parse(run(["image", "list", "--state", state, "--json"]).out);
    expect(list.images.map((i: { digest: string }) => i.digest)).toEqual([digest]);
    expect(list.profiles).toEqual([expect.objectContaining({ name: "compute", digest })]);
    expect(run(["image", "list", "--state", state]).out).toContain(digest);
    const gc = run(["image", "gc", "--state", state, "--grace", "0"]);
    expect(gc.code).toBe(0);
    expect(gc.out).toContain(`kept ${digest}: current image of a profile`);
    expect(gc.out).toContain("removed 0 image(s)");
  });

  test("verify finds damaged, unsigned and incomplete copies (server and mirror form)", () => {
    const base = scratchDir();
    const state = join(base, "state");
    const p = run(["image", "pack", makeTree(join(base, "root"), "", 2_500_000), "--profile", "p", "--state", state]);
    const digest = p.out.split(/\s+/)[0];
    const ok = run(["image", "verify", "--state", state]);
    expect(ok.out).toContain(`ok      ${digest}`);
    expect(ok.code).toBe(0);
    // a mirror's copy with one byte flipped in chunk 1
    const mirror = join(base, "mirror");
    mkdirSync(mirror);
    const bytes = readFileSync(join(state, "images", `${digest}.sfs`));
    bytes[256 * 1024 + 5] ^= 1; // chunk 1 at the default 256 KiB chunks
    writeFileSync(join(mirror, `${digest}.sfs`), bytes);
    copyFileSync(join(state, "images", `${digest}.manifest`), join(mirror, `${digest}.manifest`));
    writeFileSync(join(mirror, `${"f".repeat(64)}.sfs`), "no manifest");
    const bad = run(["image", "verify", "--images", mirror, "--image-key", join(state, "keys", "image.pub")]);
    expect(bad.code).toBe(1);
    expect(bad.out).toContain(`DAMAGED ${digest}: 1 chunk(s) differ`);
    expect(bad.out).toContain(`DAMAGED ${"f".repeat(64)}: manifest`);
    expect(checkStoredImage(mirror, digest, readFileSync(join(state, "keys", "image.pub"), "utf8")).badChunks).toEqual([1]);
    expect(run(["image", "verify", "--images", mirror]).err).toMatch(/needs --image-key/);
  });

  test("assign rolls a profile back to a stored image (by digest prefix)", () => {
    const base = scratchDir();
    const state = join(base, "state");
    const tree = makeTree(join(base, "root"), "a", 10_000);
    const first = run(["image", "pack", tree, "--profile", "compute", "--state", state]).out.split(/\s+/)[0];
    writeFileSync(join(tree, "etc/hostname"), "second\n");
    const second = run(["image", "pack", tree, "--profile", "compute", "--state", state]).out.split(/\s+/)[0];
    expect(second).not.toBe(first);
    const a = run(["image", "assign", first.slice(0, 12), "--profile", "compute", "--state", state]);
    expect(a.code).toBe(0);
    expect(a.out).toContain(`profile compute: ${second} -> ${first}`);
    const list = JSON.parse(run(["image", "list", "--state", state, "--json"]).out);
    expect(list.profiles).toEqual([expect.objectContaining({ name: "compute", digest: first })]);
    expect(run(["image", "assign", "0123", "--profile", "compute", "--state", state]).err).toMatch(/not an image digest/);
    expect(run(["image", "assign", "01234567", "--profile", "compute", "--state", state]).err).toMatch(/no stored image/);
    // a manifest that no longer verifies is refused (nodes would refuse it too)
    writeFileSync(join(state, "images", `${second}.manifest`), "airroot-manifest v1\n{}\ned25519 x y\n");
    const bad = run(["image", "assign", second, "--profile", "gpu", "--state", state]);
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/manifest refused/);
  });

  test("bad arguments give clear errors and a non-zero exit", () => {
    const base = scratchDir();
    const state = join(base, "state");
    mkdirSync(join(base, "root"));
    const cases: [string[], RegExp][] = [
      [["image", "pack", join(base, "root"), "--profile", "bad/name", "--state", state], /invalid profile name/],
      [["image", "pack", join(base, "nope"), "--profile", "p", "--state", state], /not a directory/],
      [["image", "pack", join(base, "root"), "--profile", "p", "--state", state, "--chunk-size", "1000"], /power of two/],
      [["image", "pack", join(base, "root"), "--profile", "p", "--state", state, "--mkfs-time", "yesterday"], /mkfs-time/],
      [["image", "gc", "--state", state, "--grace", "soon"], /invalid --grace/],
      [["image", "pack", join(base, "root"), "--state", state], /profile/],
      [["image", "list", "--state", join(base, "nowhere")], /does not exist/],
      [["image", "gc", "--state", join(base, "nowhere")], /does not exist/],
      [["image", "verify"], /--state DIR or --images/],
    ];
    for (const [args, re] of cases) {
      const r = run(args);
      expect([args.join(" "), r.code === 0]).toEqual([args.join(" "), false]);
      expect(r.err).toMatch(re);
    }
  });
});

describe("serve mirror-config", () => {
  async function capture(rawArgs: string[]): Promise<string> {
    return (await captureAll(rawArgs)).out;
  }
  async function captureAll(rawArgs: string[]): Promise<{ out: string; err: string }> {
    const chunks: string[] = [], errs: string[] = [];
    const orig = process.stdout.write.bind(process.stdout), origErr = console.error;
    (process.stdout as { write: unknown }).write = (c: string | Uint8Array) => { chunks.push(String(c)); return true; };
    console.error = (...a: unknown[]) => { errs.push(a.join(" ")); };
    try { await runCommand(mirrorConfigCommand, { rawArgs }); } finally { (process.stdout as { write: unknown }).write = orig; console.error = origErr; }
    return { out: chunks.join(""), err: errs.join("\n") };
  }
  /** A state dir with an images/ holding one (fake) image, and a mirror directory with the same. */
  function dirs() {
    const base = scratchDir();
    const state = join(base, "airroot"), mirror = join(base, "mirror-img");
    for (const d of [join(state, "images"), mirror]) {
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, `${"c".repeat(64)}.sfs`), "x");
    }
    return { base, state, mirror };
  }

  test("prints nginx and Apache configs; --listen repeats; --root changes the URL path", async () => {
    const { state, mirror } = dirs();
    const n = await capture(["nginx", "--state", state, "--listen", "127.0.0.9:8443", "--listen", "[::1]:8443,9443", "--root", "/site/images"]);
    expect(n).toContain("listen 127.0.0.9:8443 ssl;");
    expect(n).toContain("listen [::1]:8443 ssl;");
    expect(n).toContain("listen 9443 ssl;");
    expect(n).toContain("listen [::]:9443 ssl;");
    expect(n).toContain('location ~ "^/site/images/(?<digest>[0-9a-f]{64})\\.sfs$"');
    expect(n).toContain(`alias ${state}/images/$digest.sfs;`);
    const a = await capture(["apache", "--state", state, "--cert", "/etc/x.crt", "--key", "/etc/x.key"]);
    expect(a).toContain("<VirtualHost *:443>");
    expect(a).not.toContain("Listen ");
    expect(a).toContain("SSLCertificateFile /etc/x.crt");
    expect(a).toContain(`AliasMatch "^/images/([0-9a-f]{64})\\.(sfs|manifest)$" "${state}/images/$1.$2"`);
    await expect(capture(["squid", "--state", state])).rejects.toThrow(/unknown server "squid": use nginx, apache, lighttpd, caddy/);
    expect(await capture(["nginx", "--images", mirror])).toContain(`alias ${mirror}/$digest.sfs;`);
    await expect(capture(["nginx"])).rejects.toThrow(/--images DIR .* or --state DIR/);
  });

  test("--images must exist (warned when it holds no image); not both --images and --state", async () => {
    const { base, state, mirror } = dirs();
    await expect(capture(["nginx", "--images", join(base, "typo")])).rejects.toThrow(`images directory ${join(base, "typo")} does not exist; create it and copy the images first: rsync -a STATE/images/`);
    await expect(capture(["nginx", "--state", join(base, "nostate")])).rejects.toThrow(`images directory ${join(base, "nostate", "images")} does not exist`);
    writeFileSync(join(base, "file"), "");
    await expect(capture(["apache", "--images", join(base, "file")])).rejects.toThrow("is not a directory");
    await expect(capture(["nginx", "--images", mirror, "--state", state])).rejects.toThrow("not both");
    mkdirSync(join(base, "empty"));
    const empty = await captureAll(["nginx", "--images", join(base, "empty"), "--cert", "/etc/m.crt", "--key", "/etc/m.key"]);
    expect(empty.out).toContain("server {");
    expect(empty.err).toBe(`warning: ${join(base, "empty")} holds no <sha256>.sfs image yet; copy them with: rsync -a STATE/images/ ${join(base, "empty")}/`);
  });

  test("default certificate paths are named on stderr; the header says where the file goes, how to copy images, where the cert comes from", async () => {
    const { mirror } = dirs();
    const n = await captureAll(["nginx", "--images", mirror]);
    expect(n.err).toContain("note: the config reads the certificate from /etc/airroot/mirror.crt and the key from /etc/airroot/mirror.key (the defaults; --cert/--key to change)");
    expect(n.err).toContain("airroot serve mirror-cert --state STATE --address ADDR --out /etc/airroot/mirror");
    expect(n.out).toContain("ssl_certificate /etc/airroot/mirror.crt;");
    expect(n.out).toContain("# Install: save this as /etc/nginx/conf.d/airroot.conf");
    expect(n.out).toContain(`rsync -a --delay-updates --delete-after --exclude='.*' SERVER:STATE/images/ ${mirror}/`);
    expect(n.out).toContain("#   airroot serve mirror-cert --state STATE --address <this mirror's addresses> --out /etc/airroot/mirror");
    expect(n.out).toContain("#   airroot serve config add mirrors https://<this mirror> --state STATE");
    expect(n.out).not.toContain("sites-enabled");
    const a = await captureAll(["apache", "--images", mirror, "--cert", "/etc/ssl/m.pem", "--key", "/etc/ssl/m.key", "--root", "/m/images/"]);
    expect(a.err).toBe("");
    expect(a.out).toContain("# Install (Debian): save this as /etc/apache2/sites-available/airroot.conf");
    expect(a.out).toContain("a2ensite airroot");
    expect(a.out).toContain("RHEL: save it as /etc/httpd/conf.d/airroot.conf");
    expect(a.out).toContain("then copy /tmp/mirror.crt to /etc/ssl/m.pem and /tmp/mirror.key to /etc/ssl/m.key");
    expect(a.out).toContain("#   airroot serve config add mirrors https://<this mirror>/m --state STATE");
  });

  test("prints lighttpd and Caddy configs: one socket block or site per address, the header says where it goes and what it relies on", async () => {
    const { state, mirror } = dirs();
    const l = await capture(["lighttpd", "--images", mirror, "--listen", "127.0.0.9:8443,[::1]:8443", "--listen", "9443", "--cert", "/etc/m.crt", "--key", "/etc/m.key"]);
    for (const s of ["127.0.0.9:8443", "[::1]:8443", ":9443", "[::]:9443"]) expect(l).toContain(`$SERVER["socket"] == "${s}" {`);
    expect(l.match(/\$SERVER\["socket"\]/g)?.length).toBe(4);
    expect(l).toContain(`alias.url = ("/images/" => "${mirror}/")`);
    expect(l).toContain('$HTTP["url"] =~ "^/images/[0-9a-f]{64}\\.(sfs|manifest)$" {');
    expect(l).toContain('ssl.pemfile = "/etc/m.crt"');
    expect(l).toContain("# Install (Debian: apt install lighttpd lighttpd-mod-openssl): save this as\n# /etc/lighttpd/conf-available/90-airroot.conf");
    expect(l).toContain("lighty-enable-mod airroot");
    expect(l).toContain("# No ETag and no Last-Modified");
    expect(l).toContain("nodes use\n# this mirror only together with the signed manifest");
    expect(l).toContain("#   rsync -a --delay-updates --delete-after --exclude='.*' SERVER:STATE/images/");
    expect(l).toContain("#   airroot serve mirror-cert --state STATE --address <this mirror's addresses> --out /etc/m");
    const c = await capture(["caddy", "--state", state, "--listen", "127.0.0.9:8443", "--listen", "[::1]:8443", "--listen", "443", "--root", "/site/images/"]);
    expect(c).toContain("https://:8443 {\n    bind 127.0.0.9 [::1]\n");
    expect(c).toContain("https://:443 {\n    tls /etc/airroot/mirror.crt /etc/airroot/mirror.key {");
    expect(c.match(/^https:\/\//gm)?.length).toBe(2);
    expect(c).toContain("    admin off");
    expect(c).toContain("    auto_https off");
    expect(c).toContain("path_regexp sfs ^/site/images/([0-9a-f]{64})\\.sfs$");
    expect(c).toContain(`root ${state}/images`);
    expect(c).toContain('ETag "\\"{re.sfs.1}\\""');
    expect(c).toContain("# Install: save this as /etc/caddy/Caddyfile");
    expect(c).toContain("#   airroot serve config add mirrors https://<this mirror>/site --state STATE");
    for (const s of ["lighttpd", "caddy"] as const) {
      expect(() => mirrorConfig(s, { stateDir: "/srv", serverName: "m1" })).toThrow(/--server-name is for nginx and Apache/);
    }
  });

  test("refuses input that would break or inject into the config", () => {
    const bad: [Parameters<typeof mirrorConfig>[1], RegExp][] = [
      [{ stateDir: "/srv/air root" }, /unsafe/],
      [{ stateDir: "/srv/x;\n}" }, /unsafe/],
      [{ stateDir: "/srv", cert: "/etc/a\"b" }, /unsafe/],
      [{ stateDir: "/srv", urlPath: "/a/../b/" }, /invalid --root/],
      [{ stateDir: "/srv", urlPath: "/a b/" }, /invalid --root/],
      [{ stateDir: "/srv", urlPath: "/$x/" }, /invalid --root/],
      [{ stateDir: "/srv", listen: ["70000"] }, /invalid --listen/],
      [{ stateDir: "/srv", listen: ["1.2.3.4:"] }, /invalid --listen/],
      [{ stateDir: "/srv", listen: ["host:80;evil"] }, /invalid --listen/],
      [{ stateDir: "/srv", serverName: "a b" }, /invalid server name/],
    ];
    for (const [opts, re] of bad) for (const s of ["nginx", "apache", "lighttpd", "caddy"] as const) {
      if (s === "nginx" || s === "apache" || !opts.serverName) expect(() => mirrorConfig(s, opts)).toThrow(re);
    }
  });
});
