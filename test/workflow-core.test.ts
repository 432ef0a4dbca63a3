/**
 * The workflow core as the runtime sees it (`WorkflowCore`, engine-neutral): programs written by
 * hand (the design's program layout), driven through the engine's adapter, records read back by
 * their `WORKFLOW_RECORDS` kinds. The expected records are written out here, so the same file
 * passing on every project means both engines emit the same stream for the same inputs.
 */
import { afterAll, describe, expect, it } from 'vitest'

import { Orrery } from '../ts/node.js'
import type { WorkflowCore } from '../ts/engines/backend.js'
import {
  FAILURE_REASONS,
  JOINS,
  NO_DEADLINE,
  NODE_OUTCOMES,
  RUN_STATUSES,
  STEP_OUTCOMES,
  WORKFLOW_LAYOUT,
  WORKFLOW_NODES,
  WORKFLOW_RECORDS,
} from '../ts/engines/manifest.js'
import { expectEngineUsable } from './bad-input.js'

const { ok, transient, permanent } = STEP_OUTCOMES
const W = WORKFLOW_LAYOUT.recordWords

/** One node of a hand-written program; omitted words take the design's defaults. */
interface NodeSpec {
  kind: keyof typeof WORKFLOW_NODES
  children?: number[]
  p1?: number
  p2?: number
  p3?: number
  timeoutMs?: number
  compensate?: number
  /** attempts, initialMs, maxMs, factor */
  retry?: [number, number, number, number]
}

/** The program words of `nodes` (node 0 the root), child lists after the nodes. */
function program(nodes: readonly NodeSpec[]): Float64Array {
  const words: number[] = [WORKFLOW_LAYOUT.programFormat, nodes.length]
  const lists: number[] = []
  for (const n of nodes) {
    const children = n.children ?? []
    const [attempts, initial, max, factor] = n.retry ?? [1, 100, 10_000, 2]
    words.push(
      WORKFLOW_NODES[n.kind],
      lists.length,
      children.length,
      n.p1 ?? 0,
      n.p2 ?? 0,
      n.p3 ?? 0,
      n.timeoutMs ?? Infinity,
      n.compensate ?? -1,
      attempts,
      initial,
      max,
      factor,
    )
    lists.push(...children)
  }
  return Float64Array.from([...words, ...lists])
}

const KIND_NAMES = new Map<number, string>(Object.entries(WORKFLOW_RECORDS).map(([name, kind]) => [kind, name]))

/** A record with its kind by name: `[kind, run, token, node, scope, a, b, c]`. */
type Rec = [string, number, number, number, number, number, number, number]

/** The records queued since the last drain, kinds by name. */
function drained(core: WorkflowCore): Rec[] {
  const words = core.drain()
  expect(words).toBeInstanceOf(Float64Array)
  expect(words.length % W).toBe(0)
  const out: Rec[] = []
  for (let i = 0; i < words.length; i += W) {
    const kind = words[i]!
    out.push([KIND_NAMES.get(kind) ?? `kind ${kind}`, ...Array.from(words.subarray(i + 1, i + W))] as Rec)
  }
  return out
}

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
  await expectEngineUsable()
})

/** seq(A, B, C): three steps in order. */
const SEQ3 = program([{ kind: 'sequence', children: [1, 2, 3] }, { kind: 'step' }, { kind: 'step' }, { kind: 'step' }])

/** Drives a fresh run of SEQ3 to completion, every step ok; returns its handle. */
function runSeq3(core: WorkflowCore, def: number): number {
  const run = core.start(def, 1, 0)
  for (let token = 1; token <= 3; token++) {
    expect(drained(core)).toContainEqual(['execute', run, token, token, 0, 1, 0, 0])
    expect(core.complete(run, token, ok, token)).toBe(true)
  }
  expect(drained(core).at(-1)).toEqual(['run-done', run, 0, 0, 0, RUN_STATUSES.completed, -1, 0])
  return run
}

describe('WorkflowCore', () => {
  it('drives a 3-step sequence to completion', async () => {
    const core = await freshCore()
    const def = core.define(SEQ3)
    const run = core.start(def, 1, 0)
    expect(drained(core)).toEqual([['execute', run, 1, 1, 0, 1, 0, 0]])
    expect(core.drain()).toHaveLength(0)
    expect(core.complete(run, 1, ok, 5)).toBe(true)
    expect(drained(core)).toEqual([
      ['node-done', run, 0, 1, 0, NODE_OUTCOMES.ok, 0, 0],
      ['execute', run, 2, 2, 0, 1, 0, 0],
    ])
    // The token of a finished attempt is stale: ignored, nothing recorded.
    expect(core.complete(run, 1, ok, 6)).toBe(false)
    expect(core.decide(run, 1, 0, 6)).toBe(false)
    expect(drained(core)).toEqual([])
    expect(core.complete(run, 2, ok, 7)).toBe(true)
    expect(core.complete(run, 3, ok, 8)).toBe(true)
    expect(drained(core)).toEqual([
      ['node-done', run, 0, 2, 0, NODE_OUTCOMES.ok, 0, 0],
      ['execute', run, 3, 3, 0, 1, 0, 0],
      ['node-done', run, 0, 3, 0, NODE_OUTCOMES.ok, 0, 0],
      ['node-done', run, 0, 0, 0, NODE_OUTCOMES.ok, 0, 0],
      ['run-done', run, 0, 0, 0, RUN_STATUSES.completed, -1, 0],
    ])
    // Any input on a finished run is ignored; a released run is unknown, even once its slot is reused.
    expect(core.complete(run, 3, ok, 9)).toBe(false)
    core.cancel(run, 9)
    expect(core.drain()).toHaveLength(0)
    core.release(run)
    expect(() => core.complete(run, 3, ok, 9)).toThrow(expect.objectContaining({ code: 'UNKNOWN_RUN' }))
    const next = runSeq3(core, def)
    expect(next).not.toBe(run)
    expect(() => core.release(run)).toThrow(expect.objectContaining({ code: 'UNKNOWN_RUN' }))
    core.release(next)
    expect(core.nextDeadline()).toBe(NO_DEADLINE)
  })

  it('retries a transient failure after its backoff, on host time, and fails once attempts are used up', async () => {
    const core = await freshCore()
    const def = core.define(program([{ kind: 'step', retry: [3, 100, 1000, 2] }]))
    const run = core.start(def, 1, 0)
    expect(drained(core)).toEqual([['execute', run, 1, 0, 0, 1, 0, 0]])
    expect(core.complete(run, 1, transient, 10)).toBe(true)
    // Attempt 2 after 100 ms (no jitter): a retry record and its timer (token 2).
    expect(drained(core)).toEqual([
      ['retry', run, 1, 0, 0, 2, 110, 0],
      ['timer', run, 2, 0, 0, 110, 0, 0],
    ])
    expect(core.nextDeadline()).toBe(110)
    expect(Array.from(core.due(109))).toEqual([])
    expect(Array.from(core.due(110))).toEqual([run, 2])
    expect(core.fire(run, 2, 110)).toBe(true)
    // Fired: no longer armed, no longer due.
    expect(core.fire(run, 2, 110)).toBe(false)
    expect(Array.from(core.due(110))).toEqual([])
    expect(drained(core)).toEqual([['execute', run, 3, 0, 0, 2, 0, 0]])
    // The delay doubles: 200 ms.
    expect(core.complete(run, 3, transient, 120)).toBe(true)
    expect(drained(core)).toEqual([
      ['retry', run, 3, 0, 0, 3, 320, 0],
      ['timer', run, 4, 0, 0, 320, 0, 0],
    ])
    expect(core.fire(run, 4, 320)).toBe(true)
    expect(drained(core)).toEqual([['execute', run, 5, 0, 0, 3, 0, 0]])
    // The third attempt was the last: the step, and the run, fail with that attempt's token,
    // saying why (node-done's c, run-done's scope word).
    expect(core.complete(run, 5, transient, 330)).toBe(true)
    const failed = FAILURE_REASONS['step-failed']
    expect(drained(core)).toEqual([
      ['node-done', run, 0, 0, 0, NODE_OUTCOMES.failed, 5, failed],
      ['run-done', run, 0, 0, failed, RUN_STATUSES.failed, 0, 5],
    ])
    expect(core.nextDeadline()).toBe(NO_DEADLINE)

    // A retry that succeeds: the run completes on attempt 2.
    const again = core.start(def, 1, 1000)
    expect(drained(core)).toEqual([['execute', again, 1, 0, 0, 1, 0, 0]])
    core.complete(again, 1, transient, 1000)
    expect(drained(core)).toEqual([
      ['retry', again, 1, 0, 0, 2, 1100, 0],
      ['timer', again, 2, 0, 0, 1100, 0, 0],
    ])
    expect(core.fire(again, 2, 1100)).toBe(true)
    expect(drained(core)).toEqual([['execute', again, 3, 0, 0, 2, 0, 0]])
    expect(core.complete(again, 3, ok, 1101)).toBe(true)
    expect(drained(core)).toEqual([
      ['node-done', again, 0, 0, 0, NODE_OUTCOMES.ok, 0, 0],
      ['run-done', again, 0, 0, 0, RUN_STATUSES.completed, -1, 0],
    ])
  })

  it('cancels a run: the step in flight is cancelled and the completed one compensated (with its own retry)', async () => {
    const core = await freshCore()
    // seq(A compensated by C, B); C retries once after 50 ms.
    const def = core.define(
      program([{ kind: 'sequence', children: [1, 2] }, { kind: 'step', compensate: 3 }, { kind: 'step' }, { kind: 'step', retry: [2, 50, 50, 1] }]),
    )
    const run = core.start(def, 7, 0)
    expect(drained(core)).toEqual([['execute', run, 1, 1, 0, 1, 0, 0]])
    expect(core.complete(run, 1, ok, 5)).toBe(true)
    expect(drained(core)).toEqual([
      ['node-done', run, 0, 1, 0, NODE_OUTCOMES.ok, 0, 0],
      ['execute', run, 2, 2, 0, 1, 0, 0],
    ])
    core.cancel(run, 6)
    expect(drained(core)).toEqual([
      ['cancel', run, 2, 2, 0, 1, 0, 0],
      ['node-done', run, 0, 2, 0, NODE_OUTCOMES.cancelled, 0, FAILURE_REASONS.cancelled],
      ['node-done', run, 0, 0, 0, NODE_OUTCOMES.cancelled, 0, FAILURE_REASONS.cancelled],
      // Compensation C (node 3) of step A (node 1, completed by token 1).
      ['compensate', run, 3, 3, 0, 1, 1, 1],
    ])
    // Cancelling while compensating does nothing; the cancelled attempt's result is stale.
    core.cancel(run, 7)
    expect(core.complete(run, 2, ok, 8)).toBe(false)
    expect(drained(core)).toEqual([])
    expect(core.complete(run, 3, transient, 9)).toBe(true)
    expect(drained(core)).toEqual([
      ['retry', run, 3, 3, 0, 2, 59, 0],
      ['timer', run, 4, 3, 0, 59, 0, 0],
    ])
    expect(Array.from(core.due(59))).toEqual([run, 4])
    expect(core.fire(run, 4, 59)).toBe(true)
    expect(drained(core)).toEqual([['compensate', run, 5, 3, 0, 2, 1, 1]])
    expect(core.complete(run, 5, ok, 60)).toBe(true)
    expect(drained(core)).toEqual([
      ['compensated', run, 5, 1, 0, 0, 0, 0],
      ['run-done', run, 0, 0, FAILURE_REASONS.cancelled, RUN_STATUSES.compensated, -1, 0],
    ])
  })

  it('fails a run at the deadline given at start (the earlier of it and the root timeout), one program serving any deadline', async () => {
    const core = await freshCore()
    // seq(A) with a root timeout of 1000 ms, started with a deadline at 300.
    const def = core.define(program([{ kind: 'sequence', children: [1], timeoutMs: 1000 }, { kind: 'step' }]))
    const run = core.start(def, 1, 0, 300)
    expect(drained(core)).toEqual([
      ['execute', run, 1, 1, 0, 1, 0, 0],
      ['timer', run, 2, 0, 0, 1000, 0, 0],
      // The deadline: a timer of the run's own.
      ['timer', run, 3, 0, 0, 300, 0, 0],
    ])
    expect(core.nextDeadline()).toBe(300)
    expect(core.fire(run, 3, 300)).toBe(true)
    const why = FAILURE_REASONS['run-timeout']
    expect(drained(core)).toEqual([
      ['cancel', run, 1, 1, 0, 1, 0, 0],
      ['node-done', run, 0, 1, 0, NODE_OUTCOMES.cancelled, 0, FAILURE_REASONS.cancelled],
      ['node-done', run, 0, 0, 0, NODE_OUTCOMES.failed, 3, why],
      ['run-done', run, 0, 0, why, RUN_STATUSES.failed, 0, 3],
    ])
    expect(core.nextDeadline()).toBe(NO_DEADLINE)
    // The same program without a deadline: only the root's timeout; a later one loses to it.
    const none = core.start(def, 1, 0, NO_DEADLINE)
    expect(drained(core).filter((r) => r[0] === 'timer')).toEqual([['timer', none, 2, 0, 0, 1000, 0, 0]])
    const later = core.start(def, 1, 0, 5000)
    expect(drained(core).filter((r) => r[0] === 'timer')).toEqual([
      ['timer', later, 2, 0, 0, 1000, 0, 0],
      ['timer', later, 3, 0, 0, 5000, 0, 0],
    ])
    for (const r of [none, later]) expect(core.fire(r, 2, 1000)).toBe(true)
    expect(drained(core).filter((r) => r[0] === 'run-done')).toEqual([
      ['run-done', none, 0, 0, why, RUN_STATUSES.failed, 0, 2],
      ['run-done', later, 0, 0, why, RUN_STATUSES.failed, 0, 2],
    ])
    expect(core.nextDeadline()).toBe(NO_DEADLINE)
  })

  it('queues again what is in flight when asked (after a replay)', async () => {
    const core = await freshCore()
    const def = core.define(program([{ kind: 'parallel', children: [1, 2], p1: JOINS.all }, { kind: 'step' }, { kind: 'step' }]))
    const run = core.start(def, 1, 0)
    expect(drained(core)).toEqual([
      ['execute', run, 1, 1, 0, 1, 0, 0],
      ['execute', run, 2, 2, 0, 1, 0, 0],
    ])
    core.complete(run, 1, ok, 1)
    drained(core)
    core.outstanding(run)
    expect(drained(core)).toEqual([['execute', run, 2, 2, 0, 1, 0, 0]])
  })

  it("drains a batch larger than the engine's first buffer, and a drained batch stays valid after later calls", async () => {
    const core = await freshCore()
    const n = 300
    const def = core.define(
      program([{ kind: 'parallel', children: Array.from({ length: n }, (_, i) => i + 1) }, ...Array.from({ length: n }, () => ({ kind: 'step' as const }))]),
    )
    const run = core.start(def, 1, 0)
    const first = core.drain()
    expect(first.length).toBe(n * W)
    const copy = Array.from(first)
    for (let token = 1; token <= n; token++) expect(core.complete(run, token, ok, 1)).toBe(true)
    const rest = drained(core)
    expect(rest).toHaveLength(n + 2)
    expect(rest.at(-1)).toEqual(['run-done', run, 0, 0, 0, RUN_STATUSES.completed, -1, 0])
    expect(Array.from(first)).toEqual(copy)
    expect(copy.filter((_, i) => i % W === 0).every((kind) => kind === WORKFLOW_RECORDS.execute)).toBe(true)
    // Small drains after the burst (the native buffer shrinks back), then a burst again (it grows).
    const one = core.define(program([{ kind: 'step' }]))
    const small = core.start(one, 1, 2)
    expect(drained(core)).toEqual([['execute', small, 1, 0, 0, 1, 0, 0]])
    expect(core.complete(small, 1, ok, 3)).toBe(true)
    expect(drained(core).map((r) => r[0])).toEqual(['node-done', 'run-done'])
    const again = core.start(def, 1, 4)
    expect(drained(core)).toHaveLength(n)
    core.cancel(again, 5)
    expect(drained(core)).toHaveLength(2 * n + 2)
  })

  it('emits the same records on every engine for a mixed program driven by a seeded script', async () => {
    const core = await freshCore()
    const def = core.define(MIXED)
    const stream: number[] = []
    const kinds: Record<string, number> = {}
    const statuses: number[] = []
    for (let seed = 1; seed <= 12; seed++) stream.push(...drive(core, def, seed, kinds, statuses))
    // Written from one engine's run, checked on every engine (and the browser): jitter, timers,
    // joins, loops, sagas and signals all land on the same numbers.
    expect({ kinds, statuses, digest: digest(stream) }).toEqual(MIXED_EXPECTED)
  })
})

/**
 * seq(
 *   par(all: A retry 4 jittered, B retry 3 jittered compensated by X, sleep 250),
 *   map(concurrency 2, quorum 2: C retry 2 jittered, timeout 500),
 *   loop(until, max 3: seq(D retry 2 jittered)),
 *   branch(wait(signal 0, timeout 1000, continue), E compensated by Y),
 *   F)
 */
const MIXED = program([
  { kind: 'sequence', children: [1, 5, 7, 10, 12] },
  { kind: 'parallel', children: [2, 3, 4], p1: JOINS.all },
  { kind: 'step', retry: [4, 100, 1000, 2], p3: 1 },
  { kind: 'step', retry: [3, 50, 500, 3], p3: 1, compensate: 14 },
  { kind: 'sleep', p1: 250 },
  { kind: 'map', children: [6], p1: 2, p2: JOINS.quorum, p3: 2 },
  { kind: 'step', retry: [2, 10, 10, 1], p3: 1, timeoutMs: 500 },
  { kind: 'loop', children: [8], p1: 1, p2: 3 },
  { kind: 'sequence', children: [9] },
  { kind: 'step', retry: [2, 20, 40, 2], p3: 1 },
  { kind: 'branch', children: [11, 13] },
  { kind: 'wait', p1: 0, p2: 1, timeoutMs: 1000 },
  { kind: 'step' },
  { kind: 'step', compensate: 15 },
  { kind: 'step', retry: [2, 5, 5, 1] },
  { kind: 'step' },
])

/**
 * What driving MIXED with seeds 1..12 gives: record counts by kind, each run's final status
 * (completed, failed, cancelled and compensated all occur), and a digest of every record and
 * call result in order. Taken from the native engine; wasm and the browser must match it.
 */
const MIXED_EXPECTED = {
  kinds: { cancel: 7, compensate: 8, compensated: 7, decide: 19, execute: 67, 'node-done': 120, retry: 13, 'run-done': 12, scope: 29, timer: 46 },
  statuses: [2, 4, 4, 1, 4, 2, 3, 4, 4, 4, 1, 4],
  digest: 83061577,
}

/** mulberry32: a small seeded generator, the same numbers in every JS engine. */
function random(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * Runs MIXED once: answers work in a seeded random order with seeded outcomes and decisions,
 * sends a signal now and then, cancels one run in five, fires timers when nothing else is left.
 * Returns every record and every call's result, as numbers.
 */
function drive(core: WorkflowCore, def: number, seed: number, kinds: Record<string, number>, statuses: number[]): number[] {
  const rand = random(seed)
  const out: number[] = []
  let now = seed * 10_000
  const run = core.start(def, seed, now)
  const work: { token: number; decide: number }[] = []
  let done = false
  const cancelAt = rand() < 0.2 ? Math.floor(rand() * 12) : -1
  for (let turn = 0; turn < 1000 && !done; turn++) {
    const words = core.drain()
    out.push(...words)
    for (let i = 0; i < words.length; i += W) {
      const kind = words[i]!
      const name = KIND_NAMES.get(kind) ?? `kind ${kind}`
      kinds[name] = (kinds[name] ?? 0) + 1
      if (kind === WORKFLOW_RECORDS['run-done']) statuses.push(words[i + 5]!)
      if (kind === WORKFLOW_RECORDS.execute || kind === WORKFLOW_RECORDS.compensate) work.push({ token: words[i + 2]!, decide: -1 })
      else if (kind === WORKFLOW_RECORDS.decide) work.push({ token: words[i + 2]!, decide: words[i + 3]! })
      else if (kind === WORKFLOW_RECORDS['run-done']) done = true
    }
    if (done) break
    now += Math.floor(rand() * 20)
    if (turn === cancelAt) core.cancel(run, now)
    if (rand() < 0.1) core.signal(run, 0, now)
    if (work.length > 0) {
      const [job] = work.splice(Math.floor(rand() * work.length), 1)
      const r = rand()
      let answered: boolean
      if (job!.decide < 0) answered = core.complete(run, job!.token, r < 0.7 ? ok : r < 0.9 ? transient : permanent, now)
      else {
        const kind = MIXED[2 + job!.decide * WORKFLOW_LAYOUT.nodeWords]
        const value = kind === WORKFLOW_NODES.map ? Math.floor(r * 5) : kind === WORKFLOW_NODES.loop ? Number(r < 0.6) : Math.floor(r * 3) - 1
        answered = core.decide(run, job!.token, value, now)
      }
      out.push(Number(answered))
      continue
    }
    const next = core.nextDeadline()
    if (next === NO_DEADLINE) break
    now = Math.max(now, next)
    const due = core.due(now)
    out.push(...due)
    for (let i = 0; i < due.length; i += 2) out.push(Number(core.fire(due[i]!, due[i + 1]!, now)))
  }
  expect(done).toBe(true)
  core.release(run)
  return out
}

/** FNV-1a over each number's eight bytes. */
function digest(numbers: readonly number[]): number {
  const bytes = new Uint8Array(Float64Array.from(numbers).buffer)
  let h = 0x811c9dc5
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0
  return h
}
