/**
 * Deadlines by key, soonest first: what a strong namespace's mirror expires (and sweeps from its
 * broker) when their time comes. A red-black tree (js-sdsl's OrderedSet) ordered by deadline,
 * so scheduling, cancelling and taking what is due cost O(log n) however many keys wait.
 */
import { OrderedSet } from '@js-sdsl/ordered-set'

interface Due {
  readonly at: number
  readonly key: string
  readonly revision: number
}

const byDeadline = (a: Due, b: Due): number => (a.at !== b.at ? a.at - b.at : a.key < b.key ? -1 : a.key > b.key ? 1 : 0)

export class Expiries {
  private readonly order = new OrderedSet<Due>([], byDeadline)
  private readonly byKey = new Map<string, Due>()

  /** `key` (at `revision`) is due at `at`, instead of when it was due before. */
  schedule(key: string, revision: number, at: number): void {
    this.cancel(key)
    const due = { at, key, revision }
    this.byKey.set(key, due)
    this.order.insert(due)
  }

  /** `key` is due no more. */
  cancel(key: string): void {
    const due = this.byKey.get(key)
    if (due === undefined) return
    this.byKey.delete(key)
    this.order.eraseElementByKey(due)
  }

  /** Whether `key` is due at some time. */
  has(key: string): boolean {
    return this.byKey.has(key)
  }

  /** The soonest deadline (Infinity when none waits). */
  next(): number {
    return this.order.size() === 0 ? Infinity : this.order.front()!.at
  }

  /** Takes every key due by `now`, soonest first, with the revision it was scheduled at. */
  take(now: number): Array<{ key: string; revision: number }> {
    const out: Array<{ key: string; revision: number }> = []
    while (this.order.size() > 0) {
      const due = this.order.front()!
      if (due.at > now) break
      this.order.eraseElementByKey(due)
      this.byKey.delete(due.key)
      out.push({ key: due.key, revision: due.revision })
    }
    return out
  }

  clear(): void {
    this.order.clear()
    this.byKey.clear()
  }
}
