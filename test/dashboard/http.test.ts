// The dashboard against a real HTTP API: an Orrery in this process (the project's engine) with a
// mesh, a consumer group and a waiting run, its Control served by serveHttp, and the dashboard
// (from its sources, /v1 proxied to the API so the page and the API share an origin) in
// chromium. Every click is checked through the Control, not only in the page.
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

import type { Browser } from 'playwright'
import { afterAll, beforeAll, expect, it, vi } from 'vitest'

import { serveHttp } from '../../ts/http/index.js'
import { Agent, type AgentContext, type Control, Orrery, sequence, step, waitFor, workflow } from '../../ts/node.js'
import { type Dashboard, launch, listRows, openPage, serveDashboard, shot } from './page.js'

class Echo extends Agent {
  static capabilities = [{ name: 'echo', version: '1.0.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle('echo', (text: string) => text)
  }
}

const approval = workflow(
  'approval',
  sequence(step('draft', { fn: 'draft' }, { input: '$input' }), waitFor('review', 'approve'), step('ship', { fn: 'ship' }, { input: '$steps.review' })),
)

const ADMIN = 'admin-token-0123456789'
const READER = 'reader-token-0123456789'

let orrery: Orrery
let control: Control
let api: { url: string; close(): Promise<void> }
let dashboard: Dashboard
let browser: Browser

beforeAll(async () => {
  orrery = await Orrery.create()
  const mesh = await orrery.mesh()
  mesh.define('echo', Echo)
  await mesh.spawn('echo', { replicas: 2 })
  const wf = await orrery.workflows({ mesh })
  wf.register('draft', (topic: string) => `on ${topic}`)
  wf.register('ship', (review: { by: string }) => `shipped, approved by ${review.by}`)
  wf.define(approval)
  const run = await wf.start(approval, 'dashboards', { id: 'approval-1' })
  while (run.state().waiting.length === 0) await new Promise((r) => setTimeout(r, 5))
  // One bad order, dead-lettered at once.
  orrery.bus.group<{ sku: string }>('orders', 'billing').consume(
    (d) => {
      if (d.message.payload.sku === '') throw new Error('empty sku')
    },
    { isPermanent: () => true },
  )
  await orrery.bus.publish('orders', { sku: '' })
  control = orrery.control({ mesh, workflows: wf })
  await vi.waitFor(async () => expect(await control.deadLetters('orders')).toHaveLength(1))
  api = await serveHttp(control, { tokens: { [ADMIN]: ['admin'], [READER]: ['read'] }, port: 0 })
  dashboard = await serveDashboard({ api: api.url })
  browser = await launch()
}, 60_000)

afterAll(async () => {
  await browser?.close()
  await dashboard?.close()
  await api?.close()
  control?.close()
  orrery?.close()
})

it("refuses a wrong token on the start page, with the API's code", async () => {
  const { page, errors } = await openPage(browser, `${dashboard.url}#token=wrong`)
  await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/^UNAUTHORIZED: /)
  expect(await page.locator('.app').count()).toBe(0)
  await shot(page, 'http-wrong-token')
  // The 401 itself is logged by chromium as a failed resource; nothing else is.
  expect(errors.filter((e) => !/401/.test(e))).toEqual([])
  await page.close()
})

it('never sends a kept token by itself to an API a link names on another origin', async () => {
  // A server that would take any token: it records the authorization headers it is sent.
  const seen: string[] = []
  const other = createServer((req, res) => {
    seen.push(req.headers.authorization ?? '')
    res.writeHead(200, {
      'access-control-allow-origin': '*',
      'access-control-allow-headers': 'authorization, content-type',
      'content-type': 'application/json',
    })
    res.end('{}')
  })
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve))
  const port = (other.address() as AddressInfo).port
  try {
    const { page } = await openPage(browser, `${dashboard.url}?tab=agents#token=${ADMIN}`)
    await expect.poll(() => listRows(page, 'agents'), { timeout: 20_000 }).toHaveLength(2)
    // The same tab (its session keeps the token) follows a link to the page naming another API.
    await page.goto(`${dashboard.url}?api=${encodeURIComponent(`http://127.0.0.1:${port}`)}`)
    await page.waitForTimeout(500)
    expect(seen.filter((h) => h.includes(ADMIN))).toEqual([])
    await page.close()
  } finally {
    other.close()
  }
})

it('pauses and resumes an agent over HTTP', async () => {
  const { page, errors } = await openPage(browser, `${dashboard.url}?tab=agents#token=${ADMIN}`)
  await expect.poll(() => listRows(page, 'agents'), { timeout: 20_000 }).toHaveLength(2)
  await page.getByTestId('pause-echo-1').click()
  await expect.poll(() => control.agent('echo-1').state).toBe('paused')
  await expect.poll(() => page.locator('[data-agent="echo-1"] .badge').first().textContent()).toBe('paused')
  await shot(page, 'http-agents-paused')
  await page.getByTestId('resume-echo-1').click()
  await expect.poll(() => control.agent('echo-1').state).toBe('running')
  expect(errors).toEqual([])
  await page.close()
})

it('a read-only token sees the refusal beside the button, and nothing changes', async () => {
  const { page } = await openPage(browser, `${dashboard.url}?tab=agents#token=${READER}`)
  await page.getByTestId('pause-echo-2').click({ timeout: 20_000 })
  await expect.poll(() => page.locator('[data-agent="echo-2"] [role="alert"]').textContent()).toMatch(/^FORBIDDEN: /)
  expect(control.agent('echo-2').state).toBe('running')
  await page.close()
})

it('replays a dead letter over HTTP: settled, and published again on its channel', async () => {
  const { page, errors } = await openPage(browser, `${dashboard.url}?tab=dead%20letters#token=${ADMIN}`)
  const [letter] = await control.deadLetters('orders')
  await expect.poll(() => page.getByTestId('dead-letter').textContent(), { timeout: 20_000 }).toMatch(/empty sku/)
  const before = orrery.bus.stats('orders').published
  await page.getByTestId('replay').click()
  await expect.poll(async () => (await control.deadLetters('orders')).map((d) => d.seq)).not.toContain(letter!.seq)
  expect(orrery.bus.stats('orders').published).toBe(before + 1)
  await shot(page, 'http-dead-letter-replayed')
  expect(errors).toEqual([])
  await page.close()
})

it('signals a waiting run over HTTP, and tails a channel over server-sent events', async () => {
  const { page, errors } = await openPage(browser, `${dashboard.url}?tab=runs#token=${ADMIN}`)
  await page.locator('[data-run="approval-1"]').click({ timeout: 20_000 })
  await expect.poll(() => page.getByTestId('signal-name').inputValue()).toBe('approve')
  await page.getByTestId('signal-payload').fill('{"by": "ana"}')
  await page.getByTestId('signal').click()
  await expect.poll(() => control.run('approval-1').status).toBe('completed')
  expect(control.run('approval-1').state.output).toBe('shipped, approved by ana')
  await expect.poll(() => page.locator('[data-node="ship"]').getAttribute('data-status'), { timeout: 10_000 }).toBe('completed')
  await shot(page, 'http-run-signalled')

  await page.locator('[data-tab="channels"]').click()
  // The control's own group keeping the dead letters is counted by the bus, not in the table.
  expect(orrery.bus.stats('orders.dead-letter').groups).toBe(1)
  await expect
    .poll(() => page.locator('[data-testid="channels"] tr', { hasText: 'orders.dead-letter' }).locator('[data-col="groups"]').textContent(), {
      timeout: 10_000,
    })
    .toBe('0')
  await page.locator('[data-testid="channels"] tr', { hasText: 'orders' }).first().getByRole('button', { name: 'tail' }).click()
  await page.waitForTimeout(300)
  await orrery.bus.publish('orders', { sku: 'LIVE-1' })
  await expect.poll(() => page.getByTestId('tail').textContent(), { timeout: 10_000 }).toMatch(/LIVE-1/)
  await expect.poll(() => page.locator('[data-testid="throughput"] canvas').count(), { timeout: 10_000 }).toBe(1)
  await shot(page, 'http-channels-tail')
  expect(errors).toEqual([])
  await page.close()
}, 40_000)
