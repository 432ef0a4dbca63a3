/** What a contender's round is made of: a time box, and per-operation latencies. */

/** A round that calls `step()` (resolving to messages done) until `ms` have passed. */
export function timeBoxed(step, ms, latencies) {
  return async () => {
    latencies?.reset()
    const start = performance.now()
    let now = start
    let msgs = 0
    while (now - start < ms) {
      msgs += await step()
      now = performance.now()
    }
    return { msgs, ms: now - start, p99_us: latencies ? latencies.p99Micros() : null }
  }
}

/** Per-operation latencies of one round, in ns, kept unboxed so recording does not feed the GC. */
export class Latencies {
  samples = new Float64Array(1 << 16)
  count = 0

  record(ns) {
    if (this.count === this.samples.length) {
      const grown = new Float64Array(this.samples.length * 2)
      grown.set(this.samples)
      this.samples = grown
    }
    this.samples[this.count++] = ns
  }

  reset() {
    this.count = 0
  }

  p99Micros() {
    if (this.count === 0) return null
    const sorted = this.samples.slice(0, this.count).sort()
    return Math.round(sorted[Math.ceil(this.count * 0.99) - 1] / 10) / 100
  }
}
