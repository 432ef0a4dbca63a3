// The control surface and the HTTP API. Run by test/examples.test.ts on both engines; the
// regions are the code blocks of docs/http.md.
import assert from 'node:assert/strict'
import { Orrery } from 'orrery'
import { serveHttp } from 'orrery/http'

// #region control
const orrery = await Orrery.create()
const store = orrery.openStore()
store.namespace('settings').put('mode', 'fast')
const control = orrery.control({ store }) // also { mesh, workflows, metrics }

await control.publish('orders', { sku: 'A1' })
const [first] = await control.messages('orders', { limit: 10 })
assert.deepEqual(first?.payload, { sku: 'A1' })
assert.equal(control.overview().channels, 1)
assert.deepEqual(control.entry('settings', 'mode').value, 'fast')
// Plain JSON all the way: what the HTTP API sends, and what a snapshot file keeps.
const snapshot = await control.snapshot()
assert.deepEqual(JSON.parse(JSON.stringify(snapshot)), snapshot)
// #endregion control

// #region serve
const server = await serveHttp(control, {
  tokens: {
    'a-reader-token-0001': ['read'],
    'an-admin-token-0001': ['admin'], // admin implies write, which implies read
  },
  // host: '127.0.0.1' (default), port: 0 (any free one), bodyLimit: 1 MiB, maxDepth: 32, maxStreams: 100
})
const reader = { authorization: 'Bearer a-reader-token-0001' }
const admin = { authorization: 'Bearer an-admin-token-0001', 'content-type': 'application/json' }

const overview = await (await fetch(`${server.url}/v1/overview`, { headers: reader })).json()
assert.equal(overview.channels, 1)

const published = await fetch(`${server.url}/v1/channels/orders/messages`, {
  method: 'POST',
  headers: admin,
  body: JSON.stringify({ payload: { sku: 'B2' }, headers: { source: 'api' } }),
})
assert.equal(published.status, 201)

// Publishing needs the write scope: the reader is refused, in the one error shape.
const refused = await fetch(`${server.url}/v1/channels/orders/messages`, {
  method: 'POST',
  headers: { ...reader, 'content-type': 'application/json' },
  body: JSON.stringify({ payload: 1 }),
})
assert.equal(refused.status, 403)
assert.equal((await refused.json()).error.code, 'FORBIDDEN')

await server.close() // ends every event stream and frees the port
orrery.close()
// #endregion serve
