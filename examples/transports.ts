// Channels across processes through Redis Streams. Run by test/examples.test.ts on both engines
// against the test server (scripts/servers.sh, port 16379; ORRERY_REDIS_URL names another); the
// region is the code block of docs/transports.md. Two Orrery instances stand for two processes.
import assert from 'node:assert/strict'
import { isOrreryError, Orrery, type Delivery } from 'orrery'

const url = process.env['ORRERY_REDIS_URL'] ?? 'redis://127.0.0.1:16379'
// The example needs a server; a test run without servers says so and has nothing to show.
if (process.env['ORRERY_SERVERS'] === 'none') process.exit(0)
const prefix = `example-${process.pid}-${Date.now().toString(36)}.`

// #region transports
const options = {
  transports: { main: { kind: 'redis', url, keyPrefix: prefix } },
  bindings: { orders: 'main', 'jobs.*': 'main' }, // exact names, or a prefix ending in '*'
} as const
const billing = await Orrery.create(options) // connects: TRANSPORT_UNAVAILABLE / TRANSPORT_AUTH if not
const shipping = await Orrery.create(options) // another process, as far as Redis can tell

assert.equal(billing.bus.binding('orders')?.kind, 'redis')
assert.equal(billing.bus.binding('audit'), undefined) // unbound: this process only

// Each process reads the shared stream into its own subscribers.
const seen: string[] = []
shipping.bus.subscribe<{ sku: string }>('orders').subscribe((m) => seen.push(m.payload.sku))
// A consumer group is shared: each job goes to one member, in whichever process.
const done: string[] = []
for (const o of [billing, shipping]) {
  o.bus.group<string>('jobs.email', 'senders', { from: 'earliest' }).consume((d: Delivery<string>) => {
    done.push(d.message.payload)
  })
}

await billing.bus.publish('orders', { sku: 'A-1' }) // resolves once Redis has it
await billing.bus.publishBatch(['a', 'b', 'c'].map((to) => ({ channel: 'jobs.email', payload: to })))

// Requests cross too: the reply comes back to the requesting process.
shipping.bus.respond<{ sku: string }, number>('jobs.stock', (req) => (req.payload.sku === 'A-1' ? 3 : 0), { group: 'stock' })
assert.equal((await billing.bus.request<number>('jobs.stock', { sku: 'A-1' })).payload, 3)

// What Redis Streams cannot carry is refused at the call, before anything is sent.
await assert.rejects(billing.bus.publish('orders', {}, { priority: 'high' }), (err) => isOrreryError(err, 'CAPABILITY_UNSUPPORTED'))

while (seen.length < 1 || done.length < 3) await new Promise((r) => setTimeout(r, 10))
assert.deepEqual(seen, ['A-1'])
assert.deepEqual(done.sort(), ['a', 'b', 'c'])

// A graceful stop hands back what a process holds, waits for its writes and disconnects;
// with drainMs, the handlers running finish first (for at most that long) while nothing new is read.
assert.deepEqual(await billing.shutdown({ drainMs: 5_000 }), { graceful: true, errors: [] })
await shipping.shutdown()
// #endregion
