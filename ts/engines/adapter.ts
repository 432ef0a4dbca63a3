/**
 * The one BusCore implementation over either engine's raw bus. The engines differ only in how
 * records leave the core (`Drainer`) and in what a failure does (`guard`): the native engine
 * translates errors, the wasm engine also poisons itself after a trap.
 */
import type { BusCore, RawBus } from './backend.js'
import { OrreryError } from '../errors.js'

/** Bytes of one slab for small batches of drained records. */
const SLAB_BYTES = 256 * 1024
/** Batches up to this size are kept in the slab; larger ones get an exact buffer of their own. */
const SMALL_BATCH = 16 * 1024

/**
 * Keeps drained records somewhere that stays valid while handlers run and call into the core
 * again (which reuses the drain buffer, and may move wasm memory). A small batch is copied into
 * the free tail of a shared slab, never written twice: a new ArrayBuffer per small batch showed as
 * a request/response p99 of 18 µs against 6 µs. A large batch gets one exact copy, whose cost is
 * spread over its many records (filling fresh slabs instead cost page faults). A message a
 * subscriber keeps pins its slab, as a pooled Buffer pins its pool.
 */
export class Slab {
  // Allocated on the first batch: a bus that never receives (or is closed at once) holds no 256 KiB.
  private buf = new Uint8Array(0)
  private used = 0

  /** A stable copy of `records`. */
  keep(records: Uint8Array): Uint8Array {
    const n = records.length
    if (n > SMALL_BATCH) return records.slice()
    if (this.buf.length - this.used < n) {
      this.buf = new Uint8Array(SLAB_BYTES)
      this.used = 0
    }
    const view = this.buf.subarray(this.used, this.used + n)
    view.set(records)
    this.used += n
    return view
  }
}

/** Runs a raw call, turning whatever it throws into an OrreryError. */
export type Guard = <T>(call: () => T) => T

/**
 * Runs a call that only lets go of something (an unsubscribe, a pause on the way out). On a
 * poisoned wasm engine it does nothing: the instance's memory is lost with everything it held, and
 * failing here would stop `close()` and `mesh.shutdown()` half way, with their timers still armed.
 */
export type Release = (call: () => void) => void

/** How an engine hands drained records over. */
export interface Drainer {
  /** Fires due deadlines, then drains; undefined when nothing was written. The view stays valid. */
  drain(now: number): Uint8Array | undefined
  /**
   * Acks one delivery, then drains as `drain` does, in one crossing (an agent's ack after its
   * answer is most often followed by a drain); whether the ack was refused is then `ackRefused`.
   */
  ackThenDrain?(now: number, member: number, seq: number, attempt: number): Uint8Array | undefined
  /** Whether the last drain left the endpoint empty. */
  readonly done: boolean
  /** Whether the ack of the last `ackThenDrain` was refused. */
  readonly ackRefused?: boolean
}

export interface EngineHooks {
  share(): number
  setWaker(wake: (() => void) | null): void
  free(): void
  /** Acks the first `n` (member, seq, attempt) triples of `acks` in one crossing; how many were refused. */
  ackMany?(acks: Float64Array, n: number): number
  /** The endpoint joined a bus made on another thread. */
  attached?: boolean
}

/** Acks queued at most before they are sent anyway (24 KiB of triples). */
const ACK_QUEUE = 1024

/**
 * wasm-bindgen's release glue does not check argument types: a number where a string belongs
 * makes the instance read out of bounds and trap. So strings and byte batches are checked here,
 * for both engines alike.
 */
export function text(value: unknown, what: string): string {
  if (typeof value !== 'string') throw new OrreryError('INVALID_ARGUMENT', `${what} must be a string`, { details: { argument: what } })
  return value
}

function bytes(value: unknown, what: string): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new OrreryError('INVALID_ARGUMENT', `${what} must be a Uint8Array`, { details: { argument: what } })
  return value
}

/** Wraps every raw call in the engine's guard (sending queued acks first); one method per call, no per-call closures on the hot path beyond the guard's own. */
export function adaptBus(raw: RawBus, engineGuard: Guard, drainer: Drainer, hooks: EngineHooks, release: Release = engineGuard): BusCore {
  // Acks that cannot be stale (see `ackSoon`) wait here to share one crossing: a crossing per ack
  // was a fifth of a busy group's time. They are sent before any other call, so the core sees
  // every call in the order it was made, and every read sees them.
  const acks = new Float64Array(3 * ACK_QUEUE)
  let queued = 0
  // Counts the calls that may change which deliveries are current (every call that changes the
  // core but an ack, and any call that failed). Another thread may change them at any time.
  let epoch = 0
  // The epoch the last drain ran in: every record of its batch was current then. A handler fed an
  // earlier record of the batch may change the core (a claim) before a later record is handed
  // out, so a record is tagged with this, not with the epoch when it is handed out.
  let drained = -1
  let shared = hooks.attached === true
  // None can be refused (each was current when queued, and nothing but acks came since). A
  // refused one is an ack its handler believes made: its message is redelivered. Said loudly,
  // but not thrown: the call that sent the queue is someone else's. Later acks cross one by one.
  const refusedAcks = (refused: number, n: number): void => {
    if (refused === 0) return
    epoch++
    console.error(new OrreryError('INTERNAL', `${refused} of ${n} queued group acks were refused by the engine; their messages will be redelivered`))
  }
  const sendAcks = (): void => {
    const n = queued
    if (n === 0) return
    queued = 0
    if (hooks.ackMany) refusedAcks(hooks.ackMany(acks, n), n)
    else for (let i = 0; i < 3 * n; i += 3) raw.ack(acks[i]!, acks[i + 1]!, acks[i + 2]!)
  }
  /** The one queued ack and a drain in one crossing: `write`'s order (the ack, then the change), without the ack's own crossing. */
  const ackThenDrain = (now: number): Uint8Array | undefined => {
    try {
      queued = 0
      epoch++
      return engineGuard(() => {
        drained = epoch
        const batch = drainer.ackThenDrain!(now, acks[0]!, acks[1]!, acks[2]!)
        if (drainer.ackRefused) refusedAcks(1, 1)
        return batch
      })
    } catch (error) {
      epoch++
      throw error
    }
  }
  /** Before a call that only reads (the queued acks are part of what it reads). */
  const look = (): void => {
    if (queued !== 0) engineGuard(sendAcks)
  }
  /** Before a call that changes the core. */
  const change = (): void => {
    if (queued !== 0) engineGuard(sendAcks)
    epoch++
  }
  /**
   * Runs a call that only reads, or that changes the core without touching a delivery already
   * made (a publish, a request, a reply, an ack).
   */
  const read: Guard = (call) => {
    try {
      look()
      return engineGuard(call)
    } catch (error) {
      epoch++
      throw error
    }
  }
  /** Runs a call that may change which deliveries are current. */
  const write: Guard = (call) => {
    try {
      change()
      return engineGuard(call)
    } catch (error) {
      epoch++
      throw error
    }
  }
  // The calls in an object literal without accessors, which V8 keeps in fast mode: a literal
  // with a getter is a dictionary, and every `core.publish` or `core.ackSoon` then paid a
  // dictionary lookup (5% of a busy group's profile). The two getters are defined after.
  const core: Omit<BusCore, 'epoch' | 'drainedAll'> = {
    ackSoon: (member, seq, attempt, drainedIn) => {
      if (drainedIn !== epoch || shared) return read(() => raw.ack(member, seq, attempt))
      const i = 3 * queued
      acks[i] = member
      acks[i + 1] = seq
      acks[i + 2] = attempt
      if (++queued === ACK_QUEUE) read(sendAcks)
    },
    channel: (name) => write(() => raw.channel(text(name, 'a channel name'))),
    configure: (channel, maxCount, maxBytes, maxAge, dedupWindow, deadLetterExpired, now) =>
      write(() => raw.configure(channel, maxCount, maxBytes, maxAge, dedupWindow, deadLetterExpired, now)),
    publish: (batch, now) => read(() => raw.publish(bytes(batch, 'a batch'), now)),
    subscribe: (channel, mode, value, buffer, overflow) => write(() => raw.subscribe(channel, mode, value, buffer, overflow)),
    unsubscribe: (id) =>
      release(() => {
        change()
        raw.unsubscribe(id)
      }),
    abandon: (id, now) =>
      release(() => {
        change()
        raw.abandon(id, now)
      }),
    // Pausing lets go of deliveries (a stopping agent pauses its inbox); resuming asks for them.
    setPaused: (id, paused) =>
      paused
        ? release(() => {
            change()
            raw.setPaused(id, true)
          })
        : write(() => raw.setPaused(id, false)),
    group: (channel, name, mode, value, buffer, overflow, visibility, maxDeliveries) =>
      write(() => raw.group(channel, text(name, 'a group name'), mode, value, buffer, overflow, visibility, maxDeliveries)),
    join: (group, maxInFlight) => write(() => raw.join(group, maxInFlight)),
    deleteGroup: (group) => write(() => raw.deleteGroup(group)),
    ack: (member, seq, attempt) => read(() => raw.ack(member, seq, attempt)),
    nack: (member, seq, attempt, delay, reason, now) => write(() => raw.nack(member, seq, attempt, delay, text(reason, 'a dead-letter reason'), now)),
    claim: (group, member, minIdle, max, now) => write(() => raw.claim(group, member, minIdle, max, now)),
    pending: (group, now) => read(() => raw.pending(group, now)),
    request: (batch, timeout, now) => read(() => raw.request(bytes(batch, 'a request'), timeout, now)),
    reply: (batch) => read(() => raw.reply(bytes(batch, 'a reply'))),
    nextDeadline: () => read(() => raw.nextDeadline()),
    hasPending: () => read(() => raw.hasPending()),
    stats: (channel) => read(() => raw.stats(channel)),
    subscriberStats: (id) => read(() => raw.subscriberStats(id)),
    groupStats: (group) => read(() => raw.groupStats(group)),
    lateReplies: () => read(() => raw.lateReplies()),
    bind: (channel, transport) => write(() => raw.bind(channel, transport)),
    // Ingest adds deliveries and settles none already made: deliveries drained before stay current.
    ingest: (batch, now) => read(() => raw.ingest(bytes(batch, 'an ingest batch'), now)),
    drainEgress: () => read(() => raw.drainEgress() ?? undefined),
    groupRoom: (group) => read(() => raw.groupRoom(group)),
    mirrorRoom: (channel) => read(() => raw.mirrorRoom(channel)),
    // A drain fires the deadlines due, leases among them. One queued ack goes with it, where the
    // engine can (the change it makes is the ack's, then the drain's, as `write` orders them).
    drainRecords: (now) =>
      queued === 1 && drainer.ackThenDrain !== undefined
        ? ackThenDrain(now)
        : write(() => {
            drained = epoch
            return drainer.drain(now)
          }),
    share: () =>
      read(() => {
        shared = true
        return hooks.share()
      }),
    setWaker: (wake) => read(() => hooks.setWaker(wake)),
    free: () => {
      try {
        look()
      } catch {
        // The endpoint goes anyway; what its acks would have settled goes with it.
      }
      hooks.free()
    },
  }
  Object.defineProperties(core, {
    epoch: { get: () => drained, enumerable: true },
    drainedAll: { get: () => drainer.done, enumerable: true },
  })
  return core as BusCore
}

/** The error for engines that cannot share a bus across threads. */
export function notShareable(engine: string): OrreryError {
  return new OrreryError('ENGINE_UNAVAILABLE', `the ${engine} engine runs on one thread; share a bus across worker threads with the native engine`)
}
