// Kernel module index: parses modules.dep and modules.alias, matches device modaliases, orders loads by dependency.

export interface ModuleInfo {
  name: string;   // normalised: '-' replaced by '_'
  path: string;   // relative to /lib/modules/VERSION
  deps: string[]; // names, as listed by depmod (the full transitive set)
}

/** "kernel/drivers/net/virtio_net.ko" -> "virtio_net"; names use '_' for '-' as the kernel does. */
export function moduleName(path: string): string {
  const base = path.slice(path.lastIndexOf("/") + 1);
  return base.replace(/\.ko(\.(xz|gz|zst))?$/, "").replace(/-/g, "_");
}

/** Parses modules.dep ("path: dep-path dep-path"). Malformed lines are skipped, never fatal. */
export function parseModulesDep(text: string): Map<string, ModuleInfo> {
  const out = new Map<string, ModuleInfo>();
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const path = line.slice(0, colon).trim();
    if (!/\.ko(\.(xz|gz|zst))?$/.test(path) || path.includes("..") || path.startsWith("/")) continue;
    const deps = line.slice(colon + 1).trim().split(/\s+/).filter(Boolean).map(moduleName);
    out.set(moduleName(path), { name: moduleName(path), path, deps });
  }
  return out;
}

export interface Alias {
  pattern: string;
  module: string;
  re: RegExp;
}

/** fnmatch(3)-style glob (*, ?, [set], [!set]) to an anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = "^";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[") {
      const end = glob.indexOf("]", i + 2);
      if (end < 0) { re += "\\["; continue; }
      let set = glob.slice(i + 1, end);
      const neg = set.startsWith("!") || set.startsWith("^");
      if (neg) set = set.slice(1);
      re += `[${neg ? "^" : ""}${set.replace(/[\\\]^]/g, "\\$&")}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  try {
    return new RegExp(re + "$", "s");
  } catch {
    // An invalid set such as "[z-a]" in a corrupt table: match the pattern literally instead.
    return new RegExp("^" + glob.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$", "s");
  }
}

/** Parses modules.alias ("alias PATTERN module"). Malformed lines are skipped. */
export function parseModulesAlias(text: string): Alias[] {
  const out: Alias[] = [];
  for (const line of text.split("\n")) {
    const m = /^alias\s+(\S+)\s+(\S+)\s*$/.exec(line);
    if (!m || m[1].length > 1024) continue;
    out.push({ pattern: m[1], module: m[2].replace(/-/g, "_"), re: globToRegExp(m[1]) });
  }
  return out;
}

/** Matches modaliases against the alias table; aliases are bucketed by the bus prefix ("pci:", "virtio:") for speed. */
export class AliasMatcher {
  private buckets = new Map<string, Alias[]>();
  private wild: Alias[] = [];
  constructor(aliases: Alias[]) {
    for (const a of aliases) {
      const colon = a.pattern.indexOf(":");
      const prefix = colon > 0 ? a.pattern.slice(0, colon) : "";
      if (!prefix || /[*?[]/.test(prefix)) { this.wild.push(a); continue; }
      let b = this.buckets.get(prefix);
      if (!b) this.buckets.set(prefix, (b = []));
      b.push(a);
    }
  }

  /** Module names whose alias matches this modalias, in table order, without duplicates. */
  match(modalias: string): string[] {
    const colon = modalias.indexOf(":");
    const cands = [...(this.buckets.get(colon > 0 ? modalias.slice(0, colon) : "") ?? []), ...this.wild];
    const out: string[] = [];
    for (const a of cands) if (a.re.test(modalias) && !out.includes(a.module)) out.push(a.module);
    return out;
  }
}

/**
 * The load order for `wanted` modules: each module after all of its dependencies, each module once. Unknown names
 * are left out (the caller reports them); a dependency cycle (corrupt modules.dep) cannot loop forever.
 */
export function dependencyOrder(index: Map<string, ModuleInfo>, wanted: string[]): string[] {
  const order: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (name: string) => {
    name = name.replace(/-/g, "_");
    if (done.has(name) || visiting.has(name)) return;
    const info = index.get(name);
    if (!info) return;
    visiting.add(name);
    // depmod lists the whole transitive set; recursing over each dependency's own list orders them correctly.
    for (const d of info.deps) visit(d);
    visiting.delete(name);
    done.add(name);
    order.push(name);
  };
  for (const w of wanted) visit(w);
  return order;
}
