// The spread order (weighted rendezvous hashing) as a property: shares even or proportional to weight, a removed
// server moves only its own nodes and they spread over the rest, last-resort sources, the same order on every run.
// Shares are random per node name (no node knows the others), so the bound is statistical: a binomial count stays
// within 4 standard deviations (and the whole split passes a chi-square test at p = 0.001); the measured worst
// deviations are printed for the README.
import { expect, test } from "bun:test";
import { rankSources, weightedScore, parseWeight, checkWeight } from "../../src/source/order";

const mirrors = (m: number) => Array.from({ length: m }, (_, i) => `https://m${i + 1}.example/images/${"ab".repeat(32)}.sfs`);
const names = (n: number, style: number) => Array.from({ length: n }, (_, i) =>
  style === 0 ? `n${String(i + 1).padStart(4, "0")}` : `rack${Math.floor(i / 40) + 1}-node${(i % 40) + 1}`);
const first = (urls: string[], node: string, weights?: number[]) =>
  urls[rankSources("spread", urls.map((href, i) => ({ href, weight: weights?.[i] })), node)[0]];

// Chi-square critical values at p = 0.001 for 1..7 degrees of freedom.
const CHI2_999 = [0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32];

function checkSplit(counts: number[], shares: number[], n: number): number {
  let chi2 = 0, worst = 0;
  counts.forEach((c, i) => {
    const e = n * shares[i];
    expect(Math.abs(c - e)).toBeLessThanOrEqual(4 * Math.sqrt(e * (1 - shares[i])));
    chi2 += (c - e) ** 2 / e;
    worst = Math.max(worst, Math.abs(c - e) / e);
  });
  expect(chi2).toBeLessThan(CHI2_999[counts.length - 1]);
  return worst;
}

const report: string[] = [];

test("equal weights: 64..10000 node names over 3..8 mirrors spread evenly", () => {
  for (const n of [64, 256, 1000, 10000]) for (let m = 3; m <= 8; m++) {
    const worst: number[] = [];
    for (const style of [0, 1]) {
      const urls = mirrors(m), counts = new Array(m).fill(0);
      for (const node of names(n, style)) counts[urls.indexOf(first(urls, node))]++;
      worst.push(checkSplit(counts, new Array(m).fill(1 / m), n));
    }
    if (n === 10000) for (const w of worst) expect(w).toBeLessThan(0.1);
    report.push(`equal ${n} nodes / ${m} mirrors: worst mirror ${(Math.max(...worst) * 100).toFixed(1)}% off even (1 sigma ${(100 * Math.sqrt((m - 1) / n)).toFixed(1)}%)`);
  }
});

test("weights: shares proportional to weight (10:1, 100 Gb/s beside 10 Gb/s mirrors, fractions)", () => {
  const cases = [[10, 1, 1], [10, 10, 1, 1, 1], [1, 2, 3, 4], [2.5, 1, 1, 0.5, 1, 1, 1, 1]];
  for (const weights of cases) for (const n of [1000, 10000]) {
    const urls = mirrors(weights.length), counts = new Array(weights.length).fill(0);
    for (const node of names(n, 0)) counts[urls.indexOf(first(urls, node, weights))]++;
    const total = weights.reduce((a, b) => a + b, 0);
    const worst = checkSplit(counts, weights.map((w) => w / total), n);
    report.push(`weights ${weights.join(":")} ${n} nodes: ${counts.join(" ")}, worst ${(worst * 100).toFixed(1)}% off proportional`);
  }
});

test("removing a mirror moves only the nodes that had it first, and they spread over the rest by weight", () => {
  for (const [m, weights] of [[3, undefined], [5, undefined], [8, undefined], [4, [10, 1, 1, 1]], [5, [1, 10, 3, 1, 1]]] as const) {
    const urls = mirrors(m), nodes = names(1000, 1);
    for (let gone = 0; gone < m; gone++) {
      const rest = urls.filter((_, i) => i !== gone), restW = weights?.filter((_, i) => i !== gone);
      const moved = new Map<string, number>();
      let movers = 0;
      for (const node of nodes) {
        const before = first(urls, node, weights as number[] | undefined), after = first(rest, node, restW);
        if (before !== urls[gone]) { expect(after).toBe(before); continue; }
        movers++;
        // Where a mover goes is its second choice with the full list: a dead mirror (failover) and a removed one agree.
        const full = rankSources("spread", urls.map((href, i) => ({ href, weight: weights?.[i] })), node).map((i) => urls[i]);
        expect(after).toBe(full[1]);
        moved.set(after, (moved.get(after) ?? 0) + 1);
      }
      if (movers >= 100) {
        const w = restW ?? rest.map(() => 1), total = w.reduce((a, b) => a + b, 0);
        checkSplit(rest.map((u) => moved.get(u) ?? 0), w.map((x) => x / total), movers);
      }
    }
  }
});

test("weight 0 is last resort: after every weighted source, spread among themselves; all 0 still spreads", () => {
  const urls = mirrors(5), weights = [0, 1, 1, 0, 2];
  const lastTwo = new Map<string, number>();
  for (const node of names(1000, 0)) {
    const order = rankSources("spread", urls.map((href, i) => ({ href, weight: weights[i] })), node);
    expect(order.slice(0, 3).sort()).toEqual([1, 2, 4]);
    expect(order.slice(3).sort()).toEqual([0, 3]);
    lastTwo.set(urls[order[3]], (lastTwo.get(urls[order[3]]) ?? 0) + 1);
  }
  checkSplit([lastTwo.get(urls[0]) ?? 0, lastTwo.get(urls[3]) ?? 0], [0.5, 0.5], 1000);
  const counts = [0, 0, 0];
  for (const node of names(3000, 0)) counts[rankSources("spread", mirrors(3).map((href) => ({ href, weight: 0 })), node)[0]]++;
  checkSplit(counts, [1 / 3, 1 / 3, 1 / 3], 3000);
});

test("deterministic: the same ranks on every run and whatever the list order; equal weights = the plain hash", () => {
  const urls = mirrors(6);
  // Fixed expectations: a change of the hash would move every booted node's mirror, so it must be deliberate.
  expect(["n0001", "n0002", "n0003", "rack7-node3"].map((n) => urls.indexOf(first(urls, n)))).toEqual([2, 2, 5, 1]);
  for (const node of names(200, 1)) {
    const a = rankSources("spread", urls.map((href) => ({ href })), node).map((i) => urls[i]);
    const rev = [...urls].reverse();
    expect(rankSources("spread", rev.map((href) => ({ href })), node).map((i) => rev[i])).toEqual(a);
    expect(rankSources("spread", urls.map((href) => ({ href, weight: 7 })), node).map((i) => urls[i])).toEqual(a);
  }
  expect(weightedScore("n1", urls[0], 2)).toBe(2 * weightedScore("n1", urls[0], 1));
});

test("weights are checked: numbers from 0 to 1e6, clear errors", () => {
  expect(parseWeight("10")).toBe(10);
  expect(parseWeight("2.5")).toBe(2.5);
  expect(parseWeight("0")).toBe(0);
  for (const bad of ["", "-1", "1e3", "abc", "NaN", "10000000", "1.2.3", "0x10"]) expect(() => parseWeight(bad, "w")).toThrow(/^w ".*" is not a number from 0/);
  for (const bad of [-1, NaN, Infinity, 2e6]) expect(() => checkWeight(bad)).toThrow(/must be a number from 0/);
  expect(() => rankSources("spread", [{ href: "a", weight: -1 }], "n")).toThrow(/must be a number/);
});

test("measured spread (for the README)", () => {
  console.log(report.join("\n"));
});
