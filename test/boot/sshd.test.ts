// Host keys, the debug sshd config, and its supervisor restarting a killed sshd (real OpenSSH).
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { generateHostKeys, sshdConfig, superviseSshd, testSshdConfig, waitForListener, writeAuthorizedKeys } from "../../src/boot/sshd";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { freePort } from "../helpers/ports";

afterAll(removeScratchDirs);

test("fresh host keys of three types, a config sshd accepts, authorized keys filtered", async () => {
  const dir = scratchDir();
  const keys = await generateHostKeys(join(dir, "ssh"));
  expect(keys.map((k) => k.replace(/.*ssh_host_/, ""))).toEqual(["rsa_key", "ecdsa_key", "ed25519_key"]);
  const first = readFileSync(keys[2], "utf8");
  await generateHostKeys(join(dir, "ssh"));
  expect(readFileSync(keys[2], "utf8")).not.toBe(first); // new keys every boot
  const src = join(dir, "site_keys");
  writeFileSync(src, "ssh-ed25519 AAAAC3Nz test@x\n# comment\ngarbage line\necdsa-sha2-nistp256 AAAA y\n");
  const ak = join(dir, "authorized_keys");
  expect(writeAuthorizedKeys(ak, [src, join(dir, "missing")])).toBe(2);
  const cfg = join(dir, "sshd_config");
  writeFileSync(cfg, sshdConfig({ port: 2222, hostKeys: keys, authorizedKeys: ak, pidFile: join(dir, "sshd.pid") }));
  testSshdConfig(cfg);
  expect(readFileSync(cfg, "utf8")).toContain("Port 2222\n");
  writeFileSync(cfg, "Port notaport\n");
  expect(() => testSshdConfig(cfg)).toThrow(/sshd -t -f .*sshd_config/);
}, 60_000);

test("the supervisor restarts sshd when it dies", async () => {
  const dir = scratchDir();
  const keys = await generateHostKeys(join(dir, "ssh"));
  const port = await freePort("127.0.0.1");
  const pidFile = join(dir, "sshd.pid");
  const cfg = join(dir, "sshd_config");
  writeFileSync(cfg, sshdConfig({ port, hostKeys: keys, authorizedKeys: join(dir, "ak"), pidFile }) + "ListenAddress 127.0.0.1\n");
  const logs: string[] = [];
  const sup = superviseSshd({ config: cfg, maxStarts: 2, maxBackoffMs: 500, log: (l) => logs.push(l) });
  let lastPid = 0;
  try {
    for (let round = 0; round < 2; round++) {
      expect(await waitForListener("127.0.0.1", port, 10_000)).toBe(true);
      for (let i = 0; i < 50 && (!existsSync(pidFile) || Number(readFileSync(pidFile, "utf8")) === lastPid); i++) await Bun.sleep(100);
      const pid = Number(readFileSync(pidFile, "utf8"));
      expect(pid).not.toBe(lastPid);
      lastPid = pid;
      process.kill(pid, "SIGKILL");
      for (let i = 0; i < 50 && (await waitForListener("127.0.0.1", port, 100)); i++) await Bun.sleep(100);
    }
    await sup; // maxStarts reached
    expect(logs.length).toBe(2);
    expect(logs[0]).toMatch(/debug sshd exited .*restarting/);
  } finally {
    try { process.kill(Number(readFileSync(pidFile, "utf8")), "SIGKILL"); } catch {}
  }
}, 60_000);
