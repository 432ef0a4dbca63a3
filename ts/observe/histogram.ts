/**
 * A histogram that counts in place and hands prom-client its series only when scraped. prom-client's
 * own `observe` checks and hashes the labels object and looks the bucket up by a number-keyed
 * property on every call: about 1 µs, measured here, against a bus request's 10 µs round trip.
 * Here an observation is a lookup of its series by a key its caller keeps, a scan of 14 bounds
 * and three additions (~50 ns); the series are built into prom-client's metric shape (what
 * `metric.get()` returns, which the registry formats, merges for a cluster and turns to JSON) at
 * each scrape.
 */
import type { Labels, PromRegistry } from './prom.js'

/** One label set's counts. */
export interface Series {
  readonly labels: Labels
  /** Observations per bucket (not cumulative), the last one past every bound. */
  readonly counts: Float64Array
  sum: number
  count: number
}

/** A value of prom-client's metric shape. */
interface Value {
  labels: Record<string, string | number>
  value: number
  metricName: string
}

/** A prom-client registry as a histogram registers itself in it. */
export interface MetricRegistry extends PromRegistry {
  registerMetric(metric: unknown): void
}

export class Histogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly series = new Map<string, Series>()

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    registry: MetricRegistry,
  ) {
    registry.registerMetric(this)
  }

  /** The series of `key` (a string its caller builds from the label values), made with `labels` the first time. */
  seriesOf(key: string, labels: () => Labels): Series {
    let series = this.series.get(key)
    if (series === undefined) {
      series = { labels: labels(), counts: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 }
      this.series.set(key, series)
    }
    return series
  }

  /** Every series, for a scrape. */
  all(): Iterable<Series> {
    return this.series.values()
  }

  /** Counts `value` in `series`. */
  observe(series: Series, value: number): void {
    const bounds = this.bounds
    let i = 0
    while (i < bounds.length && value > bounds[i]!) i++
    series.counts[i]!++
    series.sum += value
    series.count++
  }

  /** prom-client's metric shape: `_bucket` (cumulative, `le`), `_sum` and `_count` per series. */
  get(): { name: string; help: string; type: string; aggregator: string; values: Value[] } {
    const values: Value[] = []
    for (const { labels, counts, sum, count } of this.series.values()) {
      let cumulative = 0
      for (let i = 0; i < counts.length; i++) {
        cumulative += counts[i]!
        values.push({ labels: { ...labels, le: i < this.bounds.length ? this.bounds[i]! : '+Inf' }, value: cumulative, metricName: `${this.name}_bucket` })
      }
      values.push({ labels, value: sum, metricName: `${this.name}_sum` })
      values.push({ labels, value: count, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  /** What `registry.resetMetrics()` calls. */
  reset(): void {
    this.series.clear()
  }
}
