/**
 * Workflows against a plain model, on the engine under test.
 *
 * Engine level (WorkflowCore): random definitions (sequence, parallel all/any/quorum, branch,
 * loop, forEach, sleep, waitFor; steps with retries, attempt timeouts and compensations), built
 * with the public builders and compiled, driven by a random host: it answers what is with it
 * (attempts, compensations, decisions) in a random order, fires timers at increasing times, sends
 * signals and, in "chaos" scripts, cancels the run and fires node timeouts at random moments,
 * and throws in stale answers. Every record is checked as it comes (tokens issued one by one
 * from 1, nothing names a token never issued, no completion accepted twice, the armed timers are
 * exactly the core's), then the end (exactly one run-done, every attempt answered or cancelled,
 * compensations exactly for the completed steps that declared one, newest first, once each, the
 * status the rules give). Scripts without cancels and node timeouts must also end as the plain
 * model in test/workflow-model.ts says. Every script's inputs replayed into a fresh core give the
 * same records, and a replay cut anywhere followed by `outstanding` re-queues exactly what was
 * with the host at that point.
 */
import fc from 'fast-check'
import { afterAll, describe, expect, it } from 'vitest'

import type { WorkflowCore } from '../ts/engines/backend.js'
import { NO_DEADLINE, NODE_OUTCOMES, RUN_STATUSES, STEP_OUTCOMES, WORKFLOW_LAYOUT, WORKFLOW_NODES, WORKFLOW_RECORDS } from '../ts/engines/manifest.js'
import { Orrery, parallel, PermanentError, step, workflow, type StepContext, type Workflows } from '../ts/node.js'
import { compileWorkflow, type CompiledWorkflow } from '../ts/workflows/compile.js'
import { ENGINE } from './engine.js'
import {
  Answers,
  buildDefinition,
  buildRuntimeDefinition,
  evaluate,
  evaluateRuntime,
  indexPlaced,
  rshapeArb,
  runtimeOutcome,
  SIGNAL_PAYLOAD,
  waitsIn,
  shapeArb,
  stepSucceeds,
  type Placed,
  type Shape,
} from './workflow-model.js'

const W = WORKFLOW_LAYOUT.recordWords
const R = WORKFLOW_RECORDS
const NODE_KIND = (program: Float64Array, node: number) => program[2 + node * WORKFLOW_LAYOUT.nodeWords]!

/** A record: `[kind, run, token, node, scope, a, b, c]`. */
type Rec = number[]

type Input =
  | { op: 'start'; seed: number; now: number; ret: number }
  | { op: 'complete' | 'decide'; token: number; value: number; now: number; ret: boolean }
  | { op: 'fire'; token: number; now: number; ret: boolean }
  | { op: 'signal'; index: number; now: number }
  | { op: 'cancel'; now: number }

/** mulberry32: the driver's own choices, from one fast-check integer. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
}

interface Script {
  shape: Shape
  answerSeed: number
  failRate: number
  schedule: number
  /** Cancels and node timeouts at random moments (the model then only bounds the end). */
  chaos: boolean
  runTimeoutMs: number | undefined
}

interface Timer {
  node: number
  scope: number
  at: number
  /** attempt: a step attempt's timeout; retry: a retry's delay; sleep; timeout: a node's. */
  kind: 'attempt' | 'retry' | 'sleep' | 'timeout'
}

/** Applies one recorded input to `core` (the same call the live driver made). */
function apply(core: WorkflowCore, run: number, input: Input): number | boolean | undefined {
  switch (input.op) {
    case 'start':
      return undefined
    case 'complete':
      return core.complete(run, input.token, input.value, input.now)
    case 'decide':
      return core.decide(run, input.token, input.value, input.now)
    case 'fire':
      return core.fire(run, input.token, input.now)
    case 'signal':
      core.signal(run, input.index, input.now)
      return undefined
    case 'cancel':
      core.cancel(run, input.now)
      return undefined
  }
}

function records(words: Float64Array): Rec[] {
  expect(words.length % W).toBe(0)
  const out: Rec[] = []
  for (let i = 0; i < words.length; i += W) out.push(Array.from(words.subarray(i, i + W)))
  return out
}

/** Everything one live run went through, for the checks after it. */
interface Trace {
  compiled: CompiledWorkflow
  inputs: Input[]
  /** Records, and how many there were after each input. */
  stream: Rec[]
  streamAt: number[]
  /** What was with the host (attempts and decisions, their records in token order) after each input. */
  pendingAt: Rec[][]
  run: number
}

/** Drives one run of `script` on `core`, checking each record as it comes; returns its trace. */
function drive(core: WorkflowCore, script: Script): Trace {
  const { definition, placed } = buildDefinition(script.shape, script.runTimeoutMs)
  const compiled = compileWorkflow(definition)
  // The JSON copy of a definition is the same program.
  expect(compileWorkflow(JSON.parse(JSON.stringify(definition))).program).toEqual(compiled.program)
  const byIndex = indexPlaced(placed, compiled.index)
  const program = compiled.program
  const answers = new Answers(script.answerSeed, script.failRate)
  const random = prng(script.schedule)
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!

  // The step each compensation node compensates, and what each STEP node is.
  const compensates = new Map<number, Placed>()
  for (const p of byIndex.values()) if (p.compensation >= 0) compensates.set(p.compensation, p)
  const stepInfo = (node: number): { attempts: number; timeout: boolean } => {
    const owner = compensates.get(node)
    if (owner !== undefined && owner.shape.t === 'step') return { attempts: owner.shape.comp!.attempts, timeout: owner.shape.comp!.timeout }
    const shape = byIndex.get(node)?.shape
    if (shape?.t !== 'step') throw new Error(`node ${node} is no step of the definition`)
    return { attempts: shape.attempts, timeout: shape.timeout }
  }

  const def = core.define(program)
  let now = 0
  const run = core.start(def, script.answerSeed, now)
  const inputs: Input[] = [{ op: 'start', seed: script.answerSeed, now, ret: run }]
  const stream: Rec[] = []
  const streamAt: number[] = []
  const pendingAt: Rec[][] = []

  // What the host knows from the records so far.
  let nextToken = 1
  const scopes = new Map<number, string>([[0, '']])
  const attempts = new Map<number, Rec>() // EXECUTE / COMPENSATE in flight, by token
  const decisions = new Map<number, Rec>() // DECIDE asked and not answered, by token
  const armed = new Map<number, Timer>()
  const attemptTimer = new Map<number, number>()
  const answered = new Set<number>() // tokens whose completion or decision was accepted
  const completions: { node: number; scope: number; token: number }[] = [] // ok EXECUTE completions, in order
  const compensateOrder: { step: number; token: number }[] = [] // first attempt of each compensation
  const compensationLast = new Map<number, number>() // compensated token -> latest attempt token
  const compensationOk = new Set<number>() // compensated tokens whose compensation succeeded
  const compensated: Rec[] = []
  const nodeDone = new Set<string>()
  let rootDone: Rec | undefined
  let runDone: Rec | undefined
  let cancelled = false
  let previous: Rec | undefined

  const path = (scope: number): string => {
    const p = scopes.get(scope)
    if (p === undefined) throw new Error(`scope ${scope} was never opened by a scope record`)
    return p
  }
  const issued = (token: number) => token >= 1 && token < nextToken

  const observe = (rec: Rec) => {
    const [kind, recRun, token, node, scope, a, b, c] = rec as [number, number, number, number, number, number, number, number]
    expect(recRun, 'the record names its run').toBe(run)
    expect(runDone, 'nothing is recorded after run-done').toBeUndefined()
    expect(node >= 0 && node < program[1]!, `record names node ${node}`).toBe(true)
    if (kind !== R['run-done']) path(scope)
    switch (kind) {
      case R.execute:
      case R.compensate:
      case R.decide:
      case R.scope:
      case R.timer:
        expect(token, 'tokens are issued one by one from 1').toBe(nextToken)
        nextToken++
        break
      default:
        expect(token === 0 || issued(token), `record ${rec} names a token never issued`).toBe(true)
    }
    switch (kind) {
      case R.execute:
        expect(NODE_KIND(program, node)).toBe(WORKFLOW_NODES.step)
        expect(compensates.has(node), 'a compensation is never executed as a step').toBe(false)
        expect(compensateOrder, 'no step starts once compensation began').toHaveLength(0)
        attempts.set(token, rec)
        break
      case R.compensate: {
        expect(compensates.get(node)?.index).toBe(b)
        if (a === 1) compensateOrder.push({ step: b, token: c })
        else expect(compensationLast.has(c)).toBe(true)
        compensationLast.set(c, token)
        attempts.set(token, rec)
        break
      }
      case R.decide:
        expect([WORKFLOW_NODES.branch, WORKFLOW_NODES.loop, WORKFLOW_NODES.map]).toContain(NODE_KIND(program, node))
        decisions.set(token, rec)
        break
      case R.scope:
        expect([WORKFLOW_NODES.loop, WORKFLOW_NODES.map]).toContain(NODE_KIND(program, node))
        scopes.set(token, `${path(scope)}/${node}:${a}`)
        break
      case R.timer: {
        const sameNode = previous !== undefined && previous[3] === node && previous[4] === scope
        const kindOf: Timer['kind'] =
          sameNode && (previous![0] === R.execute || previous![0] === R.compensate)
            ? 'attempt'
            : sameNode && previous![0] === R.retry
              ? 'retry'
              : NODE_KIND(program, node) === WORKFLOW_NODES.sleep && !(sameNode && previous![0] === R.timer)
                ? 'sleep'
                : 'timeout'
        if (kindOf === 'attempt') attemptTimer.set(previous![2]!, token)
        expect(a, 'a timer is due no earlier than now').toBeGreaterThanOrEqual(now)
        armed.set(token, { node, scope, at: a, kind: kindOf })
        break
      }
      case R.cancel:
        expect(attempts.has(token), `CANCEL of ${token}, which is not in flight`).toBe(true)
        attempts.delete(token)
        break
      case R['node-done']: {
        const key = `${node}|${scope}`
        expect(nodeDone.has(key), `node ${node} in scope ${scope} ended twice`).toBe(false)
        nodeDone.add(key)
        expect(Object.values(NODE_OUTCOMES)).toContain(a)
        if (a !== NODE_OUTCOMES.failed) expect(b).toBe(0)
        else expect(issued(b), 'a failure names the token that caused it').toBe(true)
        for (const [t, r] of attempts)
          if (r[0] === R.execute) expect(r[3] === node && r[4] === scope, `node ${node} ended with attempt ${t} in flight`).toBe(false)
        for (const [t, r] of decisions) if (r[3] === node && r[4] === scope) decisions.delete(t)
        for (const [t, timer] of armed) if (timer.node === node && timer.scope === scope) armed.delete(t)
        if (node === 0 && scope === 0) rootDone = rec
        break
      }
      case R.retry:
        expect(issued(token) && !attempts.has(token), 'a retry follows an attempt that ended').toBe(true)
        expect(b).toBeGreaterThanOrEqual(now)
        expect(a).toBeLessThanOrEqual(stepInfo(node).attempts)
        break
      case R.compensated: {
        expect(compensateOrder.at(-1)?.step, 'compensated: the step being compensated').toBe(node)
        const of = compensateOrder.at(-1)!.token
        expect(token).toBe(compensationLast.get(of))
        expect(a).toBe(compensationOk.has(of) ? 0 : 1)
        compensated.push(rec)
        const comp = byIndex.get(node)!.compensation
        for (const [t, timer] of armed) if (timer.node === comp && timer.scope === scope) armed.delete(t)
        break
      }
      case R['run-done']:
        expect(Object.values(RUN_STATUSES)).toContain(a)
        expect(attempts.size, 'every attempt was answered or cancelled before run-done').toBe(0)
        expect([...armed.keys()], 'no timer is left armed after run-done').toEqual([])
        runDone = rec
        break
      default:
        throw new Error(`unknown record kind ${kind}`)
    }
    previous = rec
  }

  /** Drains, checks, and snapshots after one input. */
  const afterInput = (input: Input) => {
    inputs.push(input)
    for (const rec of records(core.drain())) {
      stream.push(rec)
      observe(rec)
    }
    streamAt.push(stream.length)
    pendingAt.push([...attempts.values(), ...decisions.values()].sort((x, y) => x[2]! - y[2]!))
    // The armed timers are exactly the core's.
    const due = core.due(Number.MAX_VALUE)
    const coreTimers = new Set<number>()
    for (let i = 0; i < due.length; i += 2) {
      expect(due[i]).toBe(run)
      coreTimers.add(due[i + 1]!)
    }
    expect([...coreTimers].sort((x, y) => x - y)).toEqual([...armed.keys()].sort((x, y) => x - y))
  }
  for (const rec of records(core.drain())) {
    stream.push(rec)
    observe(rec)
  }
  streamAt.push(stream.length)
  pendingAt.push([...attempts.values(), ...decisions.values()].sort((x, y) => x[2]! - y[2]!))

  const complete = (token: number, outcome: number) => {
    const ret = core.complete(run, token, outcome, now)
    const rec = attempts.get(token)
    expect(ret, `complete(${token}) accepted exactly when it is in flight`).toBe(rec !== undefined && runDone === undefined)
    if (ret) {
      expect(answered.has(token), 'no completion is accepted twice').toBe(false)
      answered.add(token)
      attempts.delete(token)
      const timer = attemptTimer.get(token)
      if (timer !== undefined) armed.delete(timer)
      if (rec![0] === R.execute && outcome === STEP_OUTCOMES.ok) completions.push({ node: rec![3]!, scope: rec![4]!, token })
      if (rec![0] === R.compensate && outcome === STEP_OUTCOMES.ok) compensationOk.add(rec![7]!)
    }
    afterInput({ op: 'complete', token, value: outcome, now, ret })
  }
  const fire = (token: number) => {
    const timer = armed.get(token)
    if (timer !== undefined) now = Math.max(now, timer.at)
    const ret = core.fire(run, token, now)
    expect(ret, `fire(${token}) accepted exactly when armed`).toBe(timer !== undefined)
    armed.delete(token)
    afterInput({ op: 'fire', token, now, ret })
  }
  const decide = (token: number, value: number) => {
    const ret = core.decide(run, token, value, now)
    expect(ret, `decide(${token}) accepted exactly when asked`).toBe(decisions.has(token) && runDone === undefined)
    if (ret) {
      expect(answered.has(token)).toBe(false)
      answered.add(token)
      decisions.delete(token)
    }
    afterInput({ op: 'decide', token, value, now, ret })
  }
  const signal = (index: number) => {
    core.signal(run, index, now)
    afterInput({ op: 'signal', index, now })
  }
  const cancel = () => {
    if (runDone === undefined && compensateOrder.length === 0) cancelled = true
    core.cancel(run, now)
    afterInput({ op: 'cancel', now })
  }

  const answerAttempt = (token: number) => {
    const rec = attempts.get(token)!
    const info = stepInfo(rec[3]!)
    const outcome = answers.attempt(rec[3]!, path(rec[4]!), rec[5]!, info.timeout)
    if (outcome === 'timeout') {
      const timer = attemptTimer.get(token)
      expect(timer !== undefined && armed.has(timer), 'a step with a timeout has its attempt timer armed').toBe(true)
      fire(timer!)
    } else complete(token, STEP_OUTCOMES[outcome])
  }
  const answerDecision = (token: number) => {
    const [, , , node, scope, a] = decisions.get(token)! as [number, number, number, number, number, number]
    const kind = NODE_KIND(program, node)
    const at = path(scope)
    if (kind === WORKFLOW_NODES.branch) decide(token, answers.arm(node, at, compiled.program[2 + node * WORKFLOW_LAYOUT.nodeWords + 2]!))
    else if (kind === WORKFLOW_NODES.map) decide(token, answers.count(node, at))
    else {
      const until = (byIndex.get(node)!.shape as { until: boolean }).until
      decide(token, answers.loop(node, at, until ? a + 1 : a))
    }
  }
  const signals = compiled.signals.length

  for (let actions = 0; runDone === undefined; actions++) {
    if (actions > 4000) throw new Error('the run did not end within 4000 host actions')
    now += Math.floor(random() * 3)
    const fireable = [...armed].filter(([, t]) => script.chaos || t.kind === 'sleep' || t.kind === 'retry').map(([id]) => id)
    const work = attempts.size + decisions.size + fireable.length
    const roll = random()
    if (roll < 0.04) {
      // A stale answer: a token that is not with the host, or a timer not armed.
      const token = 1 + Math.floor(random() * (nextToken + 1))
      const which = random()
      if (which < 0.4 && !attempts.has(token)) complete(token, pick([0, 1, 2]))
      else if (which < 0.7 && !decisions.has(token)) decide(token, 0)
      else if (!armed.has(token)) fire(token)
      continue
    }
    if (roll < 0.07 && signals > 0) {
      signal(Math.floor(random() * signals))
      continue
    }
    if (script.chaos && roll < 0.085) {
      cancel()
      continue
    }
    if (work === 0) {
      // Only waits are left: a signal for each index until one moves the run.
      const before = stream.length
      for (let i = 0; i < signals && stream.length === before; i++) signal(i)
      if (stream.length === before) throw new Error('the run is stuck: nothing with the host, no timer, and no signal moves it')
      continue
    }
    const choice = Math.floor(random() * work)
    if (choice < attempts.size) answerAttempt([...attempts.keys()][choice]!)
    else if (choice < attempts.size + decisions.size) answerDecision([...decisions.keys()][choice - attempts.size]!)
    else fire(fireable[choice - attempts.size - decisions.size]!)
  }

  // Once finished, every input is ignored.
  for (let token = 1; token < nextToken; token++) complete(token, STEP_OUTCOMES.ok)
  for (const token of [1, nextToken - 1]) decide(token, 0)
  cancel()
  if (signals > 0) signal(0)
  expect(core.nextDeadline()).toBe(NO_DEADLINE)
  // Released, the run is unknown.
  core.release(run)
  expect(() => core.complete(run, 1, STEP_OUTCOMES.ok, now)).toThrow(expect.objectContaining({ code: 'UNKNOWN_RUN' }))
  expect(() => core.release(run)).toThrow(expect.objectContaining({ code: 'UNKNOWN_RUN' }))

  // The end the rules give, from what the host saw.
  const root = rootDone!
  expect(root, 'the root node ended').toBeDefined()
  const done = runDone!
  const rootOk = root[5] === NODE_OUTCOMES.ok || root[5] === NODE_OUTCOMES.skipped
  // A run that failed or was cancelled compensates the completed steps that declared one.
  const compensable = rootOk ? [] : completions.filter((c) => byIndex.get(c.node)!.compensation >= 0)
  expect(compensateOrder, 'compensations: the completed steps that declared one, newest first, once each').toEqual(
    compensable.map((c) => ({ step: c.node, token: c.token })).reverse(),
  )
  expect(compensated.map((r) => r[3])).toEqual(compensateOrder.map((c) => c.step))
  if (cancelled) expect(root[5], 'a cancelled run cancels its root').toBe(NODE_OUTCOMES.cancelled)
  const status = rootOk
    ? RUN_STATUSES.completed
    : compensable.length > 0
      ? compensable.every((c) => compensationOk.has(c.token))
        ? RUN_STATUSES.compensated
        : RUN_STATUSES['compensation-failed']
      : cancelled
        ? RUN_STATUSES.cancelled
        : RUN_STATUSES.failed
  expect(done[5], 'the run status').toBe(status)
  if (rootOk || cancelled) expect([done[6], done[7]]).toEqual([-1, 0])
  else {
    expect(done[6], 'run-done names the node the failure began at').toBeGreaterThanOrEqual(0)
    expect(done[7], 'run-done names the token the root failed by').toBe(root[6])
  }

  if (!script.chaos) {
    // No cancel and no node timeout: the plain model says how it ends.
    const verdict = evaluate(byIndex.get(0)!, '', answers)
    expect(rootOk, 'the root succeeds exactly when the model says').toBe(verdict.ok)
    const completed = new Set(completions.map((c) => `${c.node}|${path(c.scope)}`))
    for (const key of verdict.must) expect(completed.has(key), `step ${key} must have completed`).toBe(true)
    for (const key of completed) expect(verdict.may.has(key), `step ${key} cannot have completed`).toBe(true)
    for (const c of compensable) {
      const comp = byIndex.get(c.node)!
      const spec = (comp.shape as Extract<Shape, { t: 'step' }>).comp!
      expect(compensationOk.has(c.token)).toBe(stepSucceeds(answers, comp.compensation, path(c.scope), spec.attempts, spec.timeout))
    }
  }
  seen.status[done[5]!] = (seen.status[done[5]!] ?? 0) + 1
  if (compensated.length > 0) seen.compensations++
  if (cancelled) seen.cancels++
  if (stream.some((r) => r[0] === R.retry)) seen.retries++
  if (stream.some((r) => r[0] === R.scope)) seen.scopes++
  if (!script.chaos && stream.some((r) => r[0] === R.cancel)) seen.joinCancels++
  return { compiled, inputs, stream, streamAt, pendingAt, run }
}

/** What the scripts reached, so that a generator change that stops reaching something fails. */
const seen = { status: {} as Record<number, number>, compensations: 0, cancels: 0, retries: 0, scopes: 0, joinCancels: 0 }

/** Replays the first `count` inputs of `trace` into `core`: the same answers and records. */
function replay(core: WorkflowCore, trace: Trace, count: number): number {
  const def = core.define(trace.compiled.program)
  const start = trace.inputs[0] as Extract<Input, { op: 'start' }>
  const run = core.start(def, start.seed, start.now)
  const got: Rec[] = records(core.drain())
  for (let i = 1; i < count; i++) {
    const input = trace.inputs[i]!
    const ret = apply(core, run, input)
    if ('ret' in input) expect(ret, `replayed input ${i} (${input.op}) answers the same`).toBe(input.ret)
    got.push(...records(core.drain()))
  }
  const expected = trace.stream.slice(0, trace.streamAt[count - 1]).map((r) => [r[0], run, ...r.slice(2)])
  expect(got, 'the same inputs give the same records').toEqual(expected)
  return run
}

/** Runs per property: about 5 s and 2 s on each engine alone (the timeouts leave room for a busy machine). */
const CORE_RUNS = 2500
const RUNTIME_RUNS = 1000

let orrery: Orrery | undefined
afterAll(() => orrery?.close())

const scriptArb: fc.Arbitrary<Script> = fc
  .record({
    shape: shapeArb,
    answerSeed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    failRate: fc.constantFrom(0.1, 0.3, 0.55),
    schedule: fc.integer(),
    chaos: fc.boolean(),
    runTimeoutMs: fc.option(fc.integer({ min: 1, max: 400 }), { nil: undefined, freq: 3 }),
  })
  .map((s) => ({ ...s, runTimeoutMs: s.chaos ? s.runTimeoutMs : undefined }))

describe(`workflow core against a model (${ENGINE})`, () => {
  it('ends as the model says, same inputs give the same records, outstanding re-queues what is in flight', async () => {
    orrery ??= await Orrery.create({ engine: ENGINE })
    const backend = orrery.backend
    await fc.assert(
      fc.asyncProperty(scriptArb, fc.double({ min: 0, max: 1, noNaN: true }), async (script, cut) => {
        const live = backend.createWorkflows()
        const again = backend.createWorkflows()
        const prefix = backend.createWorkflows()
        try {
          const trace = drive(live, script)
          replay(again, trace, trace.inputs.length)
          // Cut anywhere, replay, then outstanding: exactly what was with the host at that point.
          const count = 1 + Math.floor(cut * (trace.inputs.length - 1))
          const run = replay(prefix, trace, count)
          prefix.outstanding(run)
          expect(records(prefix.drain()), `outstanding after ${count} inputs`).toEqual(trace.pendingAt[count - 1]!.map((r) => [r[0], run, ...r.slice(2)]))
          // Abandoned there, the run leaves no timer behind.
          prefix.release(run)
          expect(prefix.nextDeadline()).toBe(NO_DEADLINE)
          expect(prefix.due(Number.MAX_VALUE)).toHaveLength(0)
        } finally {
          live.close()
          again.close()
          prefix.close()
        }
      }),
      { numRuns: CORE_RUNS },
    )
    // The scripts reach every end and the parts that make them interesting (about half of what
    // they reach, per 1000 runs).
    const per1000 = (n: number) => (n * CORE_RUNS) / 1000
    for (const status of Object.values(RUN_STATUSES).slice(1))
      expect(seen.status[status] ?? 0, `runs ending with status ${status}`).toBeGreaterThan(per1000(15))
    expect(seen.compensations).toBeGreaterThan(per1000(45))
    expect(seen.cancels).toBeGreaterThan(per1000(15))
    expect(seen.retries).toBeGreaterThan(per1000(90))
    expect(seen.scopes).toBeGreaterThan(per1000(80))
    expect(seen.joinCancels).toBeGreaterThan(per1000(40))
  }, 60_000)
})

/** Where a runtime script stops answering: call `at` of the step function `fn`. */
interface Hang {
  fn: 'work' | 'undo'
  at: number
}

/** What the step functions of one runtime script saw, across a close and a resume. */
interface Effects {
  /** Calls of `work` and of `undo` so far. */
  calls: { work: number; undo: number }
  /** Idempotency keys of attempts that returned, in order. */
  returned: string[]
  /** The same, of the steps that declared a compensation. */
  compensable: string[]
  /** The outputs compensations were given (the compensated steps' keys), in order. */
  undone: string[]
}

/**
 * Registers `work` and `undo` on `wf`: `work` answers by its key and attempt; call number
 * `hang.at` of `hang.fn` never returns (until aborted) and resolves `reached`.
 */
function register(wf: Workflows, effects: Effects, seed: number, failRate: number, hang: Hang | undefined, reached: (where: 'work' | 'undo') => void) {
  const hangs = (fn: 'work' | 'undo') => ++effects.calls[fn] === hang?.at && hang.fn === fn
  const never = (ctx: StepContext) => new Promise<never>((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)))
  wf.register('work', (input: { compensable: boolean }, ctx: StepContext) => {
    if (hangs('work')) {
      reached('work')
      return never(ctx)
    }
    const outcome = runtimeOutcome(seed, failRate, ctx.idempotencyKey, ctx.attempt)
    if (outcome === 'transient') throw new Error(`transient failure of ${ctx.idempotencyKey}`)
    if (outcome === 'permanent') throw new PermanentError(`permanent failure of ${ctx.idempotencyKey}`)
    effects.returned.push(ctx.idempotencyKey)
    if (input.compensable) effects.compensable.push(ctx.idempotencyKey)
    return ctx.idempotencyKey
  })
  wf.register('undo', (compensated: unknown, ctx: StepContext) => {
    if (hangs('undo')) {
      reached('undo')
      return never(ctx)
    }
    effects.undone.push(String(compensated))
  })
}

describe(`workflow runtime against a model (${ENGINE})`, () => {
  it('ends with the status and output the model gives, also when closed mid-run and resumed from its history', async () => {
    orrery ??= await Orrery.create({ engine: ENGINE })
    const o = orrery
    let resumed = 0
    let cancels = 0
    let sagaResumes = 0
    let failed = 0
    await fc.assert(
      fc.asyncProperty(
        rshapeArb,
        fc.record({ pick: fc.integer({ min: 0, max: 2 }), items: fc.array(fc.constant(0), { maxLength: 3 }) }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.constantFrom(0.1, 0.3),
        fc.oneof(
          { arbitrary: fc.record({ fn: fc.constant('work' as const), at: fc.integer({ min: 1, max: 12 }) }), weight: 3 },
          { arbitrary: fc.record({ fn: fc.constant('undo' as const), at: fc.integer({ min: 1, max: 2 }) }), weight: 2 },
        ),
        fc.boolean(),
        async (shape, input, seed, failRate, hang, cancelAtHang) => {
          const definition = buildRuntimeDefinition('model', shape)
          const verdict = evaluateRuntime(shape, 'r', input, seed, failRate)
          const store = o.openStore()
          const effects: Effects = { calls: { work: 0, undo: 0 }, returned: [], compensable: [], undone: [] }
          let reached!: (where: 'work' | 'undo') => void
          const hung = new Promise<'work' | 'undo'>((resolve) => {
            reached = resolve
          })
          let wf = await o.workflows({ store })
          try {
            register(wf, effects, seed, failRate, hang, reached)
            wf.define(definition)
            let run = await wf.start('model', input, { id: 'r' })
            for (let i = waitsIn(shape, input); i > 0; i--) run.signal('go', SIGNAL_PAYLOAD)
            const first = await Promise.race([
              run.result().then(
                () => 'settled' as const,
                () => 'settled' as const,
              ),
              hung,
            ])
            let cancelled = false
            // A compensation that hangs is closed, never cancelled: a run takes no cancel while
            // it compensates, so it would wait on that attempt for ever.
            if (first === 'work' && cancelAtHang) {
              cancels++
              cancelled = true
              run.cancel()
            } else if (first !== 'settled') {
              if (first === 'undo') sagaResumes++
              // Closed with an attempt in flight; opened again on the same store, the run is
              // rebuilt from its history and goes on.
              resumed++
              await new Promise((resolve) => setTimeout(resolve, 0))
              wf.close()
              wf = await o.workflows({ store })
              register(wf, effects, seed, failRate, undefined, () => {})
              wf.define(definition)
              run = wf.get('r')!
              expect(run, 'the run is found again after the reopen').toBeDefined()
            }
            let output: unknown
            let error: unknown
            try {
              output = await run.result()
            } catch (e) {
              error = e
            }
            const status = run.status()
            const code = (error as { code?: string } | undefined)?.code
            // Compensations: once each, newest completion first, only of steps that completed
            // (a step whose result came after its node was cancelled is not compensated).
            const undone = new Set(effects.undone)
            expect(undone.size, 'each compensation once').toBe(effects.undone.length)
            expect(effects.undone).toEqual(effects.compensable.filter((k) => undone.has(k)).reverse())
            if (cancelled && code === 'RUN_CANCELLED') {
              // Cancelled mid-run (unless the run had failed by then: then as the model says).
              expect(status).toBe(undone.size > 0 ? 'compensated' : 'cancelled')
            } else if (verdict.ok) {
              expect(error, 'the run succeeds as the model says').toBeUndefined()
              expect(status).toBe('completed')
              if (verdict.exact) expect(output).toEqual(verdict.output)
              expect(effects.undone).toEqual([])
            } else {
              failed++
              expect(code, 'the run fails as the model says').toBe('STEP_FAILED')
              for (const key of verdict.must) expect(undone.has(key), `${key} must have been compensated`).toBe(true)
              for (const key of undone) expect(verdict.may.has(key), `${key} cannot have been compensated`).toBe(true)
              expect(status).toBe(undone.size > 0 ? 'compensated' : 'failed')
            }
            // Each step returned once per idempotency key, across the close and the resume.
            expect(new Set(effects.returned).size, 'no step completed twice').toBe(effects.returned.length)
            const history = run.history()
            expect(history.map((e) => e.seq)).toEqual(history.map((_, i) => i + 1))
            expect(history.at(-1)).toMatchObject({ type: 'run-finished', status })
            // Opened once more on the store, the finished run reads the same.
            wf.close()
            wf = await o.workflows({ store })
            const stored = wf.get('r')!
            expect(stored.status()).toBe(status)
            // Read back (msgpack), `undefined` inside the output stays undefined: see the last test of this file.
            if (error === undefined) expect(await stored.result()).toEqual(output)
            else
              expect(
                (await stored.result().then(
                  () => undefined,
                  (e: unknown) => e,
                )) as { code?: string },
              ).toMatchObject({ code })
          } finally {
            wf.close()
            store.close()
          }
        },
      ),
      { numRuns: RUNTIME_RUNS },
    )
    // Floors at about a third of what the scripts reach (per 1000: ~65 resumed, ~55 cancelled).
    // A resume mid-saga is rarer (~15 per 1000, 4 seen once under Node 24): its floor only
    // checks the path is reached at all, so a random run does not fail for being unlucky.
    expect(resumed).toBeGreaterThan(RUNTIME_RUNS / 40)
    expect(cancels).toBeGreaterThan(RUNTIME_RUNS / 40)
    expect(sagaResumes).toBeGreaterThan(0)
    expect(failed).toBeGreaterThan(RUNTIME_RUNS / 20)
  }, 60_000)
})

describe(`workflow runtime divergences found by the model (${ENGINE})`, () => {
  // Counterexample of the runtime property: parallel any of two steps, the first failing for
  // good, the second ok. Live, the run's output is [undefined, 'ok'] (a branch that did not
  // succeed: undefined, as the design says); read back from its store (workflows opened again)
  // it was [null, 'ok'] while the history was JSON. The history is msgpack now, which keeps
  // undefined: the same run gives one result.
  it('a stored run reads undefined inside its output back as undefined', async () => {
    orrery ??= await Orrery.create({ engine: ENGINE })
    const store = orrery.openStore()
    let wf = await orrery.workflows({ store })
    try {
      wf.register('fail', () => {
        throw new PermanentError('no')
      })
      wf.register('ok', () => 'ok')
      wf.define(workflow('any', parallel([step('a', { fn: 'fail' }), step('b', { fn: 'ok' })], { join: 'any' })))
      const live = await (await wf.start('any', null, { id: 'r' })).result()
      expect(live).toEqual([undefined, 'ok'])
      wf.close()
      wf = await orrery.workflows({ store })
      expect(await wf.get('r')!.result()).toEqual(live)
    } finally {
      wf.close()
      store.close()
    }
  })
})
