import assert from 'node:assert/strict'
import { Orrery } from 'orrery'

const orrery = await Orrery.create() // the native engine in Node; ORRERY_ENGINE=wasm for WebAssembly
const { bus } = orrery

// A consumer group: each message on 'orders' goes to one member; resolving acks it.
const billed: string[] = []
const billing = bus.group<{ sku: string }>('orders', 'billing').consume((d) => { billed.push(d.message.payload.sku) })
await bus.publish('orders', { sku: 'A-1' })
await bus.publish('orders', { sku: 'B-2' })

// Request and reply: the reply is a message whose payload is the handler's result.
bus.respond<{ a: number; b: number }, number>('math.add', (req) => req.payload.a + req.payload.b)
const reply = await bus.request<number>('math.add', { a: 2, b: 3 })
assert.equal(reply.payload, 5)
assert.deepEqual(billed, ['A-1', 'B-2'])

// The store: versioned keys with compare-and-set.
const store = orrery.openStore()
const counters = store.namespace<number>('counters')
const v1 = counters.put('visits', 1)
counters.put('visits', 2, { ifVersion: v1 })
assert.equal(counters.get('visits')?.value, 2)

billing.stop()
store.close()
orrery.close()
