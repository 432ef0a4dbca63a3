/**
 * `run.state()`: where a run is, mid-run and ended, for every pattern, the same from a second
 * Workflows over the same store and from `runState` over the exported history; and `signal()` /
 * `cancel()` resolving once their record is written (on disk with a durable store), rejecting
 * when it could not be.
 */
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'

import {
  continueAsNew,
  forEach,
  branch,
  loop,
  Orrery,
  parallel,
  PermanentError,
  pipeline,
  quorum,
  runState,
  sequence,
  sleep,
  step,
  waitFor,
  when,
  workflow,
  type RunState,
  type StepContext,
  type WorkflowDefinition,
  type WorkflowEvent,
  type WorkflowRun,
  type Workflows,
} from '../ts/node.js'
import { ENGINE, IN_BROWSER } from './engine.js'
import { errorOf, macrotask, removeTempDirs, tempDir } from './helpers.js'

let open: Orrery[] = []

afterEach(() => {
  for (const o of open) o.close()
  open = []
  vi.useRealTimers()
})
afterAll(removeTempDirs)

/** Fake time from 1,000,000 ms, an Orrery on it and workflows on an in-memory store. */
async function setup() {
  vi.useFakeTimers({ now: 1_000_000, toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
  const orrery = await Orrery.create({ engine: ENGINE })
  open.push(orrery)
  const store = orrery.openStore()
  const wf = await orrery.workflows({ store })
  /** Another Workflows over the same store that leaves the runs to the first (it reads them only). */
  const reader = () => orrery.workflows({ store, resume: false })
  return { orrery, wf, store, reader }
}

/** Lets promises settle and due timers fire, `ms` of fake time at most. */
const advance = (ms = 0) => vi.advanceTimersByTimeAsync(ms)

/** A promise to settle by hand: a step that returns it runs until the test says. */
function later<T = unknown>() {
  let resolve!: (value: T) => void
  let reject!: (error: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

/** A step that never ends on its own: it rejects when its attempt is aborted. */
function hang(_input: unknown, ctx: StepContext): Promise<never> {
  return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)))
}

/** The run's state as a second Workflows over the same store reads it (once the events recorded so far are written). */
async function stored(reader: () => Promise<Workflows>, id: string): Promise<RunState> {
  await macrotask()
  await macrotask()
  const other = await reader()
  try {
    return other.get(id)!.state()
  } finally {
    other.close()
  }
}

/** Whether `promise` has settled after the microtasks queued so far. */
async function settledYet(promise: Promise<unknown>): Promise<boolean> {
  let settled = false
  promise.then(
    () => {
      settled = true
    },
    () => {
      settled = true
    },
  )
  for (let i = 0; i < 5; i++) await Promise.resolve()
  return settled
}

describe('run.state()', () => {
  it('a run paused on a waitFor: which wait waits for which signal, and the signals not taken yet', async () => {
    const { wf, reader } = await setup()
    wf.register('double', (n: number) => n * 2)
    const def = workflow(
      'approval',
      sequence(
        step('prepare', { fn: 'double' }, { input: '$input' }),
        waitFor('first', 'one'),
        waitFor('second', 'two'),
        step('finish', { fn: 'double' }, { input: '$steps.prepare' }),
      ),
    )
    wf.define(def)
    const run = await wf.start(def, 21, { id: 'paused' })
    await advance()
    await run.signal('two', { early: true })

    const state = run.state()
    expect(state).toMatchObject({
      id: 'paused',
      status: 'running',
      generation: 1,
      definition: { name: 'approval', version: def.version },
      startedAt: 1_000_000,
    })
    expect(state.finishedAt).toBeUndefined()
    expect(state.nodes['prepare']).toEqual({ id: 'prepare', kind: 'step', parent: 'seq-1', status: 'completed', attempts: 1, output: 42 })
    expect(state.nodes['first']).toMatchObject({ kind: 'waitFor', status: 'running' })
    expect(state.nodes['second']).toMatchObject({ status: 'pending' })
    expect(state.nodes['finish']).toEqual({ id: 'finish', kind: 'step', parent: 'seq-1', status: 'pending', attempts: 0 })
    expect(state.nodes['seq-1']).toMatchObject({ kind: 'sequence', status: 'running' })
    expect(state.nodes['seq-1']!.parent).toBeUndefined()
    expect(state.waiting).toEqual([{ node: 'first', signal: 'one' }])
    expect(state.signals).toEqual([{ name: 'two', payload: { early: true }, at: 1_000_000 }])
    // Plain data: a JSON round trip changes nothing.
    expect(JSON.parse(JSON.stringify(state))).toEqual(state)
    expect(await stored(reader, 'paused')).toEqual(state)

    await run.signal('one', 'go')
    await advance()
    const done = run.state()
    expect(done.status).toBe('completed')
    expect(done.output).toBe(84)
    expect(done.finishedAt).toBe(1_000_000)
    expect(done.waiting).toEqual([])
    expect(done.signals).toEqual([])
    expect(done.nodes['first']).toMatchObject({ status: 'completed', output: 'go' })
    expect(done.nodes['second']).toMatchObject({ status: 'completed', output: { early: true } })
    expect(done.nodes['seq-1']).toMatchObject({ status: 'completed', output: 84 })
    expect(await stored(reader, 'paused')).toEqual(done)
    // runState over the exported history and meta gives the same.
    const meta = { ...wf.list().find((r) => r.id === 'paused')!, output: 84 }
    expect(runState(def, meta, run.history())).toEqual(done)
  })

  it('a forEach in flight: each instance by its index path, completions out of order', async () => {
    const { wf, reader } = await setup()
    const pending = new Map<number, ReturnType<typeof later<string>>>()
    wf.register('work', (n: number) => {
      const p = later<string>()
      pending.set(n, p)
      return p.promise
    })
    const def = workflow('fan', forEach('$input', step('work', { fn: 'work' }, { input: '$item' }), { id: 'each' }))
    wf.define(def)
    const run = await wf.start(def, [10, 11, 12], { id: 'fan-1' })
    await advance()
    pending.get(10)!.resolve('ten')
    await advance()

    const state = run.state()
    expect(state.nodes['each']).toMatchObject({ kind: 'forEach', status: 'running' })
    const work = state.nodes['work']!
    expect(work).toMatchObject({ status: 'running', attempts: 3, parent: 'each' })
    expect(work.output).toBeUndefined()
    expect(work.instances).toEqual({
      '[0]': { status: 'completed', attempts: 1, output: 'ten' },
      '[1]': { status: 'running', attempts: 1 },
      '[2]': { status: 'running', attempts: 1 },
    })
    expect(await stored(reader, 'fan-1')).toEqual(state)

    pending.get(11)!.reject(new PermanentError('no eleven'))
    await advance()
    const failed = run.state()
    expect(failed.status).toBe('failed')
    expect(failed.nodes['work']!.instances).toEqual({
      '[0]': { status: 'completed', attempts: 1, output: 'ten' },
      '[1]': { status: 'failed', attempts: 1, error: expect.objectContaining({ message: 'no eleven' }), reason: 'step-failed' },
      '[2]': { status: 'cancelled', attempts: 1, reason: 'cancelled' },
    })
    expect(failed.nodes['each']).toMatchObject({ status: 'failed' })
    expect(failed.error).toMatchObject({ code: 'STEP_FAILED' })
    expect(await stored(reader, 'fan-1')).toEqual(failed)
  })

  it('a forEach whose instances finish out of start order: each completion goes to the instance its token names', async () => {
    const { wf } = await setup()
    const pending = new Map<number, ReturnType<typeof later<string>>>()
    wf.register('work', (n: number) => {
      const p = later<string>()
      pending.set(n, p)
      return p.promise
    })
    wf.define(workflow('fan', forEach('$input', step('work', { fn: 'work' }, { input: '$item' }))))
    const run = await wf.start('fan', [10, 11])
    await advance()
    pending.get(11)!.resolve('eleven')
    await advance()
    expect(run.state().nodes['work']!.instances).toEqual({
      '[0]': { status: 'running', attempts: 1 },
      '[1]': { status: 'completed', attempts: 1, output: 'eleven' },
    })
  })

  it('instances failing out of start order, before the retry starts', async () => {
    const { wf } = await setup()
    let busy = 1
    wf.register('resize', (image: string) => {
      if (image === 'b' && busy-- > 0) throw new Error('busy')
      return `small-${image}`
    })
    wf.define(workflow('album', forEach('$input', step('resize', { fn: 'resize' }, { input: '$item', retry: { attempts: 2, initialMs: 100, jitter: false } }))))
    const run = await wf.start('album', ['a', 'b'])
    await advance()
    expect(run.state().nodes['resize']!.instances).toMatchObject({
      '[0]': { status: 'completed', attempts: 1, output: 'small-a' },
      '[1]': { status: 'retrying', attempts: 1 },
    })
  })

  it('a completed forEach and loop: outputs by item, loop iterations as instances', async () => {
    const { wf } = await setup()
    wf.register('square', (n: number) => n * n)
    let counted = 0
    wf.register('inc', () => ++counted)
    const squares = workflow('squares', forEach('$input', step('square', { fn: 'square' }, { input: '$item' }), { id: 'each' }))
    const count = workflow('count', loop({ until: { path: '$steps.inc', op: 'gte', value: 3 }, maxIterations: 10, id: 'again' }, step('inc', { fn: 'inc' })))
    wf.define(squares)
    wf.define(count)
    const a = await wf.start(squares, [2, 3])
    const b = await wf.start(count, null)
    await advance()
    expect(await a.result()).toEqual([4, 9])
    expect(a.state().nodes['each']).toMatchObject({ status: 'completed', output: [4, 9] })
    expect(a.state().nodes['square']).toMatchObject({ status: 'completed', attempts: 2 })
    expect(await b.result()).toBe(3)
    const inc = b.state().nodes['inc']!
    expect(inc.status).toBe('completed')
    expect(Object.keys(inc.instances!)).toEqual(['[0]', '[1]', '[2]'])
    expect(inc.instances!['[2]']).toEqual({ status: 'completed', attempts: 1, output: 3 })
    expect(b.state().nodes['again']).toMatchObject({ kind: 'loop', status: 'completed', output: 3 })
  })

  it('a retrying step: its attempts, the last error and when the next attempt is due', async () => {
    const { wf, reader } = await setup()
    let failures = 2
    wf.register('flaky', () => {
      if (failures-- > 0) throw new Error(`flake ${2 - failures}`)
      return 'ok'
    })
    const def = workflow('retries', step('flaky', { fn: 'flaky' }, { retry: { attempts: 3, initialMs: 1_000, factor: 2, jitter: false } }))
    wf.define(def)
    const run = await wf.start(def, null, { id: 'retry-1' })
    await advance()
    const first = run.state()
    expect(first.nodes['flaky']).toEqual({
      id: 'flaky',
      kind: 'step',
      status: 'retrying',
      attempts: 1,
      error: expect.objectContaining({ message: 'flake 1' }),
      retryAt: 1_001_000,
    })
    expect(await stored(reader, 'retry-1')).toEqual(first)
    await advance(1_000)
    expect(run.state().nodes['flaky']).toMatchObject({ status: 'retrying', attempts: 2, error: { message: 'flake 2' }, retryAt: 1_003_000 })
    await advance(2_000)
    expect(run.state().nodes['flaky']).toEqual({ id: 'flaky', kind: 'step', status: 'completed', attempts: 3, output: 'ok' })
    expect(run.state().status).toBe('completed')
  })

  it('instances retried out of start order: once the retry starts, the retried one has its failure, the other its output', async () => {
    const { wf } = await setup()
    let busy = 1
    // b fails at once (a rejection settles in fewer turns than a value): its failure is recorded before a's output.
    wf.register('resize', (image: string) => {
      if (image === 'b' && busy-- > 0) throw new Error('busy')
      return `small-${image}`
    })
    wf.define(workflow('album', forEach('$input', step('resize', { fn: 'resize' }, { input: '$item', retry: { attempts: 2, initialMs: 100, jitter: false } }))))
    const run = await wf.start('album', ['a', 'b'])
    await advance()
    const order = run.history().flatMap((e) => (e.type === 'step-completed' ? [e.outcome] : []))
    expect(order).toEqual(['transient', 'ok'])
    // The failure is b's from the start: step-started carries the token its completion names.
    await advance(100)
    expect(run.state().nodes['resize']!.instances).toEqual({
      '[0]': { status: 'completed', attempts: 1, output: 'small-a' },
      '[1]': { status: 'completed', attempts: 2, output: 'small-b' },
    })
  })

  it('nested forEach and pipeline stages: instances by index path', async () => {
    const { wf } = await setup()
    wf.register('cell', ({ row, col }: { row: number; col: number }) => row * 10 + col)
    wf.register('upper', (s: string) => s.toUpperCase())
    wf.register('exclaim', (s: string) => `${s}!`)
    const grid = workflow(
      'grid',
      forEach('$input', forEach('$item', step('cell', { fn: 'cell' }, { input: { row: '$item', col: '$index' } }), { id: 'cols' }), { id: 'rows' }),
    )
    const shout = workflow(
      'shout',
      pipeline('stages', '$input', [step('upper', { fn: 'upper' }, { input: '$item' }), step('exclaim', { fn: 'exclaim' }, { input: '$item' })]),
    )
    wf.define(grid)
    wf.define(shout)
    const g = await wf.start(grid, [
      [1, 2],
      [3, 4],
    ])
    const p = await wf.start(shout, ['a', 'b'])
    await advance()
    await g.result()
    expect(Object.keys(g.state().nodes['cell']!.instances!)).toEqual(['[0][0]', '[0][1]', '[1][0]', '[1][1]'])
    expect(g.state().nodes['cell']!.instances!['[1][0]']).toEqual({ status: 'completed', attempts: 1, output: 30 })
    expect(g.state().nodes['rows']).toMatchObject({ status: 'completed' })
    expect(g.state().nodes['cols']).toMatchObject({ status: 'completed', parent: 'rows' })
    expect(g.state().nodes['cols']!.instances!['[1]']).toEqual({ status: 'completed', attempts: 0, output: [30, 41] })
    expect(g.state().nodes['rows']!.output).toEqual(await g.result())
    expect(await p.result()).toEqual(['A!', 'B!'])
    const state = p.state()
    expect(state.nodes['stages']).toMatchObject({ kind: 'pipeline', status: 'completed', output: ['A!', 'B!'] })
    expect(state.nodes['exclaim']!.instances).toEqual({
      '[0]': { status: 'completed', attempts: 1, output: 'A!' },
      '[1]': { status: 'completed', attempts: 1, output: 'B!' },
    })
  })

  it('a failed run with compensations: compensating, compensated, compensation-failed', async () => {
    const { wf, reader } = await setup()
    const undoB = later()
    wf.register('do', (name: string) => `${name} done`)
    wf.register('undo-b', () => undoB.promise)
    wf.register('undo-a', () => {
      throw new PermanentError('cannot undo a')
    })
    wf.register('fail', () => {
      throw new PermanentError('boom')
    })
    const def = workflow(
      'saga',
      sequence(
        step('a', { fn: 'do' }, { input: 'a', compensate: { run: { fn: 'undo-a' } } }),
        step('b', { fn: 'do' }, { input: 'b', compensate: { run: { fn: 'undo-b' } } }),
        step('c', { fn: 'fail' }),
      ),
    )
    wf.define(def)
    const run = await wf.start(def, null, { id: 'saga-1' })
    await advance()
    const mid = run.state()
    expect(mid.status).toBe('running')
    expect(mid.nodes['c']).toMatchObject({ status: 'failed', attempts: 1, error: { message: 'boom' } })
    expect(mid.nodes['b']).toEqual({ id: 'b', kind: 'step', parent: 'seq-1', status: 'compensating', attempts: 1, output: 'b done' })
    expect(mid.nodes['a']).toMatchObject({ status: 'completed', output: 'a done' })
    expect(await stored(reader, 'saga-1')).toEqual(mid)

    undoB.resolve(undefined)
    await advance()
    const end = run.state()
    expect(end.status).toBe('compensation-failed')
    expect(end.nodes['b']).toMatchObject({ status: 'compensated' })
    expect(end.nodes['a']).toMatchObject({ status: 'compensation-failed', error: { message: 'cannot undo a' } })
    expect(end.nodes['c']).toMatchObject({ status: 'failed' })
    expect(end.error).toMatchObject({ code: 'STEP_FAILED', details: { step: 'c', status: 'compensation-failed' } })
    expect(await stored(reader, 'saga-1')).toEqual(end)
  })

  it('a cancelled run: the step in flight cancelled, the rest never ran', async () => {
    const { wf, reader } = await setup()
    wf.register('hang', hang)
    wf.register('next', () => 'next')
    const def = workflow('cancellable', sequence(step('slow', { fn: 'hang' }), step('after', { fn: 'next' })))
    wf.define(def)
    const run = await wf.start(def, null, { id: 'cancel-1' })
    await advance()
    expect(run.state()).toMatchObject({ status: 'running', cancelling: false, nodes: { slow: { status: 'running', attempts: 1 } } })
    await run.cancel()
    await advance()
    const state = run.state()
    expect(state.status).toBe('cancelled')
    expect(state.cancelling).toBe(true)
    expect(state.nodes['slow']).toMatchObject({ status: 'cancelled', attempts: 1 })
    expect(state.nodes['after']).toMatchObject({ status: 'pending', attempts: 0 })
    expect(state.nodes['seq-1']).toMatchObject({ status: 'cancelled' })
    expect(state.error).toMatchObject({ code: 'RUN_CANCELLED' })
    expect(await stored(reader, 'cancel-1')).toEqual(state)
  })

  it('a run continued as new: its current generation only', async () => {
    const { wf, reader } = await setup()
    wf.register('inc', (n: number) => n + 1)
    const def = workflow(
      'ticker',
      sequence(step('tick', { fn: 'inc' }, { input: '$input' }), waitFor('gate', 'next'), continueAsNew('again', { input: '$steps.tick' })),
    )
    wf.define(def)
    const run = await wf.start(def, 0, { id: 'ticker-1' })
    for (let g = 1; g <= 3; g++) {
      await advance()
      await macrotask()
      await advance()
      const state = run.state()
      expect(state.generation).toBe(g)
      // One instance of tick: this generation's (its key `ticker-1#g/tick` is no iteration).
      expect(state.nodes['tick']).toEqual({ id: 'tick', kind: 'step', parent: 'seq-1', status: 'completed', attempts: 1, output: g })
      expect(state.nodes['again']).toMatchObject({ status: 'pending', attempts: 0 })
      expect(state.waiting).toEqual([{ node: 'gate', signal: 'next' }])
      expect(await stored(reader, 'ticker-1')).toEqual(state)
      await run.signal('next')
    }
  })

  it('runState over a history: out-of-order completions go to the instance their token names, a retry to its path', () => {
    const def = workflow('fan', forEach('$input', step('work', { fn: 'work' }, { input: '$item' }), { id: 'each' }))
    const meta = { id: 'r', definition: 'fan', version: def.version, status: 'running' as const, startedAt: 5 }
    const events = [
      { type: 'started', seq: 1, at: 5 },
      { type: 'decided', seq: 2, at: 5, token: 1, node: 'each', value: 2, items: ['a', 'b'] },
      { type: 'step-started', seq: 3, at: 5, step: 'work', attempt: 1, key: 'r/work[0]', compensation: false, token: 3 },
      { type: 'step-started', seq: 4, at: 5, step: 'work', attempt: 1, key: 'r/work[1]', compensation: false, token: 5 },
      { type: 'step-completed', seq: 5, at: 6, token: 5, step: 'work', attempt: 1, outcome: 'ok', output: 'B' },
      { type: 'node-done', seq: 6, at: 6, node: 'work', outcome: 'ok', path: '[1]' },
      { type: 'step-completed', seq: 7, at: 7, token: 3, step: 'work', attempt: 1, outcome: 'transient', error: { name: 'Error', message: 'busy' } },
      { type: 'retry', seq: 8, at: 7, step: 'work', attempt: 2, when: 107, path: '[0]' },
    ] as unknown as WorkflowEvent[]
    const state = runState(def, meta, events)
    expect(state.nodes['work']!.instances).toEqual({
      '[0]': { status: 'retrying', attempts: 1, error: { name: 'Error', message: 'busy' }, retryAt: 107 },
      '[1]': { status: 'completed', attempts: 1, output: 'B' },
    })
    expect(state.nodes['work']!.status).toBe('retrying')
    expect(state.nodes['each']!.status).toBe('running')
    expect(state).toMatchObject({ id: 'r', status: 'running', generation: 1, startedAt: 5, cancelling: false, waiting: [], signals: [] })
  })

  it('a run resumed by other workflows on the store: the same state, live there', async () => {
    const { orrery, wf, store } = await setup()
    const define = (w: Workflows) => {
      w.register('double', (n: number) => n * 2)
      w.define(
        workflow(
          'resumable',
          sequence(step('a', { fn: 'double' }, { input: '$input' }), waitFor('gate', 'go'), step('b', { fn: 'double' }, { input: '$steps.a' })),
        ),
      )
    }
    define(wf)
    const run = await wf.start('resumable', 4, { id: 'moved' })
    await advance()
    const before = run.state()
    expect(before.waiting).toEqual([{ node: 'gate', signal: 'go' }])
    wf.close()
    await macrotask()
    const second = await orrery.workflows({ store })
    define(second)
    await advance()
    const again = second.get('moved')!
    expect(again.state()).toEqual(before)
    await again.signal('go')
    expect(await again.result()).toBe(16)
    expect(again.state().nodes['b']).toMatchObject({ status: 'completed', output: 16 })
  })

  it('outputs are the values result() and history() hand out, as the history keeps them (not JSON)', async () => {
    const { wf, reader } = await setup()
    wf.register('odd', () => ({ n: 10n, d: new Date(0), u: undefined, list: [1, undefined] }))
    const def = workflow('odd', step('odd', { fn: 'odd' }))
    wf.define(def)
    const run = await wf.start(def, null, { id: 'odd-1' })
    await advance()
    const result = await run.result()
    const recorded = run.history().find((e) => e.type === 'step-completed')!
    const state = run.state()
    expect(state.output).toEqual(result)
    expect(state.nodes['odd']!.output).toEqual(recorded.type === 'step-completed' ? recorded.output : 'none')
    const output = state.nodes['odd']!.output as { n: unknown; d: unknown; list: unknown[] }
    expect(output.n).toBe(10n)
    expect(output.d).toEqual(new Date(0))
    expect(Object.hasOwn(output, 'u')).toBe(true)
    expect(output.list).toEqual([1, undefined])
    // The same from the store: what a resume reads back.
    expect(await stored(reader, 'odd-1')).toEqual(state)
  })

  it("a container's output is result()'s: a branch that did not finish gives undefined, not null", async () => {
    const { wf, reader } = await setup()
    wf.register('one', () => 1)
    const def = workflow('first', parallel([step('one', { fn: 'one' }), sleep('nap', 1_000)], { join: quorum(1), id: 'race' }))
    wf.define(def)
    const run = await wf.start(def, null, { id: 'race-1' })
    await advance()
    expect(await run.result()).toEqual([1, undefined])
    const state = run.state()
    expect(state.output).toEqual([1, undefined])
    expect(state.nodes['race']).toMatchObject({ status: 'completed', output: [1, undefined] })
    expect((state.nodes['race']!.output as unknown[])[1]).toBeUndefined()
    expect(state.nodes['nap']).toMatchObject({ status: 'cancelled' })
    expect(state.nodes['nap']!.output).toBeUndefined()
    expect(await stored(reader, 'race-1')).toEqual(state)
  })

  it('waits, sleeps and containers inside iterations: each instance that ended, by its index path, with its output', async () => {
    const { wf, reader } = await setup()
    wf.register('label', (n: number) => `#${n}`)
    wf.register('big', (n: number) => `big ${n}`)
    const def = workflow(
      'batches',
      forEach(
        '$input',
        sequence('each-item', [
          waitFor('ready', 'ready'),
          sleep('pause', 100),
          branch(
            [when({ path: '$item', op: 'gt', value: 5 }, step('big', { fn: 'big' }, { input: '$item' }))],
            step('label', { fn: 'label' }, { input: '$item' }),
            {
              id: 'pick',
            },
          ),
        ]),
        { id: 'items', concurrency: 1 },
      ),
    )
    wf.define(def)
    const run = await wf.start(def, [3, 9], { id: 'batches-1' })
    await advance()
    await run.signal('ready', 'first')
    await advance()
    const mid = run.state()
    expect(mid.nodes['ready']!.instances).toEqual({ '[0]': { status: 'completed', attempts: 0, output: 'first' } })
    // The sleep in flight: only instances that ended are listed for nodes other than steps.
    expect(mid.nodes['pause']).toMatchObject({ status: 'running' })
    expect(mid.nodes['pause']!.instances).toBeUndefined()
    expect(await stored(reader, 'batches-1')).toEqual(mid)

    await run.signal('ready', 'second')
    await advance(100)
    await advance(100)
    expect(await run.result()).toEqual(['#3', 'big 9'])
    const done = run.state()
    expect(done.nodes['items']).toMatchObject({ status: 'completed', output: ['#3', 'big 9'] })
    expect(done.nodes['ready']!.instances).toEqual({
      '[0]': { status: 'completed', attempts: 0, output: 'first' },
      '[1]': { status: 'completed', attempts: 0, output: 'second' },
    })
    expect(done.nodes['pause']!.instances).toEqual({
      '[0]': { status: 'completed', attempts: 0, output: null },
      '[1]': { status: 'completed', attempts: 0, output: null },
    })
    expect(done.nodes['pick']!.instances).toEqual({
      '[0]': { status: 'completed', attempts: 0, output: '#3' },
      '[1]': { status: 'completed', attempts: 0, output: 'big 9' },
    })
    expect(done.nodes['each-item']!.instances!['[1]']).toEqual({ status: 'completed', attempts: 0, output: 'big 9' })
    expect(Object.keys(done.nodes['big']!.instances!)).toEqual(['[1]'])
    expect(await stored(reader, 'batches-1')).toEqual(done)
  })

  it("a loop inside a forEach: each loop instance's output is its last iteration's", async () => {
    const { wf } = await setup()
    const counts = new Map<string, number>()
    wf.register('count', (item: string) => {
      const n = (counts.get(item) ?? 0) + 1
      counts.set(item, n)
      return item === 'b' ? n * 10 : n
    })
    const def = workflow(
      'counts',
      forEach(
        '$input',
        loop({ until: { path: '$steps.count', op: 'gte', value: 2 }, maxIterations: 5, id: 'again' }, step('count', { fn: 'count' }, { input: '$item' })),
        { id: 'each' },
      ),
    )
    wf.define(def)
    const run = await wf.start(def, ['a', 'b'])
    await advance()
    expect(await run.result()).toEqual([2, 10])
    const state = run.state()
    expect(state.nodes['each']).toMatchObject({ status: 'completed', output: [2, 10] })
    expect(state.nodes['again']!.instances).toEqual({
      '[0]': { status: 'completed', attempts: 0, output: 2 },
      '[1]': { status: 'completed', attempts: 0, output: 10 },
    })
    expect(Object.keys(state.nodes['count']!.instances!)).toEqual(['[0][0]', '[1][0]', '[0][1]'])
  })

  it('a stored run whose version left the store: WORKFLOW_NOT_FOUND', async () => {
    const { wf, store } = await setup()
    store
      .namespace('orrery.workflows')
      .put('run/ghost', { id: 'ghost', definition: 'gone', version: 'v1', input: null, seed: 1, status: 'completed', startedAt: 0, finishedAt: 1 })
    expect(() => wf.get('ghost')!.state()).toThrow(expect.objectContaining({ code: 'WORKFLOW_NOT_FOUND' }))
  })
})

describe('signal() and cancel() acknowledge their record', () => {
  const gated = (name: string): WorkflowDefinition => workflow(name, sequence(waitFor('gate', 'go'), step('after', { fn: 'echo' }, { input: '$steps.gate' })))

  it('resolve once recorded; bad input and RUN_NOT_FOUND throw at once', async () => {
    const { wf, reader } = await setup()
    wf.register('echo', (x: unknown) => x)
    wf.define(gated('gated'))
    const run = await wf.start('gated', null, { id: 'ack-1' })
    // Refused at once, nothing sent.
    expect(() => run.signal('nope')).toThrow(expect.objectContaining({ code: 'SIGNAL_UNKNOWN' }))
    expect(() => run.signal(5 as unknown as string)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
    expect(() => run.signal('go', Symbol('x'))).toThrow(expect.objectContaining({ code: 'INVALID_PAYLOAD' }))
    expect(run.history().some((e) => e.type === 'signal')).toBe(false)
    const ack = run.signal('go', 7)
    expect(ack).toBeInstanceOf(Promise)
    await expect(ack).resolves.toBeUndefined()
    expect(run.history().some((e) => e.type === 'signal' && e.name === 'go')).toBe(true)
    expect(await run.result()).toBe(7)
    // Ended: nothing is sent, and the promise resolves.
    await expect(run.signal('go')).resolves.toBeUndefined()
    await expect(run.cancel()).resolves.toBeUndefined()

    // A run recorded as running but not running here: RUN_NOT_FOUND at once, as before.
    const unfinished = await wf.start('gated', null, { id: 'ack-2' })
    await macrotask()
    await macrotask()
    const other = await reader()
    const elsewhere = other.get('ack-2')! as WorkflowRun
    expect(() => elsewhere.signal('go')).toThrow(expect.objectContaining({ code: 'RUN_NOT_FOUND' }))
    expect(() => elsewhere.cancel()).toThrow(expect.objectContaining({ code: 'RUN_NOT_FOUND' }))
    other.close()
    await expect(unfinished.cancel()).resolves.toBeUndefined()
    expect(unfinished.status()).toBe('cancelled')
    expect(unfinished.history().some((e) => e.type === 'cancel')).toBe(true)
  })

  it('a signal to a queued run resolves once the run begins and records it', async () => {
    const { wf } = await setup()
    wf.register('echo', (x: unknown) => x)
    wf.define(gated('one-at-a-time'), { maxConcurrentRuns: 1 })
    const first = await wf.start('one-at-a-time', null)
    const second = await wf.start('one-at-a-time', null)
    expect(second.status()).toBe('queued')
    const held = second.signal('go', 'held')
    expect(await settledYet(held)).toBe(false)
    expect(second.state().signals).toEqual([]) // held in memory, not recorded yet
    await first.signal('go', 'first')
    expect(await first.result()).toBe('first')
    await advance()
    await held
    expect(second.history().some((e) => e.type === 'signal' && e.payload === 'held')).toBe(true)
    expect(await second.result()).toBe('held')
  })

  it('a signal or cancel whose run could not write its history rejects', async () => {
    const { wf, store } = await setup()
    wf.register('echo', (x: unknown) => x)
    wf.define(workflow('twice', sequence(waitFor('one', 'go'), waitFor('two', 'go'), waitFor('three', 'go'))))
    const run = await wf.start('twice', null, { id: 'broken' })
    await advance()
    store.close()
    // The first write after the close fails; the run writes nothing more, and what it sends rejects.
    const first = run.signal('go', 1)
    first.catch(() => {})
    await advance()
    expect((await errorOf(() => run.signal('go', 2)))?.code).toBe('CLOSED')
    expect((await errorOf(() => run.cancel()))?.code).toBe('CLOSED')
  })

  // The write that fails is the signal's own: its promise should reject too. History.append's
  // turn ack resolves it today (requested of the integrator): flip to `it` once it rejects.
  it('the signal whose own write failed rejects', async () => {
    const { wf, store } = await setup()
    wf.define(workflow('lost', sequence(waitFor('one', 'go'), waitFor('two', 'go'))))
    const run = await wf.start('lost', null)
    await advance()
    store.close()
    expect((await errorOf(() => run.signal('go', 1)))?.code).toBe('CLOSED')
  })

  it.skipIf(ENGINE !== 'native' || IN_BROWSER)('on a durable store: resolve once the record is on disk, which a reopened store finds', async () => {
    vi.useRealTimers()
    const { join } = await import('node:path')
    const path = join(await tempDir('orrery-state-'), 'runs.redb')
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    let store = orrery.openStore({ path })
    const wf = await orrery.workflows({ store })
    wf.define(workflow('durable', sequence(waitFor('one', 'go'), waitFor('two', 'go'), step('slow', { fn: 'hang' }))))
    wf.register('hang', hang)
    const run = await wf.start('durable', null, { id: 'disk-1' })
    const signalled = run.signal('go', 'a')
    // The disk answers from its writer thread: no microtask settles it.
    expect(await settledYet(signalled)).toBe(false)
    await signalled
    const cancelled = run.cancel()
    expect(await settledYet(cancelled)).toBe(false)
    await cancelled
    await run.result().catch(() => {})
    wf.close()
    store.close()

    store = orrery.openStore({ path })
    const again = await orrery.workflows({ store, resume: false })
    const state = again.get('disk-1')!.state()
    expect(state.status).toBe('cancelled')
    expect(state.nodes['one']).toMatchObject({ status: 'completed', output: 'a' })
    expect(state.nodes['two']).toMatchObject({ status: 'cancelled' })
    expect(state.cancelling).toBe(true)
    again.close()
    store.close()
  })
})
