/**
 * One timer for a core's next deadline. The bus, the store and the registry each keep their
 * deadlines in the core and arm one of these for the earliest: a later deadline leaves an
 * earlier timer armed, an earlier one re-arms it.
 */
import { MAX_TIMER_MS } from './check.js'

export class DeadlineTimer {
  private timer: ReturnType<typeof setTimeout> | undefined
  /** When the armed timer fires (on the owner's clock); Infinity when none is armed. */
  private at = Infinity
  /** Whether the armed timer was let go of (unref'd) by `release`. */
  private released = false

  /**
   * @param now the owner's clock (ms), the one its deadlines are on
   * @param fire runs when the deadline comes (the owner re-arms from it for what comes next)
   * @param keepAlive whether the timer keeps Node running: pending work does (a retry, a
   *   request's timeout), housekeeping does not (a TTL expiry)
   */
  constructor(
    private readonly now: () => number,
    private readonly fire: () => void,
    private readonly keepAlive: boolean,
  ) {}

  /** Arms for `at` unless a timer as early is armed already; `Infinity` is no deadline. */
  arm(at: number): void {
    if (at === Infinity) return
    if (at >= this.at) {
      // A released timer holds the process again: it now stands for pending work.
      if (this.released) this.hold(true)
      return
    }
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.at = at
    // setTimeout fires at once past 2^31 - 1 ms; the owner's re-arm after an early wake covers the rest.
    this.timer = setTimeout(this.fired, Math.min(MAX_TIMER_MS, Math.max(0, at - this.now())))
    this.released = false
    if (!this.keepAlive) (this.timer as { unref?: () => void }).unref?.()
  }

  /**
   * Lets the process exit while the armed timer waits: the work it was armed for has settled
   * (a request answered before its timeout) and the owner's core has no deadline left. The
   * timer stays armed (re-arming after every settled request would cost a setTimeout each);
   * when it fires, the owner finds nothing due. A later `arm` holds the process again.
   */
  release(): void {
    if (this.timer !== undefined && this.keepAlive && !this.released) this.hold(false)
  }

  private hold(keep: boolean): void {
    this.released = !keep
    const timer = this.timer as { ref?: () => void; unref?: () => void } | undefined
    if (keep) timer?.ref?.()
    else timer?.unref?.()
  }

  /** Disarms; a later `arm` arms again. */
  cancel(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.released = false
    this.at = Infinity
  }

  private readonly fired = (): void => {
    this.timer = undefined
    this.released = false
    this.at = Infinity
    this.fire()
  }
}
