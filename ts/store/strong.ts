/**
 * A strongly consistent namespace (`store.shared(name, { consistency: 'strong', transport })`):
 * the broker keeps it (transports/store-redis.ts, store-nats.ts) and checks every conditional
 * write against the key's broker revision, so of two processes racing a compare-and-set exactly
 * one wins. Writes are Promises of that revision. Reads are sync, from a mirror this process
 * keeps: loaded when the namespace opens, fed by the broker's change feed, and given each of this
 * process's own writes as it is acknowledged (read-your-writes). `fetch` reads the broker.
 */
import { Subject } from 'rxjs'

import { callable, finite, int, keysOf, oneOf, options as optionsOf, text } from '../check.js'
import { decodePayload } from '../codec.js'
import { failureOf, isOrreryError, isProgrammingError, OrreryError } from '../errors.js'
import type { CodecName } from '../frame.js'
import { checkSchema, type StandardSchemaV1 } from '../schema.js'
import { Stream } from '../stream.js'
import { DeadlineTimer } from '../timer.js'
import { encodeValue } from './context.js'
import { Expiries } from './expiries.js'
import { KeyIndex } from './key-index.js'
import type { NamespaceOptions } from './namespace.js'
import type { Change, Entry } from './records.js'
import type { SharedHost, SharedTransport } from './shared.js'
import { invalidKey, MAX_KEY_BYTES } from './wire.js'
import { MAX_STRONG_HISTORY, type StrongBackend, type StrongRecord, type StrongTxnResult, type StrongWrite } from './strong-backend.js'

/** Options of a strong write. */
export interface StrongWriteOptions {
  /** Apply only if the key is at this broker revision (0: absent); the broker checks it. */
  ifVersion?: number
  /** Milliseconds until the value expires (0 or left out: never); a put without it clears any. */
  ttl?: number
}
const WRITE_KEYS = keysOf<StrongWriteOptions>()(['ifVersion', 'ttl'])

/** Options of {@link StrongNamespace.delete}. */
export interface StrongDeleteOptions {
  /** Delete only if the key is at this broker revision; the broker checks it. */
  ifVersion?: number
}
const DELETE_KEYS = keysOf<StrongDeleteOptions>()(['ifVersion'])

/** Options of {@link StrongNamespace.create}. */
export interface StrongCreateOptions {
  /** Milliseconds until the value expires (0 or left out: never). */
  ttl?: number
}
const CREATE_KEYS = keysOf<StrongCreateOptions>()(['ttl'])

/** Options of {@link StrongNamespace.update}. */
export interface StrongUpdateOptions {
  /** How many times a lost compare-and-set is tried again, from a fresh read (default 100). */
  retries?: number
  /** Milliseconds until the new value expires (0 or left out: never). */
  ttl?: number
}
const UPDATE_KEYS = keysOf<StrongUpdateOptions>()(['retries', 'ttl'])

/** Where a strong watch starts: `now` (default), or `current` (each matching key's value first). */
export interface StrongWatchOptions {
  from?: 'now' | 'current'
}
const WATCH_KEYS = keysOf<StrongWatchOptions>()(['from'])

/** Most writes in one transaction: a NATS server takes at most 1,000 messages in one atomic batch. */
const MAX_STRONG_TXN_WRITES = 1_000
/** Most bytes (keys and values) in one transaction: one Redis script call, or one NATS batch. */
const MAX_STRONG_TXN_BYTES = 64 * 1024 * 1024
/** How long `shared()` waits for a strong namespace's mirror to load, at least (else the transport's publishTimeoutMs). */
const LOAD_TIMEOUT_MS = 30_000
const UTF8 = new TextEncoder()

/** A key, checked as the store's namespaces check theirs. */
function checkKey(key: unknown, prefix = false): string {
  if (typeof key !== 'string') throw new OrreryError('INVALID_ARGUMENT', 'a key must be a string', { details: { argument: 'key', value: typeof key } })
  text(key, prefix ? 'prefix' : 'key')
  const bytes = key.length > MAX_KEY_BYTES ? key.length * 3 : UTF8.encode(key).length
  if (bytes > MAX_KEY_BYTES || (!prefix && bytes === 0)) throw invalidKey(key, bytes)
  return key
}

/** `deleted` is pruned when it holds this many deletions (or twice what the last pruning left). */
const PRUNE_MIN = 1024
/**
 * How long after a value expired a process that did not write it deletes it from the broker, if
 * it is still there (its writer does at once; one that is gone leaves it to the others).
 */
const SWEEP_GRACE_MS = 2_000
/** How long after a sweep that failed (not refused: the broker did not answer) it is tried again. */
const SWEEP_RETRY_MS = 5_000
/** The longest TTL (2^40 ms, about 34 years): a deadline stays an integer the brokers' fields hold. */
const MAX_TTL_MS = 2 ** 40

/** A `ttl` option as an absolute deadline on the wall clock (undefined: none). */
function deadlineOf(ttl: unknown): number | undefined {
  if (ttl === undefined) return undefined
  const ms = finite(ttl, 'ttl', { min: 0, max: MAX_TTL_MS })
  return ms === 0 ? undefined : Date.now() + Math.ceil(ms)
}

/** Whether a value that expires at `expiresAt` has expired at `now`. */
const expired = (expiresAt: number | undefined, now: number): boolean => expiresAt !== undefined && expiresAt <= now

/**
 * A namespace kept by a broker: writes are checked and ordered there (each takes the namespace's
 * next broker revision, its version); reads come from this process's mirror of it.
 */
export class StrongNamespace<T> {
  private readonly mirror = new Map<string, Entry<T>>()
  /** The mirror's keys in order: prefix reads take what matches, not the whole mirror. */
  private readonly index = new KeyIndex()
  /**
   * Deletions applied, by key: their revision, and their number in the order they were applied.
   * A deletion is kept while an older put of its key may still come: from the change feed until
   * it has passed the deletion's revision (it brings records in revision order), and in the answer
   * of a request sent before the deletion was applied. Then it is forgotten.
   */
  private readonly deleted = new Map<string, { revision: number; n: number; expired?: boolean }>()
  /** Deletions applied so far. */
  private deletions = 0
  /** Requests to the broker awaiting an answer, each with the number of deletions applied when it was sent. */
  private readonly asking = new Set<{ since: number }>()
  /** The highest revision the change feed brought. */
  private fedTo = 0
  /** The size of `deleted` that makes the next feed record prune it. */
  private pruneAt = PRUNE_MIN
  private readonly changes = new Subject<Change<T>>()
  private closed = false
  /** Writes sent and not answered yet (`store.flushed()` waits for them). */
  private readonly writing = new Set<Promise<unknown>>()
  /** The mirror's values with a TTL, by deadline. */
  private readonly expiries = new Expiries()
  /** Expired values to delete from the broker (if still at their revision), by when. */
  private readonly sweeps = new Expiries()
  /** The revision of each key's value with a TTL that this process wrote (it sweeps those at once). */
  private readonly ownTtl = new Map<string, number>()
  private readonly timer = new DeadlineTimer(Date.now, () => this.due(), false)
  /** The first records of a transaction the feed is bringing, held until its last one. */
  private held: StrongRecord[] = []
  /** Where changes go while a transaction's records are applied together. */
  private telling: Change<T>[] | undefined

  /** @internal */
  static create<T>(host: SharedHost, name: string, codec: CodecName, schema: StandardSchemaV1 | undefined, backend: StrongBackend): StrongNamespace<T> {
    return new StrongNamespace<T>(host, name, codec, schema, backend)
  }

  private constructor(
    private readonly host: SharedHost,
    /** The namespace's name. */
    readonly name: string,
    private readonly codec: CodecName,
    private readonly schema: StandardSchemaV1 | undefined,
    private readonly backend: StrongBackend,
  ) {}

  /**
   * @internal Applies a record of the change feed, in the broker's order. The records of a
   * transaction are held until its last one comes, then applied together: a read or a watch
   * here sees all of a transaction or none of it.
   */
  fed(record: StrongRecord): void {
    const part = record.part
    if (part === undefined) {
      this.release()
      this.take(record)
      return
    }
    const [index, count] = part
    if (index !== this.held.length) {
      // The rest of the held transaction will not come (a reload), or this one began before the
      // feed did (a load from each key's last record): what there is is applied as it is.
      this.release()
      if (index !== 0) {
        this.take(record)
        return
      }
    }
    this.held.push(record)
    if (this.held.length === count) this.release()
  }

  /** @internal Applies the records held for the rest of their transaction, then tells their changes. */
  release(): void {
    if (this.held.length === 0) return
    const held = this.held
    this.held = []
    this.together(() => {
      for (const record of held) this.take(record)
    })
  }

  /** Runs `apply`, telling watches the changes it makes only once it is done. */
  private together(apply: () => void): void {
    const told: Change<T>[] = []
    this.telling = told
    try {
      apply()
    } finally {
      this.telling = undefined
      // What was applied is told, even if something after it threw.
      for (const change of told) this.changes.next(change)
    }
  }

  private emit(change: Change<T>): void {
    if (this.telling !== undefined) this.telling.push(change)
    else this.changes.next(change)
  }

  private take(record: StrongRecord): void {
    this.apply(record)
    if (record.revision <= this.fedTo) return
    this.fedTo = record.revision
    if (this.deleted.size < this.pruneAt) return
    let oldest = Infinity
    for (const { since } of this.asking) oldest = Math.min(oldest, since)
    for (const [key, { revision, n, expired }] of this.deleted) {
      // An expired value not yet swept is still on the broker: its version stays refused here.
      if (revision <= this.fedTo && n <= oldest && !(expired === true && this.sweeps.has(key))) this.deleted.delete(key)
    }
    this.pruneAt = Math.max(PRUNE_MIN, 2 * this.deleted.size)
  }

  /**
   * Hands the broker's answer to `call` to `use` as it comes, the deletions applied meanwhile kept
   * until then (an answer may be older than they are).
   */
  private async answer<R, U>(call: Promise<R>, use: (answer: R) => U): Promise<U> {
    const asked = { since: this.deletions }
    this.asking.add(asked)
    try {
      return use(await call)
    } finally {
      this.asking.delete(asked)
    }
  }

  /** Applies a record from the broker (the feed, a read, or this process's acknowledged write) if the mirror has not seen it. */
  private apply(record: StrongRecord): void {
    const { key, revision, expiresAt } = record
    if ((this.mirror.get(key)?.version ?? this.deleted.get(key)?.revision ?? 0) >= revision) return
    const stamp = { wall: record.wall, logical: 0, writer: record.writer }
    this.expiries.cancel(key)
    this.sweeps.cancel(key)
    if (this.ownTtl.get(key) !== revision) this.ownTtl.delete(key)
    if (record.value === undefined) {
      const entry = this.mirror.get(key)
      this.deleted.set(key, { revision, n: ++this.deletions })
      const had = this.mirror.delete(key)
      this.index.remove(key)
      // A value whose TTL ran out, swept from the broker before this mirror's timer told it: an expiry.
      if (entry !== undefined && expired(entry.expiresAt, Date.now())) this.emit({ type: 'expire', key, version: entry.version, stamp: entry.stamp })
      else if (had) this.emit({ type: 'delete', key, version: revision, stamp })
      return
    }
    if (expired(expiresAt, Date.now())) {
      // Expired before it got here (a load, a late feed): absent, and swept from the broker.
      this.expire(key, revision, stamp, expiresAt!)
      return
    }
    let value: T
    try {
      value = this.decode(record.value, key)
    } catch (error) {
      this.deleted.set(key, { revision, n: ++this.deletions })
      this.mirror.delete(key)
      this.index.remove(key)
      this.report(error)
      return
    }
    this.deleted.delete(key)
    if (!this.mirror.has(key)) this.index.add(key)
    this.mirror.set(key, { key, value, version: revision, stamp, expiresAt })
    if (expiresAt !== undefined) {
      this.expiries.schedule(key, revision, expiresAt)
      this.timer.arm(expiresAt)
    }
    this.emit(
      expiresAt === undefined ? { type: 'put', key, version: revision, value, stamp } : { type: 'put', key, version: revision, value, stamp, expiresAt },
    )
  }

  /** Expires the value of `key` at `revision`: gone from the mirror (an `expire` change if it was there), then swept from the broker. */
  private expire(key: string, revision: number, stamp: Entry<T>['stamp'], expiresAt: number): void {
    this.deleted.set(key, { revision, n: ++this.deletions, expired: true })
    const had = this.mirror.delete(key)
    this.index.remove(key)
    if (had) this.emit({ type: 'expire', key, version: revision, stamp })
    const mine = this.ownTtl.get(key) === revision
    this.ownTtl.delete(key)
    const sweepAt = mine ? expiresAt : expiresAt + SWEEP_GRACE_MS
    this.sweeps.schedule(key, revision, sweepAt)
    this.timer.arm(sweepAt)
  }

  /** Expires what is due, sweeps what waited long enough, and arms the timer for what comes next. */
  private due(): void {
    if (this.closed) return
    const now = Date.now()
    for (const { key, revision } of this.expiries.take(now)) {
      const entry = this.mirror.get(key)
      if (entry !== undefined && entry.version === revision) this.expire(key, revision, entry.stamp, entry.expiresAt!)
    }
    for (const { key, revision } of this.sweeps.take(now)) this.sweep(key, revision)
    this.timer.arm(Math.min(this.expiries.next(), this.sweeps.next()))
  }

  /**
   * Deletes an expired value from the broker if the key is still at its revision there: every
   * process that holds it may, so one that is gone leaves nothing behind. A refusal (another
   * process swept it, or wrote the key) ends it; a failure (no answer) is tried again later.
   */
  private sweep(key: string, revision: number): void {
    if (this.closed || this.host.isClosed()) return
    const wall = Date.now()
    const write = { key, value: undefined, expected: revision, wall, writer: this.host.replica, sweep: true }
    this.backend.write(write).then(
      (result) => {
        if (result.ok && !this.closed) this.apply({ key, revision: result.revision, value: undefined, wall, writer: write.writer })
      },
      () => {
        const gone = this.deleted.get(key)
        if (this.closed || gone?.revision !== revision || gone.expired !== true) return
        this.sweeps.schedule(key, revision, Date.now() + SWEEP_RETRY_MS)
        this.timer.arm(Date.now() + SWEEP_RETRY_MS)
      },
    )
  }

  /** @internal The feed failed (reported; the mirror stays as it was). */
  report(error: unknown): void {
    if (!this.closed) this.host.report({ type: 'shared-error', namespace: this.name, operation: 'merge', error })
  }

  private checkOpen(): void {
    if (this.closed || this.host.isClosed()) throw new OrreryError('CLOSED', 'the store is closed')
  }

  /** The key's value as this process's mirror holds it (its own acknowledged writes included). */
  get(key: string): Entry<T> | undefined {
    this.checkOpen()
    return this.live(checkKey(key))
  }

  /** The key's mirror entry unless its TTL ran out (the timer may not have fired yet). */
  private live(key: string): Entry<T> | undefined {
    const entry = this.mirror.get(key)
    if (entry === undefined || entry.expiresAt === undefined) return entry
    return entry.expiresAt <= Date.now() ? undefined : entry
  }

  /** Reads the key from the broker (and brings the mirror up to it). */
  async fetch(key: string): Promise<Entry<T> | undefined> {
    this.checkOpen()
    checkKey(key)
    return this.answer(this.bounded(this.backend.read(key), 'read', key), (record) => {
      if (record === undefined) return undefined
      // The mirror is now at this revision or a later one the change feed brought during the read:
      // either is as fresh as the read (a later deletion included).
      this.apply(record)
      return this.live(key)
    })
  }

  /**
   * Every record of the key the broker keeps, oldest first: its last `history` older ones and
   * the current one, deletions (`delete`) and expired values swept from the broker (`expire`)
   * included. With history 0, the key's live value alone (none once deleted).
   */
  async history(key: string): Promise<Change<T>[]> {
    this.checkOpen()
    checkKey(key)
    const records = await this.bounded(this.backend.records(key), 'read', key)
    return records.map((record) => this.changeOf(record))
  }

  /**
   * The value the key had at `version`, from the broker (if the key still keeps that record).
   * A deletion or expiry at that version, or a version the key no longer keeps, reads as
   * undefined.
   */
  async getVersion(key: string, version: number): Promise<Entry<T> | undefined> {
    this.checkOpen()
    checkKey(key)
    int(version, 'version', { min: 1 }, 'argument')
    const record = await this.bounded(this.backend.recordAt(key, version), 'read', key)
    const change = record === undefined ? undefined : this.changeOf(record)
    if (change?.type !== 'put') return undefined
    return { key, value: change.value, version: change.version, stamp: change.stamp, expiresAt: change.expiresAt }
  }

  /** A record read back from the broker as a change (a value that does not decode is INVALID_PAYLOAD). */
  private changeOf(record: StrongRecord): Change<T> {
    const { key, revision: version, wall, writer, expiresAt } = record
    const stamp = { wall, logical: 0, writer }
    if (record.value === undefined) return { type: record.swept === true ? 'expire' : 'delete', key, version, stamp }
    const value = this.decode(record.value, key)
    return expiresAt === undefined ? { type: 'put', key, version, value, stamp } : { type: 'put', key, version, value, stamp, expiresAt }
  }

  private decode(bytes: Uint8Array, key: string): T {
    try {
      return decodePayload(this.codec, bytes) as T
    } catch (error) {
      throw new OrreryError('INVALID_PAYLOAD', `a value of ${key} does not decode with the namespace codec (${this.codec})`, { cause: error, details: { key } })
    }
  }

  /** Live keys of the mirror starting with `prefix`, in order. */
  keys(prefix = ''): string[] {
    return this.entries(prefix).map((e) => e.key)
  }

  /** Live entries of the mirror whose keys start with `prefix`, in key order. */
  entries(prefix = ''): Entry<T>[] {
    this.checkOpen()
    checkKey(prefix, true)
    const out: Entry<T>[] = []
    const now = Date.now()
    for (const key of this.index.withPrefix(prefix)) {
      const entry = this.mirror.get(key)!
      if (!expired(entry.expiresAt, now)) out.push(entry)
    }
    return out
  }

  /**
   * Sets the key through the broker; with `ifVersion`, only if the key is at that revision there
   * (else `VERSION_CONFLICT` with the current revision, and nothing is written). Resolves with
   * the write's revision once the broker has it.
   */
  async put(key: string, value: T, options: StrongWriteOptions = {}): Promise<number> {
    const o = optionsOf(options, 'options', 'argument', WRITE_KEYS)
    const expected = o.ifVersion === undefined ? undefined : int(o.ifVersion, 'ifVersion', {}, 'argument')
    const expiresAt = deadlineOf(o.ttl)
    return this.write(checkKey(key), await this.encode(value), expected, expiresAt)
  }

  /** Sets the key only if it holds no value on the broker, or one whose TTL ran out (else `VERSION_CONFLICT`). */
  async create(key: string, value: T, options: StrongCreateOptions = {}): Promise<number> {
    const expiresAt = deadlineOf(optionsOf(options, 'options', 'argument', CREATE_KEYS).ttl)
    return this.write(checkKey(key), await this.encode(value), 0, expiresAt)
  }

  /** Deletes the key through the broker (with `ifVersion`, only at that revision); resolves with the deletion's revision. */
  async delete(key: string, options: StrongDeleteOptions = {}): Promise<number> {
    const o = optionsOf(options, 'options', 'argument', DELETE_KEYS)
    const expected = o.ifVersion === undefined ? undefined : int(o.ifVersion, 'ifVersion', {}, 'argument')
    checkKey(key)
    this.checkOpen()
    return this.write(key, undefined, expected)
  }

  /**
   * Computes the key's next value from its current one and compare-and-sets it, trying again from
   * a fresh read of the broker when another process wrote in between (`retries` times at most,
   * then `VERSION_CONFLICT`). `update` may run more than once; it gets undefined when absent.
   */
  async update(key: string, update: (current: T | undefined) => T, options: StrongUpdateOptions = {}): Promise<number> {
    checkKey(key)
    callable(update, 'update')
    const o = optionsOf(options, 'options', 'argument', UPDATE_KEYS)
    const retries = int(o.retries ?? 100, 'retries')
    if (o.ttl !== undefined) finite(o.ttl, 'ttl', { min: 0, max: MAX_TTL_MS })
    this.checkOpen()
    let current = this.live(key)
    for (let attempt = 0; ; attempt++) {
      try {
        // The deadline from this attempt: a TTL counts from the write that sets it.
        return await this.write(key, await this.encode(update(current?.value)), current?.version ?? 0, deadlineOf(o.ttl))
      } catch (error) {
        if (!isOrreryError(error, 'VERSION_CONFLICT') || attempt >= retries) throw error
      }
      current = await this.fetch(key)
    }
  }

  /** @internal A value as the namespace keeps it (checked, encoded, within maxValueBytes); a transaction's too. */
  async encode(value: T): Promise<Uint8Array> {
    this.checkOpen()
    const bytes = await encodeValue(this.codec, this.schema, `write to ${this.name}`, value)
    const max = this.host.maxValueBytes
    if (bytes.length > max)
      throw new OrreryError('VALUE_TOO_LARGE', `a value of ${bytes.length} bytes is over maxValueBytes (${max})`, {
        details: { namespace: this.name, bytes: bytes.length, maxValueBytes: max },
      })
    return bytes
  }

  private async write(key: string, value: Uint8Array | undefined, expected: number | undefined, expiresAt?: number): Promise<number> {
    return (await this.send([{ key, value, expected, expiresAt }]))[0]!
  }

  /**
   * A transaction on this namespace's keys: `put`, `create` and `delete` as here, applied by the
   * broker all or none when it is committed.
   */
  transaction(): StrongTransaction<T> {
    this.checkOpen()
    return new StrongTransaction<T>(this)
  }

  /**
   * @internal Sends `writes` (of distinct keys, checked and encoded) to the broker as one: a
   * single write, or a transaction. Resolves with each write's revision, once all are applied
   * there and in the mirror; rejects with `VERSION_CONFLICT` naming the first write whose
   * condition failed, none applied.
   */
  async send(writes: readonly PreparedWrite[]): Promise<number[]> {
    this.checkOpen()
    if (writes.length === 0) return []
    const wall = Date.now()
    const writer = this.host.replica
    writes.forEach(({ key, expected }, index) => {
      if (expected !== undefined && expected !== 0 && this.expiredAt(key, expected, wall)) {
        // The broker still holds the value (until it is swept), but it is absent: so is its version.
        throw new OrreryError('VERSION_CONFLICT', `${this.name}/${key}: expected version ${expected}, found (absent): its TTL ran out`, {
          details: { index, namespace: this.name, key, expected, current: 0 },
        })
      }
    })
    const full: StrongWrite[] = writes.map(({ key, value, expected, expiresAt }) => ({ key, value, expected, wall, writer, expiresAt }))
    const call: Promise<StrongTxnResult> =
      full.length === 1
        ? this.backend.write(full[0]!).then((r) => (r.ok ? { ok: true, revisions: [r.revision] } : { ok: false, index: 0, current: r.current }))
        : this.backend.transact(full)
    const sent = this.bounded(call, 'write', writes[0]!.key, writes.length)
    const settled: Promise<unknown> = sent.then(
      () => this.writing.delete(settled),
      () => this.writing.delete(settled),
    )
    this.writing.add(settled)
    return this.answer(sent, (result) => {
      if (!result.ok) {
        const { index, current } = result
        const { key, expected } = writes[index]!
        throw new OrreryError(
          'VERSION_CONFLICT',
          `${this.name}/${key}: expected version ${expected === 0 ? '(absent)' : expected}, found ${current === 0 ? '(absent)' : current}`,
          { details: { index, namespace: this.name, key, expected, current } },
        )
      }
      // Read-your-writes: the mirror has them before the feed brings them back, all at once.
      this.together(() => {
        writes.forEach(({ key, value, expiresAt }, i) => {
          const revision = result.revisions[i]!
          if (expiresAt !== undefined && value !== undefined) this.ownTtl.set(key, revision)
          this.apply({ key, revision, value, wall, writer, expiresAt })
        })
      })
      return [...result.revisions]
    })
  }

  /** Whether the mirror knows the value of `key` at `revision` as expired by `now`. */
  private expiredAt(key: string, revision: number, now: number): boolean {
    const entry = this.mirror.get(key)
    if (entry !== undefined) return entry.version === revision && expired(entry.expiresAt, now)
    const gone = this.deleted.get(key)
    return gone !== undefined && gone.revision === revision && gone.expired === true
  }

  /**
   * `call` to the broker, bounded by the transport's publishTimeoutMs: past it, or on a failure
   * of the connection, TRANSPORT_UNAVAILABLE. A write that timed out or failed after it was sent
   * may still have been applied (`details.indeterminate`): read the key to know.
   */
  private bounded<R>(call: Promise<R>, what: 'write' | 'read', key: string, writes = 1): Promise<R> {
    const { transport, timeoutMs } = this.backend
    const where = writes === 1 ? { transport, namespace: this.name, key } : { transport, namespace: this.name, key, writes }
    const writing = what === 'write'
    const act = writes === 1 ? what : `transaction of ${writes} writes`
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new OrreryError(
            'TRANSPORT_UNAVAILABLE',
            `${this.name}/${key}: the broker did not answer the ${act} within publishTimeoutMs (${timeoutMs} ms) of transport ${transport}` +
              (writing ? '; it may still have been applied (read the key to know)' : ''),
            { details: { ...where, timeoutMs, indeterminate: writing } },
          ),
        )
      }, timeoutMs)
      call.then(
        (result) => {
          clearTimeout(timer)
          resolve(result)
        },
        (error: unknown) => {
          clearTimeout(timer)
          // A bug here (a TypeError, a ReferenceError) is not the broker's: nothing to retry or read.
          if (isProgrammingError(error)) return reject(failureOf(error, 'INTERNAL', `${this.name}/${key}: the ${act} failed before the broker answered`, where))
          if (error instanceof OrreryError && error.code !== 'TRANSPORT_UNAVAILABLE') return reject(error)
          if (error instanceof OrreryError)
            return reject(new OrreryError(error.code, `${this.name}/${key}: ${error.message}`, { cause: error, details: { ...where, ...error.details } }))
          reject(
            new OrreryError(
              'TRANSPORT_UNAVAILABLE',
              `${this.name}/${key}: the ${act} failed on transport ${transport}` +
                (writing ? ' after it was sent; it may have been applied (read the key to know)' : ''),
              { cause: error, details: { ...where, indeterminate: writing } },
            ),
          )
        },
      )
    })
  }

  /** Changes to one key, from this process and every other, as a Stream. */
  watch(key: string, options: StrongWatchOptions = {}): Stream<Change<T>> {
    checkKey(key)
    return this.watchOf((k) => k === key, optionsOf(options, 'options', 'argument', WATCH_KEYS))
  }

  /** Changes to every key starting with `prefix` ('' for the whole namespace). */
  watchPrefix(prefix: string, options: StrongWatchOptions = {}): Stream<Change<T>> {
    checkKey(prefix, true)
    return this.watchOf((k) => k.startsWith(prefix), optionsOf(options, 'options', 'argument', WATCH_KEYS))
  }

  private watchOf(matches: (key: string) => boolean, options: StrongWatchOptions): Stream<Change<T>> {
    const from = options.from === undefined ? 'now' : oneOf(options.from, ['now', 'current'], 'from')
    return new Stream<Change<T>>({
      start: (sink) => {
        this.checkOpen()
        if (from === 'current') {
          const now = Date.now()
          for (const e of this.mirror.values()) {
            if (!matches(e.key) || expired(e.expiresAt, now)) continue
            const { key, version, value, stamp, expiresAt } = e
            sink.next(expiresAt === undefined ? { type: 'put', key, version, value, stamp } : { type: 'put', key, version, value, stamp, expiresAt })
          }
        }
        const subscription = this.changes.subscribe({
          next: (change) => {
            if (matches(change.key)) sink.next(change)
          },
          complete: () => sink.complete(),
        })
        return { stop: () => subscription.unsubscribe(), setPaused: () => {} }
      },
      unhandled: (error) => this.host.report({ type: 'shared-error', namespace: this.name, operation: 'merge', error }),
    })
  }

  /** @internal Resolves once every write sent so far was answered (each caller has its own outcome). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.writing])
  }

  /** @internal Stops the feed and ends every watch (the store closed). */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.timer.cancel()
    this.expiries.clear()
    this.sweeps.clear()
    this.ownTtl.clear()
    this.backend.close()
    this.changes.complete()
  }
}

/** A write checked and encoded, ready for the broker. */
interface PreparedWrite {
  readonly key: string
  readonly value: Uint8Array | undefined
  readonly expected: number | undefined
  readonly expiresAt: number | undefined
}

/** A write of a transaction as it was given: its value is encoded at commit. */
interface TxnWrite<T> {
  readonly key: string
  readonly put: boolean
  readonly value: T | undefined
  readonly expected: number | undefined
  readonly ttl: number | undefined
}

/**
 * Writes to keys of one strong namespace that the broker applies all or none: `commit()`
 * resolves with each write's revision (consecutive, in the order given) or rejects with
 * `VERSION_CONFLICT` naming the first write whose condition failed, and nothing is written.
 */
export class StrongTransaction<T> {
  private readonly writes: TxnWrite<T>[] = []
  private readonly keys = new Set<string>()
  private committed = false

  /** @internal */
  constructor(private readonly ns: StrongNamespace<T>) {}

  private add(key: string, put: boolean, value: T | undefined, expected: number | undefined, ttl: unknown): this {
    checkKey(key)
    if (this.committed) throw new OrreryError('INVALID_ARGUMENT', 'this transaction was committed: start another', { details: { argument: 'transaction' } })
    if (this.keys.has(key))
      throw new OrreryError('INVALID_ARGUMENT', `a transaction names the key ${JSON.stringify(key)} twice`, {
        details: { argument: 'key', key, index: this.writes.length },
      })
    if (this.writes.length >= MAX_STRONG_TXN_WRITES)
      throw new OrreryError('CAPACITY_EXCEEDED', `a strong transaction holds at most ${MAX_STRONG_TXN_WRITES} writes`, {
        details: { namespace: this.ns.name, limit: MAX_STRONG_TXN_WRITES },
      })
    if (ttl !== undefined) finite(ttl, 'ttl', { min: 0, max: MAX_TTL_MS })
    this.keys.add(key)
    this.writes.push({ key, put, value, expected, ttl: ttl as number | undefined })
    return this
  }

  /** Sets the key; with `ifVersion`, only if it is at that broker revision (0: absent). */
  put(key: string, value: T, options: StrongWriteOptions = {}): this {
    const o = optionsOf(options, 'options', 'argument', WRITE_KEYS)
    return this.add(key, true, value, o.ifVersion === undefined ? undefined : int(o.ifVersion, 'ifVersion', {}, 'argument'), o.ttl)
  }

  /** Sets the key only if it holds no value on the broker (or one whose TTL ran out). */
  create(key: string, value: T, options: StrongCreateOptions = {}): this {
    return this.add(key, true, value, 0, optionsOf(options, 'options', 'argument', CREATE_KEYS).ttl)
  }

  /** Deletes the key (with `ifVersion`, only at that revision). */
  delete(key: string, options: StrongDeleteOptions = {}): this {
    const o = optionsOf(options, 'options', 'argument', DELETE_KEYS)
    return this.add(key, false, undefined, o.ifVersion === undefined ? undefined : int(o.ifVersion, 'ifVersion', {}, 'argument'), undefined)
  }

  /**
   * Sends the writes to the broker as one: resolves with each one's revision once all are
   * applied (and in this process's mirror); rejects with `VERSION_CONFLICT` (`details.index`:
   * which write) when a condition fails, nothing written. An empty transaction resolves with [].
   */
  async commit(): Promise<number[]> {
    if (this.committed) throw new OrreryError('INVALID_ARGUMENT', 'this transaction was committed already', { details: { argument: 'transaction' } })
    this.committed = true
    const prepared: PreparedWrite[] = []
    let bytes = 0
    for (const { key, put, value, expected, ttl } of this.writes) {
      // The deadline from the commit: a TTL counts from the write that sets it.
      const encoded = put ? await this.ns.encode(value as T) : undefined
      bytes += key.length + (encoded?.length ?? 0)
      if (bytes > MAX_STRONG_TXN_BYTES)
        throw new OrreryError('CAPACITY_EXCEEDED', `a strong transaction carries at most ${MAX_STRONG_TXN_BYTES} bytes of keys and values`, {
          details: { namespace: this.ns.name, index: prepared.length, limit: MAX_STRONG_TXN_BYTES },
        })
      prepared.push({ key, value: encoded, expected, expiresAt: put ? deadlineOf(ttl) : undefined })
    }
    return this.ns.send(prepared)
  }
}

/** Opens a strong namespace on `transport`'s broker: resolves once its mirror is loaded. */
export async function openStrong(
  host: SharedHost,
  name: string,
  options: NamespaceOptions<StandardSchemaV1 | undefined>,
  transport: SharedTransport,
): Promise<StrongNamespace<unknown>> {
  if (options.schema !== undefined) checkSchema(options.schema)
  const codec = options.codec ?? 'json'
  const history = options.history === undefined ? undefined : int(options.history, 'history', { max: MAX_STRONG_HISTORY })
  const backend =
    transport.kind === 'redis'
      ? (await import('../transports/store-redis.js')).redisStrong(transport, name, history)
      : (await import('../transports/store-nats.js')).natsStrong(transport, name, history)
  const ns = StrongNamespace.create<unknown>(host, name, codec, options.schema, backend)
  const limit = Math.max(LOAD_TIMEOUT_MS, backend.timeoutMs)
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new OrreryError('TRANSPORT_UNAVAILABLE', `strong namespace ${name}: its mirror did not load from transport ${transport.name} within ${limit} ms`, {
            details: { transport: transport.name, namespace: name, timeoutMs: limit },
          }),
        )
      }, limit)
    })
    await Promise.race([
      backend.start(
        (record) => ns.fed(record),
        (error) => ns.report(error),
        () => ns.release(),
      ),
      timedOut,
    ])
    // Loaded from each key's last record: a transaction partly overwritten since is there as it is.
    ns.release()
  } catch (error) {
    ns.close()
    if (error instanceof OrreryError) throw error
    if (isProgrammingError(error))
      throw failureOf(error, 'INTERNAL', `strong namespace ${name}: opening it on transport ${transport.name} failed`, {
        transport: transport.name,
        namespace: name,
      })
    throw new OrreryError('TRANSPORT_UNAVAILABLE', `strong namespace ${name}: opening it on transport ${transport.name} failed`, {
      cause: error,
      details: { transport: transport.name, namespace: name },
    })
  } finally {
    clearTimeout(timer)
  }
  if (host.isClosed()) {
    ns.close()
    throw new OrreryError('CLOSED', 'the store is closed')
  }
  host.onClose(() => ns.close())
  host.onFlush(() => ns.flush())
  return ns
}
