/**
 * The frame layout of `crates/core/src/frame.rs`, as the core's manifest gives it
 * (`engines/manifest.ts`, generated; the start-up check refuses an engine built from another).
 */
import { FRAME } from './engines/manifest.js'
import { OrreryError } from './errors.js'

export const LAYOUT = FRAME

/** Message kinds, by their code in the frame. */
export const KINDS = ['command', 'query', 'response', 'event', 'heartbeat', 'error', 'data', 'notification'] as const
export type Kind = (typeof KINDS)[number]
/** Priorities, by their code in the frame. */
export const PRIORITIES = ['low', 'normal', 'high', 'critical'] as const
export type Priority = (typeof PRIORITIES)[number]
/** Payload codecs, by their code in the frame. */
export const CODECS = ['raw', 'json', 'msgpack'] as const
export type CodecName = (typeof CODECS)[number]

/**
 * The ids a bus generates, `<prefix>-<n>` for n = 0, 1, 2, ...: their text is kept as bytes and
 * counted up in place, so writing one into a frame is a copy (no string, no division per digit).
 */
export class GeneratedIds {
  /** The current id's ASCII bytes, `length` of them. */
  text: Uint8Array
  length: number
  /** The current id's n. */
  n = 0
  private readonly digitsAt: number

  constructor(prefix: string) {
    const head = encoder.encode(`${prefix}-`)
    this.digitsAt = head.length
    this.text = new Uint8Array(head.length + 24)
    this.text.set(head)
    this.text[head.length] = 0x30
    this.length = head.length + 1
  }

  /** Moves to the next id; returns its n. */
  next(): number {
    const text = this.text
    let i = this.length - 1
    while (i >= this.digitsAt && text[i] === 0x39) text[i--] = 0x30
    if (i >= this.digitsAt) text[i] = text[i]! + 1
    else {
      // Every digit was 9: one digit more, a 1 ahead of the zeros.
      if (this.length === text.length) this.text = grown(text)
      this.text[this.digitsAt] = 0x31
      this.text[this.length] = 0x30
      this.length++
    }
    return ++this.n
  }
}

function grown(text: Uint8Array): Uint8Array {
  const next = new Uint8Array(text.length * 2)
  next.set(text)
  return next
}

/** The optional envelope fields of a frame's metadata section. */
export interface Envelope {
  readonly sender?: string | undefined
  readonly recipient?: string | undefined
  readonly correlationId?: string | undefined
  readonly causationId?: string | undefined
  readonly schema?: string | undefined
  readonly headers?: Readonly<Record<string, string>> | undefined
}

/** The per-message fields a publisher may set; the core reads only channel, priority and expiry. */
export interface FrameMeta extends Envelope {
  id: string
  kind: Kind
  priority: Priority
  codec: CodecName
  timestamp: number
  expiresAt: number
}

/** Codes by name (Maps, so a user string such as `__proto__` finds nothing). */
export const KIND_CODES = new Map<string, number>(KINDS.map((k, i) => [k, i]))
export const PRIORITY_CODES = new Map<string, number>(PRIORITIES.map((p, i) => [p, i]))
export const CODEC_CODES = new Map<string, number>(CODECS.map((c, i) => [c, i]))

const encoder = new TextEncoder()
/** Longer payload texts are encoded apart and copied: reserving three bytes a character would grow the batch buffer for good. */
const MAX_TEXT_IN_PLACE = 64 * 1024
const decoder = new TextDecoder()

/**
 * Builds a batch of frames laid end to end in one growing buffer, so a whole batch crosses
 * the boundary in one call.
 */
export class FrameWriter {
  private buf = new Uint8Array(4096)
  private view = new DataView(this.buf.buffer)
  private pos = 0

  private reserve(extra: number): void {
    if (this.pos + extra <= this.buf.length) return
    // A size that is not a finite count (a wrong-typed field's NaN length) must never grow the
    // buffer: `size < NaN` is false, so each such call doubled it (768 MiB after 16 publishes).
    if (!(extra >= 0 && extra <= 0xffffffff)) throw new OrreryError('INVALID_ARGUMENT', `a frame cannot hold ${String(extra)} more bytes`)
    let size = this.buf.length * 2
    while (size < this.pos + extra) size *= 2
    const next = new Uint8Array(size)
    next.set(this.buf.subarray(0, this.pos))
    this.buf = next
    this.view = new DataView(next.buffer)
  }

  private str8(value: string | undefined, field: string): void {
    if (value !== undefined && typeof value !== 'string') throw new OrreryError('INVALID_OPTION', `${field} must be a string`, { details: { option: field } })
    const s = value ?? ''
    const len = s.length
    this.reserve(1 + len * 3)
    // Most envelope strings are empty or short ASCII (ids, agent names).
    if (len <= 64 && copyAscii(this.buf, this.pos + 1, s)) {
      this.buf[this.pos] = len
      this.pos += 1 + len
      return
    }
    const { written } = encoder.encodeInto(s, this.buf.subarray(this.pos + 1))
    if (written > 255) throw new OrreryError('INVALID_OPTION', `${field} is longer than 255 bytes`, { details: { field } })
    this.buf[this.pos] = written
    this.pos += 1 + written
  }

  /** Writes the generated id's current text. */
  private generatedId(id: GeneratedIds): void {
    const len = id.length
    this.reserve(1 + len)
    const buf = this.buf
    const text = id.text
    // A byte loop: TypedArray.set costs more than the whole copy for ~16 bytes.
    const at = this.pos + 1
    for (let i = 0; i < len; i++) buf[at + i] = text[i]!
    buf[this.pos] = len
    this.pos = at + len
  }

  /**
   * Writes `text` as UTF-8 in place, with no length (a payload's JSON): no array is made for it,
   * and a short ASCII text is copied by a loop (encodeInto costs ~40 ns a call).
   */
  private utf8(text: string): void {
    const len = text.length
    if (len > MAX_TEXT_IN_PLACE) {
      const bytes = encoder.encode(text)
      this.reserve(bytes.length)
      this.buf.set(bytes, this.pos)
      this.pos += bytes.length
      return
    }
    this.reserve(len * 3)
    if (len <= 64 && copyAscii(this.buf, this.pos, text)) {
      this.pos += len
      return
    }
    this.pos += encoder.encodeInto(text, this.buf.subarray(this.pos)).written
  }

  private str16(value: string): void {
    if (typeof value !== 'string') throw new OrreryError('INVALID_OPTION', 'a header name and value must be strings', { details: { option: 'headers' } })
    const len = value.length
    this.reserve(2 + len * 3)
    // Header names and most values are short ASCII (a routed request's capability header goes
    // with every call).
    if (len <= 64 && copyAscii(this.buf, this.pos + 2, value)) {
      this.buf[this.pos] = len
      this.buf[this.pos + 1] = 0
      this.pos += 2 + len
      return
    }
    const { written } = encoder.encodeInto(value, this.buf.subarray(this.pos + 2))
    if (written > 0xffff) throw new OrreryError('INVALID_OPTION', 'a header is longer than 65535 bytes')
    this.view.setUint16(this.pos, written, true)
    this.pos += 2 + written
  }

  /** Appends one frame (see {@link FrameMeta}). On a throw the batch is left as it was before the call. */
  push(channel: number, meta: FrameMeta, payload: Uint8Array, replyToken = 0): void {
    this.pushCoded(
      channel,
      KIND_CODES.get(meta.kind)!,
      PRIORITY_CODES.get(meta.priority)!,
      CODEC_CODES.get(meta.codec)!,
      meta.timestamp,
      meta.expiresAt,
      meta.id,
      meta,
      payload,
      replyToken,
    )
  }

  /**
   * Appends one frame from already-coded fields: the publish hot path, which allocates nothing
   * per message. A string payload is a JSON payload's text, written as UTF-8. On a throw the
   * batch is left as it was before the call.
   */
  pushCoded(
    channel: number,
    kind: number,
    priority: number,
    codec: number,
    timestamp: number,
    expiresAt: number,
    id: string | GeneratedIds,
    envelope: Envelope,
    payload: Uint8Array | string,
    replyToken: number,
  ): void {
    const start = this.pos
    try {
      this.reserve(LAYOUT.headerLen + 8)
      const v = this.view
      // Version, kind, priority and codec are the bytes at offsets 4 to 7: one write.
      v.setUint32(start + LAYOUT.offVersion, LAYOUT.version | (kind << 8) | (priority << 16) | (codec << 24), true)
      v.setUint32(start + LAYOUT.offChannel, channel, true)
      v.setUint32(start + LAYOUT.offFlags, 0, true)
      v.setFloat64(start + LAYOUT.offTimestamp, timestamp, true)
      v.setFloat64(start + LAYOUT.offExpires, expiresAt, true)
      v.setUint32(start + LAYOUT.offReply, replyToken, true)
      this.pos = start + LAYOUT.headerLen
      const metaStart = this.pos
      if (typeof id === 'string') this.str8(id, 'id')
      else this.generatedId(id)
      const { sender, recipient, correlationId, causationId, schema, headers } = envelope
      if (
        sender === undefined &&
        recipient === undefined &&
        correlationId === undefined &&
        causationId === undefined &&
        schema === undefined &&
        headers === undefined
      ) {
        // The common envelope: five empty strings and no headers, seven zero bytes (plain stores:
        // TypedArray.fill costs more than the writes for so few bytes).
        this.reserve(7)
        const buf = this.buf
        const at = this.pos
        buf[at] = 0
        buf[at + 1] = 0
        buf[at + 2] = 0
        buf[at + 3] = 0
        buf[at + 4] = 0
        buf[at + 5] = 0
        buf[at + 6] = 0
        this.pos = at + 7
      } else {
        this.str8(sender, 'sender')
        this.str8(recipient, 'recipient')
        this.str8(correlationId, 'correlationId')
        this.str8(causationId, 'causationId')
        this.str8(schema, 'schema')
        const pairs = headers ? Object.entries(headers) : []
        if (pairs.length > 0xffff) throw new OrreryError('INVALID_OPTION', 'a message carries at most 65535 headers', { details: { option: 'headers' } })
        this.reserve(2)
        this.view.setUint16(this.pos, pairs.length, true)
        this.pos += 2
        for (const [k, value] of pairs) {
          this.str16(k)
          this.str16(value)
        }
      }
      this.view.setUint32(start + LAYOUT.offMetaLen, this.pos - metaStart, true)
      if (typeof payload === 'string') this.utf8(payload)
      else {
        this.reserve(payload.length)
        this.buf.set(payload, this.pos)
        this.pos += payload.length
      }
      // Lengths past 4 GiB cannot be represented; the core refuses anything over its limit anyway.
      this.view.setUint32(start, Math.min(this.pos - start, 0xffffffff), true)
    } catch (err) {
      this.pos = start
      throw err
    }
  }

  /** The batch so far (a view, valid until the next push or reset). */
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.pos)
  }

  /** How many bytes the frames written so far take (where the next one starts). */
  get size(): number {
    return this.pos
  }

  reset(): void {
    this.pos = 0
  }
}

/**
 * Copies `s` into `buf` from `at` if it is all ASCII; says whether it did (what it wrote before a
 * wider character is written over after). A byte loop: encodeInto costs ~40 ns a call even for an
 * empty string.
 */
function copyAscii(buf: Uint8Array, at: number, s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c > 0x7f) return false
    buf[at + i] = c
  }
  return true
}

/** Walks the delivery records in a drained batch. `frame` views are only valid during the walk. */
export function forEachRecord(batch: Uint8Array, visit: (subscription: number, attempt: number, seq: number, frame: Uint8Array) => void): void {
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength)
  let at = 0
  while (at < batch.length) {
    const sub = view.getUint32(at, true)
    const attempt = view.getUint32(at + 4, true)
    const seq = view.getFloat64(at + 8, true)
    const body = at + LAYOUT.deliveryHeaderLen
    const len = view.getUint32(body, true)
    visit(sub, attempt, seq, batch.subarray(body, body + len))
    at = body + len
  }
}

/** Every field of a frame, decoded. */
export interface DecodedFrame extends FrameMeta {
  channel: number
  payload: Uint8Array
}

/** Reads a little-endian u32. */
function u32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0
}

/** Decodes UTF-8; short ASCII (ids, names) without TextDecoder, which costs ~100 ns a call. */
function utf8(bytes: Uint8Array, start: number, end: number): string {
  if (end - start <= 32) {
    let ascii = true
    for (let i = start; i < end; i++)
      if (bytes[i]! > 0x7f) {
        ascii = false
        break
      }
    if (ascii) return String.fromCharCode.apply(null, bytes.subarray(start, end) as unknown as number[])
  }
  return decoder.decode(bytes.subarray(start, end))
}

/** The metadata strings by position: id, sender, recipient, correlation id, causation id, schema. */
export const MetaString = { Id: 0, Sender: 1, Recipient: 2, CorrelationId: 3, CausationId: 4, Schema: 5 } as const
export type MetaString = (typeof MetaString)[keyof typeof MetaString]

/** One metadata string of a frame (undefined when empty). */
export function frameString(frame: Uint8Array, which: MetaString): string | undefined {
  let at = LAYOUT.headerLen
  for (let i = 0; i < which; i++) at += 1 + frame[at]!
  const len = frame[at]!
  return len === 0 ? undefined : utf8(frame, at + 1, at + 1 + len)
}

/** The headers of a frame. */
export function frameHeaders(frame: Uint8Array): Record<string, string> {
  let at = LAYOUT.headerLen
  for (let i = 0; i < 6; i++) at += 1 + frame[at]!
  const count = frame[at]! | (frame[at + 1]! << 8)
  at += 2
  const headers: Record<string, string> = {}
  for (let i = 0; i < count; i++) {
    const kLen = frame[at]! | (frame[at + 1]! << 8)
    const k = utf8(frame, at + 2, at + 2 + kLen)
    at += 2 + kLen
    const vLen = frame[at]! | (frame[at + 1]! << 8)
    const value = utf8(frame, at + 2, at + 2 + vLen)
    // Assigning `__proto__` would set the prototype (a string is ignored): the header was lost.
    if (k === '__proto__') Object.defineProperty(headers, k, { value, enumerable: true, writable: true, configurable: true })
    else headers[k] = value
    at += 2 + vLen
  }
  return headers
}

/**
 * One header of a frame, decoded alone (undefined when absent): the runner needs only the
 * capability header of each message, and decoding every header into an object cost ~4% of a
 * routed request. A frame naming it twice gives the last value, as {@link frameHeaders} does.
 * `likely` is returned as it is when the value's bytes spell it (ASCII only): no string is made
 * for the value a caller sees again and again (an agent's capability).
 */
export function frameHeader(frame: Uint8Array, name: string, likely?: string): string | undefined {
  const n = name.length
  for (let i = 0; i < n; i++) {
    if (name.charCodeAt(i) > 0x7f) {
      const all = frameHeaders(frame)
      return Object.hasOwn(all, name) ? all[name] : undefined
    }
  }
  let at = LAYOUT.headerLen
  for (let i = 0; i < 6; i++) at += 1 + frame[at]!
  const count = frame[at]! | (frame[at + 1]! << 8)
  at += 2
  let found: string | undefined
  for (let i = 0; i < count; i++) {
    const kLen = frame[at]! | (frame[at + 1]! << 8)
    const k = at + 2
    at = k + kLen
    const vLen = frame[at]! | (frame[at + 1]! << 8)
    if (kLen === n) {
      let same = true
      for (let j = 0; j < n; j++)
        if (frame[k + j] !== name.charCodeAt(j)) {
          same = false
          break
        }
      if (same) found = likely !== undefined && sameAscii(frame, at + 2, vLen, likely) ? likely : utf8(frame, at + 2, at + 2 + vLen)
    }
    at += 2 + vLen
  }
  return found
}

/** Whether `len` bytes at `at` are exactly the ASCII string `text`. */
function sameAscii(frame: Uint8Array, at: number, len: number, text: string): boolean {
  if (text.length !== len) return false
  for (let i = 0; i < len; i++) {
    const c = text.charCodeAt(i)
    if (c > 0x7f || frame[at + i] !== c) return false
  }
  return true
}

/** The payload bytes of a frame (a view). */
export function framePayload(frame: Uint8Array): Uint8Array {
  return frame.subarray(LAYOUT.headerLen + u32(frame, LAYOUT.offMetaLen), u32(frame, 0))
}

/** A frame's f64 field at `offset` (timestamp, expiry). */
export function frameF64(frame: Uint8Array, offset: number): number {
  return new DataView(frame.buffer, frame.byteOffset + offset, 8).getFloat64(0, true)
}

/** Decodes every field of a frame at once (the delivery path decodes field by field instead). */
export function decodeFrame(frame: Uint8Array): DecodedFrame {
  return {
    channel: u32(frame, LAYOUT.offChannel),
    kind: KINDS[frame[LAYOUT.offKind]!]!,
    priority: PRIORITIES[frame[LAYOUT.offPriority]!]!,
    codec: CODECS[frame[LAYOUT.offCodec]!] ?? 'raw',
    timestamp: frameF64(frame, LAYOUT.offTimestamp),
    expiresAt: frameF64(frame, LAYOUT.offExpires),
    id: frameString(frame, MetaString.Id) ?? '',
    sender: frameString(frame, MetaString.Sender),
    recipient: frameString(frame, MetaString.Recipient),
    correlationId: frameString(frame, MetaString.CorrelationId),
    causationId: frameString(frame, MetaString.CausationId),
    schema: frameString(frame, MetaString.Schema),
    headers: frameHeaders(frame),
    payload: framePayload(frame),
  }
}
