/**
 * How refusals by a transport's `signing` reach the bus's events: a window of `REPORT_EVERY_MS` per
 * transport and reason. The first refusal of a window is reported at once; those that follow in it
 * are counted and reported together when it ends (the last one's channel and detail, with how
 * many), which opens the next window; a window that ends with nothing counted closes. So a steady
 * stream of refusals is one report every 5 s per reason, and none is left unreported for longer.
 */
import type { Refusal } from './driver.js'

/** What `bus.events` tells of messages a transport's `signing` refused. */
export interface RefusalReport {
  readonly transport: string
  readonly reason: Refusal
  /** The channel of the last one refused (undefined: a reply to no open request). */
  readonly channel: string | undefined
  /** How many were refused for this reason on this transport since the last report. */
  readonly count: number
  /** What was wrong with the last one. */
  readonly detail: string
}

/** Refusals of one transport and reason are reported at most this often; `stats` counts every one. */
export const REPORT_EVERY_MS = 5_000

/** One open window: what came since its report. */
interface Window {
  timer: ReturnType<typeof setTimeout>
  count: number
  channel: string | undefined
  detail: string
}

export class RefusalReports {
  private readonly windows = new Map<string, Window>()

  constructor(private readonly report: (report: RefusalReport) => void) {}

  /** One refused message: reported now if no window is open for its transport and reason, else at the window's end. */
  add(transport: string, reason: Refusal, channel: string | undefined, detail: string): void {
    const key = `${transport}\u0000${reason}`
    const open = this.windows.get(key)
    if (open !== undefined) {
      open.count++
      open.channel = channel
      open.detail = detail
      return
    }
    this.open(key, transport, reason)
    this.report({ transport, reason, channel, count: 1, detail })
  }

  private open(key: string, transport: string, reason: Refusal): void {
    const window: Window = {
      timer: setTimeout(() => {
        this.windows.delete(key)
        if (window.count === 0) return
        this.open(key, transport, reason)
        this.report({ transport, reason, channel: window.channel, count: window.count, detail: window.detail })
      }, REPORT_EVERY_MS),
      count: 0,
      channel: undefined,
      detail: '',
    }
    // A report still to come is no reason to keep a process alive (`stats` counted each one).
    ;(window.timer as { unref?: () => void }).unref?.()
    this.windows.set(key, window)
  }

  /** Reports what every open window counted (a graceful stop), and closes them. */
  flush(): void {
    const open = [...this.windows]
    this.close()
    for (const [key, w] of open) {
      if (w.count === 0) continue
      const [transport, reason] = key.split('\u0000') as [string, Refusal]
      this.report({ transport, reason, channel: w.channel, count: w.count, detail: w.detail })
    }
  }

  /** Drops every window unreported. */
  close(): void {
    for (const w of this.windows.values()) clearTimeout(w.timer)
    this.windows.clear()
  }
}
