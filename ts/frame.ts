/**
 * The frame layout, mirrored from `crates/core/src/frame.rs`. The engines export the core's
 * constants; {@link checkLayout} refuses to run against a core whose layout differs.
 */
import { OrreryError } from './errors.js'

export const LAYOUT = {
  version: 1,
  headerLen: 40,
  offVersion: 4,
  offKind: 5,
  offPriority: 6,
  offCodec: 7,
  offChannel: 8,
  offFlags: 12,
  offTimestamp: 16,
  offExpires: 24,
  offReply: 32,
  offMetaLen: 36,
  deliveryHeaderLen: 16,
  maxPriority: 3,
} as const

/** Message kinds, by their code in the frame. */
export const KINDS = ['command', 'query', 'response', 'event', 'heartbeat', 'error', 'data', 'notification'] as const
export type Kind = (typeof KINDS)[number]
/** Priorities, by their code in the frame. */
export const PRIORITIES = ['low', 'normal', 'high', 'critical'] as const
export type Priority = (typeof PRIORITIES)[number]
/** Payload codecs, by their code in the frame. */
export const CODECS = ['raw', 'json', 'msgpack'] as const
export type CodecName = (typeof CODECS)[number]

/** Checks the core's exported `name=value` layout list against this file's copy. */
export function checkLayout(exported: string[]): void {
  const theirs = Object.fromEntries(exported.map((pair) => {
    const [name, value] = pair.split('=')
    return [name, Number(value)]
  }))
  for (const [name, value] of Object.entries(LAYOUT)) {
    if (theirs[name] !== value) {
      throw new OrreryError('LAYOUT_MISMATCH', `frame layout field ${name} is ${theirs[name]} in the core but ${value} in ts/frame.ts; rebuild the engines`, { details: { field: name } })
    }
  }
}

/** The per-message fields a publisher may set; the core reads only channel, priority and expiry. */
export interface FrameMeta {
  id: string
  kind: Kind
  priority: Priority
  codec: CodecName
  timestamp: number
  expiresAt: number
  sender?: string | undefined
  recipient?: string | undefined
  correlationId?: string | undefined
  causationId?: string | undefined
  schema?: string | undefined
  headers?: Readonly<Record<string, string>> | undefined
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/**
 * Builds a batch of frames laid end to end in one growing buffer, so a whole batch crosses
 * the boundary in one call.
 */
export class FrameWriter {
  private buf = new Uint8Array(4096)
  private view = new DataView(this.buf.buffer)
  private pos = 0
  count = 0

  private reserve(extra: number): void {
    if (this.pos + extra <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.pos + extra) size *= 2
    const next = new Uint8Array(size)
    next.set(this.buf.subarray(0, this.pos))
    this.buf = next
    this.view = new DataView(next.buffer)
  }

  private str8(value: string | undefined, field: string): void {
    const s = value ?? ''
    this.reserve(1 + s.length * 3)
    const { written } = encoder.encodeInto(s, this.buf.subarray(this.pos + 1))
    if (written > 255) throw new OrreryError('INVALID_OPTION', `${field} is longer than 255 bytes`, { details: { field } })
    this.buf[this.pos] = written
    this.pos += 1 + written
  }

  private str16(value: string): void {
    this.reserve(2 + value.length * 3)
    const { written } = encoder.encodeInto(value, this.buf.subarray(this.pos + 2))
    if (written > 0xffff) throw new OrreryError('INVALID_OPTION', 'a header is longer than 65535 bytes')
    this.view.setUint16(this.pos, written, true)
    this.pos += 2 + written
  }

  /** Appends one frame. On a throw the batch is left as it was before the call. */
  push(channel: number, meta: FrameMeta, payload: Uint8Array, replyToken = 0): void {
    const start = this.pos
    try {
      this.reserve(LAYOUT.headerLen)
      const v = this.view
      this.buf.fill(0, start, start + LAYOUT.headerLen)
      v.setUint8(start + LAYOUT.offVersion, LAYOUT.version)
      v.setUint8(start + LAYOUT.offKind, KINDS.indexOf(meta.kind))
      v.setUint8(start + LAYOUT.offPriority, PRIORITIES.indexOf(meta.priority))
      v.setUint8(start + LAYOUT.offCodec, CODECS.indexOf(meta.codec))
      v.setUint32(start + LAYOUT.offChannel, channel, true)
      v.setFloat64(start + LAYOUT.offTimestamp, meta.timestamp, true)
      v.setFloat64(start + LAYOUT.offExpires, meta.expiresAt, true)
      v.setUint32(start + LAYOUT.offReply, replyToken, true)
      this.pos = start + LAYOUT.headerLen
      const metaStart = this.pos
      this.str8(meta.id, 'id')
      this.str8(meta.sender, 'sender')
      this.str8(meta.recipient, 'recipient')
      this.str8(meta.correlationId, 'correlationId')
      this.str8(meta.causationId, 'causationId')
      this.str8(meta.schema, 'schema')
      const headers = meta.headers ? Object.entries(meta.headers) : []
      this.reserve(2)
      this.view.setUint16(this.pos, headers.length, true)
      this.pos += 2
      for (const [k, value] of headers) {
        this.str16(k)
        this.str16(value)
      }
      this.view.setUint32(start + LAYOUT.offMetaLen, this.pos - metaStart, true)
      this.reserve(payload.length)
      this.buf.set(payload, this.pos)
      this.pos += payload.length
      // Lengths past 4 GiB cannot be represented; the core refuses anything over its limit anyway.
      this.view.setUint32(start, Math.min(this.pos - start, 0xffffffff), true)
      this.count++
    } catch (err) {
      this.pos = start
      throw err
    }
  }

  /** The batch so far (a view, valid until the next push or reset). */
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.pos)
  }

  reset(): void {
    this.pos = 0
    this.count = 0
  }
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

/** Decodes a frame (a copy the caller owns). */
export function decodeFrame(frame: Uint8Array): DecodedFrame {
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength)
  let at = LAYOUT.headerLen
  const str8 = (): string | undefined => {
    const len = frame[at]!
    const s = len === 0 ? undefined : decoder.decode(frame.subarray(at + 1, at + 1 + len))
    at += 1 + len
    return s
  }
  const str16 = (): string => {
    const len = v.getUint16(at, true)
    const s = decoder.decode(frame.subarray(at + 2, at + 2 + len))
    at += 2 + len
    return s
  }
  const id = str8() ?? ''
  const sender = str8()
  const recipient = str8()
  const correlationId = str8()
  const causationId = str8()
  const schema = str8()
  const headerCount = v.getUint16(at, true)
  at += 2
  const headers: Record<string, string> = {}
  for (let i = 0; i < headerCount; i++) {
    const k = str16()
    headers[k] = str16()
  }
  const metaEnd = LAYOUT.headerLen + v.getUint32(LAYOUT.offMetaLen, true)
  return {
    channel: v.getUint32(LAYOUT.offChannel, true),
    kind: KINDS[frame[LAYOUT.offKind]!]!,
    priority: PRIORITIES[frame[LAYOUT.offPriority]!]!,
    codec: CODECS[frame[LAYOUT.offCodec]!] ?? 'raw',
    timestamp: v.getFloat64(LAYOUT.offTimestamp, true),
    expiresAt: v.getFloat64(LAYOUT.offExpires, true),
    id, sender, recipient, correlationId, causationId, schema, headers,
    payload: frame.subarray(metaEnd, v.getUint32(0, true)),
  }
}
