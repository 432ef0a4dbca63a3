/**
 * The plain model of workflow runs that test/workflow-model.test.ts checks both engines against,
 * and the random definitions it draws.
 *
 * A definition is drawn as a `Shape` tree, built with the public builders and compiled. Every
 * answer the host gives (an attempt's outcome, a branch's arm, a loop's going on, a map's count,
 * a compensation's outcome) is a pure function of the run's answer seed and *where* it is asked:
 * the node and the path of loop iterations and map instances around it (from SCOPE records),
 * plus the attempt or iteration. So the answers do not depend on the order the driver happens to
 * answer in, and a small recursive evaluator can say what the run must end as.
 */
import fc from 'fast-check'

import { branch, forEach, loop, parallel, quorum, sequence, sleep, step, waitFor, when, workflow } from '../ts/workflows/builder.js'
import type { Condition, Join, NodeDraft, WorkflowDefinition } from '../ts/workflows/definition.js'

export type JoinShape = 'all' | 'any' | number

export type Shape =
  | { t: 'step'; attempts: number; timeout: boolean; comp: null | { attempts: number; timeout: boolean } }
  | { t: 'seq'; kids: Shape[] }
  | { t: 'par'; kids: Shape[]; join: JoinShape; timeout: boolean }
  | { t: 'branch'; kids: Shape[]; otherwise: boolean }
  | { t: 'loop'; until: boolean; max: number; body: Shape }
  | { t: 'map'; concurrency: number; join: JoinShape; timeout: boolean; body: Shape }
  | { t: 'sleep'; ms: number }
  | { t: 'wait'; signal: number; timeout: null | 'fail' | 'continue' }

const stepShape = fc.record({
  t: fc.constant('step' as const),
  attempts: fc.integer({ min: 1, max: 3 }),
  timeout: fc.boolean(),
  comp: fc.option(fc.record({ attempts: fc.integer({ min: 1, max: 2 }), timeout: fc.boolean() }), { freq: 2 }),
})

/** Join shapes for `count` children: quorum n within 1..count (a number stands for quorum). */
const joinFor = (count: number): fc.Arbitrary<JoinShape> =>
  fc.oneof(fc.constant<JoinShape>('all'), fc.constant<JoinShape>('any'), fc.integer({ min: 1, max: Math.max(1, count) }))

export const shapeArb: fc.Arbitrary<Shape> = fc.letrec<{ node: Shape }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    { arbitrary: stepShape, weight: 4 },
    { arbitrary: fc.record({ t: fc.constant('seq' as const), kids: fc.array(tie('node'), { minLength: 2, maxLength: 4 }) }), weight: 4 },
    {
      arbitrary: fc
        .array(tie('node'), { minLength: 1, maxLength: 3 })
        .chain((kids) => fc.record({ t: fc.constant('par' as const), kids: fc.constant(kids), join: joinFor(kids.length), timeout: fc.boolean() })),
      weight: 2,
    },
    {
      arbitrary: fc.record({ t: fc.constant('branch' as const), kids: fc.array(tie('node'), { minLength: 1, maxLength: 2 }), otherwise: fc.boolean() }),
      weight: 1,
    },
    { arbitrary: fc.record({ t: fc.constant('loop' as const), until: fc.boolean(), max: fc.integer({ min: 1, max: 3 }), body: tie('node') }), weight: 1 },
    {
      arbitrary: fc.record({
        t: fc.constant('map' as const),
        concurrency: fc.integer({ min: 0, max: 2 }),
        join: joinFor(2),
        timeout: fc.boolean(),
        body: tie('node'),
      }),
      weight: 1,
    },
    { arbitrary: fc.record({ t: fc.constant('sleep' as const), ms: fc.integer({ min: 0, max: 50 }) }), weight: 1 },
    {
      arbitrary: fc.record({
        t: fc.constant('wait' as const),
        signal: fc.integer({ min: 0, max: 1 }),
        timeout: fc.constantFrom(null, 'fail' as const, 'continue' as const),
      }),
      weight: 1,
    },
  ),
})).node

/** A shape with its node id and, once compiled, its program index (and its compensation's). */
export interface Placed {
  shape: Shape
  id: string
  index: number
  compensation: number
  kids: Placed[]
}

const RETRY = { initialMs: 10, maxMs: 40, factor: 2 }
const cond: Condition = { path: '$input.flag', op: 'truthy' }

function joinOf(j: JoinShape): Join {
  return j === 'all' || j === 'any' ? j : quorum(j)
}

/** Builds `shape` as a definition: its builder tree, and the placed tree to fill in indices. */
export function buildDefinition(shape: Shape, runTimeoutMs?: number): { definition: WorkflowDefinition; placed: Placed } {
  let n = 0
  const place = (s: Shape): [NodeDraft, Placed] => {
    const id = `${s.t}${++n}`
    const placed: Placed = { shape: s, id, index: -1, compensation: -1, kids: [] }
    const kids = (list: Shape[]) =>
      list.map((k) => {
        const [draft, p] = place(k)
        placed.kids.push(p)
        return draft
      })
    let draft: NodeDraft
    switch (s.t) {
      case 'step':
        draft = step(
          id,
          { fn: 'work' },
          {
            retry: { attempts: s.attempts, ...RETRY, jitter: true },
            ...(s.timeout ? { timeoutMs: 30 } : {}),
            ...(s.comp === null
              ? {}
              : {
                  compensate: {
                    run: { fn: 'undo' },
                    retry: { attempts: s.comp.attempts, ...RETRY, jitter: false },
                    ...(s.comp.timeout ? { timeoutMs: 30 } : {}),
                  },
                }),
          },
        )
        break
      case 'seq':
        draft = sequence(id, kids(s.kids))
        break
      case 'par':
        draft = parallel(kids(s.kids), { id, join: joinOf(s.join), ...(s.timeout ? { timeoutMs: 200 } : {}) })
        break
      case 'branch': {
        const arms = kids(s.kids)
        const otherwise = s.otherwise ? kids([{ t: 'sleep', ms: 1 }])[0] : undefined
        draft = branch(
          arms.map((a) => when(cond, a)),
          otherwise,
          { id },
        )
        break
      }
      case 'loop': {
        const [body] = kids([s.body])
        draft = loop({ ...(s.until ? { until: cond } : { while: cond }), maxIterations: s.max, id }, body!)
        break
      }
      case 'map': {
        const [body] = kids([s.body])
        draft = forEach('$input.items', body!, {
          id,
          join: joinOf(s.join),
          ...(s.concurrency === 0 ? {} : { concurrency: s.concurrency }),
          ...(s.timeout ? { timeoutMs: 200 } : {}),
        })
        break
      }
      case 'sleep':
        draft = sleep(id, s.ms)
        break
      case 'wait':
        draft = waitFor(id, `sig${s.signal}`, s.timeout === null ? {} : { timeoutMs: 100, onTimeout: s.timeout })
        break
    }
    return [draft, placed]
  }
  const [root, placed] = place(shape)
  return { definition: workflow('model', root, runTimeoutMs === undefined ? {} : { timeoutMs: runTimeoutMs }), placed }
}

/** Fills in program indices from the compiled index (node id -> index); returns placed by index. */
export function indexPlaced(placed: Placed, index: ReadonlyMap<string, number>): Map<number, Placed> {
  const byIndex = new Map<number, Placed>()
  const walk = (p: Placed) => {
    p.index = index.get(p.id)!
    p.compensation = index.get(`${p.id}.compensate`) ?? -1
    byIndex.set(p.index, p)
    for (const k of p.kids) walk(k)
  }
  walk(placed)
  return byIndex
}

/** A uniform number in [0, 1) from the answer seed and a place (FNV-1a, then a SplitMix-style finish). */
export function uniform(seed: number, key: string): number {
  let h = 0x811c9dc5 ^ seed
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
  h ^= h >>> 16
  h = Math.imul(h, 0x7feb352d)
  h ^= h >>> 15
  h = Math.imul(h, 0x846ca68b)
  h ^= h >>> 16
  return (h >>> 0) / 2 ** 32
}

export type AttemptOutcome = 'ok' | 'transient' | 'permanent' | 'timeout'

/** How the host answers: a pure function of the seed, the failure rate and the place asked. */
export class Answers {
  constructor(
    readonly seed: number,
    /** About how often an attempt fails. */
    readonly failRate: number,
  ) {}

  /** Attempt `attempt` of the step (or compensation) node `node` at `path`; `timeout` only where the step has one. */
  attempt(node: number, path: string, attempt: number, hasTimeout: boolean): AttemptOutcome {
    const u = uniform(this.seed, `a${node}|${path}|${attempt}`)
    if (u >= this.failRate) return 'ok'
    const v = u / this.failRate
    if (v < 0.5) return 'transient'
    if (v < 0.75) return hasTimeout ? 'timeout' : 'transient'
    return 'permanent'
  }

  /** A branch's arm (-1 none, -2 the decision failed). */
  arm(node: number, path: string, arms: number): number {
    const u = uniform(this.seed, `b${node}|${path}`)
    if (u < 0.03) return -2
    return Math.floor(((u - 0.03) / 0.97) * (arms + 1)) - 1
  }

  /** A loop's decision after `done` iterations: 1 go on, 0 stop, -2 failed (never past 4 iterations). */
  loop(node: number, path: string, done: number): number {
    const u = uniform(this.seed, `l${node}|${path}|${done}`)
    if (u < 0.02) return -2
    return u < 0.5 && done < 4 ? 1 : 0
  }

  /** A map's instance count (0..3), or -2. */
  count(node: number, path: string): number {
    const u = uniform(this.seed, `m${node}|${path}`)
    if (u < 0.03) return -2
    return Math.floor(((u - 0.03) / 0.97) * 4)
  }
}

/** What a node instance must come to: ok or failed, the steps that must and that may complete (`node|path`). */
export interface Verdict {
  ok: boolean
  must: Set<string>
  may: Set<string>
}

const union = (sets: Set<string>[]) => new Set(sets.flatMap((s) => [...s]))

/** Whether a step's attempts, answered by `answers`, end in success. */
export function stepSucceeds(answers: Answers, node: number, path: string, attempts: number, hasTimeout: boolean): boolean {
  for (let n = 1; n <= attempts; n++) {
    const o = answers.attempt(node, path, n, hasTimeout)
    if (o === 'ok') return true
    if (o === 'permanent') return false
  }
  return false
}

/** A join's verdict over child verdicts (`total` children, all of them run). */
function joinOk(join: JoinShape, total: number, ok: number): boolean {
  const need = join === 'all' ? total : join === 'any' ? 1 : join
  return ok >= need
}

/**
 * The plain model: what `p` at `path` comes to when nothing is cancelled and no node timeout
 * fires (signals come, sleeps end). Joins that stop early (a failed `all`, a succeeded `any` or
 * quorum) cancel siblings in whatever order the run went, so those only bound what completed.
 */
export function evaluate(p: Placed, path: string, answers: Answers): Verdict {
  const s = p.shape
  switch (s.t) {
    case 'step': {
      const ok = stepSucceeds(answers, p.index, path, s.attempts, s.timeout)
      const done = ok ? new Set([`${p.index}|${path}`]) : new Set<string>()
      return { ok, must: done, may: new Set(done) }
    }
    case 'seq': {
      const must: Set<string>[] = []
      const may: Set<string>[] = []
      for (const k of p.kids) {
        const v = evaluate(k, path, answers)
        must.push(v.must)
        may.push(v.may)
        if (!v.ok) return { ok: false, must: union(must), may: union(may) }
      }
      return { ok: true, must: union(must), may: union(may) }
    }
    case 'par':
      return gather(
        s.join,
        p.kids.map((k) => evaluate(k, path, answers)),
      )
    case 'branch': {
      const arm = answers.arm(p.index, path, p.kids.length)
      if (arm === -2) return { ok: false, must: new Set(), may: new Set() }
      if (arm === -1) return { ok: true, must: new Set(), may: new Set() }
      return evaluate(p.kids[arm]!, path, answers)
    }
    case 'loop': {
      const must: Set<string>[] = []
      const may: Set<string>[] = []
      const end = (ok: boolean): Verdict => ({ ok, must: union(must), may: union(may) })
      for (let done = 0; ; ) {
        if (!s.until) {
          const d = answers.loop(p.index, path, done)
          if (d !== 1) return end(d === 0)
          if (done >= s.max) return end(false)
        }
        const v = evaluate(p.kids[0]!, `${path}/${p.index}:${done}`, answers)
        must.push(v.must)
        may.push(v.may)
        if (!v.ok) return end(false)
        done++
        if (s.until) {
          const d = answers.loop(p.index, path, done)
          if (d !== 1) return end(d === 0)
          if (done >= s.max) return end(false)
        }
      }
    }
    case 'map': {
      const count = answers.count(p.index, path)
      if (count === -2) return { ok: false, must: new Set(), may: new Set() }
      // N = 0: the join decides (all: ok; any, quorum: out of reach, as Promise.any([]) rejects).
      if (count === 0) return { ok: s.join === 'all', must: new Set(), may: new Set() }
      // A quorum above the count cannot be reached: the map fails before it starts an instance.
      if (typeof s.join === 'number' && s.join > count) return { ok: false, must: new Set(), may: new Set() }
      const verdicts = Array.from({ length: count }, (_, i) => evaluate(p.kids[0]!, `${path}/${p.index}:${i}`, answers))
      return gather(s.join, verdicts)
    }
    case 'sleep':
    case 'wait':
      return { ok: true, must: new Set(), may: new Set() }
  }
}

function gather(join: JoinShape, verdicts: Verdict[]): Verdict {
  const ok = joinOk(join, verdicts.length, verdicts.filter((v) => v.ok).length)
  const may = union(verdicts.map((v) => v.may))
  // Only when no child can be cancelled early did every child run to its end: an `all` that
  // succeeded, or an `any`/quorum that failed only once every child had ended... which it may
  // decide before the last one ends (a quorum out of reach), so only `all` and `any` say.
  const complete = (join === 'all' && ok) || (join === 'any' && !ok)
  return { ok, must: complete ? union(verdicts.map((v) => v.must)) : new Set(), may }
}

/** Runtime-level definitions: local steps in sequences, parallels, branches and forEach (joins: all). */
export type RShape =
  | { t: 'step'; attempts: number; comp: boolean }
  | { t: 'seq'; kids: RShape[] }
  | { t: 'par'; kids: RShape[]; join: JoinShape }
  | { t: 'branch'; arms: RShape[]; otherwise: RShape }
  | { t: 'each'; concurrency: number; join: JoinShape; body: RShape }
  | { t: 'sleep'; ms: number }
  | { t: 'wait' }

export const rshapeArb: fc.Arbitrary<RShape> = fc.letrec<{ node: RShape }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    { arbitrary: fc.record({ t: fc.constant('step' as const), attempts: fc.integer({ min: 1, max: 3 }), comp: fc.boolean() }), weight: 4 },
    { arbitrary: fc.record({ t: fc.constant('seq' as const), kids: fc.array(tie('node'), { minLength: 2, maxLength: 3 }) }), weight: 3 },
    {
      arbitrary: fc
        .array(tie('node'), { minLength: 1, maxLength: 3 })
        .chain((kids) => fc.record({ t: fc.constant('par' as const), kids: fc.constant(kids), join: joinFor(kids.length) })),
      weight: 2,
    },
    {
      arbitrary: fc.record({ t: fc.constant('branch' as const), arms: fc.array(tie('node'), { minLength: 1, maxLength: 2 }), otherwise: tie('node') }),
      weight: 1,
    },
    { arbitrary: fc.record({ t: fc.constant('each' as const), concurrency: fc.integer({ min: 0, max: 2 }), join: joinFor(1), body: tie('node') }), weight: 1 },
    { arbitrary: fc.record({ t: fc.constant('sleep' as const), ms: fc.integer({ min: 0, max: 3 }) }), weight: 1 },
    { arbitrary: fc.constant({ t: 'wait' as const }), weight: 1 },
  ),
})).node

/** `shape` as a definition named `name`: steps call `work` (compensations `undo`), branches test `$input.pick`, forEach walks `$input.items`. */
export function buildRuntimeDefinition(name: string, shape: RShape): WorkflowDefinition {
  let n = 0
  const build = (s: RShape): NodeDraft => {
    const id = `${s.t}${++n}`
    switch (s.t) {
      case 'step':
        return step(
          id,
          { fn: 'work' },
          {
            input: { compensable: s.comp },
            retry: { attempts: s.attempts, initialMs: 1, maxMs: 3, jitter: true },
            ...(s.comp ? { compensate: { run: { fn: 'undo' } } } : {}),
          },
        )
      case 'seq':
        return sequence(id, s.kids.map(build))
      case 'par':
        return parallel(s.kids.map(build), { id, join: joinOf(s.join) })
      case 'branch': {
        const arms = s.arms.map((a, i) => when({ path: '$input.pick', op: 'eq', value: i }, build(a)))
        return branch(arms, build(s.otherwise), { id })
      }
      case 'each':
        return forEach('$input.items', build(s.body), { id, join: joinOf(s.join), ...(s.concurrency === 0 ? {} : { concurrency: s.concurrency }) })
      case 'sleep':
        return sleep(id, s.ms)
      case 'wait':
        return waitFor(id, 'go')
    }
  }
  return workflow(name, build(shape))
}

/** How a runtime step attempt goes: a pure function of the seed, its idempotency key and the attempt. */
export function runtimeOutcome(seed: number, failRate: number, key: string, attempt: number): 'ok' | 'transient' | 'permanent' {
  const u = uniform(seed, `${key}#${attempt}`)
  if (u >= failRate) return 'ok'
  return u < failRate * 0.6 ? 'transient' : 'permanent'
}

/** What a runtime run must end as: its output when ok, and the steps (idempotency keys, with a compensation) that must and may complete. */
export interface RuntimeVerdict {
  ok: boolean
  /** Whether `output` is what the run gives (an `any` or a quorum below the count succeeds with whichever children came first). */
  exact: boolean
  output: unknown
  must: Set<string>
  may: Set<string>
}

/**
 * The plain model of a runtime run: a step outputs its idempotency key (`<runId>/<id>[i]...`),
 * a sequence its last child's output, a parallel or forEach the array of its children's, a
 * branch its chosen arm's. Only steps that declared a compensation are tracked in must/may.
 */
export function evaluateRuntime(shape: RShape, runId: string, input: { pick: number; items: unknown[] }, seed: number, failRate: number): RuntimeVerdict {
  let n = 0
  const ev = (s: RShape, indices: string): RuntimeVerdict => {
    const id = `${s.t}${++n}`
    switch (s.t) {
      case 'step': {
        const key = `${runId}/${id}${indices}`
        let ok = false
        for (let a = 1; a <= s.attempts; a++) {
          const o = runtimeOutcome(seed, failRate, key, a)
          if (o === 'ok') ok = true
          if (o !== 'transient') break
        }
        const done = ok && s.comp ? new Set([key]) : new Set<string>()
        return { ok, exact: true, output: ok ? key : undefined, must: done, may: new Set(done) }
      }
      case 'seq': {
        const vs: RuntimeVerdict[] = []
        let failed = false
        // Every child is walked (numbering ids), but those after a failure add nothing.
        for (const k of s.kids) {
          const v = ev(k, indices)
          if (!failed) vs.push(v)
          failed ||= !v.ok
        }
        return { ok: !failed, exact: vs.every((v) => v.exact), output: vs.at(-1)!.output, must: union(vs.map((v) => v.must)), may: union(vs.map((v) => v.may)) }
      }
      case 'par':
        return joined(
          s.join,
          s.kids.map((k) => ev(k, indices)),
        )
      case 'branch': {
        const vs = [...s.arms, s.otherwise].map((k) => ev(k, indices))
        return vs[Math.min(input.pick, s.arms.length)]!
      }
      case 'each': {
        const start = n
        const vs = input.items.map((_, i) => {
          n = start
          return ev(s.body, `${indices}[${i}]`)
        })
        if (input.items.length === 0) {
          // Number the body's ids anyway.
          ev(s.body, indices)
        }
        // A quorum above the item count cannot be reached: the forEach fails before it starts.
        if (typeof s.join === 'number' && s.join > vs.length) return { ok: false, exact: true, output: undefined, must: new Set(), may: new Set() }
        return joined(s.join, vs)
      }
      case 'sleep':
        return { ok: true, exact: true, output: null, must: new Set(), may: new Set() }
      case 'wait':
        return { ok: true, exact: true, output: SIGNAL_PAYLOAD, must: new Set(), may: new Set() }
    }
  }
  return ev(shape, '')
}

/** A parallel's or forEach's verdict: the model's join, output exact only when every child had to succeed. */
function joined(join: JoinShape, vs: RuntimeVerdict[]): RuntimeVerdict {
  const need = join === 'all' ? vs.length : join === 'any' ? 1 : join
  // No children (a forEach over no items): all succeeds, any and quorum cannot be reached.
  const ok = vs.filter((v) => v.ok).length >= need
  const complete = (need === vs.length && ok) || (join === 'any' && !ok)
  return {
    ok,
    exact: need >= vs.length && vs.every((v) => v.exact),
    output: vs.map((v) => v.output),
    must: complete ? union(vs.map((v) => v.must)) : new Set(),
    may: union(vs.map((v) => v.may)),
  }
}

/** What every runtime signal carries (the output of each waitFor). */
export const SIGNAL_PAYLOAD = 'go!'

/** How many waitFor instances a successful run of `shape` on `input` passes (so many signals let every one through). */
export function waitsIn(shape: RShape, input: { pick: number; items: unknown[] }): number {
  switch (shape.t) {
    case 'wait':
      return 1
    case 'seq':
    case 'par':
      return shape.kids.reduce((sum, k) => sum + waitsIn(k, input), 0)
    case 'branch':
      return waitsIn([...shape.arms, shape.otherwise][Math.min(input.pick, shape.arms.length)]!, input)
    case 'each':
      return input.items.length * waitsIn(shape.body, input)
    default:
      return 0
  }
}
