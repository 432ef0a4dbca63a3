/**
 * The keys of a mirror in order, for prefix reads in O(log n + matches): a sorted array, kept by
 * binary search. A new key lands where it sorts (keys that grow with time, as run ids do, land at
 * the end, where the copy that makes room is short).
 */
export class KeyIndex {
  private readonly keys: string[] = []

  /** Adds `key` if it is not there. */
  add(key: string): void {
    const at = this.lowerBound(key)
    if (this.keys[at] !== key) this.keys.splice(at, 0, key)
  }

  /** Removes `key` if it is there. */
  remove(key: string): void {
    const at = this.lowerBound(key)
    if (this.keys[at] === key) this.keys.splice(at, 1)
  }

  /** The keys starting with `prefix`, in order (by UTF-16 code unit, as `<` compares). */
  withPrefix(prefix: string): string[] {
    if (prefix === '') return this.keys.slice()
    const from = this.lowerBound(prefix)
    // The keys with the prefix follow those below it: the first past them is found by halving too.
    let lo = from
    let hi = this.keys.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.keys[mid]!.startsWith(prefix)) lo = mid + 1
      else hi = mid
    }
    return this.keys.slice(from, lo)
  }

  /** The first place whose key is not below `key`. */
  private lowerBound(key: string): number {
    let lo = 0
    let hi = this.keys.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.keys[mid]! < key) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}
