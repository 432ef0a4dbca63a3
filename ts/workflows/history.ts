/**
 * Where workflows live in the store (one namespace, `orrery.workflows` by default):
 * `def/<name>/<version>` the definition JSON, `run/<id>` the run's meta, and
 * `run/<id>/e/<seq, 10 digits>` one event each. Events of the types in {@link INPUT_EVENTS} are
 * the core's inputs, replayed in order on resume; the others are there for people to read.
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

/** What the runtime reads and writes in its namespace. */
export class History {
  constructor(readonly ns: Namespace<unknown, boolean>) {}

  putDefinition(definition: WorkflowDefinition): number | Promise<number> {
    return this.ns.put(`def/${definition.name}/${definition.version}`, definition)
  }

  definition(name: string, version: string): WorkflowDefinition | undefined {
    return this.ns.get(`def/${name}/${version}`)?.value as WorkflowDefinition | undefined
  }

  putMeta(meta: RunMeta): number | Promise<number> {
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

  append(runId: string, event: WorkflowEvent): number | Promise<number> {
    return this.ns.put(`run/${runId}/e/${pad(event.seq)}`, event)
  }

  /** A run's events, in order. */
  events(runId: string): WorkflowEvent[] {
    const prefix = `run/${runId}/e/`
    return this.ns
      .entries(prefix)
      .filter((e) => e.key.length === prefix.length + 10 && isEventKey(e.key))
      .map((e) => e.value as WorkflowEvent)
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
