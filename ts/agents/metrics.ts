/**
 * Agent metrics in a prom-client registry the user injects (the Orrery's `metrics`, or the mesh's
 * own): the mesh loads prom-client only when metrics are asked for (the Node entry provides the
 * loader). What is recorded, and how, is ts/observe/agents.ts.
 */
import type { AgentMetrics } from '../observe/agents.js'
import { Metrics } from '../observe/metrics.js'
import type { PromRegistry } from '../observe/prom.js'

export type { AgentMetrics } from '../observe/agents.js'
export { noMetrics } from '../observe/agents.js'
export type { PromRegistry } from '../observe/prom.js'

/** The agent metrics of `registry` (one set per registry, so meshes can share it). */
export async function promMetrics(registry: PromRegistry): Promise<AgentMetrics> {
  return (await Metrics.for(registry)).agents
}
