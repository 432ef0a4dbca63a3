/**
 * The records that cross between the core and a transport driver (crates/core/src/bus/remote.rs):
 * egress (what the core asks the broker to do) and ingest (what the broker delivered), each a
 * 32-byte header, then the broker position, then the frame, laid end to end.
 */

import { REMOTE } from '../engines/manifest.js'

export { REMOTE }

/** One egress record, as `forEachEgress` hands it over (the views are valid during the visit). */
export type EgressVisitor = (kind: number, id: number, value: number, pos: Uint8Array, frame: Uint8Array, record: Uint8Array) => void

/** Walks a drained egress batch. */
export function forEachEgress(batch: Uint8Array, visit: EgressVisitor): void {
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength)
  let at = 0
  while (at + REMOTE.headerLen <= batch.length) {
    const len = view.getUint32(at + REMOTE.offLength, true)
    const posLen = view.getUint32(at + REMOTE.offPosLen, true)
    const start = at + REMOTE.headerLen
    visit(
      view.getUint8(at + REMOTE.offKind),
      view.getUint32(at + REMOTE.offId, true),
      view.getFloat64(at + REMOTE.offValue, true),
      batch.subarray(start, start + posLen),
      batch.subarray(start + posLen, at + len),
      batch.subarray(at, at + len),
    )
    at += len
  }
}

const ascii = new TextEncoder()

/** Builds an ingest batch in one growing buffer. */
export class IngestWriter {
  private buf = new Uint8Array(4096)
  private view = new DataView(this.buf.buffer)
  private pos = 0
  /** Records written since the last `take`. */
  count = 0

  private reserve(extra: number): void {
    if (this.pos + extra <= this.buf.length) return
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + extra))
    next.set(this.buf.subarray(0, this.pos))
    this.buf = next
    this.view = new DataView(next.buffer)
  }

  private header(kind: number, id: number, posLen: number, frameLen: number, count: number, value: number): number {
    const len = REMOTE.headerLen + posLen + frameLen
    this.reserve(len)
    const at = this.pos
    this.buf.fill(0, at, at + REMOTE.headerLen)
    this.view.setUint32(at + REMOTE.offLength, len, true)
    this.view.setUint8(at + REMOTE.offKind, kind)
    this.view.setUint32(at + REMOTE.offId, id, true)
    this.view.setUint32(at + REMOTE.offPosLen, posLen, true)
    this.view.setUint32(at + REMOTE.offCount, count, true)
    this.view.setFloat64(at + REMOTE.offValue, value, true)
    this.count++
    return at + REMOTE.headerLen
  }

  /** A broadcast entry of channel `channel`, written by the broker at `at` (ms). */
  live(channel: number, at: number, frame: Uint8Array): void {
    const start = this.header(REMOTE.live, channel, 0, frame.length, 0, at)
    this.buf.set(frame, start)
    this.pos = start + frame.length
  }

  /** A delivery to group `group`, the broker's `count`th, at broker position `position`. */
  group(group: number, count: number, position: string, frame: Uint8Array): void {
    const pos = ascii.encode(position)
    const start = this.header(REMOTE.group, group, pos.length, frame.length, count, 0)
    this.buf.set(pos, start)
    this.buf.set(frame, start + pos.length)
    this.pos = start + pos.length + frame.length
  }

  /** The batch so far (a view valid until the next write), and a fresh start. */
  take(): Uint8Array | undefined {
    if (this.count === 0) return undefined
    const out = this.buf.subarray(0, this.pos)
    this.pos = 0
    this.count = 0
    return out
  }
}
