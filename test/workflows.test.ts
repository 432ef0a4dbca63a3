/**
 * Workflows on both engines, on fake time: every pattern (sequence, parallel joins, branch,
 * loops, forEach, scatterGather over a real mesh, nested children, sleep, signals), retries,
 * timeouts, sagas, cancel, idempotent starts, errors, events and history, JSON round trips,
 * and resuming runs from their store.
 */
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import { z } from 'zod'

import {
  Agent,
  branch,
  child,
  continueAsNew,
  delegate,
  forEach,
  loop,
  Orrery,
  OrreryError,
  parallel,
  PermanentError,
  pipeline,
  scatterGather,
  sequence,
  sleep,
  step,
  waitFor,
  when,
  workflow,
  type AgentContext,
  type StepContext,
  type WorkflowEvent,
  type WorkflowRun,
  type Workflows,
} from '../ts/node.js'
import { MAX_UNCLAIMED_SIGNALS } from '../ts/workflows/run.js'
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
async function setup(options: { mesh?: boolean } = {}) {
  vi.useFakeTimers({ now: 1_000_000, toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
  const orrery = await Orrery.create({ engine: ENGINE })
  open.push(orrery)
  const mesh = options.mesh ? await orrery.mesh({ seed: 7, heartbeat: { interval: 1_000 } }) : undefined
  const store = orrery.openStore()
  const wf = await orrery.workflows({ store, ...(mesh ? { mesh } : {}) })
  return { orrery, wf, store, mesh }
}

/** A step that never ends on its own: it rejects when its attempt is aborted. */
function hang(_input: unknown, ctx: StepContext): Promise<never> {
  return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)))
}

/** Lets promises settle and due timers fire, `ms` of fake time at most. */
const advance = (ms = 0) => vi.advanceTimersByTimeAsync(ms)

/** Lets continueAsNew chains go on: each generation begins on a macrotask (setImmediate in Node, a 0 ms timeout in a browser). */
async function generations(turns = 50) {
  for (let i = 0; i < turns; i++) {
    await advance()
    if (typeof setImmediate === 'function') await new Promise((resolve) => setImmediate(resolve))
  }
}

function types(events: readonly WorkflowEvent[]): string[] {
  return events.map((e) => e.type)
}

describe('workflows: patterns', () => {
  it('runs a sequence: data flows by reference, the last step is the output, events and history say what happened', async () => {
    const { wf } = await setup()
    wf.register('double', (n: number) => n * 2)
    wf.register('add', (x: { a: number; b: number }) => x.a + x.b)
    wf.define(
      workflow(
        'math',
        sequence(
          step('a', { fn: 'double' }, { input: '$input.n' }),
          step('b', { fn: 'double' }, { input: '$steps.a' }),
          step('c', { fn: 'add' }, { input: { a: '$steps.a', b: '$steps.b' } }),
        ),
      ),
    )
    const run = await wf.start('math', { n: 3 }, { id: 'r1' })
    const seen: WorkflowEvent[] = []
    run.events.subscribe((e) => seen.push(e))
    expect(await run.result()).toBe(18)
    expect(run.status()).toBe('completed')
    const history = run.history()
    expect(history.map((e) => e.seq)).toEqual(history.map((_, i) => i + 1))
    expect(types(history).filter((t) => t === 'step-started' || t === 'step-completed' || t === 'started' || t === 'run-finished')).toEqual([
      'started',
      'step-started',
      'step-completed',
      'step-started',
      'step-completed',
      'step-started',
      'step-completed',
      'run-finished',
    ])
    const started = history.filter((e) => e.type === 'step-started')
    expect(started.map((e) => (e.type === 'step-started' ? e.key : ''))).toEqual(['r1/a', 'r1/b', 'r1/c'])
    const done = history.find((e) => e.type === 'step-completed' && e.step === 'b')
    expect(done).toMatchObject({ outcome: 'ok', output: 12, attempt: 1 })
    expect(history[history.length - 1]).toMatchObject({ type: 'run-finished', status: 'completed', output: 18 })
    expect(history.some((e) => e.type === 'node-done')).toBe(true)
    // The events stream saw the same events from its subscription on, and completed.
    expect(seen.length).toBeGreaterThan(0)
    expect(seen[seen.length - 1]!.type).toBe('run-finished')
  })

  it('parallel all gives every output in branch order; any gives the first success and aborts the rest', async () => {
    const { wf } = await setup()
    let aborted = 0
    wf.register('slow', async (n: number, ctx) => {
      await new Promise((resolve, reject) => {
        setTimeout(resolve, n)
        ctx.signal.addEventListener('abort', () => {
          aborted++
          reject(ctx.signal.reason)
        })
      })
      return n
    })
    wf.define(
      workflow('all', parallel([step('x', { fn: 'slow' }, { input: 30 }), step('y', { fn: 'slow' }, { input: 10 }), step('z', { fn: 'slow' }, { input: 20 })])),
    )
    wf.define(
      workflow(
        'any',
        parallel([step('x', { fn: 'slow' }, { input: 30 }), step('y', { fn: 'slow' }, { input: 10 }), step('z', { fn: 'slow' }, { input: 20 })], {
          join: 'any',
        }),
      ),
    )
    const all = await wf.start('all', null)
    await advance(30)
    expect(await all.result()).toEqual([30, 10, 20])
    const any = await wf.start('any', null)
    await advance(10)
    expect(await any.result()).toEqual([undefined, 10, undefined])
    expect(aborted).toBe(2)
  })

  it('parallel quorum succeeds at n successes; with a timeout it fails when n cannot be reached in time', async () => {
    const { wf } = await setup()
    wf.register('ok', (v: unknown) => v)
    wf.register('hang', hang)
    wf.register('fail', () => {
      throw new PermanentError('no')
    })
    wf.define(
      workflow(
        'q2',
        parallel([step('a', { fn: 'ok' }, { input: 1 }), step('b', { fn: 'hang' }), step('c', { fn: 'ok' }, { input: 3 })], { join: { quorum: 2 } }),
      ),
    )
    const quorum = await wf.start('q2', null)
    await advance()
    expect(await quorum.result()).toEqual([1, undefined, 3])
    wf.define(
      workflow(
        'q2-timeout',
        parallel([step('a', { fn: 'ok' }, { input: 1 }), step('b', { fn: 'hang' }), step('c', { fn: 'fail' })], { join: { quorum: 2 }, timeoutMs: 500 }),
      ),
    )
    const late = await wf.start('q2-timeout', null)
    const settled = late.result().catch((e: unknown) => e)
    await advance(499)
    expect(late.status()).toBe('running')
    await advance(1)
    const error = (await settled) as { code?: string }
    expect(error.code).toBe('STEP_FAILED')
    expect(late.status()).toBe('failed')
  })

  it('branches on conditions, falls back to otherwise, and outputs nothing when no arm is taken', async () => {
    const { wf } = await setup()
    wf.register('label', (s: string) => s)
    wf.registerCondition('isBig', (n) => (n as number) > 100)
    const def = workflow(
      'route',
      branch(
        [
          when({ path: '$input.kind', op: 'eq', value: 'a' }, step('a', { fn: 'label' }, { input: 'A' })),
          when({ fn: 'isBig', arg: '$input.size' }, step('big', { fn: 'label' }, { input: 'BIG' })),
        ],
        step('other', { fn: 'label' }, { input: 'OTHER' }),
      ),
    )
    wf.define(def)
    expect(await (await wf.start('route', { kind: 'a', size: 1 })).result()).toBe('A')
    expect(await (await wf.start('route', { kind: 'b', size: 500 })).result()).toBe('BIG')
    expect(await (await wf.start('route', { kind: 'b', size: 1 })).result()).toBe('OTHER')
    wf.define(workflow('none', branch([when({ path: '$input', op: 'truthy' }, step('a', { fn: 'label' }, { input: 'A' }))])))
    expect(await (await wf.start('none', 0)).result()).toBeUndefined()
  })

  it('loops while and until a condition holds, and fails past maxIterations', async () => {
    const { wf } = await setup()
    let count = 0
    wf.register('inc', () => ++count)
    wf.registerCondition('below3', () => count < 3)
    wf.define(workflow('while', loop({ while: { fn: 'below3' }, maxIterations: 10 }, step('inc', { fn: 'inc' }))))
    expect(await (await wf.start('while', null)).result()).toBe(3)
    count = 0
    wf.define(workflow('until', loop({ until: { path: '$steps.inc', op: 'gte', value: 4 }, maxIterations: 10 }, step('inc', { fn: 'inc' }))))
    const until = await wf.start('until', null, { id: 'u' })
    expect(await until.result()).toBe(4)
    // Each iteration has its own idempotency key.
    const keys = until.history().flatMap((e) => (e.type === 'step-started' ? [e.key] : []))
    expect(keys).toEqual(['u/inc[0]', 'u/inc[1]', 'u/inc[2]', 'u/inc[3]'])
    wf.define(workflow('bounded', loop({ until: { path: '$input', op: 'truthy' }, maxIterations: 2 }, step('inc', { fn: 'inc' }))))
    const bounded = await wf.start('bounded', false)
    const limit = (await errorOf(() => bounded.result())) as { code?: string; cause?: { code?: string }; details?: Record<string, unknown> }
    expect(limit.code).toBe('STEP_FAILED')
    expect(limit.cause?.code).toBe('LOOP_LIMIT')
    expect(limit.details?.['step']).toBe('loop-1')
    expect(bounded.status()).toBe('failed')
  })

  it('forEach runs its body per item with a concurrency limit, $item and $index, outputs in index order', async () => {
    const { wf } = await setup()
    let running = 0
    let most = 0
    wf.register('work', async (x: { item: number; index: number }) => {
      running++
      most = Math.max(most, running)
      await new Promise((resolve) => setTimeout(resolve, 10 * (5 - x.index)))
      running--
      return x.item * 10 + x.index
    })
    wf.define(workflow('each', forEach('$input.items', step('work', { fn: 'work' }, { input: { item: '$item', index: '$index' } }), { concurrency: 2 })))
    const run = await wf.start('each', { items: [1, 2, 3, 4, 5] }, { id: 'e' })
    await advance(200)
    expect(await run.result()).toEqual([10, 21, 32, 43, 54])
    expect(most).toBe(2)
    const keys = run.history().flatMap((e) => (e.type === 'step-started' ? [e.key] : []))
    expect(keys.sort()).toEqual(['e/work[0]', 'e/work[1]', 'e/work[2]', 'e/work[3]', 'e/work[4]'])
    // An empty list succeeds at once; a value that is no list fails the run.
    expect(await (await wf.start('each', { items: [] })).result()).toEqual([])
    expect((await errorOf(async () => (await wf.start('each', { items: 7 })).result()))?.code).toBe('STEP_FAILED')
  })

  it('scatterGather calls every agent offering the capability and aggregates their answers', async () => {
    const { wf, mesh } = await setup({ mesh: true })
    class Scorer extends Agent {
      static readonly capabilities = [{ name: 'score', version: '1.0.0' }]
      constructor(context: AgentContext) {
        super(context)
        this.handle<{ text: string }, { agent: string; score: number }>('score', (doc) => ({
          agent: this.id,
          score: doc.text.length + Number(this.id.slice(-1)),
        }))
      }
    }
    mesh!.define('scorer', Scorer)
    await mesh!.spawn('scorer', { id: 's', replicas: 3 })
    wf.registerMapping('best', (all) => Math.max(...(all as { score: number }[]).map((a) => a.score)))
    wf.define(workflow('scores', scatterGather('ask', 'score@^1', { input: { text: '$input' } })))
    wf.define(workflow('best', scatterGather('ask', 'score', { input: { text: '$input' }, aggregate: { fn: 'best' } })))
    const run = await wf.start('scores', 'abcd')
    await advance(10)
    expect(await run.result()).toEqual([
      { agent: 's-1', score: 5 },
      { agent: 's-2', score: 6 },
      { agent: 's-3', score: 7 },
    ])
    const best = await wf.start('best', 'ab')
    await advance(10)
    expect(await best.result()).toBe(5)
    await mesh!.shutdown()
  })

  it('scatterGather calls the agents a list names, in its order, and fails calls to agents missing or not offering the capability', async () => {
    const { wf, mesh } = await setup({ mesh: true })
    class Scorer extends Agent {
      static readonly capabilities = [{ name: 'score', version: '1.0.0' }]
      constructor(context: AgentContext) {
        super(context)
        this.handle<{ text: string }, string>('score', (doc) => `${this.id}:${doc.text}`)
      }
    }
    class Other extends Agent {
      static readonly capabilities = [{ name: 'other', version: '1.0.0' }]
      constructor(context: AgentContext) {
        super(context)
        this.handle('other', () => 'other')
      }
    }
    mesh!.define('scorer', Scorer)
    mesh!.define('other', Other)
    await mesh!.spawn('scorer', { id: 's', replicas: 3 })
    await mesh!.spawn('other', { id: 'o' })
    const ask = (agents: readonly string[] | `$${string}`, join?: 'any') =>
      scatterGather('ask', 'score@^1', { agents, input: { text: '$input.text' }, ...(join ? { join } : {}) })
    // A literal list, in its order (not the ids' order), and a list read from the run's input.
    wf.define(workflow('listed', ask(['s-3', 's-1'])))
    wf.define(workflow('by-ref', ask('$input.who')))
    const listed = await wf.start('listed', { text: 'a' })
    await advance(10)
    expect(await listed.result()).toEqual(['s-3:a', 's-1:a'])
    const byRef = await wf.start('by-ref', { text: 'b', who: ['s-2', 's-1'] })
    await advance(10)
    expect(await byRef.result()).toEqual(['s-2:b', 's-1:b'])
    // A listed agent that is paused is still called: its inbox keeps the request until it resumes.
    await mesh!.pause('s-1')
    const paused = await wf.start('listed', { text: 'p' })
    await advance(10)
    expect(paused.status()).toBe('running')
    await mesh!.resume('s-1')
    await advance(10)
    expect(await paused.result()).toEqual(['s-3:p', 's-1:p'])
    // A reference to what is no list of ids, or to a list naming an agent twice, fails the node.
    for (const who of [7, ['s-1', 2], ['s-1', 's-1']]) {
      const run = await wf.start('by-ref', { text: 'c', who })
      await advance(10)
      expect((await errorOf(() => run.result()))?.code).toBe('STEP_FAILED')
    }
    // An agent that does not offer the capability: NO_HANDLER at once.
    wf.define(workflow('wrong', ask(['s-1', 'o'])))
    const wrong = await wf.start('wrong', { text: 'd' })
    await advance(60_000)
    const refused = (await errorOf(() => wrong.result())) as { code?: string; cause?: { code?: string; details?: Record<string, unknown> } }
    expect(refused.code).toBe('STEP_FAILED')
    expect(refused.cause?.code).toBe('NO_HANDLER')
    expect(refused.cause?.details).toMatchObject({ agent: 'o', capability: 'score@^1' })
    const calls = (run: WorkflowRun) => run.history().flatMap((e) => (e.type === 'step-started' ? [e.key] : []))
    expect(calls(wrong).filter((k) => k.endsWith('[1]'))).toHaveLength(1)
    // An agent that is not registered: UNKNOWN_AGENT at once (not after the request's timeout); under 'any' the others answer.
    wf.define(workflow('ghost', ask(['ghost', 's-2'])))
    wf.define(workflow('ghost-any', ask(['ghost', 's-2'], 'any')))
    const some = await wf.start('ghost-any', { text: 'e' })
    await advance(10)
    expect(await some.result()).toEqual([undefined, 's-2:e'])
    const ghost = await wf.start('ghost', { text: 'f' })
    await advance(10)
    const missing = (await errorOf(() => ghost.result())) as { code?: string; cause?: { code?: string } }
    expect(missing.code).toBe('STEP_FAILED')
    expect(missing.cause?.code).toBe('UNKNOWN_AGENT')
    expect(calls(ghost).filter((k) => k.endsWith('[0]'))).toHaveLength(1)
    // Refused in the definition: an empty list, an id twice, a quorum above the agents listed.
    for (const agents of [[], ['s-1', 's-1'], ['bad id']]) {
      expect((await errorOf(() => workflow('bad', scatterGather('ask', 'score', { agents }))))?.code).toBe('DEFINITION_INVALID')
    }
    expect((await errorOf(() => workflow('bad', scatterGather('ask', 'score', { agents: ['s-1'], join: { quorum: 2 } }))))?.code).toBe('DEFINITION_INVALID')
    await mesh!.shutdown()
  })

  it('scatterGather gathers by its join and gives up at its timeout', async () => {
    const { wf, mesh } = await setup({ mesh: true })
    class Slow extends Agent {
      static readonly capabilities = [{ name: 'slow', version: '1.0.0' }]
      constructor(context: AgentContext) {
        super(context)
        // s-1 answers after 10 ms, s-2 after 10 s.
        this.handle<null, string>('slow', () => new Promise((resolve) => setTimeout(() => resolve(this.id), this.id === 's-1' ? 10 : 10_000)))
      }
    }
    mesh!.define('slow', Slow)
    await mesh!.spawn('slow', { id: 's', replicas: 2 })
    wf.define(workflow('first', scatterGather('ask', 'slow', { join: 'any' })))
    wf.define(workflow('bounded', scatterGather('ask', 'slow', { timeoutMs: 500 })))
    const first = await wf.start('first', null)
    await advance(20)
    expect(first.status()).toBe('completed')
    expect(await first.result()).toEqual(['s-1', undefined])
    const bounded = await wf.start('bounded', null)
    const settled = bounded.result().catch((e: unknown) => e)
    await advance(499)
    expect(bounded.status()).toBe('running')
    await advance(1)
    expect(((await settled) as { code?: string }).code).toBe('STEP_FAILED')
    expect(bounded.status()).toBe('failed')
    // The slow answers come and go unread before the mesh stops.
    await advance(10_000)
    await mesh!.shutdown()
  })

  it('calls capabilities on the mesh with the idempotency key in a header', async () => {
    const { wf, mesh } = await setup({ mesh: true })
    const keys: string[] = []
    class Upper extends Agent {
      static readonly capabilities = [{ name: 'upper', version: '1.0.0' }]
      constructor(context: AgentContext) {
        super(context)
        this.handle<string, string>('upper', (text, ctx) => {
          keys.push(ctx.message.headers['orrery-idempotency-key'] ?? '')
          return text.toUpperCase()
        })
      }
    }
    mesh!.define('upper', Upper)
    await mesh!.spawn('upper')
    wf.define(workflow('shout', step('up', { capability: 'upper' }, { input: '$input' })))
    const run = await wf.start('shout', 'hi', { id: 'cap' })
    await advance(10)
    expect(await run.result()).toBe('HI')
    expect(keys).toEqual(['cap/up'])
    await mesh!.shutdown()
  })

  it('runs children nested two deep, each with its idempotency key as its id', async () => {
    const { wf } = await setup()
    wf.register('leaf', (n: number) => n + 1)
    wf.define(workflow('leaf', step('inc', { fn: 'leaf' }, { input: '$input' })))
    wf.define(workflow('mid', sequence(child('down', 'leaf', { input: '$input' }), step('again', { fn: 'leaf' }, { input: '$steps.down' }))))
    wf.define(workflow('top', child('mid', 'mid', { input: '$input.n' })))
    const run = await wf.start('top', { n: 1 }, { id: 'p' })
    expect(await run.result()).toBe(3)
    expect(wf.get('p/mid')?.status()).toBe('completed')
    expect(await wf.get('p/mid/down')?.result()).toBe(2)
    expect(wf.list({ definition: 'leaf' }).map((r) => r.id)).toEqual(['p/mid/down'])
  })

  it('sleeps on a durable timer', async () => {
    const { wf } = await setup()
    wf.register('now', () => Date.now())
    wf.define(workflow('nap', sequence(sleep('nap', 1_000), step('t', { fn: 'now' }))))
    const run = await wf.start('nap', null)
    await advance(999)
    expect(run.status()).toBe('running')
    await advance(1)
    expect(await run.result()).toBe(1_001_000)
  })

  it('waits for signals sent before and after the wait; a timeout continues or fails as asked', async () => {
    const { wf } = await setup()
    wf.register('echo', (v: unknown) => v)
    wf.register('slow', () => new Promise((resolve) => setTimeout(() => resolve('slow'), 100)))
    wf.define(
      workflow(
        'approve',
        sequence(
          step('prep', { fn: 'slow' }),
          waitFor('ok', 'approve'),
          step('done', { fn: 'echo' }, { input: { ok: '$steps.ok', last: '$signals.approve' } }),
        ),
      ),
    )
    const early = await wf.start('approve', null)
    early.signal('approve', { by: 'ann' })
    await advance(100)
    expect(await early.result()).toEqual({ ok: { by: 'ann' }, last: { by: 'ann' } })
    const late = await wf.start('approve', null)
    await advance(500)
    expect(late.status()).toBe('running')
    late.signal('approve', 'yes')
    expect(await late.result()).toEqual({ ok: 'yes', last: 'yes' })
    expect(() => late.signal('nope', 1)).not.toThrow()
    const other = await wf.start('approve', null)
    expect(() => other.signal('nope', 1)).toThrow(expect.objectContaining({ code: 'SIGNAL_UNKNOWN' }))
    other.cancel()
    wf.define(workflow('go-on', waitFor('w', 'go', { timeoutMs: 50, onTimeout: 'continue' })))
    wf.define(workflow('give-up', waitFor('w', 'go', { timeoutMs: 50 })))
    const goOn = await wf.start('go-on', null)
    const giveUp = await wf.start('give-up', null)
    const failed = errorOf(() => giveUp.result())
    await advance(50)
    expect(await goOn.result()).toBeUndefined()
    expect((await failed)?.code).toBe('STEP_FAILED')
  })
})

describe('workflows: failures', () => {
  it('retries transient failures with backoff and gives up at once on a permanent one', async () => {
    const { wf } = await setup()
    const attempts: number[] = []
    wf.register('flaky', (_: unknown, ctx) => {
      attempts.push(ctx.attempt)
      if (ctx.attempt < 3) throw new Error(`try ${ctx.attempt}`)
      return 'ok'
    })
    wf.register('bad', () => {
      throw new PermanentError('bad input')
    })
    wf.define(workflow('flaky', step('f', { fn: 'flaky' }, { retry: { attempts: 3, initialMs: 100, factor: 2, jitter: false } })))
    const run = await wf.start('flaky', null)
    await advance(99)
    expect(attempts).toEqual([1])
    await advance(1)
    expect(attempts).toEqual([1, 2])
    await advance(200)
    expect(await run.result()).toBe('ok')
    const retries = run.history().filter((e) => e.type === 'retry')
    expect(retries.map((e) => (e.type === 'retry' ? [e.attempt, e.when] : []))).toEqual([
      [2, 1_000_100],
      [3, 1_000_300],
    ])
    wf.define(workflow('bad', step('b', { fn: 'bad' }, { retry: { attempts: 5 } })))
    const bad = await wf.start('bad', null)
    const error = (await errorOf(() => bad.result())) as { code?: string; message?: string; cause?: unknown; details?: Record<string, unknown> }
    expect(error.code).toBe('STEP_FAILED')
    expect(error.message).toContain('b')
    expect(error.details?.['step']).toBe('b')
    expect(error.cause).toBeInstanceOf(PermanentError)
    expect(bad.history().filter((e) => e.type === 'step-started')).toHaveLength(1)
  })

  it('times out a step attempt (its signal aborts) and retries it', async () => {
    const { wf } = await setup()
    const signals: AbortSignal[] = []
    wf.register('sometimes', (_: unknown, ctx) => {
      signals.push(ctx.signal)
      return ctx.attempt === 1 ? hang(_, ctx) : 'second'
    })
    wf.define(workflow('t', step('s', { fn: 'sometimes' }, { timeoutMs: 50, retry: { attempts: 2, initialMs: 10, jitter: false } })))
    const run = await wf.start('t', null)
    await advance(50)
    expect(signals[0]!.aborted).toBe(true)
    await advance(10)
    expect(await run.result()).toBe('second')
  })

  it('validates step input and output with registered schemas: SCHEMA_INVALID fails for good', async () => {
    const { wf } = await setup()
    let calls = 0
    wf.register('typed', { input: z.object({ n: z.number() }), output: z.number() }, (x) => {
      calls++
      return x.n
    })
    wf.define(workflow('typed', step('t', { fn: 'typed' }, { input: '$input', retry: { attempts: 3 } })))
    expect(await (await wf.start('typed', { n: 4 })).result()).toBe(4)
    const bad = (await errorOf(async () => (await wf.start('typed', { n: 'x' })).result())) as { code?: string; cause?: { code?: string } }
    expect(bad.code).toBe('STEP_FAILED')
    expect(bad.cause?.code).toBe('SCHEMA_INVALID')
    expect(calls).toBe(1)
  })

  it('compensates completed steps in reverse order when a later step fails', async () => {
    const { wf } = await setup()
    const log: string[] = []
    wf.register('do', (name: string) => {
      log.push(`do ${name}`)
      return name
    })
    wf.register('undo', (name: string) => {
      log.push(`undo ${name}`)
      if (name === 'b!') throw new PermanentError('cannot undo b')
    })
    wf.register('fail', () => {
      throw new PermanentError('boom')
    })
    const saga = (name: string, undoB: string) =>
      workflow(
        name,
        sequence(
          step('a', { fn: 'do' }, { input: 'a', compensate: { run: { fn: 'undo' } } }),
          step('b', { fn: 'do' }, { input: 'b', compensate: { run: { fn: 'undo' }, input: undoB } }),
          step('c', { fn: 'fail' }),
        ),
      )
    wf.define(saga('saga', 'b'))
    const run = await wf.start('saga', null)
    const error = (await errorOf(() => run.result())) as { code?: string; details?: Record<string, unknown>; cause?: Error }
    expect(log).toEqual(['do a', 'do b', 'undo b', 'undo a'])
    expect(run.status()).toBe('compensated')
    expect(error.code).toBe('STEP_FAILED')
    expect(error.details?.['step']).toBe('c')
    expect(error.cause?.message).toBe('boom')
    expect(run.history().flatMap((e) => (e.type === 'compensated' ? [`${e.step}:${e.ok}`] : []))).toEqual(['b:true', 'a:true'])

    log.length = 0
    wf.define(saga('saga-broken', 'b!'))
    const broken = await wf.start('saga-broken', null)
    const failed = (await errorOf(() => broken.result())) as { details?: Record<string, unknown> }
    expect(log).toEqual(['do a', 'do b', 'undo b!', 'undo a'])
    expect(broken.status()).toBe('compensation-failed')
    expect(failed.details?.['compensations']).toEqual([{ step: 'b', error: expect.objectContaining({ message: 'cannot undo b' }) }])
  })

  it('cancels a run: attempts in flight abort, completed steps are compensated, result rejects RUN_CANCELLED', async () => {
    const { wf } = await setup()
    const log: string[] = []
    let signal: AbortSignal | undefined
    wf.register('do', () => log.push('do'))
    wf.register('undo', () => log.push('undo'))
    wf.register('hang', (input, ctx) => {
      signal = ctx.signal
      return hang(input, ctx)
    })
    wf.define(workflow('c', sequence(step('a', { fn: 'do' }, { compensate: { run: { fn: 'undo' } } }), step('h', { fn: 'hang' }))))
    const run = await wf.start('c', null)
    await advance()
    run.cancel()
    const error = await errorOf(() => run.result())
    expect(error?.code).toBe('RUN_CANCELLED')
    expect(signal?.aborted).toBe(true)
    expect(log).toEqual(['do', 'undo'])
    expect(run.status()).toBe('compensated')
    wf.define(workflow('plain', step('h', { fn: 'hang' })))
    const plain = await wf.start('plain', null)
    plain.cancel()
    expect((await errorOf(() => plain.result()))?.code).toBe('RUN_CANCELLED')
    expect(plain.status()).toBe('cancelled')
  })

  it("gives up at once on a store refusal no retry fixes, thrown by a step or by a capability's agent", async () => {
    const { wf, mesh, orrery } = await setup({ mesh: true })
    const small = orrery.openStore({ maxValueBytes: 1024 }).namespace<string>('notes')
    const big = 'x'.repeat(2048)
    wf.register('keep', (key: string) => small.put(key, key === '' ? 'empty' : big))
    class Keeper extends Agent {
      static readonly capabilities = [{ name: 'keep', version: '1.0.0' }]
      constructor(context: AgentContext) {
        super(context)
        this.handle<string, number>('keep', (text) => small.put('note', text))
      }
    }
    mesh!.define('keep', Keeper)
    await mesh!.spawn('keep')
    const retry = { attempts: 3, initialMs: 1, jitter: false }
    wf.define(workflow('local', step('k', { fn: 'keep' }, { input: '$input', retry })))
    wf.define(workflow('remote', step('k', { capability: 'keep' }, { input: '$input', retry })))
    for (const [name, input, code] of [
      ['local', 'note', 'VALUE_TOO_LARGE'],
      ['local', '', 'INVALID_KEY'],
      ['remote', big, 'VALUE_TOO_LARGE'],
    ] as const) {
      const run = await wf.start(name, input)
      await advance(100)
      const error = (await errorOf(() => run.result())) as { code?: string; cause?: { code?: string; details?: Record<string, unknown> } }
      expect(error.code).toBe('STEP_FAILED')
      expect(error.cause?.code === code || error.cause?.details?.['remoteCode'] === code).toBe(true)
      expect(run.history().filter((e) => e.type === 'step-started')).toHaveLength(1)
    }
    await mesh!.shutdown()
  })
})

describe('workflows: runs', () => {
  it('times a whole run out, from its definition or its start', async () => {
    const { wf } = await setup()
    wf.register('hang', hang)
    wf.define(workflow('stuck', sequence(step('a', { fn: 'hang' }), step('b', { fn: 'hang' }))))
    wf.define(workflow('limited', step('a', { fn: 'hang' }, { retry: { attempts: 3 } }), { timeoutMs: 300 }))
    const given = await wf.start('stuck', null, { timeoutMs: 200 })
    const defined = await wf.start('limited', null)
    const free = await wf.start('stuck', null)
    const givenError = errorOf(() => given.result())
    const definedError = errorOf(() => defined.result())
    await advance(199)
    expect(given.status()).toBe('running')
    await advance(1)
    expect((await givenError) as unknown).toMatchObject({ code: 'STEP_FAILED', cause: expect.objectContaining({ code: 'TIMEOUT' }) })
    await advance(100)
    expect((await definedError)?.code).toBe('STEP_FAILED')
    // One attempt, cut by the run's timeout: a run timeout is no step timeout to retry after.
    expect(defined.history().filter((e) => e.type === 'step-started')).toHaveLength(1)
    expect(free.status()).toBe('running')
    expect(given.definition.version).toBe(free.definition.version)
  })

  it('starts idempotently: the same id is the same run; another workflow is RUN_EXISTS', async () => {
    const { wf } = await setup()
    let calls = 0
    wf.register('once', () => ++calls)
    wf.define(workflow('one', step('s', { fn: 'once' })))
    wf.define(workflow('two', step('s', { fn: 'once' })))
    const a = await wf.start('one', null, { id: 'same' })
    const b = await wf.start('one', null, { id: 'same' })
    expect(a.id).toBe(b.id)
    expect(await a.result()).toBe(1)
    expect(await (await wf.start('one', null, { id: 'same' })).result()).toBe(1)
    expect(calls).toBe(1)
    expect((await errorOf(() => wf.start('two', null, { id: 'same' })))?.code).toBe('RUN_EXISTS')
  })

  it('refuses unknown workflows, unregistered steps and invalid definitions with their codes', async () => {
    const { wf } = await setup()
    expect((await errorOf(() => wf.start('ghost', null)))?.code).toBe('WORKFLOW_NOT_FOUND')
    wf.define(workflow('missing', step('s', { fn: 'nobody' })))
    const missing = await errorOf(() => wf.start('missing', null))
    expect(missing?.code).toBe('STEP_NOT_REGISTERED')
    expect(missing?.message).toContain('nobody')
    expect((await errorOf(() => wf.define(workflow('dup', sequence(step('s', { fn: 'x' }), step('s', { fn: 'x' }))))))?.code).toBe('DEFINITION_INVALID')
  })

  it('refuses bad arguments with typed codes before anything runs', async () => {
    const { orrery, wf } = await setup()
    wf.register('ok', () => 'ok')
    wf.define(workflow('fine', waitFor('w', 'go')))
    const code = async (fn: () => unknown) => (await errorOf(fn))?.code
    expect(await code(() => orrery.workflows({ store: {} as never }))).toBe('INVALID_OPTION')
    expect(await code(() => orrery.workflows({ resume: 'yes' as never }))).toBe('INVALID_OPTION')
    expect(await code(() => wf.register('f', 5 as never))).toBe('INVALID_ARGUMENT')
    expect(await code(() => wf.register('ok', () => 1))).toBe('INVALID_ARGUMENT')
    expect(await code(() => wf.registerCondition('', () => true))).toBe('INVALID_ARGUMENT')
    expect(await code(() => wf.define({ name: 'x' } as never))).toBe('DEFINITION_INVALID')
    expect(await code(() => wf.start('fine', null, { id: 5 as never }))).toBe('INVALID_OPTION')
    expect(await code(() => wf.start('fine', null, { id: 'a/e/0000000001' }))).toBe('INVALID_OPTION')
    expect(await code(() => wf.start('fine', null, { timeoutMs: -1 }))).toBe('INVALID_OPTION')
    expect(await code(() => wf.start(7 as never, null))).toBe('INVALID_ARGUMENT')
    const run = await wf.start('fine', null)
    expect(await code(() => run.signal(5 as never))).toBe('INVALID_ARGUMENT')
    expect(wf.list()).toHaveLength(1)
    wf.close()
    expect(await code(() => wf.start('fine', null))).toBe('CLOSED')
    expect(await code(() => wf.list())).toBe('CLOSED')
  })

  it('runs a definition copied through JSON the same, under the same version', async () => {
    const { wf } = await setup()
    wf.register('inc', (n: number) => n + 1)
    wf.registerCondition('small', () => false)
    const def = workflow(
      'copy',
      sequence(
        step('a', { fn: 'inc' }, { input: '$input', retry: { attempts: 2 } }),
        parallel([step('b', { fn: 'inc' }, { input: '$steps.a' }), step('c', { fn: 'inc' }, { input: 10 })], { join: 'all' }),
        branch([when({ fn: 'small' }, step('d', { fn: 'inc' }, { input: 0 }))], step('e', { fn: 'inc' }, { input: '$steps.b' })),
      ),
    )
    const copy = JSON.parse(JSON.stringify(def))
    const defined = wf.define(def)
    expect(wf.define(copy).version).toBe(defined.version)
    const run = await wf.start('copy', 1)
    expect(await run.result()).toBe(4)
  })

  it('lists and gets runs by status and definition', async () => {
    const { wf } = await setup()
    wf.register('ok', () => 'ok')
    wf.register('hang', hang)
    wf.define(workflow('fast', step('s', { fn: 'ok' })))
    wf.define(workflow('stuck', step('s', { fn: 'hang' })))
    await (await wf.start('fast', null, { id: 'f1' })).result()
    await wf.start('stuck', null, { id: 's1' })
    expect(wf.list().map((r) => `${r.id}:${r.status}`)).toEqual(['f1:completed', 's1:running'])
    expect(wf.list({ status: 'running' }).map((r) => r.id)).toEqual(['s1'])
    expect(wf.list({ definition: 'fast' }).map((r) => r.id)).toEqual(['f1'])
    expect(await wf.get('f1')?.result()).toBe('ok')
    expect(wf.get('s1')?.status()).toBe('running')
    expect(wf.get('none')).toBeUndefined()
    expect(() => wf.list({ status: 'done' as 'completed' })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }))
  })
})

describe('workflows: versions', () => {
  it('start(definition) runs that version (kept if new); start(name) runs the newest', async () => {
    const { wf } = await setup()
    wf.register('a', (n: number) => n + 1)
    wf.register('b', (n: number) => n * 100)
    wf.register('c', (n: number) => -n)
    const d1 = wf.define(workflow<number, number>('pick', step('s', { fn: 'a' }, { input: '$input' })))
    const d2 = wf.define(workflow<number, number>('pick', step('s', { fn: 'b' }, { input: '$input' })))
    const d3 = workflow<number, number>('pick', step('s', { fn: 'c' }, { input: '$input' }))
    const byD1 = await wf.start(d1, 3)
    const byName = await wf.start('pick', 3)
    // Never defined: kept at once, but not the newest.
    const byD3 = await wf.start(JSON.parse(JSON.stringify(d3)) as typeof d3, 3)
    const byNameAgain = await wf.start('pick', 4)
    await advance()
    expect(await byD1.result()).toBe(4)
    expect(byD1.definition.version).toBe(d1.version)
    expect(await byName.result()).toBe(300)
    expect(byName.definition.version).toBe(d2.version)
    expect(await byD3.result()).toBe(-3)
    expect(byD3.definition.version).toBe(d3.version)
    expect(await byNameAgain.result()).toBe(400)
    expect((await errorOf(() => wf.start(null as never, 1)))?.code).toBe('INVALID_ARGUMENT')
  })

  it('a run finishes on the version it started on, though a newer one is defined while it runs and before it resumes', async () => {
    const { orrery, wf, store } = await setup()
    const register = (w: Workflows) => {
      w.register('old', (n: number) => `old ${n}`)
      w.register('new', (n: number) => `new ${n}`)
    }
    const shape = (fn: string) => workflow<number, string>('evolving', sequence(waitFor('w', 'go'), step('s', { fn }, { input: '$input' })))
    register(wf)
    const v1 = wf.define(shape('old'))
    const early = await wf.start('evolving', 1, { id: 'early' })
    const parked = await wf.start('evolving', 2, { id: 'parked' })
    await advance()
    // A newer version while both wait: new runs take it, the running ones keep theirs.
    const v2 = wf.define(shape('new'))
    expect(v2.version).not.toBe(v1.version)
    const late = await wf.start('evolving', 3, { id: 'late' })
    await advance()
    await early.signal('go')
    await late.signal('go')
    await advance()
    expect(await early.result()).toBe('old 1')
    expect(early.definition.version).toBe(v1.version)
    expect(await late.result()).toBe('new 3')
    expect(parked.definition.version).toBe(v1.version)
    expect(parked.status()).toBe('running')
    // Closed and resumed by other workflows on the store, where only a third version is defined
    // before the resume: the parked run still finishes on the first.
    wf.close()
    const again = await orrery.workflows({ store })
    register(again)
    again.define(workflow<number, string>('evolving', sequence(waitFor('w', 'go'), step('s', { fn: 'new' }, { input: { $literal: 'third' } }))))
    const resumed = again.get('parked')!
    expect(resumed.definition.version).toBe(v1.version)
    await resumed.signal('go')
    await advance()
    expect(await resumed.result()).toBe('old 2')
    again.close()
  })

  it('refuses a version name defined again with other content (here or in the store); the same content again is fine', async () => {
    const { orrery, wf, store } = await setup()
    wf.register('a', (n: number) => n + 1)
    wf.register('b', (n: number) => n * 100)
    const v1 = workflow('named', step('s', { fn: 'a' }, { input: '$input' }), { version: 'v1' })
    expect(wf.define(v1).version).toBe('v1')
    // Idempotent: the same content again, also from its JSON copy.
    expect(wf.define(JSON.parse(JSON.stringify(v1))).version).toBe('v1')
    const other = workflow('named', step('s', { fn: 'b' }, { input: '$input' }), { version: 'v1' })
    const error = await errorOf(() => wf.define(other))
    expect(error?.code).toBe('DEFINITION_INVALID')
    expect(error?.details).toMatchObject({ workflow: 'named', version: 'v1' })
    // The old content still runs.
    const run = await wf.start('named', 1)
    await advance()
    expect(await run.result()).toBe(2)
    wf.close()
    // Another process on the same store: the stored def/named/v1 differs from the given one.
    const again = await orrery.workflows({ store })
    again.register('a', (n: number) => n + 1)
    again.register('b', (n: number) => n * 100)
    expect((await errorOf(() => again.define(other)))?.code).toBe('DEFINITION_INVALID')
    expect(again.define(v1).version).toBe('v1')
  })
})

describe('workflows: resume', () => {
  /** A workflow whose middle step waits until released; effects are counted per idempotency key. */
  function define(wf: Workflows, effects: Map<string, number>, gate: { open: boolean }) {
    const effect = (ctx: StepContext) => effects.set(ctx.idempotencyKey, (effects.get(ctx.idempotencyKey) ?? 0) + 1)
    wf.register('first', (n: number, ctx) => {
      effect(ctx)
      return n + 1
    })
    wf.register('gate', (n: number, ctx) => {
      effect(ctx)
      return gate.open ? n * 10 : hang(n, ctx)
    })
    wf.register('last', (n: number, ctx) => {
      effect(ctx)
      return n + 5
    })
    wf.registerMapping('sum', (xs) => (xs as number[]).reduce((a, b) => a + b, 0))
    wf.define(
      workflow(
        'resumable',
        sequence(
          step('first', { fn: 'first' }, { input: '$input.n' }),
          forEach('$input.list', step('each', { fn: 'first' }, { input: '$item' }), { id: 'fan' }),
          sleep('nap', 1_000),
          step('gate', { fn: 'gate' }, { input: '$steps.first' }),
          step('last', { fn: 'last' }, { input: '$steps.gate' }),
        ),
      ),
    )
  }

  it('goes on with a run after its workflows closed, on the same store, each effect once per key', async () => {
    vi.useFakeTimers({ now: 1_000_000, toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    const store = orrery.openStore()
    const effects = new Map<string, number>()
    const first = await orrery.workflows({ store })
    define(first, effects, { open: false })
    const run = await first.start('resumable', { n: 1, list: [1, 2] }, { id: 'r' })
    await advance(1_000)
    expect(run.status()).toBe('running')
    expect(effects.get('r/gate')).toBe(1)
    // Other workflows on the namespace while these are open would go on with the run too: refused.
    const refused = await errorOf(() => orrery.workflows({ store }))
    expect(refused?.code).toBe('INVALID_OPTION')
    expect(refused?.details).toEqual({ option: 'namespace', value: 'orrery.workflows' })
    await advance(1_000)
    expect(effects.get('r/gate')).toBe(1)
    // Another namespace of the store is free.
    ;(await orrery.workflows({ store, namespace: 'other' })).close()
    first.close()
    expect((await errorOf(() => run.result()))?.code).toBe('CLOSED')

    const second = await orrery.workflows({ store })
    define(second, effects, { open: true })
    const again = second.get('r')!
    expect(again.status()).toBe('running')
    await advance()
    expect(await again.result()).toBe(25)
    expect(again.status()).toBe('completed')
    // The gate ran twice (in flight at the close), with the same key; everything else once.
    expect(Object.fromEntries(effects)).toEqual({ 'r/first': 1, 'r/each[0]': 1, 'r/each[1]': 1, 'r/gate': 2, 'r/last': 1 })
    second.close()
  })

  it('goes on with runs from a snapshot of the store (how a browser keeps them): export, reopen, resume', async () => {
    const { orrery, wf, store } = await setup()
    wf.register('greet', (name: string) => `hello ${name}`)
    wf.define(workflow<string, string>('later', sequence(waitFor('w', 'go'), step('s', { fn: 'greet' }, { input: '$input' }))))
    await wf.start('later', 'ada', { id: 'kept' })
    await advance()
    await wf.flushed()
    const snapshot = store.export()
    wf.close()
    orrery.close()
    // Another Orrery (another page load), its store opened from the bytes.
    const next = await Orrery.create({ engine: ENGINE })
    open.push(next)
    const reopened = await Orrery.openStore({ snapshot, engine: ENGINE })
    const resumed = await next.workflows({ store: reopened })
    resumed.register('greet', (name: string) => `hello ${name}`)
    const kept = resumed.get('kept')!
    expect(kept.status()).toBe('running')
    await kept.signal('go')
    await advance()
    expect(await kept.result()).toBe('hello ada')
    expect(kept.history().filter((e) => e.type === 'started')).toHaveLength(1)
    resumed.close()
  })

  it('waits for step functions registered late after a resume (after an await); a cancel ends the wait', async () => {
    vi.useFakeTimers({ now: 1_000_000, toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    const store = orrery.openStore()
    const effects = new Map<string, number>()
    const first = await orrery.workflows({ store })
    define(first, effects, { open: false })
    await first.start('resumable', { n: 1, list: [1, 2] }, { id: 'late' })
    await first.start('resumable', { n: 1, list: [] }, { id: 'late-cancelled' })
    await advance(1_000)
    first.close()

    const second = await orrery.workflows({ store })
    // The app registers after an await: the resumed steps wait for it instead of failing.
    await advance(50)
    const again = second.get('late')!
    const cancelled = second.get('late-cancelled')!
    expect(again.status()).toBe('running')
    cancelled.cancel()
    expect((await errorOf(() => cancelled.result()))?.code).toBe('RUN_CANCELLED')
    define(second, effects, { open: true })
    await advance()
    expect(await again.result()).toBe(25)
    expect(effects.get('late/gate')).toBe(2)
    // A new run still fails fast when a function is missing.
    second.define(workflow('missing', step('s', { fn: 'nowhere' })))
    expect((await errorOf(() => second.start('missing', 1)))?.code).toBe('STEP_NOT_REGISTERED')
    second.close()
  })

  it('restores the runs it can: one whose version is gone from the store stays recorded as it was', async () => {
    const { orrery, store, wf: first } = await setup()
    first.close() // the workflows that open next go on with the namespace's runs: they need it to themselves
    store
      .namespace('orrery.workflows')
      .put('run/ghost', { id: 'ghost', definition: 'gone', version: 'v1', input: null, seed: 1, status: 'running', startedAt: 0 })
    const printed = vi.spyOn(console, 'error').mockImplementation(() => {})
    try {
      const wf = await orrery.workflows({ store })
      expect(printed.mock.calls[0]?.[0]).toContain('run ghost could not be restored')
      expect(wf.get('ghost')?.status()).toBe('running')
      expect((await errorOf(() => wf.get('ghost')!.result()))?.code).toBe('RUN_NOT_FOUND')
      wf.register('ok', () => 'ok')
      wf.define(workflow('fine', step('s', { fn: 'ok' })))
      expect(await (await wf.start('fine', null)).result()).toBe('ok')
    } finally {
      printed.mockRestore()
    }
  })

  it.skipIf(ENGINE !== 'native' || IN_BROWSER)('goes on with a run from a durable store reopened from disk', async () => {
    const { join } = await import('node:path')
    const path = join(await tempDir('orrery-wf-'), 'runs.redb')
    const effects = new Map<string, number>()
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    let store = orrery.openStore({ path })
    const first = await orrery.workflows({ store })
    define(first, effects, { open: false })
    const run = await first.start('resumable', { n: 1, list: [3] }, { id: 'd' })
    // Past the sleep (real time: 1 s), to the gate.
    await new Promise((resolve) => setTimeout(resolve, 1_100))
    expect(effects.get('d/gate')).toBe(1)
    first.close()
    await store.flushed()
    store.close()
    void run

    store = orrery.openStore({ path })
    const second = await orrery.workflows({ store })
    define(second, effects, { open: true })
    const again = second.get('d')!
    await new Promise((resolve) => setTimeout(resolve, 10))
    expect(await again.result()).toBe(25)
    expect(Object.fromEntries(effects)).toEqual({ 'd/first': 1, 'd/each[0]': 1, 'd/gate': 2, 'd/last': 1 })
    second.close()
    store.close()
  })
})

describe('workflows: pipeline', () => {
  it("streams items through 3 stages in order: $item is the stage before's output, $index the item, output the last stage's", async () => {
    const { wf } = await setup()
    const log: string[] = []
    const stage = (name: string, f: (x: never) => unknown) => async (x: { item: never; index: number }) => {
      log.push(`${name}:${x.index}:start`)
      await new Promise((resolve) => setTimeout(resolve, 10))
      log.push(`${name}:${x.index}:end`)
      return f(x.item)
    }
    wf.register(
      'parse',
      stage('a', (n: number) => n + 1),
    )
    wf.register(
      'scale',
      stage('b', (n: number) => n * 10),
    )
    wf.register(
      'label',
      stage('c', (n: number) => `#${n}`),
    )
    const input = { item: '$item', index: '$index' } as const
    wf.define(
      workflow(
        'pipe',
        pipeline('p', '$input', [step('a', { fn: 'parse' }, { input }), step('b', { fn: 'scale' }, { input }), step('c', { fn: 'label' }, { input })], {
          buffer: 1,
        }),
      ),
    )
    const run = await wf.start('pipe', [1, 2, 3, 4], { id: 'pp' })
    await advance(500)
    expect(await run.result()).toEqual(['#20', '#30', '#40', '#50'])
    const at = (entry: string) => log.indexOf(entry)
    for (const s of ['a', 'b', 'c']) {
      for (let i = 0; i < 4; i++) {
        // One item at a time per stage, in index order.
        if (i > 0) expect(at(`${s}:${i}:start`)).toBeGreaterThan(at(`${s}:${i - 1}:end`))
      }
    }
    for (let i = 0; i < 4; i++) {
      // An item passes stage a, then b, then c.
      expect(at(`b:${i}:start`)).toBeGreaterThan(at(`a:${i}:end`))
      expect(at(`c:${i}:start`)).toBeGreaterThan(at(`b:${i}:end`))
    }
    // Stages overlap: stage a works on item 1 while b works on item 0.
    expect(at('a:1:start')).toBeLessThan(at('b:0:end'))
    const keys = run.history().flatMap((e) => (e.type === 'step-started' ? [e.key] : []))
    expect(keys).toContain('pp/b[3]')
    expect(keys).toHaveLength(12)
    // An empty list succeeds at once; a value that is no list fails.
    expect(await (await wf.start('pipe', [])).result()).toEqual([])
    // $steps of an earlier stage reads that stage's output for the same item; after the pipeline, its last item's.
    wf.register('pair', (x: unknown) => x)
    wf.define(
      workflow(
        'pairs',
        sequence(
          pipeline('q', '$input', [step('one', { fn: 'parse' }, { input }), step('two', { fn: 'pair' }, { input: { mine: '$item', before: '$steps.one' } })]),
          step('after', { fn: 'pair' }, { input: ['$steps.q', '$steps.one'] }),
        ),
      ),
    )
    const pairs = await wf.start('pairs', [5, 6])
    await advance(100)
    expect(await pairs.result()).toEqual([
      [
        { mine: 6, before: 6 },
        { mine: 7, before: 7 },
      ],
      7,
    ])
    expect((await errorOf(async () => (await wf.start('pipe', 5)).result()))?.code).toBe('STEP_FAILED')
  })

  it('a slow stage holds the stage before it back by the buffer (backpressure)', async () => {
    const { wf } = await setup()
    const fast: number[] = []
    const gates = new Map<number, () => void>()
    wf.register('fast', (n: number) => {
      fast.push(n)
      return n
    })
    wf.register('slow', (n: number) => new Promise<number>((resolve) => gates.set(n, () => resolve(n))))
    const items = Array.from({ length: 8 }, (_, i) => i)
    for (const buffer of [1, 3]) {
      fast.length = 0
      gates.clear()
      const id = `held-${buffer}`
      wf.define(
        workflow(id, pipeline('p', '$input', [step('f', { fn: 'fast' }, { input: '$item' }), step('s', { fn: 'slow' }, { input: '$item' })], { buffer })),
      )
      const run = await wf.start(id, items)
      await advance(100)
      // The slow stage holds item 0: the fast one ran it and `buffer` more, then waits.
      expect(fast).toEqual(items.slice(0, 1 + buffer))
      expect([...gates.keys()]).toEqual([0])
      // Each item the slow stage finishes makes room for one more.
      gates.get(0)!()
      await advance(100)
      expect(fast).toEqual(items.slice(0, 2 + buffer))
      expect([...gates.keys()]).toEqual([0, 1])
      for (let i = 1; i < items.length; i++) {
        gates.get(i)!()
        await advance(10)
        expect(fast.length).toBeLessThanOrEqual(Math.min(items.length, i + 2 + buffer))
      }
      expect(await run.result()).toEqual(items)
    }
  })

  it('a failing stage fails the pipeline: the rest is cancelled, completed stages compensated in reverse order', async () => {
    const { wf } = await setup()
    const undone: number[] = []
    wf.register('reserve', (n: number) => n)
    wf.register('release', (n: number) => {
      undone.push(n)
    })
    wf.register('check', (n: number) => {
      if (n === 3) throw new PermanentError(`item ${n} is bad`)
      return n
    })
    wf.define(
      workflow(
        'guarded',
        pipeline(
          'p',
          '$input',
          [step('reserve', { fn: 'reserve' }, { input: '$item', compensate: { run: { fn: 'release' } } }), step('check', { fn: 'check' }, { input: '$item' })],
          { buffer: 2 },
        ),
      ),
    )
    const run = await wf.start('guarded', [1, 2, 3, 4, 5])
    await advance(10)
    const error = await errorOf(() => run.result())
    expect(error?.code).toBe('STEP_FAILED')
    expect(error?.details?.['step']).toBe('check')
    expect(run.status()).toBe('compensated')
    // Stage 0 may have reserved up to `buffer` items past the bad one; each was released once, newest first.
    expect(undone.slice(0, 3)).toEqual([...undone].sort((a, b) => b - a).slice(0, 3))
    expect(new Set(undone).size).toBe(undone.length)
    expect(undone).toEqual(expect.arrayContaining([1, 2, 3]))
    expect(undone.every((n) => n <= 5)).toBe(true)
  })
})

describe('workflows: continueAsNew', () => {
  /** Counts up by one per generation; the step fails for good at `stop` (the way a chain ends). */
  function defineCounter(wf: Workflows, stop: number, seen: Map<string, number>, gate?: { at: number; open: boolean }) {
    wf.register('tick', (n: number, ctx) => {
      seen.set(ctx.idempotencyKey, (seen.get(ctx.idempotencyKey) ?? 0) + 1)
      if (n >= stop) throw new PermanentError(`stopped at ${n}`)
      if (gate && n === gate.at && !gate.open) return hang(n, ctx)
      return n + 1
    })
    wf.define(workflow('counter', sequence(step('tick', { fn: 'tick' }, { input: '$input' }), continueAsNew('again', { input: '$steps.tick' }))))
  }

  /** The events of a run held in the store (a record may hold several). */
  const stored = (store: import('../ts/node.js').Store<boolean>, id: string) =>
    store
      .namespace('orrery.workflows', { codec: 'msgpack' })
      .entries(`run/${id}/e/`)
      .reduce((n, e) => n + (Array.isArray(e.value) ? e.value.length : 1), 0)

  it("counts to 2,000 generations on one run id, history never above one generation's events", async () => {
    const { wf, store } = await setup()
    const seen = new Map<string, number>()
    let most = 0
    wf.register('peek', (n: number) => {
      most = Math.max(most, stored(store, 'c'))
      return n
    })
    wf.register('tick', (n: number) => {
      if (n >= 2_000) throw new PermanentError(`stopped at ${n}`)
      return n + 1
    })
    void seen
    wf.define(
      workflow(
        'counter',
        sequence(
          step('peek', { fn: 'peek' }, { input: '$input' }),
          step('tick', { fn: 'tick' }, { input: '$input' }),
          continueAsNew('again', { input: '$steps.tick' }),
        ),
      ),
    )
    const run = await wf.start('counter', 1, { id: 'c' })
    const events: string[] = []
    run.events.subscribe((e) => events.push(e.type))
    await advance()
    const error = await errorOf(() => run.result())
    expect(error?.message).toContain('stopped at 2000')
    expect(run.generation).toBe(2_000)
    expect(wf.get('c')!.generation).toBe(2_000)
    // One generation: started, 3 step starts, 3 completions, node-dones, the end: never more, whatever the count.
    const one = run.history()
    expect(one[0]!.type).toBe('started')
    expect(one[one.length - 1]).toMatchObject({ type: 'run-finished', status: 'failed' })
    expect(most).toBeLessThanOrEqual(one.length)
    expect(stored(store, 'c')).toBe(one.length)
    expect(events.filter((t) => t === 'started')).toHaveLength(1_999)
    expect(wf.list({ definition: 'counter' })[0]).toMatchObject({ id: 'c', status: 'failed', generation: 2_000 })
  }, 60_000)

  it('yields to the event loop between generations: timers tick through a chain of sync steps, and cancel() ends it', async () => {
    // Real timers: the chain must leave a real interval its turns.
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    const wf = await orrery.workflows()
    let ticks = 0
    const interval = setInterval(() => ticks++, 1)
    const seenAt: number[] = []
    wf.register('inc', (n: number) => {
      if (n === 1 || n === 999) seenAt.push(ticks)
      if (n >= 1_000) throw new PermanentError(`stopped at ${n}`)
      return n + 1
    })
    wf.define(workflow('sync-chain', sequence(step('inc', { fn: 'inc' }, { input: '$input' }), continueAsNew('again', { input: '$steps.inc' }))))
    try {
      const run = await wf.start('sync-chain', 1)
      expect((await errorOf(() => run.result()))?.message).toContain('stopped at 1000')
      expect(run.generation).toBe(1_000)
      expect(seenAt[1]!).toBeGreaterThan(seenAt[0]!)
      // An endless chain: a cancel from a timer lands between two generations and ends it.
      const endless = await wf.start('sync-chain', -1_000_000_000)
      while (endless.generation < 50) await new Promise((resolve) => setTimeout(resolve, 1))
      endless.cancel()
      const error = await errorOf(() => endless.result())
      expect(error).toBeInstanceOf(OrreryError)
      expect((error as OrreryError).code).toBe('RUN_CANCELLED')
      expect(endless.status()).toBe('cancelled')
      const generation = endless.generation
      await new Promise((resolve) => setTimeout(resolve, 20))
      expect(endless.generation).toBe(generation)
      expect(endless.history().map((e) => e.type)).toEqual(['run-finished'])
    } finally {
      clearInterval(interval)
    }
  }, 60_000)

  it('holds a signal sent between two generations for the new one', async () => {
    const { wf } = await setup()
    wf.register('inc', (n: number) => {
      if (n >= 3) throw new PermanentError(`stopped at ${n}`)
      return n + 1
    })
    wf.define(
      workflow(
        'signalled-chain',
        sequence(waitFor('w', 'go'), step('inc', { fn: 'inc' }, { input: '$input' }), continueAsNew('again', { input: '$steps.inc' })),
      ),
    )
    const run = await wf.start('signalled-chain', 1)
    // Events reach subscribers after the pump that executed the continueAsNew: in the gap.
    const inGap: number[] = []
    run.events.subscribe((e) => {
      if (e.type === 'step-completed' && e.step === 'inc' && e.outcome === 'ok') {
        inGap.push(run.generation)
        run.signal('go')
      }
    })
    run.signal('go')
    await generations()
    expect((await errorOf(() => run.result()))?.message).toContain('stopped at 3')
    expect(run.generation).toBe(3)
    expect(inGap).toEqual([2, 3])
  })

  it.skipIf(ENGINE !== 'native' || IN_BROWSER)('goes on with a chain from a durable store reopened from disk, one generation kept', async () => {
    const { join } = await import('node:path')
    const path = join(await tempDir('orrery-wf-'), 'chain.redb')
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    const seen = new Map<string, number>()
    let store = orrery.openStore({ path })
    const first = await orrery.workflows({ store })
    defineCounter(first, 100, seen, { at: 40, open: false })
    const run = await first.start('counter', 1, { id: 'disk' })
    for (let i = 0; i < 100 && run.generation < 40; i++) await new Promise((resolve) => setTimeout(resolve, 5))
    expect(run.generation).toBe(40)
    first.close()
    await store.flushed()
    store.close()

    store = orrery.openStore({ path })
    const second = await orrery.workflows({ store })
    defineCounter(second, 60, seen)
    const again = second.get('disk')!
    expect((await errorOf(() => again.result()))?.message).toContain('stopped at 60')
    expect(again.generation).toBe(60)
    expect(stored(store, 'disk')).toBe(again.history().length)
    expect(seen.size).toBe(60)
    second.close()
    store.close()
  })

  it('resumes a chain after a close on the same store, also from the middle of a generation switch', async () => {
    vi.useFakeTimers({ now: 1_000_000, toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    const store = orrery.openStore()
    const seen = new Map<string, number>()
    const first = await orrery.workflows({ store })
    defineCounter(first, 12, seen, { at: 5, open: false })
    const run = await first.start('counter', 1, { id: 'k' })
    await generations()
    expect(run.generation).toBe(5)
    expect(run.status()).toBe('running')
    first.close()

    const second = await orrery.workflows({ store })
    defineCounter(second, 8, seen, { at: 7, open: false })
    await generations()
    expect(second.get('k')!.generation).toBe(7)
    // Gen 5's tick ran twice (in flight at the close), with its key; each generation has a key of its own.
    expect(seen.get('k#5/tick')).toBe(2)
    second.close()

    // A crash between the new generation's meta and its start: the meta says generation 8, the
    // events are still generation 7's. The restore begins generation 8 and purges generation 7.
    const ns = store.namespace('orrery.workflows', { codec: 'msgpack' })
    const meta = ns.get('run/k')!.value as Record<string, unknown>
    // Stored events are tuples [type code, seq, at, ...].
    const events = ns.entries('run/k/e/').flatMap((e) => e.value as [number, number][])
    ns.put('run/k', { ...meta, generation: 8, from: events[events.length - 1]![1] + 1, input: 8 })
    const third = await orrery.workflows({ store })
    defineCounter(third, 10, seen)
    await generations()
    const again = third.get('k')!
    expect((await errorOf(() => again.result()))?.message).toContain('stopped at 10')
    expect(again.generation).toBe(10)
    expect(again.history()[0]!.type).toBe('started')
    expect(stored(store, 'k')).toBe(again.history().length)
    // No generation lost or run twice: ticks 1..10, once each but gen 5's, in flight at a close
    // (gen 7's was in flight too, but the switch to gen 8 had begun: it is not run again).
    expect([...seen.keys()]).toEqual(['k/tick', ...Array.from({ length: 9 }, (_, i) => `k#${i + 2}/tick`)])
    expect([...seen.values()]).toEqual([1, 1, 1, 1, 2, 1, 1, 1, 1, 1])
    third.close()
  })
})

describe('workflows: delegate', () => {
  async function planner(wf: Workflows, mesh: import('../ts/node.js').Mesh, reply?: unknown, capability = 'plan') {
    class Planner extends Agent {
      static readonly capabilities = [{ name: capability, version: '1.0.0' }]
      constructor(context: AgentContext) {
        super(context)
        this.handle<{ goal: number[]; parentRunId: string; key: string }, unknown>(capability, async ({ goal, key, parentRunId }) => {
          parents.push(parentRunId)
          if (reply !== undefined) return reply
          const runs = await Promise.all(goal.map((n, i) => wf.start('job', n, { id: `${key}/job-${i}` })))
          return { runs: runs.map((r) => r.id) }
        })
      }
    }
    mesh.define(capability, Planner)
    await mesh.spawn(capability)
  }
  let parents: string[] = []

  it('hands a goal to a supervising agent, which starts 3 runs; the output is their results', async () => {
    const { wf, mesh } = await setup({ mesh: true })
    parents = []
    wf.register('square', async (n: number) => {
      await new Promise((resolve) => setTimeout(resolve, 5))
      return n * n
    })
    wf.define(workflow('job', step('sq', { fn: 'square' }, { input: '$input' })))
    wf.define(workflow('boss', delegate('d', 'plan@^1', { input: '$input.numbers' })))
    await planner(wf, mesh!)
    const run = await wf.start('boss', { numbers: [2, 3, 4] }, { id: 'b' })
    await advance(100)
    expect(await run.result()).toEqual([4, 9, 16])
    expect(parents).toEqual(['b'])
    // Cancelling the parent cancels the runs its delegate waits for.
    wf.register('stall', hang)
    wf.define(workflow('job', step('sq', { fn: 'stall' }, { input: '$input' })))
    const stuck = await wf.start('boss', { numbers: [1, 2] }, { id: 'stuck' })
    await advance(20)
    expect(wf.get('stuck/d/job-1')?.status()).toBe('running')
    stuck.cancel()
    await advance()
    expect((await errorOf(() => stuck.result()))?.code).toBe('RUN_CANCELLED')
    expect([wf.get('stuck/d/job-0')?.status(), wf.get('stuck/d/job-1')?.status()]).toEqual(['cancelled', 'cancelled'])
    expect(
      wf
        .list({ definition: 'job' })
        .filter((r) => r.id.startsWith('b/'))
        .map((r) => [r.id, r.status]),
    ).toEqual([
      ['b/d/job-0', 'completed'],
      ['b/d/job-1', 'completed'],
      ['b/d/job-2', 'completed'],
    ])
    await mesh!.shutdown()
  })

  it('fails for good when a delegated run fails (cause attached) or the reply is not { runs: string[] }', async () => {
    const { wf, mesh, orrery } = await setup({ mesh: true })
    wf.register('square', (n: number) => {
      if (n === 3) throw new PermanentError('three is not allowed')
      return n * n
    })
    wf.define(workflow('job', step('sq', { fn: 'square' }, { input: '$input' })))
    wf.define(workflow('boss', delegate('d', 'plan', { input: '$input', retry: { attempts: 3, initialMs: 1 } })))
    await planner(wf, mesh!)
    const run = await wf.start('boss', [2, 3, 4], { id: 'f' })
    await advance(100)
    const error = (await errorOf(() => run.result())) as { code?: string; message?: string; cause?: { message?: string; cause?: { message?: string } } }
    expect(error.code).toBe('STEP_FAILED')
    expect(error.cause?.message).toContain('run f/d/job-1 failed')
    expect(error.cause?.cause?.message).toContain('three is not allowed')
    // Permanent: the delegate ran once.
    expect(run.history().filter((e) => e.type === 'step-started')).toHaveLength(1)

    void orrery
    wf.define(workflow('vague', delegate('d', 'badplan', { input: '$input', retry: { attempts: 3, initialMs: 1 } })))
    await planner(wf, mesh!, { started: ['x'] }, 'badplan')
    const bad = await wf.start('vague', [1])
    await advance(100)
    const refused = await errorOf(() => bad.result())
    expect(refused?.message).toContain('must reply { runs: string[] }')
    expect(bad.history().filter((e) => e.type === 'step-started')).toHaveLength(1)
    await mesh!.shutdown()
  })
})

describe('workflows: maxConcurrentRuns', () => {
  function defineJobs(wf: Workflows, gates: Map<string, () => void>, log: { began: string[]; running: number; most: number }) {
    wf.register('work', (n: number, ctx) => {
      log.began.push(ctx.runId)
      log.running++
      log.most = Math.max(log.most, log.running)
      return new Promise((resolve, reject) => {
        gates.set(ctx.runId, () => {
          log.running--
          resolve(n)
        })
        ctx.signal.addEventListener('abort', () => {
          log.running--
          reject(ctx.signal.reason)
        })
      })
    })
    wf.define(workflow('job', step('work', { fn: 'work' }, { input: '$input' })), { maxConcurrentRuns: 2 })
  }

  it('runs at most 2 at once; the rest are queued and begin in start order; a queued run cancels without starting', async () => {
    const { wf } = await setup()
    const gates = new Map<string, () => void>()
    const log = { began: [] as string[], running: 0, most: 0 }
    defineJobs(wf, gates, log)
    const runs: WorkflowRun[] = []
    for (let i = 0; i < 6; i++) runs.push(await wf.start('job', i, { id: `j${i}` }))
    await advance()
    expect(runs.map((r) => r.status())).toEqual(['running', 'running', 'queued', 'queued', 'queued', 'queued'])
    expect(wf.list({ status: 'queued' }).map((r) => r.id)).toEqual(['j2', 'j3', 'j4', 'j5'])
    runs[4]!.cancel()
    expect(runs[4]!.status()).toBe('cancelled')
    expect((await errorOf(() => runs[4]!.result()))?.code).toBe('RUN_CANCELLED')
    for (let round = 0; round < 6 && gates.size > 0; round++) {
      for (const [id, open] of [...gates]) {
        gates.delete(id)
        open()
      }
      await advance()
    }
    expect(await Promise.all([0, 1, 2, 3, 5].map((i) => runs[i]!.result()))).toEqual([0, 1, 2, 3, 5])
    expect(log.began).toEqual(['j0', 'j1', 'j2', 'j3', 'j5'])
    expect(log.most).toBe(2)
    const job = workflow('other', step('work', { fn: 'work' }))
    for (const bad of [0, 1.5, -1, '2', Number.NaN]) {
      expect((await errorOf(() => wf.define(job, { maxConcurrentRuns: bad as number })))?.code).toBe('INVALID_OPTION')
    }
    expect((await errorOf(() => wf.define(job, 3 as never)))?.code).toBe('INVALID_ARGUMENT')
    // Lifting the limit begins the queued runs at once.
    gates.clear()
    log.began = []
    wf.define(workflow('one', step('work', { fn: 'work' }, { input: '$input' })), { maxConcurrentRuns: 1 })
    const one = [await wf.start('one', 1), await wf.start('one', 2), await wf.start('one', 3)]
    await advance()
    expect(one.map((r) => r.status())).toEqual(['running', 'queued', 'queued'])
    wf.define(workflow('one', step('work', { fn: 'work' }, { input: '$input' })))
    await advance()
    expect(one.map((r) => r.status())).toEqual(['running', 'running', 'running'])
  })

  it('restores the queue in order when the workflows reopen on the same store', async () => {
    vi.useFakeTimers({ now: 1_000_000, toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    const store = orrery.openStore()
    const gates = new Map<string, () => void>()
    const log = { began: [] as string[], running: 0, most: 0 }
    const first = await orrery.workflows({ store })
    defineJobs(first, gates, log)
    for (const id of ['q0', 'q1', 'q2', 'q3', 'q4']) await first.start('job', id, { id })
    await advance()
    first.close()
    gates.clear()
    expect(log.began).toEqual(['q0', 'q1'])

    log.began = []
    log.running = 0
    const second = await orrery.workflows({ store })
    expect(second.get('q2')!.status()).toBe('queued')
    defineJobs(second, gates, log)
    await advance()
    expect(log.began).toEqual(['q0', 'q1'])
    for (let round = 0; round < 6 && gates.size > 0; round++) {
      const [id, open] = [...gates][0]!
      gates.delete(id)
      open()
      await advance()
    }
    expect(await Promise.all(['q0', 'q1', 'q2', 'q3', 'q4'].map((id) => second.get(id)!.result()))).toEqual(['q0', 'q1', 'q2', 'q3', 'q4'])
    expect(log.began).toEqual(['q0', 'q1', 'q2', 'q3', 'q4'])
    expect(log.most).toBe(2)
    second.close()
  })
})

describe('workflows: data as stored, causes, recovery', () => {
  it('hands steps outputs as the store keeps them, the same live and after a resume; an unstorable one fails for good', async () => {
    const { orrery, wf, store } = await setup()
    const seen: string[] = []
    const register = (w: Workflows) => {
      w.register('make', () => ({ when: new Date(0), tags: new Set(['x']), n: undefined, f: () => 1 }))
      w.register('look', (x: { when: unknown; tags: unknown; f: unknown }, ctx) => {
        seen.push(`${(x.when as object).constructor.name}/${Array.isArray(x.tags)}/${'n' in x}/${typeof x.f}`)
        return hang(x, ctx)
      })
    }
    register(wf)
    wf.define(workflow('data', sequence(step('make', { fn: 'make' }), step('look', { fn: 'look' }, { input: '$steps.make' }))))
    await wf.start('data', null, { id: 'd' })
    await advance()
    wf.close()
    const again = await orrery.workflows({ store })
    register(again)
    await advance()
    expect(seen).toEqual(['Date/true/true/undefined', 'Date/true/true/undefined'])

    // A cycle, a symbol: no store can keep them, so the step fails at once (no retry), and the run ends.
    again.register('cycle', () => {
      const x: Record<string, unknown> = {}
      x['self'] = x
      return x
    })
    again.define(workflow('cyclic', step('c', { fn: 'cycle' }, { retry: { attempts: 3 } })))
    const cyclic = await again.start('cyclic', null)
    const failed = await errorOf(() => cyclic.result())
    expect(failed).toMatchObject({ code: 'STEP_FAILED', cause: expect.objectContaining({ code: 'INVALID_PAYLOAD' }) })
    expect(cyclic.history().filter((e) => e.type === 'step-started')).toHaveLength(1)
    // A start input or a signal payload the store cannot keep is refused to its caller, leaving nothing behind.
    expect((await errorOf(() => again.start('cyclic', Symbol('x'), { id: 'bad' })))?.code).toBe('INVALID_PAYLOAD')
    expect(again.get('bad')).toBeUndefined()
    again.register('wait', hang)
    again.define(workflow('waits', sequence(waitFor('w', 'go'), step('s', { fn: 'wait' }))))
    const waiting = await again.start('waits', null)
    expect(() => waiting.signal('go', 2n ** 70n)).toThrow(expect.objectContaining({ code: 'INVALID_PAYLOAD' }))
    expect(waiting.history().some((e) => e.type === 'signal')).toBe(false)
  })

  it('leaves no run behind when the core refuses its start, and starts afresh a run whose start event was lost', async () => {
    const { orrery, wf, store } = await setup()
    wf.register('one', () => 1)
    wf.define(workflow('w', step('a', { fn: 'one' })))
    // The core at its limit of live runs (CAPACITY_EXCEEDED): made to refuse once, as 2^20 runs would.
    const core = (wf as unknown as { core: { start: (...args: number[]) => number } }).core
    const real = core.start.bind(core)
    core.start = () => {
      throw new OrreryError('CAPACITY_EXCEEDED', 'workflow runs: at most 1048576 at once')
    }
    expect((await errorOf(() => wf.start('w', null, { id: 'x' })))?.code).toBe('CAPACITY_EXCEEDED')
    core.start = real
    expect(wf.get('x')).toBeUndefined()
    expect(wf.list()).toEqual([])
    expect(await (await wf.start('w', null, { id: 'x' })).result()).toBe(1)

    // A queued run whose turn comes while the core refuses: it stays queued, and begins when a run ends.
    let release = () => {}
    wf.register('held', () => new Promise((resolve) => (release = () => resolve('held'))))
    wf.define(workflow('one', step('a', { fn: 'held' })), { maxConcurrentRuns: 1 })
    const first = await wf.start('one', null)
    const second = await wf.start('one', null)
    const printed = vi.spyOn(console, 'error').mockImplementation(() => {})
    try {
      core.start = () => {
        throw new OrreryError('CAPACITY_EXCEEDED', 'workflow runs: at most 1048576 at once')
      }
      release()
      expect(await first.result()).toBe('held')
      expect(second.status()).toBe('queued')
      expect(wf.list({ status: 'queued' })).toHaveLength(1)
      expect(printed.mock.calls[0]?.[0]).toContain('could not begin')
      core.start = real
      expect(await (await wf.start('w', null)).result()).toBe(1)
      expect(second.status()).toBe('running')
      release()
      expect(await second.result()).toBe('held')
    } finally {
      core.start = real
      printed.mockRestore()
    }

    // The meta reached the store, the batch with the start event did not.
    wf.register('hang', hang)
    wf.define(workflow('h', step('a', { fn: 'hang' })))
    await wf.start('h', null, { id: 'lost' })
    wf.close()
    const ns = store.namespace('orrery.workflows', { codec: 'msgpack' })
    for (const key of ns.keys('run/lost/e/')) ns.delete(key)
    const again = await orrery.workflows({ store })
    again.register('hang', () => 'done')
    await advance()
    expect(await again.get('lost')!.result()).toBe('done')
  })

  it('says why a run failed from what the core says, not from the failing node kind', async () => {
    const { orrery, wf, store } = await setup()
    wf.register('hang', hang)
    wf.register('nothing', () => {
      throw null
    })
    wf.registerCondition('again', () => true)
    // A loop cut by the run's timeout timed out; it did not pass its limit.
    wf.define(workflow('spin', loop({ while: { fn: 'again' }, maxIterations: 5 }, sleep('nap', 60))))
    const spin = await wf.start('spin', null, { timeoutMs: 100 })
    const spun = errorOf(() => spin.result())
    await advance(100)
    expect(await spun).toMatchObject({ code: 'STEP_FAILED', cause: expect.objectContaining({ code: 'TIMEOUT' }) })
    // A quorum over fewer items than it needs cannot be reached: at once, no timeout.
    wf.define(workflow('few', forEach('$input', step('s', { fn: 'hang' }), { join: { quorum: 3 }, id: 'fan' })))
    const few = await wf.start('few', [1, 2])
    expect(await errorOf(() => few.result())).toMatchObject({ code: 'STEP_FAILED', cause: expect.objectContaining({ code: 'JOIN_UNREACHABLE' }) })
    // `throw null` is the step's error, however falsy.
    wf.define(workflow('null', step('n', { fn: 'nothing' })))
    const thrown = (await errorOf(() => wf.start('null', null).then((r) => r.result()))) as { cause?: unknown; message?: string }
    expect(thrown.cause).toBeNull()
    expect(thrown.message).not.toContain('timed out')
    // A condition's error is kept with the decision: a run resumed after it says the same.
    wf.registerCondition('boom', () => {
      throw new Error('condition exploded')
    })
    wf.define(workflow('pick', branch([when({ fn: 'boom' }, step('a', { fn: 'hang' }))], undefined, { id: 'pick' })))
    const pick = await wf.start('pick', null, { id: 'p' })
    expect((await errorOf(() => pick.result())) as unknown).toMatchObject({ cause: expect.objectContaining({ message: 'condition exploded' }) })
    wf.close()
    // The end did not reach the store; the decision did.
    const ns = store.namespace('orrery.workflows', { codec: 'msgpack' })
    for (const key of ns.keys('run/p/e/')) {
      // Stored events are tuples [type code, seq, at, ...]: 0 is started, 3 decided.
      const kept = (ns.get(key)!.value as [number, ...unknown[]][]).filter((e) => e[0] === 0 || e[0] === 3)
      ns.put(key, kept)
    }
    const meta = ns.get('run/p')!.value as Record<string, unknown>
    ns.put('run/p', { ...meta, status: 'running', error: undefined, finishedAt: undefined })
    const again = await orrery.workflows({ store })
    again.registerCondition('again', () => true)
    await advance()
    // It ended in the replay: its stored error says what the live one said.
    expect(await errorOf(() => again.get('p')!.result())).toMatchObject({ code: 'STEP_FAILED', message: expect.stringContaining('condition exploded') })
  })

  it('times runs out from a deadline given to the core: no program per timeout, kept across a resume', async () => {
    const { orrery, wf, store } = await setup()
    wf.register('hang', hang)
    wf.define(workflow('slow', step('a', { fn: 'hang' })))
    const core = (wf as unknown as { core: { define: (program: Float64Array) => number } }).core
    const define = vi.spyOn(core, 'define')
    const runs = await Promise.all(Array.from({ length: 20 }, (_, i) => wf.start('slow', null, { timeoutMs: 100 + i })))
    expect(define).not.toHaveBeenCalled()
    const ends = runs.map((r) => errorOf(() => r.result()))
    await advance(119)
    for (const end of await Promise.all(ends)) expect(end).toMatchObject({ cause: expect.objectContaining({ code: 'TIMEOUT' }) })
    // Closed at 100 ms of a 500 ms run: the resumed run times out at 500 ms after its start.
    await wf.start('slow', null, { id: 't', timeoutMs: 500 })
    await advance(100)
    wf.close()
    const again = await orrery.workflows({ store })
    again.register('hang', hang)
    await advance(399)
    expect(again.get('t')!.status()).toBe('running')
    await advance(1)
    expect(again.get('t')!.status()).toBe('failed')
  })

  it('fires an attempt timeout that fell due while the workflows were closed before running anything again', async () => {
    const { orrery, wf, store } = await setup()
    let calls = 0
    const slow = (_: unknown, ctx: StepContext) => {
      calls++
      return hang(_, ctx)
    }
    wf.register('slow', slow)
    wf.define(workflow('w', step('s', { fn: 'slow' }, { timeoutMs: 1_000 })))
    await wf.start('w', null, { id: 'x' })
    await advance(10)
    wf.close()
    await advance(5_000)
    const printed = vi.spyOn(console, 'error').mockImplementation(() => {})
    try {
      const again = await orrery.workflows({ store })
      again.register('slow', slow)
      const run = again.get('x')!
      const ended = errorOf(() => run.result())
      await advance()
      expect(await ended).toMatchObject({ code: 'STEP_FAILED', cause: expect.objectContaining({ code: 'TIMEOUT' }) })
      expect(calls).toBe(1)
      expect(printed).not.toHaveBeenCalled()
    } finally {
      printed.mockRestore()
    }
  })

  it('refuses signal and cancel on a run recorded as running but not running here (RUN_NOT_FOUND)', async () => {
    const { orrery, wf, store } = await setup()
    wf.register('hang', hang)
    wf.register('one', () => 1)
    wf.define(workflow('w', sequence(waitFor('w', 'go'), step('a', { fn: 'hang' }))))
    wf.define(workflow('done', step('a', { fn: 'one' })))
    await wf.start('w', null, { id: 'x' })
    await (await wf.start('done', null, { id: 'y' })).result()
    wf.close()
    const elsewhere = await orrery.workflows({ store, resume: false })
    const stored = elsewhere.get('x')!
    expect(() => stored.signal('go', 1)).toThrow(expect.objectContaining({ code: 'RUN_NOT_FOUND' }))
    expect(() => stored.cancel()).toThrow(expect.objectContaining({ code: 'RUN_NOT_FOUND' }))
    // A finished run takes them as a live finished run does: nothing happens.
    expect(() => elsewhere.get('y')!.signal('go', 1)).not.toThrow()
    expect(() => elsewhere.get('y')!.cancel()).not.toThrow()
  })

  it('keeps only the errors a run may report, and caps the signals no wait has taken', async () => {
    const { wf } = await setup()
    wf.register('flaky', (_: unknown, ctx: StepContext) => {
      if (ctx.attempt < 3) throw new Error(`attempt ${ctx.attempt}`)
      return ctx.attempt
    })
    wf.register('hang', hang)
    const retried = step('f', { fn: 'flaky' }, { retry: { attempts: 3, initialMs: 1, jitter: false } })
    wf.define(workflow('retries', sequence(forEach('$input', retried), waitFor('w', 'go'))))
    const run = await wf.start('retries', [1, 2, 3, 4], { id: 'r' })
    await advance(100)
    expect(run.history().filter((e) => e.type === 'retry')).toHaveLength(8)
    // Eight attempts failed and were retried; their errors are gone with their retries.
    const live = (wf as unknown as { runs: Map<string, { errors: Map<number, unknown> }> }).runs.get('r')!
    expect(live.errors.size).toBe(0)
    run.signal('go', 1)
    expect(await run.result()).toBe(1)
    wf.define(workflow('idle', sequence(step('a', { fn: 'hang' }), waitFor('w', 'go'))))
    const idle = await wf.start('idle', null, { id: 'i' })
    for (let i = 0; i < MAX_UNCLAIMED_SIGNALS; i++) idle.signal('go', i)
    expect(() => idle.signal('go', 'one too many')).toThrow(expect.objectContaining({ code: 'CAPACITY_EXCEEDED' }))
    expect(idle.history().filter((e) => e.type === 'signal')).toHaveLength(MAX_UNCLAIMED_SIGNALS)
  })

  it('delivers events after the core is drained: a subscriber may close the workflows', async () => {
    const { wf } = await setup()
    wf.register('a', () => 1)
    wf.register('b', () => 2)
    wf.define(workflow('w', sequence(sleep('first', 10), step('a', { fn: 'a' }), step('b', { fn: 'b' }), sleep('z', 10))))
    const printed = vi.spyOn(console, 'error').mockImplementation(() => {})
    try {
      const run = await wf.start('w', null)
      const seen: string[] = []
      run.events.subscribe({
        next: (e: WorkflowEvent) => {
          seen.push(e.type)
          if (e.type === 'node-done') wf.close()
        },
      })
      const ended = errorOf(() => run.result())
      await advance(100)
      expect((await ended)?.code).toBe('CLOSED')
      expect(seen).toContain('node-done')
      expect(printed).not.toHaveBeenCalled()
    } finally {
      printed.mockRestore()
    }
  })
})

describe('workflows: limits', () => {
  /** Workflows on an in-memory store that keeps values of at most 64 KiB. */
  async function small() {
    vi.useFakeTimers({ now: 1_000_000, toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    const store = orrery.openStore({ maxValueBytes: 64 * 1024 })
    const wf = await orrery.workflows({ store })
    const ns = store.namespace('orrery.workflows', { codec: 'msgpack' })
    const runKeys = () => ns.keys('run/')
    return { orrery, wf, store, runKeys }
  }
  const big = 'x'.repeat(64 * 1024)

  it('tells its maxValueBytes', async () => {
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    expect(orrery.openStore().maxValueBytes).toBe(1024 * 1024)
    expect(orrery.openStore({ maxValueBytes: 5000 }).maxValueBytes).toBe(5000)
  })

  it('refuses a start input the store cannot keep at once: nothing written, no step run', async () => {
    const { wf, runKeys } = await small()
    let ran = 0
    wf.register('count', () => ++ran)
    wf.define(workflow('w', step('s', { fn: 'count' })))
    for (const input of [big, { doc: big }, ['é'.repeat(40 * 1024)]]) {
      const error = await errorOf(() => wf.start('w', input, { id: 'too-big' }))
      expect(error).toMatchObject({ code: 'VALUE_TOO_LARGE' })
      expect(error?.message).toContain('the run input')
    }
    await advance()
    expect(ran).toBe(0)
    expect(wf.list()).toEqual([])
    expect(wf.get('too-big')).toBeUndefined()
    expect(runKeys()).toEqual([])
    // Just under the room (maxValueBytes less 4 KiB for the record) is kept.
    const fits = await wf.start('w', 'y'.repeat(60 * 1024 - 16))
    expect(await fits.result()).toBe(1)
  })

  it.skipIf(ENGINE !== 'native' || IN_BROWSER)('refuses a too large start input on a durable store too', async () => {
    const { join } = await import('node:path')
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    const store = orrery.openStore({ path: join(await tempDir('orrery-wf-'), 'big.redb'), maxValueBytes: 64 * 1024 })
    const wf = await orrery.workflows({ store })
    let ran = 0
    wf.register('count', () => ++ran)
    wf.define(workflow('w', step('s', { fn: 'count' })))
    expect(await errorOf(() => wf.start('w', big))).toMatchObject({ code: 'VALUE_TOO_LARGE' })
    await new Promise((resolve) => setTimeout(resolve, 10))
    expect(ran).toBe(0)
    expect(store.namespace('orrery.workflows', { codec: 'msgpack' }).keys('run/')).toEqual([])
    wf.close()
    store.close()
  })

  it('fails a step whose output is too large for good, and refuses a too large signal at once', async () => {
    const { wf } = await small()
    let calls = 0
    wf.register('huge', () => {
      calls++
      return { text: big }
    })
    wf.define(workflow('out', step('h', { fn: 'huge' }, { retry: { attempts: 3, initialMs: 1 } })))
    const run = await wf.start('out', null)
    await advance(100)
    const error = await errorOf(() => run.result())
    expect(error).toMatchObject({ code: 'STEP_FAILED', details: { step: 'h' }, cause: expect.objectContaining({ code: 'VALUE_TOO_LARGE' }) })
    expect(calls).toBe(1)
    expect(String((error as { cause?: Error } | undefined)?.cause?.message)).toContain('the output of step h takes')

    wf.register('echo', (v: unknown) => v)
    wf.define(workflow('wait', sequence(waitFor('w', 'go'), step('e', { fn: 'echo' }, { input: '$steps.w' }))))
    const waiting = await wf.start('wait', null)
    expect(() => waiting.signal('go', big)).toThrow(expect.objectContaining({ code: 'VALUE_TOO_LARGE' }))
    await advance()
    expect(waiting.history().filter((e) => e.type === 'signal')).toEqual([])
    expect(waiting.status()).toBe('running')
    waiting.signal('go', 'small')
    expect(await waiting.result()).toBe('small')
  })

  it('writes a run that ends in the macrotask it started in as one record, and a longer one in several', async () => {
    const { orrery, wf, store, runKeys } = await small()
    wf.register('inc', (n: number) => n + 1)
    wf.define(workflow('quick', sequence(step('a', { fn: 'inc' }, { input: '$input' }), step('b', { fn: 'inc' }, { input: '$steps.a' }))))
    const quick = await wf.start('quick', 1, { id: 'q' })
    expect(await quick.result()).toBe(3)
    expect(runKeys()).toEqual(['run/q'])
    const types = ['started', 'step-started', 'step-completed', 'node-done', 'step-started', 'step-completed', 'node-done', 'node-done', 'run-finished']
    expect(quick.history().map((e) => e.type)).toEqual(types)
    expect(quick.history().map((e) => e.seq)).toEqual(types.map((_, i) => i + 1))
    expect(quick.history().find((e) => e.type === 'run-finished')).toMatchObject({ status: 'completed', output: 3 })
    // A run that sleeps ends in a later macrotask: its events have records of their own.
    wf.define(workflow('slow', sequence(sleep('nap', 10), step('a', { fn: 'inc' }, { input: '$input' }))))
    const slow = await wf.start('slow', 5, { id: 's' })
    // The start's macrotask is written before the sleep ends: fake timers could otherwise fire the
    // sleep before the real macrotask that writes (a browser orders timers and messages as it likes),
    // and the run would look as if it ended in one.
    for (let i = 0; i < 50 && runKeys().length < 3; i++) await macrotask()
    expect(runKeys()).toEqual(['run/q', 'run/s', 'run/s/e/0000000001'])
    await advance(10)
    expect(await slow.result()).toBe(6)
    expect(runKeys().filter((k) => k.startsWith('run/s'))).toEqual(['run/s', 'run/s/e/0000000001', 'run/s/e/0000000002'])
    // Both read back the same from the store alone, and list as runs (the events are not part of a listing).
    const again = await orrery.workflows({ store, resume: false })
    expect(again.get('q')?.history()).toEqual(quick.history())
    expect(again.get('s')?.history()).toEqual(slow.history())
    expect(again.list().map((r) => Object.keys(r).sort())).toEqual([
      ['definition', 'finishedAt', 'generation', 'id', 'startedAt', 'status', 'version'],
      ['definition', 'finishedAt', 'generation', 'id', 'startedAt', 'status', 'version'],
    ])
    again.close()
    // Events and meta too large together for one record: they go apart.
    const part = 'p'.repeat(40 * 1024)
    wf.register('part', () => part)
    wf.define(workflow('parts', sequence(step('a', { fn: 'part' }), step('b', { fn: 'part' }))))
    const parts = await wf.start('parts', null, { id: 'p' })
    expect(await parts.result()).toBe(part)
    // (Together the two outputs are over it too: the events go in records of about half each.)
    expect(runKeys().filter((k) => k.startsWith('run/p'))).toEqual(['run/p', 'run/p/e/0000000001', 'run/p/e/0000000005', 'run/p/e/0000000007'])
    expect(
      parts
        .history()
        .filter((e) => e.type === 'step-completed')
        .map((e) => (e as { output?: string }).output?.length),
    ).toEqual([40 * 1024, 40 * 1024])
  })

  it.skipIf(ENGINE !== 'native' || IN_BROWSER)('writes such a run as one record on a durable store, or apart when too large together', async () => {
    const { join } = await import('node:path')
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    const path = join(await tempDir('orrery-wf-'), 'whole.redb')
    let store = orrery.openStore({ path, maxValueBytes: 64 * 1024 })
    let wf = await orrery.workflows({ store })
    const part = 'p'.repeat(20 * 1024)
    wf.register('inc', (n: number) => n + 1)
    wf.register('part', () => part)
    wf.define(workflow('quick', step('a', { fn: 'inc' }, { input: '$input' })))
    // Each output fits, but the whole record (input, outputs, events) would be over 64 KiB: the
    // durable store refuses it, and the run's records go apart.
    wf.define(workflow('parts', sequence(step('a', { fn: 'part' }), step('b', { fn: 'part' }))))
    const quick = await wf.start('quick', 1, { id: 'q' })
    const parts = await wf.start('parts', part, { id: 'p' })
    expect(await quick.result()).toBe(2)
    expect(await parts.result()).toBe(part)
    const keys = () => store.namespace('orrery.workflows', { codec: 'msgpack' }).keys('run/')
    expect(keys().filter((k) => k.startsWith('run/q'))).toEqual(['run/q'])
    expect(keys().filter((k) => k.startsWith('run/p')).length).toBeGreaterThan(1)
    const histories = [quick.history(), parts.history()]
    expect(histories[1]!.at(-1)).toMatchObject({ type: 'run-finished', status: 'completed' })
    wf.close()
    store.close()
    // Both read back from the file as they ran.
    store = orrery.openStore({ path, maxValueBytes: 64 * 1024 })
    wf = await orrery.workflows({ store })
    expect(wf.list().map((r) => [r.id, r.status])).toEqual([
      ['p', 'completed'],
      ['q', 'completed'],
    ])
    expect([wf.get('q')!.history(), wf.get('p')!.history()]).toEqual(histories)
    expect(await wf.get('p')!.result()).toBe(part)
    wf.close()
    store.close()
  })

  it('keeps outputs that fit one by one though together they are over the limit', async () => {
    const { wf } = await small()
    const part = 'p'.repeat(40 * 1024)
    wf.register('part', () => part)
    wf.register('sizes', (v: { a: string; b: string }) => v.a.length + v.b.length)
    wf.define(
      workflow(
        'two',
        sequence(parallel([step('a', { fn: 'part' }), step('b', { fn: 'part' })]), step('n', { fn: 'sizes' }, { input: { a: '$steps.a', b: '$steps.b' } })),
      ),
    )
    const run = await wf.start('two', null)
    expect(await run.result()).toBe(80 * 1024)
    expect(run.history().filter((e) => e.type === 'step-completed')).toHaveLength(3)
    // The end record keeps the input and the output together: a run they do not fit in ends failed.
    wf.register('echo', (v: unknown) => v)
    wf.define(workflow('echo', step('e', { fn: 'echo' }, { input: '$input' })))
    const echo = await wf.start('echo', part, { id: 'echo' })
    expect(await errorOf(() => echo.result())).toMatchObject({ code: 'VALUE_TOO_LARGE' })
    expect(wf.get('echo')?.status()).toBe('failed')
    // A child's input made of two that fit alone is too large together: its step fails for good.
    wf.define(
      workflow(
        'joined',
        sequence(
          parallel([step('a', { fn: 'part' }), step('b', { fn: 'part' })]),
          child('kid', 'echo', { input: { a: '$steps.a', b: '$steps.b' }, retry: { attempts: 3, initialMs: 1 } }),
        ),
      ),
    )
    const joined = await wf.start('joined', null)
    await advance(100)
    expect(await errorOf(() => joined.result())).toMatchObject({
      code: 'STEP_FAILED',
      details: { step: 'kid' },
      cause: expect.objectContaining({ code: 'VALUE_TOO_LARGE' }),
    })
    expect(joined.history().filter((e) => e.type === 'step-started' && e.step === 'kid')).toHaveLength(1)
  })

  it.skipIf(ENGINE !== 'native' || IN_BROWSER)('keeps such outputs on a durable store too, and reads them back after a reopen', async () => {
    const { join } = await import('node:path')
    const orrery = await Orrery.create({ engine: ENGINE })
    open.push(orrery)
    const path = join(await tempDir('orrery-wf-'), 'halves.redb')
    let store = orrery.openStore({ path, maxValueBytes: 64 * 1024 })
    let wf = await orrery.workflows({ store })
    const part = 'p'.repeat(40 * 1024)
    wf.register('part', () => part)
    wf.register('sizes', (v: { a: string; b: string }) => v.a.length + v.b.length)
    // After a sleep, so the run's events are written as they come (not as one record with its end):
    // the two completions come in one macrotask, over the limit together.
    const two = workflow(
      'two',
      sequence(
        sleep('nap', 1),
        parallel([step('a', { fn: 'part' }), step('b', { fn: 'part' })]),
        step('n', { fn: 'sizes' }, { input: { a: '$steps.a', b: '$steps.b' } }),
      ),
    )
    wf.define(two)
    const run = await wf.start(two, null, { id: 'two' })
    expect(await run.result()).toBe(80 * 1024)
    const history = run.history()
    expect(history.filter((e) => e.type === 'step-completed')).toHaveLength(3)
    wf.close()
    store.close()
    store = orrery.openStore({ path, maxValueBytes: 64 * 1024 })
    wf = await orrery.workflows({ store })
    expect(wf.get('two')!.history()).toEqual(history)
    expect(await wf.get('two')!.result()).toBe(80 * 1024)
    // A run whose input and output do not fit in its end record together ends failed, kept so
    // on disk: reopened, it is not run again.
    let echoes = 0
    wf.register('echo', (v: unknown) => {
      echoes++
      return v
    })
    wf.define(workflow('echo', sequence(sleep('nap', 1), step('e', { fn: 'echo' }, { input: '$input' }))))
    const echo = await wf.start('echo', part, { id: 'echo' })
    expect(await errorOf(() => echo.result())).toMatchObject({ code: 'VALUE_TOO_LARGE' })
    expect(wf.get('echo')?.status()).toBe('failed')
    wf.close()
    store.close()
    store = orrery.openStore({ path, maxValueBytes: 64 * 1024 })
    wf = await orrery.workflows({ store })
    wf.register('echo', (v: unknown) => {
      echoes++
      return v
    })
    expect(wf.get('echo')?.status()).toBe('failed')
    expect(await errorOf(() => wf.get('echo')!.result())).toMatchObject({ code: 'VALUE_TOO_LARGE' })
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(echoes).toBe(1)
    wf.close()
    store.close()
  })

  it('refuses a run id over 512 bytes of UTF-8, and a child run id over it fails its step for good', async () => {
    const { wf, runKeys } = await small()
    wf.register('leaf', () => 'leaf')
    wf.define(workflow('w', step('s', { fn: 'leaf' })))
    for (const id of ['i'.repeat(1015), 'é'.repeat(257)]) {
      const error = await errorOf(() => wf.start('w', null, { id }))
      expect(error).toMatchObject({ code: 'INVALID_OPTION', details: { option: 'id' } })
      expect(error?.message).toContain('512')
    }
    expect(runKeys()).toEqual([])
    expect(await (await wf.start('w', null, { id: 'é'.repeat(256) })).result()).toBe('leaf')
    // A child's run id is its step's idempotency key: `<parent id>/<node id>`.
    wf.define(workflow('parent', child('kid', 'w', { retry: { attempts: 3, initialMs: 1 } })))
    const parent = await wf.start('parent', null, { id: 'p'.repeat(510) })
    await advance(100)
    const error = await errorOf(() => parent.result())
    expect(error).toMatchObject({ code: 'STEP_FAILED', details: { step: 'kid' }, cause: expect.objectContaining({ code: 'INVALID_OPTION' }) })
    expect(String((error as { cause?: Error } | undefined)?.cause?.message)).toContain('512')
    expect(parent.history().filter((e) => e.type === 'step-started')).toHaveLength(1)
  })

  it('says a run timed out without naming a step, and refuses a run timeout of 0', async () => {
    const { wf } = await small()
    wf.register('hang', hang)
    wf.define(workflow('slow', sequence(step('a', { fn: 'hang' }))))
    expect(await errorOf(() => wf.start('slow', null, { timeoutMs: 0 }))).toMatchObject({ code: 'INVALID_OPTION', details: { option: 'timeoutMs' } })
    expect(wf.list()).toEqual([])
    const run = await wf.start('slow', null, { id: 'late', timeoutMs: 50 })
    const failed = errorOf(() => run.result())
    await advance(50)
    const error = await failed
    expect(error).toMatchObject({ code: 'STEP_FAILED', message: 'run late timed out (failed)', cause: expect.objectContaining({ code: 'TIMEOUT' }) })
    expect(error?.details).not.toHaveProperty('step')
  })
})
