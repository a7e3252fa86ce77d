// The Prometheus text exposition format 0.0.4 (what a Prometheus scrape and node_exporter's textfile collector read):
// a writer that escapes every label value, and counters, gauges and histograms kept in a registry. Escaping is done
// here, once, so no caller can break a line with a node name, path or URL; keeping the number of label values small
// is each caller's job (fixed sets), with MAX_SERIES per metric as the backstop against a bug.

export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Label sets a metric may grow to; a new one past that is counted under every label = OVERFLOW. */
export const MAX_SERIES = 1000;
export const OVERFLOW = "_overflow";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export type Labels = Readonly<Record<string, string>>;
export type MetricType = "counter" | "gauge" | "histogram" | "untyped";

/**
 * A label value between double quotes: backslash, double quote and line feed are the three characters the format
 * escapes (`\\`, `\"`, `\n`); everything else is taken as it is. The format is UTF-8, which has no encoding for a lone
 * UTF-16 surrogate, so one becomes U+FFFD here rather than on the way out.
 */
export function escapeLabelValue(v: string): string {
  return v.toWellFormed().replace(/[\\"\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`));
}

/** HELP text escapes only backslash and line feed. */
export function escapeHelp(v: string): string {
  return v.toWellFormed().replace(/[\\\n]/g, (c) => (c === "\n" ? "\\n" : "\\\\"));
}

/** A sample value as the format spells it (Go's ParseFloat reads all of these). */
export function formatValue(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}

function checkName(name: string): void {
  if (!METRIC_NAME.test(name)) throw new Error(`invalid Prometheus metric name "${name}"`);
}

function checkLabelName(name: string): void {
  // Names starting with __ are reserved for Prometheus itself; "le" is the histogram bucket label.
  if (!LABEL_NAME.test(name) || name.startsWith("__")) throw new Error(`invalid Prometheus label name "${name}"`);
}

export function formatLabels(labels: Labels | undefined): string {
  if (!labels) return "";
  const parts = Object.entries(labels).map(([k, v]) => { checkLabelName(k); return `${k}="${escapeLabelValue(v)}"`; });
  return parts.length ? `{${parts.join(",")}}` : "";
}

export interface Sample {
  /** The metric name's suffix for this line (histograms: "_bucket", "_sum", "_count"). */
  suffix?: string;
  labels?: Labels;
  value: number;
}

/**
 * Writes families one after the other: the format wants each metric's HELP, TYPE and samples together and each
 * metric once, so a caller hands all of one metric's samples (every mount, every source) in one family() call.
 */
export class TextWriter {
  private readonly out: string[] = [];
  private readonly seen = new Set<string>();

  family(name: string, type: MetricType, help: string, samples: readonly Sample[]): this {
    checkName(name);
    if (this.seen.has(name)) throw new Error(`metric ${name} written twice`);
    this.seen.add(name);
    this.out.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
    for (const s of samples) this.out.push(`${name}${s.suffix ?? ""}${formatLabels(s.labels)} ${formatValue(s.value)}`);
    return this;
  }

  text(): string { return this.out.length ? this.out.join("\n") + "\n" : ""; }
}

// ---- a registry of live metrics (the server's) ----

interface Series<T> { labels: Labels; data: T }

abstract class Metric<T> {
  private readonly series = new Map<string, Series<T>>();

  constructor(readonly name: string, readonly help: string, readonly labelNames: readonly string[]) {
    checkName(name);
    labelNames.forEach(checkLabelName);
  }

  protected abstract fresh(): T;
  abstract samples(): Sample[];
  abstract readonly type: MetricType;

  /** The series for these labels (missing names count as ""), created on first use. */
  protected at(labels: Labels): T {
    let values = this.labelNames.map((n) => labels[n] ?? "");
    let key = JSON.stringify(values);
    if (!this.series.has(key) && this.series.size >= MAX_SERIES) {
      values = this.labelNames.map(() => OVERFLOW); // one more series at most, whatever comes
      key = JSON.stringify(values);
    }
    let s = this.series.get(key);
    if (!s) {
      s = { labels: Object.fromEntries(this.labelNames.map((n, i) => [n, values[i]])), data: this.fresh() };
      this.series.set(key, s);
    }
    return s.data;
  }

  protected all(): Series<T>[] { return [...this.series.values()]; }

  /** Forgets every series (a gauge refilled from a store at each scrape). */
  reset(): void { this.series.clear(); }
}

export class Counter extends Metric<{ v: number }> {
  readonly type = "counter";
  protected fresh() { return { v: 0 }; }
  inc(labels: Labels = {}, n = 1): void {
    if (!(n >= 0)) throw new RangeError(`counter ${this.name}: cannot add ${n}`);
    this.at(labels).v += n;
  }
  /** Takes a total kept elsewhere (e.g. by the listener), which only ever grows. */
  mirror(labels: Labels, total: number): void { this.at(labels).v = total; }
  /** Makes the series exist at 0, so a rate() sees the first increment. */
  touch(labels: Labels = {}): void { this.at(labels); }
  samples(): Sample[] { return this.all().map((s) => ({ labels: s.labels, value: s.data.v })); }
}

export class Gauge extends Metric<{ v: number }> {
  readonly type = "gauge";
  protected fresh() { return { v: 0 }; }
  set(labels: Labels, v: number): void { this.at(labels).v = v; }
  samples(): Sample[] { return this.all().map((s) => ({ labels: s.labels, value: s.data.v })); }
}

/** Upper bounds (seconds) for request latencies: 1 ms to 10 s. */
export const LATENCY_BUCKETS: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class Histogram extends Metric<{ counts: number[]; sum: number; count: number }> {
  readonly type = "histogram";
  readonly buckets: readonly number[];

  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[] = LATENCY_BUCKETS) {
    super(name, help, labelNames);
    if (labelNames.includes("le")) throw new Error(`histogram ${name}: "le" is the bucket label`);
    if (!buckets.length || buckets.some((b, i) => !Number.isFinite(b) || (i > 0 && b <= buckets[i - 1]))) {
      throw new Error(`histogram ${name}: buckets must be finite and strictly increasing`);
    }
    this.buckets = [...buckets];
  }

  protected fresh() { return { counts: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 }; }

  observe(labels: Labels, v: number): void {
    const d = this.at(labels);
    const i = this.buckets.findIndex((b) => v <= b);
    if (i >= 0) d.counts[i]++;
    d.sum += v;
    d.count++;
  }

  samples(): Sample[] {
    return this.all().flatMap(({ labels, data }) => {
      let cum = 0;
      const buckets = this.buckets.map((b, i) => ({ suffix: "_bucket", labels: { ...labels, le: formatValue(b) }, value: (cum += data.counts[i]) }));
      return [...buckets, { suffix: "_bucket", labels: { ...labels, le: "+Inf" }, value: data.count },
        { suffix: "_sum", labels, value: data.sum }, { suffix: "_count", labels, value: data.count }];
    });
  }
}

type AnyMetric = Counter | Gauge | Histogram;

export class Registry {
  private readonly metrics: AnyMetric[] = [];
  private readonly collectors: (() => void)[] = [];

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter { return this.add(new Counter(name, help, labelNames)); }
  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge { return this.add(new Gauge(name, help, labelNames)); }
  histogram(name: string, help: string, labelNames: readonly string[] = [], buckets?: readonly number[]): Histogram {
    return this.add(new Histogram(name, help, labelNames, buckets));
  }

  /** Runs before each render: sets gauges that are read from elsewhere (a database, a socket count). */
  onCollect(fn: () => void): void { this.collectors.push(fn); }

  render(): string {
    for (const c of this.collectors) c();
    const w = new TextWriter();
    for (const m of this.metrics) w.family(m.name, m.type, m.help, m.samples());
    return w.text();
  }

  private add<M extends AnyMetric>(m: M): M {
    if (this.metrics.some((x) => x.name === m.name)) throw new Error(`metric ${m.name} registered twice`);
    this.metrics.push(m);
    return m;
  }
}
