/**
 * Agent metrics in a prom-client registry the user injects: messages handled and failed,
 * handler latency, and handlers in flight, labelled by agent, type and capability, and the inbox
 * backlog and lag of autoscaled types, labelled by type. The mesh
 * loads prom-client only when metrics are asked for (the Node entry provides the loader).
 */
import { promClient, type PromCounter, type PromGauge, type PromHistogram, type PromRegistry } from '../observe/prom.js'

export type { PromRegistry } from '../observe/prom.js'

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

const NAMES = {
  handled: 'orrery_agent_messages_handled_total',
  failed: 'orrery_agent_messages_failed_total',
  latency: 'orrery_agent_handler_duration_seconds',
  inFlight: 'orrery_agent_in_flight',
  backlog: 'orrery_agent_inbox_backlog',
  lag: 'orrery_agent_inbox_lag',
}

/** Metrics in `registry` (reusing Orrery's metrics already there, so two meshes can share it). */
export async function promMetrics(registry: PromRegistry): Promise<AgentMetrics> {
  const prom = await promClient()
  const registers = [registry]
  const existing = <T>(name: string): T | undefined => registry.getSingleMetric(name) as T | undefined
  const handled =
    existing<PromCounter>(NAMES.handled) ??
    new prom.Counter({
      name: NAMES.handled,
      help: 'Messages and requests an agent handled successfully',
      labelNames: ['agent', 'type', 'capability'],
      registers,
    })
  const failed =
    existing<PromCounter>(NAMES.failed) ??
    new prom.Counter({
      name: NAMES.failed,
      help: 'Handler failures by kind (transient, permanent, fatal, rate-limited)',
      labelNames: ['agent', 'type', 'capability', 'kind'],
      registers,
    })
  const latency =
    existing<PromHistogram>(NAMES.latency) ??
    new prom.Histogram({
      name: NAMES.latency,
      help: 'Handler duration in seconds',
      labelNames: ['agent', 'type', 'capability'],
      registers,
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    })
  const inFlight =
    existing<PromGauge>(NAMES.inFlight) ?? new prom.Gauge({ name: NAMES.inFlight, help: 'Handlers running now', labelNames: ['agent', 'type'], registers })
  const backlog =
    existing<PromGauge>(NAMES.backlog) ??
    new prom.Gauge({
      name: NAMES.backlog,
      help: "Messages waiting in or taken from an autoscaled type's inboxes and not yet acked",
      labelNames: ['type'],
      registers,
    })
  const lag =
    existing<PromGauge>(NAMES.lag) ??
    new prom.Gauge({ name: NAMES.lag, help: "An autoscaled type's inbox backlog per replica in routing", labelNames: ['type'], registers })
  return {
    handled(agent, type, capability, seconds) {
      handled.inc({ agent, type, capability })
      latency.observe({ agent, type, capability }, seconds)
    },
    failed: (agent, type, capability, kind) => failed.inc({ agent, type, capability, kind }),
    inFlight: (agent, type, count) => inFlight.set({ agent, type }, count),
    load(type, total, perReplica) {
      backlog.set({ type }, total)
      lag.set({ type }, perReplica)
    },
    unload(type) {
      backlog.remove({ type })
      lag.remove({ type })
    },
  }
}
