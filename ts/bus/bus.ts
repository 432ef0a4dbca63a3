/**
 * The bus facade: channels, publish, subscribe, consumer groups, request/response, direct
 * messages, events.
 *
 * Calls only change the core; deliveries are drained in one batch per microtask and fanned out
 * here, after the core call has returned. Subscriber code therefore never runs while the core is
 * mid-mutation, and a burst of publishes costs one drain. Deadlines (visibility timeouts, retry
 * delays, request timeouts) live in the core; the bus arms one timer for the next of them.
 */
import { Subject, type Observable, type Subscriber } from 'rxjs'

import {
  CHANNEL_STATS,
  EVENT_CONSUMER,
  EVENT_KINDS,
  fieldsOf,
  OVERFLOW,
  REPLIED,
  REPLY_CONSUMER,
  START_MODES,
  SUBSCRIBER_STATS,
  type BusCore,
  type ChannelStats,
  type SubscriberStats,
} from '../engines/backend.js'
import { callable, finite, flag, int, intOr, MAX_TIMER_MS, msOrNone, options as checkOptions, refuse, text, textOr } from '../check.js'
import { DEFAULTS, NO_DEADLINE } from '../engines/manifest.js'
import { encodePayload, jsonText } from '../codec.js'
import { failureOf, isEngineFailure, isOrreryError, OrreryError } from '../errors.js'
import { CODEC_CODES, CODECS, forEachRecord, FrameWriter, GeneratedIds, KIND_CODES, KINDS, PRIORITIES, PRIORITY_CODES, type CodecName } from '../frame.js'
import { Group, type GroupOptions } from './group.js'
import { INSPECT, inspectAs, type InspectFn, type InspectOptions } from '../inspect.js'
import type { BusLink, ErrorAnswer, RecordHandler, RunnerLink } from './link.js'
import { FrameMessage, type Message } from './message.js'
import {
  CHANNEL_KEYS,
  checkEnvelope,
  consumerOptions,
  inboxOf,
  PUBLISH_KEYS,
  REQUEST_KEYS,
  RESPOND_KEYS,
  RETENTION_KEYS,
  SUBSCRIBE_KEYS,
  type ChannelOptions,
  type PublishOptions,
  type RespondOptions,
  type SubscribeOptions,
} from './options.js'
import { validate, type StandardSchemaV1 } from '../schema.js'
import { Slab } from '../engines/adapter.js'
import { Stream } from '../stream.js'
import { DeadlineTimer } from '../timer.js'
import { Topic, type TopicOptions } from './topic.js'
import type { Started } from '../stream.js'
import type { BoundChannel, ChannelBinding, RefusalReport, ShutdownOutcome, Transports } from '../transports/link.js'
import type { OtelContext, Tracing } from '../observe/tracing.js'

/** One item of a batch publish. */
export interface BatchItem {
  channel: string
  payload: unknown
  options?: PublishOptions
}

const NO_OPTIONS: PublishOptions = Object.freeze({})

/** Where `nextSeq` sits in a channel's stats array. */
const NEXT_SEQ = CHANNEL_STATS.indexOf('nextSeq')

/** Flushes are scheduled as reactions on this settled promise (see `scheduleFlush`). */
const RESOLVED = Promise.resolve()

/** Drain rounds one flush may run before it yields to the event loop. */
const MAX_FLUSH_ROUNDS = 64

/** What a publish did: how many messages were appended, and their ids (made on first read). */
export class Published {
  private strings: string[] | undefined

  /** @internal */
  static create(raw: ReadonlyArray<string | number>, published: number, prefix: string): Published {
    return new Published(raw, published, prefix)
  }

  // Private, with `create` (internal) to make one: the published types then offer no `new`.
  private constructor(
    private readonly raw: ReadonlyArray<string | number>,
    readonly published: number,
    private readonly prefix: string,
  ) {}

  /** The messages' ids, in batch order: the producer's, or `<bus prefix>-<n>`. */
  get ids(): string[] {
    this.strings ??= this.raw.map((id) => (typeof id === 'string' ? id : `${this.prefix}-${id}`))
    return this.strings
  }

  toJSON(): { ids: string[]; published: number } {
    return { ids: this.ids, published: this.published }
  }

  [INSPECT](depth: number, options: InspectOptions, inspect?: InspectFn): string | object {
    return inspectAs('Published', this.toJSON(), depth, options, inspect)
  }
}

/** What `publish` resolves to; the id string is made only when read. */
export class PublishResult {
  /** @internal */
  static create(batch: Published): PublishResult {
    return new PublishResult(batch)
  }

  private constructor(private readonly batch: Published) {}

  /** The message's id: the producer's, or `<bus prefix>-<n>`. */
  get id(): string {
    return this.batch.ids[0]!
  }
  /** False when the channel's dedup window dropped it as a duplicate. */
  get published(): boolean {
    return this.batch.published === 1
  }

  toJSON(): { id: string; published: boolean } {
    return { id: this.id, published: this.published }
  }

  [INSPECT](depth: number, options: InspectOptions, inspect?: InspectFn): string | object {
    return inspectAs('PublishResult', this.toJSON(), depth, options, inspect)
  }
}

/** Something the bus reports about itself. */
export type BusEvent =
  | { type: 'slow-consumer'; consumer: number; channel: string | undefined; buffered: number }
  | { type: 'dropped'; consumer: number; channel: string | undefined; count: number }
  | { type: 'schema-invalid'; channel: string; seq: number; error: OrreryError }
  | { type: 'handler-error'; channel: string; seq: number; error: unknown }
  /**
   * A subscriber's callback threw (or its stream failed and it gave no error callback). Reported
   * here instead of rethrown, which would end the process; delivery to it and to others goes on.
   */
  | { type: 'subscriber-error'; channel: string; group?: string; error: unknown }
  /**
   * The engine failed while the bus worked on its own (a timer, a scheduled delivery): a core
   * panic, or a wasm instance poisoned by one. Reported once; the bus then arms no more timers
   * and delivers nothing more, and `close()` still releases it.
   */
  | { type: 'engine-failed'; error: OrreryError }
  /**
   * A transport failed where no caller waits (a broker read, an ack's write): reported here; the
   * driver reconnects and reads again on its own. `error` is an OrreryError: the driver's
   * (TRANSPORT_UNAVAILABLE, MESSAGE_TOO_LARGE, ...), a broker client's raw error wrapped as
   * TRANSPORT_UNAVAILABLE (its `cause`), or INTERNAL for a bug (a TypeError, a ReferenceError).
   */
  | { type: 'transport-error'; transport: string; error: OrreryError }
  /**
   * A transport with `signing` refused messages read from its broker: `signature` (unsigned, an
   * unknown key, or content that does not match) or `replay` (written again). Nothing of them
   * reached a subscriber, group member or requester. Reported at most once every 5 s per
   * transport and reason: the first at once, those that follow within the 5 s together when they
   * end, `count` saying how many since the last report (`stats(channel)` counts each one).
   */
  | ({ type: 'message-refused' } & RefusalReport)
  /**
   * A transport's server is reachable again after an outage, which began with a `transport-error`
   * (TRANSPORT_UNAVAILABLE, `details.outage` true); `downMs`: how long it lasted. One of each per
   * outage, however often the client tried meanwhile.
   */
  | { type: 'transport-restored'; transport: string; downMs: number }

/** Orders names by code unit, as `Array.prototype.sort` does by default. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** What a request handler may return: a payload, or a payload with reply options. */
export type Reply<R> = R | Promise<R>

/** A publish or request waiting for room: `attempt` is true once it settled, false while a consumer is still full. */
interface Waiter {
  readonly channels: readonly string[]
  readonly attempt: () => boolean
}

let idCounter = 0
const instancePrefix = Math.floor(Math.random() * 0x7fffffff).toString(36)

const DATA_KIND = KIND_CODES.get('data')!
const QUERY_KIND = KIND_CODES.get('query')!
const RESPONSE_KIND = KIND_CODES.get('response')!
const ERROR_KIND = KIND_CODES.get('error')!
const RAW_CODEC = CODEC_CODES.get('raw')!
const JSON_CODEC = CODEC_CODES.get('json')!
const NORMAL_PRIORITY = PRIORITY_CODES.get('normal')!

/** The code of an option value (looked up in a Map, so `__proto__` finds nothing), or INVALID_OPTION naming the allowed values. */
function code(codes: Map<string, number>, value: unknown, allowed: readonly string[], name: string): number {
  const found = typeof value === 'string' ? codes.get(value) : undefined
  if (found === undefined) refuse('option', name, value, `must be one of ${allowed.join(', ')}`)
  return found
}

/** A request's timeout: > 0 and at most what a timer can wait (2^31 - 1 ms), or `Infinity` for none. */
function requestTimeout(value: unknown): number {
  if (value === undefined) return 5_000
  if (value === Infinity) return NO_DEADLINE
  if (typeof value !== 'number' || !(value > 0) || value > MAX_TIMER_MS) {
    refuse('option', 'timeout', value, `must be a number of ms > 0 and <= ${MAX_TIMER_MS}, or Infinity for none`)
  }
  return value
}

/** A batch is an array of `{ channel, payload, options? }` objects; each item's options are checked when it is encoded. */
function checkBatch(items: unknown): void {
  const list = items as ReadonlyArray<unknown>
  if (!Array.isArray(list)) refuse('argument', 'items', items, 'must be an array of { channel, payload, options? }')
  for (let i = 0; i < list.length; i++) {
    const item = list[i] as BatchItem | null
    if (item === null || typeof item !== 'object' || Array.isArray(item))
      refuse('argument', `items[${i}]`, item, 'must be an object { channel, payload, options? }')
    if (typeof item.channel !== 'string') refuse('argument', `items[${i}].channel`, item.channel, 'must be a string')
  }
}

/** @internal The bus as the agent runner sees it: its inbox group, and the link calls it needs. */
export type RunnerBus = Pick<Bus, 'group'> & RunnerLink & { readonly transports: Transports | undefined }

/** Each bus's runner link, kept off the class so it is no part of the public surface. */
const runnerLinks = new WeakMap<Bus, RunnerBus>()

/**
 * @internal What the agent runner needs of `bus` beyond its public calls. Not exported from the
 * package entry points.
 */
export function runnerLink(bus: Bus): RunnerBus {
  return runnerLinks.get(bus)!
}

/** @internal What an open request settles: its reply, or its failure (its timeout, a refusal, the bus closing). */
export interface RequestWaiter {
  /** The channel the request went to. */
  readonly channel: string
  resolve(reply: Message): void
  reject(error: unknown): void
}

/** A message bus over one engine's core (one endpoint of it, when shared across threads). */
export class Bus {
  /** Events: slow consumers, dropped messages, invalid payloads, failing handlers. */
  readonly events: Observable<BusEvent>
  private readonly eventSubject = new Subject<BusEvent>()
  private readonly handlers = new Map<number, RecordHandler>()
  private readonly consumerChannels = new Map<number, string>()
  private readonly requests = new Map<number, RequestWaiter>()
  private readonly writer = new FrameWriter()
  /** The envelope every reply is encoded with (see `sendReply`). */
  private readonly replyEnvelope: { correlationId: string | undefined; codec: CodecName | undefined } = { correlationId: undefined, codec: undefined }
  /** Where replies settled without a drain keep their frames (as drained records are kept, see Slab). */
  private readonly replySlab = new Slab()
  private readonly sharedFeeds = new Map<string, { id: number; sinks: Map<Subscriber<Message>, number> }>()
  /** Interned channel ids: a name crosses the boundary once, not once per message. */
  private readonly channelIds = new Map<string, number>()
  private lastChannel: string | undefined
  private lastChannelId = 0
  private lastConsumer = -1
  private lastHandler: RecordHandler | undefined
  private readonly idPrefix = `${instancePrefix}${(idCounter++).toString(36)}`
  private readonly generated = new GeneratedIds(this.idPrefix)
  /**
   * Publishes and requests waiting for room in a full `block` consumer, oldest first, and how
   * many of them touch each channel. Only those channels' order needs the wait: a publish to any
   * other channel goes through at once, one to a waiting channel queues behind the waiters.
   */
  private waiting: Waiter[] = []
  private readonly waitingChannels = new Map<string, number>()
  private retrying = false
  private flushQueued = false
  private flushing = false
  private wokenByThread = false
  /** Every open stream subscriber, completed on close. */
  private readonly liveSinks = new Set<Subscriber<never>>()
  private dirty = false
  private deadlineAdded = false
  /** The last open request settled during a flush: its end asks the core whether the timer may let go. */
  private releaseDue = false
  /** One timer for the core's next deadline; a deadline is pending work, so it keeps Node running. */
  private readonly deadlines = new DeadlineTimer(
    () => this.now(),
    () => {
      this.deadlineAdded = true // re-arm for whatever comes next
      if (!this.closed) this.flushUnattended()
    },
    true,
  )
  private closed = false
  /** What this bus's groups and topics may call besides its public methods (see link.ts). */
  private readonly link: BusLink
  /** Set once the engine failed under a timer or a scheduled flush (see `flushUnattended`). */
  private engineFailed = false

  /** @internal */
  static create(core: BusCore, now: () => number, remote?: Transports, tracing?: Tracing): Bus {
    return new Bus(core, now, remote, tracing)
  }

  private constructor(
    readonly core: BusCore,
    readonly now: () => number,
    /** The transports channels may be bound to: undefined for an Orrery made without them, whose paths then skip every check. */
    private readonly remote: Transports | undefined = undefined,
    /** Spans and trace context for what goes through this bus (`Orrery.create({ tracing })`): undefined without, and then the paths test only this. */
    private readonly tracing: Tracing | undefined = undefined,
  ) {
    this.events = this.eventSubject.asObservable()
    if (tracing !== undefined && remote !== undefined) tracing.system = (channel) => remote.binding(this.channelId(channel))?.kind ?? 'orrery'
    remote?.attach({
      core,
      now,
      scheduleFlush: () => this.scheduleFlush(),
      noteDeadline: () => this.noteDeadline(),
      failed: (transport, error) => this.transportFailed(transport, error),
      requestFailed: (token, error) => this.requestFailed(token, error),
      requestChannel: (token) => this.requests.get(token)?.channel,
      refused: (report) => this.messagesRefused(report),
      restored: (transport, downMs) => this.transportRestored(transport, downMs),
    })
    // Built once per bus, not per call: the record and ack paths go through it.
    this.link = {
      core,
      now,
      assertOpen: () => this.assertOpen(),
      channelId: (name) => this.channelId(name),
      addConsumer: (id, channel, handler) => this.addConsumer(id, channel, handler),
      forgetConsumer: (id) => this.forgetConsumer(id),
      removeConsumer: (id) => this.removeConsumer(id),
      setConsumerPaused: (id, paused) => this.setConsumerPaused(id, paused),
      track: (sink) => this.track(sink),
      subscriberFailed: (channel, error, group) => this.subscriberFailed(channel, error, group),
      validated: (schema, message, done) => this.validated(schema, message, done),
      roomMade: () => this.roomMade(),
      scheduleFlush: () => this.scheduleFlush(),
      noteDeadline: () => this.noteDeadline(),
      tracing,
    }
    runnerLinks.set(this, {
      group: (channel, name, options) => this.group(channel, name, options),
      answer: (message, result, error) => this.answer(message, result, error),
      unanswered: (channel, why) =>
        this.failRequestsTo((c) =>
          c === channel ? this.handlerError(channel, { message: why, code: 'CLOSED', permanent: false, abandoned: true }) : undefined,
        ),
      setConsumerPaused: (id, paused) => this.setConsumerPaused(id, paused),
      abandonMember: (id) => this.removeConsumer(id, true),
      // A shared mesh binds its channels at run time.
      transports: remote,
      tracing,
    })
  }

  /** The id of a channel, creating it on first use; with options, (re)configures it. */
  channel(name: string, options?: ChannelOptions): number {
    this.assertOpen()
    if (options === undefined) return this.channelId(name)
    // Counts and sizes are whole numbers (the core truncates: maxCount 0.5 became 0, unlimited);
    // an age may be Infinity (keep forever, the default).
    const o = checkOptions(options, 'options', 'argument', CHANNEL_KEYS)
    const r = checkOptions(o.retention, 'retention', 'option', RETENTION_KEYS)
    const maxCount = intOr(r.maxCount, DEFAULTS.retentionMaxCount, 'retention.maxCount')
    const maxBytes = intOr(r.maxBytes, DEFAULTS.retentionMaxBytes, 'retention.maxBytes')
    const maxAge = r.maxAgeMs === undefined || r.maxAgeMs === Infinity ? Infinity : finite(r.maxAgeMs, 'retention.maxAgeMs', { min: 0 })
    const dedup = o.dedupWindowMs === undefined ? 0 : msOrNone(o.dedupWindowMs, 'dedupWindowMs', { min: 0 })
    const deadLetterExpired = o.deadLetterExpired === undefined ? false : flag(o.deadLetterExpired, 'deadLetterExpired')
    const id = this.channelId(name)
    const bound = this.remote?.find(id)
    if (bound !== undefined && r.maxBytes !== undefined) this.remote!.require(bound, 'retention.maxBytes')
    if (bound !== undefined && dedup > 0) this.remote!.require(bound, 'dedup')
    this.core.configure(id, maxCount, maxBytes, maxAge, dedup, deadLetterExpired, this.now())
    if (bound !== undefined) this.remote!.configure(bound, r, maxCount, maxAge)
    return id
  }

  /**
   * The transport `channel` is bound to (`Orrery.create`'s `bindings`), with its kind and what
   * its backend can do; undefined for a channel of this process only.
   */
  binding(channel: string): ChannelBinding | undefined {
    this.assertOpen()
    if (this.remote === undefined) return undefined
    text(channel, 'channel')
    return this.remote.binding(this.channelId(channel))
  }

  /**
   * Resolves once this process's subscribers, responders and groups on `channel` are attached to
   * its transport's broker: from then on, what another process sends there reaches them. It
   * matters most for requests that are not stored (a nats transport's `requests: 'core'`), which
   * reach only who is attached when they are sent. At once for a channel of this process only;
   * rejects with the transport's error if one of them could not attach.
   */
  async attached(channel: string): Promise<void> {
    this.assertOpen()
    text(channel, 'channel')
    const bound = this.boundChannel(channel)
    if (bound !== undefined) await this.remote!.attached(bound)
  }

  /** The bound channel behind `channel`, if it is bound to a transport (a cold path: only on an Orrery with transports). */
  private boundChannel(channel: string): BoundChannel | undefined {
    return this.remote === undefined ? undefined : this.remote.find(this.channelId(channel))
  }

  /** The id of a channel, interned in the core on first use and cached here. */
  private channelId(name: string): number {
    // Batches mostly repeat one channel: a one-entry cache saves a Map lookup per message.
    if (name === this.lastChannel) return this.lastChannelId
    let id = this.channelIds.get(name)
    if (id === undefined) {
      id = this.core.channel(name)
      // Bound, if a binding matches, before anything else touches the channel.
      if (this.remote !== undefined) this.remote.intern(name, id)
      this.channelIds.set(name, id)
    }
    this.lastChannel = name
    this.lastChannelId = id
    return id
  }

  /**
   * Publishes one message. Resolves once the core has appended it (`published: false` when the
   * dedup window dropped it as a duplicate). A full consumer with the `block` policy makes this
   * wait; with `reject` it fails with `BACKPRESSURE`. A refused publish publishes nothing.
   */
  async publish(channel: string, payload: unknown, options: PublishOptions = NO_OPTIONS): Promise<PublishResult> {
    return PublishResult.create(await this.publishBatch([{ channel, payload, options }]))
  }

  /** Publishes a batch all or nothing, in one crossing into the core. */
  publishBatch(items: ReadonlyArray<BatchItem>): Promise<Published> {
    try {
      checkBatch(items)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.tracing !== undefined) return this.tracing.publish(items, (traced) => this.publishChecked(traced as BatchItem[]))
    return this.publishChecked(items)
  }

  /** Publishes a batch whose items were checked. */
  private publishChecked(items: ReadonlyArray<BatchItem>): Promise<Published> {
    // The common case settles at once; only a full blocking consumer takes the waiting path, and
    // while publishes to a channel wait, later ones to that channel queue behind them to keep
    // its order (a batch queues if any of its channels waits).
    if (this.waitingChannels.size > 0 && this.touchesWaiting(items)) return this.publishWhenRoom(items)
    try {
      return Promise.resolve(this.publishNow(items))
    } catch (err) {
      if (isOrreryError(err, 'BACKPRESSURE') && err.details['wait']) return this.publishWhenRoom(items)
      return Promise.reject(err)
    }
  }

  private touchesWaiting(items: ReadonlyArray<BatchItem>): boolean {
    for (let i = 0; i < items.length; i++) if (this.waitingChannels.has(items[i]!.channel)) return true
    return false
  }

  private publishWhenRoom(items: ReadonlyArray<BatchItem>): Promise<Published> {
    const channels = [...new Set(items.map((item) => item.channel))]
    return new Promise((resolve, reject) => {
      this.wait(channels, () => {
        try {
          resolve(this.publishNow(items))
        } catch (err) {
          if (isOrreryError(err, 'BACKPRESSURE') && err.details['wait']) return false
          reject(err)
        }
        return true
      })
    })
  }

  /** Queues `attempt` (true once it settled, false while a consumer is still full) until room is made. */
  private wait(channels: readonly string[], attempt: () => boolean): void {
    this.waiting.push({ channels, attempt })
    for (const channel of channels) this.waitingChannels.set(channel, (this.waitingChannels.get(channel) ?? 0) + 1)
    // A drain is what makes room: make sure one comes.
    this.scheduleFlush()
  }

  /**
   * Encodes and appends a batch; throws BACKPRESSURE (wait) when a blocking consumer is full. A
   * batch touching a bound channel settles once its transport wrote it.
   */
  private publishNow(items: ReadonlyArray<BatchItem>, replyToken = 0): Published | Promise<Published> {
    this.assertOpen()
    const now = this.now()
    const w = this.writer
    w.reset()
    const raw: Array<string | number> = new Array(items.length)
    const remote = this.remote
    let durable = false
    for (let i = 0; i < items.length; i++) {
      const { channel, payload, options = NO_OPTIONS } = items[i]!
      const id = this.channelId(channel)
      const start = w.size
      raw[i] = this.encode(w, id, payload, options, now, replyToken)
      if (remote === undefined) continue
      const to = this.boundPublish(id, options)
      // A frame its broker would refuse whatever happens refuses the whole batch: nothing is published anywhere.
      if (to !== undefined) remote.refuse(to, w, start)
      else if (remote.isDurable(id)) durable = true
    }
    const published = this.core.publish(w.bytes(), now)
    this.scheduleFlush()
    if (remote !== undefined) {
      // The bound channels' frames left the core as egress: the publish is done once written.
      const writing = remote.afterPublish(durable)
      if (writing !== undefined) return writing.then((duplicates) => Published.create(raw, published - duplicates, this.idPrefix))
    }
    return Published.create(raw, published, this.idPrefix)
  }

  /**
   * The channel's binding, if it has one; refuses, before anything crosses, what its backend
   * cannot carry (the options were checked by `encode`).
   */
  private boundPublish(id: number, options: PublishOptions): BoundChannel | undefined {
    const bound = this.remote!.find(id)
    if (bound !== undefined && options.priority !== undefined && options.priority !== 'normal') this.remote!.require(bound, 'priority')
    return bound
  }

  /** Encodes one message into `w`; its options are checked here unless the caller already did (`checked`: a request checks them once at its entry). */
  private encode(
    w: FrameWriter,
    channelId: number,
    payload: unknown,
    options: PublishOptions,
    now: number,
    replyToken: number,
    checked = false,
    defaultKind = DATA_KIND,
  ): string | number {
    if (options !== NO_OPTIONS && !checked) checkEnvelope(options, 'options', 'argument', PUBLISH_KEYS)
    const kind = options.kind === undefined ? defaultKind : code(KIND_CODES, options.kind, KINDS, 'kind')
    const priority = options.priority === undefined ? NORMAL_PRIORITY : code(PRIORITY_CODES, options.priority, PRIORITIES, 'priority')
    const ttl = options.ttl
    const codecCode = options.codec === undefined ? (payload instanceof Uint8Array ? RAW_CODEC : JSON_CODEC) : code(CODEC_CODES, options.codec, CODECS, 'codec')
    // JSON goes into the frame as text, encoded in place (no array made for its bytes).
    const bytes = codecCode === JSON_CODEC ? jsonText(payload) : encodePayload(CODECS[codecCode]!, payload)
    const expiresAt = ttl === undefined ? 0 : now + ttl
    if (options.id !== undefined) {
      w.pushCoded(channelId, kind, priority, codecCode, 0, expiresAt, options.id, options, bytes, replyToken)
      return options.id
    }
    // A generated id costs ~40 ns as a string; written as bytes it is nearly free, and the
    // string is only made if the caller reads it.
    const generated = this.generated
    const n = generated.n
    w.pushCoded(channelId, kind, priority, codecCode, 0, expiresAt, generated, options, bytes, replyToken)
    generated.next()
    return n
  }

  /**
   * Retries the waiting publishes and requests, oldest first, after a drain, an ack or
   * a departure may have made room. One that still finds a consumer full keeps waiting, and so
   * does every later one sharing a channel with it, so each channel keeps its order.
   */
  private roomMade(): void {
    if (this.waiting.length === 0 || this.retrying) return
    this.retrying = true
    try {
      const queue = this.waiting
      this.waiting = []
      this.waitingChannels.clear()
      const blocked = new Set<string>()
      for (const waiter of queue) {
        // Attempts settle their own errors, so none throws out of this loop.
        if (waiter.channels.some((c) => blocked.has(c)) || !waiter.attempt()) {
          for (const c of waiter.channels) blocked.add(c)
          this.requeue(waiter)
        }
      }
    } finally {
      this.retrying = false
    }
  }

  private requeue(waiter: Waiter): void {
    this.waiting.push(waiter)
    for (const channel of waiter.channels) this.waitingChannels.set(channel, (this.waitingChannels.get(channel) ?? 0) + 1)
  }

  /**
   * Every message of `channel` from `from` on (default: only new ones): an rxjs Observable that
   * is also an AsyncIterable. Unsubscribing removes the subscription from the core.
   */
  subscribe<T = unknown>(channel: string, options: SubscribeOptions<T> = {}): Stream<Message<T>> {
    // Checked at the call: a refusal raised when the stream is subscribed goes to an error
    // callback most subscribers do not give, and rxjs then rethrows it, ending the process.
    this.assertOpen()
    options = checkOptions(options, 'options', 'argument', SUBSCRIBE_KEYS)
    const { mode, value, buffer, overflow } = consumerOptions(options)
    this.channelId(channel)
    const bound = this.boundChannel(channel)
    if (bound !== undefined) {
      if (mode === START_MODES.seq) this.remote!.require(bound, 'from.seq')
      if (overflow === OVERFLOW.reject) this.remote!.require(bound, 'overflow.reject')
    }
    const open = (sink: Subscriber<Message<T>>, exclusive: boolean): Started => {
      if (!exclusive && !options.schema && mode === START_MODES.latest) {
        const leave = this.joinShared(channel, buffer, overflow, sink as Subscriber<Message>)
        const untrack = this.track(sink)
        return {
          stop: () => {
            untrack()
            leave()
          },
          setPaused: () => {},
        }
      }
      const id = this.core.subscribe(this.channelId(channel), mode, value, buffer, overflow)
      const untrack = this.track(sink)
      const schema = options.schema
      const tracing = this.tracing
      this.addConsumer(id, channel, (seq, _attempt, frame) => {
        const message = new FrameMessage<T>(channel, seq, frame)
        if (!schema) return tracing === undefined ? sink.next(message) : tracing.deliver(message, undefined, sink, message)
        this.validated(schema, message, (ok) => {
          if (!ok) return
          if (tracing === undefined) sink.next(message)
          else tracing.deliver(message, undefined, sink, message)
        })
      })
      return {
        stop: () => {
          untrack()
          this.removeConsumer(id)
        },
        setPaused: (paused) => this.setConsumerPaused(id, paused),
      }
    }
    return new Stream<Message<T>>({
      unhandled: (error) => this.subscriberFailed(channel, error),
      start: (sink, exclusive) => {
        this.assertOpen()
        if (bound !== undefined) {
          // 'latest' on a bound channel starts where the broker's stream ended when this
          // subscribe reached it (publishes of this process made later are written after that).
          if (mode !== START_MODES.latest && bound.mirrored) return open(sink, exclusive)
          return this.afterMirror(bound, sink, mode === START_MODES.latest, () => open(sink, exclusive))
        }
        return open(sink, exclusive)
      },
    })
  }

  /**
   * Starts a subscriber of a bound channel once its mirror holds the broker's history (so
   * `earliest` sees it and `latest` starts after it). Stopped or paused meanwhile, it starts so.
   */
  private afterMirror(bound: BoundChannel, sink: Subscriber<never>, latest: boolean, open: () => Started): Started {
    let started: Started | undefined
    let stopped = false
    let paused = false
    // Until it starts, closing the bus completes it: a start that comes after the mirror stopped
    // (its marker answered as the bus closed) never comes.
    const untrack = this.track(sink)
    const start = (): void => {
      if (stopped || started !== undefined) return
      untrack()
      if (this.closed) return sink.complete()
      try {
        started = open()
        if (paused) started.setPaused(true)
      } catch (error) {
        sink.error(error)
      }
    }
    const remote = this.remote!
    const mirrored = remote.mirror(bound)
    // The subscriber fails with what the broker refused (its mirror, or, for `latest`, where its stream ends).
    const failed = (error: unknown): void => {
      untrack()
      cancel?.()
      // A mirror cut by this bus's own close is no subscriber's failure: the stream completes.
      if (this.closed) return sink.complete()
      if (stopped) return
      stopped = true
      const details = { transport: bound.transport.name, channel: bound.name }
      const what = `transport ${details.transport} could not start a subscriber of channel ${details.channel}`
      // A driver's own typed refusal keeps its code, and is said of this channel too.
      sink.error(
        isOrreryError(error)
          ? new OrreryError(error.code, `${what}: ${error.message}`, { cause: error, details: { ...error.details, ...details } })
          : failureOf(error, 'TRANSPORT_UNAVAILABLE', what, details),
      )
    }
    const cancel = latest ? remote.catchUp(bound, start, failed) : undefined
    mirrored.then(() => {
      if (!latest) start()
    }, failed)
    return {
      stop: () => {
        stopped = true
        untrack()
        cancel?.()
        started?.stop()
      },
      setPaused: (p) => {
        paused = p
        started?.setPaused(p)
      },
    }
  }

  /** A transport failed where no caller waits: reported on `events` (printed when nobody listens). */
  private transportFailed(transport: string, raw: unknown): void {
    if (this.closed) return
    const error = failureOf(raw, 'TRANSPORT_UNAVAILABLE', `transport ${transport} failed`, { transport })
    if (!this.eventSubject.observed) {
      console.error(`Orrery: transport ${transport} failed (listen on bus.events for 'transport-error' to handle it):`, error)
      return
    }
    this.eventSubject.next({ type: 'transport-error', transport, error })
  }

  /** A transport's server is back after an outage: reported on `events` (printed when nobody listens, as its start was). */
  private transportRestored(transport: string, downMs: number): void {
    if (this.closed) return
    if (!this.eventSubject.observed) {
      console.error(`Orrery: transport ${transport} reached its server again after ${downMs} ms`)
      return
    }
    this.eventSubject.next({ type: 'transport-restored', transport, downMs })
  }

  /** Messages a transport's signing refused: reported on `events` (printed when nobody listens: the link reports seldom). */
  private messagesRefused(report: RefusalReport): void {
    if (this.closed) return
    if (!this.eventSubject.observed) {
      console.warn(
        `Orrery: transport ${report.transport} refused ${report.count} message(s) (${report.reason}${report.channel === undefined ? '' : ` on channel ${report.channel}`}): ${report.detail} (listen on bus.events for 'message-refused')`,
      )
      return
    }
    this.eventSubject.next({ type: 'message-refused', ...report })
  }

  /** A subscriber's callback threw: reported, never rethrown (rxjs would rethrow it from a timer, ending the process). */
  private subscriberFailed(channel: string, error: unknown, group?: string): void {
    // With nobody listening on `events`, the error would vanish where it used to end the
    // process: print it instead (once per error; delivery goes on either way).
    if (!this.eventSubject.observed) {
      console.error(
        `Orrery: a subscriber of ${group === undefined ? '' : `group ${group} on `}channel ${channel} threw (listen on bus.events for 'subscriber-error' to handle it):`,
        error,
      )
      return
    }
    this.eventSubject.next(group === undefined ? { type: 'subscriber-error', channel, error } : { type: 'subscriber-error', channel, group, error })
  }

  /** Remembers an open stream subscriber (completed on close); returns the forget function. */
  private track(sink: Subscriber<never>): () => void {
    this.liveSinks.add(sink)
    return () => this.liveSinks.delete(sink)
  }

  /** Pauses or resumes one consumer (an iterator's backpressure). */
  private setConsumerPaused(id: number, paused: boolean): void {
    if (!this.handlers.has(id)) return
    this.core.setPaused(id, paused)
    if (!paused) this.scheduleFlush()
  }

  /**
   * Plain live subscribers of one channel on this thread (same buffer and overflow policy) share
   * one core subscription, and every message object is fanned out to them here: fan-out to N
   * subscribers then costs one delivery across the boundary instead of N. A subscriber that joins
   * later takes only messages published after it joined, even those still undelivered. Payload
   * objects are shared between these subscribers, as with an EventEmitter: do not mutate them.
   */
  private joinShared(channel: string, buffer: number, overflow: number, sink: Subscriber<Message>): () => void {
    const key = `${channel}\u0000${buffer}\u0000${overflow}`
    let feed = this.sharedFeeds.get(key)
    if (feed) {
      feed.sinks.set(sink, this.core.stats(this.channelId(channel))[NEXT_SEQ]!)
    } else {
      const sinks = new Map<Subscriber<Message>, number>([[sink, 0]])
      const id = this.core.subscribe(this.channelId(channel), START_MODES.latest, 0, buffer, overflow)
      feed = { id, sinks }
      this.sharedFeeds.set(key, feed)
      const tracing = this.tracing
      this.addConsumer(id, channel, (seq, _attempt, frame) => {
        const message = new FrameMessage(channel, seq, frame)
        for (const [each, from] of sinks) {
          if (seq < from) continue
          if (tracing === undefined) each.next(message)
          else tracing.deliver(message, undefined, each, message)
        }
      })
    }
    const joined = feed
    return () => {
      joined.sinks.delete(sink)
      if (joined.sinks.size === 0 && this.sharedFeeds.get(key) === joined) {
        this.sharedFeeds.delete(key)
        this.removeConsumer(joined.id)
      }
    }
  }

  /** Validates a received payload; invalid ones are reported and `done(false)`. */
  private validated<T>(schema: StandardSchemaV1, message: FrameMessage<T>, done: (ok: boolean, error?: OrreryError) => void): void {
    const fail = (error: unknown) => {
      const e = isOrreryError(error) ? error : new OrreryError('SCHEMA_INVALID', String(error), { cause: error })
      this.eventSubject.next({ type: 'schema-invalid', channel: message.channel, seq: message.seq, error: e })
      done(false, e)
    }
    try {
      const result = validate(schema, message.payload, `message ${message.seq} on ${message.channel}`, message.schema)
      if (result instanceof Promise) {
        result.then((value) => {
          message.setPayload(value as T)
          done(true)
        }, fail)
      } else {
        message.setPayload(result as T)
        done(true)
      }
    } catch (error) {
      fail(error)
    }
  }

  /** Routes a consumer's records to `handler`. */
  private addConsumer(id: number, channel: string, handler: RecordHandler): void {
    this.lastConsumer = -1
    this.handlers.set(id, handler)
    this.consumerChannels.set(id, channel)
    if (this.core.hasPending()) this.scheduleFlush()
  }

  /** Stops routing a consumer's records (the core already removed it). */
  private forgetConsumer(id: number): void {
    this.lastConsumer = -1
    this.handlers.delete(id)
    this.consumerChannels.delete(id)
  }

  /**
   * Stops routing a consumer's records and removes it from the core; `failed`: a member leaves
   * because its agent crashed (see `BusCore.abandon`). The stream's teardown after that finds
   * it gone already.
   */
  private removeConsumer(id: number, failed = false): void {
    this.lastConsumer = -1
    if (!this.handlers.delete(id) || this.closed) return
    this.consumerChannels.delete(id)
    try {
      if (failed) this.core.abandon(id, this.now())
      else this.core.unsubscribe(id)
    } catch (err) {
      // A poisoned engine has nothing left to unsubscribe from; anything else is a bug.
      if (!isOrreryError(err, 'ENGINE_POISONED')) throw err
    }
    // A member that left hands its unacked work to the others: deliver it.
    this.scheduleFlush()
    this.roomMade()
  }

  /** A consumer group on `channel` (created on first use with these options). */
  group<T = unknown>(channel: string, name: string, options: GroupOptions<T> = {}): Group<T> {
    this.assertOpen()
    const group = Group.create<T>(this, this.link, channel, name, options, this.remote)
    if (!this.groupHandles.has(group.id)) this.groupHandles.set(group.id, group as Group)
    return group
  }

  /** The first handle made of each group (by core id), for `groups()`. */
  private readonly groupHandles = new Map<number, Group>()

  /**
   * The channels this bus knows, by name, in name order: every channel it published to, read
   * from, configured or made a group on, and the dead-letter channel (`<channel>.dead-letter`)
   * of each that dead-lettered a message.
   */
  channels(): string[] {
    this.assertOpen()
    const names = new Set(this.channelIds.keys())
    for (const name of [...names]) {
      const dead = `${name}.dead-letter`
      if (!names.has(dead) && this.stats(name).deadLettered > 0) names.add(dead)
    }
    return [...names].sort()
  }

  /** The consumer groups made on this bus and not deleted, one handle each, by channel then name. */
  groups(): Group[] {
    this.assertOpen()
    const live: Group[] = []
    for (const [id, group] of this.groupHandles) {
      try {
        group.stats()
        live.push(group)
      } catch (error) {
        // Deleted (through any handle): the core refuses its id from then on, and ids are never reused.
        if (!isOrreryError(error, 'UNKNOWN_GROUP')) throw error
        this.groupHandles.delete(id)
      }
    }
    return live.sort((a, b) => (a.channel === b.channel ? compare(a.name, b.name) : compare(a.channel, b.channel)))
  }

  /** A typed channel: `options.schema` validates payloads at publish and at receive, and types the handlers. */
  topic<S extends StandardSchemaV1>(channel: string, options: TopicOptions<S>): Topic<S> {
    this.assertOpen()
    return Topic.create(this, this.link, channel, options)
  }

  /** Sends a direct message to an agent's inbox (the channel `inbox.<agent>`). */
  async send(agent: string, payload: unknown, options: PublishOptions = {}): Promise<{ readonly id: string; readonly published: boolean }> {
    text(agent, 'agent', { nonEmpty: true })
    return this.publish(inboxOf(agent), payload, { ...checkEnvelope(options, 'options', 'argument', PUBLISH_KEYS), recipient: agent })
  }

  /** An agent's inbox: its direct messages. */
  inbox<T = unknown>(agent: string, options: SubscribeOptions = {}): Stream<Message<T>> {
    this.assertOpen()
    text(agent, 'agent', { nonEmpty: true })
    return this.subscribe<T>(inboxOf(agent), options as SubscribeOptions<T>)
  }

  /**
   * Sends a request and resolves with the reply message, whose `payload` is the responder's
   * result typed as `R` (not checked at run time):
   * `(await bus.request<number>('math.add', { a: 2, b: 3 })).payload`. The message also carries
   * the reply's sender, headers and `correlationId`. No consumer on the channel: `NO_RESPONDER`
   * at once; no reply within `timeout` ms (default 5,000; `Infinity` waits for ever): `TIMEOUT`; a handler that throws:
   * `HANDLER_ERROR` with its message.
   */
  request<R = unknown>(channel: string, payload: unknown, options: PublishOptions & { timeout?: number } = NO_OPTIONS): Promise<Message<R>> {
    // Not `async`: every async wrapper adds promise hops to a round trip measured in microseconds.
    let timeout: number
    try {
      if (options !== NO_OPTIONS) checkEnvelope(options, 'options', 'argument', REQUEST_KEYS)
      timeout = requestTimeout(options.timeout)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.timing === undefined) return this.requestChecked<R>(channel, payload, options, timeout)
    const timing = this.timing
    const started = performance.now()
    return this.requestChecked<R>(channel, payload, options, timeout).then(
      (reply) => {
        timing(channel, started, undefined)
        return reply
      },
      (error: unknown) => {
        timing(channel, started, error)
        throw error
      },
    )
  }

  /** @internal Set while the Orrery's metrics time requests: the channel, when it began (`performance.now()`), its error. */
  timing: ((channel: string, started: number, error: unknown) => void) | undefined

  private requestChecked<R>(channel: string, payload: unknown, options: PublishOptions, timeout: number): Promise<Message<R>> {
    if (this.tracing !== undefined)
      return this.tracing.request(channel, options, undefined, (traced) => this.requestUntraced<R>(channel, payload, traced as PublishOptions, timeout))
    return this.requestUntraced<R>(channel, payload, options, timeout)
  }

  private requestUntraced<R>(channel: string, payload: unknown, options: PublishOptions, timeout: number): Promise<Message<R>> {
    return new Promise<Message<R>>((resolve, reject) =>
      this.open(channel, payload, options, timeout, { resolve: resolve as (m: Message) => void, reject, channel }),
    )
  }

  /**
   * @internal A request whose options (the envelope and `timeout`) its caller checked already
   * (routing checks a call's options once, not again for each attempt), settled into `waiter`:
   * a routed call is one waiter across its attempts, not a promise and a reaction per attempt.
   * The waiter's `channel` must be `channel`.
   */
  requestInto(channel: string, payload: unknown, options: PublishOptions, timeout: number, waiter: RequestWaiter, parent?: OtelContext): void {
    if (this.tracing === undefined) return this.open(channel, payload, options, timeout, waiter)
    this.tracing
      .request(channel, options, parent, (traced) => this.requestUntraced(channel, payload, traced as PublishOptions, timeout))
      .then(
        (reply) => waiter.resolve(reply),
        (error: unknown) => waiter.reject(error),
      )
  }

  /** Sends a request and files `waiter` for its reply, its timeout or its failure: a refusal is handed to it too, never thrown. */
  private open(channel: string, payload: unknown, options: PublishOptions, timeout: number, waiter: RequestWaiter): void {
    if (this.remote !== undefined) {
      try {
        this.assertOpen()
        const bound = this.boundChannel(channel)
        if (bound !== undefined) this.remote.require(bound, 'request')
      } catch (err) {
        return waiter.reject(err)
      }
    }
    // Behind a publish or request still waiting on this channel: queue, to keep its order.
    if (this.waitingChannels.size > 0 && this.waitingChannels.has(channel)) return this.openWhenRoom(channel, payload, options, timeout, waiter)
    let token: number
    try {
      token = this.sendRequest(channel, payload, options, timeout)
    } catch (err) {
      // A full consumer whose policy is `block`: wait for room like a publish does.
      if (isOrreryError(err, 'BACKPRESSURE') && err.details['wait']) return this.openWhenRoom(channel, payload, options, timeout, waiter)
      return waiter.reject(err)
    }
    this.scheduleFlush()
    this.requests.set(token, waiter)
  }

  private sendRequest(channel: string, payload: unknown, options: PublishOptions, timeout: number): number {
    this.assertOpen()
    const now = this.now()
    const w = this.writer
    w.reset()
    // The kind is passed, not spread into a copy of the options: the copy (a new shape per call
    // site) made every later read of it megamorphic, about 4 µs a round trip in a loop.
    const id = this.channelId(channel)
    this.encode(w, id, payload, options, now, 0, true, QUERY_KIND)
    const bound = this.remote === undefined ? undefined : this.boundPublish(id, options)
    if (bound !== undefined) this.remote!.refuse(bound, w, 0)
    const token = this.core.request(w.bytes(), timeout, now)
    // The core's next deadline is at or before this one; arming for it directly spares asking
    // the core (a crossing) after every request. An earlier timer stays as it is.
    this.deadlines.arm(now + timeout)
    return token
  }

  /** Waits for room, then sends (waiting again if a consumer is still full); the timeout starts when it is sent. */
  private openWhenRoom(channel: string, payload: unknown, options: PublishOptions, timeout: number, waiter: RequestWaiter): void {
    this.wait([channel], () => {
      let token: number
      try {
        token = this.sendRequest(channel, payload, options, timeout)
      } catch (err) {
        if (isOrreryError(err, 'BACKPRESSURE') && err.details['wait']) return false
        waiter.reject(err)
        return true
      }
      this.scheduleFlush()
      this.requests.set(token, waiter)
      return true
    })
  }

  /**
   * Answers requests on `channel` with `handler`'s result (as a broadcast subscriber, or as a
   * member of group `group` so replicas share the load). Returns the unsubscribe function. `T`
   * types the request's payload and `R` the result (neither is checked at run time):
   * `bus.respond<{ a: number; b: number }, number>('math.add', (req) => req.payload.a + req.payload.b)`.
   */
  respond<T = unknown, R = unknown>(channel: string, handler: (request: Message<T>) => Reply<R>, options: RespondOptions = {}): () => void {
    // Everything is checked here, at the call: a refusal raised later, inside the subscription,
    // had no error callback to go to and ended the process.
    this.assertOpen()
    callable(handler, 'handler')
    const checked = checkOptions(options, 'options', 'argument', RESPOND_KEYS)
    const groupName = textOr(checked.group, 'group', { nonEmpty: true })
    if (checked.codec !== undefined) code(CODEC_CODES, checked.codec, CODECS, 'codec')
    // The group's own options are checked when `group` below makes it, before anything joins.
    const { visibilityTimeout, from } = checked
    if (groupName === undefined && (visibilityTimeout !== undefined || from !== undefined))
      refuse(
        'option',
        visibilityTimeout === undefined ? 'from' : 'visibilityTimeout',
        visibilityTimeout ?? from,
        'is an option of a group responder: give `group` too',
      )
    this.channelId(channel)
    const bound = this.boundChannel(channel)
    if (bound !== undefined) this.remote!.require(bound, 'request')
    const codec = checked.codec as CodecName | undefined
    // No closures per request: a synchronous handler replies inside the same flush (no microtask
    // hop), and only a Promise result takes a `then` pair.
    const tracing = this.tracing
    const answer = (message: FrameMessage<T>): Promise<void> | void => {
      let result: Reply<R>
      try {
        result = tracing === undefined ? handler(message) : tracing.respond(message, () => handler(message))
      } catch (error) {
        return this.answerFailed(channel, message, error)
      }
      if (result instanceof Promise) {
        return result.then(
          (value: R) => this.answerWith(channel, message, value, codec),
          (error: unknown) => this.answerFailed(channel, message, error),
        )
      }
      this.answerWith(channel, message, result, codec)
    }
    if (groupName !== undefined) {
      const member = this.group<T>(channel, groupName, {
        ...(visibilityTimeout === undefined ? {} : { visibilityTimeout }),
        ...(from === undefined ? {} : { from }),
      }).consume((d) => answer(d.message as FrameMessage<T>))
      return () => member.stop()
    }
    const sub = this.subscribe<T>(channel).subscribe((m) => void answer(m as FrameMessage<T>))
    return () => sub.unsubscribe()
  }

  /** A responder's result: sent as the reply; one that cannot be encoded (undefined, a cycle, too large) fails the request instead. */
  private answerWith(channel: string, message: FrameMessage, value: unknown, codec: CodecName | undefined): void {
    try {
      this.sendReply(channel, message.replyToken, value, RESPONSE_KIND, message.id, codec)
    } catch (error) {
      this.answerFailed(channel, message, error)
    }
  }

  /** A responder threw or rejected: reported on `events`, and the requester gets HANDLER_ERROR with its message. */
  private answerFailed(channel: string, message: FrameMessage, error: unknown): void {
    this.eventSubject.next({ type: 'handler-error', channel, seq: message.seq, error })
    const e = error as { message?: string; code?: string }
    this.sendReply(channel, message.replyToken, { message: e?.message ?? String(error), code: e?.code ?? null }, ERROR_KIND, message.id, undefined)
  }

  /** Answers a request taken from a group: with `result`, or with `error` (kind `error`). */
  private answer(message: Message, result: unknown, error?: ErrorAnswer): void {
    const token = (message as FrameMessage).replyToken
    if (error) this.sendReply(message.channel, token, error, ERROR_KIND, message.id, undefined)
    else this.sendReply(message.channel, token, result, RESPONSE_KIND, message.id, undefined)
  }

  /**
   * Sends a reply of `kind` carrying the request's id as its correlationId. A reply to one of
   * this bus's own requests is settled by the core without being queued (`REPLIED.own`): it is
   * resolved here from the frame just encoded, without a drain; one to another thread's request
   * is queued for that thread, and a late one is dropped and counted by the core.
   */
  private sendReply(channel: string, token: number, payload: unknown, kind: number, correlationId: string, codec: CodecName | undefined): void {
    if (token === 0 || this.closed) return
    const w = this.writer
    w.reset()
    // One reused envelope, filled with fields the bus made (the id was read from a frame, so it
    // is well-formed): no option object and no envelope check per reply.
    const envelope = this.replyEnvelope
    envelope.correlationId = correlationId
    envelope.codec = codec
    this.encode(w, this.channelId(channel), payload, envelope as PublishOptions, this.now(), token, true, kind)
    const frame = w.bytes()
    const replied = this.core.reply(frame)
    if (replied === REPLIED.own) this.settle(token, 0, this.replySlab.keep(frame))
    // Another process's request: the reply left the core as egress, which a flush hands over.
    else if (replied === REPLIED.remote) this.scheduleFlush()
  }

  /**
   * @internal Fails every request waiting for an answer from a channel `error` gives an error
   * for (one whose only responder, an agent, is known to be gone), in one pass. The core's
   * deadline later finds nothing waiting; a reply that comes after all is dropped. (A request
   * still waiting for room in a full `block` consumer is not open yet: it is left to its timeout.)
   */
  failRequestsTo(error: (channel: string) => unknown): void {
    for (const [token, waiter] of [...this.requests]) {
      const e = error(waiter.channel)
      if (e !== undefined) this.requestFailed(token, e)
    }
  }

  /** The error of a request whose responder failed, with what the responder gave (only `abandoned: true` goes in the details). */
  private handlerError(channel: string, answer: ErrorAnswer): OrreryError {
    return new OrreryError('HANDLER_ERROR', `the responder on ${channel} failed: ${answer.message}`, {
      details: { remoteCode: answer.code, channel, permanent: answer.permanent, ...(answer.abandoned === true && { abandoned: true }) },
    })
  }

  /** A request its transport could not write fails with the transport's error (the core's deadline later finds nothing waiting). */
  private requestFailed(token: number, error: unknown): void {
    const waiting = this.requests.get(token)
    if (!waiting) return
    this.requests.delete(token)
    if (this.requests.size === 0) this.lastRequestSettled()
    waiting.reject(error)
  }

  /** Counters of one channel. */
  stats(channel: string): ChannelStats {
    this.assertOpen()
    const core = fieldsOf(CHANNEL_STATS, this.core.stats(this.channelId(channel)))
    const refused = this.remote?.refusalsOf(channel)
    return { ...core, signatureRefused: refused?.signatureRefused ?? 0, replayRefused: refused?.replayRefused ?? 0 }
  }

  /** Counters of one subscription (by the id `subscriptionId` reports). */
  subscriberStats(id: number): SubscriberStats {
    this.assertOpen()
    int(id, 'id', { max: 0xffffffff }, 'argument')
    return fieldsOf(SUBSCRIBER_STATS, this.core.subscriberStats(id))
  }

  /** Replies that arrived after their request timed out (dropped). */
  lateReplies(): number {
    this.assertOpen()
    return this.core.lateReplies()
  }

  /** Delivers what is ready, soon (in a microtask; at once again if asked while flushing). */
  private scheduleFlush(): void {
    if (this.flushing) {
      this.dirty = true
      return
    }
    if (this.flushQueued || this.closed) return
    this.flushQueued = true
    // A reaction on a settled promise, not queueMicrotask: Node's queueMicrotask makes an
    // AsyncResource and a bound function per call (~170 ns against ~30 ns), once per round trip.
    void RESOLVED.then(this.queuedFlush)
  }

  private readonly queuedFlush = (): void => {
    this.flushQueued = false
    if (this.closed) return
    try {
      this.flushUnattended()
    } catch (error) {
      // Thrown from a promise reaction it would be an unhandled rejection; keep it what it was
      // from queueMicrotask, an uncaught exception.
      queueMicrotask(() => {
        throw error
      })
    }
  }

  /**
   * Fires due deadlines and delivers every pending record now. Both happen on their own; call
   * this to deliver synchronously (tests, a simulated clock).
   */
  flush(): void {
    if (this.flushing) {
      // Called from a handler: the running flush picks the new work up in its next round.
      this.dirty = true
      return
    }
    if (this.closed) return
    this.flushing = true
    let delivered = false
    try {
      // Handlers that publish, reply or ack while being fed make more work for this endpoint;
      // it is drained in the same flush (a request answered synchronously costs no extra
      // microtask), up to a bound so that a handler feeding itself still lets the loop breathe.
      for (let round = 0; round < MAX_FLUSH_ROUNDS; round++) {
        this.dirty = false
        // Fires due deadlines, then drains into a slab region that stays valid while handlers
        // run and call into the core again (see Slab).
        const batch = this.core.drainRecords(this.now())
        if (batch) {
          delivered = true
          forEachRecord(batch, this.routeRecord)
        }
        if (this.closed) return
        if (this.core.drainedAll && !this.dirty) break
        if (round === MAX_FLUSH_ROUNDS - 1) this.dirty = true
      }
    } finally {
      this.flushing = false
    }
    // Acks, nacks, expired leases and departures of remote groups left the core as egress.
    if (this.remote !== undefined) this.remote.afterFlush()
    if (this.dirty) this.scheduleFlush()
    // Wake waiting publishers only when room may have been made: by this drain, or by another
    // thread (which woke us). Waking them on every flush would spin them in microtasks.
    if (delivered || this.wokenByThread) this.roomMade()
    this.wokenByThread = false
    if (this.deadlineAdded || this.releaseDue) this.settleTimer()
  }

  /** Something may have added a deadline earlier than the armed timer (a request, a delivery to a group member, a delayed nack). */
  private noteDeadline(): void {
    this.deadlineAdded = true
  }

  private readonly routeRecord = (consumer: number, attempt: number, seq: number, frame: Uint8Array): void => this.route(consumer, attempt, seq, frame)

  private route(consumer: number, attempt: number, seq: number, frame: Uint8Array): void {
    if (consumer === REPLY_CONSUMER) return this.settle(attempt, seq, frame)
    if (consumer === EVENT_CONSUMER) {
      const subject = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(4, true)
      this.onEvent(attempt, subject, seq)
      return
    }
    // Records come grouped by consumer: a one-entry cache saves a Map lookup per record.
    if (consumer !== this.lastConsumer) {
      this.lastConsumer = consumer
      this.lastHandler = this.handlers.get(consumer)
    }
    this.lastHandler?.(seq, attempt, frame)
  }

  /** Resolves (or, for a reply of kind `error`, rejects with HANDLER_ERROR) the request waiting on `token`. */
  private settle(token: number, seq: number, frame: Uint8Array): void {
    const waiting = this.requests.get(token)
    if (!waiting) return
    this.requests.delete(token)
    if (this.requests.size === 0) this.lastRequestSettled()
    const message = new FrameMessage(waiting.channel, seq, frame)
    if (message.kind === 'error') {
      const answer = message.payload as Partial<ErrorAnswer>
      waiting.reject(
        this.handlerError(waiting.channel, {
          message: String(answer.message),
          code: answer.code ?? null,
          permanent: answer.permanent === true,
          ...(answer.abandoned === true && { abandoned: true }),
        }),
      )
    } else {
      waiting.resolve(message)
    }
  }

  private onEvent(kind: number, subject: number, value: number): void {
    const type = EVENT_KINDS[kind as keyof typeof EVENT_KINDS]
    if (type === 'request-timeout') {
      const waiting = this.requests.get(subject)
      if (!waiting) return
      this.requests.delete(subject)
      if (this.requests.size === 0) this.lastRequestSettled()
      // On a signed transport, a responder refuses a request it cannot verify without a word (an
      // answer would tell a forger which keys fail): the one sign a process with the wrong key gets.
      const signed = this.remote?.signedTransport(waiting.channel)
      const hint =
        signed === undefined
          ? ''
          : ` (transport ${signed} is signed: a responder refuses, without answering, a request whose signature its keys do not verify, so check this process has the others' keys)`
      waiting.reject(new OrreryError('TIMEOUT', `no reply on ${waiting.channel} in time${hint}`, { details: { channel: waiting.channel } }))
    } else if (type === 'slow-consumer') {
      this.eventSubject.next({ type, consumer: subject, channel: this.consumerChannels.get(subject), buffered: value })
    } else if (type === 'dropped') {
      this.eventSubject.next({ type, consumer: subject, channel: this.consumerChannels.get(subject), count: value })
    }
  }

  /**
   * A flush no caller waits for (a timer, a microtask, another thread's wake). A failed engine
   * (a panic; a poisoned wasm instance refuses every later call) thrown from here would be an
   * uncaught exception that ends the process, and a re-armed timer would hit it again: it is
   * reported once on `events` instead, and nothing is armed again.
   */
  private flushUnattended(): void {
    if (this.engineFailed) return
    try {
      this.flush()
    } catch (error) {
      if (!isEngineFailure(error)) throw error
      this.engineFailed = true
      this.deadlines.cancel()
      this.eventSubject.next({ type: 'engine-failed', error })
    }
  }

  /**
   * The last open request settled: a request arms the timer for its own timeout without asking
   * the core, so that timer would keep the process alive until then. If the core has no other
   * deadline, the timer lets go of the process. In a flush, its end asks (once, with whatever
   * else the flush needs of the timer).
   */
  private lastRequestSettled(): void {
    if (this.flushing) this.releaseDue = true
    else if (!this.engineFailed && !this.closed && this.core.nextDeadline() === NO_DEADLINE) this.deadlines.release()
  }

  /**
   * After a flush: arms the one timer for the core's next deadline when the flush may have added
   * one, and lets go of the process when its last request settled and the core has none; one
   * question to the core for both. A deadline is pending work (a retry, a redelivery, a request's
   * timeout), so the timer keeps the process open; when everything is settled the core has no
   * deadline and no timer is left.
   */
  private settleTimer(): void {
    const added = this.deadlineAdded
    const release = this.releaseDue
    this.deadlineAdded = false
    this.releaseDue = false
    if (this.engineFailed || this.closed) return
    const at = this.core.nextDeadline()
    if (at !== NO_DEADLINE) {
      if (added) this.deadlines.arm(at)
    } else if (release) this.deadlines.release()
  }

  /**
   * Shares this bus with worker threads (native engine): pass the handle to `Orrery.attach` in
   * a worker. A shared bus keeps its thread alive until `close()`.
   */
  share(): number {
    this.assertOpen()
    const handle = this.core.share()
    this.enableWaker()
    return handle
  }

  /** @internal Called when this bus is an attached endpoint. */
  enableWaker(): void {
    this.core.setWaker(() => {
      this.wokenByThread = true
      this.flushUnattended()
    })
  }

  /** Throws CLOSED once this bus is closed: no call reaches a released endpoint. */
  private assertOpen(): void {
    if (this.closed) throw new OrreryError('CLOSED', 'this Orrery is closed')
  }

  /**
   * @internal A graceful stop: what this bus holds of remote groups goes back to the broker at
   * once (other processes take it without waiting for its lease), every write is waited for,
   * then the bus closes. Without transports it is `close`.
   */
  shutdown(): Promise<ShutdownOutcome> {
    this.stopping ??= this.shutdownOnce()
    return this.stopping
  }

  /**
   * @internal A draining stop's first part (see `Orrery.shutdown`): nothing new is read for
   * remote groups; resolves once their members here are done with what this process holds, or
   * at `deadline`.
   */
  drain(deadline: number): Promise<void> {
    if (this.closed || this.remote === undefined) return Promise.resolve()
    return this.remote.drain(deadline, () => {
      if (!this.closed) this.flush()
    })
  }

  private stopping: Promise<ShutdownOutcome> | undefined

  private async shutdownOnce(): Promise<ShutdownOutcome> {
    let outcome: ShutdownOutcome = { graceful: true, errors: [] }
    if (this.closed) return outcome
    if (this.remote !== undefined) {
      this.flush()
      outcome = await this.remote.shutdown()
    }
    this.close()
    return outcome
  }

  /** @internal */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.remote?.close()
    this.deadlines.cancel()
    for (const [, waiting] of this.requests) waiting.reject(new OrreryError('CLOSED', 'this Orrery closed before the reply came'))
    this.requests.clear()
    // Leave every group and drop every subscription in the core: a closed endpoint must not
    // keep receiving work (a member's unacked messages go back to the others now).
    for (const id of this.handlers.keys()) {
      try {
        this.core.unsubscribe(id)
      } catch {
        // Already gone, or the engine is poisoned: nothing left to release.
      }
    }
    this.handlers.clear()
    this.lastConsumer = -1
    for (const sink of this.liveSinks) sink.complete()
    this.liveSinks.clear()
    // Publishers waiting for room retry, find the bus closed and fail with CLOSED.
    this.roomMade()
    this.lastConsumer = -1
    this.eventSubject.complete()
    this.core.free()
  }
}
