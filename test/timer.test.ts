/**
 * The one deadline timer the bus, the store and the registry arm for their core's next deadline:
 * an earlier deadline re-arms it, a later one leaves it, cancel disarms it, and it fires once.
 */
import { describe, expect, it } from 'vitest'
import { DeadlineTimer } from '../ts/timer.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
/** Waits (up to 2 s, for a loaded machine) until `done()` holds. */
async function until(done: () => boolean): Promise<void> {
  for (let waited = 0; !done(); waited += 5) {
    if (waited > 2_000) throw new Error('timed out')
    await sleep(5)
  }
}

describe('DeadlineTimer', () => {
  it('fires once at the earliest deadline it was armed for; a later one leaves it armed', async () => {
    const fired: number[] = []
    const timer = new DeadlineTimer(Date.now, () => fired.push(Date.now()), true)
    const start = Date.now()
    timer.arm(start + 200)
    timer.arm(start + 20) // earlier: re-arms
    timer.arm(start + 100) // later than the armed one: no change
    await until(() => fired.length === 1)
    expect(fired[0]! - start).toBeGreaterThanOrEqual(15) // timers may round a millisecond or so early
    expect(fired[0]! - start).toBeLessThan(200)
    await sleep(start + 300 - Date.now())
    expect(fired).toHaveLength(1) // the replaced 200 ms timer never fires
  })

  it('arms nothing for Infinity, arms again after firing, and cancel disarms', async () => {
    let fired = 0
    const timer = new DeadlineTimer(Date.now, () => fired++, false)
    timer.arm(Infinity)
    await sleep(20)
    expect(fired).toBe(0)
    timer.arm(Date.now() + 5)
    await until(() => fired === 1)
    timer.arm(Date.now() + 5) // once fired, any deadline arms it again
    await until(() => fired === 2)
    timer.arm(Date.now() + 10)
    timer.cancel()
    await sleep(40)
    expect(fired).toBe(2)
  })

  it('a deadline already past fires at once, on the next turn', async () => {
    let fired = 0
    const timer = new DeadlineTimer(Date.now, () => fired++, true)
    timer.arm(Date.now() - 1_000)
    expect(fired).toBe(0)
    await until(() => fired === 1)
  })
})
