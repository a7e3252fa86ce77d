// Figures of a storm run: percentiles, the spread of bytes over the mirrors, Prometheus counters from /metrics text.
export function percentile(values: number[], p: number): number {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** Largest distance of any share from an even one, as a fraction of the even share (0.1 = ±10 %). */
export function spread(values: number[]): number {
  const total = values.reduce((a, b) => a + b, 0);
  if (!values.length || total === 0) return NaN;
  const even = total / values.length;
  return Math.max(...values.map((v) => Math.abs(v - even) / even));
}

/** Sum of the samples of `name` in a Prometheus text page whose label text (`a="x",b="y"`) passes `keep`. */
export function counterSum(page: string, name: string, keep: (labels: string) => boolean = () => true): number {
  let sum = 0;
  for (const l of page.split("\n")) {
    const m = new RegExp(`^${name}(?:\\{([^}]*)\\})? ([0-9.eE+-]+)$`).exec(l);
    if (m && keep(m[1] ?? "")) sum += Number(m[2]);
  }
  return sum;
}
