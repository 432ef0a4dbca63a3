import type { GroupRef } from './driver.js'

/**
 * The subscriptions waiting for a mirror to catch up (`Driver.catchUp`): each waits for a broker
 * position (its marker, known once the broker answered) and starts once the mirror has read up to
 * it, between two ingests. Every driver's mirror keeps one; what a position is, and when the
 * mirror has reached one, is the driver's.
 */

interface Waiter<M> {
  /** Undefined until the marker is known. */
  after: M | undefined
  readonly start: () => void
}

export class CatchUps<M> {
  private readonly waiters: Array<Waiter<M>> = []

  /** Whether a subscription waits. */
  get waiting(): boolean {
    return this.waiters.length > 0
  }

  /**
   * Waits for `marker`; once it is known, `known` runs (the mirror checks whether it is there
   * already). A marker that fails goes to `failed`, unless the waiter was cancelled first, or
   * `ended()` (the driver or the mirror stopped: the waiter starts, on a closed bus, which ends
   * it). Returns the cancel.
   */
  add(marker: Promise<M>, start: () => void, known: () => void, failed: (error: unknown) => void, ended: () => boolean): () => void {
    const waiter: Waiter<M> = { after: undefined, start }
    this.waiters.push(waiter)
    marker.then(
      (at) => {
        waiter.after = at
        known()
      },
      (error: unknown) => {
        // A waiter cancelled first (its subscription went) is owed nothing.
        if (!this.cancel(waiter)) return
        if (ended()) start()
        else failed(error)
      },
    )
    return () => this.cancel(waiter)
  }

  /** Whether a waiter's known marker passes `test`. */
  holds(test: (at: M) => boolean): boolean {
    return this.waiters.some((w) => w.after !== undefined && test(w.after))
  }

  /** Starts every waiter whose marker `reached` says the mirror has reached; `flush` first, so the subscription starts after what is read so far. */
  release(reached: (at: M) => boolean, flush: () => void): void {
    const due = this.waiters.filter((w) => w.after !== undefined && reached(w.after))
    if (due.length === 0) return
    flush()
    for (const w of due) {
      this.cancel(w)
      w.start()
    }
  }

  /** Removes `waiter`; false when it was no longer waiting. */
  private cancel(waiter: Waiter<M>): boolean {
    const i = this.waiters.indexOf(waiter)
    if (i < 0) return false
    this.waiters.splice(i, 1)
    return true
  }
}

/** A driver's writes not settled yet, as `Markers.earlier` asks them (see `Writes`). */
export interface OpenWrites {
  /** The Promises of its open writes holding a record on `key`. */
  openOn(key: string): Array<Promise<unknown>>
}

/**
 * Markers of `latest` subscribes (and group starts) not answered yet, by broker and stream (or
 * topic), across every Orrery of this process (a driver kind keeps one): a publish to that stream
 * made after a subscribe waits for them, so it lands after the subscriber's marker on the broker
 * too. And the other way: a marker is asked once the writes to its stream made before it (by any
 * Orrery of this process) are settled (`earlier`), so none of them lands after it. A marker asked
 * in its driver's write pipeline (Redis: the connection keeps the order) has that driver's writes
 * as its `owner`: they neither wait for it nor it for them.
 */
export class Markers {
  /** A gate per marker, with its owner (if any): open once the marker settled or was forgotten (its subscription went). */
  private readonly pending = new Map<string, Map<Promise<void>, OpenWrites | undefined>>()
  /** The drivers with writes open (see `Writes`). */
  private readonly writing = new Set<OpenWrites>()

  /** Whether any marker is unanswered. */
  get any(): boolean {
    return this.pending.size > 0
  }

  /**
   * Publishes to `key` made from now on wait until `marker` has settled, or until the returned
   * function is called (the subscription went: nothing needs them to wait any more); those of
   * `owner` (the writes the marker is asked in order with) do not.
   */
  add(key: string, marker: Promise<unknown>, owner?: OpenWrites): () => void {
    const gates = this.pending.get(key) ?? new Map<Promise<void>, OpenWrites | undefined>()
    this.pending.set(key, gates)
    let open = () => {}
    const gate = new Promise<void>((resolve) => {
      open = resolve
    })
    gates.set(gate, owner)
    const forget = () => {
      open()
      gates.delete(gate)
      if (gates.size === 0 && this.pending.get(key) === gates) this.pending.delete(key)
    }
    marker.then(forget, forget)
    return forget
  }

  /**
   * Sets `write.after`: the markers pending now on the keys of its records (`keyOf`, undefined
   * for a record that goes to no stream), but those of `owner` (the driver's own writes, which the
   * write is one of). A write is sent after those only: a marker made later is of a subscribe made
   * after the write, which the write must land before.
   */
  hold<R>(write: { readonly records: readonly R[]; after: Promise<unknown> | undefined }, keyOf: (record: R) => string | undefined, owner?: OpenWrites): void {
    if (this.pending.size === 0) return
    const waits: Array<Promise<void>> = []
    const seen = new Set<string>()
    for (const record of write.records) {
      const key = keyOf(record)
      if (key === undefined || seen.has(key)) continue
      seen.add(key)
      const gates = this.pending.get(key)
      if (gates !== undefined) for (const [gate, of] of gates) if (of === undefined || of !== owner) waits.push(gate)
    }
    if (waits.length > 0) holdUntil(write, Promise.all(waits))
  }

  /** @internal `writes` has writes open (`open`), or none any more. */
  writingOn(writes: OpenWrites, open: boolean): void {
    if (open) this.writing.add(writes)
    else this.writing.delete(writes)
  }

  /**
   * Settles once every write to `key` open now, of any Orrery of this process but `except`'s
   * writes, has settled (either way); undefined when there is none. A marker asked after it is at
   * or past them.
   */
  earlier(key: string, except?: OpenWrites): Promise<unknown> | undefined {
    const waits: Array<Promise<unknown>> = []
    for (const writes of this.writing) if (writes !== except) for (const written of writes.openOn(key)) waits.push(written)
    return waits.length === 0 ? undefined : Promise.allSettled(waits)
  }
}

/**
 * The part of a marker key naming the server (or cluster) of `addresses`: each without its
 * scheme, credentials or path, lower-cased, with `defaultPort` when it names none; sorted, with
 * repeats dropped. Two Orreries of a process that spell the same servers differently (another
 * order, a scheme, credentials) then order their publishes and subscribes against each other.
 */
export function serversKey(addresses: readonly string[], defaultPort: number): string {
  const hosts = addresses.map((address) => {
    const host = address
      .replace(/^[a-z][a-z0-9+.-]*:\/\//i, '')
      .replace(/^[^@/]*@/, '')
      .replace(/[/?#].*$/, '')
      .toLowerCase()
    // `host:port` or `[v6]:port` name one; `host` and `[v6]` do not.
    const hasPort = /^\[[^\]]*\]:\d+$/.test(host) || /^[^:[\]]*:\d+$/.test(host)
    return hasPort ? host : `${host}:${defaultPort}`
  })
  return [...new Set(hosts)].sort().join(',')
}

/**
 * How many writes at the front of `queue` may go now: those before the first one still held by a
 * marker (see `Markers.hold`). A batch never waits for a later write's marker, which may itself
 * wait for an earlier write of the batch to be written.
 */
export function sendable(queue: ReadonlyArray<{ readonly settled: boolean; readonly after: Promise<unknown> | undefined }>): number {
  const i = queue.findIndex((w) => !w.settled && w.after !== undefined)
  return i < 0 ? queue.length : i
}

/** Sends `write` after `after` settles: its `after` until then (see `Markers.hold`). */
export function holdUntil(write: { after: Promise<unknown> | undefined }, after: Promise<unknown>): void {
  write.after = after
  void after.then(() => {
    if (write.after === after) write.after = undefined
  })
}

/** What a batch of writes waits for before it is sent (see `Markers.hold`); undefined when nothing. */
export function heldBy(writes: Iterable<{ readonly settled: boolean; readonly after: Promise<unknown> | undefined }>): Promise<unknown> | undefined {
  const waits: Array<Promise<unknown>> = []
  for (const w of writes) if (!w.settled && w.after !== undefined) waits.push(w.after)
  return waits.length === 0 ? undefined : Promise.all(waits)
}

/**
 * A `latest` subscription's catch-up: `ask(cancelled)` makes its marker, asking the broker until
 * it answers or `cancelled()` (the subscription went first: nothing waits for the answer then);
 * `mark(marker)` makes publishes wait for it and returns what lets them go on; `wait(marker)`
 * hands it to the mirror and returns its cancel. Returns the subscription's cancel, which ends
 * the asking, lets publishes go on at once, and cancels the wait.
 */
export function catchUpWith<M>(
  ask: (cancelled: () => boolean) => Promise<M>,
  mark: (marker: Promise<M>) => () => void,
  wait: (marker: Promise<M>) => () => void,
): () => void {
  let cancelled = false
  const marker = ask(() => cancelled)
  const unmark = mark(marker)
  const cancel = wait(marker)
  return () => {
    cancelled = true
    unmark()
    cancel()
  }
}

/**
 * A mirror's first look at its stream or topic: settled once answered (or given up). A
 * subscriber's marker asked after it is at or past the end of the history the mirror reads, so
 * none of this process's publishes made after the marker can be read as history.
 */
export class FirstLook {
  readonly done: Promise<void>
  private settle: () => void = () => {}

  constructor() {
    this.done = new Promise((resolve) => {
      this.settle = resolve
    })
  }

  /** The look was answered, or given up. */
  answered(): void {
    this.settle()
  }

  /** `ask()` once the look is answered, unless `cancelled()` by then (nothing waits for it then: it rejects). */
  after<T>(ask: () => Promise<T>, cancelled: () => boolean): Promise<T> {
    return this.done.then(() => unlessGone(cancelled, 'the subscription went before its marker was asked', ask))
  }
}

/** `next()`, unless `gone()`: then a rejection saying so (`what`); nothing waits for its answer any more. */
export function unlessGone<T>(gone: () => boolean, what: string, next: () => Promise<T>): Promise<T> {
  return gone() ? Promise.reject(new Error(what)) : next()
}

/**
 * A driver's groups being made (`Driver.openGroup`). A group from 'latest' takes what is
 * published after it was made: it is made once the writes to its stream that this process made
 * before are settled (`Markers.earlier`: they land before its start), and publishes made
 * meanwhile wait until it exists (`Markers.add`: they land after). A group closed meanwhile
 * (deleted, or its bus stopping) is not made, and publishes stop waiting for it at once (`drop`).
 */
export class GroupStarts {
  /** What lets publishes go on, by group id, while a group from 'latest' is being made. */
  private readonly marks = new Map<number, () => void>()

  constructor(private readonly markers: Markers) {}

  /** Makes `group` with `make()`, its stream's marker key being `key`; settles as `make()` does, or rejects once `gone()`. */
  make(group: GroupRef, key: string, make: () => Promise<void>, gone: () => boolean): Promise<void> {
    const made = () => unlessGone(gone, `group ${group.name} went before it was made`, make)
    if (group.start.at !== 'latest') return made()
    const earlier = this.markers.earlier(key)
    const done = earlier === undefined ? made() : earlier.then(made)
    const unmark = this.markers.add(key, done)
    this.marks.set(group.id, unmark)
    const settled = () => {
      if (this.marks.get(group.id) === unmark) this.marks.delete(group.id)
    }
    done.then(settled, settled)
    return done
  }

  /** `group` closed: publishes stop waiting for it being made. */
  drop(group: number): void {
    this.marks.get(group)?.()
    this.marks.delete(group)
  }
}
