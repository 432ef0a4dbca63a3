/**
 * A run's trace as a waterfall: every attempt of every step (and child, delegate, compensation)
 * from its step-started to its step-completed, in start order, read from the history alone.
 */
import type { WorkflowEvent } from './views.js'

export interface Span {
  step: string
  /** The instance's index path inside iterations ('' outside). */
  path: string
  attempt: number
  compensation: boolean
  start: number
  /** Undefined while running (at the cursor). */
  end: number | undefined
  outcome: 'ok' | 'transient' | 'permanent' | undefined
}

export function spans(history: readonly WorkflowEvent[], runId: string): Span[] {
  const out: Span[] = []
  const open = new Map<number, Span>()
  for (const e of history) {
    if (e.type === 'step-started') {
      const base = `${runId}/${e.step}`
      const i = e.key.indexOf(base)
      const span: Span = {
        step: e.step,
        path: i >= 0 ? e.key.slice(i + base.length) : '',
        attempt: e.attempt,
        compensation: e.compensation,
        start: e.at,
        end: undefined,
        outcome: undefined,
      }
      out.push(span)
      open.set(e.token, span)
    } else if (e.type === 'step-completed') {
      const span = open.get(e.token)
      if (span) {
        span.end = e.at
        span.outcome = e.outcome
        open.delete(e.token)
      }
    }
  }
  return out
}
