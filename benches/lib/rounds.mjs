/**
 * Measuring rounds. The machine is shared (2 cores, tests may run beside us), so the contenders
 * of a scenario run their rounds alternately, the order rotated each round: a burst of outside
 * load then slows one round of each contender instead of every round of one.
 */

/**
 * Runs `contenders` ([id, setup] pairs) in `rounds` interleaved rounds after `warmups` unmeasured
 * ones each. `setup()` resolves to `{ round, close }`: `round()` resolves to
 * `{ msgs, ms, p99_us, extra? }` and `close(total)` gets every message the contender sent (warm-ups
 * included) to check that all arrived, and returns extras for the results.
 *
 * A contender's result is its fastest round: outside load only ever slows a round down, so the
 * fastest is the closest to the uncontended cost. Every round's rate stays in
 * `extra.rounds_msgs_per_sec` to show the spread.
 */
export async function interleaved(contenders, { rounds, warmups }) {
  const live = []
  for (const [id, setup] of contenders) live.push({ id, ...(await setup()), total: 0, results: [] })
  const run = async (contender) => {
    globalThis.gc()
    const result = await contender.round()
    contender.total += result.msgs
    return result
  }
  for (const contender of live) {
    for (let w = 0; w < warmups; w++) await run(contender)
  }
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < live.length; i++) {
      const contender = live[(i + r) % live.length]
      contender.results.push(await run(contender))
    }
  }
  const out = {}
  for (const contender of live) {
    const extra = (await contender.close(contender.total)) ?? {}
    const rates = contender.results.map(({ msgs, ms }) => (msgs / ms) * 1000)
    const best = rates.indexOf(Math.max(...rates))
    out[contender.id] = {
      msgs_per_sec: Math.round(rates[best]),
      p99_us: contender.results[best].p99_us ?? null,
      extra: { ...extra, ...contender.results[best].extra, rounds_msgs_per_sec: rates.map(Math.round) },
    }
  }
  return out
}

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
