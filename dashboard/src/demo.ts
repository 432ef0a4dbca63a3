/**
 * "Play with a mesh in the browser": an Orrery made in this page on the wasm engine, with agents,
 * a consumer group whose bad orders are dead-lettered, a store namespace and two workflows (one
 * that waits for a person's approval, one that fans out), fed by timers, shown live through its
 * Control. Everything ends when the client closes.
 */
import {
  Agent,
  type AgentContext,
  type Control,
  forEach,
  type Mesh,
  Orrery,
  type Store,
  type Workflows,
  PermanentError,
  parallel,
  sequence,
  step,
  waitFor,
  workflow,
} from '../../ts/browser.js'
import type { ControlClient } from './client.js'
import { inPageClient } from './in-page-client.js'

class Summarizer extends Agent {
  static capabilities = [{ name: 'summarize', version: '1.2.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle('summarize', async (doc: { text: string }) => {
      await sleep(20 + Math.random() * 80)
      return doc.text.split('. ')[0] ?? ''
    })
  }
}

class Translator extends Agent {
  static capabilities = [{ name: 'translate', version: '2.0.1' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle('translate', async (doc: { text: string }) => {
      await sleep(30 + Math.random() * 120)
      return doc.text.toUpperCase()
    })
  }
}

class Scorer extends Agent {
  static capabilities = [{ name: 'score', version: '1.0.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle('score', async (item: number) => {
      await sleep(5 + Math.random() * 40)
      return (item * 7919) % 100
    })
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Waits for the reviewer: signal `approve` (payload `{ "by": "you" }`) from the run's page. */
export const review = workflow(
  'doc-review',
  sequence(
    step('fetch', { fn: 'fetch' }, { input: '$input.url', retry: { attempts: 3, initialMs: 50 } }),
    parallel(
      [
        step('summarize', { capability: 'summarize@^1.2' }, { input: { text: '$steps.fetch' } }),
        step('translate', { capability: 'translate@^2' }, { input: { text: '$steps.fetch' } }),
      ],
      {
        id: 'analyse',
      },
    ),
    waitFor('review', 'approve', { timeoutMs: 600_000 }),
    step('publish', { fn: 'publish' }, { input: { url: '$input.url', summary: '$steps.summarize', by: '$steps.review.by' } }),
  ),
)

export const batch = workflow(
  'batch-score',
  sequence(
    step('list', { fn: 'list' }, { input: '$input' }),
    forEach('$steps.list', step('score', { capability: 'score@^1' }, { input: '$item' }), { id: 'each' }),
  ),
)

/** What `window.orreryDemo` holds while the demo runs. */
export interface DemoHandles {
  orrery: Orrery
  mesh: Mesh
  workflows: Workflows
  store: Store<false>
  control: Control
}

export async function startDemo(): Promise<ControlClient> {
  const orrery = await Orrery.create({ engine: 'wasm' })
  const timers: ReturnType<typeof setInterval>[] = []
  try {
    const { bus } = orrery
    const mesh = await orrery.mesh({ heartbeat: { interval: 1000 } })
    mesh.define('summarizer', Summarizer)
    mesh.define('translator', Translator)
    mesh.define('scorer', Scorer)
    await mesh.spawn('summarizer', { replicas: 3, tags: ['gpu'] })
    await mesh.spawn('translator', { replicas: 2 })
    await mesh.spawn('scorer', { replicas: 4, concurrency: 4 })

    const store = orrery.openStore()
    const settings = store.namespace('settings')
    settings.put('model', { name: 'small', temperature: 0.2 })
    settings.put('limits', { perMinute: 600, burst: 50 })
    settings.put('greeting', 'hello from the page')

    const wf = await orrery.workflows({ mesh })
    let outages = 0
    wf.register('fetch', (url: string) => {
      if (outages++ % 4 === 0) throw new Error('503 from the origin (retried)')
      return `Orrery runs in this page. The page is the ${url} of it.`
    })
    wf.register('publish', (page: { url: string }) => ({ url: `https://docs.example/${page.url}` }))
    wf.register('list', (n: number) => Array.from({ length: n }, (_, i) => i))
    wf.define(review)
    wf.define(batch)

    // Orders: every seventh one is bad (permanent: dead-lettered), and 'FLAKY' fails every delivery.
    class BadOrder extends Error {}
    const billing = bus.group<{ sku: string; n: number }>('orders', 'billing', { maxDeliveries: 3 })
    billing.consume(
      async (d) => {
        await sleep(Math.random() * 30)
        if (d.message.payload.sku === '') throw new BadOrder('empty sku')
        if (d.message.payload.sku === 'FLAKY') throw new PermanentError('payment service refused it')
      },
      { maxInFlight: 8, isPermanent: (e) => e instanceof BadOrder || e instanceof PermanentError },
    )

    let n = 0
    timers.push(
      setInterval(() => {
        n++
        void bus.publish('orders', { sku: n % 7 === 0 ? '' : n % 11 === 0 ? 'FLAKY' : `SKU-${n}`, n })
        void bus.publish('telemetry', { n, at: Date.now(), load: Math.round(50 + 40 * Math.sin(n / 20)) })
        if (n % 3 === 0) void mesh.request('summarize', { text: `Request ${n}. More text.` }).catch(() => {})
      }, 150),
    )
    let runs = 0
    const startRuns = () => {
      runs++
      void wf.start(review, { url: `guide-${runs}` }, { id: `review-${runs}` }).catch(() => {})
      void wf.start(batch, 8 + (runs % 5) * 4, { id: `batch-${runs}` }).catch(() => {})
    }
    startRuns()
    timers.push(setInterval(startRuns, 8000))

    const control = orrery.control({ mesh, workflows: wf, store })
    // For the browser's console: play with the same mesh the views show.
    const demo: DemoHandles = { orrery, mesh, workflows: wf, store, control }
    ;(globalThis as { orreryDemo?: DemoHandles }).orreryDemo = demo
    return inPageClient(control, 'demo in this page (wasm engine)', () => {
      delete (globalThis as { orreryDemo?: DemoHandles }).orreryDemo
      for (const t of timers) clearInterval(t)
      void mesh.shutdown({ timeout: 500 }).finally(() => orrery.close())
    })
  } catch (e) {
    for (const t of timers) clearInterval(t)
    orrery.close()
    throw e
  }
}
