// Workflows across processes: histories kept by Redis, one owner lease per run. Run by
// test/examples.test.ts on both engines against the test server (scripts/servers.sh, port 16379;
// ORRERY_REDIS_URL names another); the region is the code block of docs/workflows.md,
// "Workflows across processes". Two Orrery instances stand for two processes.
import assert from 'node:assert/strict'
import { Orrery, sequence, step, workflow, type Workflows } from 'orrery'

const url = process.env['ORRERY_REDIS_URL'] ?? 'redis://127.0.0.1:16379'
// The example needs a server; a test run without servers says so and has nothing to show.
if (process.env['ORRERY_SERVERS'] === 'none') process.exit(0)
const keyPrefix = `example-${process.pid}-${Date.now().toString(36)}:`
const until = async (done: () => boolean) => {
  while (!done()) await new Promise((resolve) => setTimeout(resolve, 10))
}

// #region shared
const billing = workflow('billing', sequence(step('charge', { fn: 'charge' }, { input: '$input' }), step('receipt', { fn: 'receipt' }, { input: '$steps.charge' })))
const charged: string[] = []

/** What every process runs: the same registrations and definitions, histories on the broker. */
async function worker(orrery: Orrery): Promise<Workflows> {
  const wf = await orrery.workflows({ shared: { transport: 'main', leaseMs: 2_000 }, namespace: `billing-${keyPrefix}` })
  wf.register('charge', async (amount: number, ctx) => {
    charged.push(ctx.idempotencyKey) // a payment API would take the key and charge once
    await new Promise((resolve) => setTimeout(resolve, 200))
    return { amount, id: `ch-${ctx.idempotencyKey}` }
  })
  wf.register('receipt', (charge: { id: string }) => `receipt for ${charge.id}`)
  wf.define(billing)
  return wf
}

const options = { transports: { main: { kind: 'redis', url, keyPrefix } } } as const
const a = await Orrery.create(options) // one process...
const b = await Orrery.create(options) // ...and another, as far as Redis can tell
const wfA = await worker(a)
const wfB = await worker(b)
await wfA.start(billing, 42, { id: 'invoice-7' })
// A drives the run (it holds its lease); B only sees it in the history.
await until(() => wfB.get('invoice-7')?.status() === 'running')
await until(() => charged.length === 1)
await a.shutdown() // gives its leases up: B takes the run over at once (a crash: after leaseMs)
await until(() => wfB.get('invoice-7')?.status() === 'completed')
assert.equal(await wfB.get('invoice-7')?.result(), 'receipt for ch-invoice-7/charge')
// The charge in flight when A stopped ran again in B, under the same idempotency key.
assert.deepEqual(charged, ['invoice-7/charge', 'invoice-7/charge'])
// #endregion

await b.shutdown()
