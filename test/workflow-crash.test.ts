/**
 * Crash and resume (native engine, durable store): a child process (test/fixtures/workflow-crash.mjs)
 * runs a workflow with a sequence, a parallel, a retried step, a child workflow and compensated
 * steps, and is SIGKILLed at every step boundary (each attempt of each step, compensations too),
 * at three points each: before the step's start is recorded (a), after its side effect but before
 * its completion is recorded (b), after its completion is recorded (c); and twice in a row at (b).
 * Another process on the same store resumes the run. Then the run has ended as a run without a
 * crash did, each step's completions are recorded once, each effect happened once per idempotency
 * key and process (in a later process again, with the same result, only for a step whose effect
 * happened and whose completion was not on disk: at least once is the contract), and compensations
 * ran newest first, once each.
 */
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { Orrery, type WorkflowEvent } from '../ts/node.js'
import { ENGINE } from './engine.js'

type Variant = 'ok' | 'fail'
type Point = 'a' | 'b' | 'c'

const fixture = fileURLToPath(new URL('./fixtures/workflow-crash.mjs', import.meta.url))
const RUN = 'order-1'
const key = (path: string) => `${RUN}/${path}`

/** A step boundary: an attempt of a step, by idempotency key; `effect` whether the attempt makes one. */
interface Boundary {
  key: string
  attempt: number
  effect: boolean
}
const at = (path: string, attempt = 1, effect = true): Boundary => ({ key: key(path), attempt, effect })
/**
 * Every step boundary in start order: email's first attempt fails (transient, before any effect)
 * and a retry timer starts its second; the child step ship runs the child run `order-1/ship`,
 * whose steps are pack and label, and makes no effect of its own.
 */
const STEPS = [at('reserve'), at('charge'), at('email', 1, false), at('email', 2), at('ship', 1, false), at('ship/pack'), at('ship/label'), at('confirm')]
/** The compensated steps, in the order they complete (charge and email run in parallel; only charge has one). */
const COMPENSATED = ['reserve', 'charge', 'ship'].map(key)
const COMPENSATIONS = [...COMPENSATED].reverse().map((k) => `${k}.compensate`)
const BOUNDARIES: Record<Variant, Boundary[]> = { ok: STEPS, fail: [...STEPS, ...COMPENSATIONS.map((k) => ({ key: k, attempt: 1, effect: true }))] }
const POINTS: Point[] = ['a', 'b', 'c']
/** Each step's recorded outcomes without a crash. */
const expectedOutcomes = (variant: Variant, k: string) =>
  k === key('email') ? ['transient', 'ok'] : variant === 'fail' && k === key('confirm') ? ['permanent'] : ['ok']

const OUTCOMES: Record<Variant, unknown> = {
  ok: { ok: true, output: { confirm: { confirmed: 'R-H-A1-30/T-B-A1' }, notify: [{ receipt: 'R-H-A1-30' }, 'mailed A1'] } },
  fail: { ok: false, code: 'STEP_FAILED', status: 'compensated', step: 'confirm' },
}

const root = mkdtempSync(join(tmpdir(), 'orrery-wf-crash-'))
afterAll(() => rmSync(root, { recursive: true, force: true }))
let dirs = 0
const fresh = () => mkdtempSync(join(root, `case-${dirs++}-`))

// Two processes at a time on this 2-core machine: each spends most of its life on fsync.
let free = 2
const queue: (() => void)[] = []
async function slot<T>(work: () => Promise<T>): Promise<T> {
  if (free > 0) free--
  else await new Promise<void>((resolve) => queue.push(resolve))
  try {
    return await work()
  } finally {
    const next = queue.shift()
    if (next) next()
    else free++
  }
}

interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  out: string
  err: string
}

function runFixture(dir: string, variant: Variant, kill?: [Boundary, Point]): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fixture, dir, variant, ...(kill ? [kill[0].key, String(kill[0].attempt), kill[1]] : [])], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString()
    })
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString()
    })
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, out, err }))
  })
}

/** What the process printed about the run's end, without the message (its wording is not under test). */
function outcomeOf(exit: Exit): unknown {
  expect(exit.code, exit.err).toBe(0)
  const { message: _, ...outcome } = JSON.parse(exit.out.trim()) as Record<string, unknown>
  return outcome
}

interface Effect {
  key: string
  result: unknown
}

/** The effects log, split at the kill notes: what each process did, in order. */
function effectsOf(dir: string): Effect[][] {
  const path = join(dir, 'effects.log')
  const lines = existsSync(path) ? readFileSync(path, 'utf8').trim().split('\n').filter(Boolean) : []
  const segments: Effect[][] = [[]]
  for (const line of lines) {
    const record = JSON.parse(line) as Effect & { kill?: string }
    if (record.kill !== undefined) segments.push([])
    else segments[segments.length - 1]!.push({ key: record.key, result: record.result })
  }
  return segments
}

interface Recorded {
  /** Run metas by id. */
  metas: Map<string, { status: string }>
  /** Events by run id, in order. */
  events: Map<string, WorkflowEvent[]>
}

/** The workflow history on disk (opened and closed again, as a restart would), read through the workflows' API. */
async function historyOf(dir: string): Promise<Recorded> {
  const store = await Orrery.openStore({ path: join(dir, 'store.redb') })
  const orrery = await Orrery.create()
  const wf = await orrery.workflows({ store, resume: false })
  try {
    const metas = new Map<string, { status: string }>()
    const events = new Map<string, WorkflowEvent[]>()
    for (const run of wf.list()) {
      metas.set(run.id, { status: run.status })
      events.set(run.id, wf.get(run.id)!.history())
    }
    return { metas, events }
  } finally {
    wf.close()
    orrery.close()
    store.close()
  }
}

/** Every event of every run with its run id. */
function* allEvents(h: Recorded): Generator<[string, WorkflowEvent]> {
  for (const [runId, events] of h.events) for (const event of events) yield [runId, event]
}

/** Each step's recorded completions (their outcomes, in order), by idempotency key. */
function completions(h: Recorded): Map<string, string[]> {
  const done = new Map<string, string[]>()
  for (const [runId, e] of allEvents(h)) {
    if (e.type !== 'step-completed') continue
    const k = `${runId}/${e.step}`
    done.set(k, [...(done.get(k) ?? []), e.outcome])
  }
  return done
}

/** The attempts whose start is recorded, as `<key>#<attempt>`. */
function starts(h: Recorded): Set<string> {
  const started = new Set<string>()
  for (const [, e] of allEvents(h)) if (e.type === 'step-started') started.add(`${e.key}#${e.attempt}`)
  return started
}

/** The compensations recorded as run, by key (`<run>/<step>.compensate`). */
function compensatedIn(h: Recorded): Set<string> {
  const done = new Set<string>()
  for (const [runId, e] of allEvents(h)) if (e.type === 'compensated') done.add(`${runId}/${e.step}.compensate`)
  return done
}

/** Whether a step's last attempt is recorded as done (ok, or failed for good). */
const finished = (done: Map<string, string[]>, k: string) => (done.get(k) ?? []).some((o) => o !== 'transient')

const count = (effects: Effect[], k: string) => effects.filter((e) => e.key === k).length

interface Baseline {
  outcome: unknown
  results: Map<string, unknown>
  completions: Map<string, string[]>
}
const baselines = new Map<Variant, Baseline>()

describe.runIf(ENGINE === 'native')('workflow crash and resume', () => {
  beforeAll(async () => {
    await Promise.all(
      (['ok', 'fail'] as const).map((variant) =>
        slot(async () => {
          const dir = fresh()
          const outcome = outcomeOf(await runFixture(dir, variant))
          const [effects = []] = effectsOf(dir)
          const h = await historyOf(dir)
          baselines.set(variant, { outcome, results: new Map(effects.map((e) => [e.key, e.result])), completions: completions(h) })
        }),
      ),
    )
  }, 60_000)

  it.for(['ok', 'fail'] as const)('without a crash, the %s run ends as expected, each step started, completed and in effect once', (variant) => {
    const baseline = baselines.get(variant)!
    expect(baseline.outcome).toEqual(OUTCOMES[variant])
    const keys = [...new Set(BOUNDARIES[variant].map((b) => b.key))].sort()
    expect([...baseline.results.keys()].sort()).toEqual(keys.filter((k) => k !== key('ship')))
    expect([...baseline.completions.keys()].sort()).toEqual(keys)
    for (const [k, outcomes] of baseline.completions) expect(outcomes, k).toEqual(expectedOutcomes(variant, k))
  })

  type Kill = [Boundary, Point]
  interface Case {
    variant: Variant
    /** The boundary's place in start order, from 1. */
    n: number
    kills: Kill[]
  }
  const crashes = (variant: Variant, n: number, ...kills: Kill[]): Case => ({ variant, n, kills })
  const cases = (['ok', 'fail'] as const).flatMap((variant) =>
    BOUNDARIES[variant].flatMap((b, i) => [
      // One crash at each point.
      ...POINTS.map((point) => crashes(variant, i + 1, [b, point])),
      // Twice: after the effect, then after the effect again once the step runs again (the child
      // step runs no function of its own: its child run is over after the first kill).
      ...(b.key === key('ship') ? [] : [crashes(variant, i + 1, [b, 'b'], [b, 'b'])]),
    ]),
  )
  const named = cases.map((c) => ({ ...c, at: c.kills.map(([b, p]) => `${b.key}#${b.attempt} ${p}`).join(', then ') }))

  it.concurrent.for(named)('$variant run killed at boundary $n ($at) resumes to the same end', { timeout: 60_000 }, async ({ variant, kills }) => {
    const baseline = baselines.get(variant)!
    const dir = fresh()
    /** Each step's completions on disk after each kill. */
    const atKills: Map<string, string[]>[] = []
    /** The compensations recorded on disk after each kill, by key. */
    const compensatedAtKills: Set<string>[] = []
    for (const [i, [boundary, point]] of kills.entries()) {
      const crash = await slot(() => runFixture(dir, variant, [boundary, point]))
      expect(crash.signal, crash.err).toBe('SIGKILL')
      const segment = effectsOf(dir)
      expect(segment).toHaveLength(i + 2)
      const effects = segment[i]!

      // The kill hit the boundary it was aimed at.
      const killed = await historyOf(dir)
      const completedAtKill = completions(killed)
      atKills.push(completedAtKill)
      compensatedAtKills.push(compensatedIn(killed))
      const { key: k, attempt } = boundary
      const recorded = completedAtKill.get(k) ?? []
      if (point === 'a') {
        if (i === 0) expect(starts(killed).has(`${k}#${attempt}`)).toBe(false)
        expect(count(effects, k)).toBe(0)
      } else if (point === 'b') {
        expect(recorded).toHaveLength(attempt - 1)
        expect(count(effects, k)).toBe(boundary.effect ? 1 : 0)
        // The child step's effect is the child run: ended and on disk.
        if (k === key('ship')) expect(killed.metas.get(k)?.status).toBe('completed')
      } else {
        expect(recorded).toHaveLength(attempt)
      }
    }

    const resumed = await slot(() => runFixture(dir, variant))
    expect(outcomeOf(resumed)).toEqual(baseline.outcome)
    const segments = effectsOf(dir)
    const all = segments.flat()
    const h = await historyOf(dir)

    // Every run ended, and each step's completion is recorded once, with the outcome it had without the crash.
    for (const [id, meta] of h.metas) expect(meta.status, id).not.toBe('running')
    expect(completions(h)).toEqual(baseline.completions)

    // Each effect happened once per key and process, with the result it had without the crash. It
    // happened again in a later process only when it had happened and the step's completion was
    // not on disk at the kill, and then it must have: at least once, never lost.
    for (const k of baseline.results.keys()) {
      const seen = segments.map((segment) => count(segment, k))
      expect(Math.max(...seen), `effects of ${k} in one process: ${seen}`).toBe(1)
      for (let s = 1; s < segments.length; s++) {
        const earlier = seen.slice(0, s).some((n) => n > 0)
        if (earlier && seen[s]! > 0) expect(finished(atKills[s - 1]!, k), `${k} again after kill ${s}`).toBe(false)
      }
      const last = segments.length - 1
      if (seen.slice(0, last).some((n) => n > 0) && !finished(atKills[last - 1]!, k)) expect(seen[last], `${k} after the last kill`).toBe(1)
    }
    for (const e of all) expect(e.result, e.key).toEqual(baseline.results.get(e.key))

    if (variant === 'fail') {
      // Compensations newest first, each once: in the parent's history, and in effect (a repeat
      // is the one in flight at a crash: the first compensation of the next process).
      const parent = h.events.get(RUN)!
      const completedOrder = parent
        .filter((e) => e.type === 'step-completed' && e.outcome === 'ok' && COMPENSATED.includes(key(e.step)))
        .map((e) => (e as { step: string }).step)
      expect(completedOrder.map(key)).toEqual(COMPENSATED)
      const compensated = parent.filter((e) => e.type === 'compensated')
      expect(compensated.map((e) => (e as { step: string; ok: boolean }).step)).toEqual([...completedOrder].reverse())
      expect(compensated.every((e) => (e as { ok: boolean }).ok)).toBe(true)
      // In effect: every compensation, newest first within each process. A later process repeats
      // one only when its record was not on disk at the kill (a durable store acknowledges writes
      // after the turn that makes them, so the ones just before a kill may not be), and then it
      // must: at least once, never lost.
      const undoneIn = segments.map((segment) => segment.map((e) => e.key).filter((k) => k.endsWith('.compensate')))
      expect([...new Set(undoneIn.flat())]).toEqual(COMPENSATIONS)
      for (const undone of undoneIn) expect(undone, 'compensation order').toEqual(COMPENSATIONS.filter((k) => undone.includes(k)))
      for (let s = 1; s < undoneIn.length; s++) {
        const onDisk = compensatedAtKills[s - 1]!
        for (const k of COMPENSATIONS) {
          const earlier = undoneIn.slice(0, s).some((done) => done.includes(k))
          if (!earlier) continue
          const again = undoneIn[s]!.includes(k)
          if (onDisk.has(k)) expect(again, `${k} again in process ${s}, though recorded at the kill`).toBe(false)
          else if (s === undoneIn.length - 1) expect(again, `${k} lost after the last kill`).toBe(true)
        }
      }
    }
  })
})
