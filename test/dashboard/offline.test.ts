// The dashboard offline: an exported snapshot opened read-only, at the scale (10,000
// agents, a 50,000-event run), windowed lists keeping the DOM small, time travel over the history.
import type { Browser } from 'playwright'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { generateSnapshot, LONG_RUN } from '../../dashboard/src/generate.js'
import { type Dashboard, launch, listRows, openPage, serveDashboard, shot } from './page.js'

const big = generateSnapshot({ agents: 10_000, events: 50_000 })
const small = generateSnapshot({ agents: 12, events: 40 })

let dashboard: Dashboard
let browser: Browser
beforeAll(async () => {
  dashboard = await serveDashboard({ files: { '/big.json': big, '/small.json': small } })
  browser = await launch()
}, 60_000)
afterAll(async () => {
  await browser?.close()
  await dashboard?.close()
})

describe('a snapshot opened offline', () => {
  it('the generated run has the size the issue asks for', () => {
    expect(big.agents).toHaveLength(10_000)
    expect(big.runs[0]!.history.length).toBeGreaterThanOrEqual(49_990)
    expect(big.runs[0]!.state.status).toBe('completed')
  })

  it('shows 10,000 agents with a bounded DOM, and later rows on scrolling', async () => {
    const { page, errors } = await openPage(browser, `${dashboard.url}?snapshot=/big.json&tab=agents`)
    const list = page.getByTestId('agents')
    await expect.poll(() => listRows(page, 'agents'), { timeout: 30_000 }).not.toHaveLength(0)
    expect(await page.getByText('Agents (10,000)').count()).toBe(1)
    const first = await listRows(page, 'agents')
    expect(first.length).toBeLessThan(60)
    expect(first[0]).toBe(0)
    // Read-only: no pause, resume or stop.
    expect(await page.locator('[data-testid^="pause-"]').count()).toBe(0)
    await shot(page, 'offline-agents-top')
    await list.evaluate((el) => {
      el.scrollTop = el.scrollHeight
    })
    await expect.poll(async () => Math.max(...(await listRows(page, 'agents')))).toBe(9_999)
    expect((await listRows(page, 'agents')).length).toBeLessThan(60)
    await expect(page.locator('[data-agent="tool-09999"]').count()).resolves.toBe(1)
    await shot(page, 'offline-agents-bottom')
    // Filtering 10,000 rows answers at once.
    await page.getByPlaceholder('filter: id, type, health, tag').fill('tool-0999')
    const matching = big.agents.filter((a) => a.id.includes('tool-0999')).length
    await expect.poll(() => page.locator('[data-testid="agents"] .vrow').count()).toBe(matching)
    expect(matching).toBe(2)
    expect(errors).toEqual([])
    await page.close()
  }, 60_000)

  it('draws a 50,000-event run, its history windowed, and travels back through it', async () => {
    const { page, errors } = await openPage(browser, `${dashboard.url}?snapshot=/big.json&tab=runs`)
    await page.locator('[data-run="big"]').click({ timeout: 30_000 })
    await expect.poll(() => page.getByTestId('run-graph').locator('[data-node="process"]').getAttribute('data-status'), { timeout: 30_000 }).toBe('completed')
    const rows = await listRows(page, 'timeline')
    expect(rows.length).toBeGreaterThan(5)
    expect(rows.length).toBeLessThan(60)
    // The history at its end: the run finished.
    expect(Math.max(...rows)).toBe(big.runs[0]!.history.length - 1)
    const waterfall = await listRows(page, 'waterfall')
    expect(waterfall.length).toBeLessThan(60)
    await shot(page, 'offline-run-end')

    // Halfway back: the forEach is running, the report step not begun; the timeline follows.
    const half = Math.floor(big.runs[0]!.history.length / 2)
    await page.getByTestId('travel').fill(String(half))
    await expect.poll(() => page.locator('[data-node="each"]').getAttribute('data-status')).toBe('running')
    expect(await page.locator('[data-node="report"]').getAttribute('data-status')).toBe('pending')
    const around = await listRows(page, 'timeline')
    expect(around).toContain(half - 1)
    expect(around.length).toBeLessThan(60)
    await shot(page, 'offline-run-half')

    // Before the first event nothing has begun; after it (`started`) the first step is reached.
    await page.getByTestId('travel').fill('0')
    await expect.poll(() => page.locator('[data-node="fetch"]').getAttribute('data-status')).toBe('pending')
    await page.getByTestId('travel').fill('1')
    await expect.poll(() => page.locator('[data-node="fetch"]').getAttribute('data-status')).toBe('running')
    expect(await page.locator('[data-node="each"]').getAttribute('data-status')).toBe('pending')
    await shot(page, 'offline-run-start')
    expect(errors).toEqual([])
    await page.close()
  }, 60_000)

  it("keeps the runs' and a history's columns aligned when a row is longer than its column", async () => {
    const { page, errors } = await openPage(browser, `${dashboard.url}?snapshot=/small.json&tab=runs`)
    // A laptop's window: the history panel is about 480 px wide, less than its longest rows.
    await page.setViewportSize({ width: 1000, height: 800 })
    await page.locator(`[data-run="${LONG_RUN}"]`).click({ timeout: 30_000 })
    await expect.poll(() => listRows(page, 'timeline'), { timeout: 30_000 }).not.toHaveLength(0)
    await shot(page, 'offline-long-rows')
    /** Per row of a list: each cell's left and right edge, whether it is cut, and the row's right edge. */
    const cells = (testId: string, cell: string) =>
      page.locator(`[data-testid="${testId}"] .vrow ${cell}`).evaluateAll((rows) =>
        rows.map((row) => ({
          right: row.getBoundingClientRect().right,
          cells: Array.from(row.children).map((c) => ({
            left: c.getBoundingClientRect().left,
            right: c.getBoundingClientRect().right,
            cut: c.scrollWidth > c.clientWidth,
          })),
        })),
      )
    for (const [testId, cell] of [
      ['timeline', '.event'],
      ['runs', '.runs-grid'],
    ] as const) {
      const rows = await cells(testId, cell)
      expect(rows.length, testId).toBeGreaterThan(3)
      // Some rows are longer than their columns: cut, not pushing the next column along.
      expect(
        rows.some((r) => r.cells.some((c) => c.cut)),
        `${testId}: a cut cell`,
      ).toBe(true)
      for (const row of rows) {
        expect(
          row.cells.map((c) => Math.round(c.left)),
          testId,
        ).toEqual(rows[0]!.cells.map((c) => Math.round(c.left)))
        expect(Math.max(...row.cells.map((c) => c.right)), testId).toBeLessThanOrEqual(row.right + 0.5)
      }
    }
    // A cut summary is readable whole in its title.
    const summary = page.locator('[data-testid="timeline"] .summary', { hasText: `${LONG_RUN}/process` }).first()
    expect(await summary.getAttribute('title')).toBe(await summary.textContent())
    expect(errors).toEqual([])
    await page.close()
  }, 60_000)

  it('opens a snapshot file chosen on the start page, and refuses what is not one', async () => {
    const { page, errors } = await openPage(browser, dashboard.url)
    await page.getByTestId('snapshot-file').setInputFiles({ name: 'bad.json', mimeType: 'application/json', buffer: Buffer.from('{"agents": []}') })
    await expect(page.getByRole('alert').textContent()).resolves.toMatch(/not a snapshot: it has no at, overview/)
    await page.getByTestId('snapshot-file').setInputFiles({ name: 'small.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(small)) })
    await page.getByText('dead letters', { exact: true }).first().waitFor()
    await page.locator('[data-tab="dead letters"]').click()
    await expect.poll(() => page.getByTestId('dead-letter').textContent()).toMatch(/task 0 kept failing/)
    // Payloads read as JSON, and a snapshot offers no replay.
    expect(await page.getByTestId('replay').count()).toBe(0)
    await shot(page, 'offline-dead-letters')
    await page.locator('[data-tab="overview"]').click()
    await expect.poll(() => page.locator('.card-value').first().textContent()).toBe('wasm')
    // The snapshot's process (a shared mesh's id) has its card.
    expect(await page.locator('[data-card="process"] .card-value').textContent()).toBe('generated')
    await shot(page, 'offline-overview')
    expect(errors).toEqual([])
    await page.close()
  }, 60_000)
})
