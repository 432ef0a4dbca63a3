/**
 * The requests of a nats transport with `requests: 'core'` (docs/transports.md "Core requests"):
 * core NATS messages on `<prefix>.rq.<channel>`, never stored. A process with a mirror of the
 * channel subscribes to that subject (it reads every request, as its mirror reads every entry);
 * one reading a group subscribes in a queue named for the group, so the server hands each request
 * to one process of the group. A group's delivery is held until the core answers it: an ack
 * forgets it, a release sends it to the group again after its delay, signed anew and with its
 * delivery count one higher (the core's `maxDeliveries` applies), a dead letter is written to the
 * dead-letter channel by the driver.
 */

import type { MsgHdrs, NatsConnection, Subscription } from '@nats-io/nats-core'
import type { ChannelRef, DriverSink, Egress, GroupRef } from './driver.js'
import { DELIVERED, REPLY_TO, routeOfMsg, SIGNATURE, TIMEOUT } from './nats-headers.js'
import { IngestWriter, type Route } from './records.js'
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
  readonly route: Route
  readonly frame: Uint8Array
  /** Its delivery count: 1 for the first. */
  readonly count: number
}

const later: (f: () => void) => void = typeof setImmediate === 'function' ? (f) => void setImmediate(f) : (f) => void setTimeout(f, 0)

export class CoreRequests {
  /** Subscriptions by what they read: `m<channel id>` (a mirror) or `g<group id>` (a group's queue). */
  private readonly subs = new Map<string, Subscription>()
  /** Deliveries held for the core's answer, by group and position. */
  private readonly held = new Map<number, Map<string, CoreHeld>>()
  private readonly subjects = new Map<string, string>()
  private readonly writer = new IngestWriter()
  private scheduled = false
  /** Numbers each sighting, so two sightings of one signed request on one subscription are a copy. */
  private sightings = 0
  /** Releases waiting for their delay. */
  private readonly timers = new Set<ReturnType<typeof setTimeout>>()
  private stopped = false

  constructor(
    private readonly host: CoreHost,
    private readonly prefix: string,
    private readonly subjectPart: (channel: string) => string,
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

  /** Sends a request: handed to the connection, not acknowledged by anyone (nothing stores it). */
  send(record: Extract<Egress, { kind: 'request' }>, signature: string | undefined, delivered = 0): void {
    const h = this.host.headers()
    if (signature !== undefined) h.set(SIGNATURE, signature)
    h.set(REPLY_TO, record.replyTo)
    h.set(TIMEOUT, String(record.timeoutMs))
    if (delivered > 0) h.set(DELIVERED, String(delivered))
    this.host.connection().publish(this.subjectOf(record.channel), record.frame, { headers: h })
  }

  /** Reads every request of `channel` into its mirror; resolves once the server has the subscription. */
  follow(channel: ChannelRef): Promise<void> {
    return this.subscribe(`m${channel.id}`, channel.name, undefined, (route, frame) => this.writer.live(channel.id, Date.now(), frame, route))
  }

  /** Reads `group`'s share of its channel's requests; resolves once the server has the subscription. */
  serve(group: GroupRef): Promise<void> {
    return this.subscribe(`g${group.id}`, group.channel, this.subjectPart(group.name), (route, frame, count, sighting) => {
      const position = `rq:${sighting}`
      let held = this.held.get(group.id)
      if (held === undefined) {
        held = new Map()
        this.held.set(group.id, held)
      }
      held.set(position, { channel: group.channel, route, frame, count })
      this.writer.group(group.id, count, position, frame, route)
    })
  }

  /** Stops reading `group` here (what it holds stays until the core answers it). */
  unserve(group: number): void {
    this.subs.get(`g${group}`)?.unsubscribe()
    this.subs.delete(`g${group}`)
  }

  /** The core request held at `position` of `group` (answered here, not on a stream); undefined if none is. */
  at(group: number, position: string): CoreHeld | undefined {
    return position.startsWith('rq:') ? this.held.get(group)?.get(position) : undefined
  }

  /** Forgets a delivery the core acked or dead-lettered; returns it (undefined if not held). */
  take(group: number, position: string): CoreHeld | undefined {
    const m = this.at(group, position)
    if (m !== undefined) this.held.get(group)!.delete(position)
    return m
  }

  /** Sends a released delivery to the group again after `delayMs`, signed anew (`sign`) when the transport signs. */
  release(group: number, position: string, delayMs: number, sign: (record: Egress) => string | undefined): void {
    const m = this.take(group, position)
    if (m === undefined || this.stopped) return
    const again = () => {
      if (this.stopped) return
      const record = { kind: 'request', channel: m.channel, replyTo: m.route.address, timeoutMs: m.route.timeoutMs, frame: m.frame } as const
      this.send(record, sign(record), m.count)
    }
    if (delayMs <= 0) {
      again()
      return
    }
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      again()
    }, delayMs)
    this.timers.add(timer)
  }

  private async subscribe(
    key: string,
    channel: string,
    queue: string | undefined,
    take: (route: Route, frame: Uint8Array, count: number, sighting: number) => void,
  ): Promise<void> {
    if (this.subs.has(key)) return
    const lane = `${channel}\u0000${key}`
    const sub = this.host.connection().subscribe(this.subjectOf(channel), {
      ...(queue === undefined ? {} : { queue }),
      callback: (error, m) => {
        if (error !== null || this.stopped) return
        const route = routeOfMsg(m)
        // Only requests travel here; anything else on the subject is no Orrery message.
        if (route === undefined) return
        const sighting = ++this.sightings
        const signing = this.host.signing
        if (
          signing !== undefined &&
          !signing.accept(m.headers?.get(SIGNATURE) || undefined, channel, route, m.data, `rq:${sighting}`, Date.now(), undefined, lane)
        )
          return
        const delivered = Number(m.headers?.get(DELIVERED) || 0)
        take(route, m.data, Number.isSafeInteger(delivered) && delivered > 0 ? delivered + 1 : 1, sighting)
        if (!this.scheduled) {
          this.scheduled = true
          later(() => this.flush())
        }
      },
    })
    this.subs.set(key, sub)
    try {
      await this.host.registered(`the subscription to ${channel}'s core requests`)
    } catch (error) {
      if (this.subs.get(key) === sub) this.subs.delete(key)
      sub.unsubscribe()
      throw error
    }
  }

  private flush(): void {
    this.scheduled = false
    const batch = this.writer.take()
    if (batch !== undefined && !this.stopped) this.host.sink.ingest(batch)
  }

  /** Stops reading (what was read goes in first); what is held is still answered, a release still sent. */
  stopReading(): void {
    this.flush()
    for (const sub of this.subs.values()) sub.unsubscribe()
    this.subs.clear()
  }

  /** Stops everything: the connection is closing. */
  stop(): void {
    if (this.stopped) return
    this.stopReading()
    this.stopped = true
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
    this.held.clear()
  }
}
