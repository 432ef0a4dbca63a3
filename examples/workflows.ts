// Workflows: a document pipeline as a durable workflow, then each pattern. Run by
// test/examples.test.ts on both engines; the regions are the code blocks of docs/workflows.md
// and README.md.
import assert from 'node:assert/strict'
import {
  Agent,
  child,
  branch,
  fn,
  forEach,
  isOrreryError,
  loop,
  Orrery,
  parallel,
  PermanentError,
  quorum,
  scatterGather,
  sequence,
  sleep,
  step,
  typeOnly,
  waitFor,
  when,
  workflow,
  type AgentContext,
  type WorkflowDefinition,
  type WorkflowEvent,
} from 'orrery'
import { z } from 'zod'

/** A mesh agent: the first sentence of a text. */
class Summarizer extends Agent {
  static capabilities = [{ name: 'summarize', version: '1.2.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle('summarize', { schema: z.object({ text: z.string() }) }, (doc) => doc.text.split('. ')[0] ?? '')
  }
}

// #region definition
interface Doc {
  url: string
  channel: string
}

// Plain data: steps name a registered function or a mesh capability; inputs are references.
const pipeline = workflow<Doc, string>(
  'doc-pipeline',
  sequence(
    step('fetch', { fn: 'fetch' }, { input: '$input.url', retry: { attempts: 3, initialMs: 20 } }),
    parallel(
      [
        step('summarize', { capability: 'summarize@^1.2' }, { input: { text: '$steps.fetch' }, timeoutMs: 2_000 }),
        step('tag', { fn: 'tag' }, { input: '$steps.fetch' }),
      ],
      { id: 'analyse' },
    ),
    waitFor('review', 'approve', { timeoutMs: 500 }), // a person's decision (a day, in real life)
    step('publish', { fn: 'publish' }, {
      input: { url: '$input.url', summary: '$steps.summarize', tags: '$steps.tag', by: '$steps.review.by' },
      compensate: { run: { fn: 'unpublish' } }, // undoes it if a later step fails; gets publish's output
    }),
    step('notify', { fn: 'notify' }, { input: { channel: '$input.channel', url: '$steps.publish.url' } }),
  ),
)
// #endregion

// #region setup
const orrery = await Orrery.create()
const mesh = await orrery.mesh()
mesh.define('summarizer', Summarizer)
await mesh.spawn('summarizer', { replicas: 2 })
const wf = await orrery.workflows({ mesh }) // history in memory; { store } keeps it on disk

interface Page {
  url: string
  summary: string
  tags: string[]
}
const site = new Map<string, Page>() // what is published, by idempotency key
let outages = 1 // the origin answers 503 once
wf.register('fetch', { input: z.string() }, async (url) => {
  if (outages-- > 0) throw new Error('503 from the origin') // transient: retried
  return `Workflows survive crashes. Their history lives in the store (${url}).`
})
wf.register('tag', (text: string) => text.toLowerCase().match(/\b[a-z]{8,}\b/g) ?? [])
wf.register('publish', (page: Page, ctx) => {
  site.set(ctx.idempotencyKey, page) // the same key on every attempt: running twice writes one page
  return { key: ctx.idempotencyKey, url: `https://docs.example/${page.url}` }
})
wf.register('unpublish', (published: { key: string }) => site.delete(published.key))
wf.register('notify', ({ channel, url }: { channel: string; url: string }) => {
  if (channel !== '#docs') throw new PermanentError(`no channel ${channel}`) // permanent: not retried
  return `${url} announced on ${channel}`
})
wf.define(pipeline)
// #endregion

// #region run
const run = await wf.start(pipeline, { url: 'guide', channel: '#docs' }, { id: 'doc-guide' })
const events: WorkflowEvent[] = []
run.events.subscribe((e) => {
  events.push(e)
  // The reviewer approves once the summary is there.
  if (e.type === 'node-done' && e.node === 'analyse') run.signal('approve', { by: 'ana' })
})
assert.equal(await run.result(), 'https://docs.example/guide announced on #docs')
assert.equal(run.status(), 'completed')
assert.equal(events.at(-1)?.type, 'run-finished')

// The history: the 503, the retry, every step with its outcome (and output, and idempotency key).
const history = run.history()
const outcomes = history.flatMap((e) => (e.type === 'step-completed' ? [`${e.step} ${e.outcome}`] : []))
assert.deepEqual(outcomes.slice(0, 2), ['fetch transient', 'fetch ok'])
assert.deepEqual(outcomes.slice(-2), ['publish ok', 'notify ok'])
assert.ok(history.some((e) => e.type === 'retry' && e.step === 'fetch' && e.attempt === 2))
assert.ok(history.some((e) => e.type === 'step-started' && e.key === 'doc-guide/publish'))

// Starting an id again returns that run: nothing runs twice.
const again = await wf.start(pipeline, { url: 'guide', channel: '#docs' }, { id: 'doc-guide' })
assert.equal(again.status(), 'completed')
assert.equal(await again.result(), 'https://docs.example/guide announced on #docs')
assert.equal(site.size, 1)
// #endregion

// #region saga
// #nowhere is no channel: notify fails after publish completed, so publish is compensated.
const doomed = await wf.start(pipeline, { url: 'draft', channel: '#nowhere' })
doomed.signal('approve', { by: 'ana' }) // early: the review takes it when it gets there
const failure = await doomed.result().catch((e: unknown) => e)
assert.ok(isOrreryError(failure, 'STEP_FAILED'))
assert.equal(failure.details['step'], 'notify')
assert.equal(failure.details['status'], 'compensated')
assert.equal((failure.cause as Error).message, 'no channel #nowhere')
assert.equal(doomed.status(), 'compensated')
assert.ok(doomed.history().some((e) => e.type === 'compensated' && e.step === 'publish' && e.ok))
assert.equal(site.size, 1) // the draft's page was unpublished
// #endregion

// #region timeout
// Nobody approves: the review times out (500 ms) and fails the run. No completed step has a
// compensation, so the run ends `failed`.
const ignored = await wf.start(pipeline, { url: 'old', channel: '#docs' })
const timedOut = await ignored.result().catch((e: unknown) => e)
assert.ok(isOrreryError(timedOut, 'STEP_FAILED') && timedOut.details['step'] === 'review')
assert.ok(isOrreryError(timedOut.cause, 'TIMEOUT'))
assert.equal(ignored.status(), 'failed')

// A cancel: steps in flight are aborted (their ctx.signal), completed ones compensated.
const dropped = await wf.start(pipeline, { url: 'spam', channel: '#docs' })
dropped.cancel()
await assert.rejects(dropped.result(), (e) => isOrreryError(e, 'RUN_CANCELLED'))
assert.equal(dropped.status(), 'cancelled')
// #endregion

// #region versions
// A run stays on the version it started with; new runs take the newest.
const pending = await wf.start(pipeline, { url: 'faq', channel: '#docs' })
const v2 = wf.define(workflow<Doc, string>('doc-pipeline', pipeline.root, { version: '2' }))
const next = await wf.start('doc-pipeline', { url: 'faq2', channel: '#docs' })
assert.equal(pending.definition.version, pipeline.version) // 'sha256:...', the content hash
assert.equal(next.definition.version, v2.version)
pending.signal('approve', { by: 'bo' })
next.signal('approve', { by: 'bo' })
assert.equal(await pending.result(), 'https://docs.example/faq announced on #docs')
assert.equal(await next.result(), 'https://docs.example/faq2 announced on #docs')

// A definition is JSON: a copy runs the same (same content, same version).
const copy = JSON.parse(JSON.stringify(pipeline)) as typeof pipeline
assert.equal(workflow(copy.name, copy.root).version, pipeline.version)
// #endregion

// #region types
// Typed references: the JSON holds { fn: 'readPage' } as ever; the types are the compiler's only.
const readPage = fn<string, string>('readPage')
const countWords = fn<string, number>('countWords')
wf.register(readPage, async (url) => `Orrery runs workflows (${url})`) // takes a string, returns a string
wf.register(countWords, { input: z.string() }, (text) => text.split(' ').length) // returns a number

const stats = workflow(
  'page-stats',
  sequence(
    step('read', readPage, { input: '$input.url' }),
    parallel([step('words', countWords, { input: '$steps.read' }), sleep('pause', 1)]),
  ),
  { input: typeOnly<{ url: string }>() }, // the run's input type
)
stats satisfies WorkflowDefinition<{ url: string }, [number, null]> // the output is inferred
const counted = await wf.start(stats, { url: 'home' }) // the input is required, as { url: string }
const [words]: [number, null] = await counted.result()
assert.equal(words, 4)
// Neither compiles: wf.register(countWords, (text) => text), wf.start(stats, 'home').
// #endregion

/** Resolves after `ms`, or rejects when the attempt is aborted. */
function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => {
      clearTimeout(timer)
      reject(signal.reason)
    })
  })
}

// #region parallel
wf.register('translate', async ({ text, lang, ms }: { text: string; lang: string; ms: number }, ctx) => {
  await delay(ms, ctx.signal) // aborted when the join no longer needs this branch
  return `${lang}: ${text}`
})
// The first two answers win; the third branch is cancelled; the output is in branch order.
const translations = workflow<string, (string | undefined)[]>(
  'translations',
  parallel(
    [
      step('fr', { fn: 'translate' }, { input: { text: '$input', lang: 'fr', ms: 1 } }),
      step('de', { fn: 'translate' }, { input: { text: '$input', lang: 'de', ms: 5 } }),
      step('ja', { fn: 'translate' }, { input: { text: '$input', lang: 'ja', ms: 5_000 } }),
    ],
    { join: quorum(2), timeoutMs: 1_000 },
  ),
)
wf.define(translations)
assert.deepEqual(await (await wf.start(translations, 'hello')).result(), ['fr: hello', 'de: hello', undefined])
// #endregion

// #region branch
wf.register('route', (queue: string) => `queued on ${queue}`)
const triage = workflow<{ size: number; urgent: boolean }, string>(
  'triage',
  branch(
    [
      when({ path: '$input.urgent', op: 'truthy' }, step('urgent', { fn: 'route' }, { input: 'pager' })),
      when({ path: '$input.size', op: 'gt', value: 1_000 }, step('large', { fn: 'route' }, { input: 'batch' })),
    ],
    step('normal', { fn: 'route' }, { input: 'default' }), // otherwise
  ),
)
wf.define(triage)
assert.equal(await (await wf.start(triage, { size: 5_000, urgent: false })).result(), 'queued on batch')
// #endregion

// #region loop
let polls = 0
wf.register('poll', () => ({ done: ++polls === 3 }))
// Check, pause (a durable timer), check again until done: at most 10 times, else LOOP_LIMIT.
const job = workflow<null, { done: boolean }>(
  'wait-for-job',
  loop({ until: { path: '$steps.check.done', op: 'eq', value: true }, maxIterations: 10 }, sequence(sleep('pause', 10), step('check', { fn: 'poll' }))),
)
wf.define(job)
assert.deepEqual(await (await wf.start(job, null)).result(), { done: true })
assert.equal(polls, 3)
// #endregion

// #region forEach
wf.register('resize', ({ image, width }: { image: string; width: number }, ctx) => `${image}@${width} (${ctx.idempotencyKey})`)
// The body once per item, two at a time; the output is in item order.
const thumbnails = workflow<{ images: string[] }, string[]>(
  'thumbnails',
  forEach('$input.images', step('resize', { fn: 'resize' }, { input: { image: '$item', width: 128 } }), { concurrency: 2 }),
)
wf.define(thumbnails)
const thumbs = await wf.start(thumbnails, { images: ['a.png', 'b.png', 'c.png'] }, { id: 'thumbs-1' })
assert.deepEqual(await thumbs.result(), ['a.png@128 (thumbs-1/resize[0])', 'b.png@128 (thumbs-1/resize[1])', 'c.png@128 (thumbs-1/resize[2])'])
// #endregion

// #region scatterGather
// One request to every agent offering summarize@^1.2 (both replicas), then an aggregate.
wf.registerMapping('agreed', (answers) => new Set(answers as string[]).size === 1)
const ask = workflow<string, boolean>('ask-all', scatterGather('ask', 'summarize@^1.2', { input: { text: '$input' }, timeoutMs: 1_000, aggregate: 'agreed' }))
wf.define(ask)
assert.equal(await (await wf.start(ask, 'One. Two.')).result(), true)
// Or to the agents a list names, in its order: here the run's input carries it.
const panel = workflow<{ text: string; panel: string[] }, string[]>(
  'ask-panel',
  scatterGather<string>('ask', 'summarize@^1.2', { agents: '$input.panel', input: { text: '$input.text' } }),
)
wf.define(panel)
assert.deepEqual(await (await wf.start(panel, { text: 'Three. Four.', panel: ['summarizer-2'] })).result(), ['Three'])
// #endregion

// #region child
// A child run per item: hierarchies of any depth. A child's run id is its idempotency key.
const announce = workflow<{ channel: string; url: string }, string>('announce', sequence(sleep('quiet', 10), step('post', { fn: 'notify' }, { input: '$input' })))
const release = workflow<{ urls: string[] }, string[]>('release', forEach('$input.urls', child('announce', 'announce', { input: { channel: '#docs', url: '$item' } })))
wf.define(announce)
wf.define(release)
const rel = await wf.start(release, { urls: ['a', 'b'] }, { id: 'rel-1' })
assert.deepEqual(await rel.result(), ['a announced on #docs', 'b announced on #docs'])
assert.equal(wf.get('rel-1/announce[1]')?.status(), 'completed')
// #endregion

// #region errors
await assert.rejects(wf.start('no-such-workflow', {}), (e) => isOrreryError(e, 'WORKFLOW_NOT_FOUND'))
await assert.rejects(wf.start(triage, { size: 1, urgent: true }, { id: 'doc-guide' }), (e) => isOrreryError(e, 'RUN_EXISTS'))
assert.throws(() => workflow('twice', sequence(sleep('nap', 1), sleep('nap', 1))), (e) => isOrreryError(e, 'DEFINITION_INVALID'))
wf.define(workflow('unready', step('x', { fn: 'not-registered' })))
await assert.rejects(wf.start('unready', null), (e) => isOrreryError(e, 'STEP_NOT_REGISTERED'))
// A loop that would go past maxIterations fails, and with it the run: the cause says LOOP_LIMIT.
const endless = workflow('endless', loop({ while: { path: '$input', op: 'truthy' }, maxIterations: 3, id: 'forever' }, step('check', { fn: 'poll' })))
wf.define(endless)
const limit = await (await wf.start(endless, true)).result().catch((e: unknown) => e)
assert.ok(isOrreryError(limit, 'STEP_FAILED') && limit.details['step'] === 'forever')
assert.ok(isOrreryError(limit.cause, 'LOOP_LIMIT'))
// #endregion

assert.deepEqual(
  wf.list({ definition: 'doc-pipeline' }).map((r) => r.status).sort(),
  ['cancelled', 'compensated', 'completed', 'completed', 'completed', 'failed'],
)
await mesh.shutdown()
orrery.close()
