/**
 * Orrery's metrics in the user's prom-client registry (`Orrery.create({ metrics })`): the
 * messaging metrics the OpenTelemetry semantic conventions name, under their Prometheus names
 * (`messaging.client.sent.messages` is `messaging_client_sent_messages_total`), and Orrery's own
 * (`orrery_*`): channels, groups, transports, agents, workflow runs.
 *
 * Most are read at scrape time from the stats every part keeps anyway (a gauge's or counter's
 * `collect`), so nothing is counted per message; only durations (a bus request, a routed
 * request, a workflow step) are observed as they end, behind one `undefined` check when metrics
 * are off. One registry holds one set of metrics however many Orrerys, meshes and workflows
 * report into it: each is a source the scrape sums over, removed when it closes.
 */
import { callable, int, keysOf, options as checkOptions, refuse } from '../check.js'
import { isOrreryError, OrreryError } from '../errors.js'
import { HEALTHS } from '../agents/registry.js'
import { AGENT_METRICS, AgentRecorder } from './agents.js'
import { Histogram, type MetricRegistry } from './histogram.js'
import { promClient, type Labels, type MetricConfig, type PromClient, type PromCounter, type PromGauge, type PromRegistry } from './prom.js'
import type { BusSource, MeshSource, WorkflowsSource } from './sources.js'

/** Options of `Orrery.create({ metrics })` beyond the registry. */
export interface MetricsOptions {
  /** The prom-client Registry to fill. */
  registry: PromRegistry
  /**
   * Channels whose series carry their name (default 200): the first seen keep it, later ones
   * are summed under `channel="_other"`, which bounds the series of a process with a channel
   * per agent or per tenant. 0 sums every channel under `_other`.
   */
  maxChannels?: number
}
const METRICS_KEYS = keysOf<MetricsOptions>()(['registry', 'maxChannels'])

/** The `metrics` option, checked. */
export interface CheckedMetrics {
  readonly registry: PromRegistry
  readonly maxChannels: number
}

const DEFAULT_MAX_CHANNELS = 200

/** Checks `Orrery.create`'s `metrics`: a prom-client Registry, or `{ registry, maxChannels }`. */
export function checkMetrics(value: unknown): CheckedMetrics | undefined {
  if (value === undefined) return undefined
  const given = checkOptions(value as object, 'metrics', 'option')
  if (typeof (given as Partial<PromRegistry>).getSingleMetric === 'function') return { registry: given as PromRegistry, maxChannels: DEFAULT_MAX_CHANNELS }
  const o = checkOptions(given as MetricsOptions, 'metrics', 'option', METRICS_KEYS)
  if (o.registry === undefined) refuse('option', 'metrics.registry', o.registry, 'must be a prom-client Registry')
  callable(checkOptions(o.registry, 'metrics.registry', 'option').getSingleMetric, 'metrics.registry.getSingleMetric', 'option')
  const maxChannels = o.maxChannels === undefined ? DEFAULT_MAX_CHANNELS : int(o.maxChannels, 'metrics.maxChannels', { min: 0, max: 1_000_000 })
  return { registry: o.registry, maxChannels }
}

/** The labels `messaging_*` series carry, as the conventions name their attributes. */
const SYSTEM = 'messaging_system'
const OPERATION = 'messaging_operation_name'
const DESTINATION = 'messaging_destination_name'
const CONSUMER_GROUP = 'messaging_consumer_group_name'
const ERROR_TYPE = 'error_type'

/** Buckets from 100 µs (an in-process request) to 10 s (the conventions' top bucket). */
const DURATION_BUCKETS = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const AGENT_STATES = ['starting', 'running', 'paused', 'stopping', 'stopped', 'crashed'] as const
const BREAKER_STATES = ['closed', 'open', 'half-open'] as const
const RUN_STATUSES = ['queued', 'running', 'completed', 'failed', 'cancelled', 'compensated', 'compensation-failed'] as const

/** Series summed by their labels within one scrape. */
class Tally {
  readonly series = new Map<string, { labels: Labels; value: number }>()
  add(labels: Labels, value: number): void {
    let key = ''
    for (const name in labels) key += `${labels[name]}\u0000`
    const found = this.series.get(key)
    if (found) found.value += value
    else this.series.set(key, { labels, value })
  }
}

/** One scrape's reading of every source: taken once, however many metrics read it. */
type Sample = Map<string, Tally>

interface Sources {
  readonly buses: ReadonlySet<BusSource>
  readonly meshes: ReadonlySet<MeshSource>
  readonly workflows: ReadonlySet<WorkflowsSource>
}

/** The metrics read at a scrape: name, type, help, labels. */
const SCRAPED: ReadonlyArray<{ name: string; kind: 'counter' | 'gauge'; help: string; labels: readonly string[] }> = [
  {
    name: 'messaging_client_sent_messages_total',
    kind: 'counter',
    help: 'Messages published on a channel (OpenTelemetry messaging.client.sent.messages)',
    labels: [SYSTEM, OPERATION, DESTINATION],
  },
  {
    name: 'messaging_client_consumed_messages_total',
    kind: 'counter',
    help: 'Deliveries to subscribers and group members, redeliveries included (OpenTelemetry messaging.client.consumed.messages)',
    labels: [SYSTEM, OPERATION, DESTINATION, CONSUMER_GROUP],
  },
  { name: 'orrery_channel_retained_messages', kind: 'gauge', help: "Messages in a channel's retained log: its queue depth", labels: ['channel'] },
  { name: 'orrery_channel_retained_bytes', kind: 'gauge', help: "Bytes in a channel's retained log", labels: ['channel'] },
  { name: 'orrery_channel_subscribers', kind: 'gauge', help: 'Live broadcast subscribers of a channel', labels: ['channel'] },
  {
    name: 'orrery_channel_dead_lettered_messages_total',
    kind: 'counter',
    help: 'Messages moved from a channel to its dead-letter channel',
    labels: ['channel'],
  },
  {
    name: 'orrery_channel_expired_messages_total',
    kind: 'counter',
    help: 'Messages whose TTL ran out before a consumer received them (per consumer)',
    labels: ['channel'],
  },
  { name: 'orrery_channel_duplicates_total', kind: 'counter', help: 'Publishes dropped as duplicates within the dedup window', labels: ['channel'] },
  {
    name: 'orrery_channel_refused_messages_total',
    kind: 'counter',
    help: 'Messages read from a transport and refused: signature, replay (signing), malformed (too large or undecodable)',
    labels: ['channel', 'reason'],
  },
  { name: 'orrery_group_members', kind: 'gauge', help: 'Members of a consumer group', labels: ['channel', 'group'] },
  {
    name: 'orrery_group_backlog_messages',
    kind: 'gauge',
    help: "A group's lag: messages on its channel not yet delivered to a member",
    labels: ['channel', 'group'],
  },
  { name: 'orrery_group_pending_messages', kind: 'gauge', help: 'Messages delivered to a member of a group and not yet acked', labels: ['channel', 'group'] },
  {
    name: 'orrery_group_messages_total',
    kind: 'counter',
    help: "A group's deliveries and settlements: event delivered, acked, nacked, redelivered, dead-lettered, expired",
    labels: ['channel', 'group', 'event'],
  },
  { name: 'orrery_bus_late_replies_total', kind: 'counter', help: 'Replies that arrived after their request timed out (dropped)', labels: [] },
  { name: 'orrery_transport_up', kind: 'gauge', help: "1 while a transport's server is reachable, 0 during an outage", labels: ['transport', 'kind'] },
  {
    name: 'orrery_transport_outages_total',
    kind: 'counter',
    help: "Outages of a transport's server (each one a transport-error, then a transport-restored)",
    labels: ['transport', 'kind'],
  },
  {
    name: 'orrery_transport_errors_total',
    kind: 'counter',
    help: 'Transport failures no caller waited for (transport-error on bus.events, which says what failed)',
    labels: ['transport', 'kind'],
  },
  { name: 'orrery_agents', kind: 'gauge', help: "This process's registered agents by type and health", labels: ['type', 'health'] },
  { name: 'orrery_agent_breakers', kind: 'gauge', help: "This process's agents by type and circuit breaker state", labels: ['type', 'state'] },
  { name: 'orrery_agent_runners', kind: 'gauge', help: "The agents this process's meshes run, by type and state", labels: ['type', 'state'] },
  { name: 'orrery_workflow_runs', kind: 'gauge', help: 'Workflow runs the history store holds, by workflow and status', labels: ['workflow', 'status'] },
]

/** The histograms observed as durations end. */
const TIMED = ['messaging_client_operation_duration_seconds', 'orrery_mesh_request_duration_seconds', 'orrery_workflow_step_duration_seconds'] as const

/** Reads every source into each metric's tally (zeros included, so a dashboard's series do not come and go). */
function readAll(sources: Sources, tally: (metric: string, labels: Labels, value: number) => void): void {
  for (const bus of sources.buses) unlessClosed(() => readBus(bus, tally))
  // Agents and runs are counted by type and state first: a series per type, not a tally per agent.
  const health = new Counts('orrery_agents', 'type', 'health', HEALTHS)
  const breakers = new Counts('orrery_agent_breakers', 'type', 'state', BREAKER_STATES)
  const runners = new Counts('orrery_agent_runners', 'type', 'state', AGENT_STATES)
  const runs = new Counts('orrery_workflow_runs', 'workflow', 'status', RUN_STATUSES)
  for (const mesh of sources.meshes) {
    unlessClosed(() => {
      for (const info of mesh.registered()) {
        if (info.remote) continue
        health.count(info.type, info.health)
        breakers.count(info.type, info.breaker)
      }
      for (const agent of mesh.running()) runners.count(agent.type, agent.state)
    })
  }
  for (const wf of sources.workflows) {
    unlessClosed(() => {
      for (const run of wf.runs()) runs.count(run.definition, run.status)
    })
  }
  for (const counts of [health, breakers, runners, runs]) counts.tallyInto(tally)
}

/** How many of each kind (an agent type, a workflow) are in each state, every state listed (0 included). */
class Counts {
  private readonly byKind = new Map<string, number[]>()
  constructor(
    private readonly metric: string,
    private readonly kindLabel: string,
    private readonly stateLabel: string,
    private readonly states: readonly string[],
  ) {}

  count(kind: string, state: string): void {
    let counts = this.byKind.get(kind)
    if (counts === undefined) {
      counts = this.states.map(() => 0)
      this.byKind.set(kind, counts)
    }
    const at = this.states.indexOf(state)
    if (at >= 0) counts[at]!++
  }

  tallyInto(tally: (metric: string, labels: Labels, value: number) => void): void {
    for (const [kind, counts] of this.byKind) {
      for (let i = 0; i < this.states.length; i++) tally(this.metric, { [this.kindLabel]: kind, [this.stateLabel]: this.states[i]! }, counts[i]!)
    }
  }
}

/**
 * Reads a source, skipping it if it was closed some other way than through its Orrery (a
 * `bus.close()`): one closed part must not fail the scrape of every other. Its first call
 * refuses, so nothing of it was counted.
 */
function unlessClosed(read: () => void): void {
  try {
    read()
  } catch (error) {
    if (!isOrreryError(error, 'CLOSED')) throw error
  }
}

function readBus(bus: BusSource, tally: (metric: string, labels: Labels, value: number) => void): void {
  const groupDelivered = new Map<string, number>()
  for (const { channel, name, stats } of bus.groups()) {
    const labels = { channel: bus.label(channel), group: name }
    tally('orrery_group_members', labels, stats.members)
    tally('orrery_group_backlog_messages', labels, stats.backlog)
    tally('orrery_group_pending_messages', labels, stats.pending)
    const events = (event: string, value: number) => tally('orrery_group_messages_total', { ...labels, event }, value)
    events('delivered', stats.delivered)
    events('acked', stats.acked)
    events('nacked', stats.nacked)
    events('redelivered', stats.redelivered)
    events('dead-lettered', stats.deadLettered)
    events('expired', stats.expired)
    const system = bus.system(channel)
    tally(
      'messaging_client_consumed_messages_total',
      { [SYSTEM]: system, [OPERATION]: 'receive', [DESTINATION]: labels.channel, [CONSUMER_GROUP]: name },
      stats.delivered,
    )
    groupDelivered.set(channel, (groupDelivered.get(channel) ?? 0) + stats.delivered)
  }
  for (const name of bus.channels()) {
    const s = bus.stats(name)
    const channel = bus.label(name)
    const system = bus.system(name)
    tally('messaging_client_sent_messages_total', { [SYSTEM]: system, [OPERATION]: 'publish', [DESTINATION]: channel }, s.published)
    // The channel's deliveries less its groups': those to broadcast subscribers.
    const subscribed = Math.max(0, s.delivered - (groupDelivered.get(name) ?? 0))
    tally('messaging_client_consumed_messages_total', { [SYSTEM]: system, [OPERATION]: 'process', [DESTINATION]: channel, [CONSUMER_GROUP]: '' }, subscribed)
    const labels = { channel }
    tally('orrery_channel_retained_messages', labels, s.retained)
    tally('orrery_channel_retained_bytes', labels, s.retainedBytes)
    tally('orrery_channel_subscribers', labels, s.subscribers)
    tally('orrery_channel_dead_lettered_messages_total', labels, s.deadLettered)
    tally('orrery_channel_expired_messages_total', labels, s.expired)
    tally('orrery_channel_duplicates_total', labels, s.duplicates)
    tally('orrery_channel_refused_messages_total', { channel, reason: 'signature' }, s.signatureRefused)
    tally('orrery_channel_refused_messages_total', { channel, reason: 'replay' }, s.replayRefused)
    tally('orrery_channel_refused_messages_total', { channel, reason: 'malformed' }, s.rejected)
  }
  tally('orrery_bus_late_replies_total', {}, bus.lateReplies())
  for (const t of bus.transports()) {
    tally('orrery_transport_up', { transport: t.name, kind: t.kind }, t.up ? 1 : 0)
    tally('orrery_transport_outages_total', { transport: t.name, kind: t.kind }, t.outages)
    tally('orrery_transport_errors_total', { transport: t.name, kind: t.kind }, t.errors)
  }
}

/** Where each registry's metrics live: one set per registry, shared by whatever reports into it. */
const byRegistry = new WeakMap<PromRegistry, Promise<Metrics>>()

/** The metrics one registry holds, and the sources its scrapes read. */
export class Metrics {
  private readonly buses = new Set<BusSource>()
  private readonly meshes = new Set<MeshSource>()
  private readonly flows = new Set<WorkflowsSource>()
  private sample: Sample | undefined
  private readonly requestDuration: Histogram
  private readonly routedDuration: Histogram
  private readonly stepDuration: Histogram
  /** What the agents of meshes reporting into this registry record. */
  readonly agents: AgentRecorder

  /** The metrics of `registry`, declared in it on first use (prom-client loads then). */
  static for(registry: PromRegistry): Promise<Metrics> {
    let made = byRegistry.get(registry)
    if (made === undefined) {
      made = promClient().then((prom) => new Metrics(prom, registry))
      byRegistry.set(registry, made)
      // A failed load (no prom-client) is not remembered: the next call tries again.
      made.catch(() => byRegistry.delete(registry))
    }
    return made
  }

  private constructor(prom: PromClient, registry: PromRegistry) {
    const registers = [registry]
    if (typeof (registry as Partial<MetricRegistry>).registerMetric !== 'function') {
      throw new OrreryError('INVALID_OPTION', 'metrics must be a prom-client Registry: this one has no registerMetric', { details: { option: 'metrics' } })
    }
    // Every name checked before any is declared: a refusal leaves the registry as it was.
    const taken = [...SCRAPED.map((spec) => spec.name), ...TIMED, ...AGENT_METRICS].find((name) => registry.getSingleMetric(name) !== undefined)
    if (taken !== undefined) {
      throw new OrreryError('INVALID_OPTION', `metrics: the registry holds a metric named ${taken} already, made by something else than Orrery`, {
        details: { option: 'metrics', metric: taken },
      })
    }
    for (const spec of SCRAPED) {
      const config: MetricConfig = { name: spec.name, help: spec.help, labelNames: spec.labels, registers, collect: () => this.collectInto(spec.name, metric) }
      const metric: PromCounter | PromGauge = spec.kind === 'counter' ? new prom.Counter(config) : new prom.Gauge(config)
    }
    const histogram = (name: (typeof TIMED)[number], help: string) => new Histogram(name, help, DURATION_BUCKETS, registry as MetricRegistry)
    this.requestDuration = histogram(
      'messaging_client_operation_duration_seconds',
      'Duration of bus requests, from the call to its reply or failure (OpenTelemetry messaging.client.operation.duration)',
    )
    this.routedDuration = histogram(
      'orrery_mesh_request_duration_seconds',
      "Duration of routed requests (mesh.request), retries and fallbacks included, by capability and outcome (ok or the error's code)",
    )
    this.agents = new AgentRecorder(prom, registry as MetricRegistry)
    this.stepDuration = histogram(
      'orrery_workflow_step_duration_seconds',
      'Duration of workflow step attempts by workflow, step and outcome (ok, transient, permanent)',
    )
  }

  /** Sets `metric`'s series from this scrape's sample (read once per scrape, on the first metric's collect). */
  private collectInto(name: string, metric: PromCounter | PromGauge): void {
    metric.reset()
    const tally = this.scrape().get(name)
    if (tally === undefined) return
    for (const { labels, value } of tally.series.values()) metric.inc(labels, value)
  }

  /**
   * The sample of the scrape under way. prom-client calls every metric's `collect` in one
   * synchronous loop, so a sample dropped at the next microtask is read once per scrape and
   * never outlives it.
   */
  private scrape(): Sample {
    if (this.sample !== undefined) return this.sample
    const sample: Sample = new Map()
    readAll({ buses: this.buses, meshes: this.meshes, workflows: this.flows }, (metric, labels, value) => {
      const tally = sample.get(metric) ?? new Tally()
      sample.set(metric, tally)
      tally.add(labels, value)
    })
    this.sample = sample
    queueMicrotask(() => {
      this.sample = undefined
    })
    return sample
  }

  /** Reads `bus` at every scrape until the returned function is called. */
  addBus(bus: BusSource): () => void {
    this.buses.add(bus)
    return () => this.buses.delete(bus)
  }

  /** Reads `mesh` at every scrape until the returned function is called. */
  addMesh(mesh: MeshSource): () => void {
    this.meshes.add(mesh)
    return () => this.meshes.delete(mesh)
  }

  /** Reads `workflows` at every scrape until the returned function is called. */
  addWorkflows(workflows: WorkflowsSource): () => void {
    this.flows.add(workflows)
    return () => this.flows.delete(workflows)
  }

  /** A bus request ended: `error` is the OrreryError's code, or undefined for a reply. */
  request(system: string, channel: string, seconds: number, error: string | undefined): void {
    const type = error ?? ''
    const series = this.requestDuration.seriesOf(`${system}\u0000${channel}\u0000${type}`, () => ({
      [SYSTEM]: system,
      [OPERATION]: 'request',
      [DESTINATION]: channel,
      [ERROR_TYPE]: type,
    }))
    this.requestDuration.observe(series, seconds)
  }

  /** A routed request ended. */
  routed(capability: string, seconds: number, outcome: string): void {
    this.routedDuration.observe(
      this.routedDuration.seriesOf(`${capability}\u0000${outcome}`, () => ({ capability, outcome })),
      seconds,
    )
  }

  /** A workflow step attempt ended. */
  step(workflow: string, step: string, outcome: string, seconds: number): void {
    this.stepDuration.observe(
      this.stepDuration.seriesOf(`${workflow}\u0000${step}\u0000${outcome}`, () => ({ workflow, step, outcome })),
      seconds,
    )
  }
}
