// Workflows, the long-running patterns: pipeline, continueAsNew, delegate and maxConcurrentRuns.
// Run by test/examples.test.ts on both engines; the regions are code blocks of docs/workflows.md.
import assert from 'node:assert/strict'
import { Agent, branch, continueAsNew, delegate, Orrery, pipeline, sequence, step, when, workflow, type AgentContext, type Workflows } from 'orrery'

const orrery = await Orrery.create()
const mesh = await orrery.mesh()
const wf: Workflows = await orrery.workflows({ mesh })

// #region pipeline
wf.register('extract', (page: string) => page.trim().toUpperCase())
wf.register('number', ({ text, page }: { text: string; page: number }) => `${page + 1}. ${text}`)
// Each page goes through extract, then number; extract works at most one page ahead of number.
// In the second stage `$item` is what the first made of that page, `$index` the page's place.
const pages = workflow<string[], string[]>(
  'pages',
  pipeline(
    'pages',
    '$input',
    [step('extract', { fn: 'extract' }, { input: '$item' }), step('number', { fn: 'number' }, { input: { text: '$item', page: '$index' } })],
    { buffer: 1 },
  ),
)
wf.define(pages)
assert.deepEqual(await (await wf.start(pages, [' intro', 'body ', 'end'])).result(), ['1. INTRO', '2. BODY', '3. END'])
// #endregion

// #region continueAsNew
// A counter that lives as long as it likes: each generation counts one and, while the count is
// below 100, continues as new with it as its input, so the history holds one generation's
// events, never more. When the branch takes no arm, the run completes.
wf.register('count', (n: number) => n + 1)
const below100 = { path: '$steps.count', op: 'lt', value: 100 } as const
const counter = workflow<number, number>(
  'counter',
  sequence(step('count', { fn: 'count' }, { input: '$input' }), branch([when(below100, continueAsNew('again', { input: '$steps.count' }))])),
  { output: '$steps.count' },
)
wf.define(counter)
const counting = await wf.start(counter, 0, { id: 'counter-1' })
assert.equal(await counting.result(), 100)
assert.equal(counting.generation, 100) // one run id, 100 generations
assert.equal(counting.history()[0]?.type, 'started') // the last generation's events only
// #endregion

// #region delegate
// A supervising agent gets a goal and starts the runs it chooses (ids from the key it is given,
// so a retry starts the same ones); the delegate step waits for them and outputs their results.
class Planner extends Agent {
  static capabilities = [{ name: 'plan', version: '1.0.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle('plan', async ({ goal, key }: { goal: string[]; parentRunId: string; key: string }) => {
      const runs = await Promise.all(goal.map((topic, i) => wf.start('research', topic, { id: `${key}/${i}` })))
      return { runs: runs.map((r) => r.id) }
    })
  }
}
mesh.define('planner', Planner)
await mesh.spawn('planner')
wf.register('research', (topic: string) => `notes on ${topic}`)
wf.define(workflow('research', step('research', { fn: 'research' }, { input: '$input' })))
const study = workflow<string[], string[]>('study', delegate('plan', 'plan@^1', { input: '$input' }))
wf.define(study)
assert.deepEqual(await (await wf.start(study, ['orbits', 'tides'], { id: 'study-1' })).result(), ['notes on orbits', 'notes on tides'])
assert.equal(wf.get('study-1/plan/1')?.status(), 'completed')
// #endregion

// #region maxConcurrentRuns
// At most two exports at once: the others are queued (durably) and begin in start order.
let running = 0
let most = 0
wf.register('export', async (name: string) => {
  most = Math.max(most, ++running)
  await new Promise((resolve) => setTimeout(resolve, 5))
  running--
  return `${name}.csv`
})
const exporting = workflow<string, string>('export', step('export', { fn: 'export' }, { input: '$input' }))
wf.define(exporting, { maxConcurrentRuns: 2 })
const exports = await Promise.all(['a', 'b', 'c', 'd'].map((name) => wf.start(exporting, name)))
assert.deepEqual(
  exports.map((r) => r.status()),
  ['running', 'running', 'queued', 'queued'],
)
exports[3]!.cancel() // a queued run ends cancelled without starting
assert.deepEqual(await Promise.all(exports.slice(0, 3).map((r) => r.result())), ['a.csv', 'b.csv', 'c.csv'])
assert.equal(exports[3]!.status(), 'cancelled')
assert.equal(most, 2)
// #endregion

await mesh.shutdown()
orrery.close()
