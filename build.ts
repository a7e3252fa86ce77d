// Builds dist/airroot: one self-contained executable (Bun runtime + all of airroot), no native addon.
// The baseline target runs on any x86-64 server (the default Bun build needs AVX2).
import { $ } from "bun";
import pkg from "./package.json";

const target = process.env.AIRROOT_TARGET ?? "bun-linux-x64-baseline";
const outfile = process.env.AIRROOT_OUT ?? "dist/airroot";
await $`mkdir -p ${require("node:path").dirname(outfile)}`;
const result = await Bun.build({
  entrypoints: ["src/cli/main.ts"],
  compile: { target: target as any, outfile },
  minify: true,
  // Precompiled bytecode in the executable: JSC loads it instead of parsing and compiling the bundle at start, so
  // every process starts with less private memory (the idle mount daemon: RssAnon ~23 -> ~19-20 MiB, VmRSS ~75 -> ~72
  // MiB) for ~6 MiB more executable. Bytecode needs the ESM output format for the top-level await in main.ts.
  bytecode: true,
  format: "esm",
  sourcemap: "none",
  define: { AIRROOT_VERSION: JSON.stringify(pkg.version) },
});
if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
const size = Bun.file(outfile).size;
console.log(`built ${outfile} (${(size / 1048576).toFixed(1)} MiB, target ${target})`);
