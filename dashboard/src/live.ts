/**
 * Live views without a re-render per event: events only mark the views stale, and a stale view
 * fetches again at most once per animation frame and once per `minGapMs`, however many events came
 * (a busy mesh sends thousands a second). A view also fetches on a timer, for what sends no event
 * (channel counters, heartbeats), and never twice at once.
 */
import { useEffect, useRef, useState } from 'preact/hooks'

import type { ControlClient } from './client.js'
import { explain } from './ui.js'

type Listener = () => void

/** One events feed per client, shared by every view on screen. */
export class LiveHub {
  private readonly listeners = new Set<Listener>()
  private scheduled = false
  private stop: (() => void) | undefined
  /** Events seen, for the header. */
  events = 0
  error: string | undefined

  constructor(readonly client: ControlClient) {
    if (client.readOnly) return
    this.stop = client.events(
      () => {
        this.events++
        this.schedule()
      },
      (e) => {
        this.error = e instanceof Error ? e.message : String(e)
      },
    )
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /** Marks every view stale (after an action here, or an event). */
  schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    requestAnimationFrame(() => {
      this.scheduled = false
      for (const l of this.listeners) l()
    })
  }

  close(): void {
    this.stop?.()
    this.listeners.clear()
  }
}

export interface Live<T> {
  data: T | undefined
  error: string | undefined
  /** Fetch again now (after an action). */
  reload: () => void
}

/**
 * `load()` now, again when the hub says so (no sooner than `minGapMs` after the last one ended)
 * and every `intervalMs` (0: never); `deps` restart it.
 */
export function useLive<T>(hub: LiveHub, load: () => Promise<T>, deps: readonly unknown[], options: { intervalMs?: number; minGapMs?: number } = {}): Live<T> {
  const { intervalMs = hub.client.readOnly ? 0 : 2000, minGapMs = 250 } = options
  const [state, setState] = useState<{ data: T | undefined; error: string | undefined }>({ data: undefined, error: undefined })
  const reloadRef = useRef<() => void>(() => {})
  useEffect(() => {
    let alive = true
    let busy = false
    let again = false
    let lastEnd = 0
    let timer: ReturnType<typeof setTimeout> | undefined
    const run = () => {
      if (!alive) return
      if (busy) {
        again = true
        return
      }
      const wait = lastEnd + minGapMs - performance.now()
      if (wait > 0) {
        timer ??= setTimeout(() => {
          timer = undefined
          run()
        }, wait)
        return
      }
      busy = true
      load()
        .then(
          (data) => alive && setState({ data, error: undefined }),
          (e: unknown) => alive && setState((s) => ({ data: s.data, error: explain(e) })),
        )
        .finally(() => {
          busy = false
          lastEnd = performance.now()
          if (again) {
            again = false
            run()
          }
        })
    }
    reloadRef.current = () => {
      lastEnd = 0
      run()
    }
    run()
    const off = hub.subscribe(run)
    const interval = intervalMs > 0 ? setInterval(run, intervalMs) : undefined
    return () => {
      alive = false
      off()
      if (interval) clearInterval(interval)
      if (timer) clearTimeout(timer)
    }
  }, [hub, ...deps])
  return { ...state, reload: () => reloadRef.current() }
}
