/**
 * The records that cross between the core and a transport driver (crates/core/src/bus/remote.rs):
 * egress (what the core asks the broker to do) and ingest (what the broker delivered), each a
 * 32-byte header, then the broker position, the route (a request's reply address), then the
 * frame, laid end to end.
 */

import { REMOTE } from '../engines/manifest.js'

export { REMOTE }

/**
 * One egress record, as `forEachEgress` hands it over (the views are valid during the visit):
 * `route` is a REPLY's reply address, empty for every other kind.
 */
export type EgressVisitor = (kind: number, id: number, value: number, pos: Uint8Array, frame: Uint8Array, route: Uint8Array) => void

const EMPTY = new Uint8Array(0)

/** Walks a drained egress batch. */
export function forEachEgress(batch: Uint8Array, visit: EgressVisitor): void {
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength)
  let at = 0
  while (at + REMOTE.headerLen <= batch.length) {
    const len = view.getUint32(at + REMOTE.offLength, true)
    const posLen = view.getUint32(at + REMOTE.offPosLen, true)
    const routeLen = view.getUint32(at + REMOTE.offRouteLen, true)
    const start = at + REMOTE.headerLen
    visit(
      view.getUint8(at + REMOTE.offKind),
      view.getUint32(at + REMOTE.offId, true),
      view.getFloat64(at + REMOTE.offValue, true),
      // Most records have no position or route: one empty view serves them (a view is an object).
      posLen === 0 ? EMPTY : batch.subarray(start, start + posLen),
      batch.subarray(start + posLen + routeLen, at + len),
      routeLen === 0 ? EMPTY : batch.subarray(start + posLen, start + posLen + routeLen),
    )
    at += len
  }
}

const utf8Bytes = new TextEncoder()

/** Whether every character of `s` is ASCII (one byte in UTF-8). */
function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false
  return true
}

/** Where the reply to a request read from the broker goes: the requester's address and its timeout (ms). */
export interface Route {
  readonly address: string
  readonly timeoutMs: number
}

/**
 * The route of an entry read from the broker, from its reply address and timeout as written
 * there; undefined (a plain message) when they are missing or not a route the core takes.
 */
export function routeOf(address: string | undefined, timeout: string | undefined): Route | undefined {
  if (address === undefined || address.length === 0 || timeout === undefined) return undefined
  const timeoutMs = Number(timeout)
  return timeoutMs > 0 ? { address, timeoutMs } : undefined
}

/**
 * A route as an ingest record carries it: the requester's timeout in ms (a float64, little-endian)
 * and then its reply address (UTF-8, one byte or more). A driver that reads routes in this form
 * hands them over without making a `Route` of them.
 */
export type RouteBlock = Uint8Array

/** A `Route`'s address as bytes (undefined for a block, or no route). */
function addressOf(route: Route | RouteBlock | undefined): Uint8Array | undefined {
  return route === undefined || route instanceof Uint8Array ? undefined : utf8Bytes.encode(route.address)
}

/** The bytes of a route in an ingest record (0: none). */
function routeLength(route: Route | RouteBlock | undefined, address: Uint8Array | undefined): number {
  if (route === undefined) return 0
  return route instanceof Uint8Array ? route.length : REMOTE.routeTimeoutLen + address!.length
}

/** The route a block holds; undefined when it is no route the core takes (no address, a timeout not > 0). */
export function routeOfBlock(block: RouteBlock): Route | undefined {
  if (block.length <= REMOTE.routeTimeoutLen) return undefined
  const timeoutMs = new DataView(block.buffer, block.byteOffset, block.byteLength).getFloat64(0, true)
  return timeoutMs > 0 ? { address: utf8.decode(block.subarray(REMOTE.routeTimeoutLen)), timeoutMs } : undefined
}

const utf8 = new TextDecoder()

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

  private header(kind: number, id: number, posLen: number, frameLen: number, count: number, value: number, routeLen = 0): number {
    const len = REMOTE.headerLen + posLen + routeLen + frameLen
    this.reserve(len)
    const at = this.pos
    this.buf.fill(0, at, at + REMOTE.headerLen)
    this.view.setUint32(at + REMOTE.offLength, len, true)
    this.view.setUint8(at + REMOTE.offKind, kind)
    this.view.setUint32(at + REMOTE.offId, id, true)
    this.view.setUint32(at + REMOTE.offPosLen, posLen, true)
    this.view.setUint32(at + REMOTE.offCount, count, true)
    this.view.setUint32(at + REMOTE.offRouteLen, routeLen, true)
    this.view.setFloat64(at + REMOTE.offValue, value, true)
    this.count++
    return at + REMOTE.headerLen
  }

  /** A broadcast entry of channel `channel`, written by the broker at `at` (ms); a request when it has a route. */
  live(channel: number, at: number, frame: Uint8Array, route?: Route | RouteBlock): void {
    const address = addressOf(route)
    const start = this.header(REMOTE.live, channel, 0, frame.length, 0, at, routeLength(route, address))
    this.pos = this.body(start, route, address, frame)
  }

  /** A delivery to group `group`, the broker's `count`th, at broker position `position`; a request when it has a route. */
  group(group: number, count: number, position: string, frame: Uint8Array, route?: Route | RouteBlock): void {
    // Positions are ASCII (stream ids, sequence numbers, offsets): written in place, not encoded.
    const pos = isAscii(position) ? undefined : utf8Bytes.encode(position)
    const posLen = pos?.length ?? position.length
    const address = addressOf(route)
    const start = this.header(REMOTE.group, group, posLen, frame.length, count, 0, routeLength(route, address))
    if (pos !== undefined) this.buf.set(pos, start)
    else for (let i = 0; i < posLen; i++) this.buf[start + i] = position.charCodeAt(i)
    this.pos = this.body(start + posLen, route, address, frame)
  }

  /** A reply to one of this process's requests (its frame carries the request's token). */
  replied(frame: Uint8Array): void {
    const start = this.header(REMOTE.replied, 0, 0, frame.length, 0, 0)
    this.buf.set(frame, start)
    this.pos = start + frame.length
  }

  /** A request of this process's (reply token `token`) that its driver could not write: the core forgets it. */
  unsent(token: number): void {
    this.pos = this.header(REMOTE.unsent, token, 0, 0, 0, 0)
  }

  /** Writes route and frame from `at`; returns where the record ends. */
  private body(at: number, route: Route | RouteBlock | undefined, address: Uint8Array | undefined, frame: Uint8Array): number {
    if (route instanceof Uint8Array) {
      this.buf.set(route, at)
      at += route.length
    } else if (route !== undefined && address !== undefined) {
      this.view.setFloat64(at, route.timeoutMs, true)
      this.buf.set(address, at + REMOTE.routeTimeoutLen)
      at += REMOTE.routeTimeoutLen + address.length
    }
    this.buf.set(frame, at)
    return at + frame.length
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
