/**
 * Connects an Orrery's parts to its metrics: a bus (its channels, groups, transports and
 * requests), a mesh (its agents and routed requests), workflows (their runs and steps). Each
 * returns what undoes it, called when the part closes.
 */
import type { Bus } from '../bus/bus.js'
import type { Mesh } from '../agents/mesh.js'
import { isOrreryError } from '../errors.js'
import type { Workflows } from '../workflows/runtime.js'
import type { Metrics } from './metrics.js'
import { ChannelLabels, type BusSource, type TransportSample } from './sources.js'

/** A transport's state as the bus's events tell it. */
interface TransportState {
  name: string
  kind: string
  up: boolean
  outages: number
  errors: number
}

/** Reads `bus` into `metrics` at each scrape, and times its requests, until the returned function is called. */
export function observeBus(metrics: Metrics, bus: Bus, transports: ReadonlyArray<{ name: string; kind: string }>, maxChannels: number): () => void {
  const labels = new ChannelLabels(maxChannels)
  const states = new Map<string, TransportState>(transports.map(({ name, kind }) => [name, { name, kind, up: true, outages: 0, errors: 0 }]))
  // Transport events are rare (an outage, a failed read): counted as they come.
  const events =
    states.size === 0
      ? undefined
      : bus.events.subscribe((event) => {
          if (event.type === 'transport-restored') {
            const state = states.get(event.transport)
            if (state) state.up = true
          } else if (event.type === 'transport-error') {
            const state = states.get(event.transport)
            if (!state) return
            state.errors++
            if (event.error.details['outage'] === true && state.up) {
              state.up = false
              state.outages++
            }
          }
        })
  const system = (channel: string) => bus.binding(channel)?.kind ?? 'orrery'
  const source: BusSource = {
    channels: () => bus.channels(),
    stats: (channel) => bus.stats(channel),
    groups: () => bus.groups().map((group) => ({ channel: group.channel, name: group.name, stats: group.stats() })),
    system,
    lateReplies: () => bus.lateReplies(),
    transports: (): Iterable<TransportSample> => states.values(),
    label: (channel) => labels.label(channel),
  }
  const removed = metrics.addBus(source)
  bus.timing = (channel, started, error) => {
    const code = error === undefined ? undefined : isOrreryError(error) ? error.code : 'INTERNAL'
    // A call refused for its arguments was no operation (and its channel may be no name at all).
    if (code?.startsWith('INVALID_') || code === 'CLOSED') return
    metrics.request(system(channel), labels.label(channel), (performance.now() - started) / 1000, code)
  }
  return () => {
    removed()
    events?.unsubscribe()
    bus.timing = undefined
  }
}

/** The capability label of routed requests that found no agent offering what they asked for. */
export const UNROUTED = '_unrouted'

/** Reads `mesh` into `metrics` at each scrape, and times its routed requests, until the returned function is called. */
export function observeMesh(metrics: Metrics, mesh: Mesh): () => void {
  const removed = metrics.addMesh({
    registered: () => mesh.registry.list(),
    running: () => mesh.agents(),
  })
  mesh.timing = (capability, started, error) => {
    const outcome = error === undefined ? 'ok' : isOrreryError(error) ? error.code : 'INTERNAL'
    if (outcome.startsWith('INVALID_')) return
    // A capability nobody offers is any string a caller sent: one series for all of them, not one each.
    const label = outcome === 'NO_RESPONDER' && mesh.registry.find({ capability, minHealth: 'offline' }).length === 0 ? UNROUTED : capability
    metrics.routed(label, (performance.now() - started) / 1000, outcome)
  }
  return () => {
    removed()
    mesh.timing = undefined
  }
}

/** Reads `workflows`' runs into `metrics` at each scrape, and times their steps, until the returned function is called. */
export function observeWorkflows(metrics: Metrics, workflows: Workflows): () => void {
  const removed = metrics.addWorkflows({ runs: () => workflows.list() })
  workflows.timeSteps((workflow, step, outcome, seconds) => metrics.step(workflow, step, outcome, seconds))
  return () => {
    removed()
    workflows.timeSteps(undefined)
  }
}
