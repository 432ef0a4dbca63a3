/**
 * Delivered messages. Fields are decoded from the frame on first access, so a subscriber that
 * reads only the payload never pays for decoding headers, and one that reads nothing but
 * `seq` pays for no decoding at all.
 */
import { decodePayload } from './codec.js'
import { decodeFrame, LAYOUT, type CodecName, type DecodedFrame, type Kind, type Priority } from './frame.js'

/** A delivered message. */
export interface Message<T = unknown> {
  readonly channel: string
  /** Position in the channel's total order. */
  readonly seq: number
  /** The producer's id, or one derived from the bus, channel and sequence number. */
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

/** @internal The decoded view of one frame; `payload` may be replaced by a validated value. */
export class FrameMessage<T = unknown> implements Message<T> {
  private decoded: DecodedFrame | undefined
  private value: { v: T } | undefined

  constructor(
    readonly channel: string,
    readonly seq: number,
    readonly bytes: Uint8Array,
    private readonly idPrefix: string,
  ) {}

  private get f(): DecodedFrame {
    this.decoded ??= decodeFrame(this.bytes)
    return this.decoded
  }

  get id(): string { return this.f.id || `${this.idPrefix}.${this.channel}.${this.seq}` }
  get kind(): Kind { return this.f.kind }
  get priority(): Priority { return this.f.priority }
  get timestamp(): number { return this.f.timestamp }
  get expiresAt(): number | undefined { return this.f.expiresAt === 0 ? undefined : this.f.expiresAt }
  get sender(): string | undefined { return this.f.sender }
  get recipient(): string | undefined { return this.f.recipient }
  get correlationId(): string | undefined { return this.f.correlationId }
  get causationId(): string | undefined { return this.f.causationId }
  get schema(): string | undefined { return this.f.schema }
  get headers(): Readonly<Record<string, string>> { return this.f.headers ?? {} }
  get codec(): CodecName { return this.f.codec }
  get payload(): T {
    this.value ??= { v: decodePayload(this.f.codec, this.f.payload) as T }
    return this.value.v
  }
  /** Replaces the payload with its validated (possibly transformed) form. */
  setPayload(value: T): void {
    this.value = { v: value }
  }
  /** The reply token a request carries (0 for other messages). */
  get replyToken(): number {
    return new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength).getUint32(LAYOUT.offReply, true)
  }

  toJSON(): Omit<Message<T>, 'bytes'> {
    const { channel, seq, id, kind, priority, timestamp, expiresAt, sender, recipient, correlationId, causationId, schema, headers, codec, payload } = this
    return { channel, seq, id, kind, priority, timestamp, expiresAt, sender, recipient, correlationId, causationId, schema, headers, codec, payload }
  }
}
