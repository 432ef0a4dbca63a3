/**
 * Bad input to the workflow core (`WorkflowCore`, the engine level under `ts/workflows/`): every
 * call refuses a hostile handle, token, outcome, index, time or program with a typed code, the
 * same code and words on both engines, records nothing, and leaves the core (and the engine)
 * usable: the run that was in flight finishes afterwards as if nothing had happened.
 */
import { afterAll, describe, expect, it } from 'vitest'

import { Orrery, type ErrorCode } from '../ts/node.js'
import * as build from '../ts/workflows/builder.js'
import type { WorkflowCore } from '../ts/engines/backend.js'
import { STEP_OUTCOMES, WORKFLOW_LAYOUT, WORKFLOW_LIMITS, WORKFLOW_NODES } from '../ts/engines/manifest.js'
import { expectEngineUsable, expectPrototypeUntouched, expectRefused } from './bad-input.js'

const { ok } = STEP_OUTCOMES
const { step, sequence, branch, wait } = WORKFLOW_NODES

/** One node's words: kind, children (start, count), p1..p3, timeout, compensate, retry. */
function node(kind: number, childStart = 0, childCount = 0, p1 = 0, p2 = 0, compensate = -1): number[] {
  return [kind, childStart, childCount, p1, p2, 0, Infinity, compensate, 1, 100, 10_000, 2]
}

/** seq(A, B) with A compensated by C. */
const GOOD = [1, 4, ...node(sequence, 0, 2), ...node(step, 0, 0, 0, 0, 3), ...node(step), ...node(step), 1, 2]
/** branch(A, wait(signal 0)). */
const BRANCHED = [1, 3, ...node(branch, 0, 2), ...node(step), ...node(wait), 1, 2]

/** Handles, tokens, timers and indexes no call takes: not whole numbers from 0 to 2^32 - 1. */
const NOT_WHOLE: ReadonlyArray<readonly [string, number]> = [
  ['NaN', NaN],
  ['-1', -1],
  ['1.5', 1.5],
  ['2**32', 2 ** 32],
  ['2**53', 2 ** 53],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
  ['-0.5', -0.5],
]

/** Values of the wrong type: napi refuses them, wasm-bindgen would coerce them. */
const NOT_NUMBERS: ReadonlyArray<readonly [string, unknown]> = [
  ['a numeric string', '1'],
  ['null', null],
  ['undefined', undefined],
  ['true', true],
  ['a BigInt', 1n],
  ['an object', { valueOf: () => 1 }],
]

/** Programs the core must refuse, each for its own reason. */
const BAD_PROGRAMS: ReadonlyArray<readonly [string, number[]]> = [
  ['empty', []],
  ['no node count', [1]],
  ['another format', [2, ...GOOD.slice(1)]],
  ['a NaN word', GOOD.map((w, i) => (i === 7 ? NaN : w))],
  ['no nodes', [1, 0]],
  ['a fractional node count', [1, 1.5, ...node(step)]],
  ['fewer words than its nodes', GOOD.slice(0, 20)],
  ['a kind out of range', [1, 1, ...node(9)]],
  ['a negative kind', [1, 1, ...node(-1)]],
  ['children past the child list', [1, 2, ...node(sequence, 0, 3), ...node(step), 1]],
  ['a child that is no node', [1, 2, ...node(sequence, 0, 1), ...node(step), 7]],
  ['a node listed twice', [1, 3, ...node(sequence, 0, 2), ...node(step), ...node(step), 1, 1]],
  ['a cycle', [1, 3, ...node(sequence, 0, 1), ...node(sequence, 1, 1), ...node(step), 1, 1]],
  ['a compensation that is no step', [1, 3, ...node(sequence, 0, 1), ...node(step, 0, 0, 0, 0, 2), ...node(sequence, 0, 0), 1]],
  ['a negative timeout', [1, 1, ...node(step).map((w, i) => (i === 6 ? -1 : w))]],
]

let orrery: Orrery | undefined
const cores: WorkflowCore[] = []

async function freshCore(): Promise<WorkflowCore> {
  orrery ??= await Orrery.create()
  const core = orrery.backend.createWorkflows()
  cores.push(core)
  return core
}

afterAll(async () => {
  for (const core of cores) core.close()
  orrery?.close()
  expectPrototypeUntouched()
  await expectEngineUsable()
})

/** The tokens of the EXECUTE records in `words`. */
function executed(words: Float64Array): number[] {
  const out: number[] = []
  for (let i = 0; i < words.length; i += WORKFLOW_LAYOUT.recordWords) if (words[i] === 1) out.push(words[i + 2]!)
  return out
}

describe('the workflow core refuses bad input', () => {
  it('refuses bad programs with DEFINITION_INVALID, and what is no Float64Array with INVALID_ARGUMENT', async () => {
    const core = await freshCore()
    for (const [label, words] of BAD_PROGRAMS) {
      const error = await expectRefused(() => core.define(Float64Array.from(words)), 'DEFINITION_INVALID')
      expect(error.message, label).toMatch(/invalid workflow program/)
    }
    // The node to blame is named.
    await expectRefused(() => core.define(Float64Array.from([1, 1, ...node(9)])), 'DEFINITION_INVALID').then((e) => expect(e.message).toMatch(/at node 0/))
    // Longer than any program can be: refused before it is copied into the engine.
    const huge = new Float64Array(2 + WORKFLOW_LIMITS.maxNodes * (WORKFLOW_LAYOUT.nodeWords + 1) + 1)
    await expectRefused(() => core.define(huge), 'DEFINITION_INVALID')
    for (const value of [GOOD, new Float32Array(GOOD), 'program', null, undefined, 5])
      await expectRefused(() => core.define(value as never), 'INVALID_ARGUMENT')
    // A view into a larger buffer is read from its own offset.
    const padded = new Float64Array(GOOD.length + 3)
    padded.set(GOOD, 3)
    expect(core.define(padded.subarray(3))).toBe(0)
    expect(core.define(Float64Array.from(GOOD))).toBe(1)
  })

  it('refuses bad handles, tokens, outcomes, decisions, signals and times with typed codes, recording nothing', async () => {
    const core = await freshCore()
    const def = core.define(Float64Array.from(GOOD))
    const branched = core.define(Float64Array.from(BRANCHED))
    const run = core.start(def, 1, 0)
    expect(executed(core.drain())).toEqual([1])
    const other = core.start(branched, 2, 0)
    const decideToken = core.drain()[2]!

    const refusals: [string, () => unknown, ErrorCode, RegExp?][] = []
    for (const [label, bad] of NOT_WHOLE) {
      refusals.push(
        [`start def ${label}`, () => core.start(bad, 1, 0), 'INVALID_ARGUMENT', /^definition must be a whole number/],
        [`complete run ${label}`, () => core.complete(bad, 1, ok, 1), 'INVALID_ARGUMENT', /^run must be a whole number from 0 to 2\^32 - 1, got /],
        [`complete token ${label}`, () => core.complete(run, bad, ok, 1), 'INVALID_ARGUMENT', /^token must be a whole number/],
        [`complete outcome ${label}`, () => core.complete(run, 1, bad, 1), 'INVALID_ARGUMENT', /^outcome must be 0 \(ok\), 1 \(transient\) or 2 \(permanent\)/],
        [`decide run ${label}`, () => core.decide(bad, decideToken, 0, 1), 'INVALID_ARGUMENT'],
        [`decide token ${label}`, () => core.decide(other, bad, 0, 1), 'INVALID_ARGUMENT'],
        [`signal run ${label}`, () => core.signal(bad, 0, 1), 'INVALID_ARGUMENT'],
        [`signal index ${label}`, () => core.signal(other, bad, 1), 'INVALID_ARGUMENT', /^signal must be a whole number/],
        [`cancel run ${label}`, () => core.cancel(bad, 1), 'INVALID_ARGUMENT'],
        [`fire run ${label}`, () => core.fire(bad, 1, 1), 'INVALID_ARGUMENT'],
        [`fire timer ${label}`, () => core.fire(run, bad, 1), 'INVALID_ARGUMENT', /^timer must be a whole number/],
        [`outstanding run ${label}`, () => core.outstanding(bad), 'INVALID_ARGUMENT'],
        [`release run ${label}`, () => core.release(bad), 'INVALID_ARGUMENT'],
      )
    }
    for (const bad of [3, 255, 256, 2 ** 31]) refusals.push([`outcome ${bad}`, () => core.complete(run, 1, bad, 1), 'INVALID_ARGUMENT', /^outcome must be 0/])
    for (const bad of [NaN, Infinity, -Infinity]) {
      refusals.push(
        [`start now ${bad}`, () => core.start(def, 1, bad), 'INVALID_ARGUMENT', /^now must be a finite time/],
        [`complete now ${bad}`, () => core.complete(run, 1, ok, bad), 'INVALID_ARGUMENT', /^now must be a finite time/],
        [`cancel now ${bad}`, () => core.cancel(run, bad), 'INVALID_ARGUMENT', /^now must be a finite time/],
        [`due now ${bad}`, () => core.due(bad), 'INVALID_ARGUMENT', /^now must be a finite time/],
      )
    }
    refusals.push(
      ['a NaN seed', () => core.start(def, NaN, 0), 'INVALID_ARGUMENT', /^seed is NaN/],
      ['a NaN deadline', () => core.start(def, 1, 0, NaN), 'INVALID_ARGUMENT', /^deadline must be a finite time in ms or NO_DEADLINE/],
      ['a deadline of -Infinity', () => core.start(def, 1, 0, -Infinity), 'INVALID_ARGUMENT', /^deadline must be a finite time in ms or NO_DEADLINE/],
      ['a definition never issued', () => core.start(99, 1, 0), 'UNKNOWN_WORKFLOW'],
      ['a run never issued', () => core.complete(4242, 1, ok, 1), 'UNKNOWN_RUN'],
      ['cancel of a run never issued', () => core.cancel(4242, 1), 'UNKNOWN_RUN'],
      ['outstanding of a run never issued', () => core.outstanding(4242), 'UNKNOWN_RUN'],
      ['release of a run never issued', () => core.release(4242), 'UNKNOWN_RUN'],
      ['a NaN decision', () => core.decide(other, decideToken, NaN, 1), 'INVALID_ARGUMENT', /^decision is NaN/],
      ['an arm the branch lacks', () => core.decide(other, decideToken, 2, 1), 'INVALID_ARGUMENT', /^decision 2 is no arm/],
      ['a fractional arm', () => core.decide(other, decideToken, 0.5, 1), 'INVALID_ARGUMENT'],
      ['a huge decision', () => core.decide(other, decideToken, 1e300, 1), 'INVALID_ARGUMENT'],
      ['a signal the program lacks', () => core.signal(other, 1, 1), 'INVALID_ARGUMENT', /^signal index 1 is beyond/],
      ['a signal of a program with none', () => core.signal(run, 0, 1), 'INVALID_ARGUMENT'],
    )
    for (const [label, value] of NOT_NUMBERS) {
      // An absent deadline is none (NO_DEADLINE).
      if (value !== undefined) refusals.push([`start deadline ${label}`, () => core.start(def, 1, 0, value as never), 'INVALID_ARGUMENT'])
      refusals.push(
        [`start def ${label}`, () => core.start(value as never, 1, 0), 'INVALID_ARGUMENT'],
        [`complete run ${label}`, () => core.complete(value as never, 1, ok, 1), 'INVALID_ARGUMENT'],
        [`complete token ${label}`, () => core.complete(run, value as never, ok, 1), 'INVALID_ARGUMENT'],
        [`complete outcome ${label}`, () => core.complete(run, 1, value as never, 1), 'INVALID_ARGUMENT'],
        [`decide value ${label}`, () => core.decide(other, decideToken, value as never, 1), 'INVALID_ARGUMENT'],
        [`signal index ${label}`, () => core.signal(other, value as never, 1), 'INVALID_ARGUMENT'],
        [`cancel run ${label}`, () => core.cancel(value as never, 1), 'INVALID_ARGUMENT'],
        [`fire timer ${label}`, () => core.fire(run, value as never, 1), 'INVALID_ARGUMENT'],
        [`due now ${label}`, () => core.due(value as never), 'INVALID_ARGUMENT'],
        [`outstanding run ${label}`, () => core.outstanding(value as never), 'INVALID_ARGUMENT'],
        [`release run ${label}`, () => core.release(value as never), 'INVALID_ARGUMENT'],
      )
    }
    // Word for word the same on both engines: the bindings share the wording, the core the rest.
    await expectRefused(() => core.complete(NaN, 1, ok, 1), 'INVALID_ARGUMENT').then((e) =>
      expect(e.message).toBe('run must be a whole number from 0 to 2^32 - 1, got NaN'),
    )
    await expectRefused(() => core.complete(run, 1, 256, 1), 'INVALID_ARGUMENT').then((e) =>
      expect(e.message).toBe('outcome must be 0 (ok), 1 (transient) or 2 (permanent), got 256'),
    )
    await expectRefused(() => core.complete(run, 1, 3, 1), 'INVALID_ARGUMENT').then((e) =>
      expect(e.message).toBe('outcome must be 0 (ok), 1 (transient) or 2 (permanent), got 3'),
    )
    for (const [label, call, code, message] of refusals) {
      const error = await expectRefused(call, code).catch((e: Error) => {
        throw new Error(`${label}: ${e.message}`)
      })
      if (message) expect(error.message, label).toMatch(message)
      expect(core.drain(), `${label} recorded something`).toHaveLength(0)
    }

    // Well-formed but stale: false, nothing recorded.
    expect(core.complete(run, 999, ok, 1)).toBe(false)
    expect(core.decide(run, 1, 0, 1)).toBe(false)
    expect(core.fire(run, 999, 1)).toBe(false)
    expect(core.drain()).toHaveLength(0)

    // Both runs go on as if nothing had happened.
    expect(core.complete(run, 1, ok, 2)).toBe(true)
    expect(executed(core.drain())).toEqual([2])
    expect(core.complete(run, 2, ok, 3)).toBe(true)
    const done = core.drain()
    expect(done[done.length - 8]).toBe(9) // run-done
    expect(done[done.length - 3]).toBe(1) // completed
    expect(core.decide(other, decideToken, 0, 4)).toBe(true)
    expect(executed(core.drain())).toHaveLength(1)
  })

  it('fails every call with CLOSED after close, on both engines', async () => {
    const core = await freshCore()
    const def = core.define(Float64Array.from(GOOD))
    const run = core.start(def, 1, 0)
    core.close()
    core.close()
    const calls: [string, () => unknown][] = [
      ['define', () => core.define(Float64Array.from(GOOD))],
      ['start', () => core.start(def, 1, 0)],
      ['complete', () => core.complete(run, 1, ok, 1)],
      ['decide', () => core.decide(run, 1, 0, 1)],
      ['signal', () => core.signal(run, 0, 1)],
      ['cancel', () => core.cancel(run, 1)],
      ['fire', () => core.fire(run, 1, 1)],
      ['due', () => core.due(1)],
      ['nextDeadline', () => core.nextDeadline()],
      ['outstanding', () => core.outstanding(run)],
      ['drain', () => core.drain()],
      ['release', () => core.release(run)],
      // Closed first, whatever the arguments.
      ['complete with NaN', () => core.complete(NaN, NaN, NaN, NaN)],
    ]
    for (const [label, call] of calls) {
      const error = await expectRefused(call, 'CLOSED').catch((e: Error) => {
        throw new Error(`${label}: ${e.message}`)
      })
      expect(error.message).toBe('the workflow core is closed')
    }
    // Another core of the same engine is untouched.
    const fresh = await freshCore()
    expect(fresh.define(Float64Array.from(GOOD))).toBe(0)
  })
})

describe('a start refuses what would fail its run midway, before anything runs', () => {
  it('a child workflow not defined here is WORKFLOW_NOT_FOUND naming the node, its children checked too', async () => {
    const o = await Orrery.create()
    const wf = await o.workflows()
    try {
      const effects: string[] = []
      wf.register('effect', (input: unknown) => {
        effects.push(String(input))
        return input
      })
      const sub = build.workflow('sub', build.step('only', { fn: 'effect' }, { input: 'sub' }))
      const parent = wf.define(build.workflow('parent', build.sequence(build.step('a', { fn: 'effect' }, { input: 'a' }), build.child('c', sub))))
      const error = await expectRefused(() => wf.start(parent, null, { id: 'p1' }), 'WORKFLOW_NOT_FOUND')
      expect(error.message).toBe('child node c of workflow parent starts workflow "sub", which is not defined (wf.define it first)')
      expect((error as { details?: unknown }).details).toEqual({ workflow: 'sub', node: 'c', parent: 'parent' })
      await expectRefused(() => wf.start('parent'), 'WORKFLOW_NOT_FOUND')
      // A grandchild is checked from the top: mid is defined, the workflow it starts is not.
      wf.define(build.workflow('mid', build.child('g', 'grand')))
      wf.define(build.workflow('top', build.sequence(build.step('t', { fn: 'effect' }), build.child('m', 'mid'))))
      expect((await expectRefused(() => wf.start('top'), 'WORKFLOW_NOT_FOUND')).message).toContain('child node g of workflow mid')
      // Children that start each other are checked once each: a step not registered in one is found.
      wf.define(build.workflow('ping', build.child('toPong', 'pong')))
      wf.define(build.workflow('pong', build.sequence(build.child('toPing', 'ping'), build.step('missing', { fn: 'nobody' }))))
      expect((await expectRefused(() => wf.start('ping'), 'STEP_NOT_REGISTERED')).message).toContain('of workflow pong')
      // Nothing ran and nothing was recorded.
      expect(effects).toEqual([])
      expect(wf.list()).toEqual([])
      expect(wf.get('p1')).toBeUndefined()
      wf.define(sub)
      const run = await wf.start(parent, null, { id: 'p1' })
      expect(await run.result()).toBe('sub')
      expect(effects).toEqual(['a', 'sub'])
    } finally {
      wf.close()
      o.close()
    }
  })

  it("a capability range that does not parse is DEFINITION_INVALID at define, by the mesh's parser; without a mesh a capability node is refused at start", async () => {
    const o = await Orrery.create()
    const mesh = await o.mesh()
    const wf = await o.workflows({ mesh })
    const bare = await o.workflows({ namespace: 'bare' })
    try {
      const roots = [
        [build.step('s', { capability: 'sum@^^1' }), 'run.capability'],
        [build.scatterGather('s', 'sum@>=1.x.y'), 'capability'],
        [build.delegate('s', 'plan@~~2'), 'capability'],
      ] as const
      for (const [root, field] of roots) {
        const error = await expectRefused(() => wf.define(build.workflow('bad', root)), 'DEFINITION_INVALID')
        expect(error.message).toMatch(new RegExp(`^workflow "bad": node "s" at root: ${field.replace('.', '\\.')} has a version range that does not parse`))
        expect((error as { details?: unknown }).details).toEqual({ path: `root.${field}`, node: 's' })
        // A definition object given to start is checked the same way, before any run.
        await expectRefused(() => wf.start(build.workflow('bad', root)), 'DEFINITION_INVALID')
      }
      expect(wf.list()).toEqual([])
      bare.register('first', () => 1)
      expect(wf.define(build.workflow('good', build.step('s', { capability: 'sum@^1.2' }))).name).toBe('good')
      // Without a mesh the range cannot be parsed, and the node could not run: refused at start.
      for (const [root] of roots) {
        const def = bare.define(build.workflow('meshless', build.sequence(build.step('first', { fn: 'first' }), root)))
        const error = await expectRefused(() => bare.start(def), 'INVALID_OPTION')
        expect(error.message).toBe('node s of workflow meshless calls a capability, but these workflows were opened without a mesh')
      }
      expect(bare.list()).toEqual([])
    } finally {
      wf.close()
      bare.close()
      mesh.close()
      o.close()
    }
  })
})
