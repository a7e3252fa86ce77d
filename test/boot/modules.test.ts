// modules.dep / modules.alias parsing, modalias globbing and dependency order.
import { expect, test } from "bun:test";
import { AliasMatcher, dependencyOrder, globToRegExp, moduleName, parseModulesAlias, parseModulesDep } from "../../src/boot/modules";

const DEP = `kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
kernel/fs/fuse/cuse.ko: kernel/fs/fuse/fuse.ko
kernel/fs/fuse/fuse.ko:
kernel/drivers/x/some-thing.ko.xz:
garbage line without colon
/abs/path.ko:
`;
const ALIAS = `# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v00008086d0000100[FG]sv*sd*bc*sc*i* e1000
alias devname:fuse fuse
alias char-major-10-229 fuse
alias fs-fuse fuse
alias acpi*:PNP0501:* 8250_pnp
alias bogus
`;

test("modules.dep parsing: names normalised, malformed lines skipped", () => {
  const dep = parseModulesDep(DEP);
  expect(dep.get("virtio_net")!.deps).toEqual(["net_failover", "failover", "virtio", "virtio_ring"]);
  expect(dep.get("some_thing")!.path).toBe("kernel/drivers/x/some-thing.ko.xz");
  expect(dep.has("path")).toBe(false);
  expect(moduleName("a/b/foo-bar.ko.zst")).toBe("foo_bar");
});

test("dependency order: every module after its dependencies, each once, unknown names dropped", () => {
  const dep = parseModulesDep(DEP);
  const order = dependencyOrder(dep, ["virtio_net", "virtio_pci", "fuse", "nonexistent", "virtio-net"]);
  expect(new Set(order).size).toBe(order.length);
  expect(order).not.toContain("nonexistent");
  for (const m of order) for (const d of dep.get(m)!.deps) expect(order.indexOf(d)).toBeLessThan(order.indexOf(m));
  expect(order.indexOf("virtio_ring")).toBeLessThan(order.indexOf("virtio"));
  // A corrupt cycle terminates.
  const cyc = parseModulesDep("a.ko: b.ko\nb.ko: a.ko\n");
  expect(dependencyOrder(cyc, ["a"]).sort()).toEqual(["a", "b"]);
});

test("alias globbing matches like fnmatch", () => {
  expect(globToRegExp("pci:v00008086d0000100[FG]sv*").test("pci:v00008086d0000100Gsv1")).toBe(true);
  expect(globToRegExp("a?c").test("abc")).toBe(true);
  expect(globToRegExp("a?c").test("ac")).toBe(false);
  expect(globToRegExp("x[!ab]").test("xc")).toBe(true);
  expect(globToRegExp("x[!ab]").test("xa")).toBe(false);
  expect(globToRegExp("a.b+(c)").test("a.b+(c)")).toBe(true);
  expect(globToRegExp("a.b").test("axb")).toBe(false);
  expect(globToRegExp("[unclosed").test("[unclosed")).toBe(true);
  expect(globToRegExp("x[z-a]").test("x[z-a]")).toBe(true);
});

test("modalias matching against a synthetic modules.alias", () => {
  const m = new AliasMatcher(parseModulesAlias(ALIAS));
  expect(m.match("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00")).toEqual(["virtio_pci"]);
  expect(m.match("virtio:d00000001v00001AF4")).toEqual(["virtio_net"]);
  expect(m.match("pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00")).toEqual(["e1000"]);
  expect(m.match("pci:v00008086d0000100Fsv0sd0bc02sc00i00")).toEqual(["e1000"]);
  expect(m.match("pci:v00008086d00001234sv0sd0bc02sc00i00")).toEqual([]);
  expect(m.match("acpi:PNP0501:")).toEqual(["8250_pnp"]);
  expect(m.match("")).toEqual([]);
});

test("fuzz: random alias and dep text never throws", () => {
  let seed = 7;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  const chars = "alias pci:v*?[]!^\\.ko: \n-_/abc";
  for (let i = 0; i < 2000; i++) {
    const t = Array.from({ length: rnd(120) }, () => chars[rnd(chars.length)]).join("");
    const m = new AliasMatcher(parseModulesAlias(t));
    m.match("pci:v0000abcd");
    dependencyOrder(parseModulesDep(t), ["a", "abc"]);
  }
});
