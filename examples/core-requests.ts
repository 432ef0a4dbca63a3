// Requests as core NATS messages (`requests: 'core'`): one transport for the channels whose
// messages are kept, another on the same server for the request channels. Run by
// test/examples.test.ts on both engines against the test server (scripts/servers.sh,
// nats://127.0.0.1:14222; ORRERY_NATS_URL names another); the region is the code block of
// docs/transports.md, "Core requests on NATS". Two Orrery instances stand for two processes.
import assert from 'node:assert/strict'
import { isOrreryError, Orrery } from 'orrery'

const servers = process.env['ORRERY_NATS_URL'] ?? 'nats://127.0.0.1:14222'
// The example needs a server; a test run without servers says so and has nothing to show.
if (process.env['ORRERY_SERVERS'] === 'none') process.exit(0)
const prefix = `ex${process.pid}`

// #region core-requests
const options = {
  transports: {
    events: { kind: 'nats', servers, prefix }, // publishes and requests kept in streams
    rpc: { kind: 'nats', servers, prefix, requests: 'core' }, // requests not stored: faster
  },
  bindings: { 'orders.*': 'events', 'svc.*': 'rpc' },
} as const
const api = await Orrery.create(options)
const pricing = await Orrery.create(options) // another process, as far as NATS can tell

// Replicas of a service share its requests through a group (a NATS queue group here).
pricing.bus.respond<{ sku: string }, number>('svc.price', (req) => (req.payload.sku === 'A-1' ? 42 : 0), { group: 'pricing' })

// A core request reaches only responders attached when it is sent: `attached` says when they are.
await pricing.bus.attached('svc.price')
const price = await api.bus.request<number>('svc.price', { sku: 'A-1' }, { timeout: 5_000 })
assert.equal(price.payload, 42)

// Nobody serving: nothing keeps the request for later, so the call ends at its timeout.
const nobody = await api.bus.request('svc.nobody', {}, { timeout: 200 }).catch((e: unknown) => e)
assert.ok(isOrreryError(nobody, 'TIMEOUT'))

await api.shutdown()
await pricing.shutdown()
// #endregion
