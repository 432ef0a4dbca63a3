/**
 * The bus facade: named channels, publish, subscribe as an rxjs Observable.
 *
 * Publishing only appends to the core; deliveries are drained in one batch per microtask and
 * fanned out here, after the core call has returned, so subscriber code never runs while the
 * core is mid-mutation and a burst of publishes costs one drain.
 */
import { Observable } from 'rxjs'

import { START_MODES, type BusCore, type ChannelStats } from './backend.js'
import { decodePayload, encodePayload } from './codec.js'
import { isOrreryError, OrreryError } from './errors.js'
import { decodeFrame, forEachRecord, FrameWriter, KINDS, PRIORITIES, type CodecName, type Kind, type Priority } from './frame.js'

/** Options of one published message. */
export interface PublishOptions {
  kind?: Kind
  priority?: Priority
  /** Time to live in ms; the message is never delivered after it. */
  ttl?: number
  /** A producer-assigned id; one is generated when absent. */
  id?: string
  sender?: string
  recipient?: string
  correlationId?: string
  causationId?: string
  /** Schema name with version, `name@major.minor`. */
  schema?: string
  headers?: Readonly<Record<string, string>>
  /** Payload codec; JSON by default, `raw` for Uint8Array payloads. */
  codec?: CodecName
}

/** A delivered message. */
export interface Message<T = unknown> {
  readonly channel: string
  /** Position in the channel's total order. */
  readonly seq: number
  readonly id: string
  readonly kind: Kind
  readonly priority: Priority
  readonly timestamp: number
  /** Expiry on the host clock, or undefined for never. */
  readonly expiresAt: number | undefined
  readonly sender: string | undefined
  readonly recipient: string | undefined
  readonly correlationId: string | undefined
  readonly causationId: string | undefined
  readonly schema: string | undefined
  readonly headers: Readonly<Record<string, string>>
  readonly codec: CodecName
  readonly payload: T
}

/** Where a subscription starts reading. */
export type StartFrom = 'latest' | 'earliest' | { seq: number } | { time: number }

/** Retention limits of a channel; absent limits keep their defaults (10,000 messages, 64 MiB, forever). */
export interface RetentionOptions {
  maxCount?: number
  maxBytes?: number
  maxAgeMs?: number
}

let idCounter = 0
const idPrefix = Math.floor(Math.random() * 0xffffffff).toString(36)

function nextId(): string {
  return `${idPrefix}-${(idCounter++).toString(36)}`
}

function checkOption<T>(value: T | undefined, allowed: readonly T[], name: string): void {
  if (value !== undefined && !allowed.includes(value)) {
    throw new OrreryError('INVALID_OPTION', `${name} must be one of ${allowed.join(', ')}`, { details: { option: name, value } })
  }
}

/** A message bus over one engine's core. */
export class Bus {
  private readonly subscribers = new Map<number, (message: Message) => void>()
  private readonly writer = new FrameWriter()
  private flushQueued = false
  private closed = false

  /** @internal */
  constructor(private readonly core: BusCore, private readonly now: () => number) {}

  /** The id of a channel, creating it on first use; optionally sets its retention. */
  channel(name: string, options: { retention?: RetentionOptions } = {}): number {
    this.assertOpen()
    const id = this.core.channel(name)
    const r = options.retention
    if (r) {
      for (const [key, value] of Object.entries(r)) {
        if (typeof value !== 'number' || !(value >= 0)) {
          throw new OrreryError('INVALID_OPTION', `retention.${key} must be a number >= 0`, { details: { option: `retention.${key}`, value } })
        }
      }
      this.core.setRetention(id, r.maxCount ?? 10_000, r.maxBytes ?? 64 * 1024 * 1024, r.maxAgeMs ?? Infinity, this.now())
    }
    return id
  }

  /** Publishes one message. Resolves once the core has appended it; a refused publish publishes nothing. */
  async publish<T>(channel: string, payload: T, options: PublishOptions = {}): Promise<{ id: string }> {
    const [id] = this.publishNow([{ channel, payload, options }])
    return { id: id! }
  }

  /** Publishes a batch all or nothing, in one crossing into the core. */
  async publishBatch(items: ReadonlyArray<{ channel: string; payload: unknown; options?: PublishOptions }>): Promise<{ ids: string[] }> {
    return { ids: this.publishNow(items) }
  }

  private publishNow(items: ReadonlyArray<{ channel: string; payload: unknown; options?: PublishOptions | undefined }>): string[] {
    this.assertOpen()
    const now = this.now()
    const w = this.writer
    w.reset()
    const ids: string[] = []
    for (const { channel, payload, options = {} } of items) {
      checkOption(options.kind, KINDS, 'kind')
      checkOption(options.priority, PRIORITIES, 'priority')
      if (options.ttl !== undefined && !(options.ttl > 0)) {
        throw new OrreryError('INVALID_OPTION', 'ttl must be a number of ms > 0', { details: { option: 'ttl', value: options.ttl } })
      }
      const codec = options.codec ?? (payload instanceof Uint8Array ? 'raw' : 'json')
      const id = options.id ?? nextId()
      w.push(this.core.channel(channel), {
        id,
        kind: options.kind ?? 'data',
        priority: options.priority ?? 'normal',
        codec,
        timestamp: 0,
        expiresAt: options.ttl === undefined ? 0 : now + options.ttl,
        sender: options.sender,
        recipient: options.recipient,
        correlationId: options.correlationId,
        causationId: options.causationId,
        schema: options.schema,
        headers: options.headers,
      }, encodePayload(codec, payload))
      ids.push(id)
    }
    this.core.publish(w.bytes(), now)
    this.scheduleFlush()
    return ids
  }

  /**
   * Every message of `channel` from `from` on (default: only new ones), as an Observable.
   * Unsubscribing removes the subscription from the core.
   */
  subscribe<T = unknown>(channel: string, options: { from?: StartFrom } = {}): Observable<Message<T>> {
    return new Observable<Message<T>>((subscriber) => {
      this.assertOpen()
      const from = options.from ?? 'latest'
      const [mode, value] =
        from === 'latest' ? [START_MODES.latest, 0]
        : from === 'earliest' ? [START_MODES.earliest, 0]
        : 'seq' in from ? [START_MODES.seq, from.seq]
        : [START_MODES.time, from.time]
      const id = this.core.subscribe(this.core.channel(channel), mode, value)
      this.subscribers.set(id, (message) => subscriber.next(message as Message<T>))
      if (this.core.hasPending()) this.scheduleFlush()
      return () => {
        if (!this.subscribers.delete(id) || this.closed) return
        try {
          this.core.unsubscribe(id)
        } catch (err) {
          // A poisoned engine has nothing left to unsubscribe from; anything else is a bug.
          if (!isOrreryError(err, 'ENGINE_POISONED')) throw err
        }
      }
    })
  }

  /** Counters of one channel. */
  stats(channel: string): ChannelStats {
    this.assertOpen()
    return this.core.stats(this.core.channel(channel))
  }

  private scheduleFlush(): void {
    if (this.flushQueued) return
    this.flushQueued = true
    queueMicrotask(() => {
      this.flushQueued = false
      if (!this.closed) this.flush()
    })
  }

  /**
   * Delivers every pending message now. Deliveries happen on their own after each publish;
   * call this to deliver synchronously (tests, simulated time).
   */
  flush(): void {
    for (;;) {
      const batch = this.core.drain()
      if (!batch) return
      // Decode the whole batch before running any subscriber: a subscriber may call into the
      // core, which invalidates the drained view.
      const ready: Array<[(m: Message) => void, Message]> = []
      forEachRecord(batch, (sub, _attempt, seq, frame) => {
        const deliver = this.subscribers.get(sub)
        if (deliver) ready.push([deliver, this.toMessage(seq, frame.slice())])
      })
      for (const [deliver, message] of ready) deliver(message)
    }
  }

  private toMessage(seq: number, frame: Uint8Array): Message {
    const f = decodeFrame(frame)
    return {
      channel: this.core.channelName(f.channel) ?? String(f.channel),
      seq,
      id: f.id,
      kind: f.kind,
      priority: f.priority,
      timestamp: f.timestamp,
      expiresAt: f.expiresAt === 0 ? undefined : f.expiresAt,
      sender: f.sender,
      recipient: f.recipient,
      correlationId: f.correlationId,
      causationId: f.causationId,
      schema: f.schema,
      headers: f.headers ?? {},
      codec: f.codec,
      payload: decodePayload(f.codec, f.payload),
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new OrreryError('CLOSED', 'this Orrery is closed')
  }

  /** @internal */
  close(): void {
    this.closed = true
    this.subscribers.clear()
    this.core.free()
  }
}
