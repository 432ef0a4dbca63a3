/**
 * Where workflows live in the store (one namespace, `orrery.workflows` by default, msgpack values):
 * `def/<name>/<version>` the definition, `run/<id>` the run's meta, and `run/<id>/e/<seq, 10
 * digits>` the run's events of one macrotask, in an array, under the seq of the first. Events of
 * the types in {@link INPUT_EVENTS} are the core's inputs, replayed in order on resume; the others
 * are there for people to read.
 *
 * An event is kept as a tuple, `[type, seq, at, ...fields]` (see {@link EVENT_FIELDS}): a run
 * makes no event object unless someone reads its history or follows its events, and a tuple
 * encodes in a third of an object's time.
 *
 * One write per run per macrotask, not one per event: a run's first meta waits for its events
 * of the macrotask it starts in, and a run whose steps all finish within that macrotask (local
 * functions) writes one record, its end meta with its events inside (`events`; two on a shared
 * namespace). The
 * events of a macrotask are written on the next one (setImmediate; a MessageChannel message in
 * a browser), and at once when the run's meta is written or the workflows close; `events()`
 * includes those not yet written, so readers see every event recorded. Nothing is acknowledged
 * before it is written: a run's result waits for its end meta, which follows its events.
 */
import { isOrreryError, OrreryError, type ErrorCode } from '../errors.js'
import { wellFormed } from '../check.js'
import { decodePayload, encodePayload } from '../codec.js'
import { ERROR_CODES, type FAILURE_REASONS } from '../engines/manifest.js'
import type { WorkflowDefinition } from './definition.js'

/** Where a run is: queued for a place (maxConcurrentRuns), running, or how it ended. */
export type RunStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled' | 'compensated' | 'compensation-failed'

/** The statuses a run ends with. */
export const FINAL_STATUSES: ReadonlySet<RunStatus> = new Set(['completed', 'failed', 'cancelled', 'compensated', 'compensation-failed'])

/** An error as the history keeps it. */
export interface StoredError {
  readonly name: string
  readonly message: string
  readonly code?: string
  readonly details?: Readonly<Record<string, unknown>>
}

/** A run's meta record (`run/<id>`). */
export interface RunMeta {
  readonly id: string
  readonly definition: string
  readonly version: string
  readonly input: unknown
  readonly seed: number
  /** Whole-run timeout given at start (ms), if any. */
  readonly timeoutMs?: number
  readonly status: RunStatus
  readonly startedAt: number
  readonly finishedAt?: number
  readonly output?: unknown
  readonly error?: StoredError
  /** A run that ended in the macrotask it started in: its every event, kept in its meta (one write). */
  readonly events?: readonly EventTuple[]
}

/** The part every event shares. */
export interface EventBase {
  /** Its place in the run's history, from 1. */
  readonly seq: number
  /** The clock when it happened (ms): for an input, the `now` the core was given. */
  readonly at: number
}

/** Something that happened in a run, as recorded in its history and seen on `run.events`. */
export type WorkflowEvent = EventBase &
  /** The run's input is in its meta record. */
  (
    | {
        readonly type: 'started'
        /** When the run times out (host time), given a timeout at start. */
        readonly deadline?: number
      }
    | {
        readonly type: 'step-started'
        readonly step: string
        readonly attempt: number
        readonly key: string
        readonly compensation: boolean
        /** The attempt's token: its `step-completed` carries the same. */
        readonly token: number
      }
    | {
        readonly type: 'step-completed'
        readonly token: number
        readonly step: string
        readonly attempt: number
        readonly outcome: 'ok' | 'transient' | 'permanent'
        readonly output?: unknown
        readonly error?: StoredError
      }
    /** A decision that failed (value -2) keeps its error: a resumed run reports the same cause. */
    | {
        readonly type: 'decided'
        readonly token: number
        readonly node: string
        readonly value: number
        readonly items?: readonly unknown[]
        readonly error?: StoredError
      }
    /**
     * `request` (`shared` workflows): the id of the signal's request, recorded so it is given
     * once: sent by another process through the broker, or given in the process that drove the
     * run (sent again through the broker under the same id if another process took the run over).
     */
    | { readonly type: 'signal'; readonly name: string; readonly payload: unknown; readonly request?: string }
    | { readonly type: 'cancel' }
    | { readonly type: 'timer-fired'; readonly timer: number }
    /** `path`: the instance's index path inside iterations (`[1][0]`), as its idempotency key ends. */
    | { readonly type: 'retry'; readonly step: string; readonly attempt: number; readonly when: number; readonly path?: string }
    /** `reason`: why a node failed or was cancelled, as the core says it; `path` as on retry. */
    | {
        readonly type: 'node-done'
        readonly node: string
        readonly outcome: 'ok' | 'failed' | 'cancelled' | 'skipped'
        readonly reason?: FailureReason
        readonly path?: string
      }
    | { readonly type: 'compensated'; readonly step: string; readonly ok: boolean }
    | { readonly type: 'run-finished'; readonly status: RunStatus; readonly output?: unknown; readonly error?: StoredError }
  )

/** Why a node failed or a run ended (`FAILURE_REASONS` of the core). */
export type FailureReason = keyof typeof FAILURE_REASONS

const utf8 = new TextEncoder()

/**
 * Room kept in every workflow record for what surrounds a value (the event tuple or the run's
 * meta: ids, names, times, an error): a value the store should keep (a run's input, a step's
 * output, a signal's payload, a decision's items, a continueAsNew input) may take at most the
 * store's `maxValueBytes` less this, as msgpack.
 */
export const RECORD_MARGIN = 4096

/** The most bytes of msgpack a value in a workflow record may take, for a store's `maxValueBytes`. */
export const valueRoom = (maxValueBytes: number): number => Math.max(0, maxValueBytes - RECORD_MARGIN)

/**
 * `value` as the history keeps it, so what a run uses live is what a resume reads back (a Set
 * comes back an array, a function undefined; msgpack keeps -0 as 0); `INVALID_PAYLOAD` for what
 * no store can keep (a cycle, a symbol, an integer past 64 bits), and `VALUE_TOO_LARGE` for a
 * value over `room` bytes of msgpack (`what` and `name` name it: joined only for the error, the
 * hot path builds no string), so what a record could not hold is refused before anything is
 * recorded. A string is measured by its UTF-8 length (encoded only when it might be too long);
 * anything else but a number, a boolean, undefined or null is encoded anyway.
 */
export function storableWithin<T>(value: T, room: number, what: string, name?: string): T {
  switch (typeof value) {
    case 'number':
      return (Object.is(value, -0) ? 0 : value) as T
    case 'boolean':
    case 'undefined':
      return value
    case 'string':
      if (!wellFormed(value)) break
      // At most 3 bytes of UTF-8 per UTF-16 unit (a surrogate pair: 4 bytes for 2 units).
      if (value.length * 3 > room) {
        const bytes = utf8.encode(value).length
        if (bytes > room) throw tooLarge(what, name, bytes, room)
      }
      return value
    case 'object':
      if (value === null) return value
  }
  const encoded = encodePayload('msgpack', value)
  if (encoded.length > room) throw tooLarge(what, name, encoded.length, room)
  return decodePayload('msgpack', encoded) as T
}

function tooLarge(what: string, name: string | undefined, bytes: number, room: number): OrreryError {
  return new OrreryError(
    'VALUE_TOO_LARGE',
    `${name === undefined ? what : `${what} ${name}`} takes ${bytes} bytes as stored, over the ${room} the store keeps for it (its maxValueBytes less ${RECORD_MARGIN} for the record around it)`,
    { details: { bytes, limit: room } },
  )
}

/** The event types in the order of their codes (the first word of a stored event): append only. */
export const EVENT_TYPES = [
  'started',
  'step-started',
  'step-completed',
  'decided',
  'signal',
  'cancel',
  'timer-fired',
  'retry',
  'node-done',
  'compensated',
  'run-finished',
] as const satisfies readonly WorkflowEvent['type'][]

/** Each event type's fields after `[type, seq, at]`, in their order in a stored event. */
export const EVENT_FIELDS: { readonly [T in WorkflowEvent['type']]: readonly Exclude<keyof Extract<WorkflowEvent, { type: T }>, keyof EventBase | 'type'>[] } =
  {
    started: ['deadline'],
    'step-started': ['step', 'attempt', 'key', 'compensation', 'token'],
    'step-completed': ['token', 'step', 'attempt', 'outcome', 'output', 'error'],
    decided: ['token', 'node', 'value', 'items', 'error'],
    signal: ['name', 'payload', 'request'],
    cancel: [],
    'timer-fired': ['timer'],
    retry: ['step', 'attempt', 'when', 'path'],
    'node-done': ['node', 'outcome', 'reason', 'path'],
    compensated: ['step', 'ok'],
    'run-finished': ['status', 'output', 'error'],
  }

/** Code of each event type. */
export const EVENT = Object.fromEntries(EVENT_TYPES.map((type, code) => [type, code])) as { readonly [T in (typeof EVENT_TYPES)[number]]: number }

/**
 * An event as a run records and the store keeps it: `[type code, seq, at, ...fields]`, the fields
 * in {@link EVENT_FIELDS} order (an optional one left undefined is not there).
 */
export type EventTuple = [type: number, seq: number, at: number, ...fields: unknown[]]

/** The event a stored tuple holds (an object written by Orrery 0.1 is taken as it is). */
export function decodeEvent(stored: EventTuple | WorkflowEvent): WorkflowEvent {
  if (!Array.isArray(stored)) return stored
  const type = EVENT_TYPES[stored[0]]!
  const event: Record<string, unknown> = { type, seq: stored[1], at: stored[2] }
  const fields = EVENT_FIELDS[type]
  for (let i = 0; i < fields.length; i++) {
    const value = stored[i + 3]
    if (value !== undefined) event[fields[i]!] = value
  }
  return event as unknown as WorkflowEvent
}

/** The event types that are core inputs (replayed on resume). */
export const INPUT_EVENTS: ReadonlySet<WorkflowEvent['type']> = new Set(['started', 'step-completed', 'decided', 'signal', 'cancel', 'timer-fired'])

const EVENT_KEY = /\/e\/\d{10}$/
const pad = (seq: number) => String(seq).padStart(10, '0')

/** The key of run `runId`'s events record whose first event has `seq`. */
export const eventKey = (runId: string, seq: number): string => `run/${runId}/e/${pad(seq)}`

/** A run id a key can hold unambiguously: no event-key suffix. */
export function isEventKey(key: string): boolean {
  return EVENT_KEY.test(key)
}

/**
 * Runs `fn` on a later macrotask: setImmediate in Node; in a browser a MessageChannel message,
 * since a 0 ms timeout is clamped to 4 ms once nested and is what fake timers stop.
 */
export const macrotask: (fn: () => void) => void = realMacrotask()

/**
 * Taken when the module loads, so fake timers installed later (a test's `vi.useFakeTimers()`)
 * do not stop the history's writes and the acknowledgements that wait for them.
 */
function realMacrotask(): (fn: () => void) => void {
  const immediate = globalThis.setImmediate
  if (typeof immediate === 'function') return (fn) => void immediate(fn)
  if (typeof MessageChannel === 'function') return viaMessages()
  const timeout = globalThis.setTimeout
  return (fn) => void timeout(fn, 0)
}

/** A macrotask queue over one MessageChannel, made on first use. */
function viaMessages(): (fn: () => void) => void {
  const waiting: (() => void)[] = []
  let channel: MessageChannel | undefined
  return (fn) => {
    if (channel === undefined) {
      channel = new MessageChannel()
      channel.port1.onmessage = () => waiting.shift()?.()
    }
    waiting.push(fn)
    channel.port2.postMessage(undefined)
  }
}

/**
 * What the history reads and writes: a store namespace, or a strong shared namespace through
 * shared-history.ts (each write a Promise of the broker's revision).
 */
export interface HistoryNamespace {
  put(key: string, value: unknown): number | Promise<number>
  /** A put that throws its refusal at once where `put` would reject (a durable store's). */
  putOrThrow?(key: string, value: unknown): number | Promise<number>
  get(key: string): { readonly value: unknown } | undefined
  entries(prefix: string): readonly { readonly key: string; readonly value: unknown }[]
  keys(prefix: string): readonly string[]
  delete(key: string): number | Promise<number>
  purge(key: string): number | Promise<number>
}

/** The acknowledgement `append` hands out for a macrotask's events: one for every run of it. */
interface Turn {
  readonly ack: Promise<number>
  resolve(version: number | Promise<number>): void
}

/** What the runtime reads and writes in its namespace. */
export class History {
  /** Runs with events not yet written (this macrotask's), in the order their first event came. */
  private pending = new Map<string, EventTuple[]>()
  /** First metas of runs started this macrotask, written before their events (or replaced by a later meta). */
  private pendingMetas = new Map<string, RunMeta>()
  private turn: Turn | undefined
  /** The last event write of this turn (a durable store's commits are in order: it covers the others). */
  private lastWrite: number | Promise<number> = 0
  /** Runs whose history write failed: nothing more is written for them, and what they write fails. */
  private failed: Map<string, unknown> | undefined
  private readonly flushAll = () => this.flush()
  /** Told of each run meta written here, once the store took it (set while run statuses are watched). */
  onMeta: ((meta: RunMeta) => void) | undefined

  /**
   * `ns` should use the msgpack codec: it keeps `undefined` (JSON turns it into null or drops
   * it); `durable` says whether its store acknowledges from disk.
   */
  /** The most bytes of msgpack a value in a record may take ({@link valueRoom}). */
  readonly room: number

  constructor(
    readonly ns: HistoryNamespace,
    readonly durable: boolean,
    maxValueBytes: number,
  ) {
    this.room = valueRoom(maxValueBytes)
  }

  /** {@link storableWithin} this history's room. */
  keep<T>(value: T, what: string, name?: string): T {
    return storableWithin(value, this.room, what, name)
  }

  /** Writes a run's record; a refusal throws at once, on a durable store too (nothing was written then). */
  private putKey(key: string, value: unknown): number | Promise<number> {
    return this.ns.putOrThrow === undefined ? this.ns.put(key, value) : this.ns.putOrThrow(key, value)
  }

  putDefinition(definition: WorkflowDefinition): number | Promise<number> {
    return this.ns.put(`def/${definition.name}/${definition.version}`, definition)
  }

  /** Every definition kept, in key order (by name, then version). */
  definitions(): WorkflowDefinition[] {
    return this.ns.entries('def/').map((e) => e.value as WorkflowDefinition)
  }

  definition(name: string, version: string): WorkflowDefinition | undefined {
    return this.ns.get(`def/${name}/${version}`)?.value as WorkflowDefinition | undefined
  }

  /**
   * Writes a run's meta after the run's events still waiting (a meta never runs ahead of them).
   * For a run whose history could not be written, or whose meta cannot be, it fails with that
   * error; an ended run is then kept without its data, failed with that error, so it does not
   * vanish from `list()` and `get()` (what the store refused, a too large input, stays out).
   */
  putMeta(meta: RunMeta): number | Promise<number> {
    const startedNow = this.pendingMetas.delete(meta.id)
    const events = this.pending.get(meta.id)
    if (events) this.pending.delete(meta.id)
    // Not on a shared namespace (`runSettled`): there another process may write the run too, and
    // its create-only, compare-and-set records keep the two writes, each refused on its own.
    if (startedNow && events && FINAL_STATUSES.has(meta.status) && this.runSettled === undefined && this.failed?.has(meta.id) !== true) {
      const ack = this.putWhole(meta, events)
      if (ack !== undefined) return ack
    }
    return this.putApart(meta, events, true)
  }

  /**
   * Writes `events` (the run's still waiting, if any), then its meta: `announce` tells
   * {@link onMeta} (not when {@link putWhole} already did).
   */
  private putApart(meta: RunMeta, events: EventTuple[] | undefined, announce: boolean): number | Promise<number> {
    const first = events === undefined ? 0 : this.write(meta.id, events)
    let failure = this.failed?.get(meta.id)
    let ack: number | Promise<number> = 0
    if (failure === undefined) {
      try {
        ack = this.putKey(`run/${meta.id}`, meta)
      } catch (error) {
        failure = this.fail(meta.id, error)
      }
      if (failure === undefined && announce) this.onMeta?.(meta)
    }
    if (FINAL_STATUSES.has(meta.status)) {
      // Nothing more is written for an ended run: its failure need not be remembered.
      this.failed?.delete(meta.id)
      if (failure !== undefined) this.putFailed(meta, failure)
      else if (ack instanceof Promise) {
        // A shared namespace refuses in its answer. An end record too large is kept failed as
        // above; another refusal (a broker away) may pass, and a taker resumes the run then.
        ack = ack.catch((error: unknown) => {
          if (isOrreryError(error, 'VALUE_TOO_LARGE')) this.putFailed(meta, error)
          throw error
        })
      }
    }
    if (failure !== undefined) return failedAck(failure)
    // On a durable store the events' write fails apart from the meta's (an output it cannot encode).
    if (!(first instanceof Promise)) return ack
    const both = Promise.all([first, ack]).then(([, version]) => version)
    both.catch(() => {})
    return both
  }

  /**
   * A run that ends in the macrotask it started in, written whole: its meta with every event it
   * recorded, one record (`events` in its meta) instead of two. Undefined, with nothing written,
   * when the store refuses that record as too large (at once, a durable one too: putKey): the
   * events and the meta then go apart. A refusal in a durable store's answer (its disk) is the
   * run's failure, which its start's acknowledgement reports.
   */
  private putWhole(meta: RunMeta, events: EventTuple[]): number | Promise<number> | undefined {
    let ack: number | Promise<number>
    try {
      // Object.assign: a spread with one more field took ~450 ns here, this ~120.
      ack = this.putKey(`run/${meta.id}`, Object.assign({}, meta, { events }))
    } catch (error) {
      if (isOrreryError(error, 'VALUE_TOO_LARGE')) return undefined
      const failure = this.fail(meta.id, error)
      this.failed?.delete(meta.id)
      this.putFailed(meta, failure)
      return failedAck(failure)
    }
    this.onMeta?.(meta)
    if (ack instanceof Promise) {
      ack = ack.catch((error: unknown) => {
        throw this.fail(meta.id, error)
      })
      ack.catch(() => {})
    }
    // A durable store commits in order: the macrotask's acknowledgement (the run's start) covers this write.
    this.lastWrite = ack
    return ack
  }

  /** An ended run whose history failed, as it is kept: who it was, failed with the write's error. */
  private putFailed(meta: RunMeta, error: unknown): void {
    const { id, definition, version, seed, startedAt, finishedAt } = meta
    const kept: RunMeta = { id, definition, version, input: undefined, seed, status: 'failed', startedAt, error: storeError(error) }
    const written = finishedAt === undefined ? kept : { ...kept, finishedAt }
    try {
      const ack = this.putKey(`run/${id}`, written)
      if (ack instanceof Promise) ack.catch(() => {})
    } catch {
      // The store takes nothing more (closed): there is nothing to keep.
      return
    }
    this.onMeta?.(written)
  }

  /**
   * A run's first meta, written with its events of this macrotask (or not at all if a later meta
   * comes first): the acknowledgement of that write. On a store in memory nothing waits for it
   * (0): a write that fails then fails the run's later writes and its end.
   */
  putFirstMeta(meta: RunMeta): number | Promise<number> {
    const failure = this.failed?.get(meta.id)
    if (failure !== undefined) return failedAck(failure)
    this.pendingMetas.set(meta.id, meta)
    const ack = this.schedule()
    return this.durable ? this.runsAck(meta.id, ack) : 0
  }

  /**
   * Where each run's writes are acknowledged apart (a shared history, shared-history.ts): resolves
   * once run `runId`'s writes sent so far are; its acknowledgements wait for it too.
   */
  runSettled: ((runId: string) => Promise<void>) | undefined

  /** The macrotask's acknowledgement (which never rejects), rejecting if run `runId`'s writes failed. */
  private runsAck(runId: string, ack: Promise<number>): Promise<number> {
    return ack.then(async (version) => {
      if (this.runSettled !== undefined) await this.runSettled(runId)
      const error = this.failed?.get(runId)
      if (error !== undefined) throw error
      return version
    })
  }

  /** Forgets a run's meta (a start the core refused: the run never began). */
  deleteMeta(id: string): void {
    if (this.pendingMetas.delete(id)) return
    const ack = this.ns.delete(`run/${id}`)
    if (ack instanceof Promise) ack.catch(() => {})
  }

  meta(id: string): RunMeta | undefined {
    return this.pendingMetas.get(id) ?? (this.ns.get(`run/${id}`)?.value as RunMeta | undefined)
  }

  /** Every run's meta, in id order. */
  metas(): RunMeta[] {
    this.flush()
    return this.ns
      .entries('run/')
      .filter((e) => !isEventKey(e.key))
      .map((e) => e.value as RunMeta)
  }

  /**
   * Records an event: written with the run's other events of this macrotask ({@link recorded}
   * acknowledges them). Nothing more is kept for a run whose history failed: its meta reports it.
   */
  append(runId: string, event: EventTuple): void {
    if (this.failed?.has(runId)) return
    const events = this.pending.get(runId)
    if (events) events.push(event)
    else this.pending.set(runId, [event])
    this.schedule()
  }

  /** The acknowledgement of this macrotask's writes, which the next macrotask makes. */
  private schedule(): Promise<number> {
    if (this.turn === undefined) {
      let resolve!: Turn['resolve']
      const ack = new Promise<number>((res) => {
        resolve = res
      })
      this.turn = { ack, resolve }
      macrotask(this.flushAll)
    }
    return this.turn.ack
  }

  /**
   * The acknowledgement of the write that carries run `runId`'s events of this macrotask, apart
   * from the run's writes before it: it rejects with that write's own refusal (or the run's
   * failure), so a refused write says these events were not recorded. Call it after appending.
   */
  batchAck(runId: string): Promise<number> {
    const failure = this.failed?.get(runId)
    if (failure !== undefined) return failedAck(failure)
    this.batchWaiters ??= new Map()
    let waiter = this.batchWaiters.get(runId)
    if (waiter === undefined) {
      let settle!: BatchWaiter['settle']
      const ack = new Promise<number>((resolve, reject) => {
        settle = (result, error) => (error === undefined ? resolve(result) : reject(error))
      })
      waiter = { ack, settle }
      this.batchWaiters.set(runId, waiter)
      this.schedule()
    }
    return waiter.ack
  }

  /** Who waits for a run's batch of this macrotask apart ({@link batchAck}). */
  private batchWaiters: Map<string, BatchWaiter> | undefined

  /**
   * The acknowledgement of run `runId`'s events recorded so far: its version once they are written
   * (on disk with a durable store); it rejects with the run's error when its history could not
   * be written.
   */
  recorded(runId: string): number | Promise<number> {
    const failure = this.failed?.get(runId)
    if (failure !== undefined) return failedAck(failure)
    if (this.turn === undefined) return this.lastWrite
    return this.runsAck(runId, this.turn.ack)
  }

  /** Writes every event not yet written (on the next macrotask; when the workflows close, before the store may). */
  flush(): void {
    const { turn } = this
    if (turn === undefined) return
    this.turn = undefined
    const metas = this.pendingMetas
    this.pendingMetas = new Map()
    for (const meta of metas.values()) {
      try {
        this.lastWrite = this.putKey(`run/${meta.id}`, meta)
        if (this.lastWrite instanceof Promise) this.lastWrite.catch((error: unknown) => this.fail(meta.id, error))
      } catch (error) {
        this.fail(meta.id, error)
        continue
      }
      this.onMeta?.(meta)
    }
    const batches = this.pending
    this.pending = new Map()
    const waiters = this.batchWaiters
    this.batchWaiters = undefined
    for (const [runId, events] of batches) {
      const ack = this.write(runId, events)
      // A failure is the run's: its later writes and its meta report it.
      if (ack instanceof Promise) ack.catch(() => {})
      const waiter = waiters?.get(runId)
      if (waiter === undefined) continue
      waiters!.delete(runId)
      const failure = this.failed?.get(runId)
      if (ack instanceof Promise)
        ack.then(
          (version) => waiter.settle(version),
          (error: unknown) => waiter.settle(0, error),
        )
      else if (failure !== undefined) waiter.settle(0, failure)
      else waiter.settle(ack)
    }
    // Nothing of theirs was pending: nothing to wait for.
    for (const waiter of waiters?.values() ?? []) waiter.settle(0)
    const last = this.lastWrite
    this.lastWrite = 0
    turn.resolve(last instanceof Promise ? last.catch(() => 0) : last)
  }

  /** Writes one run's events of this turn, under the first one's seq. */
  private write(runId: string, events: EventTuple[]): number | Promise<number> {
    if (this.failed?.has(runId)) return 0
    try {
      const ack = this.putEvents(runId, events)
      this.lastWrite = ack
      if (ack instanceof Promise)
        return ack.catch((error: unknown) => {
          throw this.fail(runId, error)
        })
      return ack
    } catch (error) {
      this.fail(runId, error)
      return 0
    }
  }

  /**
   * One record for the events, or, when together they are over the store's limit (each fits:
   * their values were kept within the room), one for each half: a key holds the seq of its first.
   * (A shared namespace refuses later, in the run's order of writes: it splits them itself.)
   */
  private putEvents(runId: string, events: EventTuple[]): number | Promise<number> {
    try {
      return this.putKey(eventKey(runId, events[0]![1]), events)
    } catch (error) {
      if (events.length < 2 || !isOrreryError(error, 'VALUE_TOO_LARGE')) throw error
    }
    const half = events.length >> 1
    const first = this.putEvents(runId, events.slice(0, half))
    const second = this.putEvents(runId, events.slice(half))
    if (!(first instanceof Promise)) return second
    return Promise.all([first, second]).then(([, version]) => version)
  }

  /**
   * Forgets that a write of run `id` failed (shared: while an earlier tenure here lost the run),
   * so what is recorded for it from now on is written: it is driven here again, or it ended elsewhere.
   */
  clearFailure(id: string): void {
    this.failed?.delete(id)
  }

  /** A run's history write failed: later ones would leave a gap a resume would replay past. */
  private fail(runId: string, error: unknown): unknown {
    this.failed ??= new Map()
    if (!this.failed.has(runId)) this.failed.set(runId, error)
    return error
  }

  /** A run's events, in order (those of this turn too). */
  events(runId: string): WorkflowEvent[] {
    const prefix = `run/${runId}/e/`
    const out: WorkflowEvent[] = []
    const whole = (this.ns.get(`run/${runId}`)?.value as RunMeta | undefined)?.events
    if (whole !== undefined) for (const event of whole) out.push(decodeEvent(event))
    for (const entry of this.ns.entries(prefix)) {
      if (entry.key.length !== prefix.length + 10 || !isEventKey(entry.key)) continue
      const value = entry.value as (EventTuple | WorkflowEvent)[] | WorkflowEvent
      if (Array.isArray(value)) for (const event of value) out.push(decodeEvent(event))
      else out.push(value)
    }
    const events = this.pending.get(runId)
    if (events) for (const event of events) out.push(decodeEvent(event))
    return out
  }
}

interface BatchWaiter {
  readonly ack: Promise<number>
  settle(version: number, error?: unknown): void
}

/**
 * The acknowledgement of a write refused for a run whose history failed: it rejects for whoever
 * awaits it, and is no unhandled rejection when nobody does (a run that ends after its history
 * failed waits on its last event's ack, never reaching its meta's).
 */
function failedAck(error: unknown): Promise<number> {
  const ack = Promise.reject(error)
  ack.catch(() => {})
  return ack
}

/** An error as the history keeps it (JSON: name, message, code, details). */
export function storeError(error: unknown): StoredError {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    const details = isOrreryError(error) && Object.keys(error.details).length > 0 ? { details: { ...error.details } } : {}
    return { name: error.name, message: error.message, ...(typeof code === 'string' ? { code } : {}), ...details }
  }
  return { name: 'Error', message: String(error) }
}

/** An error back from the history: an OrreryError where it had an Orrery code. */
export function restoreError(stored: StoredError): Error {
  if (stored.code !== undefined && Object.hasOwn(ERROR_CODES, stored.code)) {
    return new OrreryError(stored.code as ErrorCode, stored.message, { details: { ...stored.details } })
  }
  const error = new Error(stored.message)
  error.name = stored.name
  if (stored.code !== undefined) (error as { code?: string }).code = stored.code
  return error
}
