// Signed messages on a Redis transport. Run by test/examples.test.ts on both engines against the
// test server (scripts/servers.sh, port 16379; ORRERY_REDIS_URL names another); the region is the
// code block of docs/transports.md ("Signed messages"). Orrery instances stand for processes.
import assert from 'node:assert/strict'
import { Orrery } from 'orrery'

const url = process.env['ORRERY_REDIS_URL'] ?? 'redis://127.0.0.1:16379'
// The example needs a server; a test run without servers says so and has nothing to show.
if (process.env['ORRERY_SERVERS'] === 'none') process.exit(0)
const keyPrefix = `example-signing-${process.pid}-${Date.now().toString(36)}.`

// #region signing
// Secrets by key id (strings or bytes, at least 16 bytes): every key listed verifies, `sign` signs.
const keys = { '2025-06': 'a secret of at least 16 bytes', '2025-07': 'the next secret, rotated in' }
const signed = (sign: keyof typeof keys) =>
  ({
    transports: { main: { kind: 'redis', url, keyPrefix, signing: { keys, sign, replayWindowMs: 60_000 } } },
    bindings: { 'orders*': 'main' },
  }) as const

const billing = await Orrery.create(signed('2025-07')) // signs with the new key
const shipping = await Orrery.create(signed('2025-06')) // still signs with the old one: both verify
const intruder = await Orrery.create({ transports: { main: { kind: 'redis', url, keyPrefix } }, bindings: { 'orders*': 'main' } })

const seen: string[] = []
shipping.bus.subscribe<string>('orders').subscribe((m) => seen.push(m.payload))
const refused: string[] = []
shipping.bus.events.subscribe((e) => {
  // The first refusal at once, the rest of each 5 s per transport and reason together at its end (`count`).
  if (e.type === 'message-refused') refused.push(`${e.reason} on ${e.channel}: ${e.detail}`)
})

await intruder.bus.publish('orders', 'forged') // no signature: refused by every signed reader
await billing.bus.publish('orders', 'genuine')

while (seen.length < 1) await new Promise((r) => setTimeout(r, 10))
assert.deepEqual(seen, ['genuine'])
assert.equal(shipping.bus.stats('orders').signatureRefused, 1) // and replayRefused for copies
assert.match(refused[0]!, /^signature on orders: it carries no signature/)

for (const o of [billing, shipping, intruder]) await o.shutdown()
// #endregion
