/**
 * The demo shop `orrery serve` and the dashboard's page run (ts/demo/shop.ts), on this project's
 * engine, in Node and in a page: traffic, dead letters, runs that complete, one that is compensated,
 * one that waits for a person, a restock that fans out; and nothing left running once stopped.
 */
import { afterEach, describe, expect, it } from 'vitest'

import { type Demo, type DemoOrder, startDemo } from '../ts/demo/shop.js'
import { isOrreryError, Orrery } from '../ts/node.js'
import { ENGINE } from './engine.js'

const until = async (what: string, ok: () => boolean, ms = 10_000) => {
  const end = Date.now() + ms
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

describe(`the demo shop (${ENGINE})`, () => {
  let orrery: Orrery | undefined
  let demo: Demo | undefined
  afterEach(async () => {
    await demo?.stop()
    orrery?.close()
    demo = undefined
    orrery = undefined
  })

  it('keeps every view busy: agents, traffic, dead letters and runs in each state', async () => {
    orrery = await Orrery.create({ engine: ENGINE })
    demo = await startDemo(orrery, { tickMs: 10, runEveryMs: 30, approveAfterMs: 10 })
    const { bus } = orrery
    const wf = demo.workflows
    const byStatus = (status: string) => wf.list({ status: status as 'running' }).length

    await until(
      'a completed run, a compensated run and dead letters',
      () => byStatus('completed') >= 2 && byStatus('compensated') >= 1 && bus.stats('orders.dead-letter').retained >= 1,
    )
    // Every third run waits for a person: still running, its approval unsent.
    const waiting = wf.get('order-3')!
    expect(waiting.status()).toBe('running')
    expect(waiting.history().some((e) => e.type === 'signal')).toBe(false)
    waiting.signal('approve', { by: 'test' })
    expect(await waiting.result()).toEqual({ tracking: expect.stringMatching(/^courier-\d:order-3$/) })
    // Every fifth ships to nowhere: the charge is refunded.
    const fifth = wf.get('order-5')!
    await expect(fifth.result()).rejects.toSatisfy((e) => isOrreryError(e, 'STEP_FAILED'))
    expect(fifth.status()).toBe('compensated')
    expect(fifth.history().some((e) => e.type === 'compensated' && e.step === 'charge' && e.ok)).toBe(true)

    // The billing group dead-letters the orders without a sku, saying why.
    for await (const dead of bus.subscribe<DemoOrder>('orders.dead-letter', { from: 'earliest' })) {
      expect(dead.payload.sku).toBe('')
      expect(dead.headers['x-orrery-dead-letter-reason']).toMatch(/no sku/)
      break
    }
    expect(bus.group('orders', 'billing').stats().acked).toBeGreaterThan(0)
    expect(bus.stats('shipments').retained).toBeGreaterThan(0)

    // Five agents of three types; courier-2 reports itself degraded.
    const agents = demo.mesh.agents().map((a) => a.id)
    expect(agents.sort()).toEqual(['courier-1', 'courier-2', 'pricer-1', 'pricer-2', 'stock-1'])
    await until('courier-2 degraded', () => demo?.mesh.registry.find({ capability: 'ship' }).find((a) => a.id === 'courier-2')?.health === 'degraded')
    expect(demo.store.namespace<number>('stock').keys().length).toBeGreaterThan(0)
  })

  it('restocks each sku listed, one forEach instance each', async () => {
    orrery = await Orrery.create({ engine: ENGINE })
    demo = await startDemo(orrery, { tickMs: 1_000, runEveryMs: 60_000 })
    const stock = demo.store.namespace<number>('stock')
    const before = stock.get('rug')?.value ?? 0
    const run = await demo.workflows.start('restock', ['rug', 'lamp'], { id: 'restock-1' })
    expect(await run.result()).toEqual([
      { sku: 'rug', left: before + 100 },
      { sku: 'lamp', left: expect.any(Number) },
    ])
    expect(stock.get('rug')?.value).toBe(before + 100)
    const bad = await demo.workflows.start('restock', ['rug', ''], { id: 'restock-2' })
    await expect(bad.result()).rejects.toSatisfy((e) => isOrreryError(e, 'STEP_FAILED'))
  })

  it('stops everything it started, and leaves the Orrery open', async () => {
    orrery = await Orrery.create({ engine: ENGINE })
    demo = await startDemo(orrery, { tickMs: 10, runEveryMs: 20 })
    await until('some orders', () => (demo?.counts().orders ?? 0) >= 3)
    await demo.stop()
    const after = demo.counts()
    const published = orrery.bus.stats('orders').published
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(demo.counts()).toEqual(after)
    expect(orrery.bus.stats('orders').published).toBe(published)
    expect(demo.mesh.agents().map((a) => a.state)).toEqual(['stopped', 'stopped', 'stopped', 'stopped', 'stopped'])
    await orrery.bus.publish('after', 1) // the Orrery is still usable
  })

  it('refuses bad options before starting anything', async () => {
    orrery = await Orrery.create({ engine: ENGINE })
    await expect(startDemo(orrery, { tickMs: 0 })).rejects.toSatisfy((e) => isOrreryError(e, 'INVALID_OPTION'))
    await expect(startDemo(orrery, { every: 5 } as never)).rejects.toSatisfy((e) => isOrreryError(e, 'INVALID_OPTION'))
    expect(orrery.bus.stats('orders').published).toBe(0)
  })
})
