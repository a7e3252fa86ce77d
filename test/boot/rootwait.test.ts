// The fast PID-1 harness (airroot init as PID 1 in fresh pid/mount namespaces, chrooted into our real initramfs tree)
// inside a network namespace this test makes, with the root image on demand from nginx there: the root step waits for
// an image server that comes up late (one line per state, not per try), airroot.roottimeout bounds that wait, and in
// the booted system `airroot status /mnt/image` works both there and from the initramfs environment (what the 2222
// debug sshd sees).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { buildTestInitramfs, makeTestRootImage } from "../helpers/boot";
import { makeTestPki } from "../helpers/pki";
import { nginxPidsUsing } from "../helpers/crash";

/** The booted system's init: `airroot status` in the new root, then the same from the initramfs environment. */
const STATUS_INIT = `#!/bin/sh
echo "AIRROOT-TEST-INIT: pid $$"
echo "AIRROOT-TEST-PATH: $(ls -l /usr/local/sbin/airroot | cut -c1-10)"
/usr/local/sbin/airroot status /mnt/image 2>&1 | sed 's/^/AIRROOT-STATUS-OS: /'
pid=$(ps -o pid,args | grep '@airroot-root' | grep -v grep | head -n1 | sed 's/^ *//' | cut -d' ' -f1)
chroot /proc/$pid/root /usr/bin/airroot status /mnt/image 2>&1 | sed 's/^/AIRROOT-STATUS-INITRAMFS: /'
echo "AIRROOT-TEST-DONE"
poweroff -f
sleep 30
`;

const NS = `ar-rootwait-${process.pid}`;
const PORT = 8443;
let dir = "", root = "", www = "";
let pki: ReturnType<typeof makeTestPki>;
let nginx: Subprocess | undefined;

function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

beforeAll(() => {
  dir = scratchDir("airroot-rootwait-");
  const img = makeTestRootImage(join(dir, "img"), { init: STATUS_INIT, airrootLibs: true });
  www = join(dir, "www");
  mkdirSync(www);
  copyFileSync(img, join(www, "root.sfs"));
  const cpio = buildTestInitramfs(join(dir, "initramfs.cpio.zst"));
  root = join(dir, "root");
  mkdirSync(root);
  sh(["sh", "-c", `zstd -dc '${cpio}' | (cd '${root}' && cpio -idm --quiet)`]);
  // The site CA the initramfs trusts image servers by (what `make initramfs SITE=...` puts there).
  pki = makeTestPki(join(dir, "pki"), ["127.0.0.1"]);
  mkdirSync(join(root, "etc/airroot/site"), { recursive: true });
  copyFileSync(pki.caCert, join(root, "etc/airroot/site/ca.pem"));
  sh(["ip", "netns", "add", NS]);
  sh(["ip", "-n", NS, "link", "set", "lo", "up"]);
}, 240_000);

function stopNginx(): void {
  nginx?.kill("SIGKILL");
  nginx = undefined;
  for (const pid of nginxPidsUsing(join(dir, "ng"))) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
}

afterAll(() => {
  stopNginx();
  Bun.spawnSync(["ip", "netns", "del", NS]);
  removeScratchDirs();
});

/** nginx serving the image inside the namespace (its loopback only). */
function startNginx(): void {
  const wd = join(dir, "ng");
  mkdirSync(join(wd, "logs"), { recursive: true });
  writeFileSync(join(wd, "nginx.conf"), `user root;
worker_processes 1;
pid ${wd}/nginx.pid;
error_log ${wd}/logs/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  server {
    listen 127.0.0.1:${PORT} ssl;
    ssl_certificate ${pki.serverCert};
    ssl_certificate_key ${pki.serverKey};
    root ${www};
  }
}
`);
  nginx = Bun.spawn(["ip", "netns", "exec", NS, "nginx", "-p", wd, "-c", join(wd, "nginx.conf"), "-g", "daemon off;"], { stdout: "ignore", stderr: "pipe" });
}

async function bootInNetns(cmdline: string, timeoutMs: number): Promise<string> {
  const proc = Bun.spawn(["ip", "netns", "exec", NS, "unshare", "--pid", "--mount", "--fork", "--kill-child=SIGKILL", `--root=${root}`, "/init"],
    { stdout: "pipe", stderr: "pipe", env: { PATH: "/usr/bin:/bin", AIRROOT_CMDLINE: cmdline } });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  try {
    const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    return out + err;
  } finally {
    clearTimeout(timer);
    proc.kill("SIGKILL");
  }
}

const BASE = `airroot.rescue=poweroff airroot.skip=console,drivers,net,sshd airroot.overlaysize=64m airroot.imageurl=https://127.0.0.1:${PORT}/root.sfs`;

test("an image server that comes up late: the root step waits (one line), then boots; airroot status works in the booted system", async () => {
  const late = setTimeout(startNginx, 4000);
  let out = "";
  try {
    out = await bootInNetns(BASE, 90_000);
  } finally {
    clearTimeout(late);
    stopNginx();
  }
  if (process.env.AIRROOT_TEST_VERBOSE) console.log(out);
  const lines = out.split("\n");
  const waiting = lines.filter((l) => /waiting for an image server/.test(l));
  expect(waiting.length).toBe(1); // one line for the state, not one per try
  expect(waiting[0]).toMatch(/^\[\s*[\d.]+\]   waiting for an image server: cannot reach any image server: https:\/\/127\.0\.0\.1:8443\/root\.sfs: .* \(retrying every 30 s at most\)$/);
  expect(out).toMatch(/image server reachable again after \d+ s/);
  expect(out).not.toMatch(/attempt \d of/);
  const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
  expect(at(/Mounting the root filesystem\.\.\.overlay on \/sysroot: \/mnt\/image\/root\.sfs via \/dev\/loop\d+, tmpfs 64m \(on demand from 1 server, @airroot-root pid \d+\)/))
    .toBeGreaterThan(at(/reachable again/));
  expect(out).toContain("AIRROOT-TEST-INIT: pid 1");
  expect(out).toContain("AIRROOT-TEST-PATH: -rwxr-xr-x");
  // The mount daemon's status socket lives in /run/airroot/mounts: moved into the booted system with /run, and bound
  // back into the initramfs environment's fresh /run for the debug sshd.
  for (const where of ["OS", "INITRAMFS"]) {
    expect(out).toMatch(new RegExp(`AIRROOT-STATUS-${where}: /mnt/image/root\\.sfs: [\\d.]+ MiB`));
    expect(out).toMatch(new RegExp(`AIRROOT-STATUS-${where}: .*https://127\\.0\\.0\\.1:8443/root\\.sfs`));
  }
  expect(out).not.toMatch(/AIRROOT-STATUS-\w+: .*(no airroot mount daemon|not found|error)/i);
  expect(out).toContain("AIRROOT-TEST-DONE");
}, 150_000);

test("airroot.roottimeout bounds the wait: no image server within it ends in rescue naming the option", async () => {
  const t0 = Date.now();
  const out = await bootInNetns(`${BASE} airroot.roottimeout=3`, 60_000);
  expect(out.match(/\]   waiting for an image server/g)?.length).toBe(1);
  expect(out).toMatch(/\(retrying every 30 s at most, for at most 3 s\)/);
  expect(out).toMatch(/Mounting the root filesystem\.\.\.FAILED: gave up waiting for an image server after 3 s \(airroot\.roottimeout\): cannot reach any image server/);
  expect(out).toMatch(/boot stopped at step "root"/);
  expect(out).toContain("airroot.rescue=poweroff: powering off");
  expect(Date.now() - t0).toBeLessThan(40_000);
}, 90_000);
