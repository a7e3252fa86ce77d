// The real kernel TPM device path: a QEMU guest (TCG) with swtpm as its TPM runs `airroot tpm` on /dev/tpmrm0 and
// /dev/tpm0, and a second boot on the same TPM state unseals again (PCRs start from zero on every boot).
import { afterAll, expect, test } from "bun:test";
import { chmodSync, existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { buildTestInitramfs, kernelDir } from "../helpers/boot";

afterAll(removeScratchDirs);

/** Runs as the guest's first process (rdinit=): exercises the CLI and prints TPMTEST markers, then powers off. */
const SCRIPT = (phase: "first" | "second") => `#!/usr/bin/busybox sh
/usr/bin/busybox mount -t proc proc /proc
/usr/bin/busybox mount -t sysfs sys /sys
/usr/bin/busybox mount -t devtmpfs dev /dev
/usr/bin/busybox mount -t tmpfs tmp /tmp
export PATH=/usr/bin:/usr/sbin
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /dev/tpmrm0 ] && [ -e /dev/tpm0 ] && break; sleep 1; done
ls /dev/tpm* | sed 's/^/TPMTEST-DEV: /'
airroot tpm info --tpm device 2>&1 | sed 's/^/TPMTEST-INFO: /'
if [ ${phase} = first ]; then
  echo "node credential 0123456789" > /tmp/cred
  airroot tpm seal /tmp/cred --tpm device:/dev/tpmrm0 2>&1 | sed 's/^/TPMTEST-SEAL: /'
fi
airroot tpm unseal /tmp/out --tpm device:/dev/tpm0 2>&1 | sed 's/^/TPMTEST-UNSEAL-TPM0: /'
echo "TPMTEST-GOT: $(cat /tmp/out 2>/dev/null)"
airroot tpm lock --tpm device 2>&1 | sed 's/^/TPMTEST-LOCK: /'
airroot tpm unseal /tmp/out2 --tpm device 2>&1 | sed 's/^/TPMTEST-UNSEAL-AFTER-LOCK: /'
airroot tpm info --tpm device:/dev/nonexistent 2>&1 | sed 's/^/TPMTEST-NOTPM: /'
echo TPMTEST-DONE
poweroff -f
sleep 30
`;

async function bootOnce(dir: string, kdir: string, initrd: string, tpmState: string, log: string): Promise<string> {
  const sock = join(dir, `swtpm-${Date.now()}.sock`);
  const swtpm = Bun.spawn(["swtpm", "socket", "--tpm2", "--tpmstate", `dir=${tpmState}`, "--ctrl", `type=unixio,path=${sock}`],
    { stdout: "ignore", stderr: "pipe" });
  try {
    for (let i = 0; i < 100 && !existsSync(sock); i++) await Bun.sleep(50);
    // No network device at all: the guest talks only to its TPM.
    const qemu = Bun.spawn(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-nographic", "-no-reboot",
      "-nodefaults", "-serial", "stdio", "-net", "none",
      "-kernel", join(kdir, "vmlinuz"), "-initrd", initrd, "-append", "console=ttyS0 rdinit=/tpmtest.sh panic=-1 quiet",
      "-chardev", `socket,id=chrtpm,path=${sock}`, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"],
      { stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => qemu.kill("SIGKILL"), 240_000);
    const out = await new Response(qemu.stdout).text();
    await qemu.exited;
    clearTimeout(timer);
    writeFileSync(log, out);
    return out;
  } finally {
    swtpm.kill("SIGTERM");
    await Promise.race([swtpm.exited, Bun.sleep(3000)]);
    swtpm.kill("SIGKILL");
  }
}

// Terminal escapes dropped first: with `quiet`, the guest's first line follows SeaBIOS's screen reset on the same line.
const lines = (out: string, tag: string) => out.replace(/\x1b(\[[0-9;?=]*[A-Za-z]|c)/g, "").split(/\r?\n/)
  .filter((l) => l.startsWith(`TPMTEST-${tag}: `)).map((l) => l.slice(tag.length + 10));

test("guest: seal on /dev/tpmrm0, unseal on /dev/tpm0, lock refuses, next boot unseals again", async () => {
  const dir = scratchDir();
  const kdir = kernelDir();
  const tpmState = join(dir, "tpmstate");
  Bun.spawnSync(["mkdir", "-p", tpmState]);
  const outs: string[] = [];
  for (const phase of ["first", "second"] as const) {
    const script = join(dir, `tpmtest-${phase}.sh`);
    writeFileSync(script, SCRIPT(phase));
    chmodSync(script, 0o755);
    const initrd = buildTestInitramfs(join(dir, `initrd-${phase}.zst`), [[script, "tpmtest.sh"]], kdir);
    const out = await bootOnce(dir, kdir, initrd, tpmState, join(dir, `console-${phase}.log`));
    if (!out.includes("TPMTEST-DONE")) throw new Error(`guest did not finish (${phase} boot); console:\n${out.slice(-4000)}`);
    outs.push(out);
  }
  const [first, second] = outs;
  expect(lines(first, "DEV").join(" ")).toMatch(/\/dev\/tpm0.*\/dev\/tpmrm0/);
  expect(lines(first, "INFO").join("\n")).toMatch(/transport\s+device:\/dev\/tpmrm0/);
  expect(lines(first, "SEAL").join("\n")).toMatch(/sealed 27 bytes: object 0x81000100, PCR 15/);
  expect(lines(first, "GOT")[0]).toBe("node credential 0123456789");
  expect(lines(first, "LOCK").join("\n")).toMatch(/locked: PCR 15 extended/);
  expect(lines(first, "UNSEAL-AFTER-LOCK").join("\n")).toMatch(/locked for this boot/);
  expect(lines(first, "NOTPM").join("\n")).toMatch(/no TPM: could not open \/dev\/nonexistent: does not exist/);
  // Second boot: the credential persisted in the TPM, PCR 15 is back to zero, it unseals again.
  expect(lines(second, "INFO").join("\n")).toMatch(/credential\s+sealed at 0x81000100/);
  expect(lines(second, "GOT")[0]).toBe("node credential 0123456789");
  expect(lines(second, "UNSEAL-AFTER-LOCK").join("\n")).toMatch(/locked for this boot/);
}, 900_000);
