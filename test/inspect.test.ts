/** What users see when they print Orrery's objects: their fields, not frames or internals. */
import { inspect } from 'node:util'
import { firstValueFrom } from 'rxjs'
import { describe, expect, it, vi } from 'vitest'

import { Orrery, type Delivery } from '../ts/node.js'
import { ENGINE } from './engine.js'

describe(`printing (${ENGINE})`, () => {
  it('a message prints and serialises its fields, never its frame', async () => {
    const orrery = await Orrery.create()
    const got = firstValueFrom(orrery.bus.subscribe<{ sku: string }>('orders'))
    await orrery.bus.publish('orders', { sku: 'A-1' }, { sender: 'shop', id: 'order-1', headers: { region: 'eu' } })
    const message = await got
    const printed = inspect(message)
    expect(printed).toMatch(/^Message \{/)
    expect(printed).toContain("channel: 'orders'")
    expect(printed).toContain("id: 'order-1'")
    expect(printed).toContain("sender: 'shop'")
    expect(printed).toContain("sku: 'A-1'")
    expect(printed).not.toMatch(/bytes|Uint8Array|undecoded/)
    expect(JSON.parse(JSON.stringify(message))).toMatchObject({
      channel: 'orders',
      seq: 0,
      id: 'order-1',
      sender: 'shop',
      headers: { region: 'eu' },
      payload: { sku: 'A-1' },
      codec: 'json',
    })
    // Depth is honoured: nested inside a deep structure it collapses to its name.
    expect(inspect({ a: { b: { c: message } } }, { depth: 2 })).toContain('[Message]')
    orrery.close()
  })

  it('publish results and deliveries print their fields', async () => {
    const orrery = await Orrery.create()
    const group = orrery.bus.group<number>('jobs', 'workers')
    const deliveries: Delivery<number>[] = []
    const member = group.join().subscribe((d) => deliveries.push(d))
    const result = await orrery.bus.publish('jobs', 7, { id: 'job-7' })
    expect(inspect(result)).toBe("PublishResult { id: 'job-7', published: true }")
    expect(JSON.stringify(result)).toBe('{"id":"job-7","published":true}')
    const batch = await orrery.bus.publishBatch([{ channel: 'jobs', payload: 8, options: { id: 'job-8' } }])
    expect(inspect(batch)).toBe("Published { ids: [ 'job-8' ], published: 1 }")
    await vi.waitFor(() => expect(deliveries.length).toBe(2))
    const delivery = deliveries[0]!
    const printed = inspect(delivery, { depth: 4 })
    expect(printed).toMatch(/^Delivery \{/)
    expect(printed).toContain("group: 'workers'")
    expect(printed).toContain('attempt: 1')
    expect(printed).toContain('settled: false')
    expect(printed).toContain("id: 'job-7'")
    delivery.ack()
    expect(JSON.parse(JSON.stringify(delivery))).toMatchObject({ group: 'workers', channel: 'jobs', settled: true, message: { payload: 7 } })
    // Printing never throws, even once the group is gone.
    const second = deliveries[1]!
    group.delete()
    expect(inspect(second)).toMatch(/^Delivery \{/)
    member.unsubscribe()
    orrery.close()
  })

  it('a store entry prints its fields and stamp', async () => {
    const store = await Orrery.openStore()
    const ns = store.namespace('agents')
    ns.put('a1', { load: 1 })
    const entry = ns.get('a1')!
    const printed = inspect(entry)
    expect(printed).toMatch(/^Entry \{/)
    expect(printed).toContain("key: 'a1'")
    expect(printed).toContain('load: 1')
    expect(printed).toMatch(/stamp: \{ wall: \d+, logical: \d+, writer: '[^']+' \}/)
    expect(JSON.parse(JSON.stringify(entry))).toMatchObject({ key: 'a1', value: { load: 1 }, version: entry.version })
    store.close()
  })
})
