/**
 * What every driver keeps of the writes it was handed: each write's records, the duplicates the
 * broker found, its caller's Promise and its publishTimeoutMs timer; and what the drivers share
 * about groups and frames (the broker threshold, the dedup id) and how their errors are made.
 */
import { bytesToHex } from '@noble/hashes/utils.js'

import { OrreryError } from '../errors.js'
import { encodePayload } from '../codec.js'
import { decodeFrame, FrameWriter, LAYOUT as FRAME } from '../frame.js'
import type { Markers, OpenWrites } from './catch-up.js'
import type { Egress, GroupRef } from './driver.js'

/** A driver's error: the broker cannot be reached or refused (`TRANSPORT_*`), or the transport closed. */
export function transportError(
  code: 'TRANSPORT_UNAVAILABLE' | 'TRANSPORT_AUTH' | 'CLOSED',
  message: string,
  options: { cause?: unknown; details?: Record<string, unknown> } = {},
): OrreryError {
  return new OrreryError(code, message, options)
}

/** A write a driver queued and has not settled (of egress records, or what else a driver queues: `R`). */
export interface PendingWrite<R = Egress> {
  records: R[]
  /** Publishes the broker dropped as duplicates so far. */
  duplicates: number
  settled: boolean
  /** Its place among the driver's writes: a write retried goes back in this order. */
  readonly order: number
  /** When it stops being retried (its publishTimeoutMs ends). */
  readonly deadline: number
  readonly resolve: (duplicates: number) => void
  readonly reject: (error: unknown) => void
  timer: ReturnType<typeof setTimeout> | undefined
  /** Taken from its driver's queue to be sent (at least once): closed before it is answered, the broker may have stored it. */
  sent: boolean
  /**
   * What it is sent after: the markers of `latest` subscribes pending on its streams when it was
   * made (see `Markers.hold`); undefined once they settled, or when there were none.
   */
  after: Promise<unknown> | undefined
}

/**
 * The writes of one driver: made, settled once each, failed together at close, awaited by
 * `flushed`; while any is open, known to its kind's `markers` (a `latest` subscribe's marker is
 * asked after the writes to its stream open then, see `Markers.earlier`).
 */
export class Writes<R = Egress> implements OpenWrites {
  /** Every write not settled yet, with its caller's Promise. */
  private readonly open = new Map<PendingWrite<R>, Promise<number>>()
  /** Their Promises (what `settled` waits for). */
  private readonly unsettled = new Set<Promise<number>>()
  private made = 0

  /** `keyOf` gives the marker key of a record (see `Markers`), undefined for one on no stream. */
  constructor(
    private readonly markers: Markers,
    private readonly keyOf: (record: R) => string | undefined,
  ) {}

  /** Whether a write not settled yet holds a record `is` picks. */
  holds(is: (record: R) => boolean): boolean {
    for (const w of this.open.keys()) if (w.records.some(is)) return true
    return false
  }

  /** A write of `records` that fails with `expired(write)` unless settled within `timeoutMs`. */
  add(records: readonly R[], timeoutMs: number, expired: (write: PendingWrite<R>) => OrreryError): { write: PendingWrite<R>; written: Promise<number> } {
    const made = this.make(records, Date.now() + timeoutMs)
    const w = made.write
    w.timer = setTimeout(() => {
      const error = expired(w)
      if (this.watching) this.timedOut ??= error
      this.fail(w, error)
    }, timeoutMs)
    this.unsettled.add(made.written)
    const forget = () => void this.unsettled.delete(made.written)
    made.written.then(forget, forget)
    return made
  }

  /**
   * A write with no time limit, which `settled` does not wait for: a read asked in order with the
   * writes (a `latest` subscribe's marker). It settles when answered, or fails at close.
   */
  ask(records: readonly R[]): { write: PendingWrite<R>; written: Promise<number> } {
    return this.make(records, Number.POSITIVE_INFINITY)
  }

  private make(records: readonly R[], deadline: number): { write: PendingWrite<R>; written: Promise<number> } {
    let write: PendingWrite<R> | undefined
    const written = new Promise<number>((resolve, reject) => {
      write = {
        records: [...records],
        duplicates: 0,
        settled: false,
        order: this.made++,
        deadline,
        resolve,
        reject,
        timer: undefined,
        sent: false,
        after: undefined,
      }
    })
    if (this.open.size === 0) this.markers.writingOn(this, true)
    this.open.set(write!, written)
    return { write: write!, written }
  }

  /** A write made outside the queue (answered at once), awaited by `settled` as the others are. */
  track(written: Promise<number>): Promise<number> {
    this.unsettled.add(written)
    const forget = () => void this.unsettled.delete(written)
    written.then(forget, forget)
    return written
  }

  fail(write: PendingWrite<R>, error: unknown): void {
    if (this.settle(write)) write.reject(error)
  }

  succeed(write: PendingWrite<R>): void {
    if (this.settle(write)) write.resolve(write.duplicates)
  }

  /**
   * Fails every open write, as its driver closed (`details` of each write's error): one sent and
   * not answered may have been stored, one never sent was not.
   */
  closeAll(details: (write: PendingWrite<R>) => Record<string, unknown>): void {
    for (const write of [...this.open.keys()])
      this.fail(
        write,
        transportError(
          'CLOSED',
          write.sent ? 'this Orrery closed before the broker answered the write: it may have been stored' : 'this Orrery closed before the write was sent',
          { details: details(write) },
        ),
      )
  }

  openOn(key: string): Array<Promise<number>> {
    const out: Array<Promise<number>> = []
    for (const [write, written] of this.open) if (write.records.some((r) => this.keyOf(r) === key)) out.push(written)
    return out
  }

  /** Resolves once every write made so far settled, either way. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.unsettled])
  }

  /** Set by `watch` (a stop began): the first write since that ran out of time. */
  private watching = false
  private timedOut: OrreryError | undefined

  /** A stop began: a write that runs out of its time from now on (its broker unreachable) is kept for `lost`. */
  watch(): void {
    this.watching = true
  }

  /** The first write that ran out of its time since `watch`, if one did: the stop did not write everything. */
  lost(): OrreryError | undefined {
    return this.timedOut
  }

  private settle(write: PendingWrite<R>): boolean {
    if (write.settled) return false
    write.settled = true
    this.open.delete(write)
    if (this.open.size === 0) this.markers.writingOn(this, false)
    clearTimeout(write.timer)
    return true
  }
}

/** The broker's delivery threshold for a group: a little over its visibility timeout, so the core's lease ends first. */
export function threshold(group: GroupRef): number {
  return leaseThreshold(group.visibilityMs)
}

/** The broker's delivery threshold for a visibility timeout of `visibilityMs` (see `threshold`). */
export function leaseThreshold(visibilityMs: number): number {
  return Math.ceil(visibilityMs + Math.max(1000, visibilityMs / 10))
}

/** A frame's id bytes as hex (the broker's dedup id): the first metadata string. */
export function frameIdHex(frame: Uint8Array): string {
  const len = frame[FRAME.headerLen] ?? 0
  return bytesToHex(frame.subarray(FRAME.headerLen + 1, FRAME.headerLen + 1 + len))
}

/**
 * The error reply sent in place of `reply`: the same request token, channel and correlation id,
 * and `{ message, code }` as the reply to a handler that threw (the requester's HANDLER_ERROR,
 * `details.remoteCode` the code).
 */
export function errorReply(reply: Uint8Array, error: OrreryError): Uint8Array {
  const f = decodeFrame(reply)
  const token = new DataView(reply.buffer, reply.byteOffset, reply.byteLength).getUint32(FRAME.offReply, true)
  const w = new FrameWriter()
  const meta = {
    id: f.id,
    kind: 'error',
    priority: f.priority,
    codec: 'json',
    timestamp: f.timestamp,
    expiresAt: f.expiresAt,
    correlationId: f.correlationId,
  } as const
  w.push(f.channel, meta, encodePayload('json', { message: error.message, code: error.code }), token)
  return w.bytes().slice()
}
