/**
 * A workflow history kept in a strong shared namespace (`orrery.workflows({ shared })`, the
 * broker's): what History writes goes through the broker, each run's writes one after another,
 * so its records land in the order it made them. A run's event records are created, never
 * overwritten (a key holds the seq of its first event: two processes that both drive a run write
 * the same next key, and the broker lets one of them), and its meta is compare-and-set on the
 * version this process wrote last, or took the run at. The first refused write tells this process
 * that it lost the run: nothing more of that run is written from here, and `onLost` stops it.
 * That fences a stale owner without reading its lease before each write: a step's completion is
 * recorded once, by whoever records it first.
 */
import type { Subscription } from 'rxjs'

import { isOrreryError, OrreryError } from '../errors.js'
import type { StrongNamespace } from '../store/strong.js'
import { eventKey, FINAL_STATUSES, isEventKey, type EventTuple, type HistoryNamespace, type RunMeta, type RunStatus } from './history.js'

/** How many times a request's deletion is sent, RETRY_MS apart, before it is left. */
const DELETE_TRIES = 5
const RETRY_MS = 200

/**
 * Deletes `key`, sent again RETRY_MS apart up to DELETE_TRIES times while `going()` holds; a
 * closed namespace ends it. Rejects with the last failure.
 */
export async function deleteRetried(ns: StrongNamespace<unknown>, key: string, going: () => boolean = () => true): Promise<number> {
  for (let tries = 1; ; tries++) {
    try {
      return await ns.delete(key)
    } catch (error) {
      if (tries >= DELETE_TRIES || isOrreryError(error, 'CLOSED') || !going()) throw error
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS))
    }
  }
}

/** `/e/` and a seq of 10 digits: what an event key has after its run id. */
const EVENT_SUFFIX = 13

/** The run a key of the history belongs to (`run/<id>`, `run/<id>/e/<seq>`), if any. */
function runOf(key: string): string | undefined {
  if (!key.startsWith('run/')) return undefined
  return isEventKey(key) ? key.slice(4, -EVENT_SUFFIX) : key.slice(4)
}

/** A write sent and not acknowledged: reads see it at once, as they would on a local store. */
interface Unacked {
  /** (An events record split in two holds its first half from then on.) */
  value: unknown
  readonly deleted: boolean
}

export class SharedHistory implements HistoryNamespace {
  /** Each run's last write, by run id: its next write is sent once it is answered. */
  private readonly tails = new Map<string, Promise<unknown>>()
  /** Writes of no run (definitions, limits) not answered yet. */
  private readonly loose = new Set<Promise<unknown>>()
  private readonly unacked = new Map<string, Unacked>()
  /** Each run's tenure here: its writes are sent only while it is the run's current one, and not lost. */
  private readonly tenures = new Map<string, Tenure>()
  /** Told once per run lost (the runtime stops driving it). */
  onLost: (runId: string, error: OrreryError) => void = () => {}
  /** Runs whose record on the broker says unfinished, kept from the change feed. */
  private readonly open = new Set<string>()
  private feed: Subscription | undefined

  constructor(readonly ns: StrongNamespace<unknown>) {}

  /**
   * Keeps {@link unfinished} from the mirror, then from the change feed: the lease scan reads the
   * runs that may need an owner, not every run the namespace ever held.
   */
  follow(): void {
    for (const { key, value } of this.ns.entries('run/')) this.note(key, value)
    this.feed = this.ns.watchPrefix('run/').subscribe((change) => this.note(change.key, change.type === 'put' ? change.value : undefined))
  }

  /** Stops following (the workflows closed). */
  unfollow(): void {
    this.feed?.unsubscribe()
  }

  /** The runs whose record on the broker says unfinished, whoever drives them. */
  unfinished(): ReadonlySet<string> {
    return this.open
  }

  /** Told of each run meta the mirror takes, this process's writes and every other's (set while run statuses are watched). */
  onMeta: ((meta: RunMeta) => void) | undefined

  private note(key: string, value: unknown): void {
    if (isEventKey(key)) return
    const id = key.slice('run/'.length)
    const status = (value as { status?: unknown } | undefined)?.status
    if (typeof status === 'string' && !FINAL_STATUSES.has(status as never)) this.open.add(id)
    else {
      this.open.delete(id)
      this.ended(id)
    }
    if (typeof status === 'string') this.onMeta?.(value as RunMeta)
  }

  /** Told once a run lost here ended on the broker (or left it), its writes from here answered. */
  onGone: (runId: string) => void = () => {}

  /** A run ended (or was purged): what is kept of a tenure that lost it goes. */
  private ended(id: string): void {
    const tenure = this.tenures.get(id)
    if (tenure?.lost === undefined) return
    void this.settledRun(id).then(() => {
      if (this.tenures.get(id) !== tenure) return
      this.tenures.delete(id)
      this.onGone(id)
    })
  }

  /** This process drives run `id` from now on, from the meta its mirror holds. */
  adopt(id: string): void {
    // Writes still queued from an earlier tenure (lost) are never sent.
    this.tenures.set(id, { metaVersion: this.ns.get(`run/${id}`)?.version ?? 0, lost: undefined })
  }

  /** This process stops driving run `id` (its lease was lost): none of its writes queued is sent. */
  disown(id: string, error: OrreryError): void {
    const tenure = this.tenures.get(id)
    if (tenure === undefined || tenure.lost !== undefined) return
    tenure.lost = error
    // It ended elsewhere already: the feed brings nothing more of it.
    const status = (this.ns.get(`run/${id}`)?.value as { status?: RunStatus } | undefined)?.status
    if (status !== undefined && FINAL_STATUSES.has(status)) this.ended(id)
  }

  /**
   * Run `id` starts here (its meta is new), and its writes wait for `ready` (the answer to its
   * lease's create): only the process whose lease the broker took writes the run's records, so
   * two processes that start one id at once never both lose it, each refused one of its keys.
   */
  behind(id: string, ready: Promise<unknown>): void {
    this.tenures.set(id, { metaVersion: 0, lost: undefined })
    const before = this.tails.get(id) ?? Promise.resolve()
    const tail: Promise<unknown> = before
      .then(() => ready)
      .then(
        () => this.untail(id, tail),
        () => this.untail(id, tail),
      )
    this.tails.set(id, tail)
  }

  /** Forgets run `id` (it ended here) once its writes are answered. */
  forget(id: string): void {
    const tenure = this.tenures.get(id)
    void this.settledRun(id).then(() => {
      if (this.tenures.get(id) === tenure && !this.tails.has(id)) this.tenures.delete(id)
    })
  }

  /** Resolves once every write of run `id` sent so far was answered. */
  async settledRun(id: string): Promise<void> {
    // A run's writes are answered in order: its last one covers the others.
    await this.tails.get(id)
  }

  /** Resolves once every write sent so far was answered. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.tails.values(), ...this.loose])
  }

  get(key: string): { readonly value: unknown } | undefined {
    const pending = this.unacked.get(key)
    if (pending !== undefined) return pending.deleted ? undefined : pending
    return this.ns.get(key)
  }

  entries(prefix: string): { readonly key: string; readonly value: unknown }[] {
    const mirror = this.ns.entries(prefix)
    let pending = false
    for (const key of this.unacked.keys()) if (key.startsWith(prefix)) pending = true
    if (!pending) return mirror
    const merged = new Map<string, unknown>(mirror.map((e) => [e.key, e.value]))
    for (const [key, write] of this.unacked) {
      if (!key.startsWith(prefix)) continue
      if (write.deleted) merged.delete(key)
      else merged.set(key, write.value)
    }
    return [...merged].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([key, value]) => ({ key, value }))
  }

  keys(prefix: string): string[] {
    return this.entries(prefix).map((e) => e.key)
  }

  put(key: string, value: unknown): Promise<number> {
    const id = runOf(key)
    if (id === undefined) return this.loosely(key, value, false, () => this.ns.put(key, value))
    if (isEventKey(key)) return this.inTurn(id, key, value, false, (tenure) => this.createEvents(id, tenure, key, value))
    return this.inTurn(id, key, value, false, async (tenure) => {
      tenure.metaVersion = await this.ns.put(key, value, { ifVersion: tenure.metaVersion })
      return tenure.metaVersion
    })
  }

  delete(key: string): Promise<number> {
    const id = runOf(key)
    if (id === undefined) return this.loosely(key, undefined, true, () => this.ns.delete(key))
    // An earlier generation's events go whoever purges them; a meta only at the version known here.
    if (isEventKey(key)) return this.inTurn(id, key, undefined, true, () => this.ns.delete(key))
    return this.inTurn(id, key, undefined, true, async (tenure) => {
      const expected = tenure.metaVersion
      tenure.metaVersion = 0
      return this.ns.delete(key, { ifVersion: expected })
    })
  }

  /** The broker keeps no older versions to purge: a purge deletes. */
  purge(key: string): Promise<number> {
    return this.delete(key)
  }

  /**
   * Deletes `key` (the request a signal of run `id` was recorded for) in the run's order of
   * writes: after those queued so far, before any queued later, so the request is on the broker
   * only while the signal's event is in the run's current generation. A failure other than a lost
   * run is tried again ({@link deleteRetried}) before the run's next write goes.
   */
  deleteInTurn(id: string, key: string): void {
    const ack = this.inTurn(id, key, undefined, true, () => deleteRetried(this.ns, key))
    // Left to whoever drives the run next (it finds the signal recorded), or to the run's end.
    ack.catch(() => {})
  }

  /**
   * Creates a run's events record. One too large for the store (refused before it is sent) goes
   * as two, one after the other, each under the seq of its first event, as History writes them
   * on a local store; each is created only if no other process wrote that seq first.
   */
  private async createEvents(id: string, tenure: Tenure, key: string, events: unknown): Promise<number> {
    try {
      return await this.ns.create(key, events)
    } catch (error) {
      if (!Array.isArray(events) || events.length < 2 || !isOrreryError(error, 'VALUE_TOO_LARGE')) throw error
    }
    const half = events.length >> 1
    const [first, second] = [events.slice(0, half), events.slice(half)]
    const secondKey = eventKey(id, (second[0] as EventTuple)[1])
    // Reads see each half where it goes (the feed may bring the second before the first's answer).
    const pending = this.unacked.get(key)
    if (pending !== undefined) pending.value = first
    const later: Unacked = { value: second, deleted: false }
    this.unacked.set(secondKey, later)
    try {
      await this.createEvents(id, tenure, key, first)
      // Lost meanwhile: the rest of the run's writes are not sent.
      if (tenure.lost !== undefined) throw tenure.lost
      if (this.tenures.get(id) !== tenure) throw lostRun(id, secondKey, this.ns.name, undefined)
      return await this.createEvents(id, tenure, secondKey, second)
    } finally {
      if (this.unacked.get(secondKey) === later) this.unacked.delete(secondKey)
    }
  }

  /** A write of no run, sent at once. */
  private loosely(key: string, value: unknown, deleted: boolean, write: () => Promise<number>): Promise<number> {
    const pending: Unacked = { value, deleted }
    this.unacked.set(key, pending)
    const ack = write().finally(() => {
      if (this.unacked.get(key) === pending) this.unacked.delete(key)
    })
    const settled: Promise<unknown> = ack.then(
      () => this.loose.delete(settled),
      () => this.loose.delete(settled),
    )
    this.loose.add(settled)
    return ack
  }

  /** A write of run `id`, sent once its writes before it are answered (none once the run is lost). */
  private inTurn(id: string, key: string, value: unknown, deleted: boolean, write: (tenure: Tenure) => Promise<number>): Promise<number> {
    let tenure = this.tenures.get(id)
    if (tenure === undefined) {
      // A run started here: its meta is new.
      tenure = { metaVersion: 0, lost: undefined }
      this.tenures.set(id, tenure)
    }
    if (tenure.lost !== undefined) return refused(tenure.lost)
    const pending: Unacked = { value, deleted }
    this.unacked.set(key, pending)
    const mine = tenure
    const send = () => {
      if (mine.lost !== undefined) throw mine.lost
      if (this.tenures.get(id) !== mine) throw lostRun(id, key, this.ns.name, undefined)
      return write(mine)
    }
    const ack = (this.tails.get(id) ?? Promise.resolve()).then(send, send).then(
      (version) => {
        if (this.unacked.get(key) === pending) this.unacked.delete(key)
        return version
      },
      (error: unknown) => {
        if (this.unacked.get(key) === pending) this.unacked.delete(key)
        throw this.refusal(mine, id, key, error)
      },
    )
    const tail: Promise<unknown> = ack.then(
      () => this.untail(id, tail),
      () => this.untail(id, tail),
    )
    this.tails.set(id, tail)
    return ack
  }

  private untail(id: string, tail: Promise<unknown>): void {
    if (this.tails.get(id) === tail) this.tails.delete(id)
  }

  /** A refused write loses the run here (once): the broker holds another process's record at `key`. */
  private refusal(tenure: Tenure, id: string, key: string, error: unknown): unknown {
    if (tenure.lost !== undefined) return tenure.lost
    if (!isOrreryError(error, 'VERSION_CONFLICT')) return error
    tenure.lost = lostRun(id, key, this.ns.name, error)
    if (this.tenures.get(id) === tenure) this.onLost(id, tenure.lost)
    return tenure.lost
  }
}

/** This process's time driving a run: the version its meta is at as written (or taken) here. */
interface Tenure {
  metaVersion: number
  lost: OrreryError | undefined
}

/** `VERSION_CONFLICT` for a run another process drives: its record at `key` came first. */
export function lostRun(id: string, key: string, namespace: string, cause: unknown): OrreryError {
  return new OrreryError('VERSION_CONFLICT', `run ${id} is driven by another process (${key} was written there first): this process stops driving it`, {
    cause,
    details: { runId: id, key, namespace, reason: 'owned-elsewhere' },
  })
}

function refused(error: unknown): Promise<number> {
  const ack = Promise.reject(error)
  ack.catch(() => {})
  return ack
}
