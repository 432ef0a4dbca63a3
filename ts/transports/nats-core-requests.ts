/**
 * The requests of a nats transport with `requests: 'core'` (docs/transports.md "Core requests on
 * NATS"): core NATS messages on `<prefix>.rq.<channel>`, never stored. A process with a mirror of
 * the channel subscribes to that subject (it reads every request, as its mirror reads every
 * entry); one reading a group subscribes in a queue named for the group, so the server hands each
 * request to one process of the group. A group's delivery is held until the core answers it: an
 * ack forgets it; a release sends it again to that group alone (`<prefix>.rq.<channel>.g.<group>`,
 * which only the group's queue reads), after its delay or a backoff, signed anew with its delivery
 * count; a dead letter is written to the dead-letter channel's stream by the driver.
 */

import type { MsgHdrs, NatsConnection, Subscription } from '@nats-io/nats-core'
import type { ChannelRef, DriverSink, Egress, GroupRef } from './driver.js'
import { OrreryError } from '../errors.js'
import { REMOTE } from '../engines/manifest.js'
import { DELIVERED, SIGNATURE } from './nats-headers.js'
import { IngestWriter, type RouteBlock, routeOfBlock } from './records.js'
import type { Signing } from './signing.js'

/** What the core requests need of their driver. */
export interface CoreHost {
  readonly sink: DriverSink
  readonly signing: Signing | undefined
  /** The open connection (CLOSED once the driver closed). */
  connection(): NatsConnection
  /** New empty headers. */
  headers(): MsgHdrs
  /** Resolves once the server has every subscription made so far (TRANSPORT_UNAVAILABLE after publishTimeoutMs). */
  registered(what: string): Promise<void>
}

/** A group's delivery of a core request, kept for its answer. */
export interface CoreHeld {
  readonly channel: string
  readonly group: string
  readonly route: RouteBlock
  readonly frame: Uint8Array
  /** Its delivery count: 1 for the first. */
  readonly count: number
}

type Request = Extract<Egress, { kind: 'request' }>

/** The first wait before a release without a delay is sent again; it doubles with each delivery. */
const BACKOFF_MS = 50
const MAX_BACKOFF_MS = 1_000
/** The largest delivery count a request carries (the ingest record's count is 32 bits). */
const MAX_COUNT = 0xffff_fffe

/**
 * A core request's payload: its route, then its frame. The route: FORM (this layout's version, one
 * byte), the reply address's length in bytes (a u16, little-endian), then the route as an ingest
 * record carries it (records.ts `RouteBlock`: the timeout, then the address), handed to the core
 * as it came. It travels in the payload rather than in headers: nats.js's headers cost more to
 * write and to read than the rest of a request (about a tenth of each process's CPU).
 */
const FORM = 1
const FORM_HEAD = 3
const MAX_ADDRESS = 0xffff
const utf8 = new TextEncoder()

/** The payload of a core request (see FORM). */
export function corePayload(address: Uint8Array, timeoutMs: number, frame: Uint8Array): Uint8Array {
  if (address.length === 0 || address.length > MAX_ADDRESS) throw new OrreryError('INTERNAL', `a reply address of ${address.length} bytes`)
  const start = FORM_HEAD + REMOTE.routeTimeoutLen + address.length
  const out = new Uint8Array(start + frame.length)
  const view = new DataView(out.buffer)
  out[0] = FORM
  view.setUint16(1, address.length, true)
  view.setFloat64(FORM_HEAD, timeoutMs, true)
  out.set(address, FORM_HEAD + REMOTE.routeTimeoutLen)
  out.set(frame, start)
  return out
}

/**
 * Where the frame of core request payload `data` starts, after its route; 0 when `data` is none
 * (another form, a route the core would refuse: no address, a timeout not > 0).
 */
export function coreFrameStart(data: Uint8Array): number {
  if (data.length < FORM_HEAD + REMOTE.routeTimeoutLen + 1 || data[0] !== FORM) return 0
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  const length = view.getUint16(1, true)
  const start = FORM_HEAD + REMOTE.routeTimeoutLen + length
  // NaN is not > 0 either.
  return length > 0 && start <= data.length && view.getFloat64(FORM_HEAD, true) > 0 ? start : 0
}

const later: (f: () => void) => void = typeof setImmediate === 'function' ? (f) => void setImmediate(f) : (f) => void setTimeout(f, 0)

export class CoreRequests {
  /** Subscriptions by what they read: `m<channel id>` (a mirror) or `g<group id>` (a group's queue, on two subjects). */
  private readonly subs = new Map<string, Subscription[]>()
  /** Deliveries held for the core's answer, by group and position. */
  private readonly held = new Map<number, Map<string, CoreHeld>>()
  private readonly subjects = new Map<string, string>()
  private readonly writer = new IngestWriter()
  private scheduled = false
  /** Numbers each sighting, so two sightings of one signed request on one subscription are a copy. */
  private sightings = 0
  /** Releases waiting for their delay, each with its send. */
  private readonly pending = new Map<ReturnType<typeof setTimeout>, () => void>()
  /** No new subscription once reading stopped; nothing at all once stopped. */
  private reading = true
  /** Whether groups are served (not after `drain`). */
  private serving = true
  /** Groups' subscriptions draining (see `drain`). */
  private draining = 0
  private stopped = false
  private lastAddress = ''
  private lastAddressBytes = new Uint8Array(0)

  constructor(
    private readonly host: CoreHost,
    private readonly prefix: string,
    private readonly subjectPart: (name: string) => string,
  ) {}

  /** The core subject of `channel`'s requests. */
  subjectOf(channel: string): string {
    let subject = this.subjects.get(channel)
    if (subject === undefined) {
      subject = `${this.prefix}.rq.${this.subjectPart(channel)}`
      this.subjects.set(channel, subject)
    }
    return subject
  }

  /** The subject of the requests of `channel` sent again to its group `group` alone. */
  private againSubject(channel: string, group: string): string {
    return `${this.subjectOf(channel)}.g.${this.subjectPart(group)}`
  }

  /** Sends a request: handed to the connection, not acknowledged by anyone (nothing stores it). */
  send(record: Request, signature: string | undefined): void {
    this.publish(this.subjectOf(record.channel), record, signature, 0)
  }

  private publish(subject: string, record: Request, signature: string | undefined, delivered: number): void {
    let h: MsgHdrs | undefined
    if (signature !== undefined || delivered > 0) {
      h = this.host.headers()
      if (signature !== undefined) h.set(SIGNATURE, signature)
      if (delivered > 0) h.set(DELIVERED, String(delivered))
    }
    const payload = corePayload(this.addressBytes(record.replyTo), record.timeoutMs, record.frame)
    this.host.connection().publish(subject, payload, h === undefined ? undefined : { headers: h })
  }

  /** The bytes the route of a request with reply address `address` takes ahead of its frame. */
  routeBytes(address: string): number {
    return FORM_HEAD + REMOTE.routeTimeoutLen + this.addressBytes(address).length
  }

  /** A reply address as bytes: nearly always this process's own, so the last one is kept. */
  private addressBytes(address: string): Uint8Array {
    if (address !== this.lastAddress) {
      this.lastAddress = address
      this.lastAddressBytes = utf8.encode(address)
    }
    return this.lastAddressBytes
  }

  /** Reads every request of `channel` into its mirror; resolves once the server has the subscription. */
  follow(channel: ChannelRef): Promise<void> {
    return this.subscribe(`m${channel.id}`, channel.name, [this.subjectOf(channel.name)], undefined, (route, frame) =>
      this.writer.live(channel.id, Date.now(), frame, route),
    )
  }

  /** Reads `group`'s share of its channel's requests, and those sent again to it; resolves once the server has the subscriptions. */
  serve(group: GroupRef): Promise<void> {
    if (!this.serving) return Promise.resolve()
    const subjects = [this.subjectOf(group.channel), this.againSubject(group.channel, group.name)]
    return this.subscribe(`g${group.id}`, group.channel, subjects, this.subjectPart(group.name), (route, frame, count, sighting) => {
      const position = `rq:${sighting}`
      let held = this.held.get(group.id)
      if (held === undefined) {
        held = new Map()
        this.held.set(group.id, held)
      }
      held.set(position, { channel: group.channel, group: group.name, route, frame, count })
      this.writer.group(group.id, count, position, frame, route)
    })
  }

  /**
   * A draining stop: no group is served here any more (the server hands their requests to the
   * group's other processes; with none, their requesters time out); what is held here, and what
   * the server had sent here already, is still answered. Mirrors still follow their channels.
   */
  drain(): void {
    this.serving = false
    for (const [key, subs] of this.subs) {
      if (!key.startsWith('g')) continue
      for (const sub of subs) {
        this.draining++
        void sub
          .drain()
          .catch(() => {})
          .finally(() => this.draining--)
      }
      this.subs.delete(key)
    }
  }

  /** Whether a group's subscription is draining (what the server sent before its end may still come: a drain waits for it). */
  get holding(): boolean {
    return this.draining > 0
  }

  /** Stops reading `group` here (what it holds stays until the core answers it). */
  unserve(group: number): void {
    for (const sub of this.subs.get(`g${group}`) ?? []) sub.unsubscribe()
    this.subs.delete(`g${group}`)
  }

  /** The core request held at `position` of `group` (answered here, not on a stream); undefined if none is. */
  at(group: number, position: string): CoreHeld | undefined {
    return position.startsWith('rq:') ? this.held.get(group)?.get(position) : undefined
  }

  /** How many deliveries of `group` are held here for the core's answer. */
  heldBy(group: number): number {
    return this.held.get(group)?.size ?? 0
  }

  /** Forgets a delivery the core acked or dead-lettered; returns it (undefined if not held). */
  take(group: number, position: string): CoreHeld | undefined {
    const m = this.at(group, position)
    if (m === undefined) return undefined
    const held = this.held.get(group)!
    held.delete(position)
    if (held.size === 0) this.held.delete(group)
    return m
  }

  /** Sends every request `group` still holds here to the group again (this process no longer serves it). */
  releaseAll(group: number, sign: (record: Egress, attempt: number) => string | undefined): void {
    for (const position of [...(this.held.get(group)?.keys() ?? [])]) this.release(group, position, 0, sign)
  }

  /**
   * Sends a released delivery to its group again after `delayMs`; without a delay (a lapsed lease,
   * no member here to take it) after a backoff of 50 ms doubling with each delivery up to 1 s, so
   * a request with nowhere to go does not bounce at once (`maxDeliveries` bounds how often). Once
   * this process stops reading (a shutdown handing back what it holds) at once: nothing else
   * would bring the request back. Signed anew (`sign`) with its delivery count when the transport
   * signs. A send that fails is reported: its requester times out.
   */
  release(group: number, position: string, delayMs: number, sign: (record: Egress, attempt: number) => string | undefined): void {
    const m = this.take(group, position)
    if (m === undefined || this.stopped) return
    const again = () => {
      try {
        // A held route is one the core took (checked as read): it has an address and a timeout.
        const route = routeOfBlock(m.route)!
        const record: Request = { kind: 'request', channel: m.channel, replyTo: route.address, timeoutMs: route.timeoutMs, frame: m.frame }
        this.publish(this.againSubject(m.channel, m.group), record, sign(record, m.count), m.count)
      } catch (error) {
        this.host.sink.failed(error)
      }
    }
    if (!this.reading) {
      again()
      return
    }
    const wait = delayMs > 0 ? delayMs : Math.min(MAX_BACKOFF_MS, BACKOFF_MS * 2 ** Math.min(m.count - 1, 10))
    const timer = setTimeout(() => {
      this.pending.delete(timer)
      again()
    }, wait)
    this.pending.set(timer, again)
  }

  /** Sends every release still waiting for its delay now (this process is leaving). */
  private sendPending(): void {
    for (const [timer, again] of this.pending) {
      clearTimeout(timer)
      again()
    }
    this.pending.clear()
  }

  private async subscribe(
    key: string,
    channel: string,
    subjects: readonly string[],
    queue: string | undefined,
    take: (route: RouteBlock, frame: Uint8Array, count: number, sighting: number) => void,
  ): Promise<void> {
    if (this.subs.has(key) || !this.reading) return
    const lane = `${channel}\u0000${key}`
    const nc = this.host.connection()
    const subs = subjects.map((subject) =>
      nc.subscribe(subject, {
        ...(queue === undefined ? {} : { queue }),
        callback: (error, m) => {
          if (error !== null || this.stopped) return
          const data = m.data
          const start = coreFrameStart(data)
          // Only requests travel here; anything else on the subject is no Orrery message.
          if (start === 0) return
          const route = data.subarray(FORM_HEAD, start)
          const frame = data.subarray(start)
          const sighting = ++this.sightings
          // The delivery count before this one, if it was sent again (signed with it).
          const header = m.headers?.get(DELIVERED)
          const before = header ? Number(header) : 0
          const delivered = Number.isSafeInteger(before) && before > 0 ? Math.min(before, MAX_COUNT - 1) : 0
          const signing = this.host.signing
          // Checked as written (a value no sender writes fails the check), counted clamped.
          const attempt = header ? (Number.isSafeInteger(before) ? before : -1) : undefined
          if (
            signing !== undefined &&
            !signing.accept(m.headers?.get(SIGNATURE) || undefined, channel, routeOfBlock(route), frame, `rq:${sighting}`, Date.now(), { lane, attempt })
          )
            return
          take(route, frame, delivered + 1, sighting)
          if (!this.scheduled) {
            this.scheduled = true
            later(() => this.flush())
          }
        },
      }),
    )
    this.subs.set(key, subs)
    // A subscription the server has not confirmed in time stays: nats.js makes it again on a
    // reconnect. Only the wait fails.
    await this.host.registered(`the subscription to ${channel}'s core requests`)
  }

  private flush(): void {
    this.scheduled = false
    const batch = this.writer.take()
    if (batch !== undefined && !this.stopped) this.host.sink.ingest(batch)
  }

  /**
   * Stops reading (what was read goes in first); what is held is still answered, and a release
   * (the core hands back what this process holds) is sent at once, as are those still waiting.
   */
  stopReading(): void {
    this.reading = false
    this.flush()
    for (const subs of this.subs.values()) for (const sub of subs) sub.unsubscribe()
    this.subs.clear()
    this.sendPending()
  }

  /** Stops everything: the connection is closing (what it has to send still goes out). */
  stop(): void {
    if (this.stopped) return
    this.stopReading()
    this.stopped = true
    this.held.clear()
  }
}
