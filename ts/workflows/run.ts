/**
 * One run: it feeds the core its inputs (each recorded first, with its `now`), acts on the
 * records the core drains for it (steps to execute, decisions to take, attempts to abort,
 * scopes, nodes done, the run's end), keeps its data, and settles its handle.
 */
import { Subject } from 'rxjs'

import type { WorkflowCore } from '../engines/backend.js'
import { FAILURE_REASONS, NO_DEADLINE, NODE_OUTCOMES, RUN_STATUSES, STEP_OUTCOMES, WORKFLOW_NODES, WORKFLOW_RECORDS } from '../engines/manifest.js'
import { OrreryError } from '../errors.js'
import { Stream } from '../stream.js'
import type { CompiledWorkflow } from './compile.js'
import { NONE, put, RunData } from './data.js'
import { AttemptContext, type Executor, type Outcome } from './executor.js'
import {
  decodeEvent,
  EVENT,
  type EventTuple,
  FINAL_STATUSES,
  macrotask,
  restoreError,
  storeError,
  type FailureReason,
  type History,
  type WorkflowEvent,
} from './history.js'
import type { Tracing } from '../observe/tracing.js'
import { endRecord, generationKey, purgeEarlier, putRecord, withoutQueue, type RunRecord, type RunStatus } from './records.js'
import { buildInput } from './refs.js'

/** @internal What a run needs of its runtime (the Workflows class). */
export interface RunHost {
  readonly core: WorkflowCore
  readonly history: History
  readonly executor: Executor
  readonly mappings: ReadonlyMap<string, (arg: unknown) => unknown>
  now(): number
  /** Drains the core and hands each record to its run (re-entrant calls return at once). */
  pump(): void
  /** The run has its core handle: records for it come to it from now on. */
  bind(run: Run): void
  /** Work no caller waits for failed (a step's outcome could not be recorded): reported. */
  failed(what: string, error: unknown): void
  /** The run ended: its core run may be released. */
  ended(run: Run): void
  /** The run left core run `handle` behind (it continued as new): forget it. */
  release(handle: number): void
  /** The run recorded events for its subscribers: {@link Run.deliver} them once the core is drained. */
  deliver(run: Run): void
  /** The Orrery's tracing, if it was asked for: runs and steps are spans. */
  readonly tracing: Tracing | undefined
  /** Set while metrics time steps: a step attempt ended (`outcome` ok, transient or permanent). */
  stepTimed: ((workflow: string, step: string, outcome: string, seconds: number) => void) | undefined
  /**
   * Where another process may drive the run (`shared`): resolves once what the run recorded so
   * far is on the broker, so an attempt runs only after its start was written by its owner.
   */
  fence: ((runId: string) => Promise<void>) | undefined
  /**
   * Where another process may have sent a signal (`shared`): the run recorded the signal of
   * request `request` (its id in the event); the request goes once that record is written.
   */
  taken: ((runId: string, request: string) => void) | undefined
}

/** A write's acknowledgement: its version, or a Promise of it on a durable store. */
type Ack = number | Promise<number>

const STATUS_NAMES: Record<number, RunStatus> = Object.fromEntries(Object.entries(RUN_STATUSES).map(([name, code]) => [code, name as RunStatus]))
const NODE_OUTCOME_NAMES = ['ok', 'failed', 'cancelled', 'skipped'] as const
const REASON_NAMES: Record<number, FailureReason> = Object.fromEntries(Object.entries(FAILURE_REASONS).map(([name, code]) => [code, name as FailureReason]))

/** Most signals a run holds that no wait has taken yet (`CAPACITY_EXCEEDED` past it). */
export const MAX_UNCLAIMED_SIGNALS = 1_000

interface Attempt {
  readonly node: number
  readonly scope: number
  readonly attempt: number
  readonly compensation: boolean
  /** Made when the attempt is executed (not while replaying). */
  context: AttemptContext | undefined
  /** When it was executed (`performance.now()`, for its duration: finer than the host clock's ms). */
  readonly started: number
}

/** @internal A run in progress (see {@link WorkflowRun} for its public handle). */
export class Run {
  data: RunData
  /** The core's handle of this run (-1 until started). */
  handle = -1
  status: RunStatus
  /** Whether it began here (a queued run begins when a place frees). */
  began = false
  private seq: number
  /** Signals sent while it was queued, given to it when it begins. */
  private held: { name: string; payload: unknown; request: string | undefined; sent: boolean; given: (ack: Ack) => void }[] | undefined
  private replaying = false
  private attempts: Map<number, Attempt> = NONE
  /** Errors of failed attempts and decisions, by token: the run's error names one. */
  private errors: Map<number, unknown> = NONE
  private failedCompensations: { step: string; error: unknown }[] | undefined
  /** When the run times out (host time; NO_DEADLINE for never): set when it begins, replayed from its start event. */
  private deadline: number | undefined
  /** The first node whose any/quorum join became out of reach (the core names it in its reason). */
  private unreachable: number | undefined
  /** Events recorded since the last delivery to subscribers, and whether they then complete. */
  private undelivered: WorkflowEvent[] | undefined
  private completing = false
  private cancelled = false
  /** Made when someone follows the run's events. */
  private subject: Subject<WorkflowEvent> | undefined
  private stream: Stream<WorkflowEvent> | undefined
  private outcome: { ok: true; value: unknown } | { ok: false; error: Error } | undefined
  private waiters: { resolve: (v: unknown) => void; reject: (e: unknown) => void }[] | undefined

  constructor(
    private readonly host: RunHost,
    public meta: RunRecord,
    readonly compiled: CompiledWorkflow,
    private readonly def: number,
  ) {
    this.data = new RunData(compiled, meta.input)
    this.status = meta.status === 'queued' ? 'queued' : 'running'
    this.seq = (meta.from ?? 1) - 1
  }

  /** 1 for the first generation; each continueAsNew adds one. */
  get generation(): number {
    return this.meta.generation ?? 1
  }

  /** The run's events from now on; complete when it ends (at once for an ended run). */
  get events(): Stream<WorkflowEvent> {
    if (this.stream) return this.stream
    const ended = FINAL_STATUSES.has(this.status as never) || this.abandoned !== undefined
    if (!ended) this.subject ??= new Subject<WorkflowEvent>()
    const subject = this.subject
    this.stream = new Stream<WorkflowEvent>({
      start(sink) {
        // A Subject that completed completes a late subscriber at once.
        if (!subject) {
          sink.complete()
          return { stop: () => {}, setPaused: () => {} }
        }
        const subscription = subject.subscribe(sink)
        return { stop: () => subscription.unsubscribe(), setPaused: () => {} }
      },
      unhandled: (error) => console.error('Orrery: a run.events subscriber threw:', error),
    })
    return this.stream
  }

  get id(): string {
    return this.meta.id
  }

  /** Records an event, given as its tuple with seq 0 (see history.ts): its seq is set here. */
  private record(event: EventTuple): void {
    if (this.replaying) return
    event[1] = ++this.seq
    this.host.history.append(this.id, event)
    if (this.host.tracing !== undefined) this.host.tracing.workflowEvent(this, event)
    if (this.subject) {
      // Handed to subscribers once the core is drained: one that calls back into the workflows
      // (closes them, signals, cancels) never finds a run halfway through a record.
      this.undelivered ??= []
      this.undelivered.push(decodeEvent(event))
      this.host.deliver(this)
    }
  }

  /** Gives subscribers the events recorded since the last delivery; completes them once the run ended. */
  deliver(): void {
    const events = this.undelivered
    this.undelivered = undefined
    const subject = this.subject
    if (!subject) return
    for (const event of events ?? []) subject.next(event)
    if (this.completing) subject.complete()
  }

  /** Subscribers hear the events still undelivered, then the end. */
  private completeEvents(): void {
    if (!this.subject) return
    this.completing = true
    this.host.deliver(this)
  }

  /** Starts the run (or its generation) in the core, recorded as its first event. */
  begin(): void {
    const now = this.host.now()
    // A run timeout given at start is a deadline the core keeps (one program serves every
    // timeout); later generations keep the first one's.
    this.deadline ??= this.meta.timeoutMs === undefined ? NO_DEADLINE : now + this.meta.timeoutMs
    // The core first: a start it refuses (CAPACITY_EXCEEDED) records nothing.
    this.handle = this.host.core.start(this.def, this.meta.seed, now, this.deadline)
    this.began = true
    this.record([EVENT.started, 0, now, this.deadline === NO_DEADLINE ? undefined : this.deadline])
    this.host.bind(this)
    this.host.pump()
  }

  /** A queued run's place came: it is running from now on (its meta says so first). */
  dequeue(): void {
    if (this.status !== 'queued') return
    const queuedMeta = this.meta
    this.meta = withoutQueue(this.meta, 'running')
    this.status = 'running'
    const ack = putRecord(this.host.history, this.meta)
    if (ack instanceof Promise) ack.catch(() => {})
    try {
      this.begin()
    } catch (error) {
      // The core refused the start (CAPACITY_EXCEEDED): still queued, in its place.
      this.meta = queuedMeta
      this.status = 'queued'
      const back = putRecord(this.host.history, queuedMeta)
      if (back instanceof Promise) back.catch(() => {})
      throw error
    }
    try {
      this.giveHeld()
    } catch (error) {
      // The run has begun: a held signal it could not take is reported, not a refused start.
      this.host.failed(`run ${this.id}: a signal held while it was queued could not be given`, error)
    }
  }

  /** Signals held while queued or between generations go to the run now (to nobody if it ended). */
  private giveHeld(): void {
    for (const held of this.held?.splice(0) ?? []) held.given(this.signal(held.name, held.payload, held.request, held.sent))
  }

  /**
   * Ends this generation and begins the next with `input` on a later macrotask, so a chain of
   * synchronous steps leaves timers, I/O and cancels their turn. The meta (the new generation,
   * and the seq its history starts at) is written first, then, once the gap has passed, the new
   * generation's start, then the old generation's events are purged. A crash before the meta
   * write executes the continueAsNew again on resume; after it, the restore begins the new
   * generation (if its start is missing) and purges what is left of the old one. A cancel in the
   * gap ends the run cancelled; signals sent in it are held for the new generation.
   */
  private continueAsNew(input: unknown): void {
    const from = this.seq + 1
    this.meta = { ...this.meta, input, generation: this.generation + 1, from }
    const ack = putRecord(this.host.history, this.meta)
    if (ack instanceof Promise) ack.catch(() => {})
    for (const attempt of this.attempts.values()) attempt.context?.abort(new OrreryError('RUN_CANCELLED', `run ${this.id} continued as new`))
    this.attempts = NONE
    this.errors = NONE
    this.deciding = NONE
    this.failedCompensations = undefined
    this.host.release(this.handle)
    this.handle = -1
    this.data = new RunData(this.compiled, input)
    this.between = true
    macrotask(() => {
      this.between = false
      if (this.status !== 'running' || this.abandoned !== undefined) return
      try {
        this.begin()
        // The new generation's start goes to the store now, ahead of the purges (not with the turn's batch).
        this.host.history.flush()
        purgeEarlier(this.host.history, this.id, from)
        this.giveHeld()
      } catch (error) {
        // The core refused the start (a store closed under it): the run stays recorded, and a
        // restore on the same store begins the generation.
        this.host.failed(`run ${this.id}: generation ${this.generation} could not begin`, error)
      }
    })
  }

  /** Between two generations: the old one released, the new one not begun yet. */
  private between = false

  /** Rebuilds the run from its recorded events (then {@link resume} goes on with it). */
  replay(events: readonly WorkflowEvent[]): void {
    this.replaying = true
    try {
      for (const event of events) {
        this.seq = event.seq
        switch (event.type) {
          case 'started':
            this.began = true
            this.deadline = event.deadline ?? NO_DEADLINE
            this.handle = this.host.core.start(this.def, this.meta.seed, event.at, this.deadline)
            this.host.bind(this)
            break
          case 'step-completed':
            this.applyCompletion(event.token, event.outcome, event.output, event.error === undefined ? undefined : restoreError(event.error), event.at)
            break
          case 'decided':
            if (event.error !== undefined) this.errors = put(this.errors, event.token, restoreError(event.error))
            this.applyDecision(event.token, event.value, event.items, event.at)
            break
          case 'signal':
            this.applySignal(event.name, event.payload, event.at)
            break
          case 'cancel':
            this.cancelled = true
            this.host.core.cancel(this.handle, event.at)
            break
          case 'timer-fired':
            this.applyFire(event.timer, event.at)
            break
          default:
            continue
        }
        this.host.pump()
      }
    } finally {
      this.replaying = false
    }
  }

  /**
   * After a replay: executes again whatever was in flight (same tokens, same idempotency keys);
   * a generation whose start was not recorded (a crash in the middle of a continueAsNew) begins.
   */
  resume(): void {
    if (this.status !== 'running') return
    if (this.handle < 0) return this.begin()
    // Timers that fell due while the run was down fire first, and what they start is handed
    // out: an attempt whose timeout passed is aborted, not run again only to be aborted.
    const now = this.host.now()
    const due = this.host.core.due(now)
    for (let i = 0; i < due.length; i += 2) if (due[i] === this.handle) this.fire(due[i + 1]!, now)
    this.host.pump()
    // What is still in flight runs again (what the timers just started is running already).
    if (this.status !== 'running') return
    this.host.core.outstanding(this.handle)
    this.host.pump()
  }

  // Inputs: recorded, then given to the core. The same apply* functions replay them.

  private complete(token: number, given: Outcome): void {
    const attempt = this.attempts.get(token)
    // Aborted (a timeout, a cancel) or finished: the core would call it stale.
    if (!attempt || this.status !== 'running') return
    let outcome = given
    if (outcome.ok) {
      // Used as the store keeps it, so a resumed run reads the same data; what no store can
      // keep (INVALID_PAYLOAD), or this one cannot (VALUE_TOO_LARGE), fails the step for good.
      try {
        outcome = { ok: true, output: this.host.history.keep(outcome.output, 'the output of step', this.compiled.nodes[attempt.node]!.id) }
      } catch (error) {
        outcome = { ok: false, permanent: true, error }
      }
    }
    const node = this.compiled.nodes[attempt.node]!
    const now = this.host.now()
    const name = outcome.ok ? 'ok' : outcome.permanent ? 'permanent' : 'transient'
    if (this.host.stepTimed !== undefined) this.host.stepTimed(this.meta.definition, node.id, name, (performance.now() - attempt.started) / 1000)
    this.record([
      EVENT['step-completed'],
      0,
      now,
      token,
      node.id,
      attempt.attempt,
      name,
      outcome.ok ? outcome.output : undefined,
      outcome.ok ? undefined : storeError(outcome.error),
    ])
    this.applyCompletion(token, name, outcome.ok ? outcome.output : undefined, outcome.ok ? undefined : outcome.error, now)
    this.host.pump()
  }

  private applyCompletion(token: number, outcome: 'ok' | 'transient' | 'permanent', output: unknown, error: unknown, now: number): void {
    const attempt = this.attempts.get(token)
    this.attempts.delete(token)
    if (outcome === 'ok') {
      if (attempt && !attempt.compensation) this.data.setOutput(attempt.node, attempt.scope, output)
    } else {
      this.errors = put(this.errors, token, error)
    }
    this.host.core.complete(this.handle, token, STEP_OUTCOMES[outcome], now)
  }

  private decide(token: number, value: number, items: readonly unknown[] | undefined, node: number): void {
    const now = this.host.now()
    const failed = value === -2 && this.errors.has(token) ? storeError(this.errors.get(token)) : undefined
    this.record([EVENT.decided, 0, now, token, this.compiled.nodes[node]!.id, value, items, failed])
    this.applyDecision(token, value, items, now)
  }

  /** Decisions by token, until the core answers them: their node and scope. */
  private deciding: Map<number, { node: number; scope: number }> = NONE

  private applyDecision(token: number, value: number, items: readonly unknown[] | undefined, now: number): void {
    const at = this.deciding.get(token)
    this.deciding.delete(token)
    if (at) this.data.setDecision(at.node, at.scope, value, items)
    this.host.core.decide(this.handle, token, value, now)
  }

  /**
   * Signal `name` with `payload` (`SIGNAL_UNKNOWN` for a name no wait of the definition has);
   * returns the acknowledgement of its record (a signal held while queued: once it is recorded).
   * `request` is the id of its request, recorded with it: one another process `sent` through the
   * broker (deleted once recorded), or one given here to a run shared across processes (so that
   * the same signal sent again through the broker after a takeover is known as given).
   */
  signal(name: string, payload: unknown, request?: string, sent = request !== undefined): Ack {
    if (FINAL_STATUSES.has(this.status as never)) return 0
    if (!this.compiled.signals.includes(name)) {
      throw new OrreryError('SIGNAL_UNKNOWN', `workflow ${this.meta.definition} waits for no signal ${JSON.stringify(name)}`, {
        details: { signal: name, signals: [...this.compiled.signals] },
      })
    }
    const holding = this.status === 'queued' || this.between
    const held = holding ? (this.held?.length ?? 0) : this.data.unclaimedSignals()
    if (held >= MAX_UNCLAIMED_SIGNALS) {
      throw new OrreryError('CAPACITY_EXCEEDED', `run ${this.id} holds ${held} signals no wait has taken: no more until a wait takes one`, {
        details: { runId: this.id, signal: name, limit: MAX_UNCLAIMED_SIGNALS },
      })
    }
    // As the store keeps it (INVALID_PAYLOAD for what none can, VALUE_TOO_LARGE for what this
    // one cannot): refused before anything is recorded or applied.
    const kept = this.host.history.keep(payload, 'the payload of signal', name)
    if (holding) {
      this.held ??= []
      let given!: (ack: Ack) => void
      const ack = new Promise<number>((resolve) => {
        given = resolve
      })
      this.held.push({ name, payload: kept, request, sent, given })
      return ack
    }
    const now = this.host.now()
    this.record(request === undefined ? [EVENT.signal, 0, now, name, kept] : [EVENT.signal, 0, now, name, kept, request])
    if (request !== undefined && sent) this.host.taken?.(this.id, request)
    // A signal given here under its own request id: the write that carries it says whether it was
    // recorded (refused: it was not, and the handle sends it again through the broker).
    const ack = request !== undefined && !sent ? this.host.history.batchAck(this.id) : this.host.history.recorded(this.id)
    this.applySignal(name, kept, now)
    this.host.pump()
    return ack
  }

  private applySignal(name: string, payload: unknown, now: number): void {
    this.data.signalled(name, payload)
    this.host.core.signal(this.handle, this.compiled.signals.indexOf(name), now)
  }

  /** Cancels the run; returns the acknowledgement of its record (0 when there was nothing to cancel). */
  cancel(): Ack {
    // A cancel again: acknowledged with the first one.
    if (this.cancelAck !== undefined) return this.cancelAck
    if (this.status === 'queued') {
      this.cancelAck = this.cancelQueued()
      return this.cancelAck
    }
    if (this.status !== 'running' || this.cancelled) return 0
    if (this.between) {
      this.cancelAck = this.cancelBetween()
      return this.cancelAck
    }
    this.cancelled = true
    const now = this.host.now()
    this.record([EVENT.cancel, 0, now])
    this.cancelAck = this.host.history.recorded(this.id)
    this.host.core.cancel(this.handle, now)
    this.host.pump()
    return this.cancelAck
  }

  /** The acknowledgement of the run's cancel, once cancelled. */
  private cancelAck: Ack | undefined

  /** A timer of this run is due (the runtime's timer found it). */
  fire(timer: number, now: number): void {
    if (this.status !== 'running') return
    this.record([EVENT['timer-fired'], 0, now, timer])
    this.applyFire(timer, now)
  }

  private applyFire(timer: number, now: number): void {
    this.host.core.fire(this.handle, timer, now)
  }

  /** One record the core drained for this run. */
  handleRecord(r: Float64Array, at: number): void {
    const kind = r[at]!
    const token = r[at + 2]!
    const node = r[at + 3]!
    const scope = r[at + 4]!
    const a = r[at + 5]!
    const b = r[at + 6]!
    const c = r[at + 7]!
    switch (kind) {
      case WORKFLOW_RECORDS.execute:
        return this.execute(token, node, scope, a, false, -1)
      case WORKFLOW_RECORDS.compensate:
        return this.execute(token, node, scope, a, true, b)
      case WORKFLOW_RECORDS.decide:
        this.deciding = put(this.deciding, token, { node, scope })
        if (!this.replaying) this.takeDecision(token, node, scope)
        return
      case WORKFLOW_RECORDS.cancel: {
        const attempt = this.attempts.get(token)
        this.attempts.delete(token)
        attempt?.context?.abort(new OrreryError('RUN_CANCELLED', `attempt ${attempt.attempt} of step ${this.compiled.nodes[attempt.node]!.id} was cancelled`))
        return
      }
      case WORKFLOW_RECORDS.scope:
        this.data.addScope(token, node, scope, a, b)
        return
      case WORKFLOW_RECORDS['node-done']:
        return this.nodeDone(node, scope, a, c)
      case WORKFLOW_RECORDS.retry:
        // The failed attempt is retried: its error can no longer be the run's.
        this.errors.delete(token)
        this.record([EVENT.retry, 0, this.host.now(), this.compiled.nodes[node]!.id, a, b, this.path(scope)])
        return
      case WORKFLOW_RECORDS.compensated:
        if (a !== 0) {
          this.failedCompensations ??= []
          this.failedCompensations.push({ step: this.compiled.nodes[node]!.id, error: this.errors.get(token) })
        }
        this.record([EVENT.compensated, 0, this.host.now(), this.compiled.nodes[node]!.id, a === 0])
        return
      case WORKFLOW_RECORDS['run-done']:
        return this.finish(STATUS_NAMES[a] ?? 'failed', b, c, scope)
    }
  }

  /**
   * The idempotency key of a step instance: `<runId>/<nodeId>` plus `[i]` per enclosing iteration;
   * from the second generation on the run id is followed by `#<generation>`.
   */
  private key(nodeId: string, scope: number): string {
    return `${generationKey(this.id, this.generation)}/${nodeId}${this.path(scope) ?? ''}`
  }

  /** A scope's index path, `[i]` per enclosing iteration (undefined outside any). */
  private path(scope: number): string | undefined {
    if (scope === 0) return undefined
    let path = ''
    for (const i of this.data.indices(scope)) path += `[${i}]`
    return path === '' ? undefined : path
  }

  private execute(token: number, node: number, scope: number, attempt: number, compensation: boolean, compensated: number): void {
    // Executing already: a timer fired on resume started it, then `outstanding` named it again.
    if (this.attempts.get(token)?.context !== undefined) return
    const entry: Attempt = { node, scope, attempt, compensation, context: undefined, started: performance.now() }
    this.attempts = put(this.attempts, token, entry)
    if (this.replaying) return
    const def = this.compiled.nodes[node]!
    const key = this.key(def.id, scope)
    const context = new AttemptContext(this.id, def.id, attempt, key)
    entry.context = context
    this.record([EVENT['step-started'], 0, this.host.now(), def.id, attempt, key, compensation, token])
    const data = this.data.dataScope(scope)
    let input: unknown
    try {
      const spec = 'input' in def ? def.input : undefined
      // A compensation given no input gets the output of the step it undoes.
      input = compensation && spec === undefined ? this.data.output(compensated, scope) : buildInput(spec, data, this.host.mappings)
      // The next generation's input is kept in the run's meta: used as kept.
      if (def.kind === 'continueAsNew') input = this.host.history.keep(input, 'the input of continueAsNew', def.id)
    } catch (error) {
      this.complete(token, { ok: false, permanent: true, error })
      return
    }
    if (def.kind === 'continueAsNew') return this.continueAsNew(input)
    const parent = this.compiled.parent[node]!
    const owner = parent >= 0 ? this.compiled.nodes[parent] : undefined
    const call = owner?.kind === 'scatterGather' ? { agent: String(data.item), node: owner } : undefined
    const tracing = this.host.tracing
    const step = tracing?.stepContext(this, token)
    if (step !== undefined) context.trace = tracing!.stepIds(this, token)
    // Under its span where the Orrery traces: what the step calls (a capability's request) is its child.
    const go = () =>
      step === undefined ? this.host.executor.run(def, input, context, call) : tracing!.within(step, () => this.host.executor.run(def, input, context, call))
    void (this.host.fence === undefined ? go() : this.fenced(token, entry, go))
      .then((outcome) => outcome !== undefined && this.complete(token, outcome))
      .catch((error: unknown) => this.host.failed(`run ${this.id}: the outcome of step ${def.id} could not be recorded`, error))
  }

  /**
   * Runs an attempt once its start is on the broker (`shared`): a process that lost the run learns
   * it from that write (the run is abandoned then) and runs nothing. Another failure of the write
   * fails the run's history (its end reports it); the attempt runs anyway.
   */
  private async fenced(token: number, entry: Attempt, go: () => Promise<Outcome>): Promise<Outcome | undefined> {
    try {
      await this.host.fence!(this.id)
    } catch {
      // Reported by the run's end.
    }
    if (this.attempts.get(token) !== entry || this.abandoned !== undefined) return undefined
    return go()
  }

  private takeDecision(token: number, node: number, scope: number): void {
    const def = this.compiled.nodes[node]!
    const data = this.data.dataScope(scope)
    let value: number
    let items: readonly unknown[] | undefined
    try {
      const kind = this.data.kind(node)
      if (kind === WORKFLOW_NODES.map || kind === WORKFLOW_NODES.pipeline) {
        items = this.host.history.keep(this.host.executor.instances(def, data), 'the items of', def.id)
        value = items.length
      } else {
        value = this.host.executor.decide(def, data)
      }
    } catch (error) {
      this.errors = put(this.errors, token, error)
      value = -2
    }
    this.decide(token, value, items, node)
  }

  private nodeDone(node: number, scope: number, outcome: number, why: number): void {
    const def = this.compiled.nodes[node]!
    if (why === FAILURE_REASONS['join-unreachable']) this.unreachable ??= node
    // A wait that ends ok took a signal (one that timed out and went on is `skipped`).
    if (outcome === NODE_OUTCOMES.ok && def.kind === 'waitFor') this.data.setOutput(node, scope, this.data.takeSignal(def.signal))
    this.data.setOutcome(node, scope, outcome)
    if (outcome === NODE_OUTCOMES.ok && def.kind === 'scatterGather' && def.aggregate !== undefined) {
      const all = this.data.output(node, scope)
      const aggregate = this.host.mappings.get(def.aggregate.fn)
      this.data.setOutput(node, scope, aggregate ? aggregate(all) : all)
    }
    const reason = REASON_NAMES[why]
    this.record([EVENT['node-done'], 0, this.host.now(), def.id, NODE_OUTCOME_NAMES[outcome] ?? 'failed', why === 0 ? undefined : reason, this.path(scope)])
  }

  /**
   * What failed the run, from the core's reason: the error recorded under the failing token (a
   * step's, a decision's; `has`, as a step may throw null or undefined), else what the reason
   * says (a timeout, a loop limit, a join out of reach).
   */
  private causeOf(node: number, token: number, why: number): unknown {
    const recorded = this.errors.has(token) ? { cause: this.errors.get(token) } : undefined
    const id = node >= 0 ? this.compiled.nodes[node]?.id : undefined
    const details = { details: { step: id } }
    switch (REASON_NAMES[why]) {
      case 'attempt-timeout':
        return new OrreryError('TIMEOUT', `step ${id} timed out`, details)
      case 'node-timeout':
        return new OrreryError('TIMEOUT', `${id} timed out`, details)
      case 'wait-timeout':
        return new OrreryError('TIMEOUT', `waitFor ${id} timed out waiting for its signal`, details)
      case 'run-timeout':
        return new OrreryError('TIMEOUT', `run ${this.id} timed out`, { details: { runId: this.id } })
      case 'loop-limit':
        return new OrreryError('LOOP_LIMIT', `loop ${id} would go on past its maxIterations`, details)
      case 'join-unreachable':
        return new OrreryError('JOIN_UNREACHABLE', `${id} can no longer get the successes its join needs`, { ...details, ...recorded })
      default:
        return recorded?.cause
    }
  }

  private finish(status: RunStatus, failedNode: number, failedToken: number, why = 0): void {
    this.status = status
    for (const attempt of this.attempts.values()) attempt.context?.abort(new OrreryError('RUN_CANCELLED', `run ${this.id} ended`))
    this.attempts.clear()
    const now = this.host.now()
    let output: unknown
    let error: Error | undefined
    if (status === 'completed') {
      try {
        const spec = this.compiled.definition.output
        output = spec === undefined ? this.data.output(0, 0) : buildInput(spec, this.data.dataScope(0), this.host.mappings)
      } catch (e) {
        error = this.runError(status, -1, 0, 0, { error: e })
      }
    } else {
      error = this.runError(status, failedNode, failedToken, why, undefined)
    }
    this.end(status, now, output, error)
  }

  /** A queued run cancelled: it ends `cancelled` without having begun. */
  private cancelQueued(): Ack {
    this.cancelled = true
    this.status = 'cancelled'
    const error = new OrreryError('RUN_CANCELLED', `run ${this.id} was cancelled while queued`, { details: { runId: this.id, status: 'cancelled' } })
    const ack = this.end('cancelled', this.host.now(), undefined, error)
    // Nothing for the core: the pump delivers the end to subscribers.
    this.host.pump()
    return ack
  }

  /** Cancelled between two generations: nothing ran in the new one, so nothing to compensate. */
  private cancelBetween(): Ack {
    this.cancelled = true
    this.status = 'cancelled'
    const from = this.meta.from ?? 1
    const error = new OrreryError('RUN_CANCELLED', `run ${this.id} was cancelled (cancelled)`, { details: { runId: this.id, status: 'cancelled' } })
    const ack = this.end('cancelled', this.host.now(), undefined, error)
    try {
      this.host.history.flush()
      purgeEarlier(this.host.history, this.id, from)
    } catch (e) {
      // A store closed under the workflows: the end's acknowledgement reports it.
      this.host.failed(`run ${this.id}: its earlier generation could not be purged`, e)
    }
    this.host.pump()
    return ack
  }

  /**
   * Records the end (event, then meta), tells the runtime, and settles the result once written;
   * returns the meta's acknowledgement.
   */
  private end(status: RunStatus, now: number, output: unknown, error: Error | undefined): Ack {
    const stored = error === undefined ? undefined : storeError(error)
    this.record([EVENT['run-finished'], 0, now, status, error === undefined ? output : undefined, stored])
    const meta = endRecord(this.meta, status, now, output, stored)
    this.meta = meta
    const ack = putRecord(this.host.history, meta)
    this.outcome = error === undefined ? { ok: true, value: output } : { ok: false, error }
    this.completeEvents()
    this.host.ended(this)
    // The result is given once the end is on disk (at once in memory): the meta write follows the
    // run's events, and fails for a run whose history could not be written.
    Promise.resolve(ack).then(
      () => this.settle(),
      (writeError: unknown) => {
        // Its end could not be written: it is kept as failed with that error (History.putMeta).
        this.status = 'failed'
        this.outcome = { ok: false, error: writeError as Error }
        this.settle()
      },
    )
    // Held signals reach nobody now.
    for (const held of this.held?.splice(0) ?? []) held.given(0)
    return ack
  }

  /** The error a run that did not complete rejects with. */
  private runError(status: RunStatus, failedNode: number, failedToken: number, why: number, thrown: { error: unknown } | undefined): Error {
    const details: Record<string, unknown> = { runId: this.id, status }
    if (this.failedCompensations !== undefined) {
      details['compensations'] = this.failedCompensations.map((f) => ({ step: f.step, error: storeError(f.error) }))
    }
    if (this.cancelled && failedNode < 0) return new OrreryError('RUN_CANCELLED', `run ${this.id} was cancelled (${status})`, { details })
    const cause = thrown === undefined ? this.causeOf(failedNode, failedToken, why) : thrown.error
    // The run's own timeout is no step's failure (the core names the root it stopped): still
    // STEP_FAILED with the TIMEOUT as cause, as documented, but naming no step.
    if (thrown === undefined && REASON_NAMES[why] === 'run-timeout') {
      return new OrreryError('STEP_FAILED', `run ${this.id} timed out (${status})`, { details, cause })
    }
    const stepId = failedNode >= 0 ? this.compiled.nodes[failedNode]?.id : undefined
    if (stepId !== undefined) details['step'] = stepId
    const reason = cause instanceof Error ? cause.message : cause === undefined ? 'a node failed' : String(cause)
    return new OrreryError('STEP_FAILED', `run ${this.id}${stepId === undefined ? '' : `: step ${stepId}`} failed: ${reason} (${status})`, {
      details,
      ...(cause !== undefined || thrown !== undefined || this.errors.has(failedToken) ? { cause } : {}),
    })
  }

  private settle(): void {
    const outcome = this.outcome!
    for (const waiter of this.waiters?.splice(0) ?? []) {
      if (outcome.ok) waiter.resolve(outcome.value)
      else waiter.reject(outcome.error)
    }
    this.settled = true
  }

  private settled = false
  private abandoned: OrreryError | undefined
  private lost = false

  /** Another process drives the run now (it was abandoned here for that): handles follow it there. */
  get takenOver(): boolean {
    return this.lost
  }

  result(): Promise<unknown> {
    if (this.abandoned) return Promise.reject(this.abandoned)
    if (this.settled) {
      const outcome = this.outcome!
      return outcome.ok ? Promise.resolve(outcome.value) : Promise.reject(outcome.error)
    }
    return new Promise((resolve, reject) => {
      this.waiters ??= []
      this.waiters.push({ resolve, reject })
    })
  }

  /**
   * Abandons the run (its Workflows closes, or another process drives it now: `error`, a
   * VERSION_CONFLICT): attempts are aborted, waiters hear CLOSED or that error.
   */
  abandon(reason?: OrreryError): void {
    if (FINAL_STATUSES.has(this.status as never)) return
    this.host.tracing?.workflowAbandoned(this)
    for (const attempt of this.attempts.values()) attempt.context?.abort(reason ?? new OrreryError('CLOSED', 'the workflows are closed'))
    this.attempts.clear()
    this.completing = true
    this.deliver()
    const error = reason ?? new OrreryError('CLOSED', `the workflows are closed; run ${this.id} resumes when they reopen on the same store`)
    this.abandoned = error
    this.lost = reason !== undefined
    for (const waiter of this.waiters?.splice(0) ?? []) waiter.reject(error)
    // Signals held for it were never recorded.
    for (const held of this.held?.splice(0) ?? []) {
      const refused = Promise.reject(error)
      refused.catch(() => {})
      held.given(refused)
    }
  }
}
