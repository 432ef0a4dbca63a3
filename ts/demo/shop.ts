/**
 * The demo shop: what `orrery serve` runs and what the dashboard runs in a page (dashboard/src/demo.ts)
 * on the wasm engine. Nothing here needs Node. A small shop on one Orrery, so every view of the API
 * and the dashboard has something live to show.
 *
 *   pricer x2     `price@1.2.0`: a price per sku
 *   stock         `reserve@1.0.0`: takes items from the `stock` namespace of the store
 *   courier x2    `ship@1.0.0`: ships an order and announces it on `shipments`; refuses the
 *                 address `nowhere` (a permanent error); courier-2 reports itself degraded
 *   orders        a channel with an order every `tickMs`; the `billing` group prices each one
 *                 through the mesh; an order with no sku (one in `deadLetterEvery`) is refused for
 *                 good and lands on `orders.dead-letter`
 *   fulfil-order  a workflow started every `runEveryMs`: reserve -> [price | label] -> approval
 *                 (waits for an `approve` signal) -> charge (compensated by refund) -> ship. The
 *                 demo approves two runs in three; the third waits for a person
 *                 (`orrery runs signal <id> approve`). Every fifth run ships to `nowhere`, so its
 *                 charge is refunded and the run ends `compensated`.
 *   restock       a workflow the demo defines but never starts (the dashboard's form, `orrery runs
 *                 start restock '["lamp","rug"]'`): 100 more of each sku listed, one forEach instance each.
 */
import { Agent, type AgentContext, type HealthReport, type Logger, PermanentError, silentLogger } from '../agents/agent.js'
import type { Mesh } from '../agents/mesh.js'
import type { Orrery } from '../api.js'
import type { Bus } from '../bus/bus.js'
import { intOr, keysOf, options as checkOptions } from '../check.js'
import type { Store } from '../store/store.js'
import { forEach, parallel, sequence, step, waitFor, workflow } from '../workflows/builder.js'
import type { Workflows } from '../workflows/runtime.js'

/** An order, as published on `orders` and given to each `fulfil-order` run. */
export interface DemoOrder {
  id: string
  sku: string
  qty: number
  address: string
}

/** Options of {@link startDemo}. */
export interface DemoOptions {
  /** Ms between orders on `orders` (default 500). */
  tickMs?: number
  /** Ms between `fulfil-order` runs (default 3,000). */
  runEveryMs?: number
  /** One order in this many has no sku and is dead-lettered (default 10). */
  deadLetterEvery?: number
  /** Ms before the demo approves a run it approves (default 1,500). */
  approveAfterMs?: number
  /** The mesh's logger (default: silent). Its metrics go where the Orrery's do (`Orrery.create({ metrics })`). */
  logger?: Logger
}
const DEMO_KEYS = keysOf<DemoOptions>()(['tickMs', 'runEveryMs', 'deadLetterEvery', 'approveAfterMs', 'logger'])

/** A running demo: what it made, and how to stop it. */
export interface Demo {
  readonly mesh: Mesh
  readonly workflows: Workflows
  readonly store: Store<false>
  /** What the demo has done so far. */
  counts(): { orders: number; runs: number; approved: number }
  /** Stops the traffic and the runs' timers, shuts the mesh down and closes the workflows and the store. */
  stop(): Promise<void>
}

const SKUS = ['lamp', 'desk', 'chair', 'shelf', 'rug'] as const

/** A stable price in cents for a sku (its letters' codes, scaled). */
const priceOf = (sku: string) => 500 + [...sku].reduce((n, c) => n + c.charCodeAt(0), 0) * 7

class Pricer extends Agent {
  static capabilities = [{ name: 'price', version: '1.2.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle('price', (sku: string) => {
      if (typeof sku !== 'string' || sku === '') throw new PermanentError('no sku to price')
      return priceOf(sku)
    })
  }
}

class Stock extends Agent {
  static capabilities = [{ name: 'reserve', version: '1.0.0' }]
  constructor(context: AgentContext, store: Store<false>) {
    super(context)
    const stock = store.namespace<number>('stock')
    this.handle('reserve', ({ sku, qty }: DemoOrder) => {
      // Restocked when it runs out, so the demo never stalls.
      const left = stock.get(sku)?.value ?? 0
      const now = left >= qty ? left - qty : left + 100 - qty
      stock.put(sku, now)
      return { sku, left: now }
    })
  }
}

class Courier extends Agent {
  static capabilities = [{ name: 'ship', version: '1.0.0' }]
  constructor(context: AgentContext, bus: Bus) {
    super(context)
    this.handle('ship', async ({ order, label }: { order: DemoOrder; label: string }) => {
      if (order.address === 'nowhere') throw new PermanentError(`no route to ${order.address}`)
      await bus.publish('shipments', { order: order.id, label, by: this.id })
      return { tracking: `${this.id}:${order.id}` }
    })
  }

  override healthCheck(): HealthReport {
    return this.id === 'courier-2' ? { status: 'degraded', reason: 'one van in the garage' } : { status: 'healthy' }
  }
}

/** The demo's workflow: plain data (its version is its content hash). */
export const fulfilOrder = workflow(
  'fulfil-order',
  sequence(
    step('reserve', { capability: 'reserve@^1' }, { input: '$input', timeoutMs: 5_000 }),
    parallel([step('price', { capability: 'price@^1.2' }, { input: '$input.sku', timeoutMs: 5_000 }), step('label', { fn: 'label' }, { input: '$input' })], {
      id: 'prepare',
    }),
    waitFor('approval', 'approve', { timeoutMs: 15 * 60_000 }),
    step('charge', { fn: 'charge' }, { input: { order: '$input', price: '$steps.price' }, compensate: { run: { fn: 'refund' } } }),
    step('ship', { capability: 'ship@^1' }, { input: { order: '$input', label: '$steps.label' }, timeoutMs: 5_000 }),
  ),
)

/** Restocks each sku of its input (a list): one forEach instance per sku, each 100 more. */
export const restock = workflow('restock', forEach('$input', step('restock', { fn: 'restock' }, { input: '$item' }), { id: 'each' }))

/**
 * Starts the demo on `orrery`: a mesh, a store, workflows and steady traffic. Everything it starts
 * ends with `stop()` (the Orrery stays open).
 */
export async function startDemo(orrery: Orrery, options: DemoOptions = {}): Promise<Demo> {
  const opts = checkOptions(options, 'options', 'argument', DEMO_KEYS)
  const tickMs = intOr(opts.tickMs, 500, 'tickMs', { min: 10 })
  const runEveryMs = intOr(opts.runEveryMs, 3_000, 'runEveryMs', { min: 10 })
  const deadLetterEvery = intOr(opts.deadLetterEvery, 10, 'deadLetterEvery', { min: 1 })
  const approveAfterMs = intOr(opts.approveAfterMs, 1_500, 'approveAfterMs', { min: 0 })

  const { bus } = orrery
  const store = orrery.openStore()
  const mesh = await orrery.mesh({ seed: 1, heartbeat: { interval: 1_000 }, logger: opts.logger ?? silentLogger })
  mesh.define('pricer', Pricer)
  mesh.define('stock', (context: AgentContext) => new Stock(context, store))
  mesh.define('courier', (context: AgentContext) => new Courier(context, bus))
  await mesh.spawn('pricer', { replicas: 2, tags: ['eu'] })
  await mesh.spawn('stock', { tags: ['eu'] })
  await mesh.spawn('courier', { replicas: 2, tags: ['eu', 'road'] })

  // Bounded logs, so a demo left running for days stays small.
  for (const channel of ['orders', 'orders.dead-letter', 'shipments']) bus.channel(channel, { retention: { maxCount: 10_000 } })

  const workflows = await orrery.workflows({ mesh, store })
  workflows.register('label', (order: DemoOrder) => `${order.qty} x ${order.sku} -> ${order.address}`)
  workflows.register('charge', ({ order, price }: { order: DemoOrder; price: number }) => ({ order: order.id, cents: price * order.qty }))
  workflows.register('refund', (charged: { order: string; cents: number }) => ({ refunded: charged.cents }))
  const stock = store.namespace<number>('stock')
  workflows.register('restock', (sku: string) => {
    if (typeof sku !== 'string' || sku === '') throw new PermanentError('restock lists skus: non-empty strings')
    const now = (stock.get(sku)?.value ?? 0) + 100
    stock.put(sku, now)
    return { sku, left: now }
  })
  workflows.define(fulfilOrder)
  workflows.define(restock)

  // The billing group prices each order; an order without a sku cannot be priced, for good.
  const billing = bus.group<DemoOrder>('orders', 'billing', { maxDeliveries: 3 })
  const consumer = billing.consume(
    async (d) => {
      const { id, sku } = d.message.payload
      if (sku === '') throw new Error(`order ${id} has no sku`)
      await mesh.request('price@^1.2', sku, { timeout: 5_000 })
    },
    { maxInFlight: 8, isPermanent: (e) => e instanceof Error && /no sku/.test(e.message) },
  )

  let orders = 0
  let runs = 0
  let approved = 0
  let stopped = false
  const timers = new Set<ReturnType<typeof setTimeout>>()
  const later = (ms: number, fn: () => void) => {
    const timer = setTimeout(() => {
      timers.delete(timer)
      if (!stopped) fn()
    }, ms)
    timers.add(timer)
  }
  const order = (n: number, prefix: string): DemoOrder => ({
    id: `${prefix}-${n}`,
    sku: SKUS[n % SKUS.length] ?? 'lamp',
    qty: 1 + (n % 3),
    address: `${n} Orbit Lane`,
  })
  // A failure in the traffic (the Orrery closed under it) ends the demo's work, never the process.
  const quietly = (p: Promise<unknown>) => p.catch(() => undefined)

  const traffic = setInterval(() => {
    orders++
    const next = order(orders, 'o')
    if (orders % deadLetterEvery === 0) next.sku = ''
    void quietly(bus.publish('orders', next))
  }, tickMs)

  const start = async () => {
    runs++
    const n = runs
    const input = order(n, 'order')
    if (n % 5 === 0) input.address = 'nowhere'
    const run = await workflows.start(fulfilOrder, input, { id: input.id })
    if (n % 3 === 0) return // left for a person to approve
    later(approveAfterMs, () => {
      approved++
      run.signal('approve', { by: 'demo' })
    })
  }
  const starter = setInterval(() => void quietly(start()), runEveryMs)
  await start()

  return {
    mesh,
    workflows,
    store,
    counts: () => ({ orders, runs, approved }),
    async stop() {
      if (stopped) return
      stopped = true
      clearInterval(traffic)
      clearInterval(starter)
      for (const timer of timers) clearTimeout(timer)
      consumer.stop()
      await mesh.shutdown({ timeout: 2_000 })
      workflows.close()
      store.close()
    },
  }
}
