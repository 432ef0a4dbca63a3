// The bus: channels, publish, subscribe, replay, the delivery rules. Run by test/examples.test.ts
// on both engines; the regions are the code blocks of docs/bus.md.
import assert from 'node:assert/strict'
import { isOrreryError, Orrery, type Message } from 'orrery'

// #region publish
const orrery = await Orrery.create()
const { bus } = orrery

// A channel is created on first use; configure it to change its retention or dedup window.
bus.channel('orders', { retention: { maxCount: 1_000, maxAgeMs: 3_600_000 }, dedupWindowMs: 60_000 })

const first = await bus.publish('orders', { sku: 'A-1' }, { id: 'order-1', sender: 'shop' })
const again = await bus.publish('orders', { sku: 'A-1' }, { id: 'order-1' }) // same id within the window
assert.equal(first.published, true)
assert.equal(again.published, false) // a duplicate: not appended

// A batch is validated whole, then appended in one call: all or nothing.
const batch = await bus.publishBatch([
  { channel: 'orders', payload: { sku: 'B-2' } },
  { channel: 'orders', payload: { sku: 'C-3' }, options: { priority: 'high' } },
])
assert.equal(batch.published, 2)
// #endregion

// #region subscribe
// subscribe() returns a Stream: an rxjs Observable that is also an AsyncIterable.
const live: string[] = []
const subscription = bus.subscribe<{ sku: string }>('orders').subscribe((m) => live.push(m.payload.sku))
await bus.publish('orders', { sku: 'D-4' })
assert.deepEqual(live, ['D-4']) // the default start is 'latest': only what comes after subscribing
subscription.unsubscribe()

// Iterating pulls one message at a time (backpressure). Breaking out ends the subscription.
// A loop over a channel nobody publishes to waits forever, so publish before you wait.
const seen: Message<{ sku: string }>[] = []
for await (const m of bus.subscribe<{ sku: string }>('orders', { from: 'earliest' })) {
  seen.push(m)
  if (seen.length === 4) break
}
// Replay follows the delivery rule: higher priorities first, FIFO within a priority.
assert.deepEqual(seen.map((m) => m.payload.sku), ['C-3', 'A-1', 'B-2', 'D-4'])
assert.deepEqual(seen.map((m) => m.seq), [2, 0, 1, 3])
assert.equal(seen[1]?.sender, 'shop')
// #endregion

// #region from
// Where a subscriber starts: 'latest' (default), 'earliest', { seq } or { time }.
bus.channel('small', { retention: { maxCount: 2 } })
for (const n of [0, 1, 2, 3]) await bus.publish('small', n) // seqs 0 to 3; 2 and 3 are retained
const firstFrom = async (seq: number): Promise<number> => {
  for await (const m of bus.subscribe('small', { from: { seq } })) return m.seq // return ends the subscription
  throw new Error('the stream ended')
}
assert.equal(await firstFrom(3), 3)
assert.equal(await firstFrom(0), 2) // below the oldest retained message: starts there

// Past the head: starts with the next message published.
const past = bus.subscribe<number>('small', { from: { seq: 100 } })[Symbol.asyncIterator]()
const next = past.next()
await bus.publish('small', 4)
assert.equal((await next).value?.seq, 4)
await past.return?.()
// #endregion

// #region stats
const stats = bus.stats('orders')
assert.equal(stats.published, 4)
assert.equal(stats.duplicates, 1)
try {
  await bus.publish('orders', 'x'.repeat(11 << 20)) // over maxMessageBytes (default 10 MiB)
  assert.fail('published')
} catch (err) {
  assert.ok(isOrreryError(err, 'MESSAGE_TOO_LARGE')) // nothing was published
}
assert.equal(bus.stats('orders').published, 4)
// #endregion

orrery.close()
