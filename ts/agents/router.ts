/**
 * Requests by capability. The core picks a target by strategy, skipping agents whose breaker is
 * open and those at their bulkhead's limit; the call is bounded by a timeout; a failure counts
 * against the target's breaker and falls back to the next candidate at once; once every
 * candidate has failed, the retry policy waits (exponential backoff with jitter) and tries the
 * set again, up to its limit. Permanent errors (the handler said the input is wrong) are
 * returned at once, and do not count against the breaker.
 */
import { ROUTE_REFUSED, type RouteRefusal } from '../engines/backend.js'
import { runnerLink, type Bus, type RequestWaiter } from '../bus/bus.js'
import { checkEnvelope, inboxOf, PUBLISH_KEYS, type PublishOptions } from '../bus/options.js'
import { OrreryError, type ErrorCode } from '../errors.js'
import type { Message } from '../bus/message.js'
import { flag, int, MAX_TIMER_MS, msOrNone, text } from '../check.js'
import {
  checkBackoff,
  checkTags,
  RETRY_BACKOFF,
  splitCapability,
  strategyCode,
  type AgentQuery,
  type BackoffOptions,
  type Registry,
  type Strategy,
} from './registry.js'
import { CAPABILITY_HEADER } from './runner.js'
import type { RouteTrace, Tracing } from '../observe/tracing.js'

/** The fields of a routed request's options, and of a routed message's: any other is refused. */
const ROUTE_KEYS: readonly string[] = [...PUBLISH_KEYS.filter((k) => k !== 'recipient'), 'tags', 'strategy', 'timeout', 'retries', 'backoff', 'fallback']
const SEND_KEYS: readonly string[] = [...PUBLISH_KEYS, 'tags', 'strategy']

/** Options of a routed request. */
export interface RouteOptions extends Omit<PublishOptions, 'recipient'> {
  /** Tags every candidate must carry. */
  tags?: readonly string[]
  /** How to pick among candidates (default `priority`). */
  strategy?: Strategy
  /** Each call's timeout in ms (default 5,000; `Infinity` for none). */
  timeout?: number
  /** Tries after the first failure, across fallbacks and backoff rounds (default 2). */
  retries?: number
  backoff?: BackoffOptions
  /** Fall back to the next candidate after a failure (default true); false retries the same selection. */
  fallback?: boolean
}

/** What routing reports: a failed call it falls back from, or a backoff before the next round. */
export interface RouteEvent {
  type: 'fallback' | 'retry'
  /** The agent whose call failed. */
  agent: string
  capability: string
  /** The attempt that failed (1 for the first call). */
  attempt: number
  error: string
  /** The backoff before the next round (retries only), in ms. */
  delay?: number
}

/**
 * Failures that are the agent's: the call reached it (or should have) and it did not answer
 * well. Only these count against its breaker and fall back to another agent. Anything else
 * (a payload that cannot be encoded, a bad option, a message too large, a closed bus) is the
 * caller's or this process's: the call is rejected at once, no retry, and the agent's record
 * stays clean (two bad `timeout` values once opened a healthy agent's breaker).
 */
const AGENT_FAILURES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['HANDLER_ERROR', 'TIMEOUT', 'NO_RESPONDER', 'BACKPRESSURE'])

/** Codes a handler's error keeps when it reaches the caller. */
const REMOTE_CODES = new Set(['RATE_LIMITED', 'SCHEMA_INVALID', 'NO_HANDLER', 'TIMEOUT', 'INVALID_PAYLOAD', 'MESSAGE_TOO_LARGE'])
const NO_EXCLUSIONS: readonly number[] = []
const NO_OPTIONS: RouteOptions = Object.freeze({})

/** Outcome codes `finish` takes. */
const SUCCESS = 1
const FAILURE = 0
const NO_VERDICT = 2

/**
 * One routed request across its attempts. The bus settles it directly (it is the request's
 * waiter): no promise and reaction per attempt, and the caller's promise settles in the turn the
 * reply arrives.
 */
class RoutedCall implements RequestWaiter {
  readonly promise: Promise<Message>
  private resolveCall!: (reply: Message) => void
  private rejectCall!: (error: unknown) => void
  /** The inbox of the agent being called. */
  channel = ''
  /** The agent being called: its core handle and its id. */
  agent = -1
  target = ''
  /** Attempts that failed. */
  tries = 0
  /** Agents that failed this round. */
  exclude: readonly number[] = NO_EXCLUSIONS
  lastError: OrreryError | undefined = undefined
  /** The id of the agent whose call failed last. */
  lastAgent = ''
  trace: RouteTrace | undefined = undefined

  constructor(
    private readonly router: Router,
    readonly queryId: number,
    readonly strategy: number,
    /** The capability's name. */
    readonly capability: string,
    readonly payload: unknown,
    readonly publish: PublishOptions & { timeout: number },
    readonly options: RouteOptions,
    readonly query: AgentQuery,
  ) {
    this.promise = new Promise<Message>((resolve, reject) => {
      this.resolveCall = resolve
      this.rejectCall = reject
    })
  }

  resolve(reply: Message): void {
    try {
      this.router.replied(this, reply)
    } catch (error) {
      // Counting the success failed (the mesh's engine): the caller hears it, not the bus's flush.
      this.fail(error)
    }
  }

  reject(error: unknown): void {
    // In a reaction, as a rejected promise's handler ran: a refusal the bus hands over at once
    // does not fall back (and report it) inside the caller's `request`.
    void RESOLVED.then(() => {
      try {
        this.router.failed(this, error)
      } catch (thrown) {
        this.fail(thrown)
      }
    })
  }

  done(reply: Message): void {
    this.resolveCall(reply)
  }

  fail(error: unknown): void {
    this.rejectCall(error)
  }
}

const RESOLVED = Promise.resolve()

export class Router {
  private readonly headers = new Map<string, Record<string, string>>()
  private readonly plain = new Map<string, PublishOptions & { timeout: number }>()
  private readonly strategies = new Map<Strategy | undefined, number>()
  /** Retries waiting on a backoff: their timers, and how to fail them when the mesh closes. */
  private readonly waits = new Map<ReturnType<typeof setTimeout>, (error: OrreryError) => void>()
  private closed = false
  /** Where a refused route leaves its retry time, read at once. */
  private readonly refused: RouteRefusal = { retryAt: 0 }
  /** The Orrery's tracing, if it was asked for: each routed request is a `route` span. */
  private readonly tracing: Tracing | undefined

  constructor(
    private readonly bus: Bus,
    private readonly registry: Registry,
    private readonly report: (event: RouteEvent) => void,
  ) {
    this.tracing = runnerLink(bus).tracing
  }

  private capabilityHeaders(capability: string, extra: Readonly<Record<string, string>> | undefined): Record<string, string> {
    if (extra) return { ...extra, [CAPABILITY_HEADER]: capability }
    let h = this.headers.get(capability)
    if (!h) {
      h = Object.freeze({ [CAPABILITY_HEADER]: capability }) as Record<string, string>
      this.headers.set(capability, h)
    }
    return h
  }

  /** The message options of a request given none: one frozen object per capability, not a copy per call. */
  private plainPublish(capability: string): PublishOptions & { timeout: number } {
    let publish = this.plain.get(capability)
    if (!publish) {
      publish = Object.freeze({ headers: this.capabilityHeaders(capability, undefined), timeout: 5_000 })
      this.plain.set(capability, publish)
    }
    return publish
  }

  private strategy(strategy: Strategy | undefined): number {
    let code = this.strategies.get(strategy)
    if (code === undefined) {
      code = strategyCode(strategy === undefined ? 'priority' : strategy)
      this.strategies.set(strategy, code)
    }
    return code
  }

  /** Sends a request to one agent offering `capability` (`name@range`) and resolves with the reply. */
  request<R>(capability: string, payload: unknown, options?: RouteOptions): Promise<Message<R>> {
    // Bad options (a range that does not parse, an unknown strategy) and a closed mesh reject,
    // never throw: callers chain `.catch`.
    try {
      return this.start<R>(capability, payload, options)
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /**
   * Checks the options whole (routing's and the message's) before anything is routed; what only
   * encoding finds (a payload that cannot be encoded) is the caller's error too, see AGENT_FAILURES.
   */
  private check(capability: string, options: RouteOptions | undefined, keys: readonly string[]): RouteOptions {
    this.assertOpen()
    text(capability, 'capability', { nonEmpty: true })
    // Most calls give no options: nothing to check, and no walk over every option's field.
    if (options === undefined) return NO_OPTIONS
    const o = checkEnvelope(options, 'options', 'argument', keys) as RouteOptions
    if (o.tags !== undefined) checkTags(o.tags, 'tags')
    if (o.strategy !== undefined) this.strategy(o.strategy)
    if (o.timeout !== undefined) msOrNone(o.timeout, 'timeout', { above: 0, max: MAX_TIMER_MS })
    if (o.retries !== undefined) int(o.retries, 'retries')
    checkBackoff(o.backoff, 'backoff')
    if (o.fallback !== undefined) flag(o.fallback, 'fallback')
    return o
  }

  private start<R>(capability: string, payload: unknown, given?: RouteOptions): Promise<Message<R>> {
    const options = this.check(capability, given, ROUTE_KEYS)
    const query: AgentQuery = options.tags ? { capability, tags: options.tags } : capability
    const [name] = splitCapability(capability)
    const publish: PublishOptions & { timeout: number } =
      given === undefined ? this.plainPublish(name) : { ...options, headers: this.capabilityHeaders(name, options.headers), timeout: options.timeout ?? 5_000 }
    const call = new RoutedCall(this, this.registry.compile(query), this.strategy(options.strategy), name, payload, publish, options, query)
    const tracing = this.tracing
    if (tracing !== undefined)
      return tracing.route(capability, (trace) => {
        call.trace = trace
        this.attempt(call)
        return call.promise as Promise<Message<R>>
      })
    this.attempt(call)
    return call.promise as Promise<Message<R>>
  }

  /** Publishes to the inbox of one agent offering `capability`, picked as a request's would be. */
  async send(
    capability: string,
    payload: unknown,
    given: (PublishOptions & { tags?: readonly string[]; strategy?: Strategy }) | undefined,
  ): Promise<{ readonly id: string; readonly agent: string }> {
    const options = this.check(capability, given, SEND_KEYS)
    const registry = this.registry
    const core = registry.core
    const [name] = splitCapability(capability)
    const agent = core.route(
      registry.compile(options.tags ? { capability, tags: options.tags } : capability),
      this.strategy(options.strategy),
      registry.now(),
      NO_EXCLUSIONS,
      this.refused,
    )
    if (agent < 0) throw this.refusal(agent, options.tags ? { capability, tags: options.tags } : capability)
    // Queued, not answered: the call holds no slot, and its outcome is the agent's own business.
    this.finish(agent, NO_VERDICT)
    const target = registry.byCoreHandle(agent)!
    const { tags: _tags, strategy: _strategy, ...publish } = options
    const sent = await this.bus.publish(target.inbox, payload, { ...publish, recipient: target.id, headers: this.capabilityHeaders(name, publish.headers) })
    return { id: sent.id, agent: target.id }
  }

  /** Routes the call's next attempt and sends it; what happens to it comes back as `replied` or `failed`. */
  private attempt(call: RoutedCall): void {
    const registry = this.registry
    let agent: number
    try {
      agent = registry.core.route(call.queryId, call.strategy, registry.now(), call.exclude, this.refused)
    } catch (error) {
      return call.fail(error)
    }
    if (agent < 0) {
      // Every candidate failed this round: back off, then try them all again.
      if (call.exclude.length > 0) return this.backOff(call)
      return call.fail(call.lastError ?? this.refusal(agent, call.query))
    }
    const target = registry.byCoreHandle(agent)!
    call.agent = agent
    call.target = target.id
    call.channel = target.inbox
    call.trace?.attempt(target.id, call.tries + 1)
    try {
      // The options were checked once, in `check`: not again for each attempt.
      this.bus.requestInto(target.inbox, call.payload, call.publish, call.publish.timeout, call, call.trace?.context)
    } catch (error) {
      this.finish(agent, NO_VERDICT)
      call.fail(error)
    }
  }

  /** @internal The call's agent answered. */
  replied(call: RoutedCall, reply: Message): void {
    this.finish(call.agent, SUCCESS)
    call.done(reply)
  }

  /** @internal The call's attempt failed: fall back, back off, or fail the call. */
  failed(call: RoutedCall, error: unknown): void {
    const e = error instanceof OrreryError ? error : new OrreryError('INTERNAL', String(error), { cause: error })
    // Its agent ended before it answered (`abandoned`): not a fault of the agent's handler.
    const abandoned = e.details['abandoned'] === true
    // Given up as this mesh closed: nothing is left to fall back to.
    if (this.closed && abandoned) return call.fail(new OrreryError('CLOSED', 'this mesh is shut down', { cause: e }))
    if (!AGENT_FAILURES.has(e.code)) {
      // Not the agent's failure: no verdict, no fallback, no retry.
      this.finish(call.agent, NO_VERDICT)
      return call.fail(e)
    }
    const permanent = e.code === 'HANDLER_ERROR' && e.details['permanent'] === true
    // Over its rate limit, or ended before it answered: not a fault.
    const remote = e.code === 'HANDLER_ERROR' ? e.details['remoteCode'] : undefined
    this.finish(call.agent, permanent || abandoned || remote === 'RATE_LIMITED' ? NO_VERDICT : FAILURE)
    const retries = call.options.retries ?? 2
    if (permanent || call.tries >= retries) return call.fail(this.final(e, call.tries + 1, call.target))
    call.tries++
    call.lastError = e
    call.lastAgent = call.target
    if (call.options.fallback === false) return this.backOff(call)
    const fallback = { type: 'fallback', agent: call.target, capability: call.capability, attempt: call.tries, error: e.message } as const
    this.report(fallback)
    call.trace?.note(fallback)
    call.exclude = [...call.exclude, call.agent]
    this.attempt(call)
  }

  private backOff(call: RoutedCall): void {
    const lastError = call.lastError!
    const retries = call.options.retries ?? 2
    if (call.tries > retries) return call.fail(lastError)
    const delay = this.registry.backoff(call.options.backoff, call.tries, RETRY_BACKOFF)
    const retry = { type: 'retry', agent: call.lastAgent, capability: call.capability, attempt: call.tries, error: lastError.message, delay } as const
    this.report(retry)
    call.trace?.note(retry)
    if (this.closed) return call.fail(new OrreryError('CLOSED', 'this mesh is shut down'))
    const timer = setTimeout(() => {
      this.waits.delete(timer)
      call.exclude = NO_EXCLUSIONS
      this.attempt(call)
    }, delay)
    this.waits.set(timer, (e) => call.fail(e))
  }

  /**
   * The error a caller gets: a remote error that has an Orrery code of its own (RATE_LIMITED,
   * SCHEMA_INVALID, NO_HANDLER, TIMEOUT…) carries that code, not HANDLER_ERROR.
   */
  private final(e: OrreryError, attempts: number, agent: string): OrreryError {
    const remote = e.code === 'HANDLER_ERROR' ? e.details['remoteCode'] : undefined
    const code = typeof remote === 'string' && REMOTE_CODES.has(remote) ? (remote as ErrorCode) : e.code
    if (attempts === 1 && code === e.code) return e
    const message = attempts === 1 ? e.message : `${e.message} (after ${attempts} attempts)`
    return new OrreryError(code, message, { cause: e, details: { ...e.details, attempts, agent } })
  }

  /**
   * @internal Agents of other processes (each with its process) that stopped beating, their
   * process dead or cut off: what waits for their answers fails now with NO_RESPONDER, so a
   * routed call falls back to another agent at once rather than at its timeout. The error says
   * `abandoned`: no verdict on the agent's handler (its breaker is not fed; its health says it).
   */
  agentsLost(lost: ReadonlyMap<string, string | undefined>): void {
    const byInbox = new Map([...lost].map(([agent, process]) => [inboxOf(agent), { agent, process }]))
    this.bus.failRequestsTo((channel) => {
      const gone = byInbox.get(channel)
      if (gone === undefined) return undefined
      const { agent, process } = gone
      return new OrreryError('NO_RESPONDER', `agent ${agent}${process === undefined ? '' : ` of process ${process}`} stopped beating before it answered`, {
        details: { agent, channel, abandoned: true, ...(process === undefined ? {} : { process }) },
      })
    })
  }

  /** @internal Fails retries waiting on a backoff with `CLOSED` and clears their timers. */
  close(): void {
    this.closed = true
    for (const [timer, reject] of this.waits) {
      clearTimeout(timer)
      reject(new OrreryError('CLOSED', 'this mesh is shut down'))
    }
    this.waits.clear()
  }

  private assertOpen(): void {
    if (this.closed) throw new OrreryError('CLOSED', 'this mesh is shut down')
  }

  private finish(agent: number, outcome: number): void {
    // Closed, the core is gone: nothing is left to count.
    if (this.closed) return
    const registry = this.registry
    if (registry.core.finish(agent, outcome, registry.now())) registry.changed()
  }

  private refusal(refused: number, query: AgentQuery): OrreryError {
    const [capability] = splitCapability(typeof query === 'string' ? query : query.capability)
    if (refused === ROUTE_REFUSED.circuitOpen) {
      return new OrreryError('CIRCUIT_OPEN', `every agent offering ${capability} has an open circuit breaker`, {
        details: { capability, retryAt: this.refused.retryAt },
      })
    }
    if (refused === ROUTE_REFUSED.bulkheadFull) {
      return new OrreryError('BULKHEAD_FULL', `every agent offering ${capability} is at its limit of concurrent calls`, { details: { capability } })
    }
    const { message, offered, similar } = this.registry.whyNone(query)
    return new OrreryError('NO_RESPONDER', message, { details: { capability, offered, similar } })
  }
}
