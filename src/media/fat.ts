// A FAT filesystem image built reproducibly: mkfs.fat --invariant (fixed volume id and times), directories and
// files added with mtools in sorted order, every timestamp SOURCE_DATE_EPOCH (mtools honours it; mcopy -m keeps the
// source's mtime, which the caller set to it).
import { statSync, utimesSync } from "node:fs";
import { runTool } from "./tools";

export interface FatFile { /** Path in the image, e.g. EFI/BOOT/BOOTX64.EFI */ path: string; /** Host file. */ src: string }

/** Size in KiB for the files plus FAT, directories and slack; at least 1 MiB. */
export function fatSizeKiB(files: FatFile[]): number {
  const bytes = files.reduce((s, f) => s + Math.ceil(statSync(f.src).size / 4096) * 4096, 0);
  return Math.max(1024, Math.ceil((bytes * 1.03 + 512 * 1024) / 1024));
}

export function makeFat(out: string, label: string, files: FatFile[], epoch: number, step: string): void {
  const env = { SOURCE_DATE_EPOCH: String(epoch), MTOOLS_SKIP_CHECK: "1" };
  runTool(step, ["mkfs.fat", "-C", "--invariant", "-n", label, out, String(fatSizeKiB(files))], env);
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.path.split("/");
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
  }
  const sortedDirs = [...dirs].sort((a, b) => a.split("/").length - b.split("/").length || (a < b ? -1 : 1));
  if (sortedDirs.length) runTool(step, ["mmd", "-i", out, ...sortedDirs.map((d) => `::/${d}`)], env);
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : 1))) {
    utimesSync(f.src, epoch, epoch);
    runTool(step, ["mcopy", "-m", "-i", out, f.src, `::/${f.path}`], env);
  }
}
