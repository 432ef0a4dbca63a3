// "Play with a mesh in the browser": the demo shop `orrery serve` runs (ts/demo/shop.ts), made in the
// page on the wasm engine and shown live through an in-page Control; every tab loads without a
// console error, and a signal sent from the run's page lets its run finish.
import type { Browser, Page } from 'playwright'
import { afterAll, beforeAll, expect, it } from 'vitest'

import type { DemoHandles } from '../../dashboard/src/demo.js'

import { type Dashboard, launch, listRows, openPage, serveDashboard, shot } from './page.js'

let dashboard: Dashboard
let browser: Browser
let page: Page
let errors: string[]

/** Asks the page's own Control (the demo puts it on `window.orreryDemo`). */
const ask = <T>(question: (demo: DemoHandles) => T | Promise<T>): Promise<T> => page.evaluate(`(${question.toString()})(globalThis.orreryDemo)`) as Promise<T>
beforeAll(async () => {
  dashboard = await serveDashboard()
  browser = await launch()
  ;({ page, errors } = await openPage(browser, `${dashboard.url}?demo`))
}, 60_000)
afterAll(async () => {
  await browser?.close()
  await dashboard?.close()
})

it('starts a mesh in the page and shows its agents live', async () => {
  await page.locator('[data-tab="agents"]').click({ timeout: 30_000 })
  await expect.poll(() => listRows(page, 'agents'), { timeout: 20_000 }).toHaveLength(5)
  await expect.poll(() => page.locator('[data-agent="pricer-1"] .badge').first().textContent()).toBe('running')
  await shot(page, 'demo-agents')
  // Pausing one from its row: the in-page Control pauses it, and the row says so.
  await page.getByTestId('pause-pricer-2').click()
  await expect.poll(() => page.locator('[data-agent="pricer-2"] .badge').first().textContent()).toBe('paused')
  expect(await ask((d) => d.control.agent('pricer-2').state)).toBe('paused')
  await page.getByTestId('resume-pricer-2').click()
  await expect.poll(() => page.locator('[data-agent="pricer-2"] .badge').first().textContent()).toBe('running')
  expect(await ask((d) => d.control.agent('pricer-2').state)).toBe('running')
  expect(errors).toEqual([])
})

/** What the page's canvases have drawn since `recordDrawing` (a chart's tick labels are drawn, not in the DOM). */
const drawnText = (): Promise<string[]> => page.evaluate('globalThis.drawnText ?? []') as Promise<string[]>
const recordDrawing = (): Promise<unknown> =>
  page.evaluate(`(() => {
    const drawn = (globalThis.drawnText = [])
    const fill = CanvasRenderingContext2D.prototype.fillText
    CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
      drawn.push(String(text))
      return fill.call(this, text, ...rest)
    }
  })()`)

it('charts the channels and lists the dead letters the bad orders made', async () => {
  await recordDrawing()
  await page.locator('[data-tab="channels"]').click()
  await expect.poll(() => page.getByTestId('channels').textContent()).toMatch(/orders/)
  // Three samples, a second apart, before the lines show.
  await expect.poll(() => page.locator('[data-testid="throughput"] canvas').count(), { timeout: 10_000 }).toBe(1)
  await expect.poll(() => page.locator('[data-testid="lag"] canvas').count(), { timeout: 10_000 }).toBe(1)
  await page.waitForTimeout(1500)
  await shot(page, 'demo-channels')
  // The time axis reads whole seconds as HH:MM:SS (not ":58.500"); the value axes have no colon.
  const times = (await drawnText()).filter((t) => t.includes(':'))
  expect(times.length).toBeGreaterThan(0)
  for (const t of times) expect(t).toMatch(/^\d\d:\d\d(:\d\d)?$/)
  await page.locator('[data-tab="dead letters"]').click()
  await expect.poll(() => page.getByTestId('dead-letter').textContent(), { timeout: 10_000 }).toMatch(/no sku/)
  await shot(page, 'demo-dead-letters')
  // Replay the one shown: it leaves the Control's dead letters and is published on its origin again.
  const seq = Number(await page.locator('[data-testid="dead-letters"] .rowbtn.selected').getAttribute('data-seq'))
  const letter = await ask((d) => d.control.deadLetters('orders', { limit: 1000 }))
  const payload = letter.find((l) => l.seq === seq)?.payload as { id: string; sku: string }
  expect(payload.sku).toBe('')
  const from = await ask((d) => d.orrery.bus.stats('orders').nextSeq)
  await page.getByTestId('replay').click()
  await expect.poll(() => ask((d) => d.control.deadLetters('orders', { limit: 1000 }).then((l) => l.map((x) => x.seq)))).not.toContain(seq)
  // The page's functions run in the page: the seq goes in through the source text.
  const again = await page.evaluate(`globalThis.orreryDemo.control.messages('orders', { from: ${from}, limit: 1000 })`)
  const replayed = (again as { payload: unknown; headers: Record<string, string> }[]).filter((m) => JSON.stringify(m.payload) === JSON.stringify(payload))
  expect(replayed).toHaveLength(1)
  expect(replayed[0]!.headers['x-orrery-dead-letter-reason']).toBeUndefined()
  await expect.poll(() => page.locator(`[data-testid="dead-letters"] [data-seq="${seq}"]`).count()).toBe(0)
  // The control keeps those dead letters with a group of its own on the dead-letter channel: the
  // bus counts it, the channels table (Orrery's own groups left out) does not.
  expect(await ask((d) => d.orrery.bus.stats('orders.dead-letter').groups)).toBe(1)
  await page.locator('[data-tab="channels"]').click()
  const groupsOf = page.locator('[data-testid="channels"] tr', { hasText: 'orders.dead-letter' }).locator('[data-col="groups"]')
  await expect.poll(() => groupsOf.textContent()).toBe('0')
  expect(errors).toEqual([])
})

it('signals a waiting run from its page, which then completes', async () => {
  await page.locator('[data-tab="runs"]').click()
  // Every third fulfil-order run waits for a person: order-3 is the first.
  await expect.poll(() => page.locator('[data-run="order-3"]').count(), { timeout: 15_000 }).toBe(1)
  await page.locator('[data-run="order-3"]').click()
  await expect.poll(() => page.locator('[data-node="approval"]').getAttribute('data-status'), { timeout: 15_000 }).toBe('running')
  await expect.poll(() => page.getByTestId('signal-name').inputValue()).toBe('approve')
  await page.getByTestId('signal-payload').fill('{"by": "playwright"}')
  await shot(page, 'demo-run-waiting')
  await page.getByTestId('signal').click()
  await expect.poll(() => page.locator('[data-node="ship"]').getAttribute('data-status'), { timeout: 10_000 }).toBe('completed')
  await expect.poll(() => page.locator('[data-run="order-3"] .badge').textContent()).toBe('completed')
  expect(await ask((d) => d.control.run('order-3').state.nodes['approval']?.output)).toEqual({ by: 'playwright' })
  await shot(page, 'demo-run-done')
  // A run started from the form: the Control has it, and the page shows it.
  await page.getByTestId('start-definition').selectOption('restock')
  await page.getByTestId('start-input').fill('["lamp", "desk", "rug"]')
  await page.getByPlaceholder('run id (optional)').fill('from-the-page')
  await page.getByTestId('start-run').click()
  await expect.poll(() => ask((d) => d.control.run('from-the-page').status)).toBe('completed')
  expect(await ask((d) => d.control.run('from-the-page').state.nodes['restock']?.instances)).toHaveProperty('[2]')
  await expect.poll(() => page.locator('[data-run="from-the-page"] .badge').textContent()).toBe('completed')
  await page.locator('[data-tab="store"]').click()
  await expect.poll(() => page.getByTestId('entries').textContent()).toMatch(/lamp/)
  await page.locator('[data-tab="overview"]').click()
  await expect.poll(() => page.locator('.card-value').first().textContent()).toBe('wasm')
  // No shared mesh, so no process id: no process card (it used to read "—").
  expect(await page.locator('[data-card="process"]').count()).toBe(0)
  expect(await page.locator('.card-value').allTextContents()).not.toContain('—')
  expect(await page.locator('[data-card="groups"] .card-value').textContent()).toBe(String(await ask((d) => d.control.groups().length)))
  await shot(page, 'demo-overview')
  expect(errors).toEqual([])
}, 40_000)
