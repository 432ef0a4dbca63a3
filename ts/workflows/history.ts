/**
 * Where workflows live in the store (one namespace, `orrery.workflows` by default, msgpack values):
 * `def/<name>/<version>` the definition, `run/<id>` the run's meta, and `run/<id>/e/<seq, 10
 * digits>` the run's events of one turn of the event loop, in an array, under the seq of the
 * first. Events of the types in {@link INPUT_EVENTS} are the core's inputs, replayed in order on
 * resume; the others are there for people to read.
 *
 * One write per run per turn, not one per event: a seq-3 run wrote 12 event keys, now 4. A turn's
 * events are written in a microtask at its end (before the store hands the turn to the disk, and
 * before any timer or I/O), and at once when the run's meta is written or the workflows close;
 * `events()` includes those not yet written, so readers see every event recorded.
 */
import type { Namespace } from '../store/namespace.js'
import { isOrreryError, OrreryError, type ErrorCode } from '../errors.js'
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
    | { readonly type: 'step-started'; readonly step: string; readonly attempt: number; readonly key: string; readonly compensation: boolean }
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
    | { readonly type: 'signal'; readonly name: string; readonly payload: unknown }
    | { readonly type: 'cancel' }
    | { readonly type: 'timer-fired'; readonly timer: number }
    | { readonly type: 'retry'; readonly step: string; readonly attempt: number; readonly when: number }
    /** `reason`: why a node failed or was cancelled, as the core says it. */
    | {
        readonly type: 'node-done'
        readonly node: string
        readonly outcome: 'ok' | 'failed' | 'cancelled' | 'skipped'
        readonly reason?: FailureReason
      }
    | { readonly type: 'compensated'; readonly step: string; readonly ok: boolean }
    | { readonly type: 'run-finished'; readonly status: RunStatus; readonly output?: unknown; readonly error?: StoredError }
  )

/** Why a node failed or a run ended (`FAILURE_REASONS` of the core). */
export type FailureReason = keyof typeof FAILURE_REASONS

/**
 * `value` as the history keeps it, so what a run uses live is what a resume reads back (a Set
 * comes back an array, a function undefined). `INVALID_PAYLOAD` for what no store can keep: a
 * cycle, a symbol, an integer past 64 bits.
 */
export function storable<T>(value: T): T {
  return decodePayload('msgpack', encodePayload('msgpack', value)) as T
}

/** Events without their place, as the runtime makes them. */
export type NewEvent = WorkflowEvent extends infer E ? (E extends WorkflowEvent ? Omit<E, 'seq'> : never) : never

/** The event types that are core inputs (replayed on resume). */
export const INPUT_EVENTS: ReadonlySet<WorkflowEvent['type']> = new Set(['started', 'step-completed', 'decided', 'signal', 'cancel', 'timer-fired'])

const EVENT_KEY = /\/e\/\d{10}$/
const pad = (seq: number) => String(seq).padStart(10, '0')

/** A run id a key can hold unambiguously: no event-key suffix. */
export function isEventKey(key: string): boolean {
  return EVENT_KEY.test(key)
}

/** The acknowledgement `append` hands out for a turn's events: one for every run of the turn. */
interface Turn {
  readonly ack: Promise<number>
  resolve(version: number | Promise<number>): void
}

/** What the runtime reads and writes in its namespace. */
export class History {
  /** Runs with events not yet written (this turn's), in the order their first event came. */
  private pending = new Map<string, WorkflowEvent[]>()
  private turn: Turn | undefined
  /** The last event write of this turn (a durable store's commits are in order: it covers the others). */
  private lastWrite: number | Promise<number> = 0
  /** Runs whose history write failed: nothing more is written for them, and what they write fails. */
  private failed: Map<string, unknown> | undefined
  private readonly flushAll = () => this.flush()

  /** `ns` should use the msgpack codec: it keeps `undefined` (JSON turns it into null or drops it). */
  constructor(readonly ns: Namespace<unknown, boolean>) {}

  putDefinition(definition: WorkflowDefinition): number | Promise<number> {
    return this.ns.put(`def/${definition.name}/${definition.version}`, definition)
  }

  definition(name: string, version: string): WorkflowDefinition | undefined {
    return this.ns.get(`def/${name}/${version}`)?.value as WorkflowDefinition | undefined
  }

  /**
   * Writes a run's meta after the run's events still waiting (a meta never runs ahead of them);
   * for a run whose history could not be written it fails with that error and writes nothing.
   */
  putMeta(meta: RunMeta): number | Promise<number> {
    const events = this.pending.get(meta.id)
    let first: number | Promise<number> = 0
    if (events) {
      this.pending.delete(meta.id)
      first = this.write(meta.id, events)
    }
    const failure = this.failed?.get(meta.id)
    if (failure !== undefined) return failedAck(failure)
    const ack = this.ns.put(`run/${meta.id}`, meta)
    // On a durable store the events' write fails apart from the meta's (an output it cannot encode).
    if (!(first instanceof Promise)) return ack
    const both = Promise.all([first, ack]).then(([, version]) => version)
    both.catch(() => {})
    return both
  }

  meta(id: string): RunMeta | undefined {
    return this.ns.get(`run/${id}`)?.value as RunMeta | undefined
  }

  /** Every run's meta, in id order. */
  metas(): RunMeta[] {
    return this.ns
      .entries('run/')
      .filter((e) => !isEventKey(e.key))
      .map((e) => e.value as RunMeta)
  }

  /**
   * Records an event: written with the run's other events of this turn. Returns a Promise of
   * that write (acknowledged from disk on a durable store), one for all the runs of the turn: a
   * run's own failure shows in its later writes and its meta.
   */
  append(runId: string, event: WorkflowEvent): Promise<number> {
    const failure = this.failed?.get(runId)
    if (failure !== undefined) return failedAck(failure)
    const events = this.pending.get(runId)
    if (events) events.push(event)
    else this.pending.set(runId, [event])
    if (this.turn === undefined) {
      let resolve!: Turn['resolve']
      const ack = new Promise<number>((res) => {
        resolve = res
      })
      this.turn = { ack, resolve }
      queueMicrotask(this.flushAll)
    }
    return this.turn.ack
  }

  /** Writes every event not yet written (at the end of a turn; when the workflows close, before the store may). */
  flush(): void {
    const { turn } = this
    if (turn === undefined) return
    this.turn = undefined
    const batches = this.pending
    this.pending = new Map()
    for (const [runId, events] of batches) {
      const ack = this.write(runId, events)
      // A failure is the run's: its later writes and its meta report it.
      if (ack instanceof Promise) ack.catch(() => {})
    }
    const last = this.lastWrite
    this.lastWrite = 0
    turn.resolve(last instanceof Promise ? last.catch(() => 0) : last)
  }

  /** Writes one run's events of this turn, under the first one's seq. */
  private write(runId: string, events: WorkflowEvent[]): number | Promise<number> {
    if (this.failed?.has(runId)) return 0
    try {
      const ack = this.ns.put(`run/${runId}/e/${pad(events[0]!.seq)}`, events)
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
    for (const entry of this.ns.entries(prefix)) {
      if (entry.key.length !== prefix.length + 10 || !isEventKey(entry.key)) continue
      const value = entry.value as WorkflowEvent[] | WorkflowEvent
      if (Array.isArray(value)) for (const event of value) out.push(event)
      else out.push(value)
    }
    const events = this.pending.get(runId)
    if (events) for (const event of events) out.push(event)
    return out
  }
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
