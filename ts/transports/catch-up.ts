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
   * already). A marker that fails goes to `failed` with the waiter's `start`. Returns the cancel.
   */
  add(marker: Promise<M>, start: () => void, known: () => void, failed: (error: unknown, start: () => void) => void): () => void {
    const waiter: Waiter<M> = { after: undefined, start }
    this.waiters.push(waiter)
    marker.then(
      (at) => {
        waiter.after = at
        known()
      },
      (error: unknown) => {
        this.cancel(waiter)
        failed(error, start)
      },
    )
    return () => this.cancel(waiter)
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

  private cancel(waiter: Waiter<M>): void {
    const i = this.waiters.indexOf(waiter)
    if (i >= 0) this.waiters.splice(i, 1)
  }
}
