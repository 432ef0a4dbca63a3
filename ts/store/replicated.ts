/**
 * A replicated namespace: a namespace of this store whose changes travel on a channel bound at
 * run time (`orrery.store.<name>`) to a broker. Local writes stay what they are (sync in memory);
 * a watch of the whole namespace publishes each one in the background, stamped as written, and
 * every other process merges it (`store.merge`: the later stamp wins, or the user's merge).
 * Events on the channel (msgpack), each with the protocol version and the sender's id:
 *
 * - `c`: local changes of one turn, each key's last (a put with its encoded value and, with a TTL,
 *   when it expires; or a deletion: a delete or purge), with their stamps. Expiries do not travel:
 *   every process that merged a put expires it at its `expiresAt` itself, with the put's stamp, so
 *   they agree whoever is alive, and a write stamped later wins over the expiry everywhere.
 * - `h`: a process joins. It subscribes from the end of the channel, says hello until it reads its
 *   own hello back (so every answer comes after its subscription began), and each process that
 *   hears it answers with its state. Late joiners ask the living rather than replay the channel,
 *   whose retention would have to outlive every key.
 * - `s`: a state, in chunks: live entries with their stamps, and the deletions this process made or
 *   merged within the store's `tombstoneMs` (so a process that comes back with a key deleted while
 *   it was away loses that key), to the process that asked (`to`) or, once a joiner has merged what
 *   it heard, the joiner's own to everyone (what it wrote before).
 */
import type { Subscription } from 'rxjs'

import type { Bus } from '../bus/bus.js'
import type { Message } from '../bus/message.js'
import { decodePayload, encodePayload } from '../codec.js'
import { LIMITS } from '../engines/manifest.js'
import { failureOf, isOrreryError, OrreryError } from '../errors.js'
import type { CodecName } from '../frame.js'
import type { Namespace } from './namespace.js'
import type { Change, Entry } from './records.js'
import type { SharedHost } from './shared.js'

/** The protocol's version: events of another version are ignored. */
const VERSION = 1
/** How often a joining process says hello until it reads its own back. */
const HELLO_EVERY_MS = 250
/** How long a join waits for its hello to come back before it fails. */
const JOIN_TIMEOUT_MS = 10_000
/**
 * How long a joiner waits for the first answer after its hello came back, as a multiple of that
 * round trip (at least QUIET_MIN_MS): an answer takes about one more trip. None by then: it is
 * the first process, or the others are too slow, and their states merge when they come.
 */
const QUIET_TRIPS = 4
const QUIET_MIN_MS = 250
/**
 * A state is sent in chunks of at most this many bytes (or half the broker's message limit when
 * it announces a lower one: NATS's max_payload), well under Kafka's and NATS's default 1 MB.
 */
const CHUNK_BYTES = 256 * 1024
/** What a message adds around its entries (the event's fields, the frame's header), with room to spare. */
const EVENT_BYTES = 512

/** An entry's size in an event, at most (msgpack: strings as UTF-8, numbers up to 9 bytes). */
const entryBytes = (entry: StateEntry): number => (entry[1]?.length ?? 0) + entry[0].length * 3 + entry[4].length * 3 + 32

/** A key's record on the wire: its encoded value (null: deleted), stamp, and when a put expires (clock ms), if it does. */
type StateEntry = [key: string, bytes: Uint8Array | null, wall: number, logical: number, writer: string, expiresAt?: number]

/** A wire entry: its deadline is there only when it has one. */
function entryOf(key: string, bytes: Uint8Array | null, wall: number, logical: number, writer: string, expiresAt: number | null | undefined): StateEntry {
  return expiresAt === undefined || expiresAt === null ? [key, bytes, wall, logical, writer] : [key, bytes, wall, logical, writer, expiresAt]
}

type Wire =
  | { v: number; t: 'c'; p: string; e: StateEntry[] }
  | { v: number; t: 'h'; p: string }
  | { v: number; t: 's'; p: string; to?: string; e: StateEntry[]; end: boolean }

const isString = (value: unknown): value is string => typeof value === 'string'

/**
 * Whether entry `a` wins over `b` as the store orders them: the later stamp (clock, then logical,
 * then writer), and at an equal stamp a deletion (an expiry is stamped as the put it ends).
 */
const later = (a: StateEntry, b: StateEntry): boolean =>
  a[2] !== b[2] ? a[2] > b[2] : a[3] !== b[3] ? a[3] > b[3] : a[4] !== b[4] ? a[4] > b[4] : a[1] === null && b[1] !== null

export class Replicator {
  private subscription: Subscription | undefined
  private watching: Subscription | undefined
  /** Versions this store wrote by merging what others published: not published again. */
  private readonly merged = new Set<number>()
  private closed = false
  /**
   * Deletions made here or merged from others, by key, with the local time they were recorded:
   * sent with every state until `tombstoneMs` after (the store forgets its tombstones then too).
   */
  private readonly tombstones = new Map<string, { entry: StateEntry; at: number }>()
  /**
   * Changes stamped more than the store's maxClockDriftMs ahead of this clock (a process whose
   * clock runs fast), the latest per key: merged once this clock is near enough, not dropped.
   */
  private readonly ahead = new Map<string, StateEntry>()
  private aheadTimer: ReturnType<typeof setTimeout> | undefined
  /** This turn's local changes, by key, sent when it ends. */
  private outgoing: Map<string, StateEntry> | undefined
  /** Publishes not yet answered by the broker (`flush` waits for them). */
  private readonly inflight = new Set<Promise<unknown>>()
  /** While joining: ends the wait for the hello's echo, or for the first state. */
  private onEcho: (() => void) | undefined
  private onState: ((end: boolean) => void) | undefined

  /** The channel a namespace's changes travel on. */
  static channelOf(name: string): string {
    return `orrery.store.${name}`
  }

  constructor(
    private readonly host: SharedHost,
    private readonly bus: Bus,
    private readonly ns: Namespace<unknown, boolean>,
    private readonly processId: string,
    private readonly codec: CodecName,
    merge: ((local: unknown, remote: unknown) => unknown) | undefined,
    /** The largest message the broker takes, if it says (NATS's max_payload). */
    maxPayload: number | undefined = undefined,
  ) {
    this.chunkBytes = Math.max(4 * EVENT_BYTES, Math.min(CHUNK_BYTES, Math.floor((maxPayload ?? Infinity) / 2)))
    // The user's merge throwing is its failure (HANDLER_ERROR), not the store's.
    this.resolve =
      merge === undefined
        ? undefined
        : (local, remote) => {
            try {
              return merge(local, remote)
            } catch (error) {
              if (error instanceof OrreryError) throw error
              throw new OrreryError(
                'HANDLER_ERROR',
                `the merge function of shared namespace ${ns.name} threw: ${error instanceof Error ? error.message : String(error)}`,
                {
                  cause: error,
                  details: { namespace: ns.name },
                },
              )
            }
          }
  }

  private readonly resolve: ((local: unknown, remote: unknown) => unknown) | undefined

  /** The most bytes a message of changes or of a state carries. */
  private readonly chunkBytes: number

  private get channel(): string {
    return Replicator.channelOf(this.ns.name)
  }

  /**
   * Joins: subscribes, says hello until it comes back, merges the first answer (or waits a few
   * round trips for one), then publishes this store's own state and every later local change.
   */
  async start(): Promise<void> {
    this.subscription = this.bus.subscribe<Wire>(this.channel, { from: 'latest' }).subscribe({
      next: (m) => this.receive(m),
      error: (error: unknown) => this.report('merge', error),
    })
    // Listening for the first state before the hello is echoed: on redis and nats the echo and
    // the first answer often arrive in one read, before an await after the echo would resume.
    const first = this.firstState()
    const trip = await this.hello()
    await first(Math.max(QUIET_MIN_MS, QUIET_TRIPS * trip))
    if (this.closed) throw new OrreryError('CLOSED', 'the store is closed')
    this.watch()
    this.sendState(undefined)
  }

  /** Says hello until it comes back; resolves with the last hello's round trip in ms. */
  private hello(): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const started = Date.now()
      let sent = started
      const end = (error?: unknown) => {
        clearInterval(timer)
        this.onEcho = undefined
        if (error === undefined) resolve(Date.now() - sent)
        else reject(error)
      }
      const say = () => {
        if (this.closed) return end(new OrreryError('CLOSED', 'the store is closed'))
        if (Date.now() - started > JOIN_TIMEOUT_MS) {
          const why = `shared namespace ${this.ns.name}: channel ${this.channel} did not echo this process's hello within ${JOIN_TIMEOUT_MS} ms`
          return end(new OrreryError('TRANSPORT_UNAVAILABLE', why, { details: { channel: this.channel } }))
        }
        sent = Date.now()
        this.bus.publish(this.channel, { v: VERSION, t: 'h', p: this.processId }, { codec: 'msgpack' }).catch((error: unknown) => {
          // A closed Orrery or a refused publish will not echo: fail at once.
          end(error)
        })
      }
      const timer = setInterval(say, HELLO_EVERY_MS)
      this.onEcho = () => end()
      say()
    })
  }

  /**
   * Starts listening for the first answer (chunks that come after the hello's echo); the returned
   * function waits for its last chunk, or `quietMs` without any chunk.
   */
  private firstState(): (quietMs: number) => Promise<void> {
    let ended = false
    let waiting: ((end: boolean) => void) | undefined
    const onState = (end: boolean) => {
      ended ||= end
      waiting?.(end)
    }
    this.onState = onState
    return (quietMs) =>
      new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer)
          if (this.onState === onState) this.onState = undefined
          resolve()
        }
        let timer = setTimeout(done, quietMs)
        if (ended) return done()
        waiting = (end) => {
          clearTimeout(timer)
          if (end) done()
          else timer = setTimeout(done, quietMs)
        }
      })
  }

  /** Publishes every local change of the namespace (not the ones merged from others). */
  private watch(): void {
    this.watching = this.ns.watchPrefix('', { from: 'now', buffer: LIMITS.maxCapacity }).subscribe({
      next: (change) => this.local(change),
      error: (error: unknown) => {
        if (this.closed || isOrreryError(error, 'CLOSED')) return
        // Missed changes (a lagged watch): the whole state goes out instead, and watching resumes.
        this.report('publish', error)
        this.watching = undefined
        this.watch()
        this.sendState(undefined)
      },
    })
  }

  /**
   * A local change, sent with the others of this turn: only a key's last change of the turn goes
   * out (it carries the latest stamp, which wins wherever the earlier ones would have), in
   * messages of about CHUNK_BYTES. A burst of 10,000 writes to 1,000 keys is then a few messages,
   * not 10,000 (one each overran Kafka's 1 MB produce batches here and was refused whole).
   */
  private local(change: Change<unknown>): void {
    // A merge that changed nothing while an expiry came due took that expiry's version for its own.
    const merged = this.merged.delete(change.version)
    const { stamp } = change
    if (change.type === 'expire') {
      // Every process that merged the put expires it itself: only states carry the deletion.
      this.tombstone([change.key, null, stamp.wall, stamp.logical, stamp.writer])
      return
    }
    if (merged) return
    const bytes = change.type === 'put' ? encodePayload(this.codec, change.value) : null
    if (this.outgoing === undefined) {
      this.outgoing = new Map()
      setTimeout(() => this.sendOutgoing(), 0)
    }
    const entry = entryOf(change.key, bytes, stamp.wall, stamp.logical, stamp.writer, change.type === 'put' ? change.expiresAt : undefined)
    this.outgoing.set(change.key, entry)
    if (bytes === null) this.tombstone(entry)
    else this.tombstones.delete(change.key)
  }

  /** Remembers a deletion (the later of two for a key) for the states this process sends. */
  private tombstone(entry: StateEntry): void {
    const had = this.tombstones.get(entry[0])
    if (had !== undefined && !later(entry, had.entry)) return
    this.tombstones.delete(entry[0])
    this.tombstones.set(entry[0], { entry, at: this.host.now() })
    if (this.tombstones.size % 1024 === 0) this.pruneTombstones()
  }

  /** Forgets deletions recorded more than `tombstoneMs` ago (the map is in the order they were recorded). */
  private pruneTombstones(): void {
    const horizon = this.host.now() - this.host.tombstoneMs
    for (const [key, { at }] of this.tombstones) {
      if (at >= horizon) break
      this.tombstones.delete(key)
    }
  }

  private sendOutgoing(): void {
    const entries = [...(this.outgoing ?? new Map<string, StateEntry>()).values()]
    this.outgoing = undefined
    if (entries.length > 0) this.sendChunks(entries, (e) => ({ v: VERSION, t: 'c', p: this.processId, e }))
  }

  /**
   * Sends `entries` in messages of at most `chunkBytes` each, made by `event` (`end` on the last):
   * a chunk goes out before the entry that would take it over. An entry larger than that alone
   * (a value near maxValueBytes) goes in a message of its own, which the broker may refuse
   * (reported): the others, and the last chunk that ends the state, still arrive.
   */
  private sendChunks(entries: StateEntry[], event: (chunk: StateEntry[], end: boolean) => Wire): void {
    const limit = this.chunkBytes - EVENT_BYTES
    let chunk: StateEntry[] = []
    let bytes = 0
    for (const entry of entries) {
      const size = entryBytes(entry)
      if (size > limit) {
        this.send(event([entry], false))
        continue
      }
      if (bytes + size > limit) {
        this.send(event(chunk, false))
        chunk = []
        bytes = 0
      }
      chunk.push(entry)
      bytes += size
    }
    this.send(event(chunk, true))
  }

  /** Sends this store's live entries, in chunks, to `to` (undefined: everyone). */
  private sendState(to: string | undefined): void {
    let entries: Entry<unknown>[]
    try {
      entries = this.ns.entries()
    } catch (error) {
      if (!isOrreryError(error, 'CLOSED')) this.report('publish', error)
      return
    }
    this.pruneTombstones()
    if (entries.length === 0 && this.tombstones.size === 0 && to === undefined) return
    const records: StateEntry[] = entries.map((entry) => {
      const { wall, logical, writer } = entry.stamp
      return entryOf(entry.key, encodePayload(this.codec, entry.value), wall, logical, writer, entry.expiresAt)
    })
    for (const { entry } of this.tombstones.values()) records.push(entry)
    this.sendChunks(records, (e, end) => ({ v: VERSION, t: 's', p: this.processId, ...(to === undefined ? {} : { to }), e, end }))
  }

  /** Publishes an event; a failure is reported on the store's events, never thrown into a write. */
  private send(event: Wire): void {
    if (this.closed) return
    let sent: Promise<unknown>
    try {
      sent = this.bus.publish(this.channel, event, { codec: 'msgpack' })
    } catch (error) {
      sent = Promise.reject(error)
    }
    const settled = sent.then(
      () => {
        this.inflight.delete(settled)
      },
      (error: unknown) => {
        this.inflight.delete(settled)
        if (!this.closed) this.report('publish', error)
        throw failureOf(error, 'TRANSPORT_UNAVAILABLE', `shared namespace ${this.ns.name}: a change was not published`, { namespace: this.ns.name })
      },
    )
    // Nobody need wait for it: `flush` does when asked.
    settled.catch(() => {})
    this.inflight.add(settled)
  }

  /**
   * Sends this turn's changes now rather than when it ends, and resolves once every publish made
   * so far was taken by the broker (rejects with the first that failed, reported on events too;
   * each is bounded by the transport's publishTimeoutMs).
   */
  async flush(): Promise<void> {
    this.sendOutgoing()
    const pending = [...this.inflight]
    const results = await Promise.allSettled(pending)
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed !== undefined) throw failed.reason
  }

  private receive(message: Message<Wire>): void {
    if (this.closed) return
    let event: Wire
    try {
      event = message.payload
    } catch (error) {
      this.report('merge', error)
      return
    }
    if (event === null || typeof event !== 'object' || event.v !== VERSION || !isString(event.p)) return
    if (event.p === this.processId) {
      if (event.t === 'h') this.onEcho?.()
      return
    }
    try {
      if (event.t === 'h') {
        // A joiner that has not read its hello back yet cannot answer with a state worth having.
        if (this.onEcho === undefined) this.sendState(event.p)
      } else if (event.t === 'c' && Array.isArray(event.e)) {
        for (const entry of event.e) if (Array.isArray(entry) && isString(entry[0])) this.apply(entry[0], entry[1], entry[2], entry[3], entry[4], entry[5])
      } else if (event.t === 's' && Array.isArray(event.e) && (event.to === undefined || event.to === this.processId)) {
        for (const entry of event.e) if (Array.isArray(entry) && isString(entry[0])) this.apply(entry[0], entry[1], entry[2], entry[3], entry[4], entry[5])
        // An answer to a hello sent before this process's subscription began may be partial.
        if (event.to === this.processId && this.onEcho === undefined) this.onState?.(event.end === true)
      }
    } catch (error) {
      this.report('merge', error)
    }
  }

  /** Merges one remote change (`bytes` undefined: a deletion); a refused one is reported. */
  private apply(key: string, bytes: unknown, wall: unknown, logical: unknown, writer: unknown, expiresAt: unknown): void {
    try {
      if (typeof wall === 'number' && Number.isFinite(wall) && wall > this.host.now() + this.host.maxClockDriftMs) {
        this.holdAhead(entryOf(key, (bytes ?? null) as Uint8Array | null, wall, logical as number, writer as string, expiresAt as number | null | undefined))
        return
      }
      const deleted = bytes === undefined || bytes === null
      if (!deleted && !(bytes instanceof Uint8Array))
        throw new OrreryError('INVALID_PAYLOAD', `a change of ${key} carries no value bytes`, { details: { key } })
      const value = deleted ? undefined : decodePayload(this.codec, bytes as Uint8Array)
      const stamp = { wall, logical, writer } as { wall: number; logical: number; writer: string }
      const before = this.revision()
      const expires = deleted || expiresAt === undefined || expiresAt === null ? undefined : (expiresAt as number)
      const change = deleted
        ? { key, type: 'delete' as const, stamp }
        : { key, type: 'put' as const, value, stamp, ...(expires === undefined ? {} : { expiresAt: expires }) }
      const ack = this.host.merge(this.ns, change, this.resolve)
      if (ack instanceof Promise) ack.catch((error: unknown) => this.report('merge', error))
      // A durable store acknowledges later: the version is the revision the merge moved to.
      const after = this.revision()
      if (after !== before) this.merged.add(after)
      // The key's deletion (or a put's expiry) travels on in this process's states while the key stays deleted here.
      if (this.ns.get(key) !== undefined) this.tombstones.delete(key)
      else if (deleted || (expires !== undefined && expires <= this.host.now())) this.tombstone([key, null, stamp.wall, stamp.logical, stamp.writer])
    } catch (error) {
      this.report('merge', error)
    }
  }

  /**
   * Holds a change stamped too far ahead (reported once per key while held), and merges it once
   * this clock is within maxClockDriftMs of its stamp: the store would refuse it until then.
   */
  private holdAhead(entry: StateEntry): void {
    const had = this.ahead.get(entry[0])
    if (had !== undefined && !later(entry, had)) return
    this.ahead.set(entry[0], entry)
    if (had === undefined) {
      const now = this.host.now()
      this.report(
        'merge',
        new OrreryError(
          'INVALID_ARGUMENT',
          `a change of ${entry[0]} is stamped ${entry[2] - now} ms ahead of this clock, more than maxClockDriftMs (${this.host.maxClockDriftMs}): held, and merged when this clock is near enough`,
          { details: { key: entry[0], wall: entry[2], now, maxClockDriftMs: this.host.maxClockDriftMs, held: true } },
        ),
      )
    }
    this.scheduleAhead()
  }

  private scheduleAhead(): void {
    if (this.aheadTimer !== undefined || this.ahead.size === 0 || this.closed) return
    let first = Infinity
    for (const entry of this.ahead.values()) first = Math.min(first, entry[2])
    const wait = Math.max(1, Math.min(2 ** 31 - 1, first - this.host.maxClockDriftMs - this.host.now() + 1))
    this.aheadTimer = setTimeout(() => {
      this.aheadTimer = undefined
      if (this.closed) return
      const due = this.host.now() + this.host.maxClockDriftMs
      for (const [key, entry] of this.ahead) {
        if (entry[2] > due) continue
        this.ahead.delete(key)
        this.apply(entry[0], entry[1], entry[2], entry[3], entry[4], entry[5])
      }
      this.scheduleAhead()
    }, wait)
  }

  private revision(): number {
    return this.host.revision()
  }

  private report(operation: 'publish' | 'merge', error: unknown): void {
    if (this.closed) return
    this.host.report({ type: 'shared-error', namespace: this.ns.name, operation, error })
  }

  /** Stops publishing and merging (the store closed). */
  close(): void {
    if (this.closed) return
    // What this turn wrote goes out on the bus, which is still open (an Orrery's close and
    // shutdown close its stores first); a failure can no longer be reported (the store closed).
    this.sendOutgoing()
    this.closed = true
    this.onEcho = undefined
    this.onState = undefined
    this.outgoing = undefined
    clearTimeout(this.aheadTimer)
    this.ahead.clear()
    this.subscription?.unsubscribe()
    this.watching?.unsubscribe()
  }
}
