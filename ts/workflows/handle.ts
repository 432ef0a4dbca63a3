/**
 * A run's public handle ({@link WorkflowRun}): over a live {@link Run} of this process, or over
 * a run known only from its records (finished, or not resumed here).
 */
import { isOrreryError, OrreryError } from '../errors.js'
import { Stream } from '../stream.js'
import { FINAL_STATUSES, restoreError, type History, type WorkflowEvent } from './history.js'
import { currentEvents, readRecord, type RunRecord, type RunStatus } from './records.js'
import type { AnySignals } from './definition.js'
import { newRequest, type RemoteRuns } from './requests.js'
import type { Run } from './run.js'
import { runState, type RunState } from './state.js'

/**
 * Resolves once a record's acknowledgement does (its version, or a Promise of it on a durable
 * store). A rejection reaches whoever awaits it, and is no unhandled rejection for a caller that
 * sends and moves on (the run's result reports the failure too).
 */
function acknowledged(ack: number | Promise<number>): Promise<void> {
  if (!(ack instanceof Promise)) return Promise.resolve()
  const done = ack.then(() => undefined)
  done.catch(() => {})
  return done
}

/**
 * The payload argument of `run.signal(name, payload)`: required, as `P`, unless `P` takes
 * `undefined` (an untyped signal's `unknown` does).
 */
export type SignalArgs<P> = undefined extends P ? [payload?: P] : [payload: P]

/**
 * The arguments of `run.signal()`: one `[name, payload]` form per signal of `S`, so a name whose
 * type is a union of names still takes only a payload every one of them accepts.
 */
export type SignalCall<S> = { [N in keyof S & string]: [name: N, ...payload: SignalArgs<S[N]>] }[keyof S & string]

/**
 * A run's public handle: follow it, signal it, cancel it, await its result. `O` is its output
 * type and `S` the signals it takes, `{ name: payload }` (see {@link WorkflowSignals}).
 */
export class WorkflowRun<O = unknown, S = AnySignals> {
  /** @internal A run driven here; with `remote` (shared), the handle follows it to another process that takes it over. */
  static live<O>(run: Run, history: History, remote?: RemoteRuns): WorkflowRun<O> {
    return new WorkflowRun<O>(run, run.meta, history, remote)
  }

  /** @internal A run known only from its meta record (finished, or not resumed here). */
  static stored<O>(meta: RunRecord, history: History): WorkflowRun<O> {
    return new WorkflowRun<O>(undefined, meta, history)
  }

  /** @internal An unfinished run of a shared namespace that another process drives. */
  static remote<O>(meta: RunRecord, history: History, remote: RemoteRuns): WorkflowRun<O> {
    return new WorkflowRun<O>(undefined, meta, history, remote)
  }

  private constructor(
    private readonly run: Run | undefined,
    private readonly meta: RunRecord,
    private readonly store: History,
    private readonly remote?: RemoteRuns,
  ) {}

  /** The run while it is driven here; undefined once another process took it over (this handle follows it there). */
  private get here(): Run | undefined {
    return this.run?.takenOver === true && this.remote !== undefined ? undefined : this.run
  }

  /** The run's id (given to `start`, or generated). */
  get id(): string {
    return this.meta.id
  }

  /** The workflow's name and the version this run is pinned to. */
  get definition(): { readonly name: string; readonly version: string } {
    return { name: this.meta.definition, version: this.meta.version }
  }

  /**
   * Resolves with the run's output once its end is recorded (on disk with a durable store).
   * Rejects `STEP_FAILED` (its `cause` the step's error, `details.step` its id) when a step failed,
   * also after compensation (`details.status`), and `RUN_CANCELLED` when the run was cancelled.
   * A run another process drives (`shared`) settles as its end reaches the broker.
   */
  result(): Promise<O> {
    const run = this.here
    const remote = this.remote
    if (run && remote) {
      // Taken over while waited for: the result comes from where the run goes on.
      return run.result().catch((error: unknown) => (run.takenOver ? remote.result(this.meta.id) : Promise.reject(error))) as Promise<O>
    }
    if (run) return run.result() as Promise<O>
    if (remote) return remote.result(this.meta.id) as Promise<O>
    let meta: RunRecord
    try {
      meta = this.ended()
    } catch (error) {
      return Promise.reject(error)
    }
    if (meta.error !== undefined) return Promise.reject(restoreError(meta.error))
    return Promise.resolve(meta.output as O)
  }

  /** Where the run is: `queued` (waiting for a place under its definition's limit), `running`, or how it ended. */
  status(): RunStatus {
    return this.here?.status ?? this.current().status
  }

  /** The run's generation: 1, and one more after each continueAsNew. */
  get generation(): number {
    return (this.here?.meta ?? this.current()).generation ?? 1
  }

  /** The events recorded for the run's current generation, oldest first. */
  history(): WorkflowEvent[] {
    return currentEvents(this.store, this.meta.id, this.here?.meta.from)
  }

  /**
   * Where the run is now: its status, and each node's status, attempts, output or error (per
   * instance inside iterations), the waits waiting for a signal and the signals not taken yet,
   * as plain data as the history keeps it (outputs are the values `result()` gives). The same
   * for a run running here and one read from the store (see {@link runState}).
   */
  state(): RunState {
    const meta = this.here?.meta ?? this.current()
    const definition = this.here?.compiled.definition ?? this.store.definition(meta.definition, meta.version)
    if (definition === undefined) {
      throw new OrreryError('WORKFLOW_NOT_FOUND', `run ${meta.id}: version ${meta.version} of workflow ${meta.definition} is not in the store`, {
        details: { runId: meta.id, workflow: meta.definition, version: meta.version },
      })
    }
    return runState(definition, meta, currentEvents(this.store, meta.id, meta.from))
  }

  /**
   * Sends signal `name` with `payload` (taken by the next wait on it). Resolves once the signal
   * is recorded (on disk with a durable store; for a queued run, once it begins and records it),
   * rejects if that write failed; resolves at once on a run that ended (nothing is sent). Throws
   * at once, sending nothing, for a name that is no string, `SIGNAL_UNKNOWN`, `INVALID_PAYLOAD`,
   * `CAPACITY_EXCEEDED`, and `RUN_NOT_FOUND` for a run recorded as unfinished but not running here.
   * A run another process drives (`shared`) gets it through the broker, after the same checks:
   * the promise resolves once the broker has the request (its owner, now or the next, records it
   * once), rejects with a transport's error. A signal given here to a shared run that another
   * process takes over before the write is acknowledged goes to it through the broker, once.
   * For the compiler `name` is one of the signals `S` (any string when untyped) and `payload` its type.
   */
  signal(...args: SignalCall<S>): Promise<void>
  signal(...args: readonly unknown[]): Promise<void> {
    const [name, payload] = args
    if (typeof name !== 'string') throw new OrreryError('INVALID_ARGUMENT', 'a signal name must be a string', { details: { argument: 'name' } })
    const run = this.here
    if (run) {
      if (this.remote === undefined) return acknowledged(run.signal(name, payload))
      // Under a request id, so that sent again after a takeover it is given once.
      const request = newRequest(run.id)
      return this.orElsewhere(run, acknowledged(run.signal(name, payload, request, false)), (remote) => remote.signal(this.meta, name, payload, request))
    }
    if (this.remote && !this.hasEnded()) return this.remote.signal(this.meta, name, payload)
    this.ended()
    return Promise.resolve()
  }

  /**
   * Cancels the run: attempts in flight are aborted, completed steps compensated. Resolves once
   * the cancel is recorded (on disk with a durable store), rejects if that write failed; resolves
   * at once when there is nothing to cancel. Throws `RUN_NOT_FOUND` at once for a run recorded as
   * unfinished but not running here. A run another process drives (`shared`) is cancelled through
   * the broker: the promise resolves once the broker has the request.
   */
  cancel(): Promise<void> {
    const run = this.here
    if (run) return this.orElsewhere(run, acknowledged(run.cancel()), (remote) => remote.cancel(this.meta))
    if (this.remote && !this.hasEnded()) return this.remote.cancel(this.meta)
    this.ended()
    return Promise.resolve()
  }

  /**
   * A signal or cancel of the run driven here, sent again through the broker if another process
   * took the run over meanwhile (its ack then rejects with VERSION_CONFLICT). A signal's ack is
   * that of the write carrying its event, refused only if the event was not recorded; it goes
   * again under its request id, which the next owner would find in the history had it been. A
   * cancel's ack is the run's writes so far, and a cancel given twice is one.
   */
  private orElsewhere(run: Run, ack: Promise<void>, resend: (remote: RemoteRuns) => Promise<void>): Promise<void> {
    const remote = this.remote
    if (remote === undefined) return ack
    return ack.catch((error: unknown) => (run.takenOver && isOrreryError(error, 'VERSION_CONFLICT') ? resend(remote) : Promise.reject(error)))
  }

  /** The run's meta as the store has it now (this handle's when the store has none). */
  private current(): RunRecord {
    return readRecord(this.store, this.meta.id) ?? this.meta
  }

  private hasEnded(): boolean {
    return FINAL_STATUSES.has(this.current().status as never)
  }

  /**
   * The meta of a run that is not running here, if it ended (signals and cancels then do
   * nothing, as on a live run that ended); `RUN_NOT_FOUND` when it is recorded as unfinished.
   */
  private ended(): RunRecord {
    const meta = this.current()
    if (FINAL_STATUSES.has(meta.status as never)) return meta
    throw new OrreryError('RUN_NOT_FOUND', `run ${meta.id} is not running here: open the workflows with resume on its store to go on with it`, {
      details: { runId: meta.id },
    })
  }

  /** What happens in the run from now on (wherever it runs, with `shared`); completes when it ends. */
  get events(): Stream<WorkflowEvent> {
    const run = this.here
    if (run) return run.events
    if (this.remote && !this.hasEnded()) return this.remote.events(this.meta.id)
    return new Stream<WorkflowEvent>({
      start(sink) {
        sink.complete()
        return { stop: () => {}, setPaused: () => {} }
      },
    })
  }
}
