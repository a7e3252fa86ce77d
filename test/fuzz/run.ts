// `make fuzz`: every parser of untrusted input (test/fuzz/targets.ts), 100,000 mutated cases each by default.
// FUZZ_CASES=N, FUZZ_SEED=N, FUZZ_ONLY=substring. Exits non-zero on any crash, hang or memory growth over 256 MiB.
import { runTarget } from "./harness";
import { TARGETS } from "./targets";

const cases = Number(process.env.FUZZ_CASES ?? 100_000);
const seed = Number(process.env.FUZZ_SEED ?? 0x5eed);
const only = process.env.FUZZ_ONLY;
let bad = 0;
console.log(`fuzz: ${cases} cases per target, seed ${seed}`);
for (const t of TARGETS.filter((x) => !only || x.name.includes(only))) {
  const r = await runTarget(t, { cases, seed, maxSeconds: 900 });
  const ok = r.crashed === 0 && r.rssGrowthMiB < 256;
  if (!ok) bad++;
  console.log(`${ok ? "ok  " : "FAIL"} ${t.name}: ${r.cases} cases in ${r.seconds.toFixed(1)} s (${r.accepted} accepted, ${r.refused} refused, ` +
    `${r.crashed} crashed or hung), slowest ${r.slowestMs.toFixed(1)} ms, RSS ${r.rssGrowthMiB >= 0 ? "+" : ""}${r.rssGrowthMiB.toFixed(0)} MiB`);
  for (const c of r.crashes) console.log(`     case ${c.caseNo}: ${c.error}\n     input ${c.input}`);
}
console.log(bad ? `${bad} target(s) failed` : "fuzz: no crash, no hang, bounded memory");
process.exit(bad ? 1 : 0);
