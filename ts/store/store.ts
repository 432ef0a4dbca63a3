/**
 * The state store facade: namespaces of versioned keys (see `namespace.ts`), transactions,
 * snapshots, replica merges, and the plumbing every namespace shares: the clock, writer names,
 * watch dispatch, the TTL timer and, for a durable store, acknowledging writes once on disk.
 *
 * In memory a write returns its version; on a durable store it returns a Promise of it that
 * resolves only when the commit holding the write has been synced (`durability`).
 */
import { Subject } from 'rxjs'

import type { Bus } from '../bus/bus.js'
import type { StoreCore } from '../engines/backend.js'
import { DEFAULTS, LIMITS } from '../engines/manifest.js'
import { callable, finite, int, intOr, keysOf, msOrNone, oneOf, oneOfOr, options as optionsOf, refuse, text, textOr } from '../check.js'
import { failureOf, isEngineFailure, OrreryError } from '../errors.js'
import type { Ack, ConflictAt, StoreContext, WatchSink } from './context.js'
import { checkWrite, Namespace, NAMESPACE_KEYS, type NamespaceOptions } from './namespace.js'
import type { InferOutput, StandardSchemaV1 } from '../schema.js'
import { checkSchema } from '../schema.js'
import { nextRecord, readChange, type Change } from './records.js'
import { openShared, type ReplicatedOptions, type SharedHost, type StrongOptions } from './shared.js'
import type { StrongNamespace } from './strong.js'
import { Stream } from '../stream.js'
import { DeadlineTimer } from '../timer.js'
import { ACTION, CONDITION, LAGGED, putWrite, writeBound } from './wire.js'

/** A change from another replica, to apply with {@link Store.merge}. */
export interface RemoteChange<T> {
  readonly key: string
  /** `put` with a value, or `delete`. */
  readonly type: 'put' | 'delete'
  readonly value?: T
  /** The remote write's stamp: clock reading and writer. */
  readonly stamp: { readonly wall: number; readonly logical: number; readonly writer: string }
  /**
   * When a put's value expires (clock ms), as its writer's TTL set it (`Change.expiresAt`): it
   * expires here then too, with the put's stamp, so any later write wins over the expiry. A put
   * whose time has passed merges as a deletion with its stamp.
   */
  readonly expiresAt?: number
}

/**
 * Refuses anything but a namespace of the store behind `ctx` (`INVALID_ARGUMENT`): a namespace
 * of another store carries an id that means another namespace here (or none).
 */
function ownNamespace(ctx: StoreContext, ns: unknown): void {
  if (!(ns instanceof Namespace))
    throw new OrreryError('INVALID_ARGUMENT', 'a transaction write takes a namespace from store.namespace()', { details: { argument: 'namespace' } })
  if (!ns.belongsTo(ctx)) {
    throw new OrreryError('INVALID_ARGUMENT', `namespace ${ns.name} belongs to another store: take it from this store's namespace()`, {
      details: { argument: 'namespace', namespace: ns.name },
    })
  }
}

/** Options of {@link Store.transaction} writes. */
export interface TxnWriteOptions {
  /** Apply only if the key is at this version (0: absent). */
  ifVersion?: number
  /** Time to live of a put, in ms. */
  ttl?: number
}
const TXN_WRITE_KEYS = keysOf<TxnWriteOptions>()(['ifVersion', 'ttl'])

interface TxnWrite {
  action: number
  condition: number
  ns: Namespace<unknown, boolean>
  key: string
  value: Uint8Array | undefined
  expected: number
  ttl: number
}

/**
 * Conditional writes over any keys of any namespaces, applied all or nothing as one revision.
 * A failed condition rejects the whole transaction with `VERSION_CONFLICT` naming the write.
 */
export class Transaction<D extends boolean> {
  private readonly writes: TxnWrite[] = []
  private pending: Promise<void>[] = []

  /** @internal */
  static create<D extends boolean>(ctx: StoreContext, writer: string | undefined): Transaction<D> {
    return new Transaction<D>(ctx, writer)
  }

  private constructor(
    private readonly ctx: StoreContext,
    private readonly writer: string | undefined,
  ) {}

  private add(action: number, ns: Namespace<unknown, boolean>, key: string, value: unknown, options: TxnWriteOptions, absent = false): this {
    ownNamespace(this.ctx, ns)
    if (typeof key !== 'string') throw new OrreryError('INVALID_ARGUMENT', 'a key must be a string', { details: { argument: 'key' } })
    const o = optionsOf(options, 'options', 'argument', TXN_WRITE_KEYS)
    const { expected, ttl } = checkWrite({ ifVersion: o.ifVersion, ttl: o.ttl })
    const condition = absent ? CONDITION.absent : o.ifVersion === undefined ? CONDITION.any : CONDITION.version
    const write: TxnWrite = { action, condition, ns, key, value: undefined, expected, ttl }
    if (action === ACTION.put) {
      const encoded = ns.encodeValue(value)
      if (encoded instanceof Promise)
        this.pending.push(
          encoded.then((bytes) => {
            write.value = bytes
          }),
        )
      else write.value = encoded
    }
    this.writes.push(write)
    return this
  }

  /** Sets a key (if at `ifVersion`, when given). */
  put<T>(ns: Namespace<T, boolean>, key: string, value: T, options: TxnWriteOptions = {}): this {
    return this.add(ACTION.put, ns as Namespace<unknown, boolean>, key, value, options)
  }

  /** Sets a key only if it holds no value. */
  create<T>(ns: Namespace<T, boolean>, key: string, value: T, options: Omit<TxnWriteOptions, 'ifVersion'> = {}): this {
    return this.add(ACTION.put, ns as Namespace<unknown, boolean>, key, value, options, true)
  }

  /** Deletes a key (if at `ifVersion`, when given). */
  delete(ns: Namespace<unknown, boolean>, key: string, options: Pick<TxnWriteOptions, 'ifVersion'> = {}): this {
    return this.add(ACTION.delete, ns, key, undefined, options)
  }

  /** Writes nothing, but the transaction applies only if the key is at `version` (0: absent). */
  check(ns: Namespace<unknown, boolean>, key: string, version: number): this {
    int(version, 'version', {}, 'argument')
    return this.add(ACTION.check, ns, key, undefined, { ifVersion: version })
  }

  /**
   * Applies every write or none; returns the transaction's version (0 if nothing changed).
   * Values with an async schema validator make it a Promise even in memory.
   */
  commit(): Ack<D> {
    if (this.pending.length > 0) {
      const waiting = this.pending
      this.pending = []
      return Promise.all(waiting).then(() => this.apply()) as Ack<D>
    }
    return this.apply() as Ack<D>
  }

  private apply(): number | Promise<number> {
    const { ctx, writes } = this
    return ctx.guarded(() => {
      const writer = ctx.writerId(this.writer)
      let size = 0
      for (const w of writes) size += writeBound(w.key, w.value?.length ?? 0)
      const io = ctx.core.io(size)
      const view = ctx.core.view()
      let at = 0
      for (const w of writes) at = putWrite(io, view, at, w.action, w.condition, w.ns.id, w.key, w.value, writer, w.expected, w.ttl)
      const result = ctx.core.write(writes.length, ctx.now())
      return ctx.ack(
        result,
        writes.some((w) => w.ttl > 0 || w.action === ACTION.delete),
        (index) => ({ namespace: writes[index]!.ns.name, key: writes[index]!.key }),
      )
    })
  }
}

/** Options of {@link Orrery.openStore}. */
export interface StoreOptions {
  /** A file to keep the store in (native engine): writes are acknowledged once on disk. */
  path?: string
  /**
   * How writes reach the disk: `batched` (default) commits every write that arrived while the
   * previous commit was syncing in the next one (group commit); `every` commits each write on
   * its own. Either way a write's promise resolves only after its commit returned from fsync.
   */
  durability?: 'batched' | 'every'
  /** How many older versions each key keeps (default 0); namespaces may set their own. */
  history?: number
  /**
   * Largest value in bytes (default 1 MiB, at most 256 MiB). On the wasm engine every store of
   * the process shares one instance's memory, at most 4 GiB: a write it can no longer hold fails
   * with `VALUE_TOO_LARGE` (naming that limit) and writes nothing.
   */
  maxValueBytes?: number
  /** This replica's writer name (default `local`): stamps writes that name no other writer. */
  replica?: string
  /**
   * How long a deleted key's tombstone is kept, in ms (default 600,000): its history stays
   * readable, watchers replaying see the deletion, and an older write merged from another
   * replica loses to it instead of bringing the key back. Then the key is forgotten.
   */
  tombstoneMs?: number
  /**
   * A snapshot (from `store.export()`) to start from. A damaged one fails the open with
   * `INVALID_SNAPSHOT` (a durable store's too): nothing is imported and no store is left open.
   */
  snapshot?: Uint8Array
  /**
   * How far ahead of this replica's clock a merged change's stamp may be, in ms (default
   * 60,000). A merge moves the local clock past the remote stamp, so one stamp from far in the
   * future (a broken clock, or `wall: 1e300`) would otherwise pin every later local write to it:
   * such a change is refused (`INVALID_ARGUMENT`) and nothing is merged. `Infinity` turns
   * the check off.
   */
  maxClockDriftMs?: number
}
/** @internal */
export const STORE_KEYS = keysOf<StoreOptions>()(['path', 'durability', 'history', 'maxValueBytes', 'replica', 'tombstoneMs', 'snapshot', 'maxClockDriftMs'])

/** The default of {@link StoreOptions.maxClockDriftMs}: a minute. */
const DEFAULT_MAX_CLOCK_DRIFT_MS: number = DEFAULTS.maxClockDriftMs

/** The largest stamp `wall` (ms) and `logical` a merge takes: what a stamp read back can hold exactly. */
const MAX_WALL = Number.MAX_SAFE_INTEGER
const MAX_LOGICAL = 0xffffffff

/** Something the store reports about itself (on `store.events`). */
export type StoreEvent =
  /**
   * A watcher's callback threw (or its watch failed and it gave no error callback). Reported
   * here instead of rethrown, which would end the process; delivery to it and to others goes on.
   */
  | { type: 'watcher-error'; namespace: string; error: unknown }
  /**
   * The engine failed while the store worked on its own (a TTL timer, a scheduled watch
   * delivery): a core panic, or a wasm instance poisoned by one. Every open watch has ended with
   * its error; reported once, and `close()` still releases the store.
   */
  | { type: 'engine-failed'; error: OrreryError }
  /**
   * A namespace shared across processes could not publish a change (the broker refused it or was
   * unreachable past the transport's publish timeout), or a change another process published was
   * refused here (a value its schema rejects; a stamp more than `maxClockDriftMs` ahead, which
   * is held and merged once this clock is near enough). Local writes are never failed by it: a
   * change that could not be published stays here, and reaches the others in the state this
   * process sends when another joins. `error` is an OrreryError (TRANSPORT_UNAVAILABLE for the
   * broker, SCHEMA_INVALID, HANDLER_ERROR for a merge function that threw, INTERNAL for a bug).
   */
  | { type: 'shared-error'; namespace: string; operation: 'publish' | 'merge'; error: OrreryError }

/** A store: namespaces of versioned keys. */
export class Store<D extends boolean = false> {
  /** Events: watchers that threw, an engine that failed under a timer or a scheduled delivery. */
  readonly events: Stream<StoreEvent>
  private readonly eventSubject = new Subject<StoreEvent>()
  /** Set once `engine-failed` was reported. */
  private engineFailed = false
  /** The last watcher error printed (with nobody on `events`): watchers ended by one failure print it once. */
  private printed: unknown
  private readonly writerIds = new Map<string, number>()
  private readonly writerNames: string[] = []
  private readonly namespaces = new Map<string, Namespace<unknown, D>>()
  private readonly watches = new Map<number, WatchSink>()
  private readonly sharedWatches = new Map<string, { id: number; watch: WatchSink }>()
  /** Durable writes waiting for their commit, in ticket order. */
  private readonly waiters: { ticket: number; value: number; resolve: (value: number) => void; reject: (e: unknown) => void }[] = []
  private listening = false
  /** Whether this turn's changes are already due to be handed to the disk. */
  private submitting = false
  /** The highest ticket known to be on disk (asking the engine costs a call). */
  private committedKnown = 0
  /** Why the disk failed; every later write fails with it. */
  private failure: string | undefined
  private scheduled = false
  private closed = false
  /** One timer for the next TTL; it does not keep Node running (expiry is not pending work). */
  private readonly expiries = new DeadlineTimer(
    () => this.clock(),
    () => {
      // Thrown from a timer, a failed engine (a panic, a poisoned wasm instance) would end the
      // process; the store's own calls report it from now on, and no timer is armed again. Its
      // watches can get nothing more: they end with the error (reported once on `events`).
      try {
        this.flush()
      } catch (error) {
        if (!isEngineFailure(error)) throw error
        this.failWatches(error)
      }
    },
    false,
  )
  private readonly ctx: StoreContext
  /** What the store's shared namespaces need of it, and the bus of the Orrery that opened it. */
  private sharing: {
    bus: Bus | undefined
    stops: Array<() => void>
    flushes: Array<() => Promise<void>>
    printed: Set<string>
    /** Tells the Orrery that opened the store it closed. */
    closed: (() => void) | undefined
  } = { bus: undefined, stops: [], flushes: [], printed: new Set(), closed: undefined }

  /** @internal */
  static create<D extends boolean>(core: StoreCore, clock: () => number, maxClockDriftMs?: number, tombstoneMs?: number): Store<D> {
    return new Store<D>(core, clock, maxClockDriftMs, tombstoneMs)
  }

  private constructor(
    private readonly core: StoreCore,
    private readonly clock: () => number,
    private readonly maxClockDriftMs = DEFAULT_MAX_CLOCK_DRIFT_MS,
    /** How long tombstones are kept (the core keeps its own; shared namespaces send theirs for as long). */
    private readonly tombstoneMs: number = DEFAULTS.tombstoneMs,
  ) {
    this.ctx = {
      core,
      durable: core.durable,
      closed: false,
      expiring: false,
      now: clock,
      watches: this.watches,
      shared: this.sharedWatches,
      writerId: (name) => this.writerId(name),
      writerName: (id) => this.writerName(id),
      ack: (result, ttl, conflictAt) => this.ack(result, ttl, conflictAt),
      guarded: (write) => this.guarded(write),
      changed: (ttl) => this.changed(ttl),
      submitSoon: () => this.submitSoon(),
      watcherFailed: (namespace, error) => this.watcherFailed(namespace, error),
    }
    const events = this.eventSubject
    this.events = new Stream<StoreEvent>({
      start(sink) {
        const subscription = events.subscribe(sink)
        // Events cannot wait: an iterator that pauses keeps them queued.
        return { stop: () => subscription.unsubscribe(), setPaused: () => {} }
      },
      unhandled: (error) => console.error('Orrery: a store.events subscriber threw:', error),
    })
    // A reopened durable store (or a snapshot) may hold TTLs already.
    this.arm()
  }

  /** Whether writes are acknowledged from disk. */
  get durable(): D {
    return this.core.durable as D
  }

  /**
   * The largest value a write may carry, in encoded bytes (the `maxValueBytes` it was opened
   * with, 1 MiB by default): a larger one is refused with `VALUE_TOO_LARGE`.
   */
  get maxValueBytes(): number {
    return this.core.maxValueBytes
  }

  /** The latest revision: the version of the last write. */
  get revision(): number {
    this.checkOpen()
    return this.core.revision()
  }

  /**
   * A namespace of keys. `codec` (default `json`) encodes values; a `schema` validates every
   * value written (SCHEMA_INVALID names the field, and nothing is written).
   */
  namespace<S extends StandardSchemaV1>(name: string, options: NamespaceOptions<S> & { schema: S }): Namespace<InferOutput<S>, D>
  /** A namespace without a schema: `T` is the type of its values (`store.namespace<number>('counters')`). */
  namespace<T = unknown>(name: string, options?: NamespaceOptions<undefined>): Namespace<T, D>
  namespace(name: string, options: NamespaceOptions<StandardSchemaV1 | undefined> = {}): Namespace<unknown, D> {
    this.checkOpen()
    text(name, 'namespace name')
    optionsOf(options, 'options', 'argument', NAMESPACE_KEYS)
    if (options.codec !== undefined) oneOf(options.codec, ['json', 'msgpack', 'raw'], 'codec')
    if (options.history !== undefined) int(options.history, 'history', { max: 0xffffffff })
    // The bus's check: a schema may be a function carrying `~standard`, and it must validate.
    if (options.schema !== undefined) checkSchema(options.schema)
    const known = this.namespaces.get(name)
    if (known && options.codec === undefined && options.schema === undefined && options.history === undefined) return known
    const id = this.core.namespace(name)
    if (options.history !== undefined) {
      this.core.setHistory(id, options.history)
      this.changed(false)
    }
    const ns = Namespace.create<unknown, D>(this.ctx, id, name, options)
    this.namespaces.set(name, ns)
    return ns
  }

  /**
   * A namespace shared with other processes through a transport of the Orrery that opened this
   * store (`orrery.openStore()`); see docs/store.md "A namespace across processes".
   *
   * - `consistency: 'replicated'` (default): a namespace of this store, written at once (sync in
   *   memory) and published in the background; the others merge each change by its stamp (later
   *   wins) or by `merge`. Eventual convergence; no compare-and-set across processes.
   * - `consistency: 'strong'` (redis, nats): a {@link StrongNamespace} whose writes go through the
   *   broker, which checks `ifVersion`: of two processes racing a compare-and-set exactly one wins.
   */
  shared<T = unknown>(name: string, options: ReplicatedOptions<T>): Promise<Namespace<T, D>>
  shared<T = unknown>(name: string, options: StrongOptions): Promise<StrongNamespace<T>>
  shared(name: string, options: ReplicatedOptions<unknown> | StrongOptions): Promise<Namespace<unknown, D> | StrongNamespace<unknown>> {
    return openShared(this.sharedHost(), name, options).then((ns) => {
      this.sharedModes.set(name, { mode: (options as { consistency?: string }).consistency === 'strong' ? 'strong' : 'replicated', namespace: ns })
      return ns
    })
  }

  /** How each shared namespace opened here is kept, by name. */
  private readonly sharedModes = new Map<string, { mode: 'replicated' | 'strong'; namespace: Namespace<unknown, D> | StrongNamespace<unknown> }>()

  /**
   * The namespaces opened on this store (by `namespace` or `shared`), in name order, each with
   * how it is kept: `local` (this store only), `replicated` or `strong` (see `shared`).
   */
  list(): Array<{ name: string; mode: 'local' | 'replicated' | 'strong'; namespace: Namespace<unknown, D> | StrongNamespace<unknown> }> {
    this.checkOpen()
    const out = new Map<string, { name: string; mode: 'local' | 'replicated' | 'strong'; namespace: Namespace<unknown, D> | StrongNamespace<unknown> }>()
    for (const [name, namespace] of this.namespaces) out.set(name, { name, mode: 'local', namespace })
    for (const [name, shared] of this.sharedModes) out.set(name, { name, ...shared })
    return [...out.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  }

  /**
   * @internal Binds the store to the bus of the Orrery that opened it (its transports carry
   * shared namespaces); `closed` runs when the store closes.
   */
  linkBus(bus: Bus, closed?: () => void): void {
    this.sharing.bus = bus
    this.sharing.closed = closed
  }

  private sharedHost(): SharedHost {
    this.checkOpen()
    const host: SharedHost = {
      bus: this.sharing.bus,
      replica: this.writerName(0),
      maxValueBytes: this.core.maxValueBytes,
      tombstoneMs: this.tombstoneMs,
      maxClockDriftMs: this.maxClockDriftMs,
      now: this.clock,
      isClosed: () => this.closed,
      revision: () => this.core.revision(),
      namespace: (name, options) => this.namespace(name, options as NamespaceOptions<undefined>),
      merge: (ns, change, resolve) => this.merge(ns, change, resolve) as number | Promise<number>,
      report: (reported) => {
        const where = { namespace: reported.namespace }
        const error = failureOf(reported.error, 'INTERNAL', `shared namespace ${reported.namespace} failed to ${reported.operation}`, where)
        const event = { ...reported, error }
        if (this.eventSubject.observed) this.eventSubject.next(event)
        else if (!this.sharing.printed.has(`${event.operation}\u0000${event.namespace}`)) {
          // With nobody on `events`, printed once per namespace and operation: an outage fails every publish.
          this.sharing.printed.add(`${event.operation}\u0000${event.namespace}`)
          console.error(`Orrery: shared namespace ${event.namespace} failed to ${event.operation} (listen on store.events for 'shared-error'):`, event.error)
        }
      },
      onClose: (stop) => this.sharing.stops.push(stop),
      onFlush: (flush) => this.sharing.flushes.push(flush),
    }
    return host
  }

  /** A transaction; `writer` names who writes it (default: the store's replica). */
  transaction(options: { writer?: string } = {}): Transaction<D> {
    this.checkOpen()
    return Transaction.create<D>(this.ctx, textOr(optionsOf(options, 'options', 'argument', ['writer']).writer, 'writer'))
  }

  /** The whole store at this revision, as bytes (consistent at one point in time). */
  export(): Uint8Array {
    this.checkOpen()
    return this.core.export()
  }

  /**
   * Replaces every key with a snapshot's. Versions never go backwards, and every open watch
   * ends with `WATCH_LAGGED`. A snapshot that does not decode changes nothing (`INVALID_SNAPSHOT`).
   */
  import(snapshot: Uint8Array): Ack<D> {
    return this.guarded(() => this.importNow(snapshot)) as Ack<D>
  }

  /**
   * @internal The snapshot `openStore` starts from: one that does not decode throws here
   * (`INVALID_SNAPSHOT`, nothing imported) on a durable store too, where `import()` would turn
   * it into a rejection. A durable store acknowledges the import from disk, which opening does
   * not wait for (a disk failure fails every later write).
   */
  importOnOpen(snapshot: Uint8Array): void {
    const ack = this.importNow(snapshot)
    if (ack instanceof Promise) ack.catch(() => {})
  }

  private importNow(snapshot: Uint8Array): number | Promise<number> {
    this.checkOpen()
    this.core.import(snapshot)
    return this.ack(this.core.revision(), true, () => ({ namespace: '', key: '' }))
  }

  /**
   * Applies a change from another replica. By default the last writer wins (by stamp: clock,
   * then writer name), and an older change is ignored (the result is 0). With `resolve`, the
   * local and remote values are merged by it and written as a new local change, which expires
   * when the longest-lived of the two does (never if either has no TTL). Either way the local
   * clock moves past the remote stamp.
   */
  merge<T>(ns: Namespace<T, D>, change: RemoteChange<T>, resolve?: (local: T | undefined, remote: T | undefined) => T): Ack<D> {
    return this.guarded(() => {
      ownNamespace(this.ctx, ns)
      const { wall, logical, writer } = this.checkChange(change)
      if (resolve !== undefined) callable(resolve, 'resolve')
      const expiresAt =
        change.expiresAt === undefined || change.type === 'delete' ? undefined : finite(change.expiresAt, 'change.expiresAt', { min: 0 }, 'argument')
      const now = this.clock()
      let ttl = expiresAt === undefined ? 0 : expiresAt - now
      // A put already over: what every replica that had it holds now, a deletion with its stamp.
      let type = expiresAt !== undefined && ttl <= 0 ? 'delete' : change.type
      let value = change.value
      let condition: number = CONDITION.any
      let expected = 0
      if (resolve) {
        const local = ns.get(change.key)
        const remote = type === 'put'
        value = resolve(local?.value, remote ? change.value : undefined)
        // The result lasts as long as the longest-lived of the values it was made from (no TTL
        // beats any), so replicas that merge each other's changes agree on it too.
        const deadlines = [...(local === undefined ? [] : [local.expiresAt ?? Infinity]), ...(remote ? [expiresAt ?? Infinity] : [])]
        const deadline = deadlines.length === 0 ? Infinity : Math.max(...deadlines)
        ttl = deadline === Infinity ? 0 : deadline - now
        type = 'put'
        condition = CONDITION.version
        expected = local?.version ?? 0
      }
      const bytes = type === 'put' ? ns.encodeSync(value) : undefined
      // Interned before `io` is taken: interning may grow wasm memory and detach a view.
      const writerId = this.writerId(writer)
      const io = this.core.io(writeBound(change.key, bytes?.length ?? 0))
      const put = type === 'put'
      const putTtl = put && ttl > 0 ? ttl : 0
      putWrite(io, this.core.view(), 0, put ? ACTION.put : ACTION.delete, condition, ns.id, change.key, bytes, writerId, expected, putTtl)
      const result = this.core.merge(wall, logical, resolve === undefined, now)
      return this.ack(result, !put || putTtl > 0, () => ({ namespace: ns.name, key: change.key }))
    }) as Ack<D>
  }

  /**
   * A remote change's shape and stamp, checked before anything is merged: a stamp the core would
   * convert (`logical: 1.5`, `-1`, `2**32`) or that would wrap (`wall: 2**64`) is refused, and so
   * is one more than `maxClockDriftMs` ahead of this replica's clock.
   */
  private checkChange(change: RemoteChange<unknown>): RemoteChange<unknown>['stamp'] {
    optionsOf(change, 'change')
    if (typeof change.key !== 'string') refuse('argument', 'change.key', change.key, 'must be a string')
    oneOf(change.type, ['put', 'delete'], 'change.type', 'argument')
    const stamp = optionsOf(change.stamp, 'change.stamp')
    const wall = int(stamp.wall, 'stamp.wall', { max: MAX_WALL }, 'argument')
    int(stamp.logical, 'stamp.logical', { max: MAX_LOGICAL }, 'argument')
    text(stamp.writer, 'stamp.writer', { nonEmpty: true })
    const now = this.clock()
    if (wall > now + this.maxClockDriftMs) {
      throw new OrreryError(
        'INVALID_ARGUMENT',
        `stamp.wall ${wall} is ${wall - now} ms ahead of this replica's clock, more than maxClockDriftMs (${this.maxClockDriftMs})`,
        {
          details: { argument: 'change.stamp', wall, now, maxClockDriftMs: this.maxClockDriftMs },
        },
      )
    }
    return stamp
  }

  /** Expires what is due now and delivers every waiting watch change. Call after moving a fake clock. */
  flush(): void {
    if (this.closed) return
    this.core.tick(this.clock())
    // Expiries are writes: on a durable store they go to disk with this turn's commit.
    if (this.core.durable) this.submitSoon()
    this.deliver()
    this.arm()
  }

  /**
   * Resolves when every write so far is where it goes: on disk (a durable store), and, for its
   * shared namespaces, every change of a replicated one published (the broker took it) and
   * every write of a strong one answered. A publish that failed (reported on `events` too)
   * rejects it, after the transport's publishTimeoutMs at most.
   */
  async flushed(): Promise<void> {
    if (this.closed) return
    // Changes still waiting for their watch delivery reach the publishers now.
    if (this.sharing.flushes.length > 0) this.deliverNow()
    const shared = this.sharing.flushes.map((flush) => flush())
    let disk: Promise<unknown> | undefined
    if (this.core.durable) {
      this.core.submitDisk()
      disk = this.waitFor(this.core.submitted(), 0)
    }
    await Promise.all([disk, ...shared])
  }

  /** Delivers what waits for the watches at once (an engine failure ends them, as a scheduled delivery would). */
  private deliverNow(): void {
    try {
      this.deliver()
    } catch (error) {
      this.failWatches(error)
    }
  }

  /**
   * Ends every watch, waits for queued writes to reach the disk, and releases the store. Later
   * calls fail with `CLOSED`. Its replicated namespaces send what they have not sent yet (use
   * `await store.flushed()` first to know it arrived), its strong ones stop their change feeds.
   */
  close(): void {
    if (this.closed) return
    if (this.sharing.stops.length > 0) this.deliverNow()
    this.closed = true
    this.ctx.closed = true
    this.expiries.cancel()
    for (const stop of this.sharing.stops.splice(0)) stop()
    this.sharing.flushes.length = 0
    const watches = [...this.watches.values()]
    this.watches.clear()
    this.sharedWatches.clear()
    for (const watch of watches) for (const { sink } of watch.subscribers) sink.complete()
    this.eventSubject.complete()
    this.core.close()
    this.onCommit(this.core.diskFailure() ? -1 : this.core.committed())
    this.sharing.closed?.()
  }

  private checkOpen(): void {
    if (this.closed) throw new OrreryError('CLOSED', 'the store is closed')
  }

  private guarded(write: () => number | Promise<number>): number | Promise<number> {
    if (!this.core.durable) {
      this.checkOpen()
      return write()
    }
    try {
      this.checkOpen()
      return write()
    } catch (e) {
      return Promise.reject(e)
    }
  }

  private writerId(name: string | undefined): number {
    if (name === undefined) return 0
    let id = this.writerIds.get(name)
    if (id === undefined) {
      id = this.core.writer(name)
      this.writerIds.set(name, id)
    }
    return id
  }

  private writerName(id: number): string {
    let name = this.writerNames[id]
    if (name === undefined) {
      name = this.core.writerName(id) ?? `writer-${id}`
      this.writerNames[id] = name
    }
    return name
  }

  private ack(result: number, ttl: boolean, conflictAt: ConflictAt): number | Promise<number> {
    if (result < 0) {
      const [index = 0, expected = 0, current = 0] = Array.from(this.core.conflict())
      const where = conflictAt(index)
      throw new OrreryError(
        'VERSION_CONFLICT',
        `${where.namespace}/${where.key}: expected version ${expected === 0 ? '(absent)' : expected}, found ${current === 0 ? '(absent)' : current}`,
        {
          details: { index, namespace: where.namespace, key: where.key, expected, current },
        },
      )
    }
    this.changed(ttl)
    if (!this.core.durable) return result
    this.submitSoon()
    return this.waitFor(this.core.submitted(), result)
  }

  /**
   * Group commit: the changes of one turn of the event loop go to the disk together when it
   * ends, so a burst of writes costs one commit (one fsync), not one for its first write and
   * another for the rest.
   */
  private submitSoon(): void {
    if (this.submitting) return
    this.submitting = true
    queueMicrotask(() => {
      this.submitting = false
      if (this.closed) return
      try {
        this.core.submitDisk()
      } catch (error) {
        // The disk failed: every write waiting for it fails with the reason.
        this.failure = (error as Error).message
        this.onCommit(-1)
      }
    })
  }

  /** Resolves with `value` once the disk has committed `ticket`. */
  private waitFor(ticket: number, value: number): Promise<number> {
    if (this.failure) return Promise.reject(diskError(this.failure))
    if (ticket <= this.committedKnown) return Promise.resolve(value)
    return new Promise((resolve, reject) => {
      this.waiters.push({ ticket, value, resolve, reject })
      if (!this.listening) {
        this.listening = true
        this.core.setListener((committed) => this.onCommit(committed))
        // A commit may have landed before the listener was set.
        this.onCommit(this.core.committed())
      }
    })
  }

  /** The disk committed up to `committed` (-1: a commit failed). */
  private onCommit(committed: number): void {
    if (committed < 0) {
      this.failure ??= this.core.diskFailure() ?? 'a commit failed'
    } else if (committed > this.committedKnown) {
      this.committedKnown = committed
    }
    let done = 0
    while (done < this.waiters.length && this.waiters[done]!.ticket <= this.committedKnown) {
      const waiter = this.waiters[done++]!
      waiter.resolve(waiter.value)
    }
    this.waiters.splice(0, done)
    if (this.failure) {
      const error = diskError(this.failure)
      for (const waiter of this.waiters.splice(0)) waiter.reject(error)
    }
    if (this.waiters.length === 0 && this.listening) {
      this.listening = false
      // Cleared so an idle durable store does not keep Node running.
      this.core.setListener(null)
    }
  }

  /**
   * Something changed: deliver watch changes after this call. Only a new TTL can bring the next
   * deadline closer (expiries and overwrites only move it later), so only then is the timer
   * re-armed: asking the core for its deadline on every write cost a boundary call each.
   */
  private changed(ttl: boolean): void {
    if (this.watches.size > 0 && !this.scheduled) {
      this.scheduled = true
      queueMicrotask(() => {
        this.scheduled = false
        if (this.closed) return
        try {
          this.deliver()
        } catch (error) {
          // Thrown from a microtask it would end the process: the engine failed mid-drain (a
          // panic, a poisoned wasm instance), so every watch ends with that error instead.
          this.failWatches(error)
        }
      })
    }
    if (ttl) this.arm()
  }

  private deliver(): void {
    const { core } = this
    // A handler may close the store: stop there.
    while (!this.closed) {
      const records = core.drain()
      if (records === undefined) return
      const view = new DataView(records.buffer, records.byteOffset, records.byteLength)
      for (let at = 0; at < records.length && !this.closed; at = nextRecord(view, at)) {
        const id = view.getUint32(at, true)
        const watch = this.watches.get(id)
        if (!watch) continue
        if (records[at + 4] === LAGGED) {
          this.endWatch(id, watch)
          const after = view.getFloat64(at + 16, true)
          const error = new OrreryError(
            'WATCH_LAGGED',
            `the watcher fell behind after version ${after} and history no longer holds what it missed; watch again (from 'current')`,
            { details: { after } },
          )
          for (const { sink } of watch.subscribers) sink.error(error)
          continue
        }
        let change: Change<unknown>
        try {
          change = readChange(records, view, at, watch.codec, this.ctx.writerName)
        } catch (cause) {
          this.endWatch(id, watch)
          core.unwatch(id)
          const error = new OrreryError('INVALID_PAYLOAD', 'a watched value does not decode with the namespace codec', { cause })
          for (const { sink } of watch.subscribers) sink.error(error)
          continue
        }
        watch.last = change.version
        // The list is replaced, never spliced, when someone leaves: this loop's stays whole,
        // and `active` skips those who left during it.
        for (const subscriber of watch.subscribers) {
          if (subscriber.active && change.version > subscriber.after) subscriber.sink.next(change)
        }
      }
    }
  }

  /** Ends every watch with `error` (its core watches are beyond reach: the engine failed). */
  private failWatches(error: unknown): void {
    if (isEngineFailure(error) && !this.engineFailed) {
      this.engineFailed = true
      this.eventSubject.next({ type: 'engine-failed', error })
    }
    const watches = [...this.watches.values()]
    this.watches.clear()
    this.sharedWatches.clear()
    for (const watch of watches) for (const { sink } of watch.subscribers) sink.error(error)
  }

  private watcherFailed(namespace: string, error: unknown): void {
    if (this.eventSubject.observed) {
      this.eventSubject.next({ type: 'watcher-error', namespace, error })
      return
    }
    // With nobody listening on `events`, the error would vanish where it used to end the
    // process: print it instead (once, however many watchers one failure ended).
    if (error === this.printed) return
    this.printed = error
    console.error(
      `Orrery: a watcher of namespace ${namespace} threw or failed without an error callback (listen on store.events for 'watcher-error' to handle it):`,
      error,
    )
  }

  private endWatch(id: number, watch: WatchSink): void {
    this.watches.delete(id)
    if (watch.sharedAs !== undefined) this.sharedWatches.delete(watch.sharedAs)
  }

  /** Arms the timer for the next TTL. */
  private arm(): void {
    const at = this.core.nextDeadline()
    this.ctx.expiring = at !== Infinity
    this.expiries.arm(at)
  }
}

function diskError(failure: string): OrreryError {
  // A failure read back from the disk is `"<file>": <reason>`; one a call threw says so already.
  const message = failure.startsWith("the store's disk failed") ? failure : `the store's disk failed: ${failure}`
  return new OrreryError('STORE_IO', message, { details: { disk: true } })
}

/** The largest `maxValueBytes`: 256 MiB. */
const MAX_VALUE_BYTES_LIMIT = LIMITS.maxValueBytes

/** @internal {@link StoreOptions} with their defaults, checked before any engine call. */
export interface CheckedStoreOptions {
  readonly path: string | undefined
  readonly batched: boolean
  readonly maxValueBytes: number
  readonly history: number
  readonly replica: string
  readonly tombstoneMs: number
  readonly snapshot: Uint8Array | undefined
  readonly maxClockDriftMs: number
}

/**
 * @internal Checks every option of `openStore` in the facade, for both engines alike: a
 * wrong-typed one must never reach wasm-bindgen's glue, which coerces it or (a number where a
 * string is meant: `replica: 5`) reads out of bounds and traps the whole instance.
 */
export function checkStoreOptions(given: StoreOptions | undefined | null, keys: readonly string[] = STORE_KEYS): CheckedStoreOptions {
  const o = optionsOf(given, 'options', 'argument', keys)
  const snapshot = o.snapshot
  if (snapshot !== undefined && !(snapshot instanceof Uint8Array)) refuse('option', 'snapshot', snapshot, 'must be a Uint8Array from store.export()')
  return {
    path: textOr(o.path, 'path', { nonEmpty: true }),
    batched: oneOfOr(o.durability, ['batched', 'every'], 'batched', 'durability') === 'batched',
    maxValueBytes: intOr(o.maxValueBytes, DEFAULTS.maxValueBytes, 'maxValueBytes', { min: 1, max: MAX_VALUE_BYTES_LIMIT }),
    history: intOr(o.history, DEFAULTS.history, 'history', { max: 0xffffffff }),
    replica: textOr(o.replica, 'replica', { nonEmpty: true }) ?? 'local',
    tombstoneMs: o.tombstoneMs === undefined ? DEFAULTS.tombstoneMs : finite(o.tombstoneMs, 'tombstoneMs', { min: 0 }),
    snapshot,
    maxClockDriftMs: o.maxClockDriftMs === undefined ? DEFAULT_MAX_CLOCK_DRIFT_MS : msOrNone(o.maxClockDriftMs, 'maxClockDriftMs', { min: 0 }),
  }
}
