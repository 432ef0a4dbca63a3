// A store namespace shared by processes through Redis. Run by test/examples.test.ts on both
// engines against the test server (scripts/servers.sh, port 16379; ORRERY_REDIS_URL names
// another); the regions are the code blocks of docs/store.md, "A namespace across processes".
// Two Orrery instances stand for two processes (each has its own process id on the broker).
import assert from 'node:assert/strict'
import { isOrreryError, Orrery } from 'orrery'

const url = process.env['ORRERY_REDIS_URL'] ?? 'redis://127.0.0.1:16379'
// The example needs a server; a test run without servers says so and has nothing to show.
if (process.env['ORRERY_SERVERS'] === 'none') process.exit(0)
const keyPrefix = `example-${process.pid}-${Date.now().toString(36)}:`
const name = (what: string) => `${what}-${process.pid}-${Date.now().toString(36)}`
const until = async (done: () => boolean) => {
  while (!done()) await new Promise((resolve) => setTimeout(resolve, 10))
}

// #region replicated
const options = { transports: { main: { kind: 'redis', url, keyPrefix } } } as const
const a = await Orrery.create(options) // one process...
const b = await Orrery.create(options) // ...and another, as far as Redis can tell
// Each process names its replica: stamps from two processes must never tie on one name.
const storeA = a.openStore({ replica: 'web-1' })
const storeB = b.openStore({ replica: 'web-2' })

interface Flag {
  on: boolean
}
// Replicated (the default): a namespace of the local store; its changes travel on the transport.
const flagsA = await storeA.shared<Flag>(name('flags'), { transport: 'main' })
flagsA.put('dark-mode', { on: true }) // sync, as any local write: published in the background
// B joins later: shared() resolves once it merged the state another process sent it.
const flagsB = await storeB.shared<Flag>(flagsA.name, { transport: 'main' })
assert.deepEqual(flagsB.get('dark-mode')?.value, { on: true })

// Concurrent writes converge everywhere: the later stamp (clock, then writer) wins.
flagsA.put('beta', { on: false })
flagsB.put('beta', { on: true })
await until(() => JSON.stringify(flagsA.get('beta')?.stamp) === JSON.stringify(flagsB.get('beta')?.stamp))
assert.deepEqual(flagsA.get('beta')?.value, flagsB.get('beta')?.value)

// Deletes reach the others as deletions; a TTL travels with its value and expires everywhere.
flagsB.delete('dark-mode')
await until(() => flagsA.get('dark-mode') === undefined)
// #endregion

// #region strong
// Strong: the broker keeps the namespace and checks every conditional write itself.
const seatsA = await storeA.shared<number>(name('seats'), { transport: 'main', consistency: 'strong' })
const seatsB = await storeB.shared<number>(seatsA.name, { transport: 'main', consistency: 'strong' })
const v1 = await seatsA.create('left', 10) // a Promise of the broker's revision
assert.equal(seatsA.get('left')?.value, 10) // read-your-writes: the mirror has it at once
await until(() => seatsB.get('left')?.version === v1) // and the other's mirror soon after

// Two processes race a compare-and-set on the same version: exactly one wins.
const race = await Promise.allSettled([seatsA.put('left', 9, { ifVersion: v1 }), seatsB.put('left', 9, { ifVersion: v1 })])
assert.equal(race.filter((r) => r.status === 'fulfilled').length, 1)
const lost = race.find((r) => r.status === 'rejected')
assert.ok(lost && isOrreryError(lost.reason, 'VERSION_CONFLICT'))

// update() reads, computes and compares-and-sets, again from a fresh read when another process won.
await seatsB.update('left', (n) => (n ?? 0) - 1)
assert.equal((await seatsA.fetch('left'))?.value, 8) // fetch reads the broker

// A lock with a TTL: held while its holder renews it, free for another once it lapses.
const locks = await storeA.shared<string>(name('locks'), { transport: 'main', consistency: 'strong' })
const otherLocks = await storeB.shared<string>(locks.name, { transport: 'main', consistency: 'strong' })
const held = await locks.create('report', 'process A', { ttl: 300 })
await locks.put('report', 'process A', { ifVersion: held, ttl: 300 }) // renewed: 300 ms from now
await until(() => otherLocks.get('report') === undefined) // not renewed again: it lapses everywhere
await otherLocks.create('report', 'process B', { ttl: 300 }) // and another process takes it
// #endregion

// #region strong-transaction
// A transaction: moves across keys that the broker applies all or none.
const stock = await storeA.shared<number>(name('stock'), { transport: 'main', consistency: 'strong' })
const otherStock = await storeB.shared<number>(stock.name, { transport: 'main', consistency: 'strong' })
const [shelf, cart] = await stock.transaction().create('shelf', 5).create('cart', 0).commit() // a revision each
const move = otherStock.transaction().put('shelf', 4, { ifVersion: shelf! }).put('cart', 1, { ifVersion: cart! })
const stale = stock.transaction().put('shelf', 3, { ifVersion: shelf! }).put('cart', 2, { ifVersion: cart! })
await until(() => otherStock.get('cart')?.version === cart) // B's mirror has both
await move.commit() // B moves one item...
const refused = await stale.commit().catch((e: unknown) => e) // ...so A's move from the same versions is refused whole
assert.ok(isOrreryError(refused, 'VERSION_CONFLICT') && refused.details['key'] === 'shelf' && refused.details['index'] === 0)
assert.deepEqual([(await stock.fetch('shelf'))?.value, (await stock.fetch('cart'))?.value], [4, 1])
// #endregion

// #region strong-history
// History: the broker keeps each key's last records, here three older ones besides the current.
const prices = await storeA.shared<number>(name('prices'), { transport: 'main', consistency: 'strong', history: 3 })
const otherPrices = await storeB.shared<number>(prices.name, { transport: 'main', consistency: 'strong' }) // takes it
const first = await prices.put('widget', 10)
await otherPrices.put('widget', 12)
await prices.delete('widget')
const past = await otherPrices.history('widget') // read from the broker, oldest first
assert.deepEqual(
  past.map((c) => [c.type, c.stamp.writer]),
  [
    ['put', 'web-1'],
    ['put', 'web-2'],
    ['delete', 'web-1'],
  ],
)
assert.equal((await otherPrices.getVersion('widget', first))?.value, 10)
// #endregion

// #region stop
// Failures no caller waits for (a publish, a remote change refused here) are OrreryErrors here.
storeB.events.subscribe((e) => {
  if (e.type === 'shared-error') console.warn(`${e.namespace}: ${e.operation} failed (${e.error.code})`)
})
flagsA.put('last', { on: true }) // published in the background...
await storeA.flushed() // ...and taken by the broker once this resolves (rejects if it was not)
await until(() => flagsB.get('last') !== undefined)

// shutdown() flushes every store the Orrery opened (openStore), closes them (their change feeds
// and connections too), then its transports: nothing else to close before the process ends.
flagsB.put('bye', { on: true }) // made just before shutdown: still delivered
await b.shutdown()
await until(() => flagsA.get('bye') !== undefined)
await a.shutdown()
// #endregion
