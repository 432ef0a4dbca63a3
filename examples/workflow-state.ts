// Workflows: where a run is (run.state(), runState) and signals and cancels acknowledged once recorded.
// Run by test/examples.test.ts on both engines; the regions are code blocks of docs/workflows.md.
import assert from 'node:assert/strict'
import { forEach, isOrreryError, Orrery, runState, sequence, step, waitFor, workflow, type Workflows } from 'orrery'

const orrery = await Orrery.create()
const store = orrery.openStore()
const wf: Workflows = await orrery.workflows({ store })
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

// #region state
let busy = 1 // the resizer is busy once
wf.register('resize', (image: string) => {
  if (image === 'b.png' && busy-- > 0) throw new Error('busy') // transient: retried
  return `small-${image}`
})
wf.register('publish', (images: string[]) => images.length)
const album = workflow<string[], number>(
  'album',
  sequence(
    forEach('$input', step('resize', { fn: 'resize' }, { input: '$item', retry: { attempts: 3, initialMs: 5 } }), { id: 'resize-all' }),
    waitFor('review', 'approve'),
    step('publish', { fn: 'publish' }, { input: '$steps.resize-all' }),
  ),
)
wf.define(album)
const run = await wf.start(album, ['a.png', 'b.png'], { id: 'album-1' })
await pause(50)

// Plain data: the run, each node by id (status, attempts, output or error), each step
// instance inside the forEach by its index path, what waits for a signal.
const paused = run.state()
assert.equal(paused.status, 'running')
assert.deepEqual(paused.waiting, [{ node: 'review', signal: 'approve' }])
assert.deepEqual(paused.nodes['resize']?.instances, {
  '[0]': { status: 'completed', attempts: 1, output: 'small-a.png' },
  '[1]': { status: 'completed', attempts: 2, output: 'small-b.png' }, // retried once
})
assert.equal(paused.nodes['resize-all']?.status, 'completed')
assert.equal(paused.nodes['publish']?.status, 'pending')

// The same from another Workflows on the store, or from the definition, meta and history alone.
const reader = await orrery.workflows({ store, resume: false })
assert.deepEqual(reader.get('album-1')?.state(), paused)
reader.close()
const [meta] = wf.list({ definition: 'album' })
assert.deepEqual(runState(album, meta!, run.history()), paused)

// Bad input throws at once, nothing sent; the Promise rejects only when the write failed. So
// run.signal('aprove').catch(...) would not catch SIGNAL_UNKNOWN: await it in a try.
try {
  await run.signal('aprove', { by: 'ana' })
} catch (error) {
  assert.ok(isOrreryError(error, 'SIGNAL_UNKNOWN'))
}
// signal() and cancel() resolve once their event is recorded (on disk with a durable store).
await run.signal('approve', { by: 'ana' })
assert.equal(await run.result(), 2)
assert.equal(run.state().nodes['publish']?.output, 2)
// #endregion

orrery.close()
