// "Play with a mesh in the browser": the demo makes an Orrery, a mesh and workflows in the page on
// the wasm engine and shows them live through an in-page Control; every tab loads without a
// console error, and a signal sent from the run's page lets its run finish.
import type { Browser, Page } from 'playwright'
import { afterAll, beforeAll, expect, it } from 'vitest'

import { type Dashboard, launch, listRows, openPage, serveDashboard, shot } from './page.js'

let dashboard: Dashboard
let browser: Browser
let page: Page
let errors: string[]
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
  await expect.poll(() => listRows(page, 'agents'), { timeout: 20_000 }).toHaveLength(9)
  await expect.poll(() => page.locator('[data-agent="summarizer-1"] .badge').first().textContent()).toBe('running')
  await shot(page, 'demo-agents')
  // Pausing one from its row: the in-page Control pauses it, and the row says so.
  await page.getByTestId('pause-scorer-1').click()
  await expect.poll(() => page.locator('[data-agent="scorer-1"] .badge').first().textContent()).toBe('paused')
  await page.getByTestId('resume-scorer-1').click()
  await expect.poll(() => page.locator('[data-agent="scorer-1"] .badge').first().textContent()).toBe('running')
  expect(errors).toEqual([])
})

it('charts the channels and lists the dead letters the bad orders made', async () => {
  await page.locator('[data-tab="channels"]').click()
  await expect.poll(() => page.getByTestId('channels').textContent()).toMatch(/orders/)
  // Two samples at least, a second apart, before the lines show.
  await page.waitForTimeout(3000)
  await expect.poll(() => page.locator('[data-testid="throughput"] canvas').count()).toBe(1)
  await shot(page, 'demo-channels')
  await page.locator('[data-tab="dead letters"]').click()
  await expect.poll(() => page.getByTestId('dead-letter').textContent(), { timeout: 10_000 }).toMatch(/empty sku|payment service refused it/)
  await shot(page, 'demo-dead-letters')
  expect(errors).toEqual([])
})

it('signals a waiting run from its page, which then completes', async () => {
  await page.locator('[data-tab="runs"]').click()
  await page.locator('[data-run="review-1"]').click()
  await expect.poll(() => page.locator('[data-node="review"]').getAttribute('data-status'), { timeout: 15_000 }).toBe('running')
  await expect.poll(() => page.getByTestId('signal-name').inputValue()).toBe('approve')
  await page.getByTestId('signal-payload').fill('{"by": "playwright"}')
  await shot(page, 'demo-run-waiting')
  await page.getByTestId('signal').click()
  await expect.poll(() => page.locator('[data-node="publish"]').getAttribute('data-status'), { timeout: 10_000 }).toBe('completed')
  await expect.poll(() => page.locator('[data-run="review-1"] .badge').textContent()).toBe('completed')
  await shot(page, 'demo-run-done')
  await page.locator('[data-tab="store"]').click()
  await expect.poll(() => page.getByTestId('entries').textContent()).toMatch(/greeting/)
  await page.locator('[data-tab="overview"]').click()
  await expect.poll(() => page.locator('.card-value').first().textContent()).toBe('wasm')
  await shot(page, 'demo-overview')
  expect(errors).toEqual([])
}, 40_000)
