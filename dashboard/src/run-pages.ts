/**
 * A run's whole history from the Control's pages of it (`run(id, { historyFrom, historyLimit })`,
 * at most 10,000 events a page): time travel and the waterfall need every event, so a
 * 50,000-event run takes five requests. The state and the run's fields are the last page's.
 */
import type { RunDetail, WorkflowEvent } from './views.js'

export const HISTORY_PAGE = 10_000

export async function wholeRun(page: (from: number, limit: number) => Promise<RunDetail>): Promise<RunDetail> {
  let detail = await page(0, HISTORY_PAGE)
  const events: WorkflowEvent[] = [...detail.history]
  // A live run grows between pages: read on until a page comes back short.
  while (detail.history.length === HISTORY_PAGE && events.length < detail.historyTotal) {
    detail = await page(events.length, HISTORY_PAGE)
    events.push(...detail.history)
  }
  return { ...detail, history: events, historyTotal: Math.max(detail.historyTotal, events.length) }
}
