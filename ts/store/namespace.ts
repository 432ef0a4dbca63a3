/**
 * A namespace of the store: versioned keys with reads by version, history, conditional writes,
 * TTLs, listing by prefix, and watches as Streams. Values are encoded with the namespace's codec
 * and, when it has one, validated by its schema before anything is written.
 */
import { closedError, encodeValue, type Ack, type StoreContext, type WatchSink, type WatchSubscriber } from './context.js'
import { callable, finite, int, intOr, keysOf, oneOf, options as optionsOf, text } from '../check.js'
import { DEFAULTS, LIMITS } from '../engines/manifest.js'
import { isOrreryError, OrreryError } from '../errors.js'
import type { CodecName } from '../frame.js'
import type { StandardSchemaV1 } from '../schema.js'
import { nextRecord, readChange, readEntry, type Change, type Entry } from './records.js'
import { ACTION, CONDITION, invalidKey, MAX_KEY_BYTES, putKey, putWrite, RECORD_HEADER, WATCH_MODES, writeBound } from './wire.js'
import { Stream } from '../stream.js'

/** Options of {@link Store.namespace}. */
export interface NamespaceOptions<S extends StandardSchemaV1 | undefined> {
  /** How values become bytes (default `json`). */
  codec?: CodecName
  /** Validates every value written; its output type becomes the namespace's value type. */
  schema?: S
  /** How many older versions each key keeps (default: the store's). */
  history?: number
}
/** @internal */
export const NAMESPACE_KEYS = keysOf<NamespaceOptions<undefined>>()(['codec', 'schema', 'history'])

/** Options of a write. */
export interface WriteOptions {
  /** Apply only if the key is at this version (compare-and-set; 0 means absent). */
  ifVersion?: number
  /** Time to live in ms: the key expires (a change of type `expire`) after it. */
  ttl?: number
  /** Who writes (default: the store's replica name). */
  writer?: string
}
const WRITE_KEYS = keysOf<WriteOptions>()(['ifVersion', 'ttl', 'writer'])

/** Where a watch starts. */
export interface WatchOptions {
  /**
   * `now` (default): the next change on. `current`: each matching key's current value first.
   * A version: exactly every change after it, replayed from history (if history no longer
   * holds them all, the stream fails with `WATCH_LAGGED`).
   */
  from?: 'now' | 'current' | number
  /** Changes buffered in the core before the watcher catches up from history (default 1024). */
  buffer?: number
}
const WATCH_KEYS = keysOf<WatchOptions>()(['from', 'buffer'])

/** For writes that cannot conflict (or did not): never called. */
const NO_CONFLICT = (): never => {
  throw new Error('unreachable: the write did not conflict')
}

/** Shared default options: no object allocated per call. */
const NONE: WriteOptions = Object.freeze({})

const keyError = (key: unknown): OrreryError =>
  new OrreryError('INVALID_ARGUMENT', 'a key must be a string', { details: { argument: 'key', value: typeof key } })

const scratch = new Uint8Array(3 * MAX_KEY_BYTES)

/**
 * A watch's key or prefix, checked when `watch` is called rather than when its Stream is first
 * subscribed: a string (`INVALID_ARGUMENT`), well-formed, at most MAX_KEY_BYTES of UTF-8 and, for a
 * key, not empty (`INVALID_KEY`, as a write of that key would be).
 */
function checkTarget(target: unknown, prefix: boolean): void {
  if (typeof target !== 'string') throw keyError(target)
  const bytes = target.length > MAX_KEY_BYTES ? target.length : putKey(scratch, 0, target)
  if (bytes > MAX_KEY_BYTES || (!prefix && bytes === 0)) throw invalidKey(target, bytes)
}

/**
 * @internal A write's options, checked before anything crosses: `ifVersion` a whole number >= 0
 * (a positional-style argument since 0.1: `INVALID_ARGUMENT`), `ttl` a finite number of ms >= 0
 * (0: none; the core refuses a negative one), `writer` a well-formed string (the core checks
 * its name). `'100'` or `true` is refused, never coerced.
 */
export function checkWrite(options: unknown): { expected: number; ttl: number; writer: string | undefined } {
  // The common call gives no options: no walk over them.
  const o = options === NONE ? NONE : (optionsOf(options as WriteOptions | undefined, 'options', 'argument', WRITE_KEYS) as WriteOptions)
  const expected = o.ifVersion === undefined ? 0 : int(o.ifVersion, 'ifVersion', {}, 'argument')
  const ttl = o.ttl === undefined ? 0 : finite(o.ttl, 'ttl', { min: 0 })
  const writer = o.writer === undefined ? undefined : text(o.writer, 'writer', {}, 'option')
  return { expected, ttl, writer }
}

export class Namespace<T, D extends boolean> {
  private readonly codec: CodecName
  private readonly schema: StandardSchemaV1 | undefined

  /** @internal */
  static create<T, D extends boolean>(ctx: StoreContext, id: number, name: string, options: NamespaceOptions<StandardSchemaV1 | undefined>): Namespace<T, D> {
    return new Namespace<T, D>(ctx, id, name, options)
  }

  private constructor(
    private readonly ctx: StoreContext,
    readonly id: number,
    readonly name: string,
    options: NamespaceOptions<StandardSchemaV1 | undefined>,
  ) {
    this.codec = options.codec ?? 'json'
    this.schema = options.schema
    if (this.codec !== 'json' && this.codec !== 'msgpack' && this.codec !== 'raw') {
      throw new OrreryError('INVALID_OPTION', `unknown codec ${String(this.codec)}: use json, msgpack or raw`, {
        details: { option: 'codec', value: this.codec },
      })
    }
  }

  /**
   * @internal Whether this namespace is one of the store behind `ctx`: namespace ids are
   * per store, so a namespace of another store would name whichever namespace of this one
   * happens to share its id.
   */
  belongsTo(ctx: StoreContext): boolean {
    return this.ctx === ctx
  }

  /** @internal Validates and encodes a value (a Promise only with an async validator). */
  encodeValue(value: unknown): Uint8Array | Promise<Uint8Array> {
    return encodeValue(this.codec, this.schema, `write to ${this.name}`, value)
  }

  /** @internal Like encodeValue, for paths that cannot wait. */
  encodeSync(value: unknown): Uint8Array {
    const bytes = this.encodeValue(value)
    if (bytes instanceof Promise) throw new OrreryError('INVALID_OPTION', 'this write needs a synchronous schema validator', { details: { option: 'schema' } })
    return bytes
  }

  /** Puts the key into `io` at 0 and returns its length. */
  private key(key: string): number {
    if (typeof key !== 'string') throw keyError(key)
    return putKey(this.ctx.core.io(3 * key.length), 0, key)
  }

  /** The key's live value, or undefined. */
  get(key: string): Entry<T> | undefined {
    return this.read(key, 0)
  }

  /**
   * The value the key had at `version` (if history still holds it). A deletion or expiry at
   * that version reads as undefined; see {@link history} for every kept change.
   */
  getVersion(key: string, version: number): Entry<T> | undefined {
    int(version, 'version', { min: 1 }, 'argument')
    return this.read(key, version)
  }

  /**
   * The time a read passes: the clock only when a deadline (a TTL, a tombstone's end) may be
   * due, since reading it costs a third of a get. A read that runs deadlines changes the
   * store: its watchers hear of it, and a durable store commits it this turn.
   */
  private readTime(): number {
    const { ctx } = this
    if (!ctx.expiring) return 0
    ctx.changed(false)
    if (ctx.durable) ctx.submitSoon()
    return ctx.now()
  }

  private read(key: string, version: number): Entry<T> | undefined {
    const { core } = this.ctx
    if (this.ctx.closed) throw closedError()
    const now = this.readTime()
    const size = core.get(this.id, this.key(key), version, now)
    if (size < 0) return undefined
    let io = core.io()
    if (size > io.length) {
      core.io(size)
      core.get(this.id, this.key(key), version, now)
      io = core.io()
    }
    if (io[4] !== 1) return undefined
    return readEntry<T>(io, core.view(), 0, this.codec, this.ctx.writerName, key)
  }

  /** Every kept change of the key, oldest first (history plus the current one). */
  history(key: string): Change<T>[] {
    const { core } = this.ctx
    if (this.ctx.closed) throw closedError()
    const now = this.readTime()
    let size = core.history(this.id, this.key(key), now)
    if (size < 0) return []
    if (size > core.io().length) {
      core.io(size)
      size = core.history(this.id, this.key(key), now)
    }
    const io = core.io()
    const view = core.view()
    const out: Change<T>[] = []
    for (let at = 0; at < size; at = nextRecord(view, at)) out.push(readChange<T>(io, view, at, this.codec, this.ctx.writerName, key))
    return out
  }

  private write(action: number, condition: number, key: string, value: Uint8Array | undefined, options: WriteOptions): number | Promise<number> {
    const { ctx } = this
    const { core } = ctx
    if (typeof key !== 'string') throw keyError(key)
    const checked = checkWrite(options)
    const { expected, ttl } = checked
    // Interned before `io` is taken: interning may grow wasm memory and detach a view.
    const writer = checked.writer === undefined ? 0 : ctx.writerId(checked.writer)
    const io = core.io(writeBound(key, value === undefined ? 0 : value.length))
    putWrite(io, core.view(), 0, action, condition, this.id, key, value, writer, expected, ttl)
    const result = core.write(1, ctx.now())
    // A TTL or a deletion (its tombstone's end) sets a deadline the timer must know.
    return ctx.ack(result, ttl > 0 || action === ACTION.delete, result < 0 ? () => ({ namespace: this.name, key }) : NO_CONFLICT)
  }

  private putWith(condition: number, key: string, value: T, options: WriteOptions): Ack<D> {
    const { ctx } = this
    if (ctx.durable) return ctx.guarded(() => this.putNow(condition, key, value, options)) as Ack<D>
    if (ctx.closed) throw closedError()
    return this.putNow(condition, key, value, options) as Ack<D>
  }

  private putNow(condition: number, key: string, value: T, options: WriteOptions): number | Promise<number> {
    const bytes = this.encodeValue(value)
    if (bytes instanceof Promise) return bytes.then((b) => this.write(ACTION.put, condition, key, b, options))
    return this.write(ACTION.put, condition, key, bytes, options)
  }

  /**
   * Sets the key; with `ifVersion`, only if it is at that version (else `VERSION_CONFLICT`,
   * carrying the current version, and nothing changes). Returns the new version.
   */
  put(key: string, value: T, options: WriteOptions = NONE): Ack<D> {
    if (options === null) optionsOf(options)
    return this.putWith(options.ifVersion === undefined ? CONDITION.any : CONDITION.version, key, value, options)
  }

  /**
   * @internal `put` whose refusal (too large, closed) throws at once on a durable store too,
   * where `put` rejects: for callers that must know before anything else is written (a workflow
   * history splits a batch too large together, as in memory).
   */
  putOrThrow(key: string, value: T): number | Promise<number> {
    if (this.ctx.closed) throw closedError()
    return this.putNow(CONDITION.any, key, value, NONE)
  }

  /** Sets the key only if it holds no value (else `VERSION_CONFLICT`). */
  create(key: string, value: T, options: Omit<WriteOptions, 'ifVersion'> = NONE): Ack<D> {
    if (options === null) optionsOf(options)
    return this.putWith(CONDITION.absent, key, value, options)
  }

  /**
   * Deletes the key; with `ifVersion`, only if it is at that version. Returns the deletion's
   * version, or 0 if the key held no value.
   */
  delete(key: string, options: Pick<WriteOptions, 'ifVersion' | 'writer'> = NONE): Ack<D> {
    const { ctx } = this
    optionsOf(options, 'options', 'argument', WRITE_KEYS)
    const condition = options.ifVersion === undefined ? CONDITION.any : CONDITION.version
    if (ctx.durable) return ctx.guarded(() => this.write(ACTION.delete, condition, key, undefined, options)) as Ack<D>
    if (ctx.closed) throw closedError()
    return this.write(ACTION.delete, condition, key, undefined, options) as Ack<D>
  }

  /**
   * Reads the key, computes its next value with `update` and writes it if nothing wrote in
   * between (compare-and-set); returns the new version. `update` gets undefined when absent.
   */
  update(key: string, update: (current: T | undefined) => T, options: Omit<WriteOptions, 'ifVersion'> = NONE): Ack<D> {
    const { ctx } = this
    callable(update, 'update')
    optionsOf(options, 'options', 'argument', WRITE_KEYS)
    const run = () => {
      if (ctx.closed) throw closedError()
      const current = this.get(key)
      return this.putNow(CONDITION.version, key, update(current?.value), { ...options, ifVersion: current?.version ?? 0 })
    }
    return ctx.guarded(run) as Ack<D>
  }

  /** Deletes the key and forgets its history. Returns the deletion's version, or 0. */
  purge(key: string): Ack<D> {
    const { ctx } = this
    const run = () => ctx.ack(ctx.core.purge(this.id, this.key(key), ctx.now()), false, NO_CONFLICT)
    return ctx.guarded(run) as Ack<D>
  }

  /** Live keys starting with `prefix`, in order. */
  keys(prefix = ''): string[] {
    return this.scan(prefix, false).map((e) => e.key)
  }

  /** Live entries whose keys start with `prefix`, in key order. */
  entries(prefix = ''): Entry<T>[] {
    return this.scan(prefix, true)
  }

  private scan(prefix: string, values: boolean): Entry<T>[] {
    const { core } = this.ctx
    if (this.ctx.closed) throw closedError()
    if (typeof prefix !== 'string') throw keyError(prefix)
    const out: Entry<T>[] = []
    let after = ''
    for (;;) {
      const io = core.io(3 * (prefix.length + after.length) + RECORD_HEADER + 2048)
      const prefixLen = putKey(io, 0, prefix)
      const afterLen = after ? putKey(io, prefixLen, after) : 0
      const result = core.scan(this.id, prefixLen, afterLen, values, this.readTime())
      const n = (result - (result % 2)) / 2
      const view = core.view()
      const buf = core.io()
      for (let at = 0; at < n; at = nextRecord(view, at)) out.push(readEntry<T>(buf, view, at, values ? this.codec : 'raw', this.ctx.writerName))
      if (result % 2 === 1) return out
      if (n === 0) core.io(buf.length * 2)
      else after = out[out.length - 1]!.key
    }
  }

  /** Changes to one key, as a Stream (an rxjs Observable and an AsyncIterable). */
  watch(key: string, options: WatchOptions = {}): Stream<Change<T>> {
    checkTarget(key, false)
    return this.watchOf(key, false, optionsOf(options, 'options', 'argument', WATCH_KEYS))
  }

  /** Changes to every key starting with `prefix` ('' for the whole namespace). */
  watchPrefix(prefix: string, options: WatchOptions = {}): Stream<Change<T>> {
    checkTarget(prefix, true)
    return this.watchOf(prefix, true, optionsOf(options, 'options', 'argument', WATCH_KEYS))
  }

  private watchOf(target: string, prefix: boolean, options: WatchOptions): Stream<Change<T>> {
    const from = options.from === undefined ? 'now' : options.from
    if (typeof from === 'number') int(from, 'from')
    else oneOf(from, ['now', 'current'], 'from')
    const capacity = intOr(options.buffer, DEFAULTS.watchBuffer, 'buffer', { min: 1, max: LIMITS.maxCapacity })
    const { ctx } = this
    return new Stream<Change<T>>({
      start: (sink, exclusive) => {
        if (ctx.closed) throw closedError()
        const subscriber: WatchSubscriber = { sink: sink as WatchSubscriber['sink'], after: from === 'now' ? ctx.core.revision() : -1, active: true }
        // Live watches from now share one core watch per key or prefix (an iterator, which
        // pauses its own, never shares).
        const sharedAs = from === 'now' && !exclusive ? `${this.id}\u0000${prefix ? 'p' : 'k'}\u0000${capacity}\u0000${this.codec}\u0000${target}` : undefined
        const joined = sharedAs === undefined ? undefined : ctx.shared.get(sharedAs)
        if (joined) {
          joined.watch.subscribers = [...joined.watch.subscribers, subscriber]
          return { stop: () => leave(joined.id, joined.watch, subscriber), setPaused: () => {} }
        }
        const mode = from === 'now' ? WATCH_MODES.now : from === 'current' ? WATCH_MODES.current : WATCH_MODES.after
        const version = from === 'now' ? ctx.core.revision() : from === 'current' ? 0 : from
        const len = putKey(ctx.core.io(3 * target.length), 0, target)
        const id = ctx.core.watch(this.id, len, prefix, mode, version, capacity)
        const watch: WatchSink = { codec: this.codec, subscribers: [subscriber], last: version, sharedAs }
        ctx.watches.set(id, watch)
        if (sharedAs !== undefined) ctx.shared.set(sharedAs, { id, watch })
        ctx.changed(false)
        return {
          stop: () => leave(id, watch, subscriber),
          // An iterator pauses its core watch: drains pass it by while it keeps queueing (and
          // catches up from history past its buffer); what was already drained still arrives.
          setPaused: (paused) => {
            if (ctx.watches.get(id) !== watch || ctx.closed) return
            try {
              ctx.core.setWatchPaused(id, paused)
            } catch (error) {
              // The core ends a watch itself once its lag notice is drained.
              if (!isOrreryError(error, 'UNKNOWN_WATCH')) throw error
              return
            }
            // What queued up while paused is delivered in the next drain.
            if (!paused) ctx.changed(false)
          },
        }
      },
      // A watcher's callback that throws (or a watch error it has no callback for) would be
      // rethrown by rxjs from a timer, ending the process: the store reports it instead.
      unhandled: (error) => ctx.watcherFailed(this.name, error),
    })

    function leave(id: number, watch: WatchSink, subscriber: WatchSubscriber): void {
      subscriber.active = false
      watch.subscribers = watch.subscribers.filter((s) => s !== subscriber)
      if (watch.subscribers.length > 0 || ctx.watches.get(id) !== watch) return
      ctx.watches.delete(id)
      if (watch.sharedAs !== undefined) ctx.shared.delete(watch.sharedAs)
      if (ctx.closed) return
      try {
        ctx.core.unwatch(id)
      } catch (error) {
        // The core ends a watch itself once its lag notice is drained.
        if (!isOrreryError(error, 'UNKNOWN_WATCH')) throw error
      }
    }
  }
}
