/**
 * JetStream publishes whose acknowledgements come back on one subscription. Each publish is a
 * core publish whose reply subject is this connection's ack inbox and a number; the server's
 * answer (a PubAck, an API error, or a 503 status when no stream listens on the subject) is
 * matched to its publish by that number. nats.js's `js.publish` makes every publish a request of
 * its own (a mux entry, a promise chain and a timer each); here a publish costs a map entry, and
 * one timer serves every publish in flight.
 *
 * The answers take the shapes the driver already tells apart: an API error is nats.js's
 * `JetStreamApiError` (a refusal), no stream is nats.js's `NoRespondersError`, an answer that did
 * not come in time is a plain `Error` (sent again). The inbox subscription lives as long as the
 * connection: nats.js subscribes it again after a reconnect.
 */
import type { ApiError } from '@nats-io/jetstream'
import type { NatsConnection, Subscription } from '@nats-io/nats-core'

import type { NatsModules } from './nats-connect.js'

/** The headers a JetStream publish carries (nats-core's `MsgHdrs`). */
type Headers = ReturnType<NatsModules['transport']['headers']>

/** Where the answers to publishes go: publish `k`'s, as whether it was a duplicate or why it failed. */
export interface AckSink {
  answer(k: number, duplicate: boolean, error?: unknown): void
}

interface Pending {
  readonly sink: AckSink
  readonly k: number
  readonly subject: string
  readonly deadline: number
}

/** How often publishes waiting for an answer are checked against their deadline. */
const SWEEP_MS = 100

const decoder = new TextDecoder()

const encoder = new TextEncoder()
/** How a PubAck begins: the server writes an error before anything else, so this one has none. */
const PUB_ACK = encoder.encode('{"stream":"')
const DUPLICATE = encoder.encode('"duplicate"')

/**
 * False for a PubAck of a message stored (`{"stream":"<name>",...}`, a name given, no
 * `"duplicate"`), read from its bytes; undefined for any other answer (a duplicate, an error),
 * which is parsed. Every publish has one: decoding and parsing each was most of what an
 * acknowledged publish cost here.
 */
function pubAck(data: Uint8Array): false | undefined {
  if (data.length <= PUB_ACK.length || data[PUB_ACK.length] === 0x22) return undefined
  for (let i = 0; i < PUB_ACK.length; i++) if (data[i] !== PUB_ACK[i]) return undefined
  return holds(data, DUPLICATE, PUB_ACK.length) ? undefined : false
}

/** Whether `data` holds `part` at or after `from`. */
function holds(data: Uint8Array, part: Uint8Array, from: number): boolean {
  const last = data.length - part.length
  outer: for (let i = from; i <= last; i++) {
    for (let j = 0; j < part.length; j++) if (data[i + j] !== part[j]) continue outer
    return true
  }
  return false
}

export class PubAcks {
  private readonly pending = new Map<number, Pending>()
  private readonly prefix: string
  private readonly sub: Subscription
  private next = 0
  private sweeper: ReturnType<typeof setInterval> | undefined

  constructor(
    private readonly nc: NatsConnection,
    private readonly nats: NatsModules,
  ) {
    this.prefix = `${nats.transport.createInbox()}.`
    this.sub = nc.subscribe(`${this.prefix}*`, { callback: (error, msg) => (error === null ? this.answered(msg.subject, msg.data, msg.headers) : undefined) })
  }

  /**
   * Publishes `data` to `subject` in JetStream: resolves to whether the stream dropped it as a
   * duplicate (by its `Nats-Msg-Id`), rejects as described above, or after `timeoutMs`.
   */
  publish(subject: string, data: Uint8Array, headers: Headers | undefined, timeoutMs: number): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      const sink: AckSink = { answer: (_, duplicate, error) => (error === undefined ? resolve(duplicate) : reject(error)) }
      this.publishTo(subject, data, headers, timeoutMs, sink, 0)
    })
  }

  /** `publish`, its answer to `sink` as publish `k` (at once if it cannot be sent). */
  publishTo(subject: string, data: Uint8Array, headers: Headers | undefined, timeoutMs: number, sink: AckSink, k: number): void {
    const token = ++this.next
    this.pending.set(token, { sink, k, subject, deadline: Date.now() + timeoutMs })
    this.sweeper ??= setInterval(() => this.sweep(), SWEEP_MS)
    try {
      this.nc.publish(subject, data, headers === undefined ? { reply: `${this.prefix}${token}` } : { reply: `${this.prefix}${token}`, headers })
    } catch (error) {
      this.pending.delete(token)
      sink.answer(k, false, error)
    }
  }

  /** Fails every publish still waiting (the connection closed), and stops. */
  close(error: Error): void {
    clearInterval(this.sweeper)
    this.sweeper = undefined
    this.sub.unsubscribe()
    const pending = [...this.pending.values()]
    this.pending.clear()
    for (const p of pending) p.sink.answer(p.k, false, error)
  }

  private answered(subject: string, data: Uint8Array, headers: Headers | undefined): void {
    const token = Number(subject.slice(this.prefix.length))
    const p = this.pending.get(token)
    if (p === undefined) return
    this.pending.delete(token)
    const fail = (error: Error) => p.sink.answer(p.k, false, error)
    if (data.length === 0 && headers?.code === 503) return fail(new this.nats.transport.errors.NoRespondersError(p.subject))
    const acked = pubAck(data)
    if (acked !== undefined) return p.sink.answer(p.k, acked)
    let answer: { error?: ApiError; stream?: string; duplicate?: boolean }
    try {
      answer = JSON.parse(decoder.decode(data))
    } catch {
      return fail(new Error(`an answer to a publish on ${p.subject} is not JSON`))
    }
    if (answer.error !== undefined) return fail(new this.nats.jetstream.JetStreamApiError(answer.error))
    if (typeof answer.stream !== 'string' || answer.stream === '') return fail(new Error(`an answer to a publish on ${p.subject} names no stream`))
    p.sink.answer(p.k, answer.duplicate === true)
  }

  /** Fails each publish whose deadline passed (it is sent again); stops when none waits. */
  private sweep(): void {
    const now = Date.now()
    for (const [token, p] of this.pending) {
      if (p.deadline > now) continue
      this.pending.delete(token)
      p.sink.answer(p.k, false, new Error(`no answer to a publish on ${p.subject} in time`))
    }
    if (this.pending.size === 0) {
      clearInterval(this.sweeper)
      this.sweeper = undefined
    }
  }
}
