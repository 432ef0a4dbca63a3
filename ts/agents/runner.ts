/**
 * Runs one agent: registers it, feeds it from its inbox (a consumer group, so that whatever it
 * has not acknowledged is redelivered after a crash or a restart), dispatches to its handlers
 * under its rate limits and handler timeout, retries transient failures with backoff,
 * dead-letters permanent ones with the error recorded, answers requests, beats, and stops
 * gracefully or dies abruptly.
 */
import type { Subscription } from 'rxjs'

import { FatalError, PermanentError, type Agent, type HandlerContext, type HandlerEntry, type HealthReport, type Logger } from './agent.js'
import type { Bus } from '../bus/bus.js'
import { inboxOf } from '../bus/options.js'
import type { ErrorAnswer, RunnerLink } from '../bus/link.js'
import { MAX_TIMER_MS } from '../check.js'
import { isOrreryError, OrreryError } from '../errors.js'
import type { Delivery } from '../bus/group.js'
import type { Message } from '../bus/message.js'
import type { AgentMetrics } from './metrics.js'
import { RETRY_BACKOFF, type BackoffOptions, type Health, type Registry } from './registry.js'
import { validate } from '../schema.js'
import { frameHeader } from '../frame.js'
import type { MeshCore } from '../engines/backend.js'
import { headerIds, type OtelSpan } from '../observe/tracing.js'

/** A token-bucket limit. */
export interface RateLimit {
  /** Tokens added per second. */
  perSecond: number
  /** Tokens held at most (the burst; default `perSecond`). */
  burst?: number
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
  /** Its inbox group, request answers and inbox pauses: what the runner needs of the bus. */
  readonly bus: Pick<Bus, 'group'> & RunnerLink
  readonly registry: Registry
  readonly core: MeshCore
  readonly metrics: AgentMetrics
  readonly interval: number
  /**
   * Where a new inbox group starts: `earliest` in a shared mesh, where another process may send
   * to an agent it heard of before the agent's group exists on the broker.
   */
  readonly inboxFrom: 'earliest' | 'latest'
  now(): number
  /** The agent crashed (a fatal handler error, or lost heartbeats): its supervisor decides. */
  crashed(runner: AgentRunner, reason: string, error: unknown): void
  /** Something worth an event happened. */
  report(event: { type: 'retry' | 'dead-letter' | 'rate-limited'; agent: string; capability: string; attempt: number; error?: string; delay?: number }): void
}

/** How an agent reads its inbox, as its registration tells the other processes of a shared mesh. */
export interface InboxTerms {
  /** A delivery's lease (the inbox group's visibility timeout), in ms. */
  visibilityMs: number
  /** Deliveries of one message before it is dead-lettered. */
  maxDeliveries: number
  /** The longest delay before a retry (a message nacked with it comes back that much later), in ms. */
  retryDelayMs: number
}

/**
 * How an agent with this handler timeout and these retries reads its inbox: a delivery's lease
 * outlasts the handler's timeout by 5 s, a message is dead-lettered past the runner's own
 * retries (see `AgentRunner.maxDeliveries`), and its last retry waits at most the backoff's
 * delay for that attempt.
 */
export function inboxTermsOf(handlerTimeout: number, attempts: number, backoff: BackoffOptions | undefined): InboxTerms {
  const max = backoff?.max ?? RETRY_BACKOFF.max
  const grown = (backoff?.base ?? RETRY_BACKOFF.base) * (backoff?.factor ?? RETRY_BACKOFF.factor) ** Math.max(0, attempts - 1)
  const retryDelayMs = attempts === 0 ? 0 : Math.min(max, grown)
  return { visibilityMs: handlerTimeout + 5_000, maxDeliveries: attempts + 2, retryDelayMs: Math.ceil(retryDelayMs) }
}

/** The header naming the capability a routed message is for. */
export const CAPABILITY_HEADER = 'orrery-capability'

/** Deliveries of one message ending in a fatal error after which it is dead-lettered as poison. */
const POISON_CRASHES = 2

/** An error's Orrery code, if it has one. */
function codeOf(error: unknown): string | null {
  return (error as { code?: string } | null)?.code ?? null
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`
  return String(error)
}

/**
 * One delivery being handled; also the handler's context. The abort signal is made only when a
 * handler asks for it (an AbortController per message costs more than the rest of the dispatch).
 */
class Job implements HandlerContext {
  finished = false
  private controller: AbortController | undefined
  private abortedWith: { reason: unknown } | undefined
  private logger: Logger | undefined
  /** Its span, when the Orrery traces (ended once, by the first outcome). */
  span: OtelSpan | undefined = undefined

  constructor(
    private readonly runner: AgentRunner,
    readonly delivery: Delivery,
    readonly key: string,
    readonly isRequest: boolean,
    readonly life: number,
    readonly started: number,
  ) {}

  get message(): Message {
    return this.delivery.message
  }

  /** Its delivery's: a request or message taken again by a next life (its last crashed on it) is 2 or more. */
  get attempt(): number {
    return this.delivery.attempt
  }

  get log(): Logger {
    if (!this.logger) {
      // The handler's own span where the Orrery traces, else what the message's headers carry.
      const tracing = this.runner.host.bus.tracing
      const ids = this.span !== undefined && tracing !== undefined ? tracing.ids(this.span) : headerIds(this.delivery.message.headers)
      this.logger = ids ? this.runner.agent.log.child(ids) : this.runner.agent.log
    }
    return this.logger
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController()
      if (this.abortedWith) this.controller.abort(this.abortedWith.reason)
    }
    return this.controller.signal
  }

  abort(reason: unknown): void {
    if (this.abortedWith) return
    this.abortedWith = { reason }
    this.controller?.abort(reason)
  }
}

export class AgentRunner {
  state: AgentState = 'starting'
  private subscription: Subscription | undefined
  private member = -1
  private beatTimer: ReturnType<typeof setInterval> | undefined
  private checking = false
  /** Jobs running now. */
  private running = 0
  /** The capability of the last routed message: the next one most often names it again. */
  private lastCapability: string | undefined
  /**
   * Jobs in start order, which is deadline order (one timeout for all): every running job is
   * here, from `deadlineHead` on, so this is also what a death aborts (no Set of running jobs:
   * its add and delete showed in a routed request's profile).
   */
  private readonly deadlines: Job[] = []
  private deadlineHead = 0
  private deadlineTimer: ReturnType<typeof setTimeout> | undefined
  /** Called when the last running job finishes (a graceful stop waits for it). */
  private idle: (() => void) | undefined
  private readonly limiters: number[] = []
  private agentLimiter = -1
  private readonly capabilityLimiters = new Map<string, number>()
  private readonly waits = new Map<ReturnType<typeof setTimeout>, () => void>()
  /** Jobs taken and waiting for a rate limit's token (policy `wait`). */
  private readonly waitingForTokens = new Set<Job>()
  /** Bumped when the agent dies: late results of an earlier life are ignored. */
  private life = 0
  /** Whether this runner registered its agent (and so may deregister it). */
  private registered = false
  /** Whether the start hook was called (what it throws is AGENT_FAILED). */
  private hookStarted = false
  /** Out of routing, still working its inbox (a scale-down empties it before the stop). */
  draining = false

  /**
   * @param rawConfig the configuration values before validation: a hot reload merges over
   * these, not over the validated output.
   */
  constructor(
    readonly agent: Agent<unknown>,
    readonly host: RunnerHost,
    readonly options: RunOptions,
    public rawConfig: Record<string, unknown> = {},
  ) {}

  get id(): string {
    return this.agent.id
  }

  /** Handlers running now. */
  get inFlight(): number {
    return this.running
  }

  /**
   * Registers the agent, starts beating (`initializing` until the start hook returns, so a slow
   * start is not taken for a dead agent), runs the start hook, and joins its inbox.
   */
  async start(): Promise<void> {
    const { agent, host } = this
    try {
      for (const cap of agent.capabilities) {
        if (!agent.handlers.has(cap.name))
          throw new OrreryError('NO_HANDLER', `agent ${agent.id} declares capability ${cap.name} but handles it nowhere`, {
            details: { agent: agent.id, capability: cap.name },
          })
      }
      host.registry.register({ id: agent.id, type: agent.type, capabilities: agent.capabilities, tags: this.options.tags, bulkhead: this.options.bulkhead })
      this.registered = true
      this.beatTimer = setInterval(() => void this.beat(), host.interval)
      this.makeLimiters()
      this.hookStarted = true
      await agent.onStart?.()
    } catch (error) {
      this.stopBeating()
      this.release()
      this.state = 'crashed'
      // Bad declarations keep their own code; anything the start hook threw is AGENT_FAILED.
      if (error instanceof OrreryError && !this.hookStarted) throw error
      throw new OrreryError('AGENT_FAILED', `agent ${agent.id} failed to start: ${describe(error)}`, { cause: error, details: { agent: agent.id } })
    }
    if (this.state !== 'starting') return // stopped or killed while starting
    try {
      this.join()
    } catch (error) {
      // Refused by the bus (or its engine): nothing of this agent may stay registered or beating.
      this.stopBeating()
      this.release()
      this.state = 'crashed'
      throw error
    }
    this.state = 'running'
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

  /**
   * Deliveries of one inbox message after which the core dead-letters it: past the runner's own
   * retries (`retry.attempts` + 1 deliveries), so it ends only messages whose handler never
   * settles them: its thread ends, or its agent crashes (see `kill`).
   */
  private get maxDeliveries(): number {
    return inboxTermsOf(0, this.options.retry.attempts, undefined).maxDeliveries
  }

  /** How this agent reads its inbox: the lease of a delivery, the deliveries before a dead letter, the longest retry delay. */
  get inboxTerms(): InboxTerms {
    const { attempts, backoff } = this.options.retry
    return inboxTermsOf(this.options.handlerTimeout, attempts, backoff)
  }

  private join(): void {
    const { visibilityMs, maxDeliveries } = this.inboxTerms
    const group = this.host.bus.group(inboxOf(this.agent.id), 'agent', { from: this.host.inboxFrom, visibilityTimeout: visibilityMs, maxDeliveries })
    const stream = group.join({ maxInFlight: this.options.concurrency })
    this.subscription = stream.subscribe((delivery) => this.take(delivery))
    this.member = stream.memberId()
  }

  /** Runs the health check (bounded by the beat interval) and reports the result. */
  private async beat(): Promise<void> {
    if (this.state === 'starting' && this.registered) return this.report('initializing')
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
    const status = state === 'paused' ? 'paused' : report.status
    // A check reporting something that is not a health counts as unhealthy.
    this.report(['healthy', 'degraded', 'unhealthy', 'paused'].includes(status) ? status : 'unhealthy')
  }

  /** Sends a heartbeat; an agent the registry no longer knows has been lost: a crash. */
  private report(health: Health): void {
    try {
      this.host.registry.heartbeat(this.id, health)
    } catch (error) {
      if (isOrreryError(error, 'UNKNOWN_AGENT') && this.state !== 'stopping' && !this.draining) this.host.crashed(this, 'deregistered by the registry', error)
    }
  }

  private take(delivery: Delivery): void {
    if (this.state !== 'running' && this.state !== 'paused' && this.state !== 'stopping') return
    const message = delivery.message
    // Only the capability header is read, straight from the frame: the rest stay undecoded
    // unless the handler asks for them.
    const capability = frameHeader(message.bytes, CAPABILITY_HEADER, this.lastCapability)
    if (capability !== undefined) this.lastCapability = capability
    const key = capability ?? this.keyOf(message)
    const entry = capability !== undefined ? this.agent.handlers.get(key) : this.handlerFor(key)
    const job = new Job(this, delivery, key, (message as { replyToken?: number }).replyToken !== 0, this.life, this.host.now())
    if (!entry) return this.permanent(job, new OrreryError('NO_HANDLER', ''), `NO_HANDLER: agent ${this.id} has no handler for ${key}`)
    if (this.limiters.length > 0 && !this.admitNow(key)) {
      if (this.options.rateLimit.policy === 'reject') return this.refuse(job)
      this.waitingForTokens.add(job)
      void this.admitLater(key, job.life).then((ok) => {
        this.waitingForTokens.delete(job)
        if (job.life !== this.life) return
        if (ok) this.run(job, entry)
        else this.refuse(job)
      })
      return
    }
    this.run(job, entry)
  }

  /** What a message that names no capability is handled as: its schema if handled, else its kind. */
  private keyOf(message: Message): string {
    if (message.schema !== undefined && this.agent.messageHandlers.has(message.schema)) return message.schema
    return message.kind
  }

  private handlerFor(key: string): HandlerEntry | undefined {
    return this.agent.messageHandlers.get(key) ?? this.agent.handlers.get(key)
  }

  /** Takes a token from each of the agent's and the capability's buckets, if all have one now. */
  private admitNow(capability: string): boolean {
    const now = this.host.now()
    if (this.agentLimiter >= 0 && this.host.core.take(this.agentLimiter, 1, now) !== 0) return false
    const capLimiter = this.capabilityLimiters.get(capability)
    // Refused here, the agent's token is spent anyway: a refused message counts against the agent.
    return capLimiter === undefined || this.host.core.take(capLimiter, 1, now) === 0
  }

  /** Waits until every bucket the message needs has a token (policy `wait`). */
  private async admitLater(capability: string, life: number): Promise<boolean> {
    const limiters = [this.agentLimiter, this.capabilityLimiters.get(capability) ?? -1].filter((l) => l >= 0)
    for (const limiter of limiters) {
      for (;;) {
        const until = this.host.core.take(limiter, 1, this.host.now())
        if (until === 0) break
        // A very slow bucket (perSecond 1e-9) refills in more than a timer can wait: it waits
        // the longest a timer can and looks again, rather than firing after 1 ms in a loop.
        const wait = Math.min(MAX_TIMER_MS, Math.max(1, until))
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            this.waits.delete(timer)
            resolve()
          }, wait)
          this.waits.set(timer, resolve)
        })
        if (life !== this.life || this.state === 'stopping') return false
      }
    }
    return true
  }

  /** Runs a handler: synchronously to the end when it returns a plain value. */
  private run(job: Job, entry: HandlerEntry): void {
    this.running++
    this.host.metrics.inFlight(this.id, this.agent.type, this.running)
    this.deadlines.push(job)
    if (this.deadlineTimer === undefined) this.armDeadline()
    let result: unknown
    const tracing = this.host.bus.tracing
    try {
      const message = job.delivery.message
      const payload = entry.schema ? validate(entry.schema, message.payload, `agent ${this.id} (${job.key})`) : message.payload
      if (tracing === undefined) result = payload instanceof Promise ? payload.then((p) => entry.run(p, job)) : entry.run(payload, job)
      else {
        const span = tracing.handler(this.id, this.agent.type, job.key, message, job.attempt)
        job.span = span
        result = tracing.inSpan(span, () => (payload instanceof Promise ? payload.then((p) => entry.run(p, job)) : entry.run(payload, job)))
      }
    } catch (error) {
      return this.failed(job, error)
    }
    if (result instanceof Promise)
      result.then(
        (value) => this.succeeded(job, value),
        (error: unknown) => this.failed(job, error),
      )
    else this.succeeded(job, result)
  }

  /** One timer for the oldest running handler's deadline (handlers start in deadline order). */
  private armDeadline(): void {
    while (this.deadlineHead < this.deadlines.length && this.deadlines[this.deadlineHead]!.finished) this.deadlineHead++
    if (this.deadlineHead === this.deadlines.length) {
      this.deadlines.length = 0
      this.deadlineHead = 0
      this.deadlineTimer = undefined
      return
    }
    const first = this.deadlines[this.deadlineHead]!
    this.deadlineTimer = setTimeout(
      () => {
        this.deadlineTimer = undefined
        const now = this.host.now()
        while (this.deadlineHead < this.deadlines.length) {
          const job = this.deadlines[this.deadlineHead]!
          if (!job.finished && job.started + this.options.handlerTimeout > now) break
          this.deadlineHead++
          if (!job.finished) {
            const error = new OrreryError('TIMEOUT', `handler for ${job.key} ran past ${this.options.handlerTimeout} ms`, {
              details: { agent: this.id, capability: job.key },
            })
            job.abort(error)
            this.failed(job, error)
          }
        }
        this.armDeadline()
      },
      Math.max(0, first.started + this.options.handlerTimeout - this.host.now()),
    )
  }

  /** Settles a message unless its life ended (then it is redelivered to the next one). */
  private settle(job: Job, fn: () => void): void {
    if (job.life !== this.life) return
    try {
      fn()
    } catch {
      // The lease expired meanwhile (STALE_ACK) or the bus closed: it is redelivered.
    }
  }

  /** Marks a job done; false when it was done already (a timeout raced its handler) or its life ended. */
  private finish(job: Job): boolean {
    if (job.finished) return false
    job.finished = true
    // A job of an ended life was counted out by `abandon` (an abort listener may end the life
    // between the timer taking the job off the queue and failing it).
    if (job.life !== this.life) return false
    this.running--
    // Finished jobs at the front of the deadline queue leave it now: left for the timer, a busy
    // agent held every message of the last handler timeout (30 s by default) in memory.
    const deadlines = this.deadlines
    let head = this.deadlineHead
    while (head < deadlines.length && deadlines[head]!.finished) head++
    if (head === deadlines.length) {
      deadlines.length = 0
      head = 0
    } else if (deadlines.length > 2 * this.running + 1024) {
      // Finished jobs piled up, passed at the front or held behind a slow one: keep the running
      // ones, in order (the timer reads the front). Linear, but only once 1,024 more finished
      // jobs than running ones are queued.
      let kept = 0
      for (let i = head; i < deadlines.length; i++) {
        const queued = deadlines[i]!
        if (!queued.finished) deadlines[kept++] = queued
      }
      deadlines.length = kept
      head = 0
    }
    this.deadlineHead = head
    this.host.metrics.inFlight(this.id, this.agent.type, this.running)
    if (this.running === 0 && this.idle) this.idle()
    return true
  }

  /** Ends a job's span (once: a timeout may race its handler), failed with `error` if given. */
  private endSpan(job: Job, error?: { error: unknown }): void {
    const span = job.span
    if (span === undefined) return
    job.span = undefined
    if (error === undefined) span.end()
    else this.host.bus.tracing!.failed(span, error.error)
  }

  private succeeded(job: Job, result: unknown): void {
    this.endSpan(job)
    if (!this.finish(job)) return
    this.host.metrics.handled(this.id, this.agent.type, job.key, (this.host.now() - job.started) / 1000)
    // Settled inline, not through `settle`: a closure per handled message showed in the profile.
    try {
      if (job.isRequest) this.answer(job, result)
      job.delivery.ack()
    } catch {
      // The lease expired meanwhile (STALE_ACK) or the bus closed: it is redelivered.
    }
  }

  /**
   * Replies to a request: `undefined` goes as `null`; a result that cannot be sent (a cycle,
   * too large) becomes an error reply, so the caller hears at once and the request is not rerun.
   */
  private answer(job: Job, result: unknown): void {
    const bus = this.host.bus
    try {
      bus.answer(job.delivery.message, result === undefined ? null : result)
    } catch (error) {
      try {
        bus.answer(job.delivery.message, undefined, { message: `the reply cannot be sent: ${describe(error)}`, code: codeOf(error), permanent: true })
      } catch {
        // The bus closed: the caller learns it from its own request.
      }
    }
  }

  private failed(job: Job, error: unknown): void {
    this.endSpan(job, { error })
    if (!this.finish(job)) return
    const { host, agent } = this
    const retry = this.options.retry
    if (error instanceof FatalError || this.says(retry.isFatal, error)) {
      host.metrics.failed(this.id, agent.type, job.key, 'fatal')
      if (job.isRequest) {
        // The caller hears at once (and may try another agent); the request is not rerun.
        this.answerError(job, describe(error), codeOf(error), false)
      } else if (job.attempt >= POISON_CRASHES) {
        // It crashed an agent before: a poison message, not a broken agent. Dead-letter it so
        // that restarts do not feed it to every new life until the supervisor gives up.
        const reason = `poison: crashed the agent ${job.attempt} times: ${describe(error)}`
        host.report({ type: 'dead-letter', agent: this.id, capability: job.key, attempt: job.attempt, error: reason })
        this.settle(job, () => job.delivery.nack({ deadLetter: reason }))
      }
      // Otherwise not settled: the message waits in the inbox for the agent's next life.
      host.crashed(this, `fatal error in ${job.key}`, error)
      return
    }
    if (error instanceof PermanentError || isOrreryError(error, 'SCHEMA_INVALID') || this.says(retry.isPermanent, error)) {
      return this.permanent(job, error, describe(error))
    }
    host.metrics.failed(this.id, agent.type, job.key, 'transient')
    if (job.isRequest) {
      // The caller's routing owns retries of requests (another agent may answer sooner).
      return this.answerError(job, describe(error), codeOf(error), false)
    }
    const n = job.attempt
    if (n > retry.attempts) {
      const reason = `retries exhausted after ${n} attempts: ${describe(error)}`
      host.report({ type: 'dead-letter', agent: this.id, capability: job.key, attempt: n, error: reason })
      return this.settle(job, () => job.delivery.nack({ deadLetter: reason }))
    }
    const delay = host.registry.backoff(retry.backoff, n, RETRY_BACKOFF)
    host.report({ type: 'retry', agent: this.id, capability: job.key, attempt: n, error: describe(error), delay })
    this.settle(job, () => job.delivery.nack({ delay }))
  }

  /**
   * Asks a user's classifier (`isFatal`, `isPermanent`); one that throws says no, and is logged:
   * thrown here, inside a handler's settlement, it would be an unhandled rejection.
   */
  private says(classifier: ((error: unknown) => boolean) | undefined, error: unknown): boolean {
    if (!classifier) return false
    try {
      return classifier(error) === true
    } catch (thrown) {
      this.agent.log.error({ err: thrown }, 'an error classifier threw')
      return false
    }
  }

  /** Dead-letters a message (a request gets the error back instead). */
  private permanent(job: Job, error: unknown, reason: string): void {
    const { host } = this
    host.metrics.failed(this.id, this.agent.type, job.key, 'permanent')
    if (job.isRequest) return this.answerError(job, reason, codeOf(error), true)
    host.report({ type: 'dead-letter', agent: this.id, capability: job.key, attempt: 1, error: reason })
    this.settle(job, () => job.delivery.nack({ deadLetter: reason }))
  }

  /** Answers a request with an error and acks it: the caller hears at once, and it is not rerun. */
  private answerError(job: Job, message: string, code: string | null, permanent: boolean): void {
    this.settle(job, () => this.answerAndAck(job, { message, code, permanent }))
  }

  /** A request of a life that ends: answered CLOSED and acked (see `abandon`). */
  private answerAbandoned(job: Job, why: string): void {
    try {
      this.answerAndAck(job, { message: why, code: 'CLOSED', permanent: false, abandoned: true })
    } catch {
      // The bus closed: the caller learns it from its own request.
    }
  }

  private answerAndAck(job: Job, error: ErrorAnswer): void {
    this.host.bus.answer(job.delivery.message, undefined, error)
    job.delivery.ack()
  }

  /** Refuses a message over the rate limit: a request gets `RATE_LIMITED`, a message is dead-lettered. */
  private refuse(job: Job): void {
    const { host } = this
    host.metrics.failed(this.id, this.agent.type, job.key, 'rate-limited')
    host.report({ type: 'rate-limited', agent: this.id, capability: job.key, attempt: 1 })
    const reason = `RATE_LIMITED: agent ${this.id} is over its rate limit for ${job.key}`
    if (job.isRequest) return this.answerError(job, reason, 'RATE_LIMITED', false)
    this.settle(job, () => job.delivery.nack({ deadLetter: reason }))
  }

  /**
   * Leaves routing (no new routed work) but keeps taking what is in its inbox, without beats: the
   * registry no longer knows it, so a beat would read as a crash.
   */
  drain(): void {
    if ((this.state !== 'running' && this.state !== 'paused') || this.draining) return
    this.draining = true
    this.stopBeating()
    this.deregister()
  }

  /** Stops taking messages; its queue waits. */
  async pause(): Promise<void> {
    if (this.state !== 'running') return
    this.state = 'paused'
    this.host.bus.setConsumerPaused(this.member, true)
    // A draining agent is out of the registry already: there is no health to tell.
    if (!this.draining) this.host.registry.setHealth(this.id, 'paused')
    await this.agent.onPause?.()
  }

  /** Takes messages again. */
  async resume(): Promise<void> {
    if (this.state !== 'paused') return
    this.state = 'running'
    this.host.bus.setConsumerPaused(this.member, false)
    await this.agent.onResume?.()
    if (!this.draining) await this.beat()
  }

  /**
   * Stops gracefully: no new work (deregistered from routing, inbox paused), in-flight handlers
   * get `timeout` ms to finish (each is acked as it does), then the rest are abandoned (messages
   * to be redelivered, requests answered CLOSED: see `abandon`), the stop hook runs, and the
   * agent leaves.
   */
  async stop(timeout: number): Promise<void> {
    if (this.state === 'stopped' || this.state === 'crashed' || this.state === 'stopping') return
    this.state = 'stopping'
    this.stopBeating()
    this.deregister() // no new routed work from now on
    if (this.member >= 0) this.host.bus.setConsumerPaused(this.member, true)
    if (this.running > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined
      await new Promise<void>((resolve) => {
        this.idle = resolve
        timer = setTimeout(resolve, timeout)
      })
      this.idle = undefined
      clearTimeout(timer)
    }
    // Whatever is still running is abandoned: a message goes back to the inbox; a request is
    // answered CLOSED, so its caller tries another agent now rather than at its timeout.
    this.abandon(`agent ${this.id} stopped before it answered`, true)
    this.release()
    this.state = 'stopped'
    this.unanswered(`agent ${this.id} stopped before it answered`)
    try {
      await this.agent.onStop?.()
    } catch (error) {
      this.agent.log.error({ err: error }, 'stop hook failed')
    }
  }

  /**
   * Dies at once: nothing unacked is lost, it goes back to the inbox. A supervisor's restart
   * leaves requests there too, for the next life to answer. `last` says there is no next life
   * (its mesh closing: `stopped`; a crash nothing restarts: `crashed`): its requests are answered
   * CLOSED instead, as a stop does. `failed`: the agent itself crashed (not a sibling a
   * supervisor restarts with it): what it held for the inbox's `maxDeliveries`-th time is
   * dead-lettered rather than handed back, so a message that crashes every life is not taken
   * for ever.
   */
  kill(last?: 'stopped' | 'crashed', failed = false): void {
    if (this.state === 'stopped' || this.state === 'crashed') return
    this.state = 'crashed'
    this.stopBeating()
    const why = `agent ${this.id} ${last ?? 'crashed'}${last === undefined ? '' : ' before it answered'}`
    this.abandon(why, last !== undefined, failed)
    if (failed && this.subscription !== undefined) this.host.bus.abandonMember(this.member)
    this.release()
    if (last !== undefined) this.unanswered(why)
  }

  /**
   * No next life: what this process asked of the agent and it had not taken yet (queued in its
   * inbox) fails too, as if answered CLOSED. (Callers in other processes wait for their timeout.)
   */
  private unanswered(why: string): void {
    try {
      this.host.bus.unanswered(inboxOf(this.id), why)
    } catch {
      // The bus closed: its requests failed with it.
    }
  }

  /**
   * Ends this life: running handlers are told (their signal aborts) and their results ignored.
   * With `answer`, each request among them is answered CLOSED and acked (its caller falls back
   * to another agent at once; run again by this agent, its reply would come too late). With
   * `failed` (a crash), so is a request delivered for the inbox's last time: it would be
   * dead-lettered, and its caller left waiting for its timeout.
   */
  private abandon(why: string, answer: boolean, failed = false): void {
    const answers = (job: Job) => job.isRequest && (answer || (failed && job.attempt >= this.maxDeliveries))
    // Taken and waiting for a token of a rate limit: answered now, before `release` lets them go.
    for (const job of this.waitingForTokens) if (answers(job)) this.answerAbandoned(job, why)
    this.waitingForTokens.clear()
    this.life++
    const error = new OrreryError('CLOSED', why)
    const deadlines = this.deadlines
    for (let i = this.deadlineHead; i < deadlines.length; i++) {
      const job = deadlines[i]!
      if (job.finished) continue
      job.finished = true
      this.endSpan(job, { error })
      job.abort(error)
      if (answers(job)) this.answerAbandoned(job, why)
    }
    this.running = 0
    // A graceful stop waiting for these handlers stops waiting (and its timer is cleared).
    this.idle?.()
    this.host.metrics.inFlight(this.id, this.agent.type, 0)
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer)
    this.deadlineTimer = undefined
    this.deadlines.length = 0
    this.deadlineHead = 0
  }

  private stopBeating(): void {
    if (this.beatTimer !== undefined) clearInterval(this.beatTimer)
    this.beatTimer = undefined
  }

  /** Leaves the inbox (unacked deliveries go back) and drops the limiters. */
  private release(): void {
    this.subscription?.unsubscribe()
    this.subscription = undefined
    // Waits for tokens end now; their messages go back (their life is over).
    for (const [timer, resolve] of this.waits) {
      clearTimeout(timer)
      resolve()
    }
    this.waits.clear()
    for (const id of this.limiters) this.host.core.dropLimiter(id)
    this.limiters.length = 0
    this.capabilityLimiters.clear()
    this.agentLimiter = -1
    this.deregister()
  }

  /** Leaves the registry, if this runner registered the agent. */
  private deregister(): void {
    if (!this.registered) return
    this.registered = false
    try {
      this.host.registry.deregister(this.id)
    } catch {
      // Deregistered already (missed heartbeats).
    }
  }
}
