/** Memory probes for the retention scenario: resident size after a full GC, and GC pauses. */
import { PerformanceObserver } from 'node:perf_hooks'
import { setTimeout } from 'node:timers/promises'

export function rssAfterGc() {
  globalThis.gc()
  return process.memoryUsage().rss
}

/**
 * Starts recording GC pauses; the returned `stop()` resolves to those that began before it was
 * called. Node turns each GC into an entry from a native immediate and hands entries to observers
 * on a later turn still, so a loop that only awaits microtasks sees none until it yields twice.
 */
export function watchGcPauses() {
  const entries = []
  const observer = new PerformanceObserver((list) => entries.push(...list.getEntries()))
  observer.observe({ entryTypes: ['gc'] })
  const from = performance.now()
  return async () => {
    const to = performance.now()
    await setTimeout(10)
    await setTimeout(10)
    observer.disconnect()
    const pauses = entries.filter((e) => e.startTime >= from && e.startTime <= to).map((e) => e.duration)
    return {
      max_gc_pause_ms: Math.round(Math.max(0, ...pauses) * 100) / 100,
      gc_pauses: pauses.length,
      gc_total_ms: Math.round(pauses.reduce((a, b) => a + b, 0)),
    }
  }
}
