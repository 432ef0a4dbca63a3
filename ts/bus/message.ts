/**
 * Delivered messages. Each field is read from the frame on first access, on its own: a
 * subscriber that reads only the payload decodes no string, and one that reads `seq` decodes
 * nothing at all (a TextDecoder call alone costs ~100 ns, more than the rest of a delivery).
 */
import { decodePayload } from '../codec.js'
import {
  CODECS,
  frameF64,
  frameHeaders,
  framePayload,
  frameString,
  KINDS,
  LAYOUT,
  MetaString,
  PRIORITIES,
  type CodecName,
  type Kind,
  type Priority,
} from '../frame.js'
import { INSPECT, inspectAs, type InspectFn, type InspectOptions } from '../inspect.js'

/** A delivered message. */
export interface Message<T = unknown> {
  readonly channel: string
  /** Position in the channel's total order. */
  readonly seq: number
  /** The producer's id, or the one the publishing bus generated. */
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
  /** Schema name with version, `name@major.minor`. */
  readonly schema: string | undefined
  readonly headers: Readonly<Record<string, string>>
  readonly codec: CodecName
  readonly payload: T
  /** The frame as it crossed the boundary. */
  readonly bytes: Uint8Array
}

/** Marks a payload not decoded yet (undefined is a valid payload). */
const UNDECODED: unique symbol = Symbol('undecoded')

/**
 * A message read lazily from its frame; `payload` may be replaced by a validated value. Not
 * exported from the package: users see it as a {@link Message}.
 */
export class FrameMessage<T = unknown> implements Message<T> {
  private value: T | typeof UNDECODED = UNDECODED
  private headerMap: Record<string, string> | undefined

  constructor(
    readonly channel: string,
    readonly seq: number,
    readonly bytes: Uint8Array,
  ) {}

  get id(): string {
    return frameString(this.bytes, MetaString.Id) ?? ''
  }
  get kind(): Kind {
    return KINDS[this.bytes[LAYOUT.offKind]!]!
  }
  get priority(): Priority {
    return PRIORITIES[this.bytes[LAYOUT.offPriority]!]!
  }
  get codec(): CodecName {
    return CODECS[this.bytes[LAYOUT.offCodec]!] ?? 'raw'
  }
  get timestamp(): number {
    return frameF64(this.bytes, LAYOUT.offTimestamp)
  }
  get expiresAt(): number | undefined {
    const at = frameF64(this.bytes, LAYOUT.offExpires)
    return at === 0 ? undefined : at
  }
  get sender(): string | undefined {
    return frameString(this.bytes, MetaString.Sender)
  }
  get recipient(): string | undefined {
    return frameString(this.bytes, MetaString.Recipient)
  }
  get correlationId(): string | undefined {
    return frameString(this.bytes, MetaString.CorrelationId)
  }
  get causationId(): string | undefined {
    return frameString(this.bytes, MetaString.CausationId)
  }
  get schema(): string | undefined {
    return frameString(this.bytes, MetaString.Schema)
  }
  get headers(): Readonly<Record<string, string>> {
    this.headerMap ??= frameHeaders(this.bytes)
    return this.headerMap
  }
  get payload(): T {
    if (this.value === UNDECODED) this.value = decodePayload(this.codec, framePayload(this.bytes)) as T
    return this.value
  }
  /** Replaces the payload with its validated (possibly transformed) form. */
  setPayload(value: T): void {
    this.value = value
  }
  /** The reply token a request carries (0 for other messages). */
  get replyToken(): number {
    const b = this.bytes
    const at = LAYOUT.offReply
    return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0
  }

  toJSON(): Omit<Message<T>, 'bytes'> {
    const { channel, seq, id, kind, priority, timestamp, expiresAt, sender, recipient, correlationId, causationId, schema, headers, codec, payload } = this
    return { channel, seq, id, kind, priority, timestamp, expiresAt, sender, recipient, correlationId, causationId, schema, headers, codec, payload }
  }

  /** `console.log(message)` prints the message's fields (decoding them), not its frame. */
  [INSPECT](depth: number, options: InspectOptions, inspect?: InspectFn): string | object {
    return inspectAs('Message', this.toJSON(), depth, options, inspect)
  }
}
