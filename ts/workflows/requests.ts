/**
 * Signals and cancels for a shared run (`orrery.workflows({ shared })`) sent from a process that
 * does not drive it, and the results and events it follows there. A request is a record of the
 * strong namespace, `req/<run id>/<request id>`, holding `{ signal, payload }` or
 * `{ cancel: true }`: created on the broker before the sender's promise resolves, so neither the
 * sender's nor the owner's crash loses it. The process that drives the run takes each request
 * from the change feed (and, when it takes a run over, those waiting) and gives it to the run. A
 * signal's event carries its request id, and the request's deletion goes in the run's order of
 * writes right behind that event (the runtime's `taken` hook, SharedHistory.deleteInTurn): while
 * the request is on the broker, its signal, if recorded, is in the run's current generation. So
 * a process that takes the run over deletes a request whose signal it finds recorded, and gives
 * the others: each signal is taken once, across takeovers and continueAsNew alike. A cancel
 * needs no such care (a second one does nothing) and is deleted once recorded.
 */
import type { Subscription } from 'rxjs'

import { isOrreryError, OrreryError } from '../errors.js'
import { Stream } from '../stream.js'
import type { StrongNamespace } from '../store/strong.js'
import type { Change } from '../store/records.js'
import { decodeEvent, FINAL_STATUSES, restoreError, type EventTuple, type History, type WorkflowEvent } from './history.js'
import { runId } from './ids.js'
import { currentEvents, readRecord, type RunRecord } from './records.js'
import { MAX_UNCLAIMED_SIGNALS, type Run } from './run.js'
import { deleteRetried } from './shared-history.js'

/**
 * What a request record holds. `again`: a signal first given to the run in the process that
 * drove it, under the same request id, and sent again after a takeover (it may be recorded).
 */
type Request = { readonly signal: string; readonly payload: unknown; readonly again?: true } | { readonly cancel: true }

/** A new request id of run `id` (the key of its record). */
export const newRequest = (id: string): string => `${requestsOf(id)}${runId()}`

/** @internal What a run's handle does for a run another process drives. */
export interface RemoteRuns {
  /** With `request`, the signal was given to the run under that id before (see `Request.again`). */
  signal(meta: RunRecord, name: string, payload: unknown, request?: string): Promise<void>
  cancel(meta: RunRecord): Promise<void>
  result(id: string): Promise<unknown>
  events(id: string): Stream<WorkflowEvent>
}

/** What the requests need of the workflows. */
export interface RequestsHost {
  /** The run these workflows drive under `id`, if any. */
  live(id: string): Run | undefined
  /** The signals the version of a run recorded elsewhere waits for (`WORKFLOW_NOT_FOUND` when it is not in the store). */
  signalsOf(meta: RunRecord): readonly string[]
  /** Work no caller waits for failed. */
  failed(what: string, error: unknown): void
}

const PREFIX = 'req/'
/** How long a signal its run refused for holding too many waits before it is given again. */
const DEFERRED_MS = 1_000
const requestsOf = (id: string) => `${PREFIX}${id}/`
/** The run a request key is for: request ids hold no '/'. */
const runOfRequest = (key: string) => key.slice(PREFIX.length, key.lastIndexOf('/'))

export class RunRequests implements RemoteRuns {
  /** Requests being given to a run here (sent to it and not deleted yet). */
  private readonly taking = new Set<string>()
  /** Signals a run here refused for now (it holds too many): given again a second later. */
  private readonly deferred = new Set<string>()
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  /** Callers waiting for a run's end or following its events: told `CLOSED` when these workflows close. */
  private readonly followers = new Set<{ close(): void }>()
  private feed: Subscription | undefined
  private closed = false

  constructor(
    private readonly ns: StrongNamespace<unknown>,
    private readonly history: History,
    private readonly host: RequestsHost,
  ) {}

  /** Takes requests for the runs driven here as they come. */
  start(): void {
    this.feed = this.ns.watchPrefix(PREFIX).subscribe((change: Change<unknown>) => {
      if (change.type === 'put') this.take(change.key, change.value as Request)
    })
  }

  /** Stops taking requests; waiting callers hear `CLOSED`. */
  stop(): void {
    this.closed = true
    this.feed?.unsubscribe()
    clearTimeout(this.retryTimer)
    for (const follower of [...this.followers]) follower.close()
  }

  // The sender's side.

  /** Checks at once (throws `SIGNAL_UNKNOWN`, `CAPACITY_EXCEEDED`, `INVALID_PAYLOAD`), then resolves once the broker has the request. */
  signal(meta: RunRecord, name: string, payload: unknown, request?: string): Promise<void> {
    const signals = this.host.signalsOf(meta)
    if (!signals.includes(name)) {
      throw new OrreryError('SIGNAL_UNKNOWN', `workflow ${meta.definition} waits for no signal ${JSON.stringify(name)}`, {
        details: { signal: name, signals: [...signals] },
      })
    }
    const waiting = this.ns.keys(requestsOf(meta.id)).length
    if (waiting >= MAX_UNCLAIMED_SIGNALS) {
      throw new OrreryError('CAPACITY_EXCEEDED', `run ${meta.id} has ${waiting} requests its owner has not taken: no more until it takes some`, {
        details: { runId: meta.id, signal: name, limit: MAX_UNCLAIMED_SIGNALS },
      })
    }
    // As the store keeps it: INVALID_PAYLOAD or VALUE_TOO_LARGE before anything is sent.
    const kept = this.history.keep(payload, 'the payload of signal', name)
    if (request !== undefined) return this.send(request, { signal: name, payload: kept, again: true })
    return this.send(newRequest(meta.id), { signal: name, payload: kept })
  }

  cancel(meta: RunRecord): Promise<void> {
    return this.send(newRequest(meta.id), { cancel: true })
  }

  private send(key: string, request: Request): Promise<void> {
    if (this.closed) throw new OrreryError('CLOSED', 'these workflows are closed')
    return this.ns.create(key, request).then(() => undefined)
  }

  /** Resolves (or rejects) as run `id` ends, wherever it runs: its meta's final write on the broker. */
  result(id: string): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let watch: Subscription | undefined
      const follower = {
        close: () => {
          stop()
          reject(new OrreryError('CLOSED', 'these workflows are closed'))
        },
      }
      const stop = () => {
        watch?.unsubscribe()
        this.followers.delete(follower)
      }
      const check = (): boolean => {
        const meta = readRecord(this.history, id)
        if (meta === undefined) {
          stop()
          reject(new OrreryError('RUN_NOT_FOUND', `run ${id} is no longer recorded`, { details: { runId: id } }))
          return true
        }
        if (!FINAL_STATUSES.has(meta.status as never)) return false
        stop()
        if (meta.error !== undefined) reject(restoreError(meta.error))
        else resolve(meta.output)
        return true
      }
      if (this.closed) return follower.close()
      if (check()) return
      this.followers.add(follower)
      watch = this.ns.watch(`run/${id}`).subscribe({ next: () => void check(), complete: () => follower.close() })
    })
  }

  /** What run `id` records from now on, wherever it runs; completes when it ends. */
  events(id: string): Stream<WorkflowEvent> {
    const prefix = `run/${id}/e/`
    return new Stream<WorkflowEvent>({
      start: (sink) => {
        if (this.closed) {
          sink.complete()
          return { stop: () => {}, setPaused: () => {} }
        }
        const follower = { close: () => end() }
        const metaKey = `run/${id}`
        let ended = false
        // The run's records in the order the broker has them: its events, then its final meta.
        const watch = this.ns.watchPrefix(metaKey).subscribe({
          next: (change) => {
            if (change.key === metaKey) {
              if (this.finished(id) !== false) end()
              return
            }
            if (change.type !== 'put' || !change.key.startsWith(prefix) || change.key.length !== prefix.length + 10) return
            for (const tuple of change.value as EventTuple[]) {
              const event = decodeEvent(tuple)
              sink.next(event)
              if (event.type === 'run-finished') return end()
            }
          },
          complete: () => end(),
        })
        const end = () => {
          if (ended) return
          ended = true
          watch.unsubscribe()
          this.followers.delete(follower)
          sink.complete()
        }
        this.followers.add(follower)
        // It may have ended between the handle's look and this subscription.
        if (this.finished(id) !== false) end()
        return { stop: () => end(), setPaused: () => {} }
      },
    })
  }

  // The owner's side.

  /**
   * Run `id` is driven here now (taken over, or restored): gives it the requests waiting for it,
   * in the order they were sent, and deletes those its history has recorded already.
   */
  drain(id: string): void {
    const recorded = this.recorded(id)
    for (const { key, value } of this.ns.entries(requestsOf(id))) {
      if (recorded.has(key)) this.forget(key)
      else this.take(key, value as Request, false)
    }
  }

  /** The request ids of the signals run `id`'s current generation recorded. */
  private recorded(id: string): Set<string> {
    const recorded = new Set<string>()
    for (const event of currentEvents(this.history, id)) if (event.type === 'signal' && event.request !== undefined) recorded.add(event.request)
    return recorded
  }

  /** Run `id` ended here: requests left for it reach nobody. */
  ended(id: string): void {
    if (this.closed) return
    for (const key of this.ns.keys(requestsOf(id))) if (!this.taking.has(key)) this.forget(key)
  }

  /** Gives each signal a run refused for holding too many another try. */
  private retry(): void {
    this.retryTimer = undefined
    for (const key of [...this.deferred]) {
      this.deferred.delete(key)
      const entry = this.ns.get(key)
      if (entry !== undefined) this.take(key, entry.value as Request)
    }
  }

  /** Whether run `id` ended (undefined: it is not recorded). */
  private finished(id: string): boolean | undefined {
    const meta = readRecord(this.history, id)
    return meta === undefined ? undefined : FINAL_STATUSES.has(meta.status as never)
  }

  /**
   * Gives a request to its run if it is driven here (the runtime deletes a signal's once recorded,
   * a cancel's here). A signal sent `again` that the run recorded already is only deleted
   * (`check`: `drain` checked it).
   */
  private take(key: string, request: Request, check = true): void {
    if (this.closed || this.taking.has(key)) return
    const id = runOfRequest(key)
    const run = this.host.live(id)
    if (run === undefined) {
      // Sent to a run that had ended (the sender's mirror was behind): nobody will take it.
      if (this.finished(id) === true) this.forget(key)
      return
    }
    if (check && 'again' in request && this.recorded(id).has(key)) {
      this.forget(key)
      return
    }
    this.taking.add(key)
    let ack: number | Promise<number>
    try {
      ack = 'cancel' in request ? run.cancel() : run.signal(request.signal, request.payload, key)
    } catch (error) {
      this.taking.delete(key)
      if (isOrreryError(error, 'CAPACITY_EXCEEDED')) {
        this.deferred.add(key)
        this.retryTimer ??= setTimeout(() => this.retry(), DEFERRED_MS)
        return
      }
      // Checked by the sender against the same version: only a damaged record gets here.
      this.host.failed(`request ${key} could not be given to its run`, error)
      this.forget(key)
      return
    }
    // A refused record (the run was lost here) leaves the request to the run's next owner.
    const cancel = 'cancel' in request
    Promise.resolve(ack).then(
      (version) => {
        // A signal recorded went with the run's writes; one that reached nobody (the run ended first) goes here.
        if (cancel || version === 0) this.forget(key)
        else this.taking.delete(key)
      },
      () => this.taking.delete(key),
    )
  }

  /** Deletes a request (tried again a few times; one left behind goes when its run ends or is taken over). */
  private forget(key: string): void {
    this.taking.add(key)
    deleteRetried(this.ns, key, () => !this.closed)
      .catch(() => {})
      .finally(() => this.taking.delete(key))
  }
}
