// Consumer groups and dead letters. Run by test/examples.test.ts on both engines; the regions
// are the code blocks of docs/groups.md.
import assert from 'node:assert/strict'
import { Orrery } from 'orrery'

// #region consume
const orrery = await Orrery.create()
const { bus } = orrery

class InvalidOrder extends Error {}

// Each message on 'orders' goes to one member of 'billing'. Options are fixed at creation.
const billing = bus.group<{ sku: string }>('orders', 'billing', { visibilityTimeout: 30_000, maxDeliveries: 2 })
const charged: string[] = []
const consumer = billing.consume(
  (d) => {
    const { sku } = d.message.payload
    if (sku === '') throw new InvalidOrder('empty sku') // permanent: dead-lettered at once
    if (sku === 'FLAKY') throw new Error('payment service down') // transient: redelivered
    charged.push(sku) // returning (or resolving) acks the delivery
  },
  { maxInFlight: 16, retryDelay: 0, isPermanent: (e) => e instanceof InvalidOrder },
)
await bus.publish('orders', { sku: 'A-1' })
await bus.publish('orders', { sku: '' })
await bus.publish('orders', { sku: 'FLAKY' })
// #endregion

// #region dead-letters
// Dead letters go to '<channel>.dead-letter', an ordinary channel, with headers saying why.
const dead = []
for await (const m of bus.subscribe<{ sku: string }>('orders.dead-letter', { from: 'earliest' })) {
  dead.push({ sku: m.payload.sku, reason: m.headers['x-orrery-dead-letter-reason'], deliveries: m.headers['x-orrery-deliveries'], origin: m.headers['x-orrery-origin-channel'], seq: m.headers['x-orrery-origin-seq'] })
  if (dead.length === 2) break
}
assert.deepEqual(dead, [
  { sku: '', reason: 'empty sku', deliveries: '1', origin: 'orders', seq: '1' },
  { sku: 'FLAKY', reason: 'max-deliveries', deliveries: '2', origin: 'orders', seq: '2' },
])
assert.deepEqual(charged, ['A-1'])
const stats = billing.stats()
assert.equal(stats.acked, 1)
assert.equal(stats.deadLettered, 2)
assert.equal(stats.redelivered, 1)
consumer.stop()
// #endregion

// #region by-hand
// join() gives the deliveries themselves; settle each with ack() or nack().
const audit = bus.group<string>('events', 'audit')
const member = audit.join({ maxInFlight: 1 })
const attempts: number[] = []
const settled = new Promise<void>((resolve) => {
  member.subscribe((d) => {
    attempts.push(d.attempt)
    if (d.attempt === 1) d.nack({ delay: 10 }) // redelivered to a member after 10 ms
    else {
      d.ack()
      resolve()
    }
  })
})
await bus.publish('events', 'started')
await settled
assert.deepEqual(attempts, [1, 2])
assert.deepEqual(audit.pending(), []) // nothing held and unacked
// #endregion

// #region delete
// Deleting a group ends its members' streams and discards its backlog and unacked messages;
// the channel keeps its log. The handle is unusable afterwards (UNKNOWN_GROUP).
audit.delete()
billing.delete()
assert.equal(bus.stats('orders').retained, 3)
// #endregion

orrery.close()
