/**
 * OpenTelemetry traces (`Orrery.create({ tracing })`): spans after the messaging semantic
 * conventions for publish (`send`, `create` per message of a batch), delivery (`process`), group
 * settlement (`ack`/`nack`), bus requests (client and server), routed mesh requests, agent
 * handler runs and workflow runs and steps, and the W3C trace context (`traceparent`,
 * `tracestate`) carried in message headers, across processes where a transport carries them.
 *
 * Everything here goes through the `@opentelemetry/api` module the user gives or has installed
 * (an optional peer, loaded with `import()` only when tracing is asked for): Orrery loads and
 * runs without it, and a bus made without tracing holds `undefined` where this would be, so its
 * hot paths pay one test of a field. No `node:*` import: a page traces as Node does.
 *
 * The API's types are written out structurally below (only what Orrery calls), so the package's
 * declarations never import `@opentelemetry/api`.
 */
import { isOrreryError, OrreryError } from '../errors.js'
import { callable, keysOf, options as checkOptions, refuse } from '../check.js'
import type { Message } from '../bus/message.js'
import { checkEnvelope, OWN_CHANNEL_PREFIX, PUBLISH_KEYS } from '../bus/options.js'
import { EVENT_TYPES } from '../workflows/history.js'
import { COMPENSATE_SUFFIX } from '../workflows/validate.js'

/** A context of the OpenTelemetry API (opaque to Orrery). */
export type OtelContext = object

/** The span context of the OpenTelemetry API, as Orrery reads it. */
export interface OtelSpanContext {
  traceId: string
  spanId: string
  traceFlags: number
  isRemote?: boolean
  traceState?: { serialize(): string }
}

/** An attribute value of the OpenTelemetry API. */
export type OtelAttributeValue =
  | string
  | number
  | boolean
  | Array<null | undefined | string>
  | Array<null | undefined | number>
  | Array<null | undefined | boolean>

/** Span attributes. */
export type OtelAttributes = Record<string, OtelAttributeValue | undefined>

/** The span of the OpenTelemetry API, as Orrery calls it. */
export interface OtelSpan {
  spanContext(): OtelSpanContext
  setAttribute(key: string, value: OtelAttributeValue): unknown
  addEvent(name: string, attributes?: OtelAttributes): unknown
  setStatus(status: { code: number; message?: string }): unknown
  recordException(exception: string | Error): unknown
  end(): void
}

/** The options of `tracer.startSpan`, as Orrery gives them. */
export interface OtelSpanOptions {
  kind?: number
  attributes?: OtelAttributes
  links?: { context: OtelSpanContext; attributes?: OtelAttributes }[]
}

/** A tracer of the OpenTelemetry API (`trace.getTracer(...)`), as Orrery calls it. */
export interface OtelTracer {
  startSpan(name: string, options?: OtelSpanOptions, context?: OtelContext): OtelSpan
}

/**
 * The `@opentelemetry/api` module (`import * as api from '@opentelemetry/api'`), as Orrery
 * calls it: pass it as `tracing: { api }` where `import()` cannot find the package (a page
 * without a bundler), or to be sure Orrery uses the same copy as your SDK.
 */
export interface OtelApi {
  trace: {
    getTracer(name: string, version?: string): OtelTracer
    setSpan(context: OtelContext, span: OtelSpan): OtelContext
    getSpan(context: OtelContext): OtelSpan | undefined
    setSpanContext(context: OtelContext, spanContext: OtelSpanContext): OtelContext
  }
  context: {
    active(): OtelContext
    // biome-ignore lint/suspicious/noExplicitAny: the API's own generic signature, written loosely so the real module fits.
    with<F extends (...args: any[]) => any>(context: OtelContext, fn: F, thisArg?: ThisParameterType<F>, ...args: Parameters<F>): ReturnType<F>
  }
  propagation: {
    inject(context: OtelContext, carrier: Record<string, string>): void
    extract(context: OtelContext, carrier: Readonly<Record<string, string>>): OtelContext
    fields(): string[]
  }
  ROOT_CONTEXT: OtelContext
  /** The API's TraceState from its header form (API 1.1 on). */
  createTraceState?(raw?: string): { serialize(): string }
}

/** Options of `Orrery.create({ tracing })` besides `true`. */
export interface TracingOptions {
  /** The `@opentelemetry/api` module; default: loaded with `import('@opentelemetry/api')`. */
  api?: OtelApi
  /** The tracer spans are started on; default: `api.trace.getTracer('orrery', <Orrery's version>)`. */
  tracer?: OtelTracer
}

const TRACING_KEYS = keysOf<TracingOptions>()(['api', 'tracer'])

/** Orrery's version, the tracer's version by default. */
export const TRACER_VERSION = '0.1.0'

/** The API's span kinds and status codes (stable numbers of `SpanKind` and `SpanStatusCode`). */
const KIND = { internal: 0, server: 1, client: 2, producer: 3, consumer: 4 } as const
const STATUS_ERROR = 2

/** The W3C trace context headers, which Orrery writes itself when no propagator is registered. */
const TRACEPARENT = 'traceparent'
const TRACESTATE = 'tracestate'
const TRACEPARENT_FORM = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/

/** Where a span is: its trace and span ids, as logs carry them. */
export interface TraceIds {
  traceId: string
  spanId: string
}

/** The trace and span ids a message's `traceparent` header (or a `trace-id` one) carries, for a log line; undefined for none. */
export function headerIds(headers: Readonly<Record<string, string>>): { traceId: string; spanId?: string } | undefined {
  const parent = headers[TRACEPARENT]
  const match = parent === undefined ? null : TRACEPARENT_FORM.exec(parent)
  if (match) return { traceId: match[1]!, spanId: match[2]! }
  const id = headers['trace-id'] ?? parent?.split('-')[1]
  return id ? { traceId: id } : undefined
}

/** A span still open for a delivery (a group's, until it is settled) and the context it made. */
interface Open {
  readonly span: OtelSpan
  readonly context: OtelContext
}

/** The options a publish is traced with, and the message they carry. */
interface Publishing {
  readonly channel: string
  readonly payload: unknown
  readonly options?: object
}

/** A workflow run as its trace reads it. */
interface TracedRun {
  readonly id: string
  readonly meta: { readonly definition: string; readonly version: string }
  readonly generation: number
}

/** A traced workflow run: its span (one per generation), and the spans of its step attempts running, by token. */
interface RunSpans {
  readonly span: OtelSpan
  readonly context: OtelContext
  readonly steps: Map<number, OtelSpan>
}

/** A routed request being traced: its span, and what each attempt tells it. */
export class RouteTrace {
  constructor(
    private readonly span: OtelSpan,
    /** The context each attempt's request is a child of. */
    readonly context: OtelContext,
  ) {}

  /** An attempt goes to `agent`. */
  attempt(agent: string, attempt: number): void {
    this.span.addEvent('orrery.route.attempt', { 'orrery.agent.id': agent, 'orrery.attempt': attempt })
    this.span.setAttribute('orrery.agent.id', agent)
    this.span.setAttribute('orrery.route.attempts', attempt)
  }

  /** Routing falls back to another agent, or backs off before the next round. */
  note(event: { type: 'fallback' | 'retry'; agent: string; attempt: number; error: string; delay?: number }): void {
    this.span.addEvent(`orrery.route.${event.type}`, {
      'orrery.agent.id': event.agent,
      'orrery.attempt': event.attempt,
      'error.message': event.error,
      'orrery.retry.delay_ms': event.delay,
    })
  }
}

/**
 * One Orrery's tracing: its tracer and API, and the hooks the bus, groups, routing, the agent
 * runner and workflows call (only where they were given one). Not exported from the package's
 * entries; it stays in the published declarations because the bus's link types name it.
 */
export class Tracing {
  /** The spans of group deliveries not settled yet, and the contexts of deliveries being handed over (by message). */
  private readonly open = new WeakMap<Message, Open>()
  /** Whether a propagator is registered; without one, Orrery writes and reads W3C trace context itself. */
  private readonly propagator: boolean
  /** What a channel's messages go through: `orrery`, or the kind of transport it is bound to. */
  system: (channel: string) => string = () => 'orrery'

  private constructor(
    readonly api: OtelApi,
    readonly tracer: OtelTracer,
  ) {
    this.propagator = api.propagation.fields().length > 0
  }

  /**
   * The tracing `Orrery.create` was asked for: undefined for none (`false`, absent); refuses a
   * wrong shape (INVALID_OPTION), and a missing `@opentelemetry/api` with UNSUPPORTED.
   */
  static async open(option: unknown): Promise<Tracing | undefined> {
    if (option === undefined || option === false) return undefined
    if (option !== true && (option === null || typeof option !== 'object' || Array.isArray(option))) {
      refuse('option', 'tracing', option, 'must be true, false, or an object { api?, tracer? } (or left out)')
    }
    const given: TracingOptions = option === true ? {} : checkOptions(option as TracingOptions, 'tracing', 'option', TRACING_KEYS)
    if (given.api !== undefined) checkApi(given.api)
    if (given.tracer !== undefined) callable((given.tracer as { startSpan?: unknown } | null)?.startSpan, 'tracing.tracer.startSpan', 'option')
    const api = given.api ?? (await loadApi())
    return new Tracing(api, given.tracer ?? api.trace.getTracer('orrery', TRACER_VERSION))
  }

  /** The active context (the caller's span, where a context manager keeps one). */
  active(): OtelContext {
    return this.api.context.active()
  }

  /** Runs `fn` with `context` active. */
  within<R>(context: OtelContext, fn: () => R): R {
    return this.api.context.with(context, fn)
  }

  /** The trace and span ids of a span, for log lines. */
  ids(span: OtelSpan): TraceIds {
    const { traceId, spanId } = span.spanContext()
    return { traceId, spanId }
  }

  /** The context that carries `span`, under `parent`. */
  contextWith(parent: OtelContext, span: OtelSpan): OtelContext {
    return this.api.trace.setSpan(parent, span)
  }

  // ---- Publish -------------------------------------------------------------------------------

  /**
   * Traces a publish (a batch): one message is a `send` span (PRODUCER) whose context its
   * headers carry; a batch is a `send` span (CLIENT) linked to a `create` span (PRODUCER) per
   * message, each message carrying its own. The span ends when the publish settles.
   */
  publish<P extends { readonly ids: string[] }>(items: ReadonlyArray<Publishing>, send: (items: Publishing[]) => Promise<P>): Promise<P> {
    const n = items.length
    if (n === 0 || items.every((item) => item.channel.startsWith(OWN_CHANNEL_PREFIX))) return send(items as Publishing[])
    let traced: Publishing[]
    let span: OtelSpan
    try {
      // Checked as the untraced publish checks them, before a copy with more headers is made.
      for (const item of items) if (item.options !== undefined) checkEnvelope(item.options, 'options', 'argument', PUBLISH_KEYS)
      const parent = this.active()
      if (n === 1) {
        const item = items[0]!
        span = this.tracer.startSpan(
          `send ${item.channel}`,
          { kind: KIND.producer, attributes: this.messaging(item.channel, 'send', 'send', item.options) },
          parent,
        )
        traced = [this.carrying(item, this.contextWith(parent, span))]
      } else {
        const creates: OtelSpan[] = []
        traced = items.map((item) => {
          const create = this.tracer.startSpan(
            `create ${item.channel}`,
            { kind: KIND.producer, attributes: this.messaging(item.channel, 'create', 'create', item.options) },
            parent,
          )
          creates.push(create)
          return this.carrying(item, this.contextWith(parent, create))
        })
        const channels = new Set(items.map((item) => item.channel))
        const destination = channels.size === 1 ? items[0]!.channel : undefined
        span = this.tracer.startSpan(
          destination === undefined ? 'send' : `send ${destination}`,
          {
            kind: KIND.client,
            attributes: { ...this.messaging(destination, 'send', 'send', undefined), 'messaging.batch.message_count': n },
            links: creates.map((create) => ({ context: create.spanContext() })),
          },
          parent,
        )
        for (const create of creates) create.end()
      }
    } catch (error) {
      // A message's options that do not check: refused as the untraced publish refuses them.
      return Promise.reject(error)
    }
    return send(traced).then(
      (published) => {
        if (n === 1) {
          const id = published.ids[0]
          if (id !== undefined) span.setAttribute('messaging.message.id', id)
        }
        span.end()
        return published
      },
      (error: unknown) => {
        this.failed(span, error)
        throw error
      },
    )
  }

  /** A message's options with the trace context of `context` added to its headers (the options checked first, as the bus would). */
  private carrying(item: Publishing, context: OtelContext): Publishing {
    const options = (item.options === undefined ? {} : item.options) as { headers?: Readonly<Record<string, string>> }
    const carrier = this.inject(context)
    if (carrier === undefined) return item
    return { channel: item.channel, payload: item.payload, options: { ...options, headers: { ...options.headers, ...carrier } } }
  }

  /** The headers that carry `context`: the registered propagator's, or W3C trace context written here. */
  private inject(context: OtelContext): Record<string, string> | undefined {
    if (this.propagator) {
      const carrier: Record<string, string> = {}
      this.api.propagation.inject(context, carrier)
      return carrier
    }
    const span = this.api.trace.getSpan(context)
    if (span === undefined) return undefined
    const { traceId, spanId, traceFlags, traceState } = span.spanContext()
    const carrier: Record<string, string> = { [TRACEPARENT]: `00-${traceId}-${spanId}-${(traceFlags & 0xff).toString(16).padStart(2, '0')}` }
    const state = traceState?.serialize()
    if (state) carrier[TRACESTATE] = state
    return carrier
  }

  /** The context a message's headers carry (the root context when they carry none). */
  extract(headers: Readonly<Record<string, string>>): OtelContext {
    const root = this.api.ROOT_CONTEXT
    if (this.propagator) return this.api.propagation.extract(root, headers)
    const parent = headers[TRACEPARENT]
    const match = parent === undefined ? null : TRACEPARENT_FORM.exec(parent)
    if (!match || /^0+$/.test(match[1]!) || /^0+$/.test(match[2]!)) return root
    const state = headers[TRACESTATE]
    const spanContext: OtelSpanContext = { traceId: match[1]!, spanId: match[2]!, traceFlags: Number.parseInt(match[3]!, 16), isRemote: true }
    if (state) spanContext.traceState = this.api.createTraceState?.(state) ?? { serialize: () => state }
    return this.api.trace.setSpanContext(root, spanContext)
  }

  /** The messaging attributes of an operation on `channel` (undefined: a batch to several). */
  private messaging(channel: string | undefined, name: string, type: string, options: object | undefined): OtelAttributes {
    const o = options as { id?: unknown; correlationId?: unknown } | undefined
    return {
      'messaging.system': channel === undefined ? 'orrery' : this.system(channel),
      'messaging.destination.name': channel,
      'messaging.operation.name': name,
      'messaging.operation.type': type,
      'messaging.message.id': typeof o?.id === 'string' ? o.id : undefined,
      'messaging.message.conversation_id': typeof o?.correlationId === 'string' ? o.correlationId : undefined,
    }
  }

  /** Ends `span` as failed with `error`. */
  failed(span: OtelSpan, error: unknown): void {
    span.recordException(error instanceof Error ? error : String(error))
    span.setStatus({ code: STATUS_ERROR, message: error instanceof Error ? error.message : String(error) })
    if (isOrreryError(error)) span.setAttribute('error.type', error.code)
    span.end()
  }

  // ---- Delivery ------------------------------------------------------------------------------

  /**
   * Hands `value` (a message, or a group delivery) to `sink` inside a `process` span (CONSUMER)
   * whose parent is the context the message carries. A subscriber's span covers the hand-over
   * (its callback, and what it starts while its context is active); a group delivery's stays open
   * until it is settled (`settled`).
   */
  deliver<V>(message: Message, group: string | undefined, sink: { next(value: V): void }, value: V): void {
    const channel = message.channel
    if (channel.startsWith(OWN_CHANNEL_PREFIX)) return sink.next(value)
    const parent = this.extract(message.headers)
    const attributes = this.messaging(channel, 'process', 'process', undefined)
    attributes['messaging.message.id'] = message.id
    attributes['messaging.consumer.group.name'] = group
    const correlation = message.correlationId
    if (correlation !== undefined) attributes['messaging.message.conversation_id'] = correlation
    // Parented by the message's creation context, and linked to it as the conventions ask of a process span.
    const creation = this.api.trace.getSpan(parent)?.spanContext()
    const span = this.tracer.startSpan(
      `process ${channel}`,
      creation === undefined ? { kind: KIND.consumer, attributes } : { kind: KIND.consumer, attributes, links: [{ context: creation }] },
      parent,
    )
    const context = this.contextWith(parent, span)
    const open = { span, context }
    this.open.set(message, open)
    try {
      this.api.context.with(context, sink.next, sink, value)
    } finally {
      if (group === undefined) {
        if (this.open.get(message) === open) this.open.delete(message)
        span.end()
      }
    }
  }

  /** The context of a delivery's `process` span (a group delivery's until settled; a subscriber's while handed over). */
  contextOf(message: Message): OtelContext | undefined {
    return this.open.get(message)?.context
  }

  /** A group delivery was settled: an `ack` or `nack` span (CLIENT) under its `process` span, which then ends. */
  settled(message: Message, group: string, operation: 'ack' | 'nack', deadLetter?: string): void {
    const open = this.open.get(message)
    if (open === undefined) return
    this.open.delete(message)
    const attributes = this.messaging(message.channel, operation, 'settle', undefined)
    attributes['messaging.message.id'] = message.id
    attributes['messaging.consumer.group.name'] = group
    if (deadLetter !== undefined) attributes['orrery.dead_letter.reason'] = deadLetter
    this.tracer.startSpan(`${operation} ${message.channel}`, { kind: KIND.client, attributes }, open.context).end()
    if (operation === 'nack') open.span.setAttribute('orrery.nacked', true)
    open.span.end()
  }

  // ---- Requests ------------------------------------------------------------------------------

  /**
   * Traces a bus request: a `request` span (CLIENT) under `parent` (default: the active
   * context), its context carried in the request's headers, ended by the reply or the failure.
   */
  request<M>(channel: string, options: object, parent: OtelContext | undefined, send: (options: object) => Promise<M>): Promise<M> {
    if (channel.startsWith(OWN_CHANNEL_PREFIX)) return send(options)
    const base = parent ?? this.active()
    const span = this.tracer.startSpan(`request ${channel}`, { kind: KIND.client, attributes: this.messaging(channel, 'request', 'send', options) }, base)
    const traced = this.carrying({ channel, payload: undefined, options }, this.contextWith(base, span)).options!
    return send(traced).then(
      (reply) => {
        span.end()
        return reply
      },
      (error: unknown) => {
        this.failed(span, error)
        throw error
      },
    )
  }

  /**
   * Runs a responder's handler inside a `respond` span (SERVER) under the request's `process`
   * span (or the context it carries); ends with its result.
   */
  respond<R>(message: Message, handler: () => R): R {
    const channel = message.channel
    if (channel.startsWith(OWN_CHANNEL_PREFIX)) return handler()
    const parent = this.contextOf(message) ?? this.extract(message.headers)
    const attributes = this.messaging(channel, 'respond', 'process', undefined)
    attributes['messaging.message.id'] = message.id
    const span = this.tracer.startSpan(`respond ${channel}`, { kind: KIND.server, attributes }, parent)
    let result: R
    try {
      result = this.api.context.with(this.contextWith(parent, span), handler)
    } catch (error) {
      this.failed(span, error)
      throw error
    }
    if (result instanceof Promise) {
      result.then(
        () => span.end(),
        (error: unknown) => this.failed(span, error),
      )
    } else span.end()
    return result
  }

  // ---- Routing and agents --------------------------------------------------------------------

  /** Traces a routed request: a `route` span (INTERNAL) each attempt's request is a child of. */
  route<M>(capability: string, run: (trace: RouteTrace) => Promise<M>): Promise<M> {
    const parent = this.active()
    const span = this.tracer.startSpan(`route ${capability}`, { kind: KIND.internal, attributes: { 'orrery.capability': capability } }, parent)
    let result: Promise<M>
    try {
      result = run(new RouteTrace(span, this.contextWith(parent, span)))
    } catch (error) {
      this.failed(span, error)
      throw error
    }
    return result.then(
      (reply) => {
        span.end()
        return reply
      },
      (error: unknown) => {
        this.failed(span, error)
        throw error
      },
    )
  }

  /** Starts an agent handler's span (INTERNAL) under its delivery's `process` span. */
  handler(agent: string, type: string, key: string, message: Message, attempt: number): OtelSpan {
    const parent = this.contextOf(message) ?? this.extract(message.headers)
    return this.tracer.startSpan(
      `handle ${key}`,
      {
        kind: KIND.internal,
        attributes: {
          'orrery.agent.id': agent,
          'orrery.agent.type': type,
          'orrery.handler': key,
          'orrery.attempt': attempt,
          'messaging.message.id': message.id,
        },
      },
      parent,
    )
  }

  /** Runs `fn` with `span` active (under the active context). */
  inSpan<R>(span: OtelSpan, fn: () => R): R {
    return this.api.context.with(this.contextWith(this.active(), span), fn)
  }

  // ---- Workflows -----------------------------------------------------------------------------

  /** Each traced run's spans. */
  private readonly runs = new WeakMap<TracedRun, RunSpans>()

  /**
   * A workflow run recorded `event` (its history tuple, `[type, seq, at, ...fields]`): a run is a
   * `workflow <definition>` span (INTERNAL; one per generation; a run resumed here starts one
   * marked `orrery.workflow.resumed`), each step attempt a `step <id>` span under it and each
   * compensation a `compensate <id>` span; retries, compensations, signals and a cancel are its events.
   */
  workflowEvent(run: TracedRun, event: readonly unknown[]): void {
    const type = EVENT_TYPES[event[0] as number]
    let spans = this.runs.get(run)
    if (type === 'started') {
      if (spans !== undefined) this.endRun(run, spans, 'continued', undefined)
      this.startRun(run, false)
      return
    }
    spans ??= this.startRun(run, true)
    const run_ = spans.span
    switch (type) {
      case 'step-started': {
        const [, , , step, attempt, key, compensation, token] = event as [number, number, number, string, number, string, boolean, number]
        const span = this.tracer.startSpan(
          // A compensation is the synthetic step `<step>.compensate`: named for the step it undoes.
          compensation ? `compensate ${step.endsWith(COMPENSATE_SUFFIX) ? step.slice(0, -COMPENSATE_SUFFIX.length) : step}` : `step ${step}`,
          {
            kind: KIND.internal,
            attributes: {
              'orrery.workflow.run_id': run.id,
              'orrery.workflow.step': step,
              'orrery.workflow.compensation': compensation,
              'orrery.attempt': attempt,
              'orrery.idempotency_key': key,
            },
          },
          spans.context,
        )
        spans.steps.set(token, span)
        break
      }
      case 'step-completed': {
        const [, , , token, , , outcome, , error] = event as [
          number,
          number,
          number,
          number,
          string,
          number,
          string,
          unknown,
          { message?: string; code?: string } | undefined,
        ]
        const span = spans.steps.get(token)
        if (span === undefined) break
        spans.steps.delete(token)
        span.setAttribute('orrery.workflow.outcome', outcome)
        if (outcome === 'ok') span.end()
        else this.endFailed(span, error)
        break
      }
      case 'retry':
        run_.addEvent('orrery.workflow.retry', { 'orrery.workflow.step': event[3] as string, 'orrery.attempt': event[4] as number })
        break
      case 'compensated':
        run_.addEvent('orrery.workflow.compensated', { 'orrery.workflow.step': event[3] as string, 'orrery.workflow.ok': event[4] as boolean })
        break
      case 'signal':
        run_.addEvent('orrery.workflow.signal', { 'orrery.workflow.signal': event[3] as string })
        break
      case 'cancel':
        run_.addEvent('orrery.workflow.cancel')
        break
      case 'run-finished':
        this.endRun(run, spans, event[3] as string, event[5] as { message?: string; code?: string } | undefined)
        break
    }
  }

  /** The context of a step attempt's span (what the step calls is traced under it). */
  stepContext(run: TracedRun, token: number): OtelContext | undefined {
    const spans = this.runs.get(run)
    const span = spans?.steps.get(token)
    return span === undefined ? undefined : this.contextWith(spans!.context, span)
  }

  /** The trace and span ids of a step attempt's span, for its context. */
  stepIds(run: TracedRun, token: number): TraceIds | undefined {
    const span = this.runs.get(run)?.steps.get(token)
    return span === undefined ? undefined : this.ids(span)
  }

  /** The run stops here without an end (its workflows closed): its spans end, marked so; it resumes in a new span. */
  workflowAbandoned(run: TracedRun): void {
    const spans = this.runs.get(run)
    if (spans !== undefined) this.endRun(run, spans, 'abandoned', undefined)
  }

  private startRun(run: TracedRun, resumed: boolean): RunSpans {
    const parent = this.active()
    const span = this.tracer.startSpan(
      `workflow ${run.meta.definition}`,
      {
        kind: KIND.internal,
        attributes: {
          'orrery.workflow.run_id': run.id,
          'orrery.workflow.definition': run.meta.definition,
          'orrery.workflow.version': run.meta.version,
          'orrery.workflow.generation': run.generation,
          'orrery.workflow.resumed': resumed || undefined,
        },
      },
      parent,
    )
    const spans = { span, context: this.contextWith(parent, span), steps: new Map<number, OtelSpan>() }
    this.runs.set(run, spans)
    return spans
  }

  private endRun(run: TracedRun, spans: RunSpans, status: string, error: { message?: string; code?: string } | undefined): void {
    this.runs.delete(run)
    for (const step of spans.steps.values()) {
      step.setAttribute('orrery.workflow.outcome', status)
      step.end()
    }
    spans.span.setAttribute('orrery.workflow.status', status)
    // Anything but an end that went well (or a stop that is no end: a new generation, a close) is an error, compensated runs included.
    if (status === 'completed' || status === 'continued' || status === 'abandoned') spans.span.end()
    else this.endFailed(spans.span, error ?? { message: status })
  }

  /** Ends `span` as failed with a stored error (`{ message, code }`). */
  private endFailed(span: OtelSpan, error: { message?: string; code?: string } | undefined): void {
    const message = error?.message ?? 'failed'
    span.setStatus({ code: STATUS_ERROR, message })
    if (error?.code !== undefined) span.setAttribute('error.type', error.code)
    span.end()
  }
}

/** Refuses what is not the OpenTelemetry API module (INVALID_OPTION naming the missing part). */
function checkApi(api: unknown): void {
  const a = api as Partial<Record<'trace' | 'context' | 'propagation', Record<string, unknown>>> | null
  if (a === null || typeof a !== 'object') refuse('option', 'tracing.api', api, "must be the '@opentelemetry/api' module")
  for (const [part, call] of [
    ['trace', 'getTracer'],
    ['trace', 'setSpan'],
    ['context', 'with'],
    ['propagation', 'inject'],
  ] as const) {
    if (typeof a[part]?.[call] !== 'function') refuse('option', 'tracing.api', api, `must be the '@opentelemetry/api' module (it has no ${part}.${call})`)
  }
}

/** Loads `@opentelemetry/api`; its absence is UNSUPPORTED, naming the package. */
async function loadApi(): Promise<OtelApi> {
  // A specifier bundlers do not follow: a page passes the module as `tracing: { api }` instead.
  const specifier = '@opentelemetry/api'
  try {
    const module = (await import(/* @vite-ignore */ specifier)) as OtelApi & { default?: OtelApi }
    return module.trace === undefined && module.default !== undefined ? module.default : module
  } catch (cause) {
    throw new OrreryError(
      'UNSUPPORTED',
      'tracing needs the OpenTelemetry API: npm i @opentelemetry/api (or pass the module as tracing: { api }, as a page without a bundler must)',
      { cause, details: { package: '@opentelemetry/api' } },
    )
  }
}
