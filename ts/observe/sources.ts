/**
 * What the metrics read at a scrape, as plain samples: a bus's channels and groups, its
 * transports' state, a mesh's agents, workflows' runs. Each source is a few functions over the
 * public stats calls (bus.stats, group.stats, registry.list, workflows.list), so nothing is
 * counted per message to feed them.
 */
import type { ChannelStats, GroupStats } from '../engines/backend.js'
import type { AgentInfo } from '../agents/registry.js'
import type { AgentState } from '../agents/runner.js'
import type { RunStatus } from '../workflows/history.js'

/** A consumer group as a scrape reads it. */
export interface GroupSample {
  readonly channel: string
  readonly name: string
  readonly stats: GroupStats
}

/** A transport's state, kept from the bus's events. */
export interface TransportSample {
  readonly name: string
  readonly kind: string
  readonly up: boolean
  readonly outages: number
  /** Errors reported on the bus's events (`transport-error`). */
  readonly errors: number
}

/** What a bus gives a scrape. */
export interface BusSource {
  /** Every channel the bus knows (this process's names), oldest first. */
  channels(): Iterable<string>
  stats(channel: string): ChannelStats
  groups(): Iterable<GroupSample>
  /** `orrery`, or the kind of the transport the channel is bound to (redis, nats, kafka, durable, memory). */
  system(channel: string): string
  lateReplies(): number
  transports(): Iterable<TransportSample>
  /** The label a channel's series carry: its name, or `_other` past the cap. */
  label(channel: string): string
}

/** An agent as a scrape reads it. */
export interface AgentSample {
  readonly type: string
  readonly state: AgentState
}

/** What a mesh gives a scrape. */
export interface MeshSource {
  /** The registry's agents (remote ones included: the scrape skips them). */
  registered(): Iterable<AgentInfo>
  /** The agents this mesh runs, with their runner's state. */
  running(): Iterable<AgentSample>
}

/** A run as a scrape reads it. */
export interface RunSample {
  readonly definition: string
  readonly status: RunStatus
}

/** What workflows give a scrape. */
export interface WorkflowsSource {
  runs(): Iterable<RunSample>
}

/** The label of channels past a source's cap: their series are summed under it. */
export const OTHER_CHANNELS = '_other'

/**
 * Channel labels with a cap: the first `max` channels seen keep their name, every later one is
 * summed under `_other`, so a process with a channel per agent (inboxes) or per tenant keeps a
 * bounded number of series. The names kept stay kept: a series never changes label.
 */
export class ChannelLabels {
  private readonly kept = new Set<string>()
  constructor(private readonly max: number) {}

  label(channel: string): string {
    if (this.kept.has(channel)) return channel
    if (this.kept.size >= this.max) return OTHER_CHANNELS
    this.kept.add(channel)
    return channel
  }
}
