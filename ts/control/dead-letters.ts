/**
 * The dead letters the control surface shows, replays and discards. Which are settled is kept by
 * a consumer group `orrery.control` on each dead-letter channel, whose one member here holds every
 * dead letter not settled yet (a lease of a day, renewed by redelivery): acking one settles it,
 * so two processes sharing the channel through a transport agree, and a restart keeps it.
 */
import type { Subscription } from 'rxjs'

import type { Bus } from '../bus/bus.js'
import type { Delivery, Group } from '../bus/group.js'
import type { Message } from '../bus/message.js'
import { CONTROL_GROUP, DEAD_LETTER_SUFFIX } from '../bus/options.js'
import { OrreryError } from '../errors.js'
import { PAGE_BYTES } from './log.js'
import { DEAD_LETTER_HEADERS, deadLetterView, type DeadLetterView } from './views.js'

/** How long the keeper holds a dead letter before the core hands it over again (to it), in ms. */
const HOLD_MS = 86_400_000

/** Dead letters held per channel: more wait in the group's backlog until some are settled. */
const HELD = 10_000

/** What the keeper holds of one dead-letter channel. */
interface Held {
  readonly group: Group
  readonly member: Subscription
  readonly deliveries: Map<number, Delivery>
}

export class DeadLetters {
  private readonly held = new Map<string, Held>()

  constructor(private readonly bus: Bus) {}

  /** The dead-letter channel of `channel` (its origin). */
  static channelOf(channel: string): string {
    return `${channel}${DEAD_LETTER_SUFFIX}`
  }

  /** Starts holding the dead letters of origin `channel` (once). */
  private keep(channel: string): Held {
    const dlq = DeadLetters.channelOf(channel)
    let held = this.held.get(dlq)
    if (held !== undefined) return held
    const group = this.bus.group(dlq, CONTROL_GROUP, { from: 'earliest', visibilityTimeout: HOLD_MS, maxDeliveries: 0xffffffff })
    const deliveries = new Map<number, Delivery>()
    const member = group.join({ maxInFlight: HELD }).subscribe({
      // A redelivery (the lease ran out) replaces the one before it.
      next: (delivery) => void deliveries.set(delivery.message.seq, delivery),
      // The bus closed or the group was deleted: held again from scratch if asked.
      complete: () => {
        if (this.held.get(dlq) === held) this.held.delete(dlq)
      },
      error: () => {
        if (this.held.get(dlq) === held) this.held.delete(dlq)
      },
    })
    held = { group, member, deliveries }
    this.held.set(dlq, held)
    return held
  }

  /** The origin channels whose dead letters are held (or whose dead-letter channel the bus knows). */
  origins(known: readonly string[]): string[] {
    const out = new Set<string>()
    for (const name of known) if (name.endsWith(DEAD_LETTER_SUFFIX)) out.add(name.slice(0, -DEAD_LETTER_SUFFIX.length))
    for (const dlq of this.held.keys()) out.add(dlq.slice(0, -DEAD_LETTER_SUFFIX.length))
    return [...out].sort()
  }

  /** How many dead letters of `channel` are not settled (held here or waiting in the group). */
  count(channel: string): number {
    const held = this.keep(channel)
    const stats = held.group.stats()
    return stats.backlog + stats.pending
  }

  /** Up to `limit` dead letters of `channel` not settled, oldest first, at most PAGE_BYTES of them after the first (waits a turn for deliveries). */
  async list(channel: string, limit: number): Promise<DeadLetterView[]> {
    const held = this.keep(channel)
    await settled()
    const out: DeadLetterView[] = []
    let bytes = 0
    for (const seq of [...held.deliveries.keys()].sort((a, b) => a - b)) {
      if (out.length >= limit) break
      const message = held.deliveries.get(seq)!.message
      bytes += message.bytes.length
      if (out.length > 0 && bytes > PAGE_BYTES) break
      out.push(deadLetterView(message))
    }
    return out
  }

  /** The delivery of dead letter `seq` of `channel`; NOT_FOUND when it is settled or never was. */
  private async find(channel: string, seq: number): Promise<{ held: Held; delivery: Delivery }> {
    const held = this.keep(channel)
    let delivery = held.deliveries.get(seq)
    if (delivery === undefined) {
      await settled()
      delivery = held.deliveries.get(seq)
    }
    if (delivery === undefined) {
      throw new OrreryError('NOT_FOUND', `no dead letter ${seq} of channel ${JSON.stringify(channel)} waits (settled already, or never dead-lettered)`, {
        details: { channel, seq },
      })
    }
    return { held, delivery }
  }

  /**
   * Publishes dead letter `seq` of `channel` again on the channel it came from, with its payload,
   * codec, priority and headers (less the dead-letter ones), then settles it. Resolves with the
   * new message's id.
   */
  async replay(channel: string, seq: number): Promise<{ id: string }> {
    const { held, delivery } = await this.find(channel, seq)
    const message = delivery.message
    const origin = message.headers[DEAD_LETTER_HEADERS.originChannel] ?? channel
    const published = await this.bus.publish(origin, message.payload, {
      headers: withoutDeadLetterHeaders(message),
      codec: message.codec,
      priority: message.priority,
    })
    this.settle(held, seq)
    return { id: published.id }
  }

  /** Settles dead letter `seq` of `channel` without publishing it. */
  async discard(channel: string, seq: number): Promise<void> {
    const { held } = await this.find(channel, seq)
    this.settle(held, seq)
  }

  /** Acks the current delivery of `seq` (a stale one was replaced by its redelivery). */
  private settle(held: Held, seq: number): void {
    const delivery = held.deliveries.get(seq)
    held.deliveries.delete(seq)
    delivery?.ack()
  }

  /** Stops holding: what was held goes back to the group (another process's keeper takes it). */
  close(): void {
    for (const held of this.held.values()) held.member.unsubscribe()
    this.held.clear()
  }
}

/** A message's headers less those the core adds when it dead-letters. */
function withoutDeadLetterHeaders(message: Message): Record<string, string> {
  const out: Record<string, string> = {}
  const drop: ReadonlySet<string> = new Set(Object.values(DEAD_LETTER_HEADERS))
  for (const [key, value] of Object.entries(message.headers)) if (!drop.has(key)) out[key] = value
  return out
}

/** Resolves after the bus's scheduled deliveries have run (they drain in a microtask; a timer turn is later). */
function settled(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0))
}
