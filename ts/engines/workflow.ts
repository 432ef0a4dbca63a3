/**
 * The one WorkflowCore over either engine. The wasm engine exposes the workflow core as a class
 * whose methods are the WorkflowCore calls themselves (a wasm_bindgen method costs little); the
 * native engine's hot calls go through a call block (see native-workflow.ts). This adds what
 * both share: `CLOSED` after `close()`, failures read through the
 * engine's `EngineFailures` (so a code is the same on both), and, before anything crosses, the
 * refusal of an argument of the wrong type (wasm-bindgen's glue would coerce a string or copy a
 * plain array where napi refuses it) or of a program longer than any valid one.
 */
import { OrreryError } from '../errors.js'
import type { WorkflowCore } from './backend.js'
import type { EngineFailures } from './failures.js'
import { NO_DEADLINE, WORKFLOW_LAYOUT, WORKFLOW_LIMITS } from './manifest.js'

/**
 * An engine's workflow calls, untranslated (`start` takes its deadline always). `close` releases
 * the engine's core (called once).
 */
export type RawWorkflows = Omit<WorkflowCore, 'start' | 'drain' | 'drainView'> & {
  start(def: number, seed: number, now: number, deadline: number): number
  /** The queued records: a copy, or with `view` what may be a view of the engine's buffer. */
  drain(view: boolean): Float64Array
}

/** The calls the wasm engine's class answers as they are (it adds its own `drain` and `close`). */
export type DirectCalls = Omit<RawWorkflows, 'drain' | 'close'>

/** `w`'s direct calls as plain functions bound to it (class methods need their receiver). */
export function directCalls(w: DirectCalls): DirectCalls {
  return {
    define: (program) => w.define(program),
    start: (def, seed, now, deadline) => w.start(def, seed, now, deadline),
    complete: (run, token, outcome, now) => w.complete(run, token, outcome, now),
    decide: (run, token, value, now) => w.decide(run, token, value, now),
    signal: (run, index, now) => w.signal(run, index, now),
    cancel: (run, now) => w.cancel(run, now),
    fire: (run, timer, now) => w.fire(run, timer, now),
    due: (now) => w.due(now),
    nextDeadline: () => w.nextDeadline(),
    outstanding: (run) => w.outstanding(run),
    release: (run) => w.release(run),
  }
}

/**
 * The longest a valid program can be: every node, and each listed once as a child. Longer is
 * refused before it crosses, so a huge array is never copied into the wasm instance's memory
 * (an allocation past 4 GiB would trap it).
 */
const MAX_PROGRAM_WORDS = 2 + WORKFLOW_LIMITS.maxNodes * (WORKFLOW_LAYOUT.nodeWords + 1)

/** What a drain with nothing queued returns. */
export const EMPTY = new Float64Array(0)

/** Numbers an engine's drain buffer holds to start with: 128 records. */
const OUT_WORDS = 1024

/** A new drain buffer of the starting size. */
export const drainBuffer = (): Float64Array => new Float64Array(OUT_WORDS)

/**
 * The drain buffer for a drain of `n` numbers: `out` while it holds them and is not much larger;
 * one grown for a burst (a forEach of a million items) is given back once drains are small again,
 * or it would hold the largest drain ever seen.
 */
export function fitted(out: Float64Array, n: number): Float64Array {
  return n > out.length || (out.length > OUT_WORDS && n * 8 <= out.length) ? new Float64Array(Math.max(OUT_WORDS, n * 2)) : out
}

const closedError = () => new OrreryError('CLOSED', 'the workflow core is closed')

/**
 * Every argument is a number: napi refuses anything else where wasm-bindgen's glue would coerce
 * it (`'1'` becomes run 1), so this keeps the engines alike. The core checks the values.
 */
function notNumbers(): OrreryError {
  return new OrreryError('INVALID_ARGUMENT', 'workflow core calls take numbers only')
}

class WorkflowAdapter implements WorkflowCore {
  private closed = false
  /**
   * Whether a call since the last drain may have queued records (only start, complete, decide,
   * signal, cancel, fire and outstanding do): a drain after none crosses nothing. A run's pump
   * ends with such a drain after every input.
   */
  private queued = false

  constructor(
    private readonly raw: RawWorkflows,
    private readonly failures: EngineFailures,
  ) {}

  private usable(): void {
    this.failures.usable()
    if (this.closed) throw closedError()
  }

  // Every call inline, without a closure: a step costs a handful of them.
  define(program: Float64Array): number {
    this.usable()
    if (!(program instanceof Float64Array)) throw new OrreryError('INVALID_ARGUMENT', 'a workflow program must be a Float64Array')
    if (program.length > MAX_PROGRAM_WORDS) {
      throw new OrreryError('DEFINITION_INVALID', `invalid workflow program: ${program.length} words is more than any program holds (${MAX_PROGRAM_WORDS})`)
    }
    try {
      return this.raw.define(program)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  start(def: number, seed: number, now: number, deadline: number = NO_DEADLINE): number {
    this.usable()
    if (typeof def !== 'number' || typeof seed !== 'number' || typeof now !== 'number' || typeof deadline !== 'number') throw notNumbers()
    this.queued = true
    try {
      return this.raw.start(def, seed, now, deadline)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  complete(run: number, token: number, outcome: number, now: number): boolean {
    this.usable()
    if (typeof run !== 'number' || typeof token !== 'number' || typeof outcome !== 'number' || typeof now !== 'number') throw notNumbers()
    this.queued = true
    try {
      return this.raw.complete(run, token, outcome, now)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  decide(run: number, token: number, value: number, now: number): boolean {
    this.usable()
    if (typeof run !== 'number' || typeof token !== 'number' || typeof value !== 'number' || typeof now !== 'number') throw notNumbers()
    this.queued = true
    try {
      return this.raw.decide(run, token, value, now)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  signal(run: number, index: number, now: number): void {
    this.usable()
    if (typeof run !== 'number' || typeof index !== 'number' || typeof now !== 'number') throw notNumbers()
    this.queued = true
    try {
      this.raw.signal(run, index, now)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  cancel(run: number, now: number): void {
    this.usable()
    if (typeof run !== 'number' || typeof now !== 'number') throw notNumbers()
    this.queued = true
    try {
      this.raw.cancel(run, now)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  fire(run: number, timer: number, now: number): boolean {
    this.usable()
    if (typeof run !== 'number' || typeof timer !== 'number' || typeof now !== 'number') throw notNumbers()
    this.queued = true
    try {
      return this.raw.fire(run, timer, now)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  due(now: number): Float64Array {
    this.usable()
    if (typeof now !== 'number') throw notNumbers()
    try {
      return this.raw.due(now)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  nextDeadline(): number {
    this.usable()
    try {
      return this.raw.nextDeadline()
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  outstanding(run: number): void {
    this.usable()
    if (typeof run !== 'number') throw notNumbers()
    this.queued = true
    try {
      this.raw.outstanding(run)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  drain(): Float64Array {
    return this.drainWith(false)
  }

  drainView(): Float64Array {
    return this.drainWith(true)
  }

  private drainWith(view: boolean): Float64Array {
    this.usable()
    if (!this.queued) return EMPTY
    this.queued = false
    try {
      return this.raw.drain(view)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  /** Lets go of a run: nothing is left to release on a lost engine. */
  release(run: number): void {
    if (this.failures.poisoned()) return
    this.usable()
    if (typeof run !== 'number') throw notNumbers()
    try {
      this.raw.release(run)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.raw.close()
  }
}

/** A WorkflowCore over the raw core `open` makes (its failure, too, is translated). */
export function adaptWorkflows(open: () => RawWorkflows, failures: EngineFailures): WorkflowCore {
  failures.usable()
  let raw: RawWorkflows
  try {
    raw = open()
  } catch (e) {
    throw failures.fail(e)
  }
  return new WorkflowAdapter(raw, failures)
}
