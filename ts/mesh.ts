/**
 * The agent mesh: factories by agent type, running agents (replicas, pause, resume, stop),
 * supervisors, requests and messages routed by capability, and graceful shutdown of the whole
 * (also on SIGINT/SIGTERM when asked). Everything that happens comes out of `events`.
 */
import { Subject, type Observable, type Subscription } from 'rxjs'

import { silentLogger, type Agent, type AgentClass, type AgentContext, type Logger } from './agent.js'
import { AgentRunner, type AgentState, type RateLimit, type RetryOptions, type RunnerHost, type RunOptions } from './agent-runner.js'
import type { Backend, MeshCore } from './backend.js'
import type { Bus, PublishOptions } from './bus.js'
import { checkConfig, gatherConfig, type ConfigSources } from './config.js'
import { OrreryError } from './errors.js'
import type { Message } from './message.js'
import { noMetrics, promMetrics, type AgentMetrics, type PromRegistry } from './metrics.js'
import { Registry, type BreakerOptions, type CapabilitySpec, type LivenessOptions, type RegistryEvent, type Strategy } from './registry.js'
import { Router, type RouteOptions } from './router.js'
import { RESTART_BACKOFF, Supervisor, type SupervisorEvent, type SupervisorSpec } from './supervisor.js'

/** Options of a mesh. */
export interface MeshOptions {
  /** Seeds random selection and jitter, so that a run under a fake clock replays (default: random). */
  seed?: number
  heartbeat?: LivenessOptions
  breaker?: BreakerOptions
  /** A pino logger; each agent logs through a child bound to its id (default: silent). */
  logger?: Logger
  /** A prom-client Registry to record agent metrics in (Node). */
  metrics?: PromRegistry
  /** How long graceful stops wait for handlers, in ms (default 10,000). */
  shutdownTimeout?: number
  /** Shut down gracefully on SIGINT and SIGTERM, then let the signal end the process (Node; default false). */
  signals?: boolean
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
  | { type: 'started' | 'stopped' | 'paused' | 'resumed'; agent: string; at: number }
  | { type: 'crashed'; agent: string; reason: string; error: string; at: number }
  | { type: 'config'; agent: string; at: number }
  | { type: 'retry' | 'fallback' | 'dead-letter' | 'rate-limited'; agent: string; capability: string; attempt: number; error?: string; delay?: number; at: number }

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

function positive(value: number | undefined, fallback: number, option: string, min = 1): number {
  const v = value ?? fallback
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw new OrreryError('INVALID_OPTION', `${option} must be a number >= ${min}`, { details: { option, value: v } })
  return v
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
  private readonly subject = new Subject<MeshEvent>()
  private readonly registryEvents: Subscription
  private readonly host: RunnerHost
  private readonly logger: Logger
  private readonly signalHandlers: Array<[string, () => void]> = []
  private closing: Promise<void> | undefined
  /** Everything that happens: registry, agent and supervisor events. */
  readonly events: Observable<MeshEvent> = this.subject.asObservable()

  /** @internal Use `orrery.mesh()`. */
  static async create(backend: Backend, bus: Bus, clock: () => number, options: MeshOptions): Promise<Mesh> {
    const metrics = options.metrics ? await promMetrics(options.metrics) : noMetrics
    return new Mesh(backend, bus, clock, options, metrics)
  }

  private constructor(backend: Backend, readonly bus: Bus, readonly now: () => number, private readonly options: MeshOptions, metrics: AgentMetrics) {
    const hb = options.heartbeat ?? {}
    const br = options.breaker ?? {}
    const core: MeshCore = backend.createMesh({
      seed: options.seed ?? Math.floor(Math.random() * 2 ** 52),
      interval: positive(hb.interval, 5_000, 'heartbeat.interval'),
      degradedAfter: positive(hb.degradedAfter, 2, 'heartbeat.degradedAfter'),
      unhealthyAfter: positive(hb.unhealthyAfter, 3, 'heartbeat.unhealthyAfter'),
      offlineAfter: positive(hb.offlineAfter, 5, 'heartbeat.offlineAfter'),
      deregisterAfter: positive(hb.deregisterAfter, 60_000, 'heartbeat.deregisterAfter', 0),
      failuresToOpen: positive(br.failures, 5, 'breaker.failures'),
      coolDown: positive(br.coolDown, 10_000, 'breaker.coolDown', 0),
      probes: positive(br.probes, 1, 'breaker.probes'),
      successesToClose: positive(br.successes, 1, 'breaker.successes'),
    })
    this.registry = new Registry(core, now)
    this.router = new Router(bus, this.registry, (event) => this.subject.next({ ...event, at: now() }))
    this.logger = options.logger ?? silentLogger
    const interval = hb.interval ?? 5_000
    this.host = {
      bus,
      registry: this.registry,
      core,
      metrics,
      interval,
      now,
      crashed: (runner, reason, error) => this.crashed(runner, reason, error),
      report: (event) => this.subject.next({ ...event, at: now() }),
    }
    this.registryEvents = this.registry.events.subscribe((event) => {
      this.subject.next(event)
      // Lost heartbeats are a crash: the agent is wedged (or its loop is), whatever it says.
      const lost = (event.type === 'health' && event.to === 'offline') || (event.type === 'deregistered' && event.reason === 'missed-heartbeats') ? event.agent : undefined
      const runner = lost === undefined ? undefined : this.runners.get(lost)
      if (runner && (runner.state === 'running' || runner.state === 'paused')) this.crashed(runner, 'lost heartbeats', new OrreryError('TIMEOUT', `agent ${lost} stopped beating`))
    })
    if (options.signals) this.handleSignals()
  }

  /** Registers how to build agents of `type`, with default spawn options. */
  define<C>(type: string, factory: AgentFactory<C>, defaults: SpawnOptions = {}): this {
    if (this.types.has(type)) throw new OrreryError('INVALID_OPTION', `agent type ${type} is defined already`, { details: { option: 'type', value: type } })
    if (typeof factory !== 'function') throw new OrreryError('INVALID_OPTION', 'a factory must be an Agent subclass or a function', { details: { option: 'factory', value: typeof factory } })
    this.types.set(type, { factory: factory as AgentFactory, defaults, count: 0 })
    return this
  }

  /** Starts `replicas` agents of a defined type; rejects (starting none) if any fails to start. */
  async spawn(type: string, options: SpawnOptions = {}): Promise<AgentHandle[]> {
    this.assertOpen()
    const def = this.definition(type)
    const merged = { ...def.defaults, ...options }
    const replicas = positive(merged.replicas, 1, 'replicas')
    const ids: string[] = []
    for (let i = 0; i < replicas; i++) {
      ids.push(merged.id ? (replicas === 1 ? merged.id : `${merged.id}-${i + 1}`) : `${type}-${++def.count}`)
    }
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
    for (const child of spec.children) this.definition(child.type)
    const supervisor = new Supervisor(
      {
        now: this.now,
        startChild: (id, type, options, owner) => this.startAgent(id, type, { ...this.definition(type).defaults, ...options }, owner),
        backoff: (b, attempt) => this.registry.backoff(b, attempt, RESTART_BACKOFF),
        report: (event) => this.subject.next(event),
      },
      spec,
    )
    this.supervisors.add(supervisor)
    await supervisor.start()
    return supervisor
  }

  /** A running agent. */
  agent(id: string): AgentHandle | undefined {
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
  async stop(id: string, options: { timeout?: number } = {}): Promise<void> {
    const [runner] = this.pick(id)
    await this.stopRunner(runner!, options.timeout)
  }

  /**
   * Sends a request to an agent offering `capability` (`name` or `name@range`), picked by
   * strategy; failures fall back to other candidates and retry with backoff; a breaker per
   * agent skips failing ones; every call is bounded by `timeout`. Rejects with `NO_RESPONDER`
   * (suggesting similar names), `CIRCUIT_OPEN`, `BULKHEAD_FULL`, `TIMEOUT` or `HANDLER_ERROR`.
   */
  request<R = unknown>(capability: string, payload: unknown, options?: RouteOptions): Promise<Message<R>> {
    return this.router.request<R>(capability, payload, options)
  }

  /**
   * Sends a message (no reply) to one agent offering `capability`: it is queued in that agent's
   * inbox, where its own retries and dead-lettering apply.
   */
  send(capability: string, payload: unknown, options: PublishOptions & { tags?: readonly string[]; strategy?: Strategy } = {}): Promise<{ readonly id: string; readonly agent: string }> {
    return this.router.send(capability, payload, options)
  }

  /**
   * Shuts the mesh down gracefully: supervisors stop restarting; every agent stops taking work,
   * its running handlers get `timeout` ms to finish (what finishes is acked; the rest stays in
   * its inbox to be redelivered), and it deregisters. Nothing acknowledged is lost.
   */
  shutdown(options: { timeout?: number } = {}): Promise<void> {
    this.closing ??= (async () => {
      for (const s of this.supervisors) s.stop()
      const timeout = options.timeout ?? this.options.shutdownTimeout ?? 10_000
      await Promise.all([...this.runners.values()].map((r) => this.stopRunner(r, timeout)))
      this.registryEvents.unsubscribe()
      for (const [signal, handler] of this.signalHandlers) process.off(signal, handler)
      this.registry.close()
      this.subject.complete()
    })()
    return this.closing
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
    const run: RunOptions = {
      concurrency: positive(options.concurrency, 16, 'concurrency'),
      bulkhead: positive(options.bulkhead, 0, 'bulkhead', 0),
      handlerTimeout: positive(options.handlerTimeout, 30_000, 'handlerTimeout'),
      retry: { ...options.retry, attempts: positive(options.retry?.attempts, 3, 'retry.attempts', 0) },
      rateLimit: { ...options.rateLimit, policy: options.rateLimit?.policy ?? 'wait' },
      tags: options.tags ?? [],
    }
    if (run.rateLimit.policy !== 'wait' && run.rateLimit.policy !== 'reject') throw new OrreryError('INVALID_OPTION', "rateLimit.policy must be 'wait' or 'reject'", { details: { option: 'rateLimit.policy', value: run.rateLimit.policy } })
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
    runner.kill()
    runner.agent.log.error({ err: error, reason }, 'agent crashed')
    this.subject.next({ type: 'crashed', agent: runner.id, reason, error: error instanceof Error ? error.message : String(error), at: this.now() })
    const supervisor = this.owners.get(runner)
    this.owners.delete(runner)
    if (supervisor && !this.closing) supervisor.crashed(runner, reason)
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
      get state() {
        return current().state
      },
      get agent() {
        return current().agent
      },
      pause: () => this.pause(id),
      resume: () => this.resume(id),
      stop: (options) => this.stop(id, options),
      reconfigure: async (values) => {
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
          throw new OrreryError('INVALID_CONFIG', `agent ${id} refused its new configuration: ${(error as Error).message}`, { cause: error, details: { agent: id } })
        }
        runner.rawConfig = raw
        this.subject.next({ type: 'config', agent: id, at: this.now() })
      },
    }
  }

  private pick(id: string | undefined): AgentRunner[] {
    if (id === undefined) return [...this.runners.values()]
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
