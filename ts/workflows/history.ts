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
import { ERROR_CODES } from '../engines/manifest.js'
import type { WorkflowDefinition } from './definition.js'

/** Where a run is: running, or how it ended. */
export type RunStatus = 'running' | 'completed' | 'failed' | 'cancelled' | 'compensated' | 'compensation-failed'

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
interface EventBase {
  /** Its place in the run's history, from 1. */
  readonly seq: number
  /** The clock when it happened (ms): for an input, the `now` the core was given. */
  readonly at: number
}

/** Something that happened in a run, as recorded in its history and seen on `run.events`. */
export type WorkflowEvent = EventBase &
  /** The run's input is in its meta record. */
  (
    | { readonly type: 'started' }
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
    | { readonly type: 'decided'; readonly token: number; readonly node: string; readonly value: number; readonly items?: readonly unknown[] }
    | { readonly type: 'signal'; readonly name: string; readonly payload: unknown }
    | { readonly type: 'cancel' }
    | { readonly type: 'timer-fired'; readonly timer: number }
    | { readonly type: 'retry'; readonly step: string; readonly attempt: number; readonly when: number }
    | { readonly type: 'node-done'; readonly node: string; readonly outcome: 'ok' | 'failed' | 'cancelled' | 'skipped' }
    | { readonly type: 'compensated'; readonly step: string; readonly ok: boolean }
    | { readonly type: 'run-finished'; readonly status: RunStatus; readonly output?: unknown; readonly error?: StoredError }
  )

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

/** A run's events of this turn, not yet written. */
interface Batch {
  readonly runId: string
  readonly events: WorkflowEvent[]
  /** What `append` handed out: settles with the batch's write. */
  readonly ack: Promise<number>
  resolve(version: number | Promise<number>): void
  reject(error: unknown): void
}

/** What the runtime reads and writes in its namespace. */
export class History {
  /** Runs with events not yet written, in the order their first event came. */
  private pending = new Map<string, Batch>()
  private scheduled = false
  /** Runs whose history write failed: nothing more is written for them, and their acks fail. */
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

  /** Writes a run's meta, after the run's events still waiting (a meta never runs ahead of them). */
  putMeta(meta: RunMeta): number | Promise<number> {
    const batch = this.pending.get(meta.id)
    if (batch) {
      this.pending.delete(meta.id)
      this.write(batch)
    }
    return this.ns.put(`run/${meta.id}`, meta)
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
   * that write (acknowledged from disk on a durable store); it rejects if the write fails.
   */
  append(runId: string, event: WorkflowEvent): Promise<number> {
    const failure = this.failed?.get(runId)
    if (failure !== undefined) return Promise.reject(failure)
    let batch = this.pending.get(runId)
    if (batch === undefined) {
      let resolve!: Batch['resolve']
      let reject!: Batch['reject']
      const ack = new Promise<number>((res, rej) => {
        resolve = res
        reject = rej
      })
      batch = { runId, events: [], ack, resolve, reject }
      this.pending.set(runId, batch)
      if (!this.scheduled) {
        this.scheduled = true
        queueMicrotask(this.flushAll)
      }
    }
    batch.events.push(event)
    return batch.ack
  }

  /** Writes every event not yet written (the workflows close: the store may close next). */
  flush(): void {
    this.scheduled = false
    if (this.pending.size === 0) return
    const batches = this.pending
    this.pending = new Map()
    for (const batch of batches.values()) this.write(batch)
  }

  private write(batch: Batch): void {
    const failure = this.failed?.get(batch.runId)
    if (failure !== undefined) return batch.reject(failure)
    try {
      const ack = this.ns.put(`run/${batch.runId}/e/${pad(batch.events[0]!.seq)}`, batch.events)
      batch.resolve(
        ack instanceof Promise
          ? ack.catch((error: unknown) => {
              throw this.fail(batch.runId, error)
            })
          : ack,
      )
    } catch (error) {
      batch.reject(this.fail(batch.runId, error))
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
    const batch = this.pending.get(runId)
    if (batch) for (const event of batch.events) out.push(event)
    return out
  }
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
