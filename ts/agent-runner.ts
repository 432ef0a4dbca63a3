/**
 * Runs one agent: registers it, feeds it from its inbox (a consumer group, so that whatever it
 * has not acknowledged is redelivered after a crash or a restart), dispatches to its handlers
 * under its rate limits and handler timeout, retries transient failures with backoff,
 * dead-letters permanent ones with the error recorded, answers requests, beats, and stops
 * gracefully or dies abruptly.
 */
import type { Subscription } from 'rxjs'

import { FatalError, PermanentError, type Agent, type HandlerContext, type HandlerEntry, type HealthReport, type Logger } from './agent.js'
import type { Bus } from './bus.js'
import { isOrreryError, OrreryError } from './errors.js'
import type { Delivery } from './group.js'
import type { Message } from './message.js'
import type { AgentMetrics } from './metrics.js'
import type { Registry } from './registry.js'
import { validate } from './schema.js'
import type { MeshCore } from './backend.js'

/** A token-bucket limit. */
export interface RateLimit {
  /** Tokens added per second. */
  perSecond: number
  /** Tokens held at most (the burst; default `perSecond`). */
  burst?: number
}

/** An exponential backoff. */
export interface BackoffOptions {
  /** The first retry's delay in ms (default 100). */
  base?: number
  /** Growth per retry (default 2). */
  factor?: number
  /** The longest delay in ms (default 30,000). */
  max?: number
  /** `full` (default: 0 to the delay), `equal` (half to all of it) or `none`. */
  jitter?: 'full' | 'equal' | 'none'
}

/** How an agent's handler failures are treated. */
export interface RetryOptions {
  /** Retries of a transient failure before the message is dead-lettered (default 3). */
  attempts?: number
  backoff?: BackoffOptions
  /** Says an error is permanent (besides `PermanentError` and invalid payloads). */
  isPermanent?: (error: unknown) => boolean
  /** Says an error is fatal: the agent crashes (besides `FatalError`). */
  isFatal?: (error: unknown) => boolean
}

/** How an agent runs. */
export interface RunOptions {
  /** Deliveries handled at once (default 16). */
  concurrency: number
  /** Routed calls in flight at once, counted by callers' routing (0: no cap). */
  bulkhead: number
  /** A handler running longer fails with `TIMEOUT` (a transient failure), in ms (default 30,000). */
  handlerTimeout: number
  retry: Required<Pick<RetryOptions, 'attempts'>> & RetryOptions
  rateLimit: { agent?: RateLimit; capabilities?: Readonly<Record<string, RateLimit>>; policy: 'wait' | 'reject' }
  tags: readonly string[]
}

/** An agent's lifecycle state. */
export type AgentState = 'starting' | 'running' | 'paused' | 'stopping' | 'stopped' | 'crashed'

/** What the runner needs from the mesh. */
export interface RunnerHost {
  readonly bus: Bus
  readonly registry: Registry
  readonly core: MeshCore
  readonly metrics: AgentMetrics
  readonly interval: number
  now(): number
  /** The agent crashed (a fatal handler error, or lost heartbeats): its supervisor decides. */
  crashed(runner: AgentRunner, reason: string, error: unknown): void
  /** Something worth an event happened. */
  report(event: { type: 'retry' | 'dead-letter' | 'rate-limited'; agent: string; capability: string; attempt: number; error?: string; delay?: number }): void
}

/** The header naming the capability a routed message is for. */
export const CAPABILITY_HEADER = 'orrery-capability'

const JITTER = { none: 0, full: 1, equal: 2 } as const

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`
  return String(error)
}

/** One running handler. */
interface Running {
  readonly controller: AbortController
  readonly done: Promise<void>
}

export class AgentRunner {
  state: AgentState = 'starting'
  private subscription: Subscription | undefined
  private member = -1
  private beatTimer: ReturnType<typeof setInterval> | undefined
  private checking = false
  private readonly running = new Set<Running>()
  private readonly limiters: number[] = []
  private agentLimiter = -1
  private readonly capabilityLimiters = new Map<string, number>()
  private readonly waits = new Set<ReturnType<typeof setTimeout>>()
  /** Bumped when the agent dies: late results of an earlier life are ignored. */
  private life = 0

  constructor(readonly agent: Agent<unknown>, readonly host: RunnerHost, readonly options: RunOptions) {}

  get id(): string {
    return this.agent.id
  }

  /** Handlers running now. */
  get inFlight(): number {
    return this.running.size
  }

  /** Registers the agent, runs its start hook, joins its inbox and starts beating. */
  async start(): Promise<void> {
    const { agent, host } = this
    for (const cap of agent.capabilities) {
      if (!agent.handlers.has(cap.name)) throw new OrreryError('NO_HANDLER', `agent ${agent.id} declares capability ${cap.name} but handles it nowhere`, { details: { agent: agent.id, capability: cap.name } })
    }
    host.registry.register({ id: agent.id, type: agent.type, capabilities: agent.capabilities, tags: this.options.tags, bulkhead: this.options.bulkhead })
    try {
      this.makeLimiters()
      await agent.onStart?.()
    } catch (error) {
      this.release()
      this.state = 'crashed'
      throw new OrreryError('AGENT_FAILED', `agent ${agent.id} failed to start: ${describe(error)}`, { cause: error, details: { agent: agent.id } })
    }
    if (this.state !== 'starting') return // killed while starting
    this.join()
    this.state = 'running'
    this.beatTimer = setInterval(() => this.beat(), host.interval)
    await this.beat()
  }

  private makeLimiters(): void {
    const { rateLimit } = this.options
    const make = (limit: RateLimit) => {
      const id = this.host.core.limiter(limit.burst ?? limit.perSecond, limit.perSecond, this.host.now())
      this.limiters.push(id)
      return id
    }
    if (rateLimit.agent) this.agentLimiter = make(rateLimit.agent)
    for (const [cap, limit] of Object.entries(rateLimit.capabilities ?? {})) this.capabilityLimiters.set(cap, make(limit))
  }

  private join(): void {
    const group = this.host.bus.group(`inbox.${this.agent.id}`, 'agent', { visibilityTimeout: this.options.handlerTimeout + 5_000, maxDeliveries: this.options.retry.attempts + 2 })
    const stream = group.join({ maxInFlight: this.options.concurrency })
    this.subscription = stream.subscribe((delivery) => this.take(delivery))
    this.member = stream.memberId()
  }

  /** Runs the health check (bounded by the beat interval) and reports the result. */
  private async beat(): Promise<void> {
    if (this.checking || (this.state !== 'running' && this.state !== 'paused')) return
    const life = this.life
    let report: HealthReport = { status: 'healthy' }
    if (this.agent.healthCheck) {
      this.checking = true
      try {
        report = await new Promise<HealthReport>((resolve, reject) => {
          const timer = setTimeout(() => reject(new OrreryError('TIMEOUT', 'health check timed out')), this.host.interval)
          Promise.resolve()
            .then(() => this.agent.healthCheck!())
            .then(resolve, reject)
            .finally(() => clearTimeout(timer))
        })
      } catch (error) {
        // A check that throws reports unhealthy; one that hangs misses the beat.
        if (isOrreryError(error, 'TIMEOUT')) return
        report = { status: 'unhealthy', reason: describe(error) }
      } finally {
        if (life === this.life) this.checking = false
      }
    }
    // The state may have moved while the check ran.
    const state = this.state as AgentState
    if (life !== this.life || (state !== 'running' && state !== 'paused')) return
    try {
      this.host.registry.heartbeat(this.id, state === 'paused' ? 'paused' : report.status)
    } catch {
      // Deregistered (missed too many beats): the mesh has been told and decides.
    }
  }

  private take(delivery: Delivery): void {
    if (this.state !== 'running' && this.state !== 'paused' && this.state !== 'stopping') return
    const life = this.life
    const controller = new AbortController()
    const entry: Running = { controller, done: this.process(delivery, controller, life) }
    this.running.add(entry)
    this.host.metrics.inFlight(this.id, this.agent.type, this.running.size)
    void entry.done.finally(() => {
      this.running.delete(entry)
      this.host.metrics.inFlight(this.id, this.agent.type, this.running.size)
    })
  }

  private handlerFor(message: Message): { key: string; entry: HandlerEntry | undefined } {
    const cap = message.headers[CAPABILITY_HEADER]
    if (cap !== undefined) return { key: cap, entry: this.agent.handlers.get(cap) }
    const bySchema = message.schema === undefined ? undefined : this.agent.messageHandlers.get(message.schema)
    if (bySchema) return { key: message.schema!, entry: bySchema }
    return { key: message.kind, entry: this.agent.messageHandlers.get(message.kind) ?? this.agent.handlers.get(message.kind) }
  }

  /** Waits for the agent's and the capability's tokens, or refuses (by policy). */
  private async admit(capability: string, life: number): Promise<boolean> {
    const limiters = [this.agentLimiter, this.capabilityLimiters.get(capability) ?? -1].filter((l) => l >= 0)
    for (const limiter of limiters) {
      for (;;) {
        const core = this.host.core
        if (core.take(limiter, 1, this.host.now())) break
        if (this.options.rateLimit.policy === 'reject') return false
        const wait = Math.max(1, core.second - this.host.now())
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            this.waits.delete(timer)
            resolve()
          }, wait)
          this.waits.add(timer)
        })
        if (life !== this.life) return false
      }
    }
    return true
  }

  private async process(delivery: Delivery, controller: AbortController, life: number): Promise<void> {
    const { message } = delivery
    const { host, agent } = this
    const isRequest = (message as { replyToken?: number }).replyToken !== 0
    const { key, entry } = this.handlerFor(message)
    const settle = (fn: () => void) => {
      if (life !== this.life) return // a dead life's settlement would be stale
      try {
        fn()
      } catch {
        // The lease expired meanwhile (STALE_ACK) or the bus closed: it is redelivered.
      }
    }
    const permanent = (error: unknown, reason: string) => {
      host.metrics.failed(this.id, agent.type, key, 'permanent')
      host.report({ type: 'dead-letter', agent: this.id, capability: key, attempt: 1, error: reason })
      settle(() => {
        if (isRequest) {
          host.bus.answer(message, undefined, { message: reason, code: (error as { code?: string })?.code ?? null, permanent: true })
          delivery.ack()
        } else {
          delivery.nack({ deadLetter: reason })
        }
      })
    }
    if (!entry) {
      return permanent(new OrreryError('NO_HANDLER', ''), `NO_HANDLER: agent ${this.id} has no handler for ${key}`)
    }
    if (!(await this.admit(key, life))) {
      if (life !== this.life) return
      host.metrics.failed(this.id, agent.type, key, 'rate-limited')
      host.report({ type: 'rate-limited', agent: this.id, capability: key, attempt: 1 })
      const reason = `RATE_LIMITED: agent ${this.id} is over its rate limit for ${key}`
      return settle(() => {
        if (isRequest) {
          host.bus.answer(message, undefined, { message: reason, code: 'RATE_LIMITED', permanent: false })
          delivery.ack()
        } else {
          delivery.nack({ deadLetter: reason })
        }
      })
    }
    const started = host.now()
    const attempt = () => (isRequest ? 1 : delivery.attempt)
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      const payload = entry.schema ? await validate(entry.schema, message.payload, `agent ${this.id} (${key})`) : message.payload
      const traceId = message.headers['trace-id'] ?? message.headers['traceparent']?.split('-')[1]
      const context: HandlerContext = {
        message,
        get attempt() {
          return attempt()
        },
        log: traceId ? agent.log.child({ traceId }) : agent.log,
        signal: controller.signal,
      }
      const result = await new Promise<unknown>((resolve, reject) => {
        timer = setTimeout(() => {
          const error = new OrreryError('TIMEOUT', `handler for ${key} ran past ${this.options.handlerTimeout} ms`, { details: { agent: this.id, capability: key } })
          controller.abort(error)
          reject(error)
        }, this.options.handlerTimeout)
        controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true })
        Promise.resolve()
          .then(() => entry.run(payload, context))
          .then(resolve, reject)
      })
      clearTimeout(timer)
      if (life !== this.life) return
      host.metrics.handled(this.id, agent.type, key, (host.now() - started) / 1000)
      settle(() => {
        if (isRequest) host.bus.answer(message, result)
        delivery.ack()
      })
    } catch (error) {
      clearTimeout(timer)
      if (life !== this.life) return
      const retry = this.options.retry
      if (error instanceof FatalError || retry.isFatal?.(error)) {
        host.metrics.failed(this.id, agent.type, key, 'fatal')
        // Not settled: the message waits in the inbox and is redelivered after the restart.
        host.crashed(this, `fatal error in ${key}`, error)
        return
      }
      if (error instanceof PermanentError || isOrreryError(error, 'SCHEMA_INVALID') || retry.isPermanent?.(error)) {
        return permanent(error, describe(error))
      }
      host.metrics.failed(this.id, agent.type, key, 'transient')
      if (isRequest) {
        // The caller's routing owns retries of requests (another agent may answer sooner).
        return settle(() => {
          host.bus.answer(message, undefined, { message: describe(error), code: (error as { code?: string })?.code ?? null, permanent: false })
          delivery.ack()
        })
      }
      const n = attempt()
      if (n > retry.attempts) {
        const reason = `retries exhausted after ${n} attempts: ${describe(error)}`
        host.report({ type: 'dead-letter', agent: this.id, capability: key, attempt: n, error: reason })
        return settle(() => delivery.nack({ deadLetter: reason }))
      }
      const b = retry.backoff ?? {}
      const delay = host.core.backoff(b.base ?? 100, b.factor ?? 2, b.max ?? 30_000, JITTER[b.jitter ?? 'full'], n)
      host.report({ type: 'retry', agent: this.id, capability: key, attempt: n, error: describe(error), delay })
      settle(() => delivery.nack({ delay }))
    }
  }

  /** Stops taking messages; its queue waits. */
  async pause(): Promise<void> {
    if (this.state !== 'running') return
    this.state = 'paused'
    this.host.bus.setConsumerPaused(this.member, true)
    this.host.registry.setHealth(this.id, 'paused')
    await this.agent.onPause?.()
  }

  /** Takes messages again. */
  async resume(): Promise<void> {
    if (this.state !== 'paused') return
    this.state = 'running'
    this.host.bus.setConsumerPaused(this.member, false)
    await this.agent.onResume?.()
    await this.beat()
  }

  /**
   * Stops gracefully: no new work (deregistered from routing, inbox paused), in-flight handlers
   * get `timeout` ms to finish (each is acked as it does), then the rest are abandoned to be
   * redelivered, the stop hook runs, and the agent leaves.
   */
  async stop(timeout: number): Promise<void> {
    if (this.state === 'stopped' || this.state === 'crashed' || this.state === 'stopping') return
    this.state = 'stopping'
    this.stopBeating()
    try {
      this.host.registry.deregister(this.id)
    } catch {
      // Deregistered already (missed heartbeats).
    }
    if (this.member >= 0) this.host.bus.setConsumerPaused(this.member, true)
    if (this.running.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined
      await Promise.race([
        Promise.allSettled([...this.running].map((r) => r.done)),
        new Promise<void>((resolve) => { timer = setTimeout(resolve, timeout) }),
      ])
      clearTimeout(timer)
    }
    // Whatever is still running is abandoned: its message is not acked and goes back.
    this.life++
    for (const r of this.running) r.controller.abort(new OrreryError('CLOSED', `agent ${this.id} is stopping`))
    this.release()
    this.state = 'stopped'
    try {
      await this.agent.onStop?.()
    } catch (error) {
      this.agent.log.error({ err: error }, 'stop hook failed')
    }
  }

  /** Dies at once (a crash, or a supervisor's restart): nothing unacked is lost, it goes back to the inbox. */
  kill(): void {
    if (this.state === 'stopped' || this.state === 'crashed') return
    this.state = 'crashed'
    this.life++
    this.stopBeating()
    for (const r of this.running) r.controller.abort(new OrreryError('CLOSED', `agent ${this.id} crashed`))
    try {
      this.host.registry.deregister(this.id)
    } catch {
      // Gone already.
    }
    this.release()
  }

  private stopBeating(): void {
    if (this.beatTimer !== undefined) clearInterval(this.beatTimer)
    this.beatTimer = undefined
  }

  /** Leaves the inbox (unacked deliveries go back) and drops the limiters. */
  private release(): void {
    this.subscription?.unsubscribe()
    this.subscription = undefined
    for (const timer of this.waits) clearTimeout(timer)
    this.waits.clear()
    for (const id of this.limiters) this.host.core.dropLimiter(id)
    this.limiters.length = 0
    this.capabilityLimiters.clear()
    this.agentLimiter = -1
    try {
      if (this.state === 'starting') this.host.registry.deregister(this.id)
    } catch {
      // Not registered.
    }
  }
}
