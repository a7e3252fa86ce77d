// Coldplug: loads the kernel modules for the devices present (from /sys modaliases) plus those airroot always needs.
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { release } from "node:os";
import { finitModule } from "../sys/libc";
import { AliasMatcher, dependencyOrder, parseModulesAlias, parseModulesDep } from "./modules";

/** Filesystems and the loop driver the root mount needs whatever the hardware. */
export const ALWAYS_LOAD = ["fuse", "overlay", "squashfs", "loop"];

export interface ColdplugOptions {
  /** /lib/modules/<running kernel> by default. */
  modulesDir?: string;
  /** Where sysfs is mounted; default /sys. */
  sysDir?: string;
  /** Where the list of loaded modules is; default /proc/modules. */
  procModules?: string;
  /** Modules to load besides the matched ones; default ALWAYS_LOAD. */
  always?: string[];
  extra?: string[];
  blacklist?: string[];
  /** Parameters for a module (from `module.param=value` on the command line). */
  params?: (module: string) => string;
  /** Loads one module file; default finit_module(2). Throws on failure (EEXIST is treated as success). */
  load?: (path: string, params: string, name: string) => void;
  /** Rescans after loading, because bus drivers (virtio_pci) create new devices (virtio0) that need drivers. */
  maxPasses?: number;
  log?: (line: string) => void;
}

export interface ColdplugResult {
  loaded: string[];
  failed: { name: string; error: string }[];
  /** Requested by name (always/extra) but not in this kernel's modules. */
  missing: string[];
  modaliases: number;
}

/** finit_module(2) flag: the kernel decompresses the module itself (Linux >= 6.1 with CONFIG_MODULE_DECOMPRESS). */
export const MODULE_INIT_COMPRESSED_FILE = 4;

/** The flags for a module file: compressed ones (.ko.xz, .ko.zst, .ko.gz, as dracut copies trixie's) need the kernel's decompressor. */
export function finitFlagsFor(path: string): number {
  return /\.ko\.(xz|zst|gz)$/.test(path) ? MODULE_INIT_COMPRESSED_FILE : 0;
}

function defaultLoad(path: string, params: string, name: string): void {
  const fd = openSync(path, "r");
  try {
    finitModule(fd, params, finitFlagsFor(path), name);
  } finally {
    closeSync(fd);
  }
}

/** Every modalias under sysDir/devices, without following symlinks; bounded in depth and count. */
export function readModaliases(sysDir: string, maxEntries = 200_000): string[] {
  const out = new Set<string>();
  let seen = 0;
  const walk = (dir: string, depth: number) => {
    if (depth > 40 || seen > maxEntries) return;
    let ents;
    try { ents = readdirSync(dir, { withFileTypes: true }); } catch { return; }
    for (const e of ents) {
      if (++seen > maxEntries) return;
      if (e.isDirectory()) walk(join(dir, e.name), depth + 1);
      else if (e.name === "modalias" && e.isFile()) {
        try {
          const v = readFileSync(join(dir, e.name), "utf8").trim();
          if (v) out.add(v);
        } catch {}
      }
    }
  };
  walk(join(sysDir, "devices"), 0);
  return [...out];
}

function loadedModules(procModules: string): Set<string> {
  try {
    return new Set(readFileSync(procModules, "utf8").split("\n").map((l) => l.split(" ")[0]).filter(Boolean));
  } catch {
    return new Set();
  }
}

function builtinModules(modulesDir: string): Set<string> {
  try {
    return new Set(readFileSync(join(modulesDir, "modules.builtin"), "utf8").split("\n").filter(Boolean)
      .map((p) => p.slice(p.lastIndexOf("/") + 1).replace(/\.ko$/, "").replace(/-/g, "_")));
  } catch {
    return new Set();
  }
}

export async function coldplug(o: ColdplugOptions = {}): Promise<ColdplugResult> {
  const modulesDir = o.modulesDir ?? `/lib/modules/${release()}`;
  const sysDir = o.sysDir ?? "/sys";
  const procModules = o.procModules ?? "/proc/modules";
  const load = o.load ?? defaultLoad;
  const log = o.log ?? (() => {});
  if (!existsSync(join(modulesDir, "modules.dep")))
    throw new Error(`no ${join(modulesDir, "modules.dep")}: the initramfs has no modules for kernel ${release()}; rebuild it for this kernel`);
  const index = parseModulesDep(readFileSync(join(modulesDir, "modules.dep"), "utf8"));
  const aliasText = existsSync(join(modulesDir, "modules.alias")) ? readFileSync(join(modulesDir, "modules.alias"), "utf8") : "";
  const matcher = new AliasMatcher(parseModulesAlias(aliasText));
  const builtin = builtinModules(modulesDir);
  const blacklist = new Set((o.blacklist ?? []).map((m) => m.replace(/-/g, "_")));
  const named = [...(o.always ?? ALWAYS_LOAD), ...(o.extra ?? [])].map((m) => m.replace(/-/g, "_"));
  const missing = named.filter((m) => !index.has(m) && !builtin.has(m));

  const done = new Set<string>(loadedModules(procModules));
  const result: ColdplugResult = { loaded: [], failed: [], missing, modaliases: 0 };
  const tried = new Set<string>();
  const seenAliases = new Set<string>();
  for (let pass = 0; pass < (o.maxPasses ?? 5); pass++) {
    const wanted: string[] = pass === 0 ? [...named] : [];
    for (const alias of readModaliases(sysDir)) {
      if (seenAliases.has(alias)) continue;
      seenAliases.add(alias);
      wanted.push(...matcher.match(alias));
    }
    const order = dependencyOrder(index, wanted.filter((m) => !blacklist.has(m)))
      .filter((m) => !done.has(m) && !tried.has(m) && !blacklist.has(m));
    if (order.length === 0) break;
    for (const name of order) {
      tried.add(name);
      // A failed dependency makes its users fail too; skip them with a clear reason instead of a kernel error.
      const failedDep = index.get(name)!.deps.find((d) => result.failed.some((f) => f.name === d));
      if (failedDep) { result.failed.push({ name, error: `dependency ${failedDep} failed` }); continue; }
      try {
        load(join(modulesDir, index.get(name)!.path), o.params?.(name) ?? "", name);
        result.loaded.push(name);
        done.add(name);
      } catch (e) {
        const err = e as { code?: string; message: string };
        if (err.code === "EEXIST") { done.add(name); continue; }
        result.failed.push({ name, error: err.message });
        log(`module ${name}: ${err.message}`);
      }
    }
    // Let freshly bound bus drivers register their child devices before the next scan.
    await Bun.sleep(50);
  }
  result.modaliases = seenAliases.size;
  return result;
}
