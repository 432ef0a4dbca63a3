/**
 * Consumer groups: each message goes to one member; members ack or nack; an unacked message is
 * redelivered after the visibility timeout; after `maxDeliveries` it moves to the channel's
 * dead-letter channel (`<channel>.dead-letter`, an ordinary channel) with the reason and the
 * delivery count in its headers.
 */
import { fieldsOf, GROUP_STATS, PENDING_FIELDS, type GroupStats, type OverflowPolicy, type PendingEntry } from '../engines/backend.js'
import { DEFAULTS, OVERFLOW, START_MODES } from '../engines/manifest.js'
import type { Bus } from './bus.js'
import type { BusLink } from './link.js'
import { consumerOptions, MAX_CAPACITY, type StartFrom } from './options.js'

/** The fields of each options object a group's calls take: any other is refused. */
const JOIN_KEYS: readonly string[] = ['maxInFlight']
const CONSUME_KEYS: readonly string[] = ['maxInFlight', 'retryDelay', 'isPermanent']
const CLAIM_KEYS: readonly string[] = ['minIdle', 'max']
const NACK_KEYS: readonly string[] = ['delay', 'deadLetter']
import { callable, finite, int, intOr, keysOf, options as checkOptions, refuse } from '../check.js'
import { isOrreryError, OrreryError } from '../errors.js'
import { INSPECT, inspectAs, type InspectFn, type InspectOptions } from '../inspect.js'
import { FrameMessage, type Message } from './message.js'
import type { StandardSchemaV1 } from '../schema.js'
import type { Subscriber } from 'rxjs'

import { Stream } from '../stream.js'
import type { GroupStart } from '../transports/driver.js'
import type { Transports } from '../transports/link.js'
import type { Tracing } from '../observe/tracing.js'

/** Options of a consumer group, fixed when the group is first created. */
export interface GroupOptions<T = unknown> {
  from?: StartFrom
  /** Messages buffered for the group (not yet given to a member) before `overflow` applies. */
  buffer?: number
  overflow?: OverflowPolicy
  /** How long a member may hold a delivery before it is redelivered, in ms (default 30,000). */
  visibilityTimeout?: number
  /** Deliveries after which an unacked message is dead-lettered (default 5). */
  maxDeliveries?: number
  /** Validates each payload at receive (and types it); an invalid message is dead-lettered at once. */
  schema?: StandardSchemaV1<unknown, T>
}
const GROUP_KEYS = keysOf<GroupOptions>()(['from', 'buffer', 'overflow', 'visibilityTimeout', 'maxDeliveries', 'schema'])

/** One delivery to a group member: settle it with `ack` or `nack`. */
export interface Delivery<T = unknown> {
  readonly message: Message<T>
  /** 1 for the first delivery, 2 for the first redelivery, … */
  readonly attempt: number
  /** Done: the message is never delivered again. `STALE_ACK` if the lease already expired. */
  ack(): void
  /**
   * Not done. By default it is redelivered (after `delay` ms if given) until `maxDeliveries`;
   * with `deadLetter` it goes to the dead-letter channel at once, with that reason (a diagnostic
   * in a header: cut to 4,096 characters, a lone surrogate as U+FFFD).
   */
  nack(options?: { delay?: number; deadLetter?: string }): void
}

/** A consumer group handle. */
export class Group<T = unknown> {
  /** The group's id in the core. */
  readonly id: number
  /** This handle's members, by id: completed when the group is deleted. */
  private readonly members = new Map<number, Subscriber<Delivery<T>>>()

  /** What this group needs of its bus (private: it reaches the engine's raw calls). */
  private readonly link: BusLink

  /** Set when the channel is bound to a transport: the group is then read from the broker. */
  private readonly remote: Transports | undefined

  /** @internal The Orrery's tracing, if it was asked for (deliveries' spans end when they are settled). */
  readonly tracing: Tracing | undefined

  /** @internal */
  static create<T>(bus: Bus, link: BusLink, channel: string, name: string, options: GroupOptions<T>, remote?: Transports): Group<T> {
    return new Group<T>(bus, link, channel, name, options, remote)
  }

  /** @internal Throws CLOSED once the bus is closed (a delivery's ack or nack). */
  assertOpen(): void {
    this.link.assertOpen()
  }

  private constructor(
    readonly bus: Bus,
    link: BusLink,
    readonly channel: string,
    readonly name: string,
    private readonly options: GroupOptions<T>,
    transports: Transports | undefined,
  ) {
    this.link = link
    this.tracing = link.tracing
    link.assertOpen()
    options = this.options = checkOptions(options, 'options', 'argument', GROUP_KEYS)
    const { mode, value, buffer, overflow } = consumerOptions(options)
    // Leases and delays are the core's deadlines, not timers of their own: the bus re-arms its one
    // timer past 2^31 - 1 ms, so they need only be finite (the agent runner adds 5 s to its
    // handler timeout, which may itself be that limit).
    const visibility =
      options.visibilityTimeout === undefined ? DEFAULTS.visibilityTimeoutMs : finite(options.visibilityTimeout, 'visibilityTimeout', { above: 0 })
    const maxDeliveries = intOr(options.maxDeliveries, DEFAULTS.maxDeliveries, 'maxDeliveries', { min: 1, max: 0xffffffff })
    const channelId = link.channelId(channel)
    const bound = transports?.find(channelId)
    if (bound !== undefined) {
      if (mode === START_MODES.seq) transports!.require(bound, 'from.seq')
      // A publish goes to the broker, never into this group's buffer: `reject` could refuse nothing.
      if (overflow === OVERFLOW.reject) transports!.require(bound, 'overflow.reject')
    }
    this.id = link.core.group(channelId, name, mode, value, buffer, overflow, visibility, maxDeliveries)
    this.remote = bound === undefined ? undefined : transports
    if (bound !== undefined) {
      const start: GroupStart = mode === START_MODES.earliest ? { at: 'earliest' } : mode === START_MODES.time ? { at: 'time', time: value } : { at: 'latest' }
      transports!.openGroup(bound, this.id, name, start, visibility)
    }
  }

  /**
   * Joins as a member holding at most `maxInFlight` unacked deliveries (default 64): a stream of
   * deliveries to settle one by one. Unsubscribing leaves the group; what the member still held
   * is redelivered to the others.
   */
  join(options: { maxInFlight?: number } = {}): Stream<Delivery<T>> & { readonly memberId: () => number } {
    // Checked at the call: a refusal raised when the stream is subscribed had no error callback
    // to go to, and rxjs rethrew it from a timer, ending the process.
    this.link.assertOpen()
    const maxInFlight = intOr(checkOptions(options, 'options', 'argument', JOIN_KEYS).maxInFlight, 64, 'maxInFlight', { min: 1, max: MAX_CAPACITY })
    let latest = -1
    const link = this.link
    const schema = this.options.schema
    const tracing = this.tracing
    const stream = new Stream<Delivery<T>>({
      unhandled: (error) => link.subscriberFailed(this.channel, error, this.name),
      start: (sink) => {
        link.assertOpen()
        // One member per subscription: its own id, teardown and pause.
        const id = this.named(() => link.core.join(this.id, maxInFlight))
        latest = id
        const untrack = link.track(sink)
        this.members.set(id, sink)
        // A remote group reads the broker as its members have room: one more may read now.
        this.remote?.wake()
        link.addConsumer(id, this.channel, (seq, attempt, frame) => {
          link.noteDeadline() // the delivery started a lease
          const message = new FrameMessage<T>(this.channel, seq, frame)
          const delivery = new GroupDelivery(this, id, message, attempt, link.core.epoch)
          if (!schema) return tracing === undefined ? sink.next(delivery) : tracing.deliver(message, this.name, sink, delivery)
          link.validated(schema, message, (ok, error) => {
            if (!ok) delivery.nack({ deadLetter: `schema-invalid: ${error?.message ?? ''}` })
            else if (tracing === undefined) sink.next(delivery)
            else tracing.deliver(message, this.name, sink, delivery)
          })
        })
        return {
          stop: () => {
            untrack()
            this.members.delete(id)
            link.removeConsumer(id)
          },
          setPaused: (paused) => link.setConsumerPaused(id, paused),
        }
      },
    })
    // The member of the most recent subscription (what `claim` needs).
    return Object.assign(stream, { memberId: () => latest })
  }

  /** @internal Acks a delivery drained in core epoch `drainedIn` (see `BusCore.ackSoon`). */
  ack(member: number, seq: number, token: number, drainedIn: number): void {
    const link = this.link
    try {
      link.core.ackSoon(member, seq, token, drainedIn)
    } catch (err) {
      throw this.rename(err)
    }
    link.roomMade()
    link.scheduleFlush()
  }

  /** @internal Nacks a delivery in the core. */
  nack(member: number, seq: number, token: number, nack: { delay?: number; deadLetter?: string }): void {
    const link = this.link
    link.assertOpen()
    try {
      const delay = nack.delay ?? 0
      link.core.nack(member, seq, token, delay, nack.deadLetter ?? '', link.now())
      if (delay > 0) link.noteDeadline()
    } catch (err) {
      throw this.rename(err)
    }
    link.roomMade()
    link.scheduleFlush()
  }

  /** @internal How many times the message at `seq` has been delivered (this delivery included); read on demand. */
  attemptNumber(seq: number): number {
    this.link.assertOpen()
    const list = this.named(() => this.link.core.pending(this.id, this.link.now()))
    for (let i = 0; i < list.length; i += PENDING_FIELDS.length) {
      if (list[i] === seq) return list[i + 3]!
    }
    return 1
  }

  /**
   * Runs `handler` for each delivery with up to `maxInFlight` at once: resolved, the delivery is
   * acked; thrown, it is nacked for redelivery (after `retryDelay` ms), or dead-lettered at once
   * when `isPermanent(error)` says so. Returns a handle to stop consuming.
   */
  consume(
    handler: (delivery: Delivery<T>) => unknown,
    options: { maxInFlight?: number; retryDelay?: number; isPermanent?: (error: unknown) => boolean } = {},
  ): { stop(): void; memberId(): number } {
    this.link.assertOpen()
    callable(handler, 'handler')
    options = checkOptions(options, 'options', 'argument', CONSUME_KEYS)
    const retryDelay = options.retryDelay === undefined ? 0 : finite(options.retryDelay, 'retryDelay', { min: 0 })
    const isPermanent = options.isPermanent === undefined ? undefined : callable<(error: unknown) => boolean>(options.isPermanent, 'isPermanent', 'option')
    const stream = this.join(options.maxInFlight === undefined ? {} : { maxInFlight: options.maxInFlight })
    const subscription = stream.subscribe((delivery) => {
      Promise.resolve()
        .then(() => handler(delivery))
        .then(
          () => delivery.ack(),
          (error: unknown) => {
            const permanent = isPermanent?.(error) ?? false
            const reason = error instanceof Error ? error.message : String(error)
            delivery.nack(permanent ? { deadLetter: reason || 'handler failed' } : { delay: retryDelay })
          },
        )
        .catch(() => {
          // Settling fails only when the lease expired while the handler ran (STALE_ACK: the
          // message went to another member) or the bus closed. Either way nothing is lost.
        })
    })
    return { stop: () => subscription.unsubscribe(), memberId: () => stream.memberId() }
  }

  /**
   * Deletes the group: its members stop receiving (their streams complete), and its backlog and
   * unacked messages are discarded; the channel's log keeps its messages.
   */
  delete(): void {
    this.link.assertOpen()
    this.named(() => this.link.core.deleteGroup(this.id))
    if (this.remote !== undefined) {
      // What this process held goes back to the broker (egress, written by the next flush).
      this.remote.groupDeleted(this.id)
      this.link.scheduleFlush()
    }
    for (const [member, sink] of this.members) {
      this.link.forgetConsumer(member)
      sink.complete()
    }
    this.members.clear()
  }

  /**
   * Moves deliveries idle for `minIdle` ms from other members to member `memberId`, at most `max`
   * (default 100); returns how many moved. On a channel bound to a broker that can claim (Redis),
   * the broker then hands this process up to `max` minus that many entries other processes hold,
   * idle as long, for its members as they have room.
   */
  claim(memberId: number, options: { minIdle: number; max?: number }): number {
    this.link.assertOpen()
    int(memberId, 'memberId', { max: 0xffffffff }, 'argument')
    if (this.remote !== undefined) this.remote.require(this.remote.find(this.link.channelId(this.channel))!, 'claim')
    if (options === undefined) refuse('argument', 'options', options, 'must be an object { minIdle, max? }')
    const o = checkOptions(options, 'options', 'argument', CLAIM_KEYS)
    const minIdle = finite(o.minIdle, 'minIdle', { min: 0 })
    const max = intOr(o.max, 100, 'max', { min: 1, max: MAX_CAPACITY })
    // The core refuses a member of another group (its deliveries never move through this one).
    const n = this.named(() => this.link.core.claim(this.id, memberId, minIdle, max, this.link.now()))
    this.remote?.claimRemote(this.id, minIdle, max - n)
    this.link.noteDeadline()
    this.link.scheduleFlush()
    return n
  }

  /** The pending-entries list: what members hold and have not acked. */
  pending(): PendingEntry[] {
    this.link.assertOpen()
    const flat = this.named(() => this.link.core.pending(this.id, this.link.now()))
    const out: PendingEntry[] = []
    for (let i = 0; i < flat.length; i += PENDING_FIELDS.length) {
      out.push(
        fieldsOf(
          PENDING_FIELDS,
          Array.from({ length: PENDING_FIELDS.length }, (_, k) => flat[i + k]!),
        ),
      )
    }
    return out
  }

  /** Counters: members, backlog, pending, delivered, acked, nacked, redelivered, dead-lettered, expired. */
  stats(): GroupStats {
    this.link.assertOpen()
    return fieldsOf(
      GROUP_STATS,
      this.named(() => this.link.core.groupStats(this.id)),
    )
  }

  /** Runs a core call, naming this group in what it refuses (the core only knows ids). */
  private named<R>(call: () => R): R {
    try {
      return call()
    } catch (err) {
      throw this.rename(err)
    }
  }

  /**
   * The core's error with this group's name and channel in place of its ids. The core refuses
   * this group's id only once the group was deleted (ids are never reused), through any handle.
   */
  private rename(err: unknown): unknown {
    if (!isOrreryError(err)) return err
    const where = `consumer group ${this.name} on ${this.channel}`
    const details = { ...err.details, group: this.name, channel: this.channel }
    switch (err.code) {
      case 'UNKNOWN_GROUP':
        return new OrreryError('UNKNOWN_GROUP', `${where} was deleted; bus.group('${this.channel}', '${this.name}') creates it anew`, { cause: err, details })
      case 'UNKNOWN_SUBSCRIPTION':
        return new OrreryError(
          'UNKNOWN_SUBSCRIPTION',
          `${where} has no member with that id (it left, or never joined this group): use the memberId() of a current member`,
          { cause: err, details },
        )
      case 'STALE_ACK':
        return new OrreryError('STALE_ACK', `${where}: ${err.message}`, { cause: err, details })
      default:
        return err
    }
  }
}

/** Longest dead-letter reason kept, in characters (at most 12 KiB of UTF-8, well inside a header's 65,535 bytes). */
const MAX_REASON = 4096
const LONE_SURROGATES = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g

/**
 * A dead-letter reason as its header carries it. A reason is a diagnostic, most often an error's
 * message, given while a failure is being handled, so it is made to fit rather than refused
 * (a refusal there would leave the delivery unsettled): cut to {@link MAX_REASON} characters
 * (the core dropped a header over 65,535 bytes, and the delivery count after it), with any lone
 * surrogate as U+FFFD, which is what UTF-8 makes of it anyway.
 */
function deadLetterReason(value: unknown): string {
  if (typeof value !== 'string') refuse('option', 'deadLetter', value, 'must be a string (the reason)')
  const cut = value.length > MAX_REASON ? `${value.slice(0, MAX_REASON - 1)}…` : value
  return cut.replace(LONE_SURROGATES, '\uFFFD')
}

/** One delivery: a class, not closures, because a busy group makes millions of them. */
class GroupDelivery<T> implements Delivery<T> {
  private settled = false

  constructor(
    private readonly group: Group<T>,
    private readonly member: number,
    readonly message: FrameMessage<T>,
    private readonly token: number,
    /** The core's epoch when it was drained: while it lasts, an ack cannot be stale. */
    private readonly drainedIn: number,
  ) {}

  /** Read from the core on first use (most handlers never ask), then kept: once settled, the core forgets it. */
  private attempts: number | undefined = undefined

  get attempt(): number {
    this.attempts ??= this.group.attemptNumber(this.message.seq)
    return this.attempts
  }

  ack(): void {
    const group = this.group
    group.assertOpen()
    this.settleOnce('ack')
    group.ack(this.member, this.message.seq, this.token, this.drainedIn)
    if (group.tracing !== undefined) group.tracing.settled(this.message, group.name, 'ack')
  }

  nack(options: { delay?: number; deadLetter?: string } = {}): void {
    const o = checkOptions(options, 'options', 'argument', NACK_KEYS)
    // A delay is a core deadline (finite, >= 0); a reason travels in a header.
    const delay = o.delay === undefined ? 0 : finite(o.delay, 'delay', { min: 0 })
    const deadLetter = o.deadLetter === undefined ? undefined : deadLetterReason(o.deadLetter)
    this.group.assertOpen()
    this.settleOnce('nack')
    this.group.nack(this.member, this.message.seq, this.token, deadLetter === undefined ? { delay } : { delay, deadLetter })
    if (this.group.tracing !== undefined) this.group.tracing.settled(this.message, this.group.name, 'nack', deadLetter)
  }

  private settleOnce(what: string): void {
    if (this.settled) throw new OrreryError('STALE_ACK', `this delivery was already settled (${what})`, { details: { seq: this.message.seq } })
    this.settled = true
  }

  /** The delivery's fields; `attempt` only where it is still known (printing never throws, even after the group was deleted). */
  toJSON(): { group: string; channel: string; attempt: number | undefined; settled: boolean; message: object } {
    let attempt = this.attempts
    if (attempt === undefined && !this.settled) {
      try {
        attempt = this.attempt
      } catch {
        /* the group was deleted: its pending list is gone */
      }
    }
    return { group: this.group.name, channel: this.group.channel, attempt, settled: this.settled, message: this.message.toJSON() }
  }

  [INSPECT](depth: number, options: InspectOptions, inspect?: InspectFn): string | object {
    return inspectAs('Delivery', this.toJSON(), depth, options, inspect)
  }
}
