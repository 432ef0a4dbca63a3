/**
 * `Control`: one object that answers every question the HTTP API, the dashboard and the CLI ask
 * of a running Orrery (its bus, mesh, workflows and store), and carries out what they steer, in
 * plain JSON values. Engine-neutral: it runs in Node and in a page alike.
 */
import type { Subscription } from 'rxjs'

import type { Mesh } from '../agents/mesh.js'
import type { PromRegistry } from '../agents/metrics.js'
import type { AgentInfo, AgentQuery } from '../agents/registry.js'
import type { Bus } from '../bus/bus.js'
import { DEAD_LETTER_SUFFIX, OWN_CHANNEL_PREFIX, type StartFrom } from '../bus/options.js'
import { int, intOr, keysOf, oneOf, options as checkOptions, refuse, stringRecord, text } from '../check.js'
import type { EngineName } from '../engines/backend.js'
import { isOrreryError, OrreryError } from '../errors.js'
import type { Priority } from '../frame.js'
import type { Namespace } from '../store/namespace.js'
import type { Store } from '../store/store.js'
import type { StrongNamespace } from '../store/strong.js'
import { Stream } from '../stream.js'
import type { WorkflowDefinition } from '../workflows/definition.js'
import type { WorkflowRun } from '../workflows/handle.js'
import { FINAL_STATUSES } from '../workflows/history.js'
import type { RunStatus } from '../workflows/records.js'
import type { Workflows } from '../workflows/runtime.js'
import { DeadLetters } from './dead-letters.js'
import { readLog, tailOf } from './log.js'
import {
  messageView,
  plain,
  type AgentView,
  type ChannelView,
  type ControlEvent,
  type ControlSnapshot,
  type DeadLetterView,
  type DefinitionView,
  type EntryView,
  type GroupView,
  type MessageView,
  type NamespaceView,
  type Overview,
  type RunDetail,
  type RunView,
} from './views.js'

/** What a Control needs of its Orrery (an `Orrery` is one). */
export interface ControlHost {
  readonly engine: EngineName
  readonly bus: Bus
}

/** Options of `orrery.control()`. */
export interface ControlOptions {
  /** The mesh whose agents are shown and steered. */
  mesh?: Mesh
  /** The workflows whose definitions and runs are shown, started, signalled and cancelled. */
  workflows?: Workflows
  /** The store whose namespaces are shown and written. */
  store?: Store<boolean>
  /** A prom-client registry, served at `/metrics` by the HTTP API. */
  metrics?: PromRegistry
}
const CONTROL_KEYS = keysOf<ControlOptions>()(['mesh', 'workflows', 'store', 'metrics'])

/** Options of `new Control(...)`: the Orrery, and what `orrery.control()` takes. */
export interface NewControlOptions extends ControlOptions {
  orrery: ControlHost
}

/** Options of {@link Control.publish}. */
export interface ControlPublishOptions {
  headers?: Record<string, string>
  /** Kept as the message's id (and deduplicated on a channel with a dedup window). */
  key?: string
  priority?: Priority
  /** Time to live in ms. */
  ttl?: number
}
const PUBLISH_KEYS = keysOf<ControlPublishOptions>()(['headers', 'key', 'priority', 'ttl'])

/** Listings return at most this many items by default, and never more than {@link MAX_LIMIT}. */
export const DEFAULT_LIMIT = 100
export const MAX_LIMIT = 1000
/** History events a run's detail holds by default, and at most. */
const DEFAULT_HISTORY = 1000
const MAX_HISTORY = 10_000

const PRIORITIES: readonly Priority[] = ['low', 'normal', 'high', 'critical']
const RUN_STATUSES: readonly RunStatus[] = ['queued', 'running', 'completed', 'failed', 'cancelled', 'compensated', 'compensation-failed']

function limitOf(value: unknown, fallback = DEFAULT_LIMIT, max = MAX_LIMIT): number {
  return intOr(value, fallback, 'limit', { min: 0, max })
}

export class Control {
  private readonly bus: Bus
  private readonly engine: EngineName
  private readonly mesh: Mesh | undefined
  private readonly workflows: Workflows | undefined
  private readonly store: Store<boolean> | undefined
  /** The prom-client registry given, for `/metrics`. */
  readonly metrics: PromRegistry | undefined
  private readonly started = Date.now()
  private readonly dead: DeadLetters
  /** Transports in an outage now (from the bus's events). */
  private readonly down = new Set<string>()
  private readonly watching: Subscription
  /** The live `events()` and `tail()` streams, completed when the control closes. */
  private readonly live = new Set<() => void>()
  /** What the events streams' one watch of the runs calls, how it ends, and the status last told of each unfinished run. */
  private readonly runWatchers = new Set<(run: RunView) => void>()
  private unwatchRuns: (() => void) | undefined
  private readonly runsSeen = new Map<string, RunStatus>()
  private closed = false

  constructor(options: NewControlOptions) {
    const o = checkOptions(options, 'options', 'argument', [...CONTROL_KEYS, 'orrery'])
    const host = o.orrery as ControlHost | undefined
    if (host === null || typeof host !== 'object' || typeof host.bus !== 'object' || host.bus === null) {
      refuse('option', 'orrery', host, 'must be an Orrery')
    }
    this.bus = host.bus
    this.engine = host.engine
    this.mesh = o.mesh
    this.workflows = o.workflows
    this.store = o.store
    this.metrics = o.metrics
    this.dead = new DeadLetters(this.bus)
    this.watching = this.bus.events.subscribe((event) => {
      if (event.type === 'transport-error' && event.error.details['outage'] === true) this.down.add(event.transport)
      else if (event.type === 'transport-restored') this.down.delete(event.transport)
    })
  }

  /** @internal Checks the options of `orrery.control()` (the Orrery adds itself). */
  static checkOptions(options: ControlOptions | undefined): ControlOptions {
    const checked = checkOptions(options, 'options', 'argument', CONTROL_KEYS)
    // What each must be, by the call the control makes of it (a wrong object failed later, at a look).
    const shapes: ReadonlyArray<[keyof ControlOptions, string, string]> = [
      ['mesh', 'agents', 'a Mesh (orrery.mesh())'],
      ['workflows', 'definitions', 'a Workflows (orrery.workflows())'],
      ['store', 'list', 'a Store (orrery.openStore())'],
      ['metrics', 'metrics', 'a prom-client Registry'],
    ]
    for (const [key, method, what] of shapes) {
      const value: unknown = checked[key]
      if (value === undefined) continue
      if (value === null || typeof value !== 'object' || typeof (value as Record<string, unknown>)[method] !== 'function') {
        refuse('option', key, value, `must be ${what} (or left out)`)
      }
    }
    return checked
  }

  // ---- health and the whole picture ----

  /** Always `{ ok: true }` while the process answers. */
  health(): { ok: true } {
    return { ok: true }
  }

  /** Ready: the engine open, every transport connected (no outage), the store open. */
  ready(): { ready: boolean; checks: Record<string, boolean> } {
    const checks: Record<string, boolean> = { engine: this.isOpen(() => this.bus.lateReplies()), transports: this.down.size === 0 }
    if (this.store !== undefined) checks['store'] = this.isOpen(() => this.store!.revision)
    if (this.workflows !== undefined) checks['workflows'] = this.isOpen(() => this.workflows!.list({ status: 'queued' }))
    return { ready: !this.closed && Object.values(checks).every(Boolean), checks }
  }

  private isOpen(probe: () => unknown): boolean {
    try {
      probe()
      return true
    } catch {
      return false
    }
  }

  /** Counts of everything. */
  overview(): Overview {
    const agents = this.agents()
    const byHealth: Record<string, number> = {}
    const byState: Record<string, number> = {}
    for (const a of agents) {
      byHealth[a.health] = (byHealth[a.health] ?? 0) + 1
      byState[a.state] = (byState[a.state] ?? 0) + 1
    }
    let runs: Record<RunStatus, number> | undefined
    if (this.workflows !== undefined) {
      runs = Object.fromEntries(RUN_STATUSES.map((s) => [s, 0])) as Record<RunStatus, number>
      for (const r of this.workflows.list()) runs[r.status]++
    }
    const process = this.mesh?.process
    return {
      engine: this.engine,
      ...(process === undefined ? {} : { process }),
      uptimeMs: Date.now() - this.started,
      agents: { total: agents.length, byHealth, byState },
      channels: this.bus.channels().length,
      groups: this.groups().length,
      deadLetters: this.deadLetterCount(),
      ...(runs === undefined ? {} : { runs }),
    }
  }

  private deadLetterCount(): number {
    let n = 0
    for (const origin of this.dead.origins(this.bus.channels())) n += this.dead.count(origin)
    return n
  }

  // ---- agents ----

  private requireMesh(): Mesh {
    if (this.mesh === undefined)
      throw new OrreryError('UNSUPPORTED', 'no mesh is attached to this control (orrery.control({ mesh }))', { details: { part: 'mesh' } })
    return this.mesh
  }

  /** Every agent the registry knows (this process's and, in a shared mesh, the others'), and this mesh's stopped or crashed ones. */
  agents(): AgentView[] {
    if (this.mesh === undefined) return []
    const out = new Map<string, AgentView>()
    for (const info of this.mesh.registry.list()) out.set(info.id, this.agentView(info))
    for (const handle of this.mesh.agents()) {
      if (out.has(handle.id)) continue
      out.set(handle.id, {
        id: handle.id,
        type: handle.type,
        state: handle.state,
        health: 'offline',
        breaker: 'closed',
        inFlight: 0,
        capabilities: [],
        tags: [],
        lastBeat: 0,
        remote: false,
        ...(this.mesh.process === undefined ? {} : { process: this.mesh.process }),
      })
    }
    return [...out.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }

  private agentView(info: AgentInfo): AgentView {
    const local = info.remote ? undefined : this.mesh?.agent(info.id)
    return {
      id: info.id,
      type: info.type,
      state: local?.state ?? (info.health === 'paused' ? 'paused' : 'running'),
      health: info.health,
      breaker: info.breaker,
      inFlight: info.inFlight,
      capabilities: info.capabilities.map((c) => ({ name: c.name, version: c.version })),
      tags: [...info.tags],
      lastBeat: info.lastBeat,
      remote: info.remote,
      ...(info.process === undefined ? {} : { process: info.process }),
    }
  }

  /** One agent; `UNKNOWN_AGENT` if no such agent is known. */
  agent(id: string): AgentView {
    text(id, 'id')
    const found = this.agents().find((a) => a.id === id)
    if (found === undefined) throw unknownAgent(id)
    return found
  }

  /** A running agent of this process, by id. */
  private local(id: string): NonNullable<ReturnType<Mesh['agent']>> {
    text(id, 'id')
    const mesh = this.requireMesh()
    const handle = mesh.agent(id)
    if (handle !== undefined) return handle
    const info = mesh.registry.get(id)
    if (info?.remote) {
      throw new OrreryError('UNSUPPORTED', `agent ${JSON.stringify(id)} runs in process ${info.process}: steer it through that process's control`, {
        details: { agent: id, process: info.process },
      })
    }
    throw unknownAgent(id)
  }

  /** Pauses an agent (it takes no new work; routed requests wait in its inbox). */
  async pauseAgent(id: string): Promise<AgentView> {
    this.local(id)
    await this.requireMesh().pause(id)
    return this.agent(id)
  }

  /** Resumes a paused agent. */
  async resumeAgent(id: string): Promise<AgentView> {
    this.local(id)
    await this.requireMesh().resume(id)
    return this.agent(id)
  }

  /** Stops an agent gracefully; its supervisor does not restart it. */
  async stopAgent(id: string): Promise<AgentView> {
    this.local(id)
    await this.requireMesh().stop(id)
    return this.agent(id)
  }

  /** Applies configuration values over an agent's (`INVALID_CONFIG` listing every issue, the old one kept). */
  async reconfigureAgent(id: string, values: Record<string, unknown>): Promise<AgentView> {
    const handle = this.local(id)
    checkOptions(values, 'values')
    await handle.reconfigure(values)
    return this.agent(id)
  }

  /** The agents a query finds (as routing would, healthiest first). */
  discover(query: AgentQuery): AgentView[] {
    const mesh = this.requireMesh()
    return mesh.registry.find(query).map((info) => this.agentView(info))
  }

  // ---- channels ----

  /** Every channel the bus knows, with its counters and binding. */
  channels(): ChannelView[] {
    const own = this.ownGroups()
    return this.bus.channels().map((name) => this.channelView(name, own))
  }

  /** A channel's view; its `groups` count leaves out Orrery's own groups (`own`: how many per channel). */
  private channelView(name: string, own: ReadonlyMap<string, number>): ChannelView {
    const binding = this.bus.binding(name)
    const stats = { ...this.bus.stats(name) }
    stats.groups -= own.get(name) ?? 0
    return { name, stats, ...(binding === undefined ? {} : { binding: { transport: binding.transport, kind: binding.kind } }) }
  }

  /** How many of Orrery's own groups (`orrery.*`: the dead-letter keeper's) each channel has. */
  private ownGroups(): Map<string, number> {
    const own = new Map<string, number>()
    for (const g of this.bus.groups()) if (g.name.startsWith(OWN_CHANNEL_PREFIX)) own.set(g.channel, (own.get(g.channel) ?? 0) + 1)
    return own
  }

  /** One channel; `UNKNOWN_CHANNEL` for a name the bus does not know (nothing is created). */
  channel(name: string): ChannelView {
    this.knownChannel(name)
    return this.channelView(name, this.ownGroups())
  }

  private knownChannel(name: string): void {
    text(name, 'channel', { nonEmpty: true })
    if (!this.bus.channels().includes(name)) {
      throw new OrreryError('UNKNOWN_CHANNEL', `no channel ${JSON.stringify(name)} is known to this bus`, { details: { channel: name } })
    }
  }

  /** Publishes a message (JSON payload); resolves with its id and seq-less result. */
  async publish(channel: string, payload: unknown, options: ControlPublishOptions = {}): Promise<{ id: string; published: boolean }> {
    text(channel, 'channel', { nonEmpty: true })
    if (channel.startsWith(OWN_CHANNEL_PREFIX)) {
      throw new OrreryError(
        'INVALID_NAME',
        `channel ${JSON.stringify(channel)} is Orrery's own (${OWN_CHANNEL_PREFIX}*: the shared registry, shared stores): nothing is published there from outside`,
        {
          details: { channel },
        },
      )
    }
    const o = checkOptions(options, 'options', 'argument', PUBLISH_KEYS)
    const headers = o.headers === undefined ? undefined : stringRecord(o.headers, 'headers')
    const priority = o.priority === undefined ? undefined : oneOf(o.priority, PRIORITIES, 'priority')
    const key = o.key === undefined ? undefined : text(o.key, 'key', { nonEmpty: true }, 'option')
    const ttl = o.ttl === undefined ? undefined : int(o.ttl, 'ttl', { min: 1 })
    const result = await this.bus.publish(channel, payload, {
      ...(headers === undefined ? {} : { headers }),
      ...(priority === undefined ? {} : { priority }),
      ...(key === undefined ? {} : { id: key }),
      ...(ttl === undefined ? {} : { ttl }),
    })
    return { id: result.id, published: result.published }
  }

  /** Up to `limit` (default 100, at most 1,000) retained messages from seq `from`, oldest first. */
  async messages(channel: string, options: { from?: number; limit?: number } = {}): Promise<MessageView[]> {
    this.knownChannel(channel)
    const o = checkOptions(options, 'options', 'argument', ['from', 'limit'])
    const from = o.from === undefined ? undefined : int(o.from, 'from')
    const limit = limitOf(o.limit)
    return (await readLog(this.bus, channel, from, limit)).map(messageView)
  }

  /** The messages of a channel as they come (`latest`: new ones; `earliest`: the retained log first; a seq). */
  tail(channel: string, options: { from?: 'latest' | 'earliest' | number } = {}): Stream<MessageView> {
    this.knownChannel(channel)
    const o = checkOptions(options, 'options', 'argument', ['from'])
    const from: StartFrom = o.from === undefined || o.from === 'latest' ? 'latest' : o.from === 'earliest' ? 'earliest' : { seq: int(o.from, 'from') }
    const source = tailOf(this.bus, channel, from, messageView)
    // The control closing ends the tail too, as it ends events().
    return new Stream<MessageView>({
      start: (sink) => {
        if (this.closed) {
          sink.complete()
          return { stop: () => {}, setPaused: () => {} }
        }
        const subscription = source.subscribe({ next: (m) => sink.next(m), error: (e: unknown) => sink.error(e), complete: () => sink.complete() })
        const stop = (): void => {
          this.live.delete(end)
          subscription.unsubscribe()
        }
        const end = (): void => {
          stop()
          sink.complete()
        }
        this.live.add(end)
        return { stop, setPaused: () => {} }
      },
    })
  }

  // ---- groups and dead letters ----

  /** The bus's consumer groups, but Orrery's own (`orrery.*`: the control's, which keep dead letters). */
  groups(): GroupView[] {
    return this.bus
      .groups()
      .filter((g) => !g.name.startsWith(OWN_CHANNEL_PREFIX))
      .map((g) => {
        const stats = { ...g.stats() }
        return { channel: g.channel, name: g.name, stats, pending: stats.pending }
      })
  }

  /**
   * Refuses (`UNKNOWN_CHANNEL`) an origin whose dead letters cannot be there: neither its
   * dead-letter channel nor the channel itself (not a dead-letter channel) is known to the bus. A
   * look at any other name would create a dead-letter channel and the group that keeps it.
   */
  private knownOrigin(channel: string): void {
    text(channel, 'channel', { nonEmpty: true })
    const known = this.bus.channels()
    if (known.includes(DeadLetters.channelOf(channel))) return
    if (known.includes(channel) && !channel.endsWith(DEAD_LETTER_SUFFIX)) return
    throw new OrreryError('UNKNOWN_CHANNEL', `no channel ${JSON.stringify(channel)} nor its dead-letter channel is known to this bus`, {
      details: { channel },
    })
  }

  /** Up to `limit` dead letters of origin `channel` not replayed or discarded, oldest first. */
  async deadLetters(channel: string, options: { limit?: number } = {}): Promise<DeadLetterView[]> {
    this.knownOrigin(channel)
    const limit = limitOf(checkOptions(options, 'options', 'argument', ['limit']).limit)
    return this.dead.list(channel, limit)
  }

  /** Publishes dead letter `seq` of `channel` again on its origin channel (headers less the dead-letter ones), then settles it. */
  async replayDeadLetter(channel: string, seq: number): Promise<{ id: string }> {
    this.knownOrigin(channel)
    int(seq, 'seq', {}, 'argument')
    return this.dead.replay(channel, seq)
  }

  /** Settles dead letter `seq` of `channel` without publishing it. */
  async discardDeadLetter(channel: string, seq: number): Promise<{ discarded: true }> {
    this.knownOrigin(channel)
    int(seq, 'seq', {}, 'argument')
    await this.dead.discard(channel, seq)
    return { discarded: true }
  }

  // ---- store ----

  private requireStore(): Store<boolean> {
    if (this.store === undefined)
      throw new OrreryError('UNSUPPORTED', 'no store is attached to this control (orrery.control({ store }))', { details: { part: 'store' } })
    return this.store
  }

  /** The namespaces opened on the store. */
  namespaces(): NamespaceView[] {
    if (this.store === undefined) return []
    return this.store.list().map(({ name, mode, namespace }) => ({ name, mode, keys: namespace.keys().length }))
  }

  private namespaceOf(ns: string): Namespace<unknown, boolean> | StrongNamespace<unknown> {
    text(ns, 'namespace')
    const found = this.requireStore()
      .list()
      .find((n) => n.name === ns)
    if (found === undefined) {
      throw new OrreryError('UNKNOWN_NAMESPACE', `no namespace ${JSON.stringify(ns)} is open on this store`, { details: { namespace: ns } })
    }
    return found.namespace
  }

  /** Up to `limit` entries of a namespace whose keys start with `prefix`, in key order. */
  entries(ns: string, options: { prefix?: string; limit?: number } = {}): EntryView[] {
    const o = checkOptions(options, 'options', 'argument', ['prefix', 'limit'])
    const prefix = o.prefix === undefined ? '' : text(o.prefix, 'prefix', {}, 'option')
    const limit = limitOf(o.limit)
    const namespace = this.namespaceOf(ns)
    const keys = namespace.keys(prefix).slice(0, limit)
    const out: EntryView[] = []
    for (const key of keys) {
      const e = namespace.get(key)
      if (e !== undefined) out.push(entryView(e))
    }
    return out
  }

  /** One entry; `NOT_FOUND` when the key holds no value. */
  entry(ns: string, key: string): EntryView {
    const namespace = this.namespaceOf(ns)
    text(key, 'key')
    const e = namespace.get(key)
    if (e === undefined)
      throw new OrreryError('NOT_FOUND', `no key ${JSON.stringify(key)} in namespace ${JSON.stringify(ns)}`, { details: { namespace: ns, key } })
    return entryView(e)
  }

  /** Writes a value (resolves once acknowledged: on disk for a durable store, by the broker for a strong namespace). */
  async put(ns: string, key: string, value: unknown): Promise<EntryView> {
    const namespace = this.namespaceOf(ns)
    text(key, 'key')
    await namespace.put(key, value)
    return this.entry(ns, key)
  }

  /** Deletes a key; `NOT_FOUND` when it holds no value. */
  async deleteEntry(ns: string, key: string): Promise<{ deleted: true }> {
    this.entry(ns, key)
    await this.namespaceOf(ns).delete(key)
    return { deleted: true }
  }

  // ---- workflows ----

  private requireWorkflows(): Workflows {
    if (this.workflows === undefined)
      throw new OrreryError('UNSUPPORTED', 'no workflows are attached to this control (orrery.control({ workflows }))', { details: { part: 'workflows' } })
    return this.workflows
  }

  /** Every workflow version known. */
  definitions(): DefinitionView[] {
    if (this.workflows === undefined) return []
    return this.workflows.definitions().map((definition) => ({ name: definition.name, version: definition.version, definition }))
  }

  /** Up to `limit` runs (newest first), filtered by status and workflow name. */
  runs(options: { status?: RunStatus; definition?: string; limit?: number } = {}): RunView[] {
    const o = checkOptions(options, 'options', 'argument', ['status', 'definition', 'limit'])
    const limit = limitOf(o.limit)
    if (o.status !== undefined) oneOf(o.status, RUN_STATUSES, 'options.status')
    if (o.definition !== undefined) text(o.definition, 'options.definition')
    if (this.workflows === undefined) return []
    const filter = { ...(o.status === undefined ? {} : { status: o.status }), ...(o.definition === undefined ? {} : { definition: o.definition }) }
    return this.workflows
      .list(filter)
      .sort((a, b) => b.startedAt - a.startedAt || (a.id < b.id ? -1 : 1))
      .slice(0, limit)
  }

  private runOf(id: string): WorkflowRun {
    text(id, 'id')
    const run = this.requireWorkflows().get(id)
    if (run === undefined) throw new OrreryError('RUN_NOT_FOUND', `no run ${JSON.stringify(id)} is recorded`, { details: { runId: id } })
    return run
  }

  private runInfo(run: WorkflowRun): RunView {
    const info = this.requireWorkflows()
      .list({ definition: run.definition.name })
      .find((r) => r.id === run.id)
    if (info !== undefined) return info
    const meta = run.state()
    return {
      id: run.id,
      definition: run.definition.name,
      version: run.definition.version,
      status: run.status(),
      generation: run.generation,
      startedAt: meta.startedAt,
      ...(meta.finishedAt === undefined ? {} : { finishedAt: meta.finishedAt }),
    }
  }

  /** A run with its state, a page of its history (from event `historyFrom`, default 0; at most `historyLimit`, default 1,000) and its definition. */
  run(id: string, options: { historyFrom?: number; historyLimit?: number } = {}): RunDetail {
    const o = checkOptions(options, 'options', 'argument', ['historyFrom', 'historyLimit'])
    const from = intOr(o.historyFrom, 0, 'historyFrom')
    const limit = limitOf(o.historyLimit, DEFAULT_HISTORY, MAX_HISTORY)
    const run = this.runOf(id)
    return this.detailOf(run, this.runInfo(run), this.requireWorkflows().definitions(), from, limit)
  }

  /** A run's detail, from its listing and the definitions known (read once by a snapshot for every run). */
  private detailOf(run: WorkflowRun, info: RunView, definitions: readonly WorkflowDefinition[], from: number, limit: number): RunDetail {
    const history = run.history()
    const definitionDoc = definitions.find((d) => d.name === run.definition.name && d.version === run.definition.version)
    return {
      ...info,
      state: plain(run.state()) as RunDetail['state'],
      history: plain(history.slice(from, from + limit)) as RunDetail['history'],
      historyTotal: history.length,
      ...(definitionDoc === undefined ? {} : { definitionDoc }),
    }
  }

  /** Every run's detail (a snapshot's), reading the run list and the definitions once. */
  private details(): RunDetail[] {
    const wf = this.workflows
    if (wf === undefined) return []
    const definitions = wf.definitions()
    const out: RunDetail[] = []
    const newest = wf.list().sort((a, b) => b.startedAt - a.startedAt || (a.id < b.id ? -1 : 1))
    for (const info of newest.slice(0, MAX_LIMIT)) {
      const run = wf.get(info.id)
      if (run !== undefined) out.push(this.detailOf(run, info, definitions, 0, MAX_HISTORY))
    }
    return out
  }

  /** Starts a run of the newest version of workflow `definition` (a name), or of a definition given as data. */
  async startRun(definition: string | WorkflowDefinition, input?: unknown, options: { id?: string } = {}): Promise<RunView> {
    const wf = this.requireWorkflows()
    const o = checkOptions(options, 'options', 'argument', ['id'])
    if (typeof definition === 'string') {
      text(definition, 'definition', { nonEmpty: true })
      if (!wf.definitions().some((d) => d.name === definition)) {
        throw new OrreryError('WORKFLOW_NOT_FOUND', `no workflow ${JSON.stringify(definition)} is defined`, { details: { workflow: definition } })
      }
    }
    const run = await wf.start(definition as string, input, o.id === undefined ? {} : { id: o.id })
    return this.runInfo(run)
  }

  /** Sends a signal to a run (taken by its next wait on that name). */
  async signalRun(id: string, name: string, payload?: unknown): Promise<RunView> {
    const run = this.runOf(id)
    text(name, 'name', { nonEmpty: true })
    await run.signal(name, payload)
    return this.runInfo(run)
  }

  /** Cancels a run (completed steps compensated). */
  async cancelRun(id: string): Promise<RunView> {
    const run = this.runOf(id)
    await run.cancel()
    return this.runInfo(run)
  }

  // ---- live and offline ----

  /** Mesh events, bus events and run status changes, as they happen. */
  events(): Stream<ControlEvent> {
    return new Stream<ControlEvent>({
      start: (sink) => {
        const subs: Subscription[] = []
        if (this.closed) {
          sink.complete()
          return { stop: () => {}, setPaused: () => {} }
        }
        if (this.mesh !== undefined)
          subs.push(this.mesh.events.subscribe((event) => sink.next({ source: 'mesh', at: Date.now(), event: plain(event) as Record<string, unknown> })))
        subs.push(this.bus.events.subscribe((event) => sink.next({ source: 'bus', at: Date.now(), event: plain(event) as Record<string, unknown> })))
        const unwatch = this.watchRuns((run) => sink.next({ source: 'run', at: Date.now(), run }))
        const stop = (): void => {
          this.live.delete(end)
          for (const s of subs) s.unsubscribe()
          unwatch()
        }
        // The control closing (its Orrery closed) ends the stream: nothing outlives what it watches.
        const end = (): void => {
          stop()
          sink.complete()
        }
        this.live.add(end)
        return { stop, setPaused: () => {} }
      },
    })
  }

  /**
   * Calls `onRun` with each run whose status changed, as its record is written, until the
   * returned function is called. One watch of the workflows serves every watcher (an events
   * stream each), not one each.
   */
  private watchRuns(onRun: (run: RunView) => void): () => void {
    const wf = this.workflows
    if (wf === undefined) return () => {}
    if (this.runWatchers.size === 0) this.unwatchRuns = wf.watchRuns((run) => this.runWritten(run))
    this.runWatchers.add(onRun)
    return () => {
      if (!this.runWatchers.delete(onRun) || this.runWatchers.size > 0) return
      this.unwatchRuns?.()
      this.unwatchRuns = undefined
      this.runsSeen.clear()
    }
  }

  /** A run's record was written: handed to every watcher if its status is not the one last told. */
  private runWritten(run: RunView): void {
    if (this.runsSeen.get(run.id) === run.status) return
    // Only unfinished runs are remembered: an ended run's status changes no more.
    if (FINAL_STATUSES.has(run.status)) this.runsSeen.delete(run.id)
    else this.runsSeen.set(run.id, run.status)
    for (const watcher of [...this.runWatchers]) watcher(run)
  }

  /** Everything at once, as plain JSON: what the dashboard opens offline. */
  async snapshot(): Promise<ControlSnapshot> {
    const deadLetters: DeadLetterView[] = []
    for (const origin of this.dead.origins(this.bus.channels())) deadLetters.push(...(await this.dead.list(origin, MAX_LIMIT)))
    const runs = this.details()
    const runsTotal = this.workflows === undefined ? 0 : this.workflows.list().length
    return {
      at: Date.now(),
      overview: this.overview(),
      agents: this.agents(),
      channels: this.channels(),
      groups: this.groups(),
      deadLetters,
      namespaces: this.namespaces(),
      definitions: this.definitions(),
      runs,
      runsTotal,
    }
  }

  /** Stops watching the bus, ends every `events()` and `tail()` stream and gives back the dead letters held here. */
  close(): void {
    if (this.closed) return
    this.closed = true
    for (const end of [...this.live]) end()
    this.watching.unsubscribe()
    this.dead.close()
  }
}

function unknownAgent(id: string): OrreryError {
  return new OrreryError('UNKNOWN_AGENT', `no agent ${JSON.stringify(id)} is known`, { details: { agent: id } })
}

function entryView(e: { key: string; value: unknown; version: number; stamp?: unknown }): EntryView {
  return { key: e.key, value: plain(e.value), version: e.version, ...(e.stamp === undefined ? {} : { stamp: plain(e.stamp) }) }
}

/** Whether an error means "no such thing" (the HTTP API answers 404). */
export function isNotFound(error: unknown): boolean {
  if (!isOrreryError(error)) return false
  return error.code === 'NOT_FOUND' || error.code.startsWith('UNKNOWN_') || error.code.endsWith('_NOT_FOUND')
}
