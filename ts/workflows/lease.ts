/**
 * Owner leases of workflow runs whose history is in a strong shared namespace: `owner/<run id>`
 * holds `{ owner, until }` (wall-clock ms). A process takes a run's lease by compare-and-set (a
 * new run's by creating it), renews it every third of its length on the version it holds, and
 * deletes it when the run ends or the workflows close, so another process may take it at once. A
 * process with `resume` watches the leases of unfinished runs it does not drive (the change feed
 * for a deletion, a timer for the first expiry) and takes one that is free or expired: the
 * runtime then replays the run's history and goes on with it. A held lease seen on the change feed
 * written by another owner (or deleted), and a renewal refused or not answered before the lease
 * runs out, lose the run here.
 *
 * The lease keeps the run driven by one process at a time in the common case; the history's
 * create-only records are what make two owners at once harmless (shared-history.ts).
 */
import { isOrreryError, OrreryError } from '../errors.js'
import type { StrongNamespace } from '../store/strong.js'
import type { Change } from '../store/records.js'
import type { Subscription } from 'rxjs'

/** A run's lease as the namespace keeps it. */
export interface LeaseRecord {
  /** The owner name of the workflows that hold it. */
  readonly owner: string
  /** Wall-clock ms after which another process may take it. */
  readonly until: number
}

/** What the leases need of the workflows. */
export interface LeaseHost {
  /** Unfinished runs recorded in the namespace that these workflows do not drive. */
  orphans(): Iterable<string>
  /** The lease of run `id` is these workflows' now: go on with the run. */
  adopt(id: string): void
  /** The lease of run `id` is lost (another process took it, or it was not renewed in time): stop driving the run. */
  lost(id: string, error: OrreryError): void
}

/** A lease these workflows hold: the version of its key, and until when it is theirs. */
interface Held {
  version: number
  until: number
  renewing: boolean
  /** Settles once its last write (a new run's create, a renewal) is answered. */
  ready: Promise<void>
}

export const leaseKey = (id: string): string => `owner/${id}`

export class Leases {
  private readonly held = new Map<string, Held>()
  /** Runs whose lease is being taken (their compare-and-set is in flight). */
  private readonly taking = new Set<string>()
  /** Runs lost here, and until when they are left to others (the feed brings what took them). */
  private readonly resting = new Map<string, number>()
  private renewTimer: ReturnType<typeof setInterval> | undefined
  private expiryTimer: ReturnType<typeof setTimeout> | undefined
  private expiryAt = Infinity
  private feed: Subscription | undefined
  private stopped = false
  private resume = false

  constructor(
    private readonly ns: StrongNamespace<unknown>,
    /** The name these workflows write in the leases they hold. */
    readonly owner: string,
    readonly leaseMs: number,
    private readonly host: LeaseHost,
  ) {}

  /** Renews the leases held from now on, and with `resume` takes those of runs nobody drives. */
  start(resume: boolean): void {
    this.renewTimer = setInterval(() => this.renewAll(), Math.max(1, Math.floor(this.leaseMs / 3)))
    unref(this.renewTimer)
    this.feed = this.ns.watchPrefix('owner/').subscribe((change: Change<unknown>) => this.changed(change))
    if (!resume) return
    this.resume = true
    // The first look waits for the steps the caller registers after opening.
    this.expiryAt = 0
    this.expiryTimer = setTimeout(() => this.onExpiry(), 0)
  }

  /**
   * Takes the lease of a run started here (create-only: an id another process started loses),
   * or one that ran out (its holder died, perhaps before it wrote the run), by compare-and-set
   * as a takeover does. Settles once the broker answered (a refusal has lost the run here by then).
   */
  claim(id: string): Promise<void> {
    const until = Date.now() + this.leaseMs
    const held: Held = { version: 0, until, renewing: true, ready: Promise.resolve() }
    this.held.set(id, held)
    const record: LeaseRecord = { owner: this.owner, until }
    const taken = this.ns.create(leaseKey(id), record).catch(async (error: unknown) => {
      if (!isOrreryError(error, 'VERSION_CONFLICT')) throw error
      // Unread (the broker away): as refused.
      const current = await this.ns.fetch(leaseKey(id)).catch(() => Promise.reject(error))
      // Deleted meanwhile (its run ended, or its start was refused): created again, once.
      if (current === undefined) return this.ns.create(leaseKey(id), record)
      if ((current.value as LeaseRecord).until > Date.now()) throw error
      return this.ns.put(leaseKey(id), record, { ifVersion: current.version })
    })
    held.ready = taken.then(
      (version) => {
        held.version = version
        held.renewing = false
      },
      (error: unknown) => {
        held.renewing = false
        if (this.held.get(id) !== held) return
        if (isOrreryError(error, 'VERSION_CONFLICT')) this.lose(id, error, 'its lease is held by another process')
      },
    )
    return held.ready
  }

  /** Gives run `id`'s lease up (the run ended, or was lost): deleted if it is still the one held here. */
  async release(id: string): Promise<void> {
    const held = this.held.get(id)
    if (held === undefined) return
    this.held.delete(id)
    // After a renewal in flight, on the version it wrote.
    await held.ready
    if (held.version !== 0) await this.ns.delete(leaseKey(id), { ifVersion: held.version }).catch(() => {})
  }

  /** Stops renewing and taking; the leases held stay until {@link releaseAll}. */
  stop(): void {
    this.stopped = true
    clearInterval(this.renewTimer)
    clearTimeout(this.expiryTimer)
    this.feed?.unsubscribe()
  }

  /** Releases every lease held (the workflows closed): other processes take the runs at once. */
  async releaseAll(): Promise<void> {
    await Promise.all([...this.held.keys()].map((id) => this.release(id)))
  }

  /** Renews each lease held (a third of its length in), on the version held. */
  private renewAll(): void {
    if (this.stopped) return
    // Runs started elsewhere since the last look have no expiry timer yet.
    if (this.resume) this.scan()
    const now = Date.now()
    for (const [id, held] of this.held) {
      if (now >= held.until) {
        this.lose(id, undefined, `its lease ran out before it could be renewed (leaseMs ${this.leaseMs})`)
        continue
      }
      if (held.renewing || held.version === 0) continue
      held.renewing = true
      const until = now + this.leaseMs
      held.ready = this.ns.put(leaseKey(id), { owner: this.owner, until } satisfies LeaseRecord, { ifVersion: held.version }).then(
        (version) => {
          held.renewing = false
          held.version = version
          held.until = until
        },
        (error: unknown) => {
          held.renewing = false
          // Another answer (the broker away) is tried again next time, until the lease runs out.
          if (this.held.get(id) === held && isOrreryError(error, 'VERSION_CONFLICT')) this.lose(id, error, 'another process took its lease')
        },
      )
    }
  }

  /**
   * A lease changed on the broker. One held here that another owner wrote, or someone deleted,
   * is lost at once (else the next renewal or write would find out). With `resume`, a lease
   * deleted (a run ended, or its owner closed or lost it) or written as over is looked at at
   * once (one that runs out is the expiry timer's).
   */
  private changed(change: Change<unknown>): void {
    const id = change.key.slice('owner/'.length)
    const lease = change.type === 'put' ? (change.value as LeaseRecord | undefined) : undefined
    const held = this.held.get(id)
    // Only a change after the version held here takes the lease: the feed may bring an older one
    // late (one a claim in flight, whose answer decides, or a renewal went past).
    if (held !== undefined && held.version !== 0 && change.version > held.version && (lease === undefined || lease.owner !== this.owner)) {
      this.lose(id, undefined, lease === undefined ? 'its lease was deleted' : `${lease.owner} took its lease`)
    }
    if (this.resume && (lease?.until ?? 0) <= Date.now()) this.scan()
  }

  private lose(id: string, cause: unknown, why: string): void {
    this.held.delete(id)
    this.resting.set(id, Date.now() + this.leaseMs / 3)
    this.host.lost(
      id,
      new OrreryError('VERSION_CONFLICT', `run ${id} is driven by another process now: ${why}; this process stops driving it`, {
        cause,
        details: { runId: id, key: leaseKey(id), namespace: this.ns.name, reason: 'owned-elsewhere' },
      }),
    )
  }

  /** What these workflows hold of run `id`'s lease now (compare two answers to know it is the same tenure). */
  holding(id: string): object | undefined {
    return this.held.get(id)
  }

  /** Run `id` ended (elsewhere): nothing is kept for it. */
  forget(id: string): void {
    this.resting.delete(id)
  }

  /** A run lost by its history (another process wrote first): left to others a while, then taken when free. */
  rest(id: string): void {
    this.resting.set(id, Date.now() + this.leaseMs / 3)
  }

  private onExpiry(): void {
    this.expiryTimer = undefined
    this.expiryAt = Infinity
    this.scan()
  }

  /** Takes each free or expired lease of a run nobody drives here; arms a timer for the next expiry. */
  private scan(): void {
    if (this.stopped) return
    const now = Date.now()
    let next = Infinity
    for (const id of this.host.orphans()) {
      if (this.held.has(id) || this.taking.has(id)) continue
      const rest = this.resting.get(id)
      if (rest !== undefined) {
        if (rest > now) {
          next = Math.min(next, rest)
          continue
        }
        this.resting.delete(id)
      }
      const entry = this.ns.get(leaseKey(id))
      const until = (entry?.value as LeaseRecord | undefined)?.until ?? 0
      if (until > now) {
        next = Math.min(next, until)
        continue
      }
      void this.take(id, entry?.version ?? 0)
    }
    if (next < this.expiryAt) {
      clearTimeout(this.expiryTimer)
      this.expiryAt = next
      // A millisecond past the end: `until > now` above is then false.
      this.expiryTimer = setTimeout(() => this.onExpiry(), next - now + 1)
      unref(this.expiryTimer)
    }
  }

  private async take(id: string, expected: number): Promise<void> {
    this.taking.add(id)
    const until = Date.now() + this.leaseMs
    try {
      const version = await this.ns.put(leaseKey(id), { owner: this.owner, until } satisfies LeaseRecord, { ifVersion: expected })
      if (this.stopped) {
        await this.ns.delete(leaseKey(id), { ifVersion: version }).catch(() => {})
        return
      }
      this.held.set(id, { version, until, renewing: false, ready: Promise.resolve() })
    } catch {
      // Another process took it first (or the broker is away: the next look tries again).
      return
    } finally {
      this.taking.delete(id)
    }
    this.host.adopt(id)
  }
}

/** Lets the process exit with only these timers left (Node; a browser's timers are numbers). */
function unref(timer: unknown): void {
  ;(timer as { unref?: () => void }).unref?.()
}
