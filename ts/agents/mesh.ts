/**
 * The agent mesh: factories by agent type, running agents (replicas, pause, resume, stop),
 * supervisors, requests and messages routed by capability, and graceful shutdown of the whole
 * (also on SIGINT/SIGTERM when asked). Everything that happens comes out of `events`.
 */
import { Subject, type Observable, type Subscription } from 'rxjs'

import { silentLogger, type Agent, type AgentClass, type AgentContext, type Logger } from './agent.js'
import { AgentRunner, inboxTermsOf, type AgentState, type InboxTerms, type RateLimit, type RetryOptions, type RunnerHost, type RunOptions } from './runner.js'
import type { Backend, MeshCore, MeshCoreOptions } from '../engines/backend.js'
import { runnerLink, type Bus } from '../bus/bus.js'
import { inboxOf, MAX_CAPACITY, type PublishOptions } from '../bus/options.js'
import {
  callable,
  finite,
  flag,
  int,
  intOr,
  MAX_TIMER_MS,
  keysOf,
  ms,
  msOr,
  name as checkName,
  list,
  oneOfOr,
  options as checkOptions,
  refuse,
  text,
  textOr,
  type Where,
} from '../check.js'
import { DEFAULTS } from '../engines/manifest.js'
import { checkConfig, gatherConfig, type ConfigSources } from './config.js'
import { OrreryError } from '../errors.js'
import type { Message } from '../bus/message.js'
import { noMetrics, promMetrics, type AgentMetrics, type PromRegistry } from './metrics.js'
import {
  checkBackoff,
  checkCapabilities,
  checkTags,
  eventStream,
  MAX_AGENT_ID,
  Registry,
  splitCapability,
  type BreakerOptions,
  type CapabilitySpec,
  type LivenessOptions,
  type RegistryEvent,
  type Strategy,
} from './registry.js'
import { Router, type RouteOptions } from './router.js'
import { INBOXES, REGISTRY_CHANNEL, SharedRegistry } from './shared.js'
import { generatedBy, Salvage, type SalvageHost, type SalvageReport } from './salvage.js'
import { newProcessId } from '../transports/link.js'
import { START_TIMEOUT_MS, WorkerReplica, canStartThreads, type ThreadMeshOptions } from './threads.js'
import { checkAutoscale, TypeAutoscaler, type AutoscaleEvent, type AutoscaleOptions, type Autoscaler } from './autoscale.js'
import { RESTART_BACKOFF, RESTART_STRATEGIES, Supervisor, type ChildSpec, type SupervisorEvent, type SupervisorSpec } from './supervisor.js'

/** Options of a mesh. */
export interface MeshOptions {
  /** Seeds random selection and jitter, so that a run under a fake clock replays (default: random). */
  seed?: number
  heartbeat?: LivenessOptions
  breaker?: BreakerOptions
  /** A pino logger; each agent logs through a child bound to its id (default: silent). */
  logger?: Logger
  /** A prom-client Registry to record agent metrics in (Node); by default the Orrery's (`Orrery.create({ metrics })`). */
  metrics?: PromRegistry
  /** How long graceful stops wait for handlers, in ms (default 10,000). */
  shutdownTimeout?: number
  /** Shut down gracefully on SIGINT and SIGTERM, then let the signal end the process (Node; default false). */
  signals?: boolean
  /**
   * Shares the mesh with every process whose Orrery reaches the same broker: the name of a
   * transport of `Orrery.create({ transports })` (not a `memory` one). The mesh binds its
   * registry channel and every agent inbox to it, announces its agents there and mirrors the
   * others' (see docs/agents.md, "A mesh across processes"). One shared mesh per Orrery.
   */
  shared?: string
  /**
   * Shares the mesh's registry with the meshes of the worker threads attached to this Orrery's
   * core (`Orrery.attach`; native engine): every thread's agents are discoverable and routed to
   * from every thread, as a `shared` mesh's are across processes. Set it in each thread's mesh;
   * replicas on worker threads (`autoscale(type, { worker })`) need it. Not with `shared`.
   */
  threads?: boolean
}

/** How to run agents of a type (defaults per type come from `define`). */
export interface SpawnOptions {
  /** The agent's id (default `<type>-<n>`); with replicas, `<id>-<n>`. */
  id?: string
  /** How many agents to start (default 1). */
  replicas?: number
  /** Configuration values, and where else to read it (a JSON file, environment variables). */
  config?: Record<string, unknown>
  configFrom?: Omit<ConfigSources, 'values'>
  /** Replaces the class's declared capabilities. */
  capabilities?: readonly CapabilitySpec[]
  tags?: readonly string[]
  /** Deliveries handled at once (default 16). */
  concurrency?: number
  /** Routed calls in flight at once (default 0: no cap). */
  bulkhead?: number
  /** Handler timeout in ms (default 30,000). */
  handlerTimeout?: number
  retry?: RetryOptions
  /** Token buckets for the agent and per capability; over them a message waits or is refused with `RATE_LIMITED`. */
  rateLimit?: { agent?: RateLimit; capabilities?: Readonly<Record<string, RateLimit>>; policy?: 'wait' | 'reject' }
}

/** Builds agents of a type: a subclass of Agent, or a function. */
export type AgentFactory<C = unknown> = AgentClass<C> | ((context: AgentContext<C>) => Agent<C>)

/** Something that happened in the mesh. */
export type MeshEvent =
  | RegistryEvent
  | SupervisorEvent
  | AutoscaleEvent
  | { type: 'started' | 'stopped' | 'paused' | 'resumed'; agent: string; at: number }
  | { type: 'crashed'; agent: string; reason: string; error: string; at: number }
  | { type: 'config'; agent: string; at: number }
  | SalvageReport
  | {
      type: 'retry' | 'fallback' | 'dead-letter' | 'rate-limited'
      agent: string
      capability: string
      attempt: number
      error?: string
      delay?: number
      at: number
    }

/**
 * How much longer a salvage waits when its agent was deregistered while this process read
 * nothing (see `Mesh.salvage`): a write the broker lost in an outage is sent again after 5 s
 * unanswered (NATS), and a process's beats come back that much after its reads.
 */
const AFTER_DEAFNESS_MS = 10_000
const DEFAULT_HANDLER_TIMEOUT = 30_000
const DEFAULT_RETRY_ATTEMPTS = 3
/** How an agent with the default options reads its inbox (what a salvage assumes of a process that does not say). */
const DEFAULT_INBOX_TERMS: InboxTerms = inboxTermsOf(DEFAULT_HANDLER_TIMEOUT, DEFAULT_RETRY_ATTEMPTS, undefined)

/** A running agent, by id. */
export interface AgentHandle {
  readonly id: string
  readonly type: string
  readonly state: AgentState
  /** The agent object itself. */
  readonly agent: Agent<unknown>
  pause(): Promise<void>
  resume(): Promise<void>
  stop(options?: { timeout?: number }): Promise<void>
  /**
   * Applies configuration `values` over the current ones: valid, it is applied and the agent's
   * `onConfig` runs; invalid, it is refused with `INVALID_CONFIG` listing every issue, and the
   * old configuration stays.
   */
  reconfigure(values: Record<string, unknown>): Promise<void>
}

interface Definition {
  readonly factory: AgentFactory
  readonly defaults: SpawnOptions
  count: number
}

function isClass(factory: AgentFactory): factory is AgentClass {
  return typeof factory === 'function' && /^class[\s{]/.test(Function.prototype.toString.call(factory))
}

/** Agents one spawn may start: the registry's slots (a core handle's 20 index bits). */
const MAX_REPLICAS = 2 ** 20
/** Deliveries an agent handles at once: its inbox member's `maxInFlight`, bounded as the bus bounds it. */
const MAX_CONCURRENCY = MAX_CAPACITY
/** An agent's inbox lease outlives its handler timeout by this much, so a timed-out handler is failed (and retried) by its agent before the bus redelivers it. */
const LEASE_MARGIN_MS = 5_000
/** Counts the core keeps as 32-bit integers. */
const U32 = { min: 1, max: 2 ** 32 - 1 }
/** How long a shared mesh waits for the broker to echo its first event. */
const JOIN_TIMEOUT_MS = 10_000
/** The buses (Orrerys) running a shared mesh: one at a time, since inboxes and the registry channel are the Orrery's. */
const sharing = new WeakSet<Bus>()

/** The fields of each options object the mesh takes: any other is refused. */
const SPAWN_KEYS = keysOf<SpawnOptions>()([
  'id',
  'replicas',
  'config',
  'configFrom',
  'capabilities',
  'tags',
  'concurrency',
  'bulkhead',
  'handlerTimeout',
  'retry',
  'rateLimit',
])
const CONFIG_FROM_KEYS = keysOf<NonNullable<SpawnOptions['configFrom']>>()(['file', 'env'])
const RETRY_KEYS = keysOf<RetryOptions>()(['attempts', 'backoff', 'isPermanent', 'isFatal'])
const RATE_LIMITS_KEYS = keysOf<NonNullable<SpawnOptions['rateLimit']>>()(['agent', 'capabilities', 'policy'])
const RATE_LIMIT_KEYS = keysOf<RateLimit>()(['perSecond', 'burst'])
const SUPERVISOR_KEYS = keysOf<SupervisorSpec>()(['name', 'strategy', 'intensity', 'backoff', 'children'])
const INTENSITY_KEYS = keysOf<NonNullable<SupervisorSpec['intensity']>>()(['restarts', 'withinMs'])
const CHILD_KEYS = keysOf<ChildSpec>()(['type', 'replicas', 'id', 'options'])
const MESH_KEYS = keysOf<MeshOptions>()(['seed', 'heartbeat', 'breaker', 'logger', 'metrics', 'shutdownTimeout', 'signals', 'shared', 'threads'])
const HEARTBEAT_KEYS = keysOf<LivenessOptions>()(['interval', 'degradedAfter', 'unhealthyAfter', 'offlineAfter', 'deregisterAfter'])
const BREAKER_KEYS = keysOf<BreakerOptions>()(['failures', 'coolDown', 'probes', 'successes'])

/** A token bucket: a rate > 0 and a burst >= 1 (the core's rule), plain numbers only. */
function checkRateLimit(value: unknown, what: string): RateLimit {
  const limit = checkOptions(value as RateLimit, what, 'option', RATE_LIMIT_KEYS)
  finite(limit.perSecond, `${what}.perSecond`, { above: 0 })
  if (limit.burst !== undefined) finite(limit.burst, `${what}.burst`, { min: 1 })
  return limit
}

/**
 * Checks spawn options (a spawn's, a type's defaults, a supervised child's) when they are given,
 * so a wrong value is refused at the call, never inside an agent's subscription or the engine.
 */
function checkSpawn(value: SpawnOptions | undefined, what: string, where: Where = 'argument'): SpawnOptions {
  const o = checkOptions(value, what, where, SPAWN_KEYS)
  if (o.id !== undefined) checkName(o.id, 'id', 'option', MAX_AGENT_ID)
  if (o.replicas !== undefined) int(o.replicas, 'replicas', { min: 1, max: MAX_REPLICAS })
  if (o.config !== undefined) checkOptions(o.config, 'config', 'option')
  if (o.configFrom !== undefined) {
    const from = checkOptions(o.configFrom, 'configFrom', 'option', CONFIG_FROM_KEYS)
    textOr(from.file, 'configFrom.file', { nonEmpty: true })
    textOr(from.env, 'configFrom.env', { nonEmpty: true })
  }
  if (o.capabilities !== undefined) checkCapabilities(o.capabilities, 'capabilities')
  if (o.tags !== undefined) checkTags(o.tags, 'tags')
  if (o.concurrency !== undefined) int(o.concurrency, 'concurrency', { min: 1, max: MAX_CONCURRENCY })
  if (o.bulkhead !== undefined) int(o.bulkhead, 'bulkhead', { max: 2 ** 32 - 1 })
  // The inbox lease is the handler timeout plus a margin, and must fit a timer too.
  if (o.handlerTimeout !== undefined && ms(o.handlerTimeout, 'handlerTimeout', 1) > MAX_TIMER_MS - LEASE_MARGIN_MS) {
    refuse(
      'option',
      'handlerTimeout',
      o.handlerTimeout,
      `must be at most ${MAX_TIMER_MS - LEASE_MARGIN_MS} ms (its inbox lease adds ${LEASE_MARGIN_MS} ms, and a timer waits at most ${MAX_TIMER_MS})`,
    )
  }
  if (o.retry !== undefined) {
    const retry = checkOptions(o.retry, 'retry', 'option', RETRY_KEYS)
    // maxDeliveries of the inbox is attempts + 2, a 32-bit count in the core.
    if (retry.attempts !== undefined) int(retry.attempts, 'retry.attempts', { max: 2 ** 32 - 3 })
    checkBackoff(retry.backoff, 'retry.backoff')
    if (retry.isPermanent !== undefined) callable(retry.isPermanent, 'retry.isPermanent', 'option')
    if (retry.isFatal !== undefined) callable(retry.isFatal, 'retry.isFatal', 'option')
  }
  if (o.rateLimit !== undefined) {
    const rate = checkOptions(o.rateLimit, 'rateLimit', 'option', RATE_LIMITS_KEYS)
    if (rate.agent !== undefined) checkRateLimit(rate.agent, 'rateLimit.agent')
    if (rate.capabilities !== undefined) {
      const caps = checkOptions(rate.capabilities, 'rateLimit.capabilities', 'option')
      for (const cap of Object.keys(caps)) checkRateLimit(caps[cap], `rateLimit.capabilities.${cap}`)
    }
    oneOfOr(rate.policy, ['wait', 'reject'], 'wait', 'rateLimit.policy')
  }
  return o
}

/** Checks a supervisor's spec whole before any child starts. */
function checkSupervisor(value: SupervisorSpec): SupervisorSpec {
  const spec = checkOptions(value, 'spec', 'argument', SUPERVISOR_KEYS)
  textOr(spec.name, 'name', { nonEmpty: true })
  oneOfOr(spec.strategy, RESTART_STRATEGIES, 'one-for-one', 'strategy')
  if (spec.intensity !== undefined) {
    const intensity = checkOptions(spec.intensity, 'intensity', 'option', INTENSITY_KEYS)
    if (intensity.restarts !== undefined) int(intensity.restarts, 'intensity.restarts')
    if (intensity.withinMs !== undefined) finite(intensity.withinMs, 'intensity.withinMs', { above: 0 })
  }
  checkBackoff(spec.backoff, 'backoff')
  list<ChildSpec>(spec.children, 'children', 'option').forEach((c, i) => {
    const child = checkOptions(c, `children[${i}]`, 'option', CHILD_KEYS)
    text(child.type, `children[${i}].type`, { nonEmpty: true }, 'option')
    if (child.replicas !== undefined) int(child.replicas, `children[${i}].replicas`, { min: 1, max: MAX_REPLICAS })
    if (child.id !== undefined) checkName(child.id, `children[${i}].id`, 'option', MAX_AGENT_ID)
    if (child.options !== undefined) checkSpawn(child.options, `children[${i}].options`, 'option')
  })
  return spec
}

/**
 * Checks that a mesh may share its registry with the worker threads on its core: the native
 * engine, no transport (the threads meet in the core, not on a broker), one such mesh per Orrery.
 */
function shareThreads(backend: Backend, bus: Bus, shared: unknown): void {
  if (backend.name !== 'native')
    throw new OrreryError('ENGINE_UNAVAILABLE', `threads: worker threads share a core on the native engine only (this Orrery runs ${backend.name})`, {
      details: { option: 'threads', engine: backend.name },
    })
  if (shared !== undefined)
    throw new OrreryError('INVALID_OPTION', 'threads: a mesh shares its registry with worker threads or through a transport (shared), not both', {
      details: { option: 'threads', value: true },
    })
  if (sharing.has(bus))
    throw new OrreryError('INVALID_OPTION', 'threads: this Orrery runs a shared mesh already (one per Orrery: shut it down first)', {
      details: { option: 'threads', value: true },
    })
  sharing.add(bus)
}

/**
 * Checks `shared` and binds the shared mesh's channels to the transport it names (before anything
 * is published or built); returns this process's id.
 */
function shareOn(bus: Bus, shared: unknown): string {
  const transport = text(shared, 'shared', { nonEmpty: true }, 'option')
  const transports = runnerLink(bus).transports
  if (transports === undefined)
    throw new OrreryError('INVALID_OPTION', `shared names transport ${transport}, but this Orrery has no transports (Orrery.create({ transports }))`, {
      details: { option: 'shared', value: transport },
    })
  if (sharing.has(bus))
    throw new OrreryError('INVALID_OPTION', 'shared: this Orrery runs a shared mesh already (one per Orrery: shut it down first)', {
      details: { option: 'shared', value: transport },
    })
  transports.bindAtRunTime([REGISTRY_CHANNEL, INBOXES], transport, 'shared')
  sharing.add(bus)
  return transports.processId
}

/** Checks a mesh's options, and turns them into the core's settings. */
function coreOptions(options: MeshOptions): MeshCoreOptions {
  const hb = checkOptions(options.heartbeat, 'heartbeat', 'option', HEARTBEAT_KEYS)
  const br = checkOptions(options.breaker, 'breaker', 'option', BREAKER_KEYS)
  if (options.logger !== undefined) callable(checkOptions(options.logger, 'logger', 'option').child, 'logger.child', 'option')
  if (options.metrics !== undefined) callable(checkOptions(options.metrics, 'metrics', 'option').getSingleMetric, 'metrics.getSingleMetric', 'option')
  msOr(options.shutdownTimeout, 10_000, 'shutdownTimeout')
  if (options.signals !== undefined) flag(options.signals, 'signals')
  return {
    seed: options.seed === undefined ? Math.floor(Math.random() * 2 ** 52) : int(options.seed, 'seed'),
    // The interval arms each agent's heartbeat timer.
    interval: msOr(hb.interval, DEFAULTS.heartbeatIntervalMs, 'heartbeat.interval', 1),
    degradedAfter: intOr(hb.degradedAfter, DEFAULTS.degradedAfter, 'heartbeat.degradedAfter', U32),
    unhealthyAfter: intOr(hb.unhealthyAfter, DEFAULTS.unhealthyAfter, 'heartbeat.unhealthyAfter', U32),
    offlineAfter: intOr(hb.offlineAfter, DEFAULTS.offlineAfter, 'heartbeat.offlineAfter', U32),
    deregisterAfter: msOr(hb.deregisterAfter, DEFAULTS.deregisterAfterMs, 'heartbeat.deregisterAfter'),
    failuresToOpen: intOr(br.failures, DEFAULTS.breakerFailures, 'breaker.failures', U32),
    coolDown: msOr(br.coolDown, DEFAULTS.breakerCoolDownMs, 'breaker.coolDown'),
    probes: intOr(br.probes, DEFAULTS.breakerProbes, 'breaker.probes', U32),
    successesToClose: intOr(br.successes, DEFAULTS.breakerSuccesses, 'breaker.successes', U32),
  }
}

export class Mesh {
  readonly registry: Registry
  private readonly router: Router
  private readonly types = new Map<string, Definition>()
  private readonly runners = new Map<string, AgentRunner>()
  private readonly owners = new Map<AgentRunner, Supervisor>()
  /** Ids being started (reserved until their start ends). */
  private readonly starting = new Set<string>()
  private readonly supervisors = new Set<Supervisor>()
  /** Replicas on worker threads whose thread has not ended (they end with the mesh). */
  private readonly replicas = new Set<WorkerReplica>()
  /** Dead agents' inboxes being emptied, by agent. */
  private readonly salvages = new Map<string, Salvage>()
  /** Salvages waiting to start, by agent (see `salvage`). */
  private readonly salvageTimers = new Map<string, ReturnType<typeof setTimeout>>()
  /** Replicas whose thread ended unasked, to be brought back (by id: their type, the ended thread's process), until one starts again. */
  private readonly reviving = new Map<string, { type: string; process: string }>()
  /** Per type autoscaled onto worker threads, the last id number given. */
  private readonly threadCounts = new Map<string, { count: number }>()
  /** Whether its registry is shared with worker threads (`threads: true`). */
  private readonly threads: boolean
  /** Autoscalers by agent type (one per type). */
  private readonly autoscalers = new Map<string, TypeAutoscaler>()
  /** Every autoscaler not fully closed (a stopped one still drains its replicas): shutdown and close end them. */
  private readonly scalers = new Set<TypeAutoscaler>()
  private readonly unhandled: (error: unknown) => void
  private readonly subject = new Subject<MeshEvent>()
  private readonly registryEvents: Subscription
  private readonly host: RunnerHost
  private readonly logger: Logger
  private readonly signalHandlers: Array<[string, () => void]> = []
  private closing: Promise<void> | undefined
  /** Whether its timers, subscriptions and core are released (by `shutdown` or its Orrery's `close`). */
  private released = false
  /** Everything that happens: registry, agent and supervisor events. */
  readonly events: Observable<MeshEvent>
  /** Set when the mesh is shared: what tells other processes about its agents and mirrors theirs. */
  private readonly shared: SharedRegistry | undefined
  /** In a shared mesh, this process's id (agents' `process`); undefined otherwise. */
  readonly process: string | undefined

  /** @internal Use `orrery.mesh()`. */
  static async create(backend: Backend, bus: Bus, clock: () => number, options: MeshOptions | undefined, onClose?: (mesh: Mesh) => void): Promise<Mesh> {
    const checked = checkOptions(options, 'options', 'argument', MESH_KEYS)
    const settings = coreOptions(checked)
    const threads = checked.threads !== undefined && flag(checked.threads, 'threads')
    if (threads) shareThreads(backend, bus, checked.shared)
    const process = threads ? newProcessId() : checked.shared === undefined ? undefined : shareOn(bus, checked.shared)
    let mesh: Mesh
    try {
      const metrics = checked.metrics ? await promMetrics(checked.metrics) : noMetrics
      mesh = new Mesh(backend, bus, clock, checked, settings, metrics, onClose, process)
    } catch (error) {
      if (process !== undefined) sharing.delete(bus)
      throw error
    }
    if (mesh.shared) {
      try {
        await mesh.shared.start(JOIN_TIMEOUT_MS)
      } catch (error) {
        mesh.close()
        throw error
      }
    }
    return mesh
  }

  private constructor(
    backend: Backend,
    readonly bus: Bus,
    readonly now: () => number,
    private readonly options: MeshOptions,
    private readonly settings: MeshCoreOptions,
    metrics: AgentMetrics,
    private readonly onClose: ((mesh: Mesh) => void) | undefined,
    process: string | undefined,
  ) {
    const core: MeshCore = backend.createMesh(settings)
    this.logger = options.logger ?? silentLogger
    // A subscriber that throws is logged; rethrown by rxjs from a timer, it would end the process.
    // With no logger given, the silent default would lose it: print it instead.
    const unhandled = options.logger
      ? (error: unknown) => this.logger.error({ err: error }, 'an events subscriber threw')
      : (error: unknown) => console.error('Orrery: a mesh.events or registry.events subscriber threw (give the mesh a logger to route this):', error)
    this.unhandled = unhandled
    this.events = eventStream(this.subject, unhandled)
    this.registry = Registry.create(core, now, unhandled)
    this.process = process
    this.threads = options.threads === true
    this.shared =
      process === undefined
        ? undefined
        : new SharedRegistry(
            {
              bus,
              registry: this.registry,
              interval: settings.interval,
              logger: this.logger,
              load: (id) => this.runners.get(id)?.inFlight ?? 0,
              watching: () => this.watchedThreads(),
              lost: (id, from) => this.lose(id, from),
              inboxTerms: (id) => this.runners.get(id)?.inboxTerms,
              // Over a broker only: a thread's mesh shares the starting thread's core, and its
              // starting thread cannot be dead while it runs.
              ...(typeof options.shared === 'string' && { stoppedBeating: (id, from, terms) => this.salvage(id, from, terms) }),
            },
            process,
          )
    this.router = new Router(bus, this.registry, (event) => this.subject.next({ ...event, at: now() }))
    const interval = settings.interval
    this.host = {
      bus: runnerLink(bus),
      registry: this.registry,
      core,
      metrics,
      interval,
      inboxFrom: process === undefined ? 'latest' : 'earliest',
      now,
      crashed: (runner, reason, error) => this.crashed(runner, reason, error),
      report: (event) => this.subject.next({ ...event, at: now() }),
    }
    this.registryEvents = this.registry.events.subscribe((event) => {
      this.subject.next(event)
      // Back before its salvage started: none is due (a later loss of it schedules its own).
      if (event.type === 'registered') this.cancelSalvage(event.agent)
      const lost =
        (event.type === 'health' && event.to === 'offline') || (event.type === 'deregistered' && event.reason === 'missed-heartbeats') ? event : undefined
      if (lost === undefined) return
      // Another process's agent that stopped beating will not answer (that process is gone or
      // cut off, and its agents are its own to restart): its callers fall back. Not one on a
      // watched worker thread (this mesh's, or another's told by its beats): its end is told
      // (`gone`); until then, a handler holding its loop only delays the beats, and what it was
      // asked is answered once the handler lets go. A thread wedged past its deadline is ended
      // by its replica's watch (threads.ts).
      if (lost.remote) return this.shared?.watched(lost.agent) ? undefined : this.lose(lost.agent, lost.process)
      // Lost heartbeats are a crash: the agent is wedged (or its loop is), whatever it says.
      const runner = this.runners.get(lost.agent)
      if (runner && (runner.state === 'running' || runner.state === 'paused'))
        this.crashed(runner, 'lost heartbeats', new OrreryError('TIMEOUT', `agent ${lost.agent} stopped beating`))
    })
    if (options.signals) this.handleSignals()
  }

  /**
   * The agents on this mesh's worker threads: its replicas whose thread has not ended, and those
   * whose thread ended unasked and that an autoscaler brings back.
   */
  private watchedThreads(): string[] {
    const ids = new Set<string>(this.reviving.keys())
    for (const replica of this.replicas) if (replica.state !== 'stopped' && replica.state !== 'crashed') ids.add(replica.id)
    return [...ids]
  }

  /**
   * An autoscaler stopped or closed: the replicas waiting to be brought back that no autoscaler
   * brings back now are lost, and their callers here and on every thread hear it. (Only a stop or
   * a close makes `revives` say no to one it said yes to.)
   */
  private sweepReviving(): void {
    if (this.closing !== undefined) return
    for (const [id, { type, process }] of this.reviving) {
      if (this.revives(id, type)) continue
      this.reviving.delete(id)
      this.lose(id, process)
      this.shared?.processGone(process, [id])
    }
  }

  /** Agents of other processes found gone this turn, with their processes (see `lose`). */
  private lost = new Map<string, string | undefined>()

  /**
   * Fails the calls waiting on agent `agent` of process `process`, gone, on the next turn, with
   * those of every other agent found gone meanwhile (one pass over the open requests). Not at
   * once: the registry's timer, late after a blocked event loop, runs before the beats that came
   * meanwhile are read; an agent they show alive again is left alone.
   */
  private lose(agent: string, process: string | undefined): void {
    if (this.lost.size === 0)
      setTimeout(() => {
        const lost = this.lost
        this.lost = new Map()
        if (this.released) return
        for (const id of lost.keys()) {
          const health = this.registry.get(id)?.health
          if (health !== undefined && health !== 'offline') lost.delete(id)
        }
        if (lost.size > 0) this.router.agentsLost(lost)
      }, 0)
    this.lost.set(agent, process)
  }

  /** Registers how to build agents of `type`, with default spawn options. */
  define<C>(type: string, factory: AgentFactory<C>, defaults?: SpawnOptions): this {
    checkName(type, 'type')
    callable(factory, 'factory')
    checkSpawn(defaults, 'defaults')
    if (this.types.has(type)) throw new OrreryError('INVALID_OPTION', `agent type ${type} is defined already`, { details: { option: 'type', value: type } })
    this.types.set(type, { factory: factory as AgentFactory, defaults: defaults ?? {}, count: 0 })
    return this
  }

  /** Starts `replicas` agents of a defined type; rejects (starting none) if any fails to start. */
  async spawn(type: string, options?: SpawnOptions): Promise<AgentHandle[]> {
    this.assertOpen()
    text(type, 'type')
    checkSpawn(options, 'options')
    const def = this.definition(type)
    const merged = { ...def.defaults, ...options }
    const replicas = merged.replicas ?? 1
    const ids: string[] = []
    for (let i = 0; i < replicas; i++) {
      const id = merged.id !== undefined ? (replicas === 1 ? merged.id : `${merged.id}-${i + 1}`) : this.generatedId(type, def.count + i + 1)
      // Every id is checked before any agent starts (a suffix may take one past the limit).
      ids.push(checkName(id, 'id', 'option', MAX_AGENT_ID))
    }
    if (merged.id === undefined) def.count += replicas
    const started: AgentRunner[] = []
    try {
      for (const id of ids) started.push(await this.startAgent(id, type, merged, undefined))
    } catch (error) {
      for (const runner of started) await runner.stop(0)
      throw error
    }
    return started.map((r) => this.handleOf(r))
  }

  /** Starts a supervisor over its children; resolves once each had its first start (failed starts are restarted in the background). */
  async supervise(spec: SupervisorSpec): Promise<Supervisor> {
    this.assertOpen()
    checkSupervisor(spec)
    for (const child of spec.children) this.definition(child.type)
    const supervisor = new Supervisor(
      {
        now: this.now,
        childId: (type) => (this.process === undefined ? type : `${type}.${this.process.slice(0, 8)}`),
        startChild: (id, type, options, owner) => this.startAgent(id, type, { ...this.definition(type).defaults, ...options }, owner),
        backoff: (b, attempt) => this.registry.backoff(b, attempt, RESTART_BACKOFF),
        report: (event) => this.subject.next(event),
        ended: (id) => runnerLink(this.bus).unanswered(inboxOf(id), `agent ${id} stopped before it answered`),
      },
      spec,
    )
    for (const id of supervisor.agents) checkName(id, 'id', 'option', MAX_AGENT_ID)
    this.supervisors.add(supervisor)
    await supervisor.start()
    return supervisor
  }

  /**
   * Grows and shrinks the agents of `type` from its inbox lag: `ceil(backlog / targetLag)`
   * replicas, from `min` to `max`; a shrink waits `cooldown` and drains a replica (out of
   * routing, stopped once its inbox is empty) so no message is left behind. Resolves once `min`
   * replicas run. See docs/agents.md, Autoscaling.
   */
  async autoscale(type: string, options: AutoscaleOptions): Promise<Autoscaler> {
    this.assertOpen()
    text(type, 'type')
    const checked = checkAutoscale(options)
    checkSpawn(checked.spawn, 'spawn', 'option')
    const worker = checked.worker
    if (worker !== undefined) {
      if (!canStartThreads())
        throw new OrreryError('UNSUPPORTED', "worker: replicas on worker threads need Node (the package's Node entry)", { details: { option: 'worker' } })
      if (!this.threads)
        throw new OrreryError(
          'INVALID_OPTION',
          'worker: replicas on worker threads need a mesh that shares its registry with them: orrery.mesh({ threads: true }) (native engine)',
          {
            details: { option: 'worker', value: String(worker) },
          },
        )
    }
    // Replicas on worker threads are defined there (the worker module); their ids are counted per type here all the same.
    const defined = worker === undefined ? this.definition(type) : undefined
    const def = defined ?? this.threadIds(type)
    if (this.autoscalers.has(type))
      throw new OrreryError('INVALID_OPTION', `agent type ${type} is autoscaled already (stop its autoscaler first)`, {
        details: { option: 'type', value: type },
      })
    const held = new Map<string, WorkerReplica>()
    const scaler = new TypeAutoscaler(
      {
        now: this.now,
        // Every replica of the type counts (an earlier autoscaler's too); it drains and stops only its own.
        runners: (t) =>
          worker === undefined
            ? [...this.runners.values()].filter((r) => r.agent.type === t)
            : [...new Set([...held.values(), ...[...this.replicas].filter((r) => r.type === t)])],
        inboxLoad: (id) => {
          // The agent's own inbox group (created by its runner): the core's counts, not a guess.
          const stats = this.bus.group(inboxOf(id), 'agent').stats()
          return stats.backlog + stats.pending
        },
        nextId: (t) => {
          let id: string
          do id = this.generatedId(t, ++def.count)
          while (
            this.starting.has(id) ||
            this.runners.has(id) ||
            held.has(id) ||
            [...this.replicas].some((r) => r.id === id) ||
            this.registry.owner(id) !== undefined
          )
          return id
        },
        start: (id, t, spawn) =>
          defined !== undefined ? this.startAgent(id, t, { ...defined.defaults, ...spawn }, undefined) : this.startReplica(held, worker!, id, t, spawn),
        stop: (runner) =>
          runner instanceof WorkerReplica ? runner.stop(this.options.shutdownTimeout ?? 10_000) : this.stopRunner(runner as AgentRunner, undefined),
        record: (t, backlog, lag) => this.host.metrics.load(t, backlog, lag),
        report: (event) => this.subject.next(event),
        failed: (error, t) => this.logger.error({ err: error, agentType: t }, 'the autoscaler could not start or stop a replica'),
        ended: (ended) => {
          if (this.autoscalers.get(ended.agentType) === ended) this.autoscalers.delete(ended.agentType)
          // Its gauges go, so a query does not read a stale backlog.
          if (!this.autoscalers.has(ended.agentType)) this.host.metrics.unload(ended.agentType)
          this.sweepReviving()
        },
        closed: (closed) => {
          this.scalers.delete(closed)
          this.sweepReviving()
        },
      },
      type,
      checked,
      this.unhandled,
    )
    this.autoscalers.set(type, scaler)
    this.scalers.add(scaler)
    try {
      await scaler.start()
    } catch (error) {
      this.autoscalers.delete(type)
      this.scalers.delete(scaler)
      throw error
    }
    return scaler
  }

  /** Starts a replica on a worker thread running `module`, held (under its id) in `held`. */
  private async startReplica(held: Map<string, WorkerReplica>, module: string | URL, id: string, type: string, spawn: SpawnOptions): Promise<WorkerReplica> {
    this.assertOpen()
    const { heartbeat, breaker, shutdownTimeout } = this.options
    const mesh: ThreadMeshOptions = {
      ...(heartbeat && { heartbeat: { ...heartbeat } }),
      ...(breaker && { breaker: { ...breaker } }),
      ...(shutdownTimeout !== undefined && { shutdownTimeout }),
    }
    const replica = new WorkerReplica(
      {
        report: (event) => this.subject.next({ ...event, at: this.now() }),
        // A thread that ends after the mesh closed has nothing left to deregister. One that ended
        // unasked leaves its agents' callers nothing to wait for.
        gone: (process, asked) => {
          if (this.released) return
          const lost = new Set<string>()
          // Ended unasked, its own agent even if already deregistered (a wedged thread's missed beats).
          if (!asked && !this.revives(id, type)) lost.add(id)
          else if (!asked) this.reviving.set(id, { type, process })
          for (const agent of this.registry.list()) if (agent.process === process && !this.revives(agent.id, agent.type)) lost.add(agent.id)
          for (const agent of lost) this.lose(agent, process)
          this.shared?.processGone(process, [...lost])
        },
      },
      id,
      type,
      module,
      { handle: this.bus.share(), type, id, spawn, mesh, alive: this.settings.interval },
      { interval: this.settings.interval, deadline: this.settings.offlineAfter * this.settings.interval + this.settings.deregisterAfter },
    )
    held.set(id, replica)
    this.replicas.add(replica)
    this.reviving.delete(id)
    void replica.exited.then(() => this.replicas.delete(replica))
    try {
      await replica.started
      // Routable from here once this thread's registry has it healthy (its registration comes over the core's registry channel).
      await this.healthy(id, replica)
    } catch (error) {
      if (held.get(id) === replica) held.delete(id)
      throw error
    }
    return replica
  }

  /** The id counter of a type whose replicas run on worker threads (defined there, not here). */
  private threadIds(type: string): { count: number } {
    let ids = this.threadCounts.get(type)
    if (ids === undefined) {
      ids = { count: 0 }
      this.threadCounts.set(type, ids)
    }
    return ids
  }

  /**
   * Resolves once agent `id` (of a replica's thread) is healthy in this mesh's registry; rejects
   * if its thread ends first, or ends it if that takes longer than a start may.
   */
  private healthy(id: string, replica: WorkerReplica): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = (error?: OrreryError) => {
        subscription.unsubscribe()
        clearTimeout(timer)
        if (error) reject(error)
        else resolve()
      }
      const check = () => {
        if (this.registry.get(id)?.health === 'healthy') done()
      }
      const subscription = this.registry.events.subscribe((event) => {
        if ('agent' in event && event.agent === id) check()
      })
      const timer = setTimeout(() => {
        done(new OrreryError('TIMEOUT', `agent ${id} of a worker thread was not healthy here within ${START_TIMEOUT_MS} ms`, { details: { agent: id } }))
        replica.kill()
      }, START_TIMEOUT_MS)
      void replica.exited.then((code) =>
        done(
          new OrreryError('AGENT_FAILED', `the worker thread of agent ${id} ended (exit code ${code}) before its agent registered here`, {
            details: { agent: id },
          }),
        ),
      )
      check()
    })
  }

  /** @internal Takes agent `id` out of routing; it goes on serving its inbox (a replica on a worker thread, told to drain). */
  drain(id: string): void {
    this.runners.get(id)?.drain()
  }

  /** A running agent. */
  agent(id: string): AgentHandle | undefined {
    text(id, 'id')
    const runner = this.runners.get(id)
    return runner && this.handleOf(runner)
  }

  /** Every agent the mesh runs (or ran and lost), by id. */
  agents(): AgentHandle[] {
    return [...this.runners.values()].map((r) => this.handleOf(r))
  }

  /** Pauses one agent, or all. */
  async pause(id?: string): Promise<void> {
    for (const runner of this.pick(id)) {
      if (runner.state !== 'running') continue
      await runner.pause()
      this.subject.next({ type: 'paused', agent: runner.id, at: this.now() })
    }
  }

  /** Resumes one agent, or all. */
  async resume(id?: string): Promise<void> {
    for (const runner of this.pick(id)) {
      if (runner.state !== 'paused') continue
      await runner.resume()
      this.subject.next({ type: 'resumed', agent: runner.id, at: this.now() })
    }
  }

  /** Stops one agent gracefully (see `shutdown`); its supervisor does not restart it. */
  async stop(id: string, options?: { timeout?: number }): Promise<void> {
    text(id, 'id')
    const timeout = msOr(checkOptions(options, 'options', 'argument', ['timeout']).timeout, this.options.shutdownTimeout ?? 10_000, 'timeout')
    const [runner] = this.pick(id)
    await this.stopRunner(runner!, timeout)
  }

  /**
   * Sends a request to an agent offering `capability` (`name` or `name@range`), picked by
   * strategy; failures fall back to other candidates and retry with backoff; a breaker per
   * agent skips failing ones; every call is bounded by `timeout`. Rejects with `NO_RESPONDER`
   * (suggesting similar names), `CIRCUIT_OPEN`, `BULKHEAD_FULL`, `TIMEOUT` or `HANDLER_ERROR`.
   */
  request<R = unknown>(capability: string, payload: unknown, options?: RouteOptions): Promise<Message<R>> {
    if (this.timing === undefined) return this.router.request<R>(capability, payload, options)
    const timing = this.timing
    const started = performance.now()
    const name = typeof capability === 'string' ? splitCapability(capability)[0] : ''
    return this.router.request<R>(capability, payload, options).then(
      (reply) => {
        timing(name, started, undefined)
        return reply
      },
      (error: unknown) => {
        timing(name, started, error)
        throw error
      },
    )
  }

  /** @internal Set while the Orrery's metrics time routed requests: a capability's name, when it began (`performance.now()`), its error. */
  timing: ((capability: string, started: number, error: unknown) => void) | undefined

  /**
   * Sends a message (no reply) to one agent offering `capability`: it is queued in that agent's
   * inbox, where its own retries and dead-lettering apply.
   */
  send(
    capability: string,
    payload: unknown,
    options: PublishOptions & { tags?: readonly string[]; strategy?: Strategy } = {},
  ): Promise<{ readonly id: string; readonly agent: string }> {
    return this.router.send(capability, payload, options)
  }

  /**
   * Shuts the mesh down gracefully: supervisors stop restarting; every agent stops taking work,
   * its running handlers get `timeout` ms to finish (what finishes is acked; a message not done
   * stays in its inbox to be redelivered, a request not done is answered CLOSED so its caller
   * falls back), and it deregisters. Nothing acknowledged is lost.
   */
  shutdown(options?: { timeout?: number }): Promise<void> {
    let timeout: number
    try {
      timeout = msOr(checkOptions(options, 'options', 'argument', ['timeout']).timeout, this.options.shutdownTimeout ?? 10_000, 'timeout')
    } catch (error) {
      return Promise.reject(error)
    }
    this.closing ??= (async () => {
      const salvaged = this.endSalvages(false)
      for (const a of [...this.scalers]) a.close()
      for (const s of this.supervisors) s.stop()
      await Promise.all([...[...this.runners.values()].map((r) => this.stopRunner(r, timeout)), ...[...this.replicas].map((r) => r.stop(timeout))])
      await salvaged
      // The other processes hear of every stop before this resolves (not after a heartbeat deadline).
      this.shared?.stopBeating()
      await this.shared?.flushed()
      this.release()
    })()
    return this.closing
  }

  /**
   * @internal Stops everything at once (its Orrery is closing): supervisors stop, every agent
   * dies as in a crash (running handlers are abandoned, so their unacked messages stay in the
   * inboxes for redelivery, and the requests among them are answered `CLOSED`, so their callers
   * fall back to other agents), routed retries waiting on a backoff fail with `CLOSED`, and every
   * timer and interval is cleared, so nothing keeps the process alive.
   */
  close(): void {
    if (this.released) return
    this.closing ??= Promise.resolve()
    void this.endSalvages(true)
    for (const a of [...this.scalers]) a.close()
    for (const s of this.supervisors) s.stop()
    for (const runner of this.runners.values()) runner.kill('stopped')
    for (const replica of this.replicas) replica.kill()
    this.release()
  }

  /**
   * Empties the inbox of another process's agent deregistered for missed beats, if its process
   * generated its id (so no agent reads that inbox again): see salvage.ts. It starts two beats
   * later at the earliest, and only once this process has read the registry channel without a
   * gap for a heartbeat deadline and a beat (after an outage of its own link, or a stall of its
   * own loop, the others' beats are heard again first), if the agent has not registered again.
   * A deregistration made while this process read nothing (it was the deaf one) waits
   * `AFTER_DEAFNESS_MS` more: the others' writes may come back later than its reads.
   */
  private salvage(agent: string, process: string, terms: InboxTerms | undefined, needed?: number): void {
    if (this.closing !== undefined || this.salvages.has(agent) || this.salvageTimers.has(agent) || !generatedBy(agent, process)) return
    const { interval, offlineAfter, deregisterAfter } = this.settings
    const heard = offlineAfter * interval + deregisterAfter + interval
    const shared = this.shared!
    needed ??= shared.readingFor() < heard ? heard + AFTER_DEAFNESS_MS : heard
    const wait = Math.min(MAX_TIMER_MS, Math.max(2 * interval, needed - shared.readingFor()))
    const timer = setTimeout(() => {
      this.salvageTimers.delete(agent)
      if (this.closing !== undefined || this.registry.owner(agent) !== undefined) return
      // A timer may fire a little early.
      if (shared.readingFor() + 10 < needed) return this.salvage(agent, process, terms, needed)
      this.startSalvage(agent, process, terms)
    }, wait)
    ;(timer as { unref?: () => void }).unref?.()
    this.salvageTimers.set(agent, timer)
  }

  private cancelSalvage(agent: string): void {
    const timer = this.salvageTimers.get(agent)
    if (timer === undefined) return
    clearTimeout(timer)
    this.salvageTimers.delete(agent)
  }

  private startSalvage(agent: string, process: string, terms: InboxTerms | undefined): void {
    if (this.salvages.has(agent)) return
    const { interval, offlineAfter, deregisterAfter } = this.settings
    const host: SalvageHost = {
      bus: this.bus,
      registry: this.registry,
      logger: this.logger,
      interval,
      deadline: offlineAfter * interval + deregisterAfter,
      now: this.now,
      send: (capability, payload, options) => this.send(capability, payload, options),
      report: (report) => this.subject.next(report),
    }
    let salvage: Salvage
    try {
      salvage = new Salvage(host, agent, process, terms ?? DEFAULT_INBOX_TERMS, (ended) => this.salvages.delete(ended.agent))
    } catch (error) {
      // The bus closed meanwhile, or its group refused the terms.
      this.logger.warn({ err: error, agent, process }, `the inbox of agent ${agent} could not be salvaged`)
      return
    }
    if (!salvage.ended) this.salvages.set(agent, salvage)
  }

  /** Ends every salvage: at once (`now`, a close), or once what each is sending on is acked (a shutdown). */
  private endSalvages(now: boolean): Promise<unknown> {
    return Promise.all([...this.salvages.values()].map((salvage) => salvage.end(now)))
  }

  /** Releases what the mesh holds: its subscriptions, signal handlers, registry timer and core. */
  private release(): void {
    if (this.released) return
    this.released = true
    if (this.shared) {
      this.shared.close()
      sharing.delete(this.bus)
    }
    this.router.close()
    this.registryEvents.unsubscribe()
    for (const timer of this.salvageTimers.values()) clearTimeout(timer)
    this.salvageTimers.clear()
    for (const [signal, handler] of this.signalHandlers) process.off(signal, handler)
    this.registry.close()
    this.subject.complete()
    this.onClose?.(this)
  }

  /**
   * An agent id made by `spawn` or an autoscaler: `<type>-<n>`, and in a shared mesh
   * `<type>-<n>.<the first 8 digits of the process id>`, so two processes spawning a type never
   * make the same id.
   */
  private generatedId(type: string, n: number): string {
    return this.process === undefined ? `${type}-${n}` : `${type}-${n}.${this.process.slice(0, 8)}`
  }

  private async startAgent(id: string, type: string, options: SpawnOptions, supervisor: Supervisor | undefined): Promise<AgentRunner> {
    const def = this.definition(type)
    const existing = this.runners.get(id)
    if (this.starting.has(id) || (existing && existing.state !== 'crashed' && existing.state !== 'stopped')) {
      throw new OrreryError('DUPLICATE_AGENT', `agent ${id} is running already`, { details: { agent: id } })
    }
    // Reserved before the first await: two starts of one id cannot both get through.
    this.starting.add(id)
    try {
      return await this.build(id, type, def, options, supervisor)
    } finally {
      this.starting.delete(id)
    }
  }

  private async build(id: string, type: string, def: Definition, options: SpawnOptions, supervisor: Supervisor | undefined): Promise<AgentRunner> {
    const cls = isClass(def.factory) ? def.factory : undefined
    const values = await gatherConfig({ ...options.configFrom, values: options.config ?? {} })
    const config = await checkConfig(cls?.config, values, id)
    const context: AgentContext<unknown> = {
      id,
      type,
      config,
      log: this.logger.child({ agent: id, agentType: type }),
      capabilities: options.capabilities,
    }
    const agent = cls ? new cls(context) : (def.factory as (c: AgentContext<unknown>) => Agent<unknown>)(context)
    // Checked where they were given (spawn, define, supervise).
    const run: RunOptions = {
      concurrency: options.concurrency ?? 16,
      bulkhead: options.bulkhead ?? 0,
      handlerTimeout: options.handlerTimeout ?? DEFAULT_HANDLER_TIMEOUT,
      retry: { ...options.retry, attempts: options.retry?.attempts ?? DEFAULT_RETRY_ATTEMPTS },
      rateLimit: { ...options.rateLimit, policy: options.rateLimit?.policy ?? 'wait' },
      tags: options.tags ?? [],
    }
    if (this.closing) throw new OrreryError('CLOSED', 'this mesh is shut down')
    const runner = new AgentRunner(agent, this.host, run, values)
    this.runners.set(id, runner)
    if (supervisor) this.owners.set(runner, supervisor)
    try {
      await runner.start()
    } catch (error) {
      this.owners.delete(runner)
      if (this.runners.get(id) === runner) this.runners.delete(id)
      this.subject.next({ type: 'crashed', agent: id, reason: 'failed start', error: (error as Error).message, at: this.now() })
      throw error
    }
    if (runner.state !== 'running') throw new OrreryError('AGENT_FAILED', `agent ${id} stopped while starting`, { details: { agent: id } })
    this.subject.next({ type: 'started', agent: id, at: this.now() })
    // A shutdown that began while this agent started does not leave it behind.
    if (this.closing) {
      await this.stopRunner(runner, 0)
      throw new OrreryError('CLOSED', 'this mesh is shut down')
    }
    return runner
  }

  private crashed(runner: AgentRunner, reason: string, error: unknown): void {
    if (runner.state === 'crashed' || runner.state === 'stopped' || runner.state === 'stopping') return
    const supervisor = this.owners.get(runner)
    const restarts = supervisor !== undefined && this.closing === undefined
    // Its requests wait in the inbox for the next life, if one comes (its supervisor's restart,
    // or its autoscaler's: a replica gone with work left comes back to finish its inbox); else
    // they are answered now.
    runner.kill(restarts || (this.closing === undefined && this.revives(runner.id, runner.agent.type)) ? undefined : 'crashed', true)
    runner.agent.log.error({ err: error, reason }, 'agent crashed')
    this.subject.next({ type: 'crashed', agent: runner.id, reason, error: error instanceof Error ? error.message : String(error), at: this.now() })
    this.owners.delete(runner)
    if (restarts) supervisor.crashed(runner, reason)
  }

  /**
   * Whether agent `id` of `type` is an autoscaler's replica that, gone, comes back to finish its
   * inbox (a stopped autoscaler still brings back those it drained).
   */
  private revives(id: string, type: string): boolean {
    for (const scaler of this.scalers) if (scaler.agentType === type && scaler.revives(id)) return true
    return false
  }

  private async stopRunner(runner: AgentRunner, timeout: number | undefined): Promise<void> {
    const wasLive = runner.state !== 'stopped' && runner.state !== 'crashed'
    // Stopped on purpose: its supervisor must not bring it back.
    this.owners.get(runner)?.release(runner)
    this.owners.delete(runner)
    await runner.stop(timeout ?? this.options.shutdownTimeout ?? 10_000)
    if (wasLive) this.subject.next({ type: 'stopped', agent: runner.id, at: this.now() })
  }

  private handleOf(first: AgentRunner): AgentHandle {
    const id = first.id
    // A handle follows its id across restarts: it always speaks to the current life.
    const current = () => this.runners.get(id) ?? first
    return {
      id,
      type: first.agent.type,
      // biome-ignore lint/plugin: a handle is read now and then, not on a hot path; its getters follow the agent's current life.
      get state() {
        return current().state
      },
      // biome-ignore lint/plugin: as above.
      get agent() {
        return current().agent
      },
      pause: () => this.pause(id),
      resume: () => this.resume(id),
      stop: (options) => this.stop(id, options),
      reconfigure: async (values) => {
        checkOptions(values, 'values')
        const runner = current()
        const cls = isClass(this.definition(runner.agent.type).factory) ? (runner.agent.constructor as AgentClass) : undefined
        // Merged over the raw values (not the validated output, which a schema may have transformed).
        const raw = { ...runner.rawConfig, ...values }
        const next = await checkConfig(cls?.config, raw, id)
        const previous = runner.agent.config
        try {
          await runner.agent.applyConfig(next)
        } catch (error) {
          await runner.agent.applyConfig(previous).catch(() => {})
          throw new OrreryError('INVALID_CONFIG', `agent ${id} refused its new configuration: ${(error as Error).message}`, {
            cause: error,
            details: { agent: id },
          })
        }
        runner.rawConfig = raw
        this.subject.next({ type: 'config', agent: id, at: this.now() })
      },
    }
  }

  private pick(id: string | undefined): AgentRunner[] {
    if (id === undefined) return [...this.runners.values()]
    text(id, 'id')
    const runner = this.runners.get(id)
    if (!runner) throw new OrreryError('UNKNOWN_AGENT', `no agent ${JSON.stringify(id)} runs in this mesh`, { details: { agent: id } })
    return [runner]
  }

  private definition(type: string): Definition {
    const def = this.types.get(type)
    if (!def) throw new OrreryError('UNKNOWN_AGENT_TYPE', `no agent type ${JSON.stringify(type)} is defined (mesh.define first)`, { details: { type } })
    return def
  }

  private handleSignals(): void {
    const proc = (globalThis as { process?: NodeJS.Process }).process
    if (!proc?.on) throw new OrreryError('UNSUPPORTED', 'signal handling needs Node', { details: { option: 'signals' } })
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const handler = () => {
        void this.shutdown().finally(() => {
          // Let the signal do what it would have done: end the process.
          proc.kill(proc.pid, signal)
        })
      }
      proc.once(signal, handler)
      this.signalHandlers.push([signal, handler])
    }
  }

  private assertOpen(): void {
    if (this.closing) throw new OrreryError('CLOSED', 'this mesh is shut down')
  }
}
