/**
 * What agents record as they work: messages handled and failed, handler latency and handlers in
 * flight, labelled by agent, type and capability, and the inbox backlog and lag of autoscaled
 * types, labelled by type. Handled and in flight change on every message, so they are counted
 * in place and handed to prom-client at the scrape (the handled count is the latency
 * histogram's count); failures and autoscaler ticks are rare and go to prom-client at once.
 */
import { Histogram, type MetricRegistry } from './histogram.js'
import type { Labels, PromClient, PromGauge } from './prom.js'

/** What agents record. */
export interface AgentMetrics {
  handled(agent: string, type: string, capability: string, seconds: number): void
  failed(agent: string, type: string, capability: string, kind: 'transient' | 'permanent' | 'fatal' | 'rate-limited'): void
  inFlight(agent: string, type: string, count: number): void
  /** A type's inbox load as its autoscaler measured it: messages waiting or in flight, in all and per replica. */
  load(type: string, backlog: number, lag: number): void
  /** A type no longer autoscaled: its load gauges are removed. */
  unload(type: string): void
}

/** Records nothing. */
export const noMetrics: AgentMetrics = { handled: () => {}, failed: () => {}, inFlight: () => {}, load: () => {}, unload: () => {} }

/** The agents' metric names. */
export const AGENT_METRICS = [
  'orrery_agent_messages_handled_total',
  'orrery_agent_messages_failed_total',
  'orrery_agent_handler_duration_seconds',
  'orrery_agent_in_flight',
  'orrery_agent_inbox_backlog',
  'orrery_agent_inbox_lag',
] as const

const [HANDLED, FAILED, LATENCY, IN_FLIGHT, BACKLOG, LAG] = AGENT_METRICS

/** The agent metrics of one registry, shared by every mesh reporting into it. */
export class AgentRecorder implements AgentMetrics {
  private readonly latency: Histogram
  private readonly failures
  private readonly running = new Map<string, { labels: Labels; value: number }>()
  private readonly backlog: PromGauge
  private readonly lag: PromGauge

  constructor(prom: PromClient, registry: MetricRegistry) {
    const registers = [registry]
    this.latency = new Histogram(LATENCY, 'Handler duration in seconds', [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], registry)
    const handled = new prom.Counter({
      name: HANDLED,
      help: 'Messages and requests an agent handled successfully',
      labelNames: ['agent', 'type', 'capability'],
      registers,
      collect: () => {
        handled.reset()
        for (const series of this.latency.all()) handled.inc(series.labels, series.count)
      },
    })
    this.failures = new prom.Counter({
      name: FAILED,
      help: 'Handler failures by kind (transient, permanent, fatal, rate-limited)',
      labelNames: ['agent', 'type', 'capability', 'kind'],
      registers,
    })
    const inFlight = new prom.Gauge({
      name: IN_FLIGHT,
      help: 'Handlers running now',
      labelNames: ['agent', 'type'],
      registers,
      collect: () => {
        inFlight.reset()
        for (const { labels, value } of this.running.values()) inFlight.set(labels, value)
      },
    })
    this.backlog = new prom.Gauge({
      name: BACKLOG,
      help: "Messages waiting in or taken from an autoscaled type's inboxes and not yet acked",
      labelNames: ['type'],
      registers,
    })
    this.lag = new prom.Gauge({ name: LAG, help: "An autoscaled type's inbox backlog per replica in routing", labelNames: ['type'], registers })
  }

  handled(agent: string, type: string, capability: string, seconds: number): void {
    this.latency.observe(
      this.latency.seriesOf(`${agent}\u0000${type}\u0000${capability}`, () => ({ agent, type, capability })),
      seconds,
    )
  }

  failed(agent: string, type: string, capability: string, kind: 'transient' | 'permanent' | 'fatal' | 'rate-limited'): void {
    this.failures.inc({ agent, type, capability, kind })
  }

  inFlight(agent: string, type: string, count: number): void {
    const key = `${agent}\u0000${type}`
    const entry = this.running.get(key)
    if (entry === undefined) this.running.set(key, { labels: { agent, type }, value: count })
    else entry.value = count
  }

  load(type: string, total: number, perReplica: number): void {
    this.backlog.set({ type }, total)
    this.lag.set({ type }, perReplica)
  }

  unload(type: string): void {
    this.backlog.remove({ type })
    this.lag.remove({ type })
  }
}
