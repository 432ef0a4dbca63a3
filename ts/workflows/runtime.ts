/**
 * Workflows on an Orrery: registered step functions, mappings and conditions, definitions by
 * name and version, runs (started, found, listed), one workflow core whose records this module
 * drains and hands to their runs, and one timer for the core's next deadline. On a store that
 * holds unfinished runs it replays their histories and goes on with them.
 */
import { Mesh } from '../agents/mesh.js'
import { callable, flag, int, keysOf, msOrNone, oneOf, options as checkOptions, refuse, text } from '../check.js'
import type { Backend, WorkflowCore } from '../engines/backend.js'
import { WORKFLOW_LAYOUT } from '../engines/manifest.js'
import { isOrreryError, OrreryError } from '../errors.js'
import { checkSchema, type StandardSchemaV1 } from '../schema.js'
import { Store } from '../store/store.js'
import { DeadlineTimer } from '../timer.js'
import { compileWorkflow, type CompiledWorkflow } from './compile.js'
import type { FnRef, WorkflowDefinition, WorkflowInput, WorkflowOutput, WorkflowSignals } from './definition.js'
import { Executor, type ChildHandle, type ExecutorHost, type RegisteredStep, type StepContext } from './executor.js'
import { FINAL_STATUSES, History, isEventKey, type RunMeta } from './history.js'
import { Leases } from './lease.js'
import {
  currentEvents,
  deleteRecord,
  purgeEarlier,
  putFirstRecord,
  putLimit,
  readLimits,
  readRecord,
  readRecords,
  type RunRecord,
  type RunStatus,
} from './records.js'
import { RunRequests } from './requests.js'
import { SharedHistory } from './shared-history.js'
import { WorkflowRun } from './handle.js'
import { runId } from './ids.js'
import { Run, type RunHost } from './run.js'
import type { Tracing } from '../observe/tracing.js'
import { canonicalJson } from './version.js'

/**
 * The longest run id, in UTF-8 bytes: its events' keys (`run/<id>/e/<10 digits>`) stay well
 * under the store's 1024-byte keys, with room for the namespace's own prefix.
 */
export const MAX_RUN_ID_BYTES = 512

/** `INVALID_OPTION` for a run id over {@link MAX_RUN_ID_BYTES}. */
function checkRunIdLength(id: string): void {
  // At most 3 bytes of UTF-8 per UTF-16 unit: most ids need no encoding to be measured.
  if (id.length * 3 <= MAX_RUN_ID_BYTES) return
  const bytes = new TextEncoder().encode(id).length
  if (bytes > MAX_RUN_ID_BYTES) {
    throw new OrreryError('INVALID_OPTION', `run id is ${bytes} bytes of UTF-8, over the ${MAX_RUN_ID_BYTES} a run id may take`, {
      details: { option: 'id', bytes, limit: MAX_RUN_ID_BYTES },
    })
  }
}

/** A run id given to `start`: a non-empty string a store key can hold, no longer than {@link MAX_RUN_ID_BYTES}. */
function givenId(given: unknown): string {
  const id = text(given, 'id', { nonEmpty: true }, 'option')
  checkRunIdLength(id)
  if (isEventKey(id)) throw new OrreryError('INVALID_OPTION', `run id ${id} ends like an event key (/e/<10 digits>)`, { details: { option: 'id' } })
  return id
}

/**
 * A child run's start that no retry can fix (its id, the step's idempotency key, too long; its
 * input too large) fails the child step for good, saying which run id it was.
 */
function permanentChildError(error: unknown, id: string): unknown {
  if (!isOrreryError(error) || (error.code !== 'INVALID_OPTION' && error.code !== 'VALUE_TOO_LARGE')) return error
  const what = error.code === 'INVALID_OPTION' ? `child run ${id.slice(0, 64)}…: its id (the step's idempotency key)` : `child run ${id}`
  return new OrreryError(error.code, `${what}: ${error.message}`, { cause: error, details: { ...error.details, runId: id, permanent: true } })
}

const RUN_STATUS_NAMES: readonly RunStatus[] = ['queued', 'running', 'completed', 'failed', 'cancelled', 'compensated', 'compensation-failed']

/** Options of {@link Workflows.define}. */
export interface DefineOptions {
  /**
   * At most this many runs of the workflow (by name, any version) run at once here; the runs
   * started beyond it are `queued` (recorded so) and begin in start order as others end.
   * Default: no limit.
   */
  maxConcurrentRuns?: number
}
const DEFINE_KEYS = keysOf<DefineOptions>()(['maxConcurrentRuns'])

/** Options of `orrery.workflows()`. */
export interface WorkflowsOptions {
  /** Where histories live (default: a new in-memory store). A durable store makes runs survive a crash. */
  store?: Store<boolean>
  /** The mesh capability steps and scatterGathers call. */
  mesh?: Mesh
  /** The store namespace (default `orrery.workflows`). */
  namespace?: string
  /**
   * Go on with the store's unfinished runs (default true). Their state is rebuilt at once; their
   * steps run again from the next turn of the event loop; a step whose function is not
   * registered yet waits for its `register`.
   */
  resume?: boolean
  /**
   * Keep the histories in a strong shared namespace of the store (named `namespace`) on a broker
   * transport, so that runs go on in another process when this one dies (docs/workflows.md
   * "Workflows across processes"). Each run is driven by one process at a time, the holder of its
   * owner lease; with `resume` these workflows take over the runs whose lease ran out.
   */
  shared?: SharedWorkflowsOptions
}
const WORKFLOWS_KEYS = keysOf<WorkflowsOptions>()(['store', 'mesh', 'namespace', 'resume', 'shared'])

/** Options of `orrery.workflows({ shared })`. */
export interface SharedWorkflowsOptions {
  /** The transport (redis or nats) of the store's Orrery whose broker keeps the histories. */
  transport: string
  /**
   * How long a run's owner lease lasts, in ms (default 10 000, at least 100): renewed every third
   * of it; a process that dies leaves its runs to others this long after its last renewal.
   */
  leaseMs?: number
  /** This process's name in the leases it holds (default: a random id). */
  owner?: string
}
const SHARED_KEYS = keysOf<SharedWorkflowsOptions>()(['transport', 'leaseMs', 'owner'])

/** The default owner lease: a dead process's runs wait this long for another. */
const DEFAULT_LEASE_MS = 10_000

/** Options of {@link Workflows.start}. */
export interface StartOptions {
  /** The run's id (default: a random UUID). Starting an id again returns the same run. */
  id?: string
  /** A timeout for the whole run in ms, over the definition's. */
  timeoutMs?: number
}
const START_KEYS = keysOf<StartOptions>()(['id', 'timeoutMs'])

/** A run in {@link Workflows.list}. */
export interface RunInfo {
  readonly id: string
  readonly definition: string
  readonly version: string
  readonly status: RunStatus
  readonly generation: number
  readonly startedAt: number
  readonly finishedAt?: number
}

/** Schemas of a registered step. */
export interface StepSchemas<I extends StandardSchemaV1 | undefined, O extends StandardSchemaV1 | undefined> {
  input?: I
  output?: O
}
const SCHEMAS_KEYS = keysOf<StepSchemas<undefined, undefined>>()(['input', 'output'])

/** What a step function registered with `schemas` takes: the input schema's output type (`unknown` without one). */
export type SchemaInput<S> = S extends StandardSchemaV1<unknown, infer T> ? T : unknown

/** What a step function registered with an output schema returns, or resolves to: the schema's input type (anything without one). */
export type SchemaResult<S> = S extends StandardSchemaV1<infer T, unknown> ? T | PromiseLike<T> : unknown

/**
 * The arguments of `wf.start(definition, ...)` after the definition: the input is required, as
 * `I`, unless `I` takes `undefined` (an untyped definition's `unknown` does).
 */
export type StartArgs<I> = undefined extends I ? [input?: I, options?: StartOptions] : [input: I, options?: StartOptions]

/** How many workflows of this process are open on each namespace of each store. */
const claimed = new WeakMap<Store<boolean>, Map<string, number>>()

/**
 * Counts workflows open on `namespace` of `store` until the returned function is called. One
 * that goes on with the namespace's unfinished runs (`resume`) needs it to itself: with other
 * workflows open on it, both would drive the same runs (each step twice), so it is refused
 * with `INVALID_OPTION`. Workflows opened with `resume: false` drive only the runs they start.
 */
function claim(store: Store<boolean>, namespace: string, resume: boolean): () => void {
  let open = claimed.get(store)
  if (open === undefined) {
    open = new Map()
    claimed.set(store, open)
  }
  const count = open.get(namespace) ?? 0
  if (resume && count > 0) {
    throw new OrreryError(
      'INVALID_OPTION',
      `namespace ${namespace} of this store has workflows open on it, which drive its runs: close them first, give another namespace, or open these with resume: false`,
      { details: { option: 'namespace', value: namespace } },
    )
  }
  open.set(namespace, count + 1)
  let held = true
  return () => {
    if (!held) return
    held = false
    const left = (open.get(namespace) ?? 1) - 1
    if (left > 0) open.set(namespace, left)
    else open.delete(namespace)
  }
}

/** A version of a workflow and its program in the core (one for every run timeout: the core takes a run's deadline at start). */
interface Version {
  readonly compiled: CompiledWorkflow
  readonly def: number
}

const RECORD_WORDS = WORKFLOW_LAYOUT.recordWords

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

export class Workflows {
  private readonly steps = new Map<string, RegisteredStep>()
  private readonly mappings = new Map<string, (arg: unknown) => unknown>()
  private readonly conditions = new Map<string, (arg: unknown) => boolean>()
  private readonly versions = new Map<string, Version>()
  private readonly newest = new Map<string, string>()
  /** Versions of the (frozen) definition objects given to `start`. */
  private readonly byObject = new WeakMap<object, Version>()
  private readonly runs = new Map<string, Run>()
  private readonly byHandle = new Map<number, Run>()
  /** `maxConcurrentRuns` by workflow name. */
  private readonly limits = new Map<string, number>()
  /** Runs that began here and have not ended, by workflow name. */
  private readonly active = new Map<string, number>()
  /** Queued runs by workflow name, in start order. */
  private readonly queues = new Map<string, Run[]>()
  /** Workflows whose queued run the core refused to start: tried again when any run ends. */
  private readonly starved = new Set<string>()
  /** The last place given in a queue (places only grow, across restarts). */
  private queuePlace = 0
  private readonly executor: Executor
  private readonly host: RunHost
  private readonly timer: DeadlineTimer
  private pumping = false
  /** Runs with events for their subscribers, handed over once the core is drained. */
  private readonly toDeliver = new Set<Run>()
  private closed = false
  private resumeTimer: ReturnType<typeof setTimeout> | undefined

  /** @internal Use `orrery.workflows()`. */
  static async open(
    backend: Backend,
    clock: () => number,
    given: WorkflowsOptions | undefined,
    openStore: () => Store<boolean>,
    onClose?: (wf: Workflows) => void,
    tracing?: Tracing,
  ): Promise<Workflows> {
    const options = checkOptions(given, 'options', 'argument', WORKFLOWS_KEYS)
    const namespace = options.namespace === undefined ? 'orrery.workflows' : text(options.namespace, 'namespace', { nonEmpty: true }, 'option')
    if (options.store !== undefined && !(options.store instanceof Store)) refuse('option', 'store', options.store, 'must be a store from orrery.openStore()')
    if (options.mesh !== undefined && !(options.mesh instanceof Mesh)) refuse('option', 'mesh', options.mesh, 'must be a mesh from orrery.mesh()')
    if (options.resume !== undefined) flag(options.resume, 'resume')
    const shared = options.shared === undefined ? undefined : checkShared(options.shared)
    const store = options.store ?? openStore()
    // Two workflows going on with one namespace's runs would run each step twice (shared ones
    // share them by leases).
    const release = shared === undefined ? claim(store, namespace, options.resume !== false) : () => {}
    // msgpack keeps what JSON loses (undefined inside a run's output) and encodes faster.
    let strong: SharedHistory | undefined
    if (shared !== undefined) {
      try {
        strong = new SharedHistory(await store.shared(namespace, { transport: shared.transport, consistency: 'strong', codec: 'msgpack' }))
      } catch (error) {
        if (options.store === undefined) store.close()
        throw error
      }
    }
    let wf: Workflows
    try {
      const core = backend.createWorkflows()
      // A broker acknowledges a write once it has it: as a durable store does, from disk.
      const history = new History(strong ?? store.namespace(namespace, { codec: 'msgpack' }), strong !== undefined || store.durable, store.maxValueBytes)
      wf = new Workflows(core, history, clock, options.mesh, store, options.store === undefined ? store : undefined, release, onClose, tracing)
    } catch (error) {
      // Nothing opened stays open, and the namespace is free again.
      release()
      strong?.ns.close()
      if (options.store === undefined) store.close()
      throw error
    }
    try {
      if (strong !== undefined) wf.share(strong, shared!.owner, shared!.leaseMs, options.resume !== false)
      else if (options.resume !== false) wf.restore()
    } catch (error) {
      wf.close()
      throw error
    }
    return wf
  }

  /** Runs leased across processes (`shared`), set when the workflows open. */
  private shared: Shared | undefined

  private constructor(
    private readonly core: WorkflowCore,
    private readonly history: History,
    private readonly clock: () => number,
    private readonly mesh: Mesh | undefined,
    private readonly store: Store<boolean>,
    private readonly ownStore: Store<boolean> | undefined,
    /** Gives the namespace back (`claim`) once the workflows closed. */
    private readonly unclaim: () => void,
    private readonly onClose: ((wf: Workflows) => void) | undefined,
    tracing: Tracing | undefined,
  ) {
    const executorHost: ExecutorHost = {
      steps: this.steps,
      mappings: this.mappings,
      conditions: this.conditions,
      mesh,
      startChild: (workflow, input, id) => this.startChild(workflow, input, id),
      findRun: (id) => {
        if (this.closed) return undefined
        const run = this.find(id)
        // A cancel whose write fails is reported by the run's own result.
        return run && { result: () => run.result(), cancel: () => void run.cancel().catch(() => {}) }
      },
    }
    this.executor = new Executor(executorHost)
    this.host = {
      core,
      history: this.history,
      executor: this.executor,
      mappings: this.mappings,
      now: clock,
      pump: () => this.pump(),
      bind: (run) => this.byHandle.set(run.handle, run),
      failed: (what, error) => this.failed(what, error),
      ended: (run) => this.ended(run),
      release: (handle) => {
        this.byHandle.delete(handle)
        this.core.release(handle)
      },
      deliver: (run) => this.toDeliver.add(run),
      tracing,
      stepTimed: undefined,
      fence: undefined,
      taken: undefined,
    }
    this.timer = new DeadlineTimer(clock, () => this.fireDue(), true)
  }

  /**
   * Registers a local step function under `name` (what a definition's `{ fn: name }` calls),
   * with Standard Schemas for its input and output (`SCHEMA_INVALID` fails the step for good).
   */
  register<I extends StandardSchemaV1 | undefined = undefined, O extends StandardSchemaV1 | undefined = undefined>(
    name: string,
    schemas: StepSchemas<I, O>,
    fn: (input: SchemaInput<I>, context: StepContext) => SchemaResult<O>,
  ): this
  register<In = unknown>(name: string, fn: (input: In, context: StepContext) => unknown): this
  /**
   * Registers the function a typed reference (`fn<I, O>(name)`) names: it takes `I` and returns
   * `O` (or a promise of it), so the definitions built on the reference and the function agree.
   */
  register<I, O>(ref: FnRef<I, O>, fn: (input: NoInfer<I>, context: StepContext) => NoInfer<O> | PromiseLike<NoInfer<O>>): this
  /** A typed reference's function with schemas: the input schema gives `I`, the output schema checks `O`. */
  register<I, O>(
    ref: FnRef<I, O>,
    schemas: { input?: StandardSchemaV1<unknown, NoInfer<I>>; output?: StandardSchemaV1<unknown, NoInfer<O>> },
    fn: (input: NoInfer<I>, context: StepContext) => NoInfer<O> | PromiseLike<NoInfer<O>>,
  ): this
  register(ref: string | FnRef, a: unknown, b?: unknown): this {
    const name = typeof ref === 'object' && ref !== null ? ref.fn : ref
    this.assertOpen()
    text(name, 'name', { nonEmpty: true })
    const fn = callable<RegisteredStep['run']>(typeof a === 'function' ? a : b, 'fn')
    const schemas = typeof a === 'function' ? {} : checkOptions(a as StepSchemas<undefined, undefined>, 'schemas', 'argument', SCHEMAS_KEYS)
    if (schemas.input !== undefined) checkSchema(schemas.input, 'input')
    if (schemas.output !== undefined) checkSchema(schemas.output, 'output')
    this.unique(this.steps, name, 'step function')
    this.steps.set(name, { run: fn, input: schemas.input, output: schemas.output })
    this.executor.registered(name)
    return this
  }

  /** Registers a mapping function (`{ $fn: name, arg }` in an input, a scatterGather's `aggregate`). */
  registerMapping(name: string, fn: (arg: unknown) => unknown): this {
    this.assertOpen()
    text(name, 'name', { nonEmpty: true })
    this.unique(this.mappings, name, 'mapping')
    this.mappings.set(name, callable(fn, 'fn'))
    return this
  }

  /** Registers a condition (`{ fn: name, arg }` in a branch or loop). */
  registerCondition(name: string, fn: (arg: unknown) => boolean): this {
    this.assertOpen()
    text(name, 'name', { nonEmpty: true })
    this.unique(this.conditions, name, 'condition')
    this.conditions.set(name, callable(fn, 'fn'))
    return this
  }

  private unique(map: ReadonlyMap<string, unknown>, name: string, what: string): void {
    if (map.has(name))
      throw new OrreryError('INVALID_ARGUMENT', `a ${what} named ${JSON.stringify(name)} is registered already`, { details: { argument: 'name', name } })
  }

  /**
   * Validates a definition (`DEFINITION_INVALID` naming the node) and keeps it: its version
   * serves new runs of its name from now on; runs already started stay on theirs. A version name
   * defined already (here or in the store) with other content is refused (`DEFINITION_INVALID`).
   */
  define<I, O, S>(definition: WorkflowDefinition<I, O, S>, options?: DefineOptions): WorkflowDefinition<I, O, S> {
    this.assertOpen()
    const o = checkOptions(options, 'options', 'argument', DEFINE_KEYS)
    const limit = o.maxConcurrentRuns === undefined ? undefined : int(o.maxConcurrentRuns, 'maxConcurrentRuns', { min: 1 }, 'option')
    const compiled = compileWorkflow(definition, (c) => this.rangeError(c))
    this.checkSameContent(compiled)
    const version = this.load(compiled)
    const { name } = version.compiled.definition
    this.newest.set(name, version.compiled.definition.version)
    const ack = this.history.putDefinition(version.compiled.definition)
    if (ack instanceof Promise) ack.catch(() => {})
    if (limit !== this.limits.get(name)) {
      if (limit === undefined) this.limits.delete(name)
      else this.limits.set(name, limit)
      putLimit(this.history, name, limit)
      // A higher limit (or none) makes room for queued runs at once.
      if (this.resumeTimer === undefined) this.beginQueued(name)
    }
    return version.compiled.definition as WorkflowDefinition<I, O, S>
  }

  /**
   * `DEFINITION_INVALID` when the version name is defined here, or kept in the store, with other
   * content: runs pinned to a version must all run the same thing. The same content is fine.
   */
  private checkSameContent(compiled: CompiledWorkflow): void {
    const { name, version } = compiled.definition
    const known = this.versions.get(versionKey(name, version))?.compiled
    const stored = known === undefined ? this.history.definition(name, version) : undefined
    const other = known ?? (stored === undefined ? undefined : compileWorkflow(stored))
    if (other === undefined || content(other.definition) === content(compiled.definition)) return
    throw new OrreryError(
      'DEFINITION_INVALID',
      `workflow ${name} version ${version} is defined ${known ? 'here' : 'in the store'} already with other content: give the new content a new version name`,
      { details: { workflow: name, version } },
    )
  }

  /** The version a definition object given to `start` is: kept (and stored) if it is new here. */
  private versionOf(definition: WorkflowDefinition): Version {
    if (definition === null || typeof definition !== 'object') refuse('argument', 'name', definition, 'must be a workflow name or a definition')
    // The builder's definitions are deeply frozen: one compiled per object serves every start.
    const cached = this.byObject.get(definition)
    if (cached) return cached
    const compiled = compileWorkflow(definition, (c) => this.rangeError(c))
    const { name, version: versionName } = compiled.definition
    let version = this.versions.get(versionKey(name, versionName))
    if (!version) {
      this.checkSameContent(compiled)
      version = this.load(compiled)
      if (!this.newest.has(name)) this.newest.set(name, versionName)
      const ack = this.history.putDefinition(compiled.definition)
      if (ack instanceof Promise) ack.catch(() => {})
    } else if (content(version.compiled.definition) !== content(compiled.definition)) {
      this.checkSameContent(compiled)
    }
    if (Object.isFrozen(definition)) this.byObject.set(definition, version)
    return version
  }

  /** Keeps a compiled version in the core (once per version). */
  private load(compiled: CompiledWorkflow): Version {
    const key = versionKey(compiled.definition.name, compiled.definition.version)
    let version = this.versions.get(key)
    if (!version) {
      version = { compiled, def: this.core.define(compiled.program) }
      this.versions.set(key, version)
    }
    return version
  }

  /** A version from the store (a run pinned to it resumes), `WORKFLOW_NOT_FOUND` when it is gone. */
  private stored(name: string, versionName: string): Version {
    const known = this.versions.get(versionKey(name, versionName))
    if (known) return known
    const definition = this.history.definition(name, versionName)
    if (!definition)
      throw new OrreryError('WORKFLOW_NOT_FOUND', `workflow ${name} version ${versionName} is not in the store`, {
        details: { workflow: name, version: versionName },
      })
    return this.load(compileWorkflow(definition))
  }

  /**
   * Starts a run of the newest version of `name`, or of the version a definition object is (kept
   * at once if it is new here; it serves `start(name)` only when it is the first of its name). An
   * `id` that exists returns that run (idempotent start); one started with another workflow is
   * refused (`RUN_EXISTS`). Resolves once the start is recorded (on disk with a durable store).
   */
  start<D extends WorkflowDefinition>(definition: D, ...args: StartArgs<WorkflowInput<D>>): Promise<WorkflowRun<WorkflowOutput<D>, WorkflowSignals<D>>>
  /** Starts a run of the newest version of the workflow `name`: its input and result are `unknown` to the compiler. */
  start(name: string, input?: unknown, options?: StartOptions): Promise<WorkflowRun>
  async start<I, O>(name: string | WorkflowDefinition<I, O>, input?: I, options?: StartOptions): Promise<WorkflowRun<O>> {
    this.assertOpen()
    const given = typeof name === 'string' ? undefined : this.versionOf(name)
    const workflow = given ? given.compiled.definition.name : (name as string)
    text(workflow, 'name', { nonEmpty: true })
    const o = checkOptions(options, 'options', 'argument', START_KEYS)
    // > 0 as a definition's own timeout must be: 0 would end the run before it began.
    const timeoutMs = o.timeoutMs === undefined ? undefined : msOrNone(o.timeoutMs, 'timeoutMs', { above: 0 })
    const id = o.id === undefined ? runId() : givenId(o.id)
    // A generated id is new: only a given one can name a run that exists.
    const existing = o.id === undefined ? undefined : this.find(id)
    if (existing) return sameWorkflow(existing, workflow) as WorkflowRun<O>
    const versionName = given ? given.compiled.definition.version : this.newest.get(workflow)
    if (versionName === undefined) {
      throw new OrreryError('WORKFLOW_NOT_FOUND', `no workflow ${JSON.stringify(workflow)} is defined (wf.define first)`, { details: { workflow } })
    }
    const version = given ?? this.versions.get(versionKey(workflow, versionName))!
    this.checkRegistered(version.compiled)
    const queued = !this.hasPlace(workflow)
    const meta: { -readonly [K in keyof RunRecord]: RunRecord[K] } = {
      id,
      definition: workflow,
      version: versionName,
      // As the store keeps it (INVALID_PAYLOAD for what none can, VALUE_TOO_LARGE for what this
      // one cannot), so a resumed run reads the same; checked before anything is written or run.
      input: this.history.keep(input, 'the run input'),
      seed: Math.floor(Math.random() * 2 ** 52),
      status: queued ? 'queued' : 'running',
      startedAt: this.clock(),
    }
    if (timeoutMs !== undefined) meta.timeoutMs = timeoutMs
    if (queued) meta.queued = ++this.queuePlace
    const run = new Run(this.host, meta, version.compiled, version.def)
    // Written with the run's first events (a run that ends in this macrotask writes its end meta
    // only); a durable store acknowledges it from disk.
    // The lease first: the broker has it before the run's meta, which other processes look for,
    // and the run's records wait for its answer (only the lease's holder writes them).
    if (this.shared !== undefined) {
      // A start of this id lost here before (the winner never wrote the run) no longer speaks for it.
      this.history.clearFailure(id)
      this.shared.history.behind(id, this.shared.leases.claim(id))
    }
    const ack = putFirstRecord(this.history, meta)
    this.runs.set(id, run)
    if (queued) this.enqueue(run)
    else {
      this.count(workflow, 1)
      try {
        run.begin()
      } catch (error) {
        // The core refused the start (CAPACITY_EXCEEDED): no run is left behind, nor its lease.
        this.runs.delete(id)
        this.count(workflow, -1)
        deleteRecord(this.history, id)
        if (this.shared !== undefined) {
          void this.shared.leases.release(id)
          this.shared.history.forget(id)
        }
        if (ack instanceof Promise) ack.catch(() => {})
        throw error
      }
    }
    try {
      await ack
    } catch (error) {
      // Another process started the same id first (`shared`): this start is that run.
      if (this.shared === undefined || this.runs.has(id)) throw error
      this.assertOpen()
      const other = await this.startedElsewhere(id, isOrreryError(error, 'VERSION_CONFLICT'))
      if (other !== undefined) return sameWorkflow(other, workflow) as WorkflowRun<O>
      this.assertOpen()
      throw error
    }
    return WorkflowRun.live<O>(run, this.history, this.shared?.requests)
  }

  /**
   * Run `id` as another process started it (`shared`): from the mirror, else read from the
   * broker, else, with `wait` (this start lost the id to another process, whose record may not be
   * written yet: its owner writes it once the broker took its lease), as the change feed brings
   * its first record within a lease's length.
   */
  private async startedElsewhere(id: string, wait: boolean): Promise<WorkflowRun | undefined> {
    const { history, leases } = this.shared!
    const key = `run/${id}`
    let stop = () => {}
    // Watched before the read: a record written between the two is not missed.
    const written = wait
      ? new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, leases.leaseMs)
          const watching = history.ns.watch(key).subscribe({ next: () => resolve(), error: () => resolve(), complete: resolve })
          stop = () => {
            clearTimeout(timer)
            watching.unsubscribe()
          }
        })
      : undefined
    try {
      if (this.find(id) === undefined) await history.ns.fetch(key).catch(() => undefined)
      if (this.find(id) === undefined && written !== undefined && !this.closed) await written
    } finally {
      stop()
    }
    return this.closed ? undefined : this.find(id)
  }

  /** Whether a new run of `workflow` may begin now: under its limit, and none queued before it. */
  private hasPlace(workflow: string): boolean {
    const limit = this.limits.get(workflow)
    if (limit === undefined) return true
    return (this.queues.get(workflow)?.length ?? 0) === 0 && (this.active.get(workflow) ?? 0) < limit
  }

  private count(workflow: string, by: number): void {
    this.active.set(workflow, (this.active.get(workflow) ?? 0) + by)
  }

  private enqueue(run: Run): void {
    const name = run.meta.definition
    const queue = this.queues.get(name)
    if (queue) queue.push(run)
    else this.queues.set(name, [run])
  }

  /** A queued run taken over from another process: before those of its workflow queued after it. */
  private enqueueInPlace(run: Run): void {
    const queue = this.queues.get(run.meta.definition)
    const place = run.meta.queued ?? 0
    let at = queue?.length ?? 0
    while (at > 0 && (queue![at - 1]!.meta.queued ?? 0) > place) at--
    if (queue === undefined || at === queue.length) this.enqueue(run)
    else queue.splice(at, 0, run)
  }

  /** Begins queued runs of `workflow`, in start order, while there is room under its limit. */
  private beginQueued(workflow: string): void {
    const queue = this.queues.get(workflow)
    if (!queue) return
    const limit = this.limits.get(workflow) ?? Infinity
    while (queue.length > 0 && (this.active.get(workflow) ?? 0) < limit && !this.closed) {
      const run = queue.shift()!
      this.count(workflow, 1)
      try {
        run.dequeue()
      } catch (error) {
        // The core refused to start it (all its runs are taken): it keeps its place and tries
        // again when a run of any workflow ends.
        this.count(workflow, -1)
        queue.unshift(run)
        this.starved.add(workflow)
        this.failed(`queued run ${run.id} could not begin`, error)
        break
      }
    }
    if (queue.length === 0) this.queues.delete(workflow)
  }

  /**
   * What a run needs before anything of it runs, in its workflow and in every child workflow it
   * may start (each at its newest version, as a child step starts it): each local step's (and
   * compensation's) function registered (`STEP_NOT_REGISTERED`), each child's workflow defined
   * here (`WORKFLOW_NOT_FOUND`: a child starts by name from this runtime's definitions, so one
   * only in the store is not found either), and a mesh for the nodes that call one (a capability
   * step, a scatterGather, a delegate: `INVALID_OPTION`). A delegate's runs are the agent's
   * choice, so their workflows cannot be known here.
   */
  private checkRegistered(compiled: CompiledWorkflow): void {
    // Made only when a child is met: the common start, of a workflow without children, allocates nothing.
    let seen: Set<CompiledWorkflow> | undefined
    let todo: CompiledWorkflow[] | undefined
    for (let next: CompiledWorkflow | undefined = compiled; next !== undefined; next = todo?.pop()) {
      const name = next.definition.name
      for (const node of next.nodes) {
        if (node.kind === 'child') {
          const version = this.newest.get(node.workflow)
          if (version === undefined) {
            throw new OrreryError(
              'WORKFLOW_NOT_FOUND',
              `child node ${node.id} of workflow ${name} starts workflow ${JSON.stringify(node.workflow)}, which is not defined (wf.define it first)`,
              { details: { workflow: node.workflow, node: node.id, parent: name } },
            )
          }
          const child = this.versions.get(versionKey(node.workflow, version))?.compiled
          if (child !== undefined && child !== compiled && !seen?.has(child)) {
            seen ??= new Set()
            todo ??= []
            seen.add(child)
            todo.push(child)
          }
        } else if (!this.mesh && (node.kind === 'delegate' || node.kind === 'scatterGather' || (node.kind === 'step' && 'capability' in node.run))) {
          throw new OrreryError('INVALID_OPTION', `node ${node.id} of workflow ${name} calls a capability, but these workflows were opened without a mesh`, {
            details: { option: 'mesh', node: node.id, workflow: name },
          })
        } else if (node.kind === 'step' && 'fn' in node.run && !this.steps.has(node.run.fn)) {
          throw new OrreryError('STEP_NOT_REGISTERED', `step ${node.id} of workflow ${name} calls ${JSON.stringify(node.run.fn)}, which is not registered`, {
            details: { step: node.id, fn: node.run.fn, workflow: name },
          })
        }
      }
    }
  }

  /** Why a capability's version range does not parse, by the mesh's own parser (none without a mesh). */
  private rangeError(capability: string): string | undefined {
    try {
      this.mesh?.registry.compile(capability)
      return undefined
    } catch (error) {
      // Only the range's own fault makes the definition invalid (a closed mesh is no fault of it).
      return error instanceof OrreryError && error.code === 'INVALID_VERSION' ? error.message : undefined
    }
  }

  private async startChild(workflow: string, input: unknown, id: string): Promise<ChildHandle> {
    let child: WorkflowRun
    try {
      child = await this.start(workflow, input, { id })
    } catch (error) {
      throw permanentChildError(error, id)
    }
    return { result: () => child.result(), cancel: () => void child.cancel().catch(() => {}) }
  }

  private find(id: string): WorkflowRun | undefined {
    const run = this.runs.get(id)
    if (run) return WorkflowRun.live(run, this.history, this.shared?.requests)
    const meta = this.history.meta(id)
    if (meta === undefined) return undefined
    // Unfinished, and driven by another process: signals, cancels and the result go through the broker.
    if (this.shared !== undefined && !FINAL_STATUSES.has(meta.status as never)) return WorkflowRun.remote(meta, this.history, this.shared.requests)
    return WorkflowRun.stored(meta, this.history)
  }

  /** A run by id: running here, or recorded in the store. */
  get<O = unknown>(id: string): WorkflowRun<O> | undefined {
    this.assertOpen()
    text(id, 'id')
    return this.find(id) as WorkflowRun<O> | undefined
  }

  /**
   * Every workflow version defined here, given to `start`, or kept in the store, by name then
   * version: the definitions as JSON data (what a dashboard draws).
   */
  definitions(): WorkflowDefinition[] {
    this.assertOpen()
    const out = new Map<string, WorkflowDefinition>()
    for (const definition of this.history.definitions()) out.set(versionKey(definition.name, definition.version), definition)
    for (const [key, version] of this.versions) if (!out.has(key)) out.set(key, version.compiled.definition)
    return [...out.values()].sort((a, b) => (a.name === b.name ? compareText(a.version, b.version) : compareText(a.name, b.name)))
  }

  /** The runs recorded in the store, by id; `status` and `definition` (a name) filter them. */
  list(filter: { status?: RunStatus; definition?: string } = {}): RunInfo[] {
    this.assertOpen()
    const f = checkOptions(filter, 'filter', 'argument', ['status', 'definition'])
    if (f.status !== undefined) oneOf(f.status, RUN_STATUS_NAMES, 'status')
    if (f.definition !== undefined) text(f.definition, 'definition', {}, 'option')
    return readRecords(this.history)
      .filter((m) => (f.status === undefined || m.status === f.status) && (f.definition === undefined || m.definition === f.definition))
      .map(infoOf)
  }

  /** Who {@link watchRuns} tells. */
  private readonly runWatchers = new Set<(run: RunInfo) => void>()

  /**
   * @internal Calls `onRun` with a run's listing each time its record is written (by this
   * process, or, `shared`, by any: what the mirror takes), until the returned function is called.
   * A record may be written again with the same status: the caller tells changes apart.
   */
  watchRuns(onRun: (run: RunInfo) => void): () => void {
    // Shared, the mirror's feed brings this process's writes too: it alone is listened to.
    const source: { onMeta: ((meta: RunMeta) => void) | undefined } = this.shared?.history ?? this.history
    if (this.runWatchers.size === 0) {
      source.onMeta = (meta) => {
        const info = infoOf(meta as RunRecord)
        for (const watcher of [...this.runWatchers]) {
          try {
            watcher(info)
          } catch (error) {
            this.failed('a watcher of run statuses threw', error)
          }
        }
      }
    }
    this.runWatchers.add(onRun)
    return () => {
      if (this.runWatchers.delete(onRun) && this.runWatchers.size === 0) source.onMeta = undefined
    }
  }

  /**
   * Stops: running attempts are aborted and waiting callers hear `CLOSED`. Their runs stay
   * recorded: workflows opened again on the same store go on with them.
   */
  close(): void {
    if (this.closed) return
    this.closed = true
    // This turn's events go to the store before it may close.
    this.history.flush()
    this.timer.cancel()
    if (this.resumeTimer !== undefined) clearTimeout(this.resumeTimer)
    for (const run of this.runs.values()) run.abandon()
    this.runs.clear()
    this.queues.clear()
    this.active.clear()
    this.byHandle.clear()
    this.core.close()
    if (this.shared === undefined) {
      this.ownStore?.close()
      this.unclaim()
    } else this.released = this.release(this.shared)
    this.onClose?.(this)
  }

  /**
   * @internal Settles once a closed shared workflows' writes were answered and its leases
   * given up (other processes take the runs at once): `Orrery.shutdown()` waits for it.
   */
  released: Promise<void> = Promise.resolve()

  /** Gives up the leases once what was written is on the broker (a taker replays all of it), then the namespace. */
  private async release(shared: Shared): Promise<void> {
    shared.leases.stop()
    shared.requests.stop()
    shared.history.unfollow()
    try {
      await shared.history.settled()
      await shared.leases.releaseAll()
    } finally {
      shared.history.ns.close()
      this.ownStore?.close()
    }
  }

  /** Shares the runs of a strong namespace with other processes (`shared`), taking over those whose lease ran out with `resume`. */
  private share(history: SharedHistory, owner: string, leaseMs: number, resume: boolean): void {
    for (const [name, limit] of readLimits(this.history)) this.limits.set(name, limit)
    const leases = new Leases(history.ns, owner, leaseMs, {
      orphans: () => this.orphans(),
      adopt: (id) => this.adopt(id),
      lost: (id, error) => this.lose(id, error),
    })
    // A run lost here ended elsewhere: nothing kept for it here is needed any more.
    history.onGone = (id) => {
      if (this.runs.has(id)) return
      this.history.clearFailure(id)
      leases.forget(id)
    }
    history.onLost = (id, error) => {
      leases.rest(id)
      this.lose(id, error)
    }
    const requests = new RunRequests(history.ns, this.history, {
      live: (id) => this.runs.get(id),
      signalsOf: (meta) => this.stored(meta.definition, meta.version).compiled.signals,
      failed: (what, error) => this.failed(what, error),
    })
    this.shared = { history, leases, requests }
    history.follow()
    this.history.runSettled = (id) => history.settledRun(id)
    this.host.fence = async (id) => {
      await this.history.recorded(id)
    }
    // A request's record goes in the run's order of writes, right behind the signal's event: it
    // is on the broker only while that event is in the run's current generation (drain's check).
    this.host.taken = (id, request) => {
      this.history.flush()
      history.deleteInTurn(id, request)
    }
    leases.start(resume)
    requests.start()
  }

  /** Unfinished runs of the shared namespace these workflows do not drive. */
  private *orphans(): Iterable<string> {
    if (this.closed || this.shared === undefined) return
    for (const id of this.shared.history.unfinished()) if (!this.runs.has(id)) yield id
  }

  /**
   * The lease of run `id` is ours: once the writes of an earlier tenure of it here (lost) are
   * answered, its history is replayed and it goes on here.
   */
  private adopt(id: string): void {
    const { history, leases } = this.shared!
    const held = leases.holding(id)
    void history.settledRun(id).then(() => {
      // Lost meanwhile (its lease taken, or let go, then taken again: that adoption goes on).
      if (!this.closed && held !== undefined && leases.holding(id) === held) this.adoptNow(id)
    })
  }

  private adoptNow(id: string): void {
    const shared = this.shared!
    const meta = readRecord(this.history, id)
    if (this.closed || meta === undefined || FINAL_STATUSES.has(meta.status as never) || this.runs.has(id)) {
      void shared.leases.release(id)
      return
    }
    shared.history.adopt(id)
    // What an earlier tenure here failed to write (it lost the run then) no longer speaks for it.
    this.history.clearFailure(id)
    const restored: Run[] = []
    const queued: Run[] = []
    if (!this.revive(meta, restored, queued)) {
      // Left to a process that can restore it (one with its version in the store).
      shared.leases.rest(id)
      void shared.leases.release(id)
      return
    }
    for (const run of queued) {
      this.queuePlace = Math.max(this.queuePlace, run.meta.queued ?? 0)
      this.enqueueInPlace(run)
      this.beginQueued(run.meta.definition)
    }
    try {
      for (const run of restored) run.resume()
      this.pump()
    } catch (error) {
      this.failed(`resuming run ${id} failed`, error)
    }
    // Signals and cancels other processes sent while nobody drove it.
    shared.requests.drain(id)
  }

  /** Another process drives run `id` now: it stops here, its waiters hear `error` (VERSION_CONFLICT). */
  private lose(id: string, error: OrreryError): void {
    const shared = this.shared!
    shared.history.disown(id, error)
    void shared.leases.release(id)
    const run = this.runs.get(id)
    if (run === undefined) return
    this.runs.delete(id)
    if (run.handle >= 0) {
      this.byHandle.delete(run.handle)
      this.core.release(run.handle)
    }
    const name = run.meta.definition
    if (run.began) this.count(name, -1)
    else {
      const queue = this.queues.get(name)
      const at = queue?.indexOf(run) ?? -1
      if (at >= 0) queue!.splice(at, 1)
    }
    run.abandon(error)
    this.beginQueued(name)
  }

  /** Replays every unfinished run of the store; their steps go on in the next macrotask. */
  private restore(): void {
    const restored: Run[] = []
    const queued: Run[] = []
    for (const [name, limit] of readLimits(this.history)) this.limits.set(name, limit)
    for (const meta of readRecords(this.history)) {
      if (FINAL_STATUSES.has(meta.status as never)) continue
      if (this.revive(meta, restored, queued) && meta.status === 'queued') this.queuePlace = Math.max(this.queuePlace, meta.queued ?? 0)
    }
    queued.sort((a, b) => (a.meta.queued ?? 0) - (b.meta.queued ?? 0))
    for (const run of queued) this.enqueue(run)
    if (restored.length === 0 && queued.length === 0) return
    this.resumeTimer = setTimeout(() => {
      this.resumeTimer = undefined
      if (this.closed) return
      try {
        for (const run of restored) run.resume()
        // Places that ended before the crash and were not yet given to queued runs.
        for (const name of [...this.queues.keys()]) this.beginQueued(name)
        // Arms the timer again for what came due while the resume waited (fireDue left it).
        this.pump()
      } catch (error) {
        this.failed('resuming runs failed', error)
      }
    }, 0)
  }

  /**
   * Rebuilds an unfinished run from its history: a queued one goes to `queued`, a running one
   * (replayed) to `restored` unless its history ends it. False if it cannot be restored.
   */
  private revive(meta: RunRecord, restored: Run[], queued: Run[]): boolean {
    let run: Run | undefined
    try {
      const version = this.stored(meta.definition, meta.version)
      run = new Run(this.host, meta, version.compiled, version.def)
      this.runs.set(meta.id, run)
      if (meta.status === 'queued') {
        queued.push(run)
        return true
      }
      const from = meta.from ?? 1
      // Counted before the replay: a run whose end is in its history ends in it (and counts down).
      this.count(meta.definition, 1)
      run.began = true
      run.replay(currentEvents(this.history, meta.id, from))
      // A crash in the middle of a continueAsNew can leave the ended generation's events behind.
      purgeEarlier(this.history, meta.id, from)
      if (run.status === 'running') restored.push(run)
      return true
    } catch (error) {
      // One run that cannot be restored (its version gone from the store) leaves the others
      // be: it stays recorded as running, and `get` finds it there.
      this.runs.delete(meta.id)
      if (run?.began && run.status === 'running') this.count(meta.definition, -1)
      if (run !== undefined && run.handle >= 0) this.byHandle.delete(run.handle)
      this.failed(`run ${meta.id} could not be restored`, error)
      return false
    }
  }

  /**
   * Resolves once every event recorded so far is in the store, and on disk with a durable store.
   * (A macrotask's events are written on the next one; acknowledgements wait for them anyway.)
   */
  async flushed(): Promise<void> {
    this.assertOpen()
    this.history.flush()
    await this.shared?.history.settled()
    await this.store.flushed()
  }

  /** Hands every record the core has queued to its run; re-entrant calls leave it to the loop running. */
  private pump(): void {
    if (this.pumping || this.closed) return
    this.pumping = true
    try {
      for (;;) {
        // A view of the engine's buffer: handled before the next drain (a record's handling calls
        // the core, never drains it).
        const records = this.core.drainView()
        if (records.length === 0) break
        for (let at = 0; at < records.length; at += RECORD_WORDS) this.byHandle.get(records[at + 1]!)?.handleRecord(records, at)
      }
    } finally {
      this.pumping = false
    }
    // Events go to subscribers once the core is drained: a subscriber may call back in.
    while (this.toDeliver.size > 0) {
      const runs = [...this.toDeliver]
      this.toDeliver.clear()
      for (const run of runs) run.deliver()
    }
    if (this.closed) return
    this.timer.arm(this.core.nextDeadline())
  }

  private fireDue(): void {
    // Restored runs go on first: `outstanding` executes again what is in flight, so an attempt a
    // timer started before it (a due retry) would run twice.
    if (this.closed || this.resumeTimer !== undefined) return
    try {
      const now = this.clock()
      const due = this.core.due(now)
      for (let i = 0; i < due.length; i += 2) {
        const run = this.byHandle.get(due[i]!)
        if (run) run.fire(due[i + 1]!, now)
        else this.core.fire(due[i]!, due[i + 1]!, now)
      }
      this.pump()
    } catch (error) {
      // Thrown from a timer it would end the process (a store closed under running workflows,
      // an engine that failed): reported, and no timer is armed again.
      this.failed('a workflow timer failed', error)
    }
  }

  /** @internal Times every step attempt's end into `timer` (the Orrery's metrics), or no more with undefined. */
  timeSteps(timer: RunHost['stepTimed']): void {
    this.host.stepTimed = timer
  }

  /** Work no caller waits for failed: printed (thrown, it would end the process). */
  private failed(what: string, error: unknown): void {
    console.error(`Orrery: ${what}:`, error)
  }

  private ended(run: Run): void {
    this.runs.delete(run.id)
    if (this.shared !== undefined) {
      const { history, leases, requests } = this.shared
      // Given up once its end is on the broker: a taker would find it unfinished before.
      void history
        .settledRun(run.id)
        .then(() => {
          requests.ended(run.id)
          return leases.release(run.id)
        })
        .catch((error: unknown) => {
          // The namespace closed under the workflows (the store closed first): nothing to give up.
          if (!isOrreryError(error, 'CLOSED')) this.failed(`giving up run ${run.id}'s lease failed`, error)
        })
      history.forget(run.id)
    }
    const name = run.meta.definition
    if (run.handle >= 0) {
      this.byHandle.delete(run.handle)
      this.core.release(run.handle)
    }
    if (!run.began) {
      // Cancelled while queued: it leaves its queue.
      const queue = this.queues.get(name)
      const at = queue?.indexOf(run) ?? -1
      if (at >= 0) queue!.splice(at, 1)
      return
    }
    this.count(name, -1)
    if (this.resumeTimer !== undefined) return
    this.beginQueued(name)
    if (this.starved.size === 0) return
    for (const starved of [...this.starved]) {
      this.starved.delete(starved)
      this.beginQueued(starved)
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new OrreryError('CLOSED', 'these workflows are closed')
  }
}

/** What `shared` workflows keep: the history on the broker, the owner leases, and requests to runs driven elsewhere. */
interface Shared {
  readonly history: SharedHistory
  readonly leases: Leases
  readonly requests: RunRequests
}

/** What a version's runs run, as canonical JSON. */
function content(definition: WorkflowDefinition): string {
  const { name, root, output, timeoutMs } = definition
  return canonicalJson({ name, root, output, timeoutMs })
}

function versionKey(name: string, version: string): string {
  return `${name}\u0000${version}`
}

/** The `shared` option, checked: its transport is checked when its namespace opens. */
function checkShared(given: SharedWorkflowsOptions): Required<SharedWorkflowsOptions> {
  const o = checkOptions(given, 'shared', 'option', SHARED_KEYS)
  const transport = text(o.transport, 'transport', { nonEmpty: true }, 'option')
  const leaseMs = o.leaseMs === undefined ? DEFAULT_LEASE_MS : int(o.leaseMs, 'leaseMs', { min: 100 }, 'option')
  const owner = o.owner === undefined ? runId() : text(o.owner, 'owner', { nonEmpty: true }, 'option')
  return { transport, leaseMs, owner }
}

/** A run's listing, from its record. */
function infoOf({ id, definition, version, status, generation, startedAt, finishedAt }: RunRecord): RunInfo {
  return { id, definition, version, status, generation: generation ?? 1, startedAt, ...(finishedAt === undefined ? {} : { finishedAt }) }
}

/** `run`, when it is a run of `workflow`; else `RUN_EXISTS` (its id was started with another workflow). */
function sameWorkflow(run: WorkflowRun, workflow: string): WorkflowRun {
  if (run.definition.name === workflow) return run
  throw new OrreryError('RUN_EXISTS', `run ${run.id} exists already, started with workflow ${run.definition.name}`, {
    details: { runId: run.id, workflow: run.definition.name },
  })
}
