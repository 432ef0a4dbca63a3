/**
 * Typed data flow through workflow definitions: typed step references, the output types the
 * builders give each node kind, `workflow()`'s input and output types, and `register`/`start`
 * holding code to them, and the signals typed waits give a run's `signal()`. The type assertions are checked by `tsc -p tsconfig.test.json` (each
 * `@ts-expect-error` fails the check when its line compiles); the runs check that the types
 * claim what the runtime really produces, and that the JSON and version stay those of the
 * untyped definition.
 */
import { afterEach, describe, expect, expectTypeOf, it } from 'vitest'
import { z } from 'zod'

import {
  type AnySignals,
  branch,
  capability,
  child,
  continueAsNew,
  type delegate,
  fn,
  forEach,
  loop,
  type NodeDraft,
  type NodeOutput,
  type NodeSignals,
  Orrery,
  parallel,
  pipeline,
  quorum,
  scatterGather,
  sequence,
  sleep,
  step,
  typeOnly,
  waitFor,
  when,
  workflow,
  type WorkflowDefinition,
  type WorkflowRun,
  type Workflows,
  type WorkflowSignals,
} from '../ts/node.js'
import { ENGINE } from './engine.js'
import { errorOf } from './helpers.js'

let open: Orrery[] = []
afterEach(() => {
  for (const o of open) o.close()
  open = []
})

async function workflows(): Promise<Workflows> {
  const orrery = await Orrery.create({ engine: ENGINE })
  open.push(orrery)
  return orrery.workflows()
}

const fetchText = fn<string, string>('fetch')
const count = fn<string, number>('count')
const half = fn<number, number>('half')
const summarize = capability<{ text: string }, string>('summarize@^1')
const cond = { path: '$input', op: 'truthy' } as const

describe('typed references', () => {
  it('are the plain references, their types for the compiler only', () => {
    expect(fetchText).toEqual({ fn: 'fetch' })
    expect(JSON.stringify(summarize)).toBe('{"capability":"summarize@^1"}')
    const typed = step('f', fetchText)
    const plain = step('f', { fn: 'fetch' })
    expectTypeOf<NodeOutput<typeof typed>>().toEqualTypeOf<string>()
    expectTypeOf<NodeOutput<typeof plain>>().toEqualTypeOf<unknown>()
    expectTypeOf<NodeOutput<ReturnType<typeof step>>>().toEqualTypeOf<unknown>()
    const onMesh = step('s', summarize, { input: { text: '$input' } })
    expectTypeOf<NodeOutput<typeof onMesh>>().toEqualTypeOf<string>()
    expect(typed).toEqual(plain)
    expect(scatterGather('ask', summarize, { join: 'any' })).toEqual(scatterGather('ask', 'summarize@^1', { join: 'any' }))
  })

  it('register takes a typed reference for its name, and refuses a reference without one', async () => {
    const wf = await workflows()
    wf.register(count, (s) => s.length)
    // The name is taken: a second function for it is refused as with a string name.
    const twice = await errorOf(() => wf.register({ fn: 'count' }, () => 0))
    expect(twice?.code).toBe('INVALID_ARGUMENT')
    expect(twice?.details?.['name']).toBe('count')
    const bad = await errorOf(() => wf.register({ fn: 7 } as unknown as typeof count, () => 0))
    expect(bad?.code).toBe('INVALID_ARGUMENT')
    expect(bad?.details?.['argument']).toBe('name')
    expect((await errorOf(() => wf.register(null as unknown as string, () => 0)))?.code).toBe('INVALID_ARGUMENT')
  })

  it('leave the JSON and the version of a definition as they are without them', () => {
    const typed = workflow('doc', sequence(step('fetch', fetchText, { input: '$input' }), step('count', count, { input: '$steps.fetch' })), {
      input: typeOnly<string>(),
    })
    const plain = workflow('doc', sequence(step('fetch', { fn: 'fetch' }, { input: '$input' }), step('count', { fn: 'count' }, { input: '$steps.fetch' })))
    expect(JSON.stringify(typed)).toBe(JSON.stringify(plain))
    expect(typed.version).toBe(plain.version)
    expect(Object.keys(typed).sort()).toEqual(['format', 'name', 'root', 'version'])
    expectTypeOf(typed).toEqualTypeOf<WorkflowDefinition<string, number>>()
    expectTypeOf(plain).toEqualTypeOf<WorkflowDefinition<unknown, unknown>>()
  })
})

describe('node output types', () => {
  const text = step('text', fetchText)
  const n = step('n', count)

  it("a sequence gives its last node's output", () => {
    const s = sequence(text, n)
    expectTypeOf<NodeOutput<typeof s>>().toEqualTypeOf<number>()
    const named = sequence('named', [n, text])
    expectTypeOf<NodeOutput<typeof named>>().toEqualTypeOf<string>()
    const nested = sequence(text, sequence(n, sleep('nap', 1)))
    expectTypeOf<NodeOutput<typeof nested>>().toEqualTypeOf<null>()
  })

  it('a parallel gives a tuple in branch order, its entries possibly undefined unless the join is all', () => {
    const all = parallel([text, n])
    expectTypeOf<NodeOutput<typeof all>>().toEqualTypeOf<[string, number]>()
    const explicit = parallel([text, n], { join: 'all', timeoutMs: 10 })
    expectTypeOf<NodeOutput<typeof explicit>>().toEqualTypeOf<[string, number]>()
    const any = parallel([text, n], { join: 'any' })
    expectTypeOf<NodeOutput<typeof any>>().toEqualTypeOf<[string | undefined, number | undefined]>()
    const some = parallel([text, n, step('m', count)], { join: quorum(2) })
    expectTypeOf<NodeOutput<typeof some>>().toEqualTypeOf<[string | undefined, number | undefined, number | undefined]>()
  })

  it("a branch gives one of its arms' outputs, undefined without otherwise, never a continueAsNew", () => {
    const open = branch([when(cond, text), when(cond, n)])
    expectTypeOf<NodeOutput<typeof open>>().toEqualTypeOf<string | number | undefined>()
    const closed = branch([when(cond, text)], n)
    expectTypeOf<NodeOutput<typeof closed>>().toEqualTypeOf<string | number>()
    const again = branch([when(cond, continueAsNew('again'))], text)
    expectTypeOf<NodeOutput<typeof again>>().toEqualTypeOf<string>()
  })

  it("a loop gives its last iteration's output: always one with until, maybe none with while", () => {
    const until = loop({ until: cond, maxIterations: 3 }, n)
    expectTypeOf<NodeOutput<typeof until>>().toEqualTypeOf<number>()
    const whileLoop = loop({ while: cond, maxIterations: 3 }, n)
    expectTypeOf<NodeOutput<typeof whileLoop>>().toEqualTypeOf<number | undefined>()
  })

  it('forEach, pipeline and scatterGather give lists; aggregate, child, waitFor and delegate what they can know', () => {
    const each = forEach('$input', text, { concurrency: 2 })
    expectTypeOf<NodeOutput<typeof each>>().toEqualTypeOf<string[]>()
    const first = forEach('$input', text, { join: 'any' })
    expectTypeOf<NodeOutput<typeof first>>().toEqualTypeOf<(string | undefined)[]>()
    const stream = pipeline('p', '$input', [step('a', fetchText, { input: '$item' }), step('b', count, { input: '$item' })])
    expectTypeOf<NodeOutput<typeof stream>>().toEqualTypeOf<number[]>()
    const asked = scatterGather('ask', summarize, { input: { text: '$input' } })
    expectTypeOf<NodeOutput<typeof asked>>().toEqualTypeOf<string[]>()
    const firstAnswer = scatterGather('ask', summarize, { join: 'any' })
    expectTypeOf<NodeOutput<typeof firstAnswer>>().toEqualTypeOf<(string | undefined)[]>()
    const untyped = scatterGather('ask', 'summarize@^1')
    expectTypeOf<NodeOutput<typeof untyped>>().toEqualTypeOf<unknown[]>()
    const aggregated = scatterGather('ask', summarize, { aggregate: 'agreed' })
    expectTypeOf<NodeOutput<typeof aggregated>>().toEqualTypeOf<unknown>()
    const sub = workflow('sub', n)
    const byDefinition = child('c', sub)
    expectTypeOf<NodeOutput<typeof byDefinition>>().toEqualTypeOf<number>()
    expect(byDefinition).toEqual(child('c', 'sub'))
    const byName = child('c', 'sub')
    expectTypeOf<NodeOutput<typeof byName>>().toEqualTypeOf<unknown>()
    const signal = waitFor('w', 'approve')
    expectTypeOf<NodeOutput<typeof signal>>().toEqualTypeOf<unknown>()
    const approval = waitFor<{ by: string }>('w', 'approve', { timeoutMs: 5 })
    expectTypeOf<NodeOutput<typeof approval>>().toEqualTypeOf<{ by: string }>()
    const maybe = waitFor<{ by: string }>('w', 'approve', { timeoutMs: 5, onTimeout: 'continue' })
    expectTypeOf<NodeOutput<typeof maybe>>().toEqualTypeOf<{ by: string } | undefined>()
    expectTypeOf<NodeOutput<ReturnType<typeof sleep>>>().toEqualTypeOf<null>()
    expectTypeOf<NodeOutput<ReturnType<typeof delegate>>>().toEqualTypeOf<unknown[]>()
    expectTypeOf<NodeOutput<ReturnType<typeof continueAsNew>>>().toEqualTypeOf<never>()
  })

  it("workflow() takes the root's output, its input from typeOnly, and explicit types as given", () => {
    const inferred = workflow('w', sequence(text, n))
    expectTypeOf(inferred).toEqualTypeOf<WorkflowDefinition<unknown, number>>()
    const typedInput = workflow('w', sequence(text, n), { input: typeOnly<{ url: string }>(), version: 'v1' })
    expectTypeOf(typedInput).toEqualTypeOf<WorkflowDefinition<{ url: string }, number>>()
    const claimed = workflow<{ url: string }, string>('w', step('x', { fn: 'x' }))
    expectTypeOf(claimed).toEqualTypeOf<WorkflowDefinition<{ url: string }, string>>()
    const inputOnly = workflow<{ url: string }>('w', n)
    expectTypeOf(inputOnly).toEqualTypeOf<WorkflowDefinition<{ url: string }, unknown>>()
    const remapped = workflow('w', sequence(text, n), { output: { n: '$steps.n' } })
    expectTypeOf(remapped).toEqualTypeOf<WorkflowDefinition<unknown, unknown>>()
    // @ts-expect-error: typeOnly<number>() is not the { url } the type argument says
    workflow<{ url: string }>('w', n, { input: typeOnly<number>() })
  })
})

describe('register and start follow the types', () => {
  it('runs typed steps and returns typed results, matching what the run produces', async () => {
    const wf = await workflows()
    wf.register(fetchText, (url) => {
      expectTypeOf(url).toEqualTypeOf<string>()
      return `text of ${url}`
    })
    wf.register(count, async (s) => s.length)
    wf.register(half, { input: z.number(), output: z.number() }, (x) => x / 2)
    wf.register('double', { input: z.number(), output: z.number() }, (x) => {
      expectTypeOf(x).toEqualTypeOf<number>()
      return x * 2
    })
    wf.register('loose', (x: { a: number }) => x.a)
    // Never ends on its own: aborted once the join of its parallel holds.
    wf.register('hang', (_x, ctx) => new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))))

    const doc = wf.define(
      workflow(
        'doc',
        sequence(
          step('fetch', fetchText, { input: '$input.url' }),
          step('count', count, { input: '$steps.fetch' }),
          step('half', half, { input: '$steps.count' }),
        ),
        {
          input: typeOnly<{ url: string }>(),
        },
      ),
    )
    expectTypeOf(doc).toEqualTypeOf<WorkflowDefinition<{ url: string }, number>>()
    const run = await wf.start(doc, { url: 'abc' })
    expectTypeOf(run).toEqualTypeOf<WorkflowRun<number>>()
    expectTypeOf(run.result()).toEqualTypeOf<Promise<number>>()
    expect(await run.result()).toBe(5.5) // 'text of abc' has 11 characters

    // Each kind's real output, held to the type its builder gave it.
    const no = { path: '$input.no', op: 'eq', value: 'no' } as const
    const shapes = wf.define(
      workflow(
        'shapes',
        parallel([
          parallel([step('a', count, { input: 'ab' }), step('b', fetchText, { input: 'b' })]),
          branch([when(no, step('c', count, { input: 'c' }))]),
          loop({ while: no, maxIterations: 2 }, step('d', count, { input: 'd' })),
          loop({ until: { path: '$steps.e', op: 'gt', value: 0 }, maxIterations: 2 }, step('e', count, { input: 'eee' })),
          forEach('$input.list', step('f', count, { input: '$item' })),
          pipeline('g', '$input.list', [step('g0', count, { input: '$item' }), step('g1', half, { input: '$item' })]),
          sequence(step('h', count, { input: 'hh' }), sleep('nap', 1)),
          parallel([step('i', count, { input: 'i' }), step('j', { fn: 'hang' })], { join: 'any' }),
        ]),
        { input: typeOnly<{ no: string; list: string[] }>() },
      ),
    )
    type Shapes = [[number, string], number | undefined, number | undefined, number, number[], number[], null, [number | undefined, unknown]]
    expectTypeOf(shapes).toEqualTypeOf<WorkflowDefinition<{ no: string; list: string[] }, Shapes>>()
    const result = await (await wf.start(shapes, { no: 'yes', list: ['x', 'yy'] })).result()
    const expected: Shapes = [[2, 'text of b'], undefined, undefined, 3, [1, 2], [0.5, 1], null, [1, undefined]]
    expect(result).toEqual(expected)
  })

  it('start with a name is unknown-typed, and an untyped definition may start without input', async () => {
    const wf = await workflows()
    let seen: unknown = 'not called'
    wf.register('see', (x) => {
      seen = x
      return x
    })
    const plain = wf.define(workflow('plain', step('s', { fn: 'see' }, { input: '$input' })))
    const byDefinition = await wf.start(plain)
    expectTypeOf(byDefinition).toEqualTypeOf<WorkflowRun<unknown>>()
    expect(await byDefinition.result()).toBeUndefined()
    expect(seen).toBeUndefined()
    const byName = await wf.start('plain', 5)
    expectTypeOf(byName).toEqualTypeOf<WorkflowRun<unknown>>()
    expect(await byName.result()).toBe(5)
  })
})

describe('signals', () => {
  const approve = waitFor('review', 'approve', { payload: typeOnly<{ by: string }>() })
  const reason = waitFor('why', 'reason', { payload: typeOnly<string>(), timeoutMs: 5, onTimeout: 'continue' })
  type Both = { approve: { by: string }; reason: string }

  it('a typed wait gives its name and payload type, the JSON and version staying those of an untyped one', () => {
    expectTypeOf<NodeOutput<typeof approve>>().toEqualTypeOf<{ by: string }>()
    expectTypeOf<NodeSignals<typeof approve>>().toEqualTypeOf<{ approve: { by: string } }>()
    expectTypeOf<NodeOutput<typeof reason>>().toEqualTypeOf<string | undefined>()
    expectTypeOf<NodeSignals<typeof reason>>().toEqualTypeOf<{ reason: string }>()
    expect(approve).toEqual(waitFor('review', 'approve'))
    const typed = workflow('review', sequence(approve, reason))
    const plain = workflow('review', sequence(waitFor('review', 'approve'), waitFor('why', 'reason', { timeoutMs: 5, onTimeout: 'continue' })))
    expect(JSON.stringify(typed)).toBe(JSON.stringify(plain))
    expect(typed.version).toBe(plain.version)
    expectTypeOf(typed).toEqualTypeOf<WorkflowDefinition<unknown, string | undefined, Both>>()
    expectTypeOf(plain).toEqualTypeOf<WorkflowDefinition<unknown, unknown>>()
  })

  it("every container passes its children's signals up to workflow(); a child run keeps its own", () => {
    const nap = sleep('nap', 1)
    expectTypeOf(workflow('s', sequence('named', [nap, approve, reason]))).toEqualTypeOf<WorkflowDefinition<unknown, string | undefined, Both>>()
    const deep = workflow(
      'deep',
      parallel([
        loop({ until: cond, maxIterations: 2 }, branch([when(cond, nap)], forEach('$input', approve))),
        pipeline('p', '$input', [step('a', count, { input: '$item' }), loop({ while: cond, maxIterations: 2 }, reason)]),
      ]),
      { input: typeOnly<string[]>() },
    )
    expectTypeOf<WorkflowSignals<typeof deep>>().toEqualTypeOf<Both>()
    const byArm = branch([when(cond, approve)], reason)
    expectTypeOf<NodeSignals<typeof byArm>>().toEqualTypeOf<{ approve: { by: string } } | { reason: string }>()
    // An output spec leaves the output unknown, not the signals.
    const remapped = workflow('o', approve, { output: '$steps.review.by' })
    expectTypeOf(remapped).toEqualTypeOf<WorkflowDefinition<unknown, unknown, { approve: { by: string } }>>()
    // A child run takes its own signals, not its parent's.
    const parent = workflow('parent', sequence(child('sub', workflow('sub', approve)), nap))
    expectTypeOf(parent).toEqualTypeOf<WorkflowDefinition<unknown, null>>()
    // The same name waited for with two payload types takes a payload of both.
    const twice = workflow('twice', sequence(approve, waitFor('again', 'approve', { payload: typeOnly<{ at: number }>() })))
    expectTypeOf<WorkflowSignals<typeof twice>['approve']>().toEqualTypeOf<{ by: string } & { at: number }>()
  })

  it('stay loose without a typed wait: untyped waits, a name that is no literal, stated types', () => {
    expectTypeOf(workflow('untyped', waitFor('w', 'go'))).toEqualTypeOf<WorkflowDefinition<unknown, unknown, AnySignals>>()
    expectTypeOf(workflow('none', step('n', count))).toEqualTypeOf<WorkflowDefinition<unknown, number>>()
    // TypeScript infers every type argument or none: with `P` given, the name is just a string.
    expectTypeOf(workflow('given', waitFor<{ by: string }>('w', 'approve'))).toEqualTypeOf<WorkflowDefinition<unknown, { by: string }>>()
    const name: string = 'approve'
    const byVariable = workflow('variable', waitFor('w', name, { payload: typeOnly<{ by: string }>() }))
    expectTypeOf(byVariable).toEqualTypeOf<WorkflowDefinition<unknown, { by: string }>>()
    expectTypeOf(workflow<unknown, { by: string }>('claimed', approve)).toEqualTypeOf<WorkflowDefinition<unknown, { by: string }>>()
  })

  it('beside a typed wait, an untyped one has its name checked, and a node no builder made lets any name through', () => {
    const mixed = workflow('mixed', sequence(approve, waitFor('w', 'go')))
    expectTypeOf<WorkflowSignals<typeof mixed>>().toEqualTypeOf<{ approve: { by: string }; go: unknown }>()
    const plainNode: NodeDraft = { kind: 'sleep', id: 'nap', ms: 1 }
    const open = workflow('open', sequence(approve, plainNode))
    expectTypeOf<WorkflowSignals<typeof open>>().toEqualTypeOf<{ [name: string]: unknown; approve: { by: string } }>()
  })

  it('wf.start gives the run a signal() of the typed names and payloads; a run started by name takes any', async () => {
    const wf = await workflows()
    const review = wf.define(workflow('review', sequence(approve, step('who', { fn: 'who' }, { input: '$steps.review.by' }), waitFor('w', 'go'), reason)))
    wf.register('who', (by) => by)
    const run = await wf.start(review)
    expectTypeOf(run).toEqualTypeOf<WorkflowRun<string | undefined, { approve: { by: string }; go: unknown; reason: string }>>()
    expectTypeOf(run.signal).parameters.toEqualTypeOf<
      [name: 'approve', payload: { by: string }] | [name: 'go', payload?: unknown] | [name: 'reason', payload: string]
    >()
    await run.signal('approve', { by: 'ana' })
    await run.signal('go')
    await run.signal('reason', 'looks right')
    expect(await run.result()).toBe('looks right')
    expect(run.state().nodes['review']?.output).toEqual({ by: 'ana' })

    const byName = await wf.start('review')
    expectTypeOf(byName).toEqualTypeOf<WorkflowRun<unknown, AnySignals>>()
    expectTypeOf(byName.signal).parameters.toEqualTypeOf<[name: string, payload?: unknown]>()
    // The compiler lets this name through; the run refuses it as ever.
    expect(() => byName.signal('aprove', { by: 'ana' })).toThrow(expect.objectContaining({ code: 'SIGNAL_UNKNOWN' }))
    await byName.cancel()
  })
})

/** Misuses the compiler refuses: never called, only type-checked. */
async function _misuses(wf: Workflows): Promise<void> {
  // @ts-expect-error: count's function returns a number, not a string
  wf.register(count, (s) => s)
  // @ts-expect-error: count's function resolves to a number, not a string
  wf.register(count, async (s) => s)
  // @ts-expect-error: count's function takes a string
  wf.register(count, (s: number) => s)
  // @ts-expect-error: the output schema takes a number
  wf.register('len', { input: z.string(), output: z.number() }, (s) => s)
  // @ts-expect-error: the output schema takes a number, not a promise of a string
  wf.register('len', { output: z.number() }, async () => 'long')
  // @ts-expect-error: the input schema makes a string, which has no toFixed
  wf.register('len', { input: z.string() }, (s) => s.toFixed())
  // @ts-expect-error: the input schema makes a number, not the string count takes
  wf.register(count, { input: z.number() }, (s) => s.length)

  const doc = workflow('doc', sequence(step('fetch', fetchText, { input: '$input' }), step('count', count, { input: '$steps.fetch' })), {
    input: typeOnly<string>(),
  })
  // @ts-expect-error: the input is a string
  await wf.start(doc, 42)
  // @ts-expect-error: the input is required
  await wf.start(doc)
  // @ts-expect-error: the options come after the input
  await wf.start(doc, { id: 'x' })
  const run = await wf.start(doc, 'https://example.com', { id: 'x' })
  // @ts-expect-error: the result is a number
  const wrong: string = await run.result()
  void wrong
  const nullable = workflow('nullable', step('n', count), { input: typeOnly<null>() })
  // @ts-expect-error: null is required, undefined is not it
  await wf.start(nullable)
  await wf.start(nullable, null)
  // @ts-expect-error: a sequence ending in count gives a number
  const s: NodeOutput<ReturnType<typeof sequence<[ReturnType<typeof step<string, number>>]>>> = 'text'
  void s

  const review = workflow('review', sequence(waitFor('review', 'approve', { payload: typeOnly<{ by: string }>() }), waitFor('w', 'go')))
  const waiting = await wf.start(review)
  // @ts-expect-error: the definition waits for no signal 'aprove'
  await waiting.signal('aprove', { by: 'ana' })
  // @ts-expect-error: approve's payload is a { by: string }
  await waiting.signal('approve', { by: 7 })
  // @ts-expect-error: approve's payload is required
  await waiting.signal('approve')
  // @ts-expect-error: a name the compiler cannot check is refused on a typed run
  await waiting.signal('approve' as string, { by: 'ana' })
  // @ts-expect-error: a name that may be approve takes approve's payload
  await waiting.signal('approve' as 'approve' | 'go', 'text')
  const parent = await wf.start(workflow('parent', sequence(child('c', review), waitFor('own', 'done', { payload: typeOnly<number>() }))))
  // @ts-expect-error: a run takes its own definition's signals, not its child's
  await parent.signal('approve', { by: 'ana' })
  await parent.signal('done', 1)
  await waiting.signal('go', { anything: true })
}
