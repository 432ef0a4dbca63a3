/**
 * prom-client, an optional peer dependency: the slice of it Orrery uses, and its loader. The Node
 * entry provides the loader (`import('prom-client')`), so nothing loads it until a registry is
 * given; a page has none (prom-client needs Node's modules), and asking for metrics there is
 * refused with UNSUPPORTED.
 */
import { OrreryError } from '../errors.js'

/** Labels of one series. */
export type Labels = Record<string, string>

/** What a metric's `collect` may call on it (prom-client calls `collect` at each scrape). */
export interface Collected {
  reset(): void
}

/** A prom-client Counter. */
export interface PromCounter extends Collected {
  inc(labels: Labels, value?: number): void
}

/** A prom-client Gauge. */
export interface PromGauge extends Collected {
  set(labels: Labels, value: number): void
  inc(labels: Labels, value?: number): void
  remove(labels: Labels): void
}

/** A prom-client Histogram. */
export interface PromHistogram {
  observe(labels: Labels, value: number): void
}

/** How a metric is declared. */
export interface MetricConfig {
  name: string
  help: string
  labelNames: readonly string[]
  registers: unknown[]
  /** Called at every scrape, before the values are read. */
  collect?: () => void
}

/** The slice of prom-client Orrery uses. */
export interface PromClient {
  Counter: new (config: MetricConfig) => PromCounter
  Histogram: new (config: MetricConfig & { buckets?: number[] }) => PromHistogram
  Gauge: new (config: MetricConfig) => PromGauge
}

/** A prom-client `Registry`, as the user passes it. */
export interface PromRegistry {
  getSingleMetric(name: string): unknown
}

type ClientLoader = () => Promise<PromClient>
let loadClient: ClientLoader | undefined

/** @internal Called by the Node entry. */
export function usePromClient(loader: ClientLoader): void {
  loadClient = loader
}

/** prom-client, loaded on first use (UNSUPPORTED where the entry gave no loader: a page). */
export async function promClient(): Promise<PromClient> {
  if (!loadClient) throw new OrreryError('UNSUPPORTED', 'prom-client metrics are available in Node only')
  return loadClient()
}
