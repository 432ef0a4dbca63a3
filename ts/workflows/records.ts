/**
 * What the runtime keeps of a run beyond the fields of history.ts's `RunMeta`: the `queued`
 * status (a run waiting for a free place under its definition's `maxConcurrentRuns`), its place
 * in that queue, its generation (continueAsNew) and the seq its generation's history starts at,
 * and the store operations generations need.
 *
 * A generation's events keep counting on from the last seq of the generation before, so the new
 * generation's events never share a key with the old ones: the meta (written first) says from
 * which seq the history is current, and a restore that still finds older events purges them.
 */
import { isEventKey, type History, type RunMeta, type RunStatus, type StoredError, type WorkflowEvent } from './history.js'

export type { RunStatus }

/** A run's meta record as the runtime writes it. */
export type RunRecord = Omit<RunMeta, 'status'> & {
  readonly status: RunStatus
  /** 1 for the run's first generation; each continueAsNew adds one. */
  readonly generation?: number
  /** The seq of the current generation's first event (1 in the first generation). */
  readonly from?: number
  /** A queued run's place in its definition's queue (start order). */
  readonly queued?: number
}

/**
 * The meta of a run that ended: `meta` without its queue place, with its status, end time and
 * output (or error). Built field by field: an object rest and spread cost a run ~1 µs.
 */
export function endRecord(meta: RunRecord, status: RunStatus, finishedAt: number, output: unknown, error: StoredError | undefined): RunRecord {
  const record: { -readonly [K in keyof RunRecord]: RunRecord[K] } = {
    id: meta.id,
    definition: meta.definition,
    version: meta.version,
    input: meta.input,
    seed: meta.seed,
    status,
    startedAt: meta.startedAt,
    finishedAt,
  }
  if (meta.timeoutMs !== undefined) record.timeoutMs = meta.timeoutMs
  if (meta.generation !== undefined) record.generation = meta.generation
  if (meta.from !== undefined) record.from = meta.from
  if (error === undefined) record.output = output
  else record.error = error
  return record
}

/** A queued run's meta as it begins: without its queue place, `status`. */
export function withoutQueue(meta: RunRecord, status: RunStatus): RunRecord {
  const { queued: _queued, ...rest } = meta
  return { ...rest, status }
}

/** Writes a run's meta record. */
export function putRecord(history: History, record: RunRecord): number | Promise<number> {
  return history.putMeta(record as RunMeta)
}

/** Writes a run's first meta record with its first events (see `History.putFirstMeta`). */
export function putFirstRecord(history: History, record: RunRecord): number | Promise<number> {
  return history.putFirstMeta(record as RunMeta)
}

/** Forgets a run's meta record (a start the core refused: the run never began). */
export function deleteRecord(history: History, id: string): void {
  history.deleteMeta(id)
}

/** A run's meta record, if any. */
export function readRecord(history: History, id: string): RunRecord | undefined {
  return history.meta(id) as RunRecord | undefined
}

/** Every run's meta record, in id order. */
export function readRecords(history: History): RunRecord[] {
  return history.metas() as RunRecord[]
}

/** The events of a run's current generation, in order. */
export function currentEvents(history: History, id: string, from = readRecord(history, id)?.from ?? 1): WorkflowEvent[] {
  const events = history.events(id)
  return from <= 1 ? events : events.filter((e) => e.seq >= from)
}

/** The idempotency-key root of a run's generation: the run id, then `#<g>` from generation 2 on. */
export function generationKey(id: string, generation: number): string {
  return generation <= 1 ? id : `${id}#${generation}`
}

/** Where a definition's `maxConcurrentRuns` is kept (a restore needs it before `define` is called again). */
const limitKey = (name: string) => `limit/${name}`

/** Keeps (a number) or forgets (undefined) the concurrency limit of the workflow `name`. */
export function putLimit(history: History, name: string, limit: number | undefined): void {
  const ack = limit === undefined ? history.ns.delete(limitKey(name)) : history.ns.put(limitKey(name), limit)
  if (ack instanceof Promise) ack.catch(() => {})
}

/** The concurrency limits kept in the store, by workflow name. */
export function readLimits(history: History): Map<string, number> {
  return new Map(history.ns.entries('limit/').map((e) => [e.key.slice('limit/'.length), e.value as number]))
}

/**
 * Forgets a run's earlier generations: the event records whose key (the seq of the first event
 * they hold) is below `from`, the current generation's first seq. Purged, not deleted, so a run
 * continued as new thousands of times keeps one generation's events in the store. (A record
 * never holds events of two generations: the meta write that starts a generation writes the
 * events before it first.)
 */
export function purgeEarlier(history: History, id: string, from: number): void {
  if (from <= 1) return
  const prefix = `run/${id}/e/`
  for (const key of history.ns.keys(prefix)) {
    if (!isEventKey(key) || key.length !== prefix.length + 10) continue
    if (Number(key.slice(-10)) >= from) break
    const ack = history.ns.purge(key)
    if (ack instanceof Promise) ack.catch(() => {})
  }
}
