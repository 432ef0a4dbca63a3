/**
 * Workflow definitions as data: the builders, validation of any value (every rule, hostile
 * values), the compiled program word by word, references and conditions, and the content
 * version. No engine is involved: the same file runs in every project.
 */
import { describe, expect, expectTypeOf, it } from 'vitest'

import { OrreryError } from '../ts/errors.js'
import {
  branch,
  child,
  continueAsNew,
  delegate,
  forEach,
  loop,
  parallel,
  pipeline,
  quorum,
  scatterGather,
  sequence,
  sleep,
  step,
  waitFor,
  when,
  workflow,
} from '../ts/workflows/builder.js'
import { compileWorkflow } from '../ts/workflows/compile.js'
import type { Condition, InputSpec, WorkflowDefinition, WorkflowInput, WorkflowOutput } from '../ts/workflows/definition.js'
import { buildInput, type DataScope, parseRef, resolveRef, testCondition } from '../ts/workflows/refs.js'
import { validateDefinition } from '../ts/workflows/validate.js'
import { canonicalJson, contentVersion } from '../ts/workflows/version.js'

/** The typed error `call` throws (fails the test when it returns, or throws anything else). */
function refused(call: () => unknown, code = 'DEFINITION_INVALID'): OrreryError {
  let error: unknown
  try {
    call()
  } catch (e) {
    error = e
  }
  if (!(error instanceof OrreryError))
    throw new Error(`expected an OrreryError ${code}, got ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`)
  expect(error.code).toBe(code)
  return error
}

const json = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T
const f = (name: string) => ({ fn: name })

/** One node's 12 words with the defaults of a node that sets nothing. */
function N(kind: number, w: { start?: number; count?: number; p1?: number; p2?: number; p3?: number; timeout?: number; comp?: number; retry?: number[] } = {}) {
  return [kind, w.start ?? 0, w.count ?? 0, w.p1 ?? 0, w.p2 ?? 0, w.p3 ?? 0, w.timeout ?? Infinity, w.comp ?? -1, ...(w.retry ?? [1, 100, 10_000, 2])]
}
const STEP = 0
const SEQ = 1
const PAR = 2
const BRANCH = 3
const LOOP = 4
const MAP = 5
const SLEEP = 6
const WAIT = 7
const PIPELINE = 8

function program(...parts: number[][]): number[] {
  return parts.flat()
}

describe('workflow builders', () => {
  it('build plain JSON: containers numbered by position, the version a content hash, the whole frozen', () => {
    const def = workflow<{ url: string }, string>(
      'doc',
      sequence(
        step('fetch', f('fetch'), { input: { url: '$input.url' }, retry: { attempts: 3 } }),
        parallel([step('a', f('a')), sequence(step('b', f('b')), sleep('pause', 10))], { join: 'any' }),
        step('summarize', { capability: 'summarize@^1.2' }, { input: '$steps.fetch.text', timeoutMs: Infinity }),
      ),
    )
    expect(def).toEqual({
      format: 1,
      name: 'doc',
      version: expect.stringMatching(/^sha256:[0-9a-f]{16}$/),
      root: {
        kind: 'sequence',
        id: 'seq-1',
        steps: [
          { kind: 'step', id: 'fetch', run: { fn: 'fetch' }, input: { url: '$input.url' }, retry: { attempts: 3 } },
          {
            kind: 'parallel',
            id: 'par-2',
            branches: [
              { kind: 'step', id: 'a', run: { fn: 'a' } },
              {
                kind: 'sequence',
                id: 'seq-3',
                steps: [
                  { kind: 'step', id: 'b', run: { fn: 'b' } },
                  { kind: 'sleep', id: 'pause', ms: 10 },
                ],
              },
            ],
            join: 'any',
          },
          // An Infinity timeout is none: left out, so the JSON holds what the object holds.
          { kind: 'step', id: 'summarize', run: { capability: 'summarize@^1.2' }, input: '$steps.fetch.text' },
        ],
      },
    })
    expect(Object.isFrozen(def)).toBe(true)
    expect(Object.isFrozen(def.root)).toBe(true)
    expect(json(def)).toEqual(def)
    expect(JSON.stringify(def)).not.toContain('~types')
  })

  it('carry the run input and output types, which the JSON never holds', () => {
    const typed = workflow<{ url: string }, string>('t', sleep('z', 1))
    expectTypeOf<WorkflowInput<typeof typed>>().toEqualTypeOf<{ url: string }>()
    expectTypeOf<WorkflowOutput<typeof typed>>().toEqualTypeOf<string>()
    expectTypeOf<WorkflowInput<WorkflowDefinition>>().toEqualTypeOf<unknown>()
    expect(Object.keys(typed)).toEqual(['format', 'name', 'version', 'root'])
  })

  it('numbers unnamed containers in pre-order, skips ids taken, and keeps given ids', () => {
    const def = workflow(
      'ids',
      sequence(
        step('seq-1', f('x')),
        loop({ until: { path: '$steps.seq-1', op: 'truthy' }, maxIterations: 3 }, branch([when({ path: '$input', op: 'exists' }, step('s', f('s')))])),
        forEach('$input.list', sequence('mine', [step('e', f('e'))])),
        parallel([step('p', f('p'))], { id: 'named' }),
      ),
    )
    const root = def.root as { id: string; steps: { id: string; body?: { id: string } }[] }
    expect(root.id).toBe('seq-2')
    expect(root.steps.map((s) => s.id)).toEqual(['seq-1', 'loop-3', 'each-5', 'named'])
    expect(root.steps[1]!.body!.id).toBe('branch-4')
    expect(root.steps[2]!.body!.id).toBe('mine')
  })

  it('compiles a hand-written definition the same way: containers left unnamed are numbered as workflow() does', () => {
    const built = workflow('w', sequence(step('a', f('a')), parallel([step('b', f('b'))])))
    const hand = {
      format: 1,
      name: 'w',
      root: {
        kind: 'sequence',
        steps: [
          { kind: 'step', id: 'a', run: { fn: 'a' } },
          { kind: 'parallel', branches: [{ kind: 'step', id: 'b', run: { fn: 'b' } }] },
        ],
      },
    }
    const compiled = compileWorkflow(hand)
    expect(compiled.definition).toEqual(built)
    expect(compiled.program).toEqual(compileWorkflow(built).program)
  })

  it('offer every node kind, with options', () => {
    expect(child('c', 'sub', { input: '$input', retry: { attempts: 2 }, timeoutMs: 5, compensate: { run: f('undo') } })).toEqual({
      kind: 'child',
      id: 'c',
      workflow: 'sub',
      input: '$input',
      retry: { attempts: 2 },
      timeoutMs: 5,
      compensate: { run: { fn: 'undo' } },
    })
    expect(scatterGather('sg', 'review@^1', { aggregate: 'merge', join: quorum(2) })).toEqual({
      kind: 'scatterGather',
      id: 'sg',
      capability: 'review@^1',
      join: { quorum: 2 },
      aggregate: { fn: 'merge' },
    })
    expect(waitFor('w', 'approve', { timeoutMs: 1000, onTimeout: 'continue' })).toEqual({
      kind: 'waitFor',
      id: 'w',
      signal: 'approve',
      timeoutMs: 1000,
      onTimeout: 'continue',
    })
    expect(sleep('z', 0)).toEqual({ kind: 'sleep', id: 'z', ms: 0 })
    expect(sequence('s', [sleep('z', 1)])).toEqual({ kind: 'sequence', id: 's', steps: [{ kind: 'sleep', id: 'z', ms: 1 }] })
    expect(branch([when({ fn: 'ok' }, sleep('z', 1))], undefined, { id: 'b' })).toEqual({
      kind: 'branch',
      id: 'b',
      arms: [armJson({ fn: 'ok' }, { kind: 'sleep', id: 'z', ms: 1 })],
    })
  })

  it('refuse a bad tree when workflow() is called, naming the node', () => {
    const err = refused(() => workflow('w', sequence(step('a', f('a')), step('a', f('b')))))
    expect(err.message).toBe('workflow "w": node "a" at root.steps[1]: id is the id of the node at root.steps[0] too: ids are unique in a definition')
    expect(err.details).toMatchObject({ node: 'a', path: 'root.steps[1].id' })
  })
})

describe('compiled programs', () => {
  it('a step with retry, timeout and a compensation: the compensation is a STEP listed by no container', () => {
    const c = compileWorkflow(
      workflow(
        'one',
        step('a', f('f'), {
          retry: { attempts: 3, initialMs: 50, maxMs: 500, factor: 3, jitter: false },
          timeoutMs: 1000,
          compensate: { run: f('undo'), input: '$steps.a', retry: { attempts: 2 }, timeoutMs: 30 },
        }),
      ),
    )
    expect([...c.program]).toEqual(
      program([1, 2], N(STEP, { timeout: 1000, comp: 1, retry: [3, 50, 500, 3] }), N(STEP, { p3: 1, timeout: 30, retry: [2, 100, 10_000, 2] })),
    )
    expect(c.nodes[1]).toEqual({ kind: 'step', id: 'a.compensate', run: { fn: 'undo' }, input: '$steps.a', retry: { attempts: 2 }, timeoutMs: 30 })
    expect([...c.parent]).toEqual([-1, -1])
    expect([...c.index]).toEqual([
      ['a', 0],
      ['a.compensate', 1],
    ])
  })

  it('sequence, child and sleep: children in the list area, in order', () => {
    const c = compileWorkflow(workflow('s', sequence(step('a', f('a')), child('b', 'sub', { timeoutMs: 70 }), sleep('z', 250))))
    expect([...c.program]).toEqual(
      program([1, 4], N(SEQ, { start: 0, count: 3 }), N(STEP, { p3: 1 }), N(STEP, { p3: 1, timeout: 70 }), N(SLEEP, { p1: 250 }), [1, 2, 3]),
    )
    expect([...c.parent]).toEqual([-1, 0, 0, 0])
  })

  it('parallel with a quorum and a timeout; a nested container takes the next list range', () => {
    const c = compileWorkflow(
      workflow('p', parallel([step('a', f('a')), sequence(step('b', f('b')), step('c', f('c'))), step('d', f('d'))], { join: quorum(2), timeoutMs: 500 })),
    )
    expect([...c.program]).toEqual(
      program(
        [1, 6],
        N(PAR, { start: 0, count: 3, p1: 2, p2: 2, timeout: 500 }),
        N(STEP, { p3: 1 }),
        N(SEQ, { start: 3, count: 2 }),
        N(STEP, { p3: 1 }),
        N(STEP, { p3: 1 }),
        N(STEP, { p3: 1 }),
        [1, 2, 5, 3, 4],
      ),
    )
    expect([...c.parent]).toEqual([-1, 0, 0, 2, 2, 0])
    expect(c.nodes.map((n) => n.id)).toEqual(['par-1', 'a', 'seq-2', 'b', 'c', 'd'])
  })

  it('join any and all', () => {
    expect([...compileWorkflow(workflow('p', parallel([sleep('a', 1)], { join: 'any' }))).program].slice(2, 6)).toEqual([PAR, 0, 1, 1])
    expect([...compileWorkflow(workflow('p', parallel([sleep('a', 1)], { join: 'all' }))).program].slice(2, 6)).toEqual([PAR, 0, 1, 0])
  })

  it('branch: the arms, then otherwise as the last arm', () => {
    const cond: Condition = { path: '$input.x', op: 'eq', value: 1 }
    const c = compileWorkflow(workflow('b', branch([when(cond, sleep('a', 1)), when(cond, sleep('b', 2))], sleep('c', 3))))
    expect([...c.program]).toEqual(program([1, 4], N(BRANCH, { count: 3 }), N(SLEEP, { p1: 1 }), N(SLEEP, { p1: 2 }), N(SLEEP, { p1: 3 }), [1, 2, 3]))
    const none = compileWorkflow(workflow('b', branch([when(cond, sleep('a', 1))])))
    expect([...none.program]).toEqual(program([1, 2], N(BRANCH, { count: 1 }), N(SLEEP, { p1: 1 }), [1]))
  })

  it('loop: while is p1 0, until is p1 1; p2 is maxIterations', () => {
    const cond: Condition = { path: '$steps.a', op: 'lt', value: 3 }
    const w = compileWorkflow(workflow('l', loop({ while: cond, maxIterations: 7 }, step('a', f('a')))))
    expect([...w.program]).toEqual(program([1, 2], N(LOOP, { count: 1, p1: 0, p2: 7 }), N(STEP, { p3: 1 }), [1]))
    const u = compileWorkflow(workflow('l', loop({ until: cond, maxIterations: 1_000_000 }, step('a', f('a')))))
    expect([...u.program].slice(2, 14)).toEqual(N(LOOP, { count: 1, p1: 1, p2: 1_000_000 }))
  })

  it('forEach: a MAP with concurrency, join and timeout', () => {
    const c = compileWorkflow(
      workflow('e', forEach('$input.items', step('e', f('each'), { input: '$item' }), { concurrency: 4, join: 'any', timeoutMs: 9000 })),
    )
    expect([...c.program]).toEqual(program([1, 2], N(MAP, { count: 1, p1: 4, p2: 1, p3: 0, timeout: 9000 }), N(STEP, { p3: 1 }), [1]))
    const q = compileWorkflow(workflow('e', forEach('$input.items', sleep('s', 1), { join: quorum(5) })))
    expect([...q.program].slice(2, 14)).toEqual(N(MAP, { count: 1, p1: 0, p2: 2, p3: 5 }))
  })

  it('scatterGather: a MAP whose one child is the synthetic call step', () => {
    const c = compileWorkflow(
      workflow('g', scatterGather('sg', 'review@^1', { input: { doc: '$input', n: '$index' }, join: quorum(3), timeoutMs: 2000, aggregate: 'merge' })),
    )
    expect([...c.program]).toEqual(program([1, 2], N(MAP, { count: 1, p1: 0, p2: 2, p3: 3, timeout: 2000 }), N(STEP, { p3: 1 }), [1]))
    expect(c.nodes[1]).toEqual({ kind: 'step', id: 'sg.call', run: { capability: 'review@^1' }, input: { doc: '$input', n: '$index' } })
    expect([...c.parent]).toEqual([-1, 0])
  })

  it('waitFor: signals numbered by first appearance, onTimeout and timeout', () => {
    const c = compileWorkflow(
      workflow(
        'w',
        sequence(
          waitFor('w1', 'approve'),
          waitFor('w2', 'reject', { timeoutMs: 100, onTimeout: 'continue' }),
          waitFor('w3', 'approve', { timeoutMs: 5, onTimeout: 'fail' }),
        ),
      ),
    )
    expect(c.signals).toEqual(['approve', 'reject'])
    expect([...c.program]).toEqual(
      program(
        [1, 4],
        N(SEQ, { count: 3 }),
        N(WAIT, { p1: 0, p2: 0 }),
        N(WAIT, { p1: 1, p2: 1, timeout: 100 }),
        N(WAIT, { p1: 0, p2: 0, timeout: 5 }),
        [1, 2, 3],
      ),
    )
  })

  it('a run timeout is the root timeout word; a step or waitFor root is wrapped in a sequence that carries it', () => {
    const seq = compileWorkflow(workflow('t', sequence(sleep('a', 1)), { timeoutMs: 5000 }))
    expect([...seq.program].slice(2, 14)).toEqual(N(SEQ, { count: 1, timeout: 5000 }))
    const par = compileWorkflow(workflow('t', parallel([sleep('a', 1)], { timeoutMs: 300 }), { timeoutMs: 5000 }))
    expect(par.program[2 + 6]).toBe(300)
    const wrapped = compileWorkflow(workflow('t', step('a', f('a'), { timeoutMs: 40 }), { timeoutMs: 5000 }))
    expect([...wrapped.program]).toEqual(program([1, 2], N(SEQ, { count: 1, timeout: 5000 }), N(STEP, { p3: 1, timeout: 40 }), [1]))
    expect(wrapped.nodes.map((n) => n.id)).toEqual(['$run', 'a'])
    expect(wrapped.definition.root.id).toBe('a')
    const none = compileWorkflow(workflow('t', step('a', f('a')), { timeoutMs: Infinity }))
    expect([...none.program]).toEqual(program([1, 1], N(STEP, { p3: 1 })))
    expect(none.definition).not.toHaveProperty('timeoutMs')
  })

  it('a JSON copy compiles to the identical program, version, nodes, indexes and signals', () => {
    const def = workflow(
      'all',
      sequence(
        step('a', f('a'), { compensate: { run: f('undo') }, retry: { attempts: 2, jitter: false } }),
        parallel([child('c', 'sub'), scatterGather('sg', 'x@1', { aggregate: 'merge' })], { join: quorum(1), timeoutMs: 100 }),
        branch([when({ all: [{ path: '$steps.a.ok', op: 'eq', value: true }, { not: { fn: 'bad', arg: '$input' } }] }, waitFor('w', 'go'))], sleep('s', 5)),
        loop(
          { while: { any: [{ path: '$signals.go.more', op: 'truthy' }] }, maxIterations: 4 },
          forEach('$steps.a.items', step('e', f('e'), { input: { $fn: 'pick', arg: '$item' } })),
        ),
      ),
      { output: { a: '$steps.a', lit: { $literal: '$x' } }, timeoutMs: 60_000 },
    )
    const copy = json(def)
    const a = compileWorkflow(def)
    const b = compileWorkflow(copy)
    expect(b.program).toEqual(a.program)
    expect(b.definition).toEqual(def)
    expect(b.definition.version).toBe(def.version)
    expect(b.nodes).toEqual(a.nodes)
    expect([...b.index]).toEqual([...a.index])
    expect(b.parent).toEqual(a.parent)
    expect(b.signals).toEqual(['go'])
    expect(a.nodes.length).toBe(a.program[1])
    expect(a.program.length).toBe(2 + 12 * a.nodes.length + (a.nodes.length - 2)) // every node but the root and the compensation is listed once
  })
})

/** A definition whose root is `root` (as JSON, for rules the builders' types would not let through). */
const def = (root: unknown, extra: Record<string, unknown> = {}) => ({ format: 1, name: 'wf', root, ...extra })
const stepJson = (id: string, more: Record<string, unknown> = {}) => ({ kind: 'step', id, run: { fn: 'f' }, ...more })
/** A branch arm as JSON, `{ when, then }` (written through entries: a literal `then` key reads as a thenable to the linter). */
const armJson = (w: unknown, t: unknown, more: Record<string, unknown> = {}) => ({ when: w, ...more, ...Object.fromEntries([['then', t]]) })
const seqJson = (...steps: unknown[]) => ({ kind: 'sequence', id: 's', steps })

describe('validation: every rule, refused with DEFINITION_INVALID naming the node', () => {
  const cases: [label: string, value: unknown, message: string, node?: string | undefined][] = [
    ['not an object', 'wf', 'a workflow definition must be an object, not "wf"'],
    ['an array', [], 'a workflow definition must be an object, not an array'],
    ['a bad name', def(stepJson('a'), { name: 'no spaces' }), 'name is not a valid name'],
    ['a missing name', { format: 1, root: stepJson('a') }, 'name must be a name (a string), not undefined'],
    ['format 2', def(stepJson('a'), { format: 2 }), 'workflow "wf": format must be 1, not 2'],
    ['an unknown field', def(stepJson('a'), { timeout: 5 }), '"timeout" is not a field of a workflow definition'],
    ['a bad version', def(stepJson('a'), { version: 'has space' }), 'version must be 1 to 64 of'],
    ['a wrong content hash', def(stepJson('a'), { version: 'sha256:0000000000000000' }), "but the definition's content hashes to sha256:"],
    ['no root', def(undefined), 'root must be a node (an object with kind and id), not undefined'],
    ['an unknown kind', def({ kind: 'fork', id: 'x' }), 'root.kind must be one of step, child, sequence'],
    ['a leaf without id', def({ kind: 'step', run: { fn: 'f' } }), 'the step node at root: id must be 1 to 64 of', undefined],
    ['a bad id', def(stepJson('a b')), 'id must be 1 to 64 of A-Z a-z 0-9 _ . -, not "a b"'],
    ['a long id', def(stepJson('x'.repeat(65))), 'id must be 1 to 64 of'],
    ['a prototype id', def(stepJson('constructor')), 'id may not be "constructor"'],
    ['an unknown node field', def(stepJson('a', { timeout: 5 })), 'node "a" at root: "timeout" is not a field of a step node', 'a'],
    [
      'both fn and capability',
      def(stepJson('a', { run: { fn: 'f', capability: 'c' } })),
      'node "a" at root: run must hold exactly one of fn or capability',
      'a',
    ],
    ['neither fn nor capability', def(stepJson('a', { run: {} })), 'run must hold exactly one of fn or capability', 'a'],
    ['a bad fn name', def(stepJson('a', { run: { fn: 'a b' } })), 'run.fn is not a valid name', 'a'],
    ['a bad capability', def(stepJson('a', { run: { capability: 'a b@1' } })), 'run.capability is not a valid name', 'a'],
    ['an empty range', def(stepJson('a', { run: { capability: 'x@' } })), 'run.capability has an empty or overlong version range', 'a'],
    ['attempts 0', def(stepJson('a', { retry: { attempts: 0 } })), 'retry.attempts must be a whole number from 1 to 1000000, not 0', 'a'],
    ['attempts 1.5', def(stepJson('a', { retry: { attempts: 1.5 } })), 'retry.attempts must be a whole number', 'a'],
    ['negative initialMs', def(stepJson('a', { retry: { initialMs: -1 } })), 'retry.initialMs must be a number of ms from 0', 'a'],
    ['factor below 1', def(stepJson('a', { retry: { factor: 0.5 } })), 'retry.factor must be a number from 1 to 1000, not 0.5', 'a'],
    ['jitter not boolean', def(stepJson('a', { retry: { jitter: 'yes' } })), 'retry.jitter must be true or false', 'a'],
    ['an unknown retry field', def(stepJson('a', { retry: { tries: 2 } })), '"tries" is not a field of a retry policy', 'a'],
    ['timeout 0', def(stepJson('a', { timeoutMs: 0 })), 'timeoutMs must be a number of ms > 0 (or Infinity, or left out, for none), not 0', 'a'],
    ['a negative timeout', def(stepJson('a', { timeoutMs: -5 })), 'timeoutMs must be a number of ms > 0', 'a'],
    ['a string timeout', def(stepJson('a', { timeoutMs: '5s' })), 'timeoutMs must be a number of ms > 0', 'a'],
    ['a run timeout of 0', def(stepJson('a'), { timeoutMs: 0 }), 'workflow "wf": timeoutMs must be a number of ms > 0'],
    ['a bad compensate', def(stepJson('a', { compensate: { fn: 'undo' } })), '"fn" is not a field of a compensation', 'a'],
    ['a compensate without run', def(stepJson('a', { compensate: {} })), 'compensate.run must be { fn: name } or { capability: name@range }', 'a'],
    ['a child with a bad workflow', def({ kind: 'child', id: 'c', workflow: '' }), 'workflow is not a valid name', 'c'],
    ['an empty sequence', def({ kind: 'sequence', id: 's', steps: [] }), 'node "s" at root: steps is an empty list: it must hold one node at least', 's'],
    ['a bad child node', def(seqJson(stepJson('a'), 5)), 'root.steps[1] must be a node (an object with kind and id), not 5'],
    [
      'a duplicate id',
      def(seqJson(stepJson('a'), { kind: 'sleep', id: 'a', ms: 1 })),
      'node "a" at root.steps[1]: id is the id of the node at root.steps[0] too',
      'a',
    ],
    ['a container id taken', def(seqJson(stepJson('s'))), 'node "s" at root.steps[0]: id is the id of the node at root too', 's'],
    [
      'a quorum above the branch count',
      def({ kind: 'parallel', id: 'p', branches: [stepJson('a'), stepJson('b')], join: { quorum: 3 } }),
      'node "p" at root: join.quorum is 3, above the 2 branches that could reach it',
      'p',
    ],
    [
      'a quorum of 0',
      def({ kind: 'parallel', id: 'p', branches: [stepJson('a')], join: { quorum: 0 } }),
      'join.quorum must be a whole number from 1 to 1, not 0',
      'p',
    ],
    ['an unknown join', def({ kind: 'parallel', id: 'p', branches: [stepJson('a')], join: 'most' }), "join must be 'all', 'any' or { quorum: n }", 'p'],
    ['no arms', def({ kind: 'branch', id: 'b', arms: [] }), 'arms is an empty list: it must hold one arm at least', 'b'],
    [
      'an arm with extra fields',
      def({ kind: 'branch', id: 'b', arms: [armJson({ fn: 'x' }, stepJson('a'), { else: 1 })] }),
      '"else" is not a field of an arm',
      'b',
    ],
    [
      'a comparison without op',
      def({ kind: 'branch', id: 'b', arms: [armJson({ path: '$input' }, stepJson('a'))] }),
      'arms[0].when.op must be one of eq, ne',
      'b',
    ],
    ['an unknown op', def({ kind: 'branch', id: 'b', arms: [armJson({ path: '$input', op: 'like', value: 1 }, stepJson('a'))] }), 'op must be one of', 'b'],
    [
      'eq without value',
      def({ kind: 'branch', id: 'b', arms: [armJson({ path: '$input', op: 'eq' }, stepJson('a'))] }),
      'when.value is missing: eq compares with a value',
      'b',
    ],
    [
      'truthy with a value',
      def({ kind: 'branch', id: 'b', arms: [armJson({ path: '$input', op: 'truthy', value: 1 }, stepJson('a'))] }),
      'is given, but truthy compares with no value',
      'b',
    ],
    [
      'in without a list',
      def({ kind: 'branch', id: 'b', arms: [armJson({ path: '$input', op: 'in', value: 1 }, stepJson('a'))] }),
      'must be a list for in, not 1',
      'b',
    ],
    [
      'gt with an object',
      def({ kind: 'branch', id: 'b', arms: [armJson({ path: '$input', op: 'gt', value: {} }, stepJson('a'))] }),
      'must be a number or a string for gt',
      'b',
    ],
    [
      'a path that is no ref',
      def({ kind: 'branch', id: 'b', arms: [armJson({ path: 'input', op: 'truthy' }, stepJson('a'))] }),
      'when.path must be a reference',
      'b',
    ],
    [
      'an empty all',
      def({ kind: 'branch', id: 'b', arms: [armJson({ all: [] }, stepJson('a'))] }),
      'when.all is an empty list: it must hold one condition at least',
      'b',
    ],
    [
      'a condition of nothing',
      def({ kind: 'branch', id: 'b', arms: [armJson({ maybe: 1 }, stepJson('a'))] }),
      'when must hold path (with op), all, any, not or fn',
      'b',
    ],
    [
      'a not with extra fields',
      def({ kind: 'branch', id: 'b', arms: [armJson({ not: { fn: 'x' }, fn: 'y' }, stepJson('a'))] }),
      '"fn" is not a field of a not condition',
      'b',
    ],
    [
      'a loop with both',
      def({ kind: 'loop', id: 'l', while: { fn: 'x' }, until: { fn: 'x' }, maxIterations: 2, body: stepJson('a') }),
      'while/until must be given exactly one of the two',
      'l',
    ],
    [
      'a loop with neither',
      def({ kind: 'loop', id: 'l', maxIterations: 2, body: stepJson('a') }),
      'node "l" at root: while/until must be given exactly one of the two',
      'l',
    ],
    [
      'maxIterations 0',
      def({ kind: 'loop', id: 'l', while: { fn: 'x' }, maxIterations: 0, body: stepJson('a') }),
      'maxIterations must be a whole number from 1 to 1000000, not 0',
      'l',
    ],
    [
      'maxIterations above 1e6',
      def({ kind: 'loop', id: 'l', while: { fn: 'x' }, maxIterations: 1_000_001, body: stepJson('a') }),
      'maxIterations must be a whole number from 1 to 1000000',
      'l',
    ],
    ['a loop without body', def({ kind: 'loop', id: 'l', while: { fn: 'x' }, maxIterations: 2 }), 'root.body must be a node'],
    ['items not a ref', def({ kind: 'forEach', id: 'e', items: 'list', body: stepJson('a') }), 'items must be a reference to a list', 'e'],
    [
      'concurrency 0',
      def({ kind: 'forEach', id: 'e', items: '$input', concurrency: 0, body: stepJson('a') }),
      'concurrency must be a whole number from 1 to',
      'e',
    ],
    ['a bad aggregate', def({ kind: 'scatterGather', id: 'g', capability: 'x', aggregate: 'merge' }), 'aggregate must be { fn: name }, not "merge"', 'g'],
    ['a scatterGather without capability', def({ kind: 'scatterGather', id: 'g' }), 'capability must be a capability (name@range), not undefined', 'g'],
    ['a negative sleep', def({ kind: 'sleep', id: 'z', ms: -1 }), 'node "z" at root: ms must be a number of ms from 0', 'z'],
    ['an endless sleep', def({ kind: 'sleep', id: 'z', ms: Infinity }), 'ms must be a number of ms from 0', 'z'],
    ['a bad signal', def({ kind: 'waitFor', id: 'w', signal: 'a b' }), 'signal must be 1 to 64 of', 'w'],
    ['onTimeout without timeout', def({ kind: 'waitFor', id: 'w', signal: 'go', onTimeout: 'continue' }), 'onTimeout is given without a timeoutMs', 'w'],
    ['an unknown onTimeout', def({ kind: 'waitFor', id: 'w', signal: 'go', timeoutMs: 5, onTimeout: 'retry' }), "onTimeout must be 'fail' or 'continue'", 'w'],
    ['an unknown ref root', def(stepJson('a', { input: '$env.HOME' })), 'input holds the reference "$env.HOME", which starts with the unknown root $env', 'a'],
    ['a ref to no node', def(stepJson('a', { input: { x: ['$steps.nope.x'] } })), 'node "a" at root: input.x[0] reads $steps.nope, which names no node', 'a'],
    [
      'a ref to a dotted id without brackets',
      def(seqJson(stepJson('fetch.v2'), stepJson('b', { input: '$steps.fetch.v2' }))),
      'reads $steps.fetch, which names no node (an id holding a dot is written $steps["fetch.v2"])',
      'b',
    ],
    ['$item outside a forEach', def(stepJson('a', { input: '$item.x' })), 'reads $item outside a forEach body', 'a'],
    ['$index in the forEach items', def({ kind: 'forEach', id: 'e', items: '$index', body: stepJson('a') }), 'items reads $index outside a forEach body', 'e'],
    [
      'a field of $index',
      def({ kind: 'forEach', id: 'e', items: '$input', body: stepJson('a', { input: '$index.x' }) }),
      'reads a field of $index, a number',
      'a',
    ],
    ['a signal nothing waits for', def(stepJson('a', { input: '$signals.approve' })), 'reads $signals.approve, a signal no waitFor waits for', 'a'],
    ['$steps without a node', def(stepJson('a', { input: '$steps' })), 'must name a node: $steps.<name>', 'a'],
    ['an empty field', def(stepJson('a', { input: '$input..a' })), 'has an empty field name', 'a'],
    ['a bad index', def(stepJson('a', { input: '$input[x]' })), 'has [x]: an index is a whole number', 'a'],
    ['an unclosed key', def(stepJson('a', { input: '$input["a"' })), 'has an unclosed [', 'a'],
    ['a __proto__ ref', def(stepJson('a', { input: '$input.__proto__.x' })), 'reads "__proto__", which is never read', 'a'],
    ['a constructor ref', def(stepJson('a', { input: '$input["constructor"]' })), 'reads "constructor", which is never read', 'a'],
    ['$literal beside other fields', def(stepJson('a', { input: { $literal: 1, x: 2 } })), 'holds $literal beside other fields', 'a'],
    ['an unknown $ field', def(stepJson('a', { input: { $ref: 'x' } })), 'input.$ref is an unknown $ field', 'a'],
    ['a bad mapping name', def(stepJson('a', { input: { $fn: 5 } })), 'input.$fn must be a name (a string), not 5', 'a'],
    ['a mapping with extra fields', def(stepJson('a', { input: { $fn: 'm', args: 1 } })), '"args" is not a field of a mapping', 'a'],
    ['Infinity in a literal', def(stepJson('a', { input: { $literal: [Infinity] } })), 'input.$literal[0] holds Infinity, which JSON cannot carry', 'a'],
    ['a bad output ref', def(stepJson('a'), { output: '$steps.b' }), 'workflow "wf": output reads $steps.b, which names no node'],
    [
      '$item in the output',
      def({ kind: 'forEach', id: 'e', items: '$input', body: stepJson('a') }, { output: '$item' }),
      'workflow "wf": output reads $item outside',
    ],
    [
      'a node named like a compensation',
      def(seqJson(stepJson('a', { compensate: { run: { fn: 'u' } } }), stepJson('a.compensate'))),
      'id is the id compiling gives to a part of node "a"',
      'a.compensate',
    ],
    [
      'a node named like a scatter call',
      def(seqJson({ kind: 'scatterGather', id: 'g', capability: 'x' }, stepJson('g.call'))),
      'id is the id compiling gives to a part of node "g"',
      'g.call',
    ],
  ]

  it.each(cases)('%s', (_label, value, message, node) => {
    const err = refused(() => compileWorkflow(value))
    expect(err.message).toContain(message)
    if (node !== undefined) {
      expect(err.details['node']).toBe(node)
      expect(err.message).toContain(`node ${JSON.stringify(node)}`)
    }
    expect(typeof err.details['path']).toBe('string')
  })

  it('returns a fresh, frozen copy: later changes to the given value do not reach it', () => {
    const list = [1]
    const checked = validateDefinition(def(stepJson('a', { input: { list } })))
    list.push(2)
    expect(checked.root).toEqual({ kind: 'step', id: 'a', run: { fn: 'f' }, input: { list: [1] } })
    expect(Object.isFrozen((checked.root as unknown as { input: { list: number[] } }).input.list)).toBe(true)
  })

  it('nodes nested deeper than 250 levels are refused, 250 are not', () => {
    const nest = (levels: number) => {
      let n: unknown = stepJson('leaf')
      for (let i = 0; i < levels; i++) n = { kind: 'sequence', steps: [n] }
      return def(n)
    }
    expect(compileWorkflow(nest(250)).program[1]).toBe(251)
    expect(refused(() => compileWorkflow(nest(251))).message).toContain('nests deeper than 250 levels of nodes')
  })

  it('more than 32 767 nodes are refused (compiled, each may add one, within the core limit of 65 536)', () => {
    const many = Array.from({ length: 32_766 }, (_, i) => ({ kind: 'scatterGather', id: `g${i}`, capability: 'c' }))
    const most = compileWorkflow(def({ kind: 'sequence', steps: many }, { timeoutMs: 1 }))
    expect(most.program[1]).toBe(65_533)
    many.push({ kind: 'scatterGather', id: 'one-more', capability: 'c' })
    expect(refused(() => compileWorkflow(def({ kind: 'sequence', steps: many }))).message).toContain('makes more than 32767 nodes')
  })

  it('accepts what the rules allow at their bounds', () => {
    const ok = compileWorkflow(
      def({
        kind: 'sequence',
        id: 's',
        steps: [
          stepJson('a.b_c-9', { retry: { attempts: 1_000_000, initialMs: 0, maxMs: 0, factor: 1, jitter: false }, timeoutMs: Infinity }),
          { kind: 'sleep', id: 'z', ms: 0 },
          { kind: 'waitFor', id: 'w', signal: 'sig.v1', timeoutMs: 1, onTimeout: 'fail' },
          stepJson('d', {
            input: { a: '$steps["a.b_c-9"].x', b: '$signals["sig.v1"]', c: { $literal: { $fn: 'not applied' } }, d: [null, true, 1.5, 'text'] },
          }),
        ],
      }),
    )
    expect(ok.nodes.map((n) => n.id)).toEqual(['s', 'a.b_c-9', 'z', 'w', 'd'])
  })
})

describe('validation: hostile values are refused, never crash', () => {
  const before = Object.getOwnPropertyNames(Object.prototype).sort()

  it('a cycle', () => {
    const seq: { kind: string; id: string; steps: unknown[] } = { kind: 'sequence', id: 's', steps: [] }
    seq.steps.push(seq)
    expect(refused(() => compileWorkflow(def(seq))).message).toBe('definition.root.steps[0] is circular (it holds itself)')
    const input: Record<string, unknown> = {}
    input['self'] = input
    expect(refused(() => compileWorkflow(def(stepJson('a', { input })))).message).toContain('definition.root.input.self is circular')
  })

  it('the same object twice (no cycle) is fine', () => {
    const shared = { x: 1 }
    const ok = compileWorkflow(def(seqJson(stepJson('a', { input: { $literal: shared } }), stepJson('b', { input: { $literal: shared } }))))
    expect(ok.nodes.length).toBe(3)
  })

  it('a getter that throws, and proxies whose traps throw', () => {
    const node = stepJson('a')
    Object.defineProperty(node, 'run', {
      enumerable: true,
      get: () => {
        throw new Error('boom')
      },
    })
    expect(refused(() => compileWorkflow(def(node))).message).toBe('definition.root.run could not be read: boom')
    const keys = new Proxy(
      {},
      {
        ownKeys: () => {
          throw new Error('no keys')
        },
      },
    )
    expect(refused(() => compileWorkflow(def(keys))).message).toContain('could not be read: no keys')
    const proto = new Proxy(
      {},
      {
        getPrototypeOf: () => {
          throw new Error('no proto')
        },
      },
    )
    expect(refused(() => compileWorkflow(def(proto))).message).toContain('could not be read: no proto')
    const length = new Proxy([], {
      get: (t, k) => {
        if (k === 'length') throw new Error('no length')
        return Reflect.get(t, k)
      },
    })
    expect(refused(() => compileWorkflow(def(seqJson(), { root: { kind: 'sequence', id: 's', steps: length } }))).message).toContain('no length')
  })

  it('a revoked proxy', () => {
    const { proxy, revoke } = Proxy.revocable({}, {})
    revoke()
    expect(refused(() => compileWorkflow(def(stepJson('a', { input: proxy })))).message).toContain('definition.root.input could not be read')
  })

  it('a literal nested as deep as the JSON allows is built, and compared, like any other', () => {
    let deep: unknown = 1
    for (let i = 0; i < 1000; i++) deep = [deep]
    const c = compileWorkflow(def(stepJson('a', { input: { $literal: deep } })))
    const built = buildInput((c.definition.root as { input: InputSpec }).input, scope({}), new Map())
    expect(built).toEqual(deep)
    expect(testCondition({ path: '$input', op: 'eq', value: deep }, scope({ input: built }), new Map())).toBe(true)
  })

  it('__proto__ keys, from JSON.parse or defineProperty, are refused and nothing is polluted', () => {
    const parsed = JSON.parse('{"format":1,"name":"wf","root":{"kind":"step","id":"a","run":{"fn":"f"},"__proto__":{"polluted":true}}}') as unknown
    expect(refused(() => compileWorkflow(parsed)).message).toBe('definition.root.__proto__ is a key that would set a prototype')
    const input = JSON.parse('{"$literal":{"__proto__":{"polluted":true}}}') as unknown
    expect(refused(() => compileWorkflow(def(stepJson('a', { input })))).message).toContain('is a key that would set a prototype')
    expect(({} as { polluted?: unknown }).polluted).toBeUndefined()
  })

  it('class instances, functions, symbols, bigints, NaN, undefined in a list, lone surrogates', () => {
    const values: [unknown, string][] = [
      [new Date(0), 'is a Date: a definition holds plain objects and arrays only'],
      [new Map(), 'is a Map'],
      [new (class Thing {})(), 'is a Thing'],
      [() => 1, 'is a function: a definition holds JSON values only'],
      [Symbol('s'), 'is a symbol'],
      [10n, 'is 10n'],
      [Number.NaN, 'node "a" at root: input holds NaN, which JSON cannot carry'],
      [[1, undefined], 'definition.root.input[1] is undefined'],
      // biome-ignore lint/suspicious/noSparseArray: a hole is what is tested
      [[1, , 3], 'definition.root.input[1] is undefined'],
      ['a\uD800', 'holds a lone surrogate'],
      [{ 'k\uDC00': 1 }, 'is a key holding a lone surrogate'],
    ]
    for (const [input, message] of values) expect(refused(() => compileWorkflow(def(stepJson('a', { input })))).message).toContain(message)
    expect(refused(() => compileWorkflow(def(new (class Node {})()))).message).toContain('definition.root is a Node')
    // A toJSON is a function: refused, not called.
    expect(refused(() => compileWorkflow(def(stepJson('a', { input: { toJSON: () => ({}) } })))).message).toContain('is a function')
  })

  it('huge depth: JSON nested past 1024 levels is refused without a stack overflow', () => {
    let deep: unknown = 1
    for (let i = 0; i < 100_000; i++) deep = [deep]
    expect(refused(() => compileWorkflow(def(stepJson('a', { input: { $literal: deep } })))).message).toContain('nests deeper than 1024 levels')
    let obj: unknown = {}
    for (let i = 0; i < 100_000; i++) obj = { a: obj }
    expect(refused(() => compileWorkflow(obj)).message).toContain('nests deeper than 1024 levels')
  })

  it('huge size: a list longer than the whole budget is refused before it is read', () => {
    const sparse = new Array(2 ** 32 - 1)
    expect(refused(() => compileWorkflow(def(stepJson('a', { input: sparse })))).message).toContain('larger than 1000000 values')
    const wide = Array.from({ length: 1_000_001 }, () => 0)
    expect(refused(() => compileWorkflow(def(stepJson('a', { input: wide })))).message).toContain('larger than 1000000 values')
  })

  it('leaves Object.prototype as it was', () => {
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(before)
  })
})

/** A scope over plain data. */
function scope(data: { input?: unknown; item?: unknown; index?: number; outputs?: Record<string, unknown>; signals?: Record<string, unknown> }): DataScope {
  const s: DataScope = {
    input: data.input,
    output: (id) => data.outputs?.[id],
    signal: (name) => data.signals?.[name],
  }
  if ('item' in data) s.item = data.item
  if (data.index !== undefined) s.index = data.index
  return s
}

describe('references', () => {
  const data = {
    input: { a: [{ b: { 'x.y': 1, list: [10, 20], nil: null } }], flag: false },
    item: { name: 'n', tags: ['t'] },
    index: 3,
    outputs: { fetch: { body: { text: 'hello' } }, 'fetch.v2': { c: 7 } },
    signals: { approve: { by: 'ana' } },
  }
  const s = scope(data)

  it('resolve paths of fields, indexes and quoted keys through nested data', () => {
    expect(resolveRef('$input', s)).toBe(data.input)
    expect(resolveRef('$input.a[0].b["x.y"]', s)).toBe(1)
    expect(resolveRef('$input.a[0].b.list[1]', s)).toBe(20)
    expect(resolveRef('$input.a[0].b.list.length', s)).toBe(2)
    expect(resolveRef('$input.a[0].b.nil', s)).toBeNull()
    expect(resolveRef('$input.flag', s)).toBe(false)
    expect(resolveRef('$steps.fetch.body.text', s)).toBe('hello')
    expect(resolveRef('$steps["fetch.v2"].c', s)).toBe(7)
    expect(resolveRef('$signals.approve.by', s)).toBe('ana')
    expect(resolveRef('$item.tags[0]', s)).toBe('t')
    expect(resolveRef('$index', s)).toBe(3)
  })

  it('a missing path is undefined, wherever it breaks off', () => {
    for (const ref of [
      '$input.nope',
      '$input.a[5].b',
      '$input.a[0].b.nil.x',
      '$input.flag.x',
      '$steps.none.x',
      '$signals.reject',
      '$input.a[0].b.list[2]',
      '$steps.fetch.body.text.length',
    ]) {
      expect(resolveRef(ref, s), ref).toBeUndefined()
    }
  })

  it('reads own properties only: nothing inherited, never a prototype', () => {
    const input = Object.assign(Object.create({ inherited: 1 }) as object, { own: 2 })
    const t = scope({ input })
    expect(resolveRef('$input.own', t)).toBe(2)
    expect(resolveRef('$input.inherited', t)).toBeUndefined()
    expect(resolveRef('$input.toString', t)).toBeUndefined()
    expect(resolveRef('$input.hasOwnProperty', t)).toBeUndefined()
    for (const ref of ['$input.__proto__', '$input.constructor', '$input.prototype', '$input["__proto__"]', '$steps.__proto__']) {
      expect(refused(() => resolveRef(ref, t)).message, ref).toContain('which is never read')
    }
  })

  it('parse into root, name and path; malformed ones are DEFINITION_INVALID', () => {
    expect(parseRef('$steps["a.b"].c[0]["d e"]')).toEqual({ root: 'steps', name: 'a.b', path: ['c', 0, 'd e'] })
    expect(parseRef('$input')).toEqual({ root: 'input', name: undefined, path: [] })
    expect(parseRef('$input["\\"q\\""]').path).toEqual(['"q"'])
    for (const bad of [
      'input',
      '$',
      '$inputs',
      '$input.',
      '$input[]',
      '$input[01]',
      '$input[-1]',
      '$input]',
      '$input["a"x]',
      `$input${'.a'.repeat(65)}`,
      `$input.${'a'.repeat(1100)}`,
    ]) {
      refused(() => parseRef(bad))
    }
  })
})

describe('buildInput', () => {
  const s = scope({ input: { url: 'u', a: 2, b: 3 }, item: 'it', index: 1 })
  const mappings = new Map<string, (arg: unknown) => unknown>([
    ['add', (arg) => (arg as number[]).reduce((x, y) => x + y, 0)],
    ['later', async () => 1],
  ])

  it('builds references, arrays and objects member by member, literals and mappings', () => {
    const spec: InputSpec = {
      url: '$input.url',
      n: 3,
      list: ['$index', '$item', null, true],
      lit: { $literal: { $fn: '$notaref' } },
      sum: { $fn: 'add', arg: ['$input.a', '$input.b', 10] },
      missing: '$input.nope',
      nested: { deep: [{ x: '$input.a' }] },
    }
    expect(buildInput(spec, s, mappings)).toEqual({
      url: 'u',
      n: 3,
      list: [1, 'it', null, true],
      lit: { $fn: '$notaref' },
      sum: 15,
      nested: { deep: [{ x: 2 }] },
    })
    expect(buildInput(undefined, s, mappings)).toBeUndefined()
    expect(buildInput('$input.a', s, mappings)).toBe(2)
    expect(buildInput('plain', s, mappings)).toBe('plain')
    // A member that builds to undefined is left out of an object, kept in a list.
    expect(Object.keys(buildInput({ m: '$input.nope' }, s, mappings) as object)).toEqual([])
    expect(buildInput(['$input.nope'], s, mappings)).toEqual([undefined])
  })

  it('copies literals, so a step cannot change the definition', () => {
    const compiled = compileWorkflow(workflow('w', step('a', f('a'), { input: { $literal: { list: [1] } } })))
    const built = buildInput((compiled.definition.root as { input: InputSpec }).input, s, mappings) as { list: number[] }
    built.list.push(2)
    expect(buildInput((compiled.definition.root as { input: InputSpec }).input, s, mappings)).toEqual({ list: [1] })
  })

  it('a mapping not registered is STEP_NOT_REGISTERED; one that returns a promise is refused', () => {
    expect(refused(() => buildInput({ $fn: 'nope' }, s, mappings), 'STEP_NOT_REGISTERED').message).toBe('no mapping named "nope" is registered')
    expect(refused(() => buildInput({ $fn: 'toString' }, s, mappings), 'STEP_NOT_REGISTERED').message).toContain('"toString"')
    expect(refused(() => buildInput({ $fn: 'later' }, s, mappings), 'INVALID_ARGUMENT').message).toContain('mappings are synchronous')
  })

  it('an error a mapping throws reaches the caller as it is', () => {
    const boom = new Error('boom')
    const throwing = new Map([
      [
        't',
        () => {
          throw boom
        },
      ],
    ])
    expect(() => buildInput({ $fn: 't' }, s, throwing)).toThrow(boom)
  })
})

describe('testCondition', () => {
  const s = scope({
    input: { n: 5, s: 'b', obj: { k: [1, { z: null }] }, list: [1, 2], zero: 0, empty: '', nil: null },
    outputs: { check: { ok: true, score: 0.7 } },
  })
  const conditions = new Map<string, (arg: unknown) => boolean>([
    ['big', (arg) => (arg as number) > 3],
    ['odd', () => 1 as unknown as boolean],
  ])
  const t = (c: Condition) => testCondition(c, s, conditions)

  it('compares numbers and strings, never across types', () => {
    expect(t({ path: '$input.n', op: 'gt', value: 4 })).toBe(true)
    expect(t({ path: '$input.n', op: 'gte', value: 5 })).toBe(true)
    expect(t({ path: '$input.n', op: 'lt', value: 5 })).toBe(false)
    expect(t({ path: '$input.n', op: 'lte', value: 5 })).toBe(true)
    expect(t({ path: '$input.s', op: 'gt', value: 'a' })).toBe(true)
    expect(t({ path: '$input.s', op: 'lt', value: 5 })).toBe(false)
    expect(t({ path: '$input.n', op: 'gt', value: '4' })).toBe(false)
    expect(t({ path: '$input.nope', op: 'lt', value: 1 })).toBe(false)
    expect(t({ path: '$steps.check.score', op: 'gte', value: 0.7 })).toBe(true)
  })

  it('eq, ne and in by JSON equality on nested data', () => {
    expect(t({ path: '$input.obj', op: 'eq', value: { k: [1, { z: null }] } })).toBe(true)
    expect(t({ path: '$input.obj', op: 'eq', value: { k: [1, { z: 0 }] } })).toBe(false)
    expect(t({ path: '$input.obj.k', op: 'eq', value: [1] })).toBe(false)
    expect(t({ path: '$input.obj', op: 'eq', value: { k: [1, { z: null }], extra: 1 } })).toBe(false)
    expect(t({ path: '$input.list', op: 'eq', value: { 0: 1, 1: 2 } })).toBe(false)
    expect(t({ path: '$input.obj.k[1].z', op: 'eq', value: null })).toBe(true)
    expect(t({ path: '$input.nope', op: 'eq', value: null })).toBe(false)
    expect(t({ path: '$input.n', op: 'ne', value: 6 })).toBe(true)
    expect(t({ path: '$input.s', op: 'in', value: ['a', 'b'] })).toBe(true)
    expect(t({ path: '$input.list', op: 'in', value: [[1, 2], 3] })).toBe(true)
    expect(t({ path: '$input.n', op: 'in', value: [] })).toBe(false)
  })

  it('truthy, falsy and exists', () => {
    expect(t({ path: '$steps.check.ok', op: 'truthy' })).toBe(true)
    expect(t({ path: '$input.zero', op: 'falsy' })).toBe(true)
    expect(t({ path: '$input.empty', op: 'truthy' })).toBe(false)
    expect(t({ path: '$input.nil', op: 'exists' })).toBe(true)
    expect(t({ path: '$input.nope', op: 'exists' })).toBe(false)
  })

  it('all, any, not and registered conditions with a built arg', () => {
    expect(t({ all: [{ path: '$input.n', op: 'gt', value: 1 }, { not: { path: '$input.nil', op: 'truthy' } }] })).toBe(true)
    expect(
      t({
        all: [
          { path: '$input.n', op: 'gt', value: 1 },
          { path: '$input.nil', op: 'truthy' },
        ],
      }),
    ).toBe(false)
    expect(
      t({
        any: [
          { path: '$input.nil', op: 'truthy' },
          { fn: 'big', arg: '$input.n' },
        ],
      }),
    ).toBe(true)
    expect(t({ fn: 'big', arg: '$input.list[0]' })).toBe(false)
    const mappings = new Map([['double', (x: unknown) => (x as number) * 2]])
    expect(testCondition({ fn: 'big', arg: { $fn: 'double', arg: '$input.list[1]' } }, s, conditions, mappings)).toBe(true)
  })

  it('a condition not registered is STEP_NOT_REGISTERED; one that returns no boolean is refused', () => {
    expect(refused(() => t({ fn: 'nope' }), 'STEP_NOT_REGISTERED').message).toBe('no condition named "nope" is registered')
    expect(refused(() => t({ fn: 'odd' }), 'INVALID_ARGUMENT').message).toBe('condition "odd" returned 1, not true or false')
  })

  it('data nested deeper than the literal does not make equality recurse', () => {
    let deep: unknown = 1
    for (let i = 0; i < 100_000; i++) deep = [deep]
    expect(testCondition({ path: '$input', op: 'eq', value: [[1]] }, scope({ input: deep }), conditions)).toBe(false)
  })
})

describe('content version', () => {
  const build = () =>
    workflow('doc', sequence(step('fetch', f('fetch'), { input: { url: '$input.url' }, retry: { attempts: 3 } }), step('sum', { capability: 'sum@^1' })), {
      timeoutMs: 1000,
    })

  it('is stable: the same definition built twice, and a hand-written copy with keys in another order', () => {
    const a = build()
    expect(build().version).toBe(a.version)
    const shuffled = {
      root: {
        steps: [
          { retry: { attempts: 3 }, input: { url: '$input.url' }, run: { fn: 'fetch' }, id: 'fetch', kind: 'step' },
          { run: { capability: 'sum@^1' }, id: 'sum', kind: 'step' },
        ],
        kind: 'sequence',
      },
      timeoutMs: 1000,
      name: 'doc',
      format: 1,
    }
    expect(compileWorkflow(shuffled).definition.version).toBe(a.version)
    // The exact value, so that a change of the canonical form (which would re-version every stored definition) is seen.
    expect(canonicalJson({ name: 'doc', root: a.root, timeoutMs: 1000 })).toBe(
      '{"name":"doc","root":{"id":"seq-1","kind":"sequence","steps":[{"id":"fetch","input":{"url":"$input.url"},"kind":"step","retry":{"attempts":3},"run":{"fn":"fetch"}},{"id":"sum","kind":"step","run":{"capability":"sum@^1"}}]},"timeoutMs":1000}',
    )
    expect(a.version).toBe(contentVersion({ name: 'doc', root: a.root, timeoutMs: 1000 }))
    expect(a.version).toBe('sha256:146cc6f6a38a7e89')
  })

  it('changes with any change of name, root, output or timeout; Infinity is the same as no timeout', () => {
    const base = build().version
    const variants: WorkflowDefinition[] = [
      workflow('doc2', sequence(step('fetch', f('fetch'), { input: { url: '$input.url' }, retry: { attempts: 3 } }), step('sum', { capability: 'sum@^1' })), {
        timeoutMs: 1000,
      }),
      workflow('doc', sequence(step('fetch', f('fetch'), { input: { url: '$input.url' }, retry: { attempts: 4 } }), step('sum', { capability: 'sum@^1' })), {
        timeoutMs: 1000,
      }),
      workflow('doc', sequence(step('fetch', f('fetch'), { input: { url: '$input.uri' }, retry: { attempts: 3 } }), step('sum', { capability: 'sum@^1' })), {
        timeoutMs: 1000,
      }),
      workflow('doc', sequence(step('fetch', f('fetch'), { input: { url: '$input.url' }, retry: { attempts: 3 } }), step('sum', { capability: 'sum@^1' })), {
        timeoutMs: 1001,
      }),
      workflow('doc', sequence(step('fetch', f('fetch'), { input: { url: '$input.url' }, retry: { attempts: 3 } }), step('sum', { capability: 'sum@^1' })), {
        timeoutMs: 1000,
        output: '$steps.fetch',
      }),
      workflow(
        'doc',
        sequence('main', [step('fetch', f('fetch'), { input: { url: '$input.url' }, retry: { attempts: 3 } }), step('sum', { capability: 'sum@^1' })]),
        { timeoutMs: 1000 },
      ),
    ]
    const versions = new Set(variants.map((v) => v.version))
    expect(versions.size).toBe(variants.length)
    expect(versions.has(base)).toBe(false)
    expect(workflow('w', sleep('z', 1), { timeoutMs: Infinity }).version).toBe(workflow('w', sleep('z', 1)).version)
  })

  it('a given version is kept; a given sha256 version must be the content hash', () => {
    const named = workflow('doc', sleep('z', 1), { version: '2.0.1' })
    expect(named.version).toBe('2.0.1')
    expect(compileWorkflow(json(named)).definition.version).toBe('2.0.1')
    const hashed = workflow('doc', sleep('z', 1))
    expect(compileWorkflow(json(hashed)).definition.version).toBe(hashed.version)
    const edited = { ...json(hashed), root: { kind: 'sleep', id: 'z', ms: 2 } }
    expect(refused(() => compileWorkflow(edited)).message).toContain(`is ${hashed.version}, but the definition's content hashes to sha256:`)
  })
})

describe('pipeline, continueAsNew and delegate (wave 3)', () => {
  it('build plain JSON, undefined options left out', () => {
    expect(pipeline('p', '$input.docs', [step('parse', f('parse'), { input: '$item' }), step('store', f('store'))], { buffer: 4, timeoutMs: 900 })).toEqual({
      kind: 'pipeline',
      id: 'p',
      items: '$input.docs',
      stages: [
        { kind: 'step', id: 'parse', run: { fn: 'parse' }, input: '$item' },
        { kind: 'step', id: 'store', run: { fn: 'store' } },
      ],
      buffer: 4,
      timeoutMs: 900,
    })
    expect(pipeline('p', '$input', [sleep('z', 1)])).toEqual({ kind: 'pipeline', id: 'p', items: '$input', stages: [{ kind: 'sleep', id: 'z', ms: 1 }] })
    expect(continueAsNew('again', { input: { n: '$steps.count' } })).toEqual({ kind: 'continueAsNew', id: 'again', input: { n: '$steps.count' } })
    expect(continueAsNew('again')).toEqual({ kind: 'continueAsNew', id: 'again' })
    expect(delegate('d', 'plan@^2', { input: '$input.goal', timeoutMs: 60_000, retry: { attempts: 2 } })).toEqual({
      kind: 'delegate',
      id: 'd',
      capability: 'plan@^2',
      input: '$input.goal',
      timeoutMs: 60_000,
      retry: { attempts: 2 },
    })
    expect(delegate('d', 'plan')).toEqual({ kind: 'delegate', id: 'd', capability: 'plan' })
    // The builder copies the stage list it is given.
    const stages = [sleep('z', 1)]
    const built = pipeline('p', '$input', stages)
    stages.push(sleep('y', 2))
    expect(built.stages).toHaveLength(1)
  })

  it('workflow() takes them: unnamed containers inside stages are numbered in pre-order', () => {
    const def = workflow(
      'w',
      sequence(
        pipeline('p', '$input.items', [sequence(step('a', f('a'), { input: '$item' })), parallel([step('b', f('b'), { input: ['$item', '$index'] })])]),
        delegate('d', 'plan@1', { input: '$steps.p' }),
        continueAsNew('next', { input: { prev: '$steps.d' } }),
      ),
    )
    const root = def.root as { id: string; steps: { id: string; stages?: { id: string }[] }[] }
    expect(root.id).toBe('seq-1')
    expect(root.steps[0]!.stages!.map((st) => st.id)).toEqual(['seq-2', 'par-3'])
    expect(Object.isFrozen(root.steps[0]!.stages)).toBe(true)
    expect(json(def)).toEqual(def)
  })

  it('pipeline: a PIPELINE node, children the stages, p1 the buffer (default 1), its timeout', () => {
    const c = compileWorkflow(
      workflow(
        'p',
        pipeline('p', '$input.items', [step('a', f('a'), { input: '$item' }), sequence(step('b', f('b')), step('c', f('c'))), step('d', f('d'))], {
          buffer: 3,
          timeoutMs: 750,
        }),
      ),
    )
    expect([...c.program]).toEqual(
      program(
        [1, 6],
        N(PIPELINE, { start: 0, count: 3, p1: 3, timeout: 750 }),
        N(STEP, { p3: 1 }),
        N(SEQ, { start: 3, count: 2 }),
        N(STEP, { p3: 1 }),
        N(STEP, { p3: 1 }),
        N(STEP, { p3: 1 }),
        [1, 2, 5, 3, 4],
      ),
    )
    expect([...c.parent]).toEqual([-1, 0, 0, 2, 2, 0])
    expect(c.nodes.map((n) => n.id)).toEqual(['p', 'a', 'seq-1', 'b', 'c', 'd'])
    const one = compileWorkflow(workflow('p', pipeline('p', '$input', [sleep('z', 5)])))
    expect([...one.program]).toEqual(program([1, 2], N(PIPELINE, { count: 1, p1: 1 }), N(SLEEP, { p1: 5 }), [1]))
    // A run timeout on a pipeline root is its timeout word (the whole node's), the smaller of the two.
    const timed = compileWorkflow(workflow('p', pipeline('p', '$input', [sleep('z', 5)], { timeoutMs: 800 }), { timeoutMs: 500 }))
    expect([...timed.program].slice(2, 14)).toEqual(N(PIPELINE, { count: 1, p1: 1, timeout: 500 }))
    expect(timed.nodes[0]!.id).toBe('p')
  })

  it('continueAsNew: a STEP of one attempt, no jitter, no compensation; its entry in nodes keeps its kind', () => {
    const c = compileWorkflow(workflow('loop', sequence(step('a', f('a')), continueAsNew('again', { input: { n: '$steps.a' } }))))
    expect([...c.program]).toEqual(program([1, 3], N(SEQ, { count: 2 }), N(STEP, { p3: 1 }), N(STEP, { p3: 0 }), [1, 2]))
    expect(c.nodes[2]).toEqual({ kind: 'continueAsNew', id: 'again', input: { n: '$steps.a' } })
    expect(c.index.get('again')).toBe(2)
    const alone = compileWorkflow(workflow('loop', continueAsNew('again')))
    expect([...alone.program]).toEqual(program([1, 1], N(STEP)))
    expect(alone.nodes[0]!.kind).toBe('continueAsNew')
    // A run timeout on a continueAsNew root goes on a wrapper, never on the STEP's attempt.
    const timed = compileWorkflow(workflow('loop', continueAsNew('again'), { timeoutMs: 300 }))
    expect([...timed.program]).toEqual(program([1, 2], N(SEQ, { count: 1, timeout: 300 }), N(STEP), [1]))
    expect(timed.nodes.map((n) => n.id)).toEqual(['$run', 'again'])
  })

  it('delegate: a STEP with the retry and timeout words of a step; its entry in nodes keeps its kind', () => {
    const c = compileWorkflow(
      workflow(
        'd',
        delegate('d', 'plan@^2', { input: '$input', timeoutMs: 5000, retry: { attempts: 4, initialMs: 20, maxMs: 400, factor: 1.5, jitter: false } }),
      ),
    )
    expect([...c.program]).toEqual(program([1, 1], N(STEP, { p3: 0, timeout: 5000, retry: [4, 20, 400, 1.5] })))
    expect(c.nodes[0]).toEqual({
      kind: 'delegate',
      id: 'd',
      capability: 'plan@^2',
      input: '$input',
      timeoutMs: 5000,
      retry: { attempts: 4, initialMs: 20, maxMs: 400, factor: 1.5, jitter: false },
    })
    const plain = compileWorkflow(workflow('d', sequence(delegate('d', 'plan'))))
    expect([...plain.program]).toEqual(program([1, 2], N(SEQ, { count: 1 }), N(STEP, { p3: 1 }), [1]))
    const timed = compileWorkflow(workflow('d', delegate('d', 'plan', { timeoutMs: 40 }), { timeoutMs: 5000 }))
    expect([...timed.program]).toEqual(program([1, 2], N(SEQ, { count: 1, timeout: 5000 }), N(STEP, { p3: 1, timeout: 40 }), [1]))
  })

  const pipe = (stages: unknown[], more: Record<string, unknown> = {}) => ({ kind: 'pipeline', id: 'p', items: '$input', stages, ...more })
  const can = (id: string, more: Record<string, unknown> = {}) => ({ kind: 'continueAsNew', id, ...more })
  const cases: [label: string, value: unknown, message: string, node?: string | undefined][] = [
    ['a pipeline without stages', def(pipe(undefined as never)), 'node "p" at root: stages must be a non-empty list of nodes, not undefined', 'p'],
    ['a pipeline with no stages', def(pipe([])), 'stages is an empty list: it must hold one node at least', 'p'],
    ['a bad stage', def(pipe([stepJson('a'), 'b'])), 'root.stages[1] must be a node (an object with kind and id), not "b"'],
    ['pipeline items not a ref', def(pipe([stepJson('a')], { items: ['x'] })), 'node "p" at root: items must be a reference to a list', 'p'],
    ['pipeline items reading $item', def(pipe([stepJson('a')], { items: '$item' })), 'items reads $item outside a forEach body, a pipeline stage', 'p'],
    ['buffer 0', def(pipe([stepJson('a')], { buffer: 0 })), 'node "p" at root: buffer must be a whole number from 1 to 1048576, not 0', 'p'],
    ['buffer 1.5', def(pipe([stepJson('a')], { buffer: 1.5 })), 'buffer must be a whole number from 1 to', 'p'],
    ['buffer Infinity', def(pipe([stepJson('a')], { buffer: Infinity })), 'buffer must be a whole number from 1 to', 'p'],
    ['a pipeline timeout of 0', def(pipe([stepJson('a')], { timeoutMs: 0 })), 'timeoutMs must be a number of ms > 0', 'p'],
    ['a pipeline field of forEach', def(pipe([stepJson('a')], { concurrency: 2 })), '"concurrency" is not a field of a pipeline node', 'p'],
    ['a pipeline without id', def({ kind: 'pipeline', items: '$input', stages: [stepJson('a')] }), 'the pipeline node at root: id must be 1 to 64 of'],
    ['$item after the pipeline', def(seqJson(pipe([stepJson('a')]), stepJson('b', { input: '$item' }))), 'input reads $item outside', 'b'],
    [
      'a continueAsNew before the end of the root sequence',
      def(seqJson(can('again'), stepJson('b'))),
      'node "again" at root.steps[0]: kind is continueAsNew followed by node "b" in sequence "s": it ends the generation, so it stands only in tail position: the root itself, the last node of a sequence in tail position, or an arm (or otherwise) of a branch in tail position',
      'again',
    ],
    [
      'a continueAsNew in a parallel',
      def({ kind: 'parallel', id: 'par', branches: [can('again')] }),
      'node "again" at root.branches[0]: kind is continueAsNew inside parallel "par": it ends the generation, so it stands only in tail position',
      'again',
    ],
    [
      'a continueAsNew last in a nested sequence that others follow',
      def(seqJson({ kind: 'sequence', id: 'inner', steps: [stepJson('a'), can('again')] }, stepJson('b'))),
      'node "again" at root.steps[0].steps[1]: kind is continueAsNew followed by node "b" in sequence "s"',
      'again',
    ],
    [
      'a continueAsNew as a loop body',
      def({ kind: 'loop', id: 'l', while: { fn: 'more' }, maxIterations: 3, body: can('again') }),
      'node "again" at root.body: kind is continueAsNew inside loop "l"',
      'again',
    ],
    [
      'a continueAsNew last in a loop body sequence',
      def({ kind: 'loop', id: 'l', until: { fn: 'done' }, maxIterations: 3, body: seqJson(stepJson('a'), can('again')) }),
      'node "again" at root.body.steps[1]: kind is continueAsNew inside loop "l"',
      'again',
    ],
    [
      'a continueAsNew as a forEach body',
      def({ kind: 'forEach', id: 'e', items: '$input', body: can('again') }),
      'node "again" at root.body: kind is continueAsNew inside forEach "e"',
      'again',
    ],
    ['a continueAsNew as a pipeline stage', def(pipe([can('again')])), 'node "again" at root.stages[0]: kind is continueAsNew inside pipeline "p"', 'again'],
    [
      'a continueAsNew in the arm of a branch others follow',
      def(seqJson({ kind: 'branch', id: 'b', arms: [armJson({ fn: 'more' }, can('again'))] }, stepJson('after'))),
      'node "again" at root.steps[0].arms[0].then: kind is continueAsNew followed by node "after" in sequence "s"',
      'again',
    ],
    [
      'a continueAsNew as the otherwise of a branch in a parallel',
      def({ kind: 'parallel', id: 'par', branches: [{ kind: 'branch', id: 'b', arms: [armJson({ fn: 'c' }, stepJson('x'))], otherwise: can('again') }] }),
      'node "again" at root.branches[0].otherwise: kind is continueAsNew inside parallel "par"',
      'again',
    ],
    [
      'a continueAsNew before the end of a sequence in a tail arm',
      def({ kind: 'branch', id: 'b', arms: [armJson({ fn: 'c' }, { kind: 'sequence', id: 'inner', steps: [can('again'), stepJson('x')] })] }),
      'node "again" at root.arms[0].then.steps[0]: kind is continueAsNew followed by node "x" in sequence "inner"',
      'again',
    ],
    [
      'a continueAsNew in a parallel in a tail arm, the parallel unnamed',
      def({ kind: 'branch', id: 'b', arms: [armJson({ fn: 'c' }, { kind: 'parallel', branches: [stepJson('x'), can('again')] })] }),
      'node "again" at root.arms[0].then.branches[1]: kind is continueAsNew inside parallel "par-1"',
      'again',
    ],
    [
      'a continueAsNew in a tail branch inside a loop',
      def(
        seqJson(stepJson('a'), {
          kind: 'loop',
          id: 'l',
          while: { fn: 'c' },
          maxIterations: 9,
          body: { kind: 'branch', id: 'b', arms: [armJson({ fn: 'c' }, can('again'))] },
        }),
      ),
      'node "again" at root.steps[1].body.arms[0].then: kind is continueAsNew inside loop "l"',
      'again',
    ],
    [
      'the second of two continueAsNew in a sequence',
      def(seqJson(can('first'), can('again'))),
      'node "first" at root.steps[0]: kind is continueAsNew followed by node "again" in sequence "s"',
      'first',
    ],
    ['a continueAsNew with retries', def(can('again', { retry: { attempts: 2 } })), '"retry" is not a field of a continueAsNew node', 'again'],
    [
      'a continueAsNew with a bad input',
      def(can('again', { input: '$steps.nope' })),
      'node "again" at root: input reads $steps.nope, which names no node',
      'again',
    ],
    [
      'an output read from a continueAsNew',
      def(seqJson(stepJson('a'), can('again')), { output: '$steps.again' }),
      'workflow "wf": output reads $steps.again, a continueAsNew node, which has no output',
    ],
    [
      'an output read from a continueAsNew in a tail arm',
      def(seqJson(stepJson('a'), { kind: 'branch', id: 'b', arms: [armJson({ fn: 'c' }, can('again'))], otherwise: stepJson('done') }), {
        output: '$steps.again',
      }),
      'workflow "wf": output reads $steps.again, a continueAsNew node, which has no output',
    ],
    [
      'a continueAsNew in an arm read by the otherwise',
      def({ kind: 'branch', id: 'b', arms: [armJson({ fn: 'c' }, can('again'))], otherwise: stepJson('done', { input: '$steps.again' }) }),
      'node "done" at root.otherwise: input reads $steps.again, a continueAsNew node',
      'done',
    ],
    [
      'a compensation reading a continueAsNew',
      def(seqJson(stepJson('a', { compensate: { run: { fn: 'u' }, input: '$steps.again.x' } }), can('again'))),
      'node "a" at root.steps[0]: compensate.input reads $steps.again, a continueAsNew node',
      'a',
    ],
    ['a delegate without capability', def({ kind: 'delegate', id: 'd' }), 'node "d" at root: capability must be a capability (name@range), not undefined', 'd'],
    ['a delegate with a bad capability', def({ kind: 'delegate', id: 'd', capability: 'a b@1' }), 'capability is not a valid name', 'd'],
    ['a delegate with an empty range', def({ kind: 'delegate', id: 'd', capability: 'plan@' }), 'capability has an empty or overlong version range', 'd'],
    [
      'a delegate with attempts 0',
      def({ kind: 'delegate', id: 'd', capability: 'plan', retry: { attempts: 0 } }),
      'retry.attempts must be a whole number from 1',
      'd',
    ],
    ['a delegate with timeout 0', def({ kind: 'delegate', id: 'd', capability: 'plan', timeoutMs: 0 }), 'timeoutMs must be a number of ms > 0', 'd'],
    [
      'a delegate with a compensation',
      def({ kind: 'delegate', id: 'd', capability: 'plan', compensate: { run: { fn: 'u' } } }),
      '"compensate" is not a field of a delegate node',
      'd',
    ],
    ['a delegate with run', def({ kind: 'delegate', id: 'd', capability: 'plan', run: { fn: 'f' } }), '"run" is not a field of a delegate node', 'd'],
    ['a delegate reading $index', def({ kind: 'delegate', id: 'd', capability: 'plan', input: '$index' }), 'input reads $index outside', 'd'],
  ]

  it.each(cases)('refuse %s, naming the node', (_label, value, message, node) => {
    const err = refused(() => compileWorkflow(value))
    expect(err.message).toContain(message)
    if (node !== undefined) {
      expect(err.details['node']).toBe(node)
      expect(err.message).toContain(`node ${JSON.stringify(node)}`)
    }
    expect(typeof err.details['path']).toBe('string')
  })

  it('accept $item and $index in every stage, a buffer at its bound, continueAsNew as the root or last of the root sequence', () => {
    const ok = compileWorkflow(
      def(
        seqJson(
          pipe(
            [
              stepJson('a', { input: { item: '$item', i: '$index' } }),
              { kind: 'forEach', id: 'e', items: '$item.parts', body: stepJson('b', { input: '$item' }) },
              { kind: 'delegate', id: 'd', capability: 'plan@1', input: ['$item', '$index', '$steps.a'] },
            ],
            { buffer: 1_048_576, timeoutMs: Infinity },
          ),
          can('again', { input: '$steps.p' }),
        ),
        { output: '$steps.p' },
      ),
    )
    expect(ok.nodes.map((n) => n.id)).toEqual(['s', 'p', 'a', 'e', 'b', 'd', 'again'])
    expect(ok.definition.root).not.toHaveProperty('steps.0.timeoutMs')
    expect(compileWorkflow(def(can('again'))).nodes[0]!.kind).toBe('continueAsNew')
  })

  it('accept continueAsNew in every tail position: nested sequences, branch arms and otherwise, any mix of them', () => {
    const c = (id: string) => can(id, { input: '$input' })
    const branchJson = (id: string, arms: unknown[], otherwise?: unknown) => ({
      kind: 'branch',
      id,
      arms: arms.map((then, i) => armJson({ path: '$input.n', op: 'eq', value: i }, then)),
      ...(otherwise === undefined ? {} : { otherwise }),
    })
    const accepted: [label: string, root: unknown, continues: string[]][] = [
      [
        'last of a sequence last in the root sequence',
        seqJson(stepJson('a'), { kind: 'sequence', id: 'inner', steps: [stepJson('b'), c('again')] }),
        ['again'],
      ],
      ['three sequences deep', seqJson({ kind: 'sequence', id: 's2', steps: [{ kind: 'sequence', id: 's3', steps: [stepJson('a'), c('again')] }] }), ['again']],
      ['an arm of a root branch', branchJson('b', [c('again'), stepJson('done')]), ['again']],
      ['every arm and the otherwise of a root branch', branchJson('b', [c('one'), c('two')], c('three')), ['one', 'two', 'three']],
      ['the otherwise of a branch last in the root sequence', seqJson(stepJson('a'), branchJson('b', [stepJson('done')], c('again'))), ['again']],
      [
        'last of a sequence in an arm of a branch last in a sequence',
        seqJson(stepJson('a'), branchJson('b', [{ kind: 'sequence', id: 'inner', steps: [stepJson('x'), c('again')] }], stepJson('done'))),
        ['again'],
      ],
      [
        'a branch in an arm of a branch, with a loop and a parallel before it',
        seqJson(
          { kind: 'loop', id: 'l', while: { fn: 'more' }, maxIterations: 5, body: stepJson('work') },
          { kind: 'parallel', id: 'par', branches: [stepJson('p1'), stepJson('p2')] },
          branchJson('outer', [branchJson('inner', [c('again')], { kind: 'sequence', id: 'tail', steps: [stepJson('log'), c('other')] })]),
        ),
        ['again', 'other'],
      ],
    ]
    for (const [label, root, continues] of accepted) {
      const compiled = compileWorkflow(def(root))
      expect(
        continues.map((id) => compiled.nodes[compiled.index.get(id)!]!.kind),
        label,
      ).toEqual(continues.map(() => 'continueAsNew'))
      // The builders take what the JSON takes.
      expect(compileWorkflow(json(compiled.definition)).program, label).toEqual(compiled.program)
    }
    // An unnamed branch and sequence in tail position, built: ids numbered as ever.
    const built = workflow('w', branch([when({ fn: 'more' }, sequence(step('a', f('a')), continueAsNew('again')))], sleep('z', 1)))
    expect((built.root as { id: string }).id).toBe('branch-1')
  })

  it('a branch whose arm continues: BRANCH words listing the continueAsNew STEP (one attempt, no jitter), otherwise the last arm', () => {
    const more: Condition = { path: '$steps.batch.left', op: 'gt', value: 0 }
    const c = compileWorkflow(
      workflow(
        'drain',
        sequence(
          step('batch', f('takeBatch'), { input: '$input' }),
          branch([when(more, continueAsNew('again', { input: '$steps.batch.cursor' }))], step('done', f('summary'), { input: '$steps.batch' })),
        ),
      ),
    )
    expect([...c.program]).toEqual(
      program(
        [1, 5],
        N(SEQ, { start: 0, count: 2 }),
        N(STEP, { p3: 1 }),
        N(BRANCH, { start: 2, count: 2 }),
        N(STEP, { p3: 0 }),
        N(STEP, { p3: 1 }),
        [1, 2, 3, 4],
      ),
    )
    expect(c.nodes.map((n) => `${n.kind}:${n.id}`)).toEqual(['sequence:seq-1', 'step:batch', 'branch:branch-2', 'continueAsNew:again', 'step:done'])
    expect([...c.parent]).toEqual([-1, 0, 0, 2, 2])
    expect(c.nodes[3]).toEqual({ kind: 'continueAsNew', id: 'again', input: '$steps.batch.cursor' })
    // As the root branch, with a run timeout: the branch's own timeout word carries it (no wrapper).
    const rooted = compileWorkflow(workflow('drain', branch([when({ path: '$input.left', op: 'gt', value: 0 }, continueAsNew('again'))]), { timeoutMs: 900 }))
    expect([...rooted.program]).toEqual(program([1, 2], N(BRANCH, { count: 1, timeout: 900 }), N(STEP), [1]))
    expect(rooted.nodes.map((n) => n.id)).toEqual(['branch-1', 'again'])
  })

  it('a tail branch with a continueAsNew arm round-trips through JSON to the same program and version', () => {
    const build = (cursor: InputSpec = '$steps.batch.cursor') =>
      workflow(
        'drain',
        sequence(
          step('batch', f('takeBatch'), { input: '$input' }),
          branch([when({ path: '$steps.batch.left', op: 'gt', value: 0 }, continueAsNew('again', { input: cursor }))], step('done', f('summary'))),
        ),
        { output: '$steps.batch' },
      )
    const built = build()
    const copy = json(built)
    expect(copy).toEqual(built)
    expect(validateDefinition(copy).version).toBe(built.version)
    expect(built.version).toBe(contentVersion({ name: 'drain', root: built.root, output: '$steps.batch' }))
    expect(build().version).toBe(built.version)
    expect(build('$input').version).not.toBe(built.version)
    const a = compileWorkflow(built)
    const b = compileWorkflow(copy)
    expect(b.program).toEqual(a.program)
    expect(b.nodes).toEqual(a.nodes)
    expect([...b.index]).toEqual([...a.index])
    expect(b.parent).toEqual(a.parent)
  })

  it('round-trip through JSON to the identical program, nodes and version', () => {
    const built = workflow(
      'gen',
      sequence(
        waitFor('go', 'go'),
        pipeline('p', '$signals.go.items', [step('a', f('a'), { input: '$item' }), delegate('d', 'plan@^1', { input: '$item', retry: { attempts: 3 } })], {
          buffer: 2,
        }),
        continueAsNew('again', { input: { last: '$steps.p', n: { $fn: 'inc', arg: '$input.n' } } }),
      ),
      { timeoutMs: 10_000 },
    )
    const a = compileWorkflow(built)
    const b = compileWorkflow(json(built))
    expect(b.definition).toEqual(built)
    expect(b.program).toEqual(a.program)
    expect(b.nodes).toEqual(a.nodes)
    expect([...b.index]).toEqual([...a.index])
    expect(b.parent).toEqual(a.parent)
    expect(b.signals).toEqual(['go'])
  })

  it('have a stable content version, which each of their fields changes', () => {
    const build = (buffer = 2, capability = 'plan@^1', input: InputSpec = '$steps.p') =>
      workflow('gen', sequence(pipeline('p', '$input.items', [delegate('d', capability, { input: '$item' })], { buffer }), continueAsNew('again', { input })))
    const a = build()
    expect(build().version).toBe(a.version)
    expect(canonicalJson({ name: 'gen', root: a.root })).toBe(
      '{"name":"gen","root":{"id":"seq-1","kind":"sequence","steps":[{"buffer":2,"id":"p","items":"$input.items","kind":"pipeline","stages":[{"capability":"plan@^1","id":"d","input":"$item","kind":"delegate"}]},{"id":"again","input":"$steps.p","kind":"continueAsNew"}]}}',
    )
    expect(a.version).toBe('sha256:8ce851a78b510ddf')
    const versions = new Set([a.version, build(3).version, build(2, 'plan@^2').version, build(2, 'plan@^1', '$input').version])
    expect(versions.size).toBe(4)
    // The default buffer written out is another content: the version hashes what was written.
    expect(build(1).version).not.toBe(
      workflow('gen', sequence(pipeline('p', '$input.items', [delegate('d', 'plan@^1', { input: '$item' })]), continueAsNew('again', { input: '$steps.p' })))
        .version,
    )
  })
})

describe('numbers that are no numbers, and empty lists, are refused naming the node like any bad value', () => {
  const run = f('f')
  /** The refusal of `root` as workflow "x", with its message and details. */
  const refusal = (root: unknown, options: Record<string, unknown> = {}) => refused(() => workflow('x', root as never, options))

  it('NaN, Infinity and -Infinity in ms, timeouts, retry and maxIterations name the workflow, the node and the field', () => {
    const cases: [label: string, root: (n: number) => unknown, field: string][] = [
      ['sleep ms', (n) => sleep('s', n), 'ms'],
      ['step timeoutMs', (n) => step('s', run, { timeoutMs: n }), 'timeoutMs'],
      ['retry.initialMs', (n) => step('s', run, { retry: { initialMs: n } }), 'retry.initialMs'],
      ['retry.maxMs', (n) => step('s', run, { retry: { maxMs: n } }), 'retry.maxMs'],
      ['retry.factor', (n) => step('s', run, { retry: { factor: n } }), 'retry.factor'],
      ['retry.attempts', (n) => step('s', run, { retry: { attempts: n } }), 'retry.attempts'],
      ['compensate.timeoutMs', (n) => step('s', run, { compensate: { run, timeoutMs: n } }), 'compensate.timeoutMs'],
      ['child timeoutMs', (n) => child('s', 'other', { timeoutMs: n }), 'timeoutMs'],
      ['waitFor timeoutMs', (n) => waitFor('s', 'go', { timeoutMs: n }), 'timeoutMs'],
      ['loop maxIterations', (n) => loop({ id: 's', until: { path: '$input', op: 'truthy' }, maxIterations: n }, step('b', run)), 'maxIterations'],
      ['input literal', (n) => step('s', run, { input: { a: [n] } }), 'input.a[0]'],
      ['condition value', (n) => branch([when({ path: '$input', op: 'gt', value: n }, step('b', run))], undefined, { id: 's' }), 'arms[0].when.value'],
    ]
    for (const [label, root, field] of cases) {
      for (const n of [Number.NaN, Number.NEGATIVE_INFINITY, ...(field.endsWith('imeoutMs') ? [] : [Number.POSITIVE_INFINITY])]) {
        const error = refusal(root(n))
        expect(error.message, `${label} ${n}`).toMatch(new RegExp(`^workflow "x": node "s" at root: ${field.replace(/[.[\]]/g, '\\$&')} (must|holds)`))
        expect(error.message, `${label} ${n}`).toContain(String(n))
        expect(error.details, `${label} ${n}`).toEqual({ path: `root.${field}`, node: 's' })
      }
    }
    // A whole run's timeout: no node, the field named from the definition.
    expect(refusal(step('s', run), { timeoutMs: Number.NaN }).message).toBe(
      'workflow "x": timeoutMs must be a number of ms > 0 (or Infinity, or left out, for none), not NaN',
    )
  })

  it('quorum(NaN) is built as given and refused by workflow(), naming the join of the node', () => {
    expect(quorum(Number.NaN)).toEqual({ quorum: Number.NaN })
    const branches = [step('a', run), step('b', run)]
    const roots: [unknown, string][] = [
      [parallel(branches, { id: 's', join: quorum(Number.NaN) }), 'from 1 to 2'],
      [forEach('$input', step('b', run), { id: 's', join: quorum(Number.NaN) }), 'from 1 to 1048576'],
      [scatterGather('s', 'sum', { join: quorum(Number.NaN) }), 'from 1 to 1048576'],
    ]
    for (const [root, range] of roots) {
      const error = refusal(root)
      expect(error.message).toBe(`workflow "x": node "s" at root: join.quorum must be a whole number ${range}, not NaN`)
      expect(error.details).toEqual({ path: 'root.join.quorum', node: 's' })
    }
    for (const bad of [Number.POSITIVE_INFINITY, 1.5, 0, -1])
      expect(refusal(parallel(branches, { id: 's', join: quorum(bad) })).message).toContain('join.quorum')
    // A JSON copy of quorum(NaN) holds null: refused the same way.
    expect(refused(() => validateDefinition(json(def(parallel(branches, { id: 's', join: quorum(Number.NaN) }))))).message).toContain(
      'join.quorum must be a whole number from 1 to 2, not null',
    )
  })

  it('an empty list of nodes, arms or conditions is called empty, not "not an array"', () => {
    const cases: [root: unknown, field: string, one: string][] = [
      [parallel([], { id: 's' }), 'branches', 'one node'],
      [sequence('s', []), 'steps', 'one node'],
      [pipeline('s', '$input', []), 'stages', 'one node'],
      [branch([], undefined, { id: 's' }), 'arms', 'one arm'],
      [branch([when({ all: [] }, step('b', run))], undefined, { id: 's' }), 'arms[0].when.all', 'one condition'],
      [loop({ id: 's', while: { any: [] }, maxIterations: 1 }, step('b', run)), 'while.any', 'one condition'],
    ]
    for (const [root, field, one] of cases) {
      const error = refusal(root)
      expect(error.message).toBe(`workflow "x": node "s" at root: ${field} is an empty list: it must hold ${one} at least`)
      expect(error.details).toEqual({ path: `root.${field}`, node: 's' })
    }
    // What is no list at all is still called by what it is.
    expect(refusal(parallel('abc' as never, { id: 's' })).message).toBe('workflow "x": node "s" at root: branches must be a non-empty list of nodes, not "abc"')
  })

  it('a capability range is checked by the given parser, naming the node; workflow() alone has none', () => {
    // The parser is the engine's (the mesh's): refuse-workflow.test.ts runs it. Here a stand-in
    // shows what validation does with its answer.
    const check = (capability: string) => (capability.includes('^^') ? `bad range in ${capability}` : undefined)
    const error = refused(() => validateDefinition(def(stepJson('a', { run: { capability: 'sum@^^1' } })), check))
    expect(error.message).toBe('workflow "wf": node "a" at root: run.capability has a version range that does not parse ("sum@^^1"): bad range in sum@^^1')
    expect(error.details).toEqual({ path: 'root.run.capability', node: 'a' })
    expect(validateDefinition(def(stepJson('a', { run: { capability: 'sum@^1' } })), check).root).toMatchObject({ run: { capability: 'sum@^1' } })
    expect(workflow('x', step('s', { capability: 'sum@^^1' })).root).toMatchObject({ run: { capability: 'sum@^^1' } })
  })
})
