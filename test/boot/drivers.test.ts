// Coldplug against a synthetic modules directory and sysfs tree.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdirSync, writeFileSync } from "node:fs";
import { coldplug, finitFlagsFor, MODULE_INIT_COMPRESSED_FILE, readModaliases } from "../../src/boot/drivers";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";

afterAll(removeScratchDirs);

// A synthetic /lib/modules/V and /sys tree. Loading is recorded instead of calling finit_module: the host kernel
// cannot load another kernel's modules; real loading is exercised by the QEMU test in test/e2e.
function fixture() {
  const dir = scratchDir();
  const mods = join(dir, "modules"), sys = join(dir, "sys");
  mkdirSync(mods, { recursive: true });
  writeFileSync(join(mods, "modules.dep"), [
    "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko",
    "kernel/net/core/failover.ko:",
    "kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio_ring.ko:",
    "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/net/e1000.ko:",
    "kernel/drivers/net/broken.ko:",
    "kernel/drivers/net/needs_broken.ko: kernel/drivers/net/broken.ko",
    "kernel/fs/fuse/fuse.ko:", "kernel/fs/overlayfs/overlay.ko:", "kernel/drivers/block/loop.ko:",
  ].join("\n") + "\n");
  writeFileSync(join(mods, "modules.alias"), [
    "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci",
    "alias virtio:d00000001v* virtio_net",
    "alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000",
    "alias pci:v0000DEADd*sv*sd*bc*sc*i* needs_broken",
  ].join("\n") + "\n");
  writeFileSync(join(mods, "modules.builtin"), "kernel/fs/squashfs/squashfs.ko\n");
  const dev = (p: string, alias: string) => { mkdirSync(join(sys, "devices", p), { recursive: true }); writeFileSync(join(sys, "devices", p, "modalias"), alias + "\n"); };
  dev("pci0000:00/0000:00:02.0", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00");
  dev("pci0000:00/0000:00:03.0", "pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00");
  dev("pci0000:00/0000:00:04.0", "pci:v0000DEADd00000001sv0sd0bc02sc00i00");
  dev("platform/serial8250", "platform:serial8250");
  writeFileSync(join(dir, "proc-modules"), "loop 16384 0 - Live 0x0\n");
  return { dir, mods, sys, dev };
}

test("coldplug loads matched drivers in dependency order, rescans for new devices, reports failures", async () => {
  const f = fixture();
  const loaded: string[] = [];
  const r = await coldplug({
    modulesDir: f.mods, sysDir: f.sys, procModules: join(f.dir, "proc-modules"), blacklist: [],
    params: (m) => (m === "e1000" ? "debug=1" : ""),
    load: (path, params, name) => {
      expect(path).toEndWith(".ko");
      if (name === "e1000") expect(params).toBe("debug=1");
      if (name === "broken") throw Object.assign(new Error("finit_module(broken) failed: ENODEV"), { code: "ENODEV" });
      if (name === "overlay") throw Object.assign(new Error("exists"), { code: "EEXIST" });
      loaded.push(name);
      // virtio_pci binding creates the virtio0 device, whose driver is found on the next pass.
      if (name === "virtio_pci") f.dev("pci0000:00/0000:00:02.0/virtio0", "virtio:d00000001v00001AF4");
    },
  });
  expect(r.missing).toEqual([]); // squashfs is built in, loop already loaded
  expect(loaded).not.toContain("loop");
  expect(loaded).toContain("virtio_net");
  expect(loaded).toContain("e1000");
  expect(loaded.indexOf("virtio_ring")).toBeLessThan(loaded.indexOf("virtio"));
  expect(loaded.indexOf("virtio")).toBeLessThan(loaded.indexOf("virtio_pci"));
  expect(loaded.indexOf("failover")).toBeLessThan(loaded.indexOf("net_failover"));
  expect(new Set(loaded).size).toBe(loaded.length);
  expect(r.failed.map((x) => x.name).sort()).toEqual(["broken", "needs_broken"]);
  expect(r.failed.find((x) => x.name === "needs_broken")!.error).toMatch(/dependency broken failed/);
});

test("blacklist and missing named modules", async () => {
  const f = fixture();
  const loaded: string[] = [];
  const r = await coldplug({ modulesDir: f.mods, sysDir: f.sys, procModules: join(f.dir, "none"), blacklist: ["e1000", "needs-broken"],
    extra: ["nosuchmod"], load: (_p, _a, n) => void loaded.push(n) });
  expect(loaded).not.toContain("e1000");
  expect(loaded).not.toContain("needs_broken");
  expect(r.missing).toEqual(["nosuchmod"]);
});

test("no modules.dep is a clear error", async () => {
  const dir = scratchDir();
  await expect(coldplug({ modulesDir: dir, sysDir: dir })).rejects.toThrow(/no .*modules.dep.*rebuild/);
});

test("readModaliases on the real /sys finds devices and does not loop", () => {
  const a = readModaliases("/sys");
  expect(a.length).toBeGreaterThan(0);
});

test("compressed module files (.ko.xz/.zst/.gz, as dracut copies Debian 13's) are loaded with MODULE_INIT_COMPRESSED_FILE; plain .ko without", () => {
  expect(finitFlagsFor("/usr/lib/modules/6.12.0/kernel/fs/overlayfs/overlay.ko.xz")).toBe(MODULE_INIT_COMPRESSED_FILE);
  expect(finitFlagsFor("/lib/modules/v/kernel/x.ko.zst")).toBe(MODULE_INIT_COMPRESSED_FILE);
  expect(finitFlagsFor("/lib/modules/v/kernel/x.ko.gz")).toBe(MODULE_INIT_COMPRESSED_FILE);
  expect(finitFlagsFor("/lib/modules/v/kernel/x.ko")).toBe(0);
  expect(finitFlagsFor("/lib/modules/v/kernel/x.ko.xz.bak")).toBe(0);
});
