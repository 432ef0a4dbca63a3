/**
 * The public API shared by every entry (`node.ts`, `browser.ts`). An entry injects the engine
 * loader for its environment with {@link useEngineLoader}; the facade never imports an engine.
 */
import type { Backend, EngineName } from './engines/backend.js'
import { Bus } from './bus/bus.js'
import { callable, intOr, keysOf, msOr, oneOf, options as checkOptions } from './check.js'
import { OrreryError } from './errors.js'
import { checkManifest } from './engines/check-manifest.js'
import { DEFAULTS, LIMITS } from './engines/manifest.js'
import { Mesh, type MeshOptions } from './agents/mesh.js'
import { checkStoreOptions, Store, STORE_KEYS, type CheckedStoreOptions, type StoreOptions } from './store/store.js'
import { Workflows, type WorkflowsOptions } from './workflows/runtime.js'
import { checkTransports, type Bindings, type TransportOptions } from './transports/config.js'
import { type ShutdownOutcome, Transports } from './transports/link.js'
import { inMemoryOnly } from './transports/durable.js'
import { Control, type ControlOptions } from './control/control.js'
import { Tracing, type TracingOptions } from './observe/tracing.js'
import { checkMetrics, Metrics, type MetricsOptions } from './observe/metrics.js'
import { observeBus, observeMesh, observeWorkflows } from './observe/attach.js'
import type { PromRegistry } from './observe/prom.js'

export { Bus, Published, PublishResult } from './bus/bus.js'
export type { BatchItem, BusEvent, Reply } from './bus/bus.js'
export type { ChannelOptions, PublishOptions, RespondOptions, StartFrom, SubscribeOptions } from './bus/options.js'
export { Group } from './bus/group.js'
export type { Delivery, GroupOptions } from './bus/group.js'
export type { Message } from './bus/message.js'
export { Stream } from './stream.js'
export { CAPABILITIES, TRANSPORT_CAPABILITIES, TRANSPORT_KINDS } from './transports/capabilities.js'
export type { Capability, CapabilitySet, TransportKind } from './transports/capabilities.js'
export type {
  Bindings,
  DurableTransportOptions,
  KafkaTransportOptions,
  MemoryTransportOptions,
  NatsRequests,
  NatsTransportOptions,
  RedisTransportOptions,
  TransportOptions,
} from './transports/config.js'
export type { ChannelBinding, RefusalReport, ShutdownOutcome } from './transports/link.js'
export type { Refusal } from './transports/driver.js'
export type { SigningOptions } from './transports/signing.js'
export type { Pem, TlsOptions } from './transports/tls.js'
export { Store, Transaction } from './store/store.js'
export type { RemoteChange, StoreEvent, StoreOptions, TxnWriteOptions } from './store/store.js'
export type { Ack } from './store/context.js'
export { Namespace } from './store/namespace.js'
export { StrongNamespace, StrongTransaction } from './store/strong.js'
export type { StrongCreateOptions, StrongDeleteOptions, StrongUpdateOptions, StrongWatchOptions, StrongWriteOptions } from './store/strong.js'
export type { ReplicatedOptions, StrongOptions } from './store/shared.js'
export type { NamespaceOptions, WatchOptions, WriteOptions } from './store/namespace.js'
export type { Change, Entry, Stamp } from './store/records.js'
export { Topic } from './bus/topic.js'
export type { TopicOptions } from './bus/topic.js'
export type { ChannelStats, EngineName, GroupStats, OverflowPolicy, PendingEntry, SubscriberStats } from './engines/backend.js'
export { Agent, FatalError, PermanentError, silentLogger } from './agents/agent.js'
export type { AgentClass, AgentContext, Handler, HandlerContext, HealthReport, Logger } from './agents/agent.js'
export type { AgentState, RateLimit, RetryOptions } from './agents/runner.js'
export type { ConfigSources } from './agents/config.js'
export { Mesh } from './agents/mesh.js'
export type { AgentFactory, AgentHandle, MeshEvent, MeshOptions, SpawnOptions } from './agents/mesh.js'
export type { SalvageReport } from './agents/salvage.js'
export type { AutoscaleEvent, AutoscaleOptions, Autoscaler } from './agents/autoscale.js'
export type { PromRegistry } from './observe/prom.js'
export type { MetricsOptions } from './observe/metrics.js'
export { Registry } from './agents/registry.js'
export type {
  AgentInfo,
  AgentQuery,
  AgentRegistration,
  BackoffOptions,
  BreakerOptions,
  BreakerState,
  CapabilitySpec,
  Health,
  LivenessOptions,
  RegistryEvent,
  RemoteTag,
  Strategy,
} from './agents/registry.js'
export type { RouteOptions } from './agents/router.js'
export { Supervisor } from './agents/supervisor.js'
export type { ChildSpec, RestartStrategy, SupervisorEvent, SupervisorSpec } from './agents/supervisor.js'
export { OrreryError, isOrreryError } from './errors.js'
export type { ErrorCode } from './errors.js'
export { ERROR_CODES } from './engines/manifest.js'
export type { CodecName, Kind, Priority } from './frame.js'
export type { InferOutput, StandardSchemaV1 } from './schema.js'
export {
  branch,
  capability,
  child,
  continueAsNew,
  delegate,
  fn,
  forEach,
  loop,
  parallel,
  pipeline,
  quorum,
  scatterGather,
  sequence,
  sleep,
  step,
  typeOnly,
  waitFor,
  when,
  workflow,
} from './workflows/builder.js'
export type { BranchArm, OtherwiseOutput, StepOptions, WorkflowOptions } from './workflows/builder.js'
export type {
  Compensation,
  Condition,
  ConditionOp,
  ContinueAsNewNode,
  DelegateNode,
  AnySignals,
  HasOutput,
  InputSpec,
  Joined,
  LastOutput,
  BranchDraft,
  BranchNode,
  CapabilityRef,
  ChildNode,
  FnRef,
  ForEachDraft,
  ForEachNode,
  Join,
  LiteralSpec,
  LoopDraft,
  LoopNode,
  MappingSpec,
  NodeDraft,
  NodeOutput,
  NodeSignals,
  ParallelDraft,
  ParallelNode,
  ParallelOutput,
  Phantom,
  PipelineDraft,
  PipelineFields,
  PipelineNode,
  Ref,
  RetryPolicy,
  ScatterGatherNode,
  SequenceDraft,
  SequenceNode,
  SignalMap,
  SleepNode,
  StepNode,
  StepRun,
  Typed,
  TypedSignals,
  TypeOnly,
  WaitForNode,
  WaitSignal,
  WorkflowDefinition,
  WorkflowInput,
  WorkflowNode,
  WorkflowOutput,
  WorkflowSignals,
} from './workflows/definition.js'
export { Workflows } from './workflows/runtime.js'
export type {
  DefineOptions,
  RunInfo,
  SchemaInput,
  SchemaResult,
  SharedWorkflowsOptions,
  StartArgs,
  StartOptions,
  StepSchemas,
  WorkflowsOptions,
} from './workflows/runtime.js'
export { WorkflowRun } from './workflows/handle.js'
export type { SignalArgs, SignalCall } from './workflows/handle.js'
export type { EventBase, FailureReason, StoredError, WorkflowEvent } from './workflows/history.js'
export type { RunStatus } from './workflows/records.js'
export { runState } from './workflows/state.js'
export type { HeldSignal, NodeInstanceState, NodeState, NodeStatus, RunState, RunStateMeta } from './workflows/state.js'
export { IDEMPOTENCY_HEADER } from './workflows/executor.js'
export { Control, DEFAULT_LIMIT, MAX_LIMIT } from './control/control.js'
export type { ControlHost, ControlOptions, ControlPublishOptions, NewControlOptions } from './control/control.js'
export type {
  AgentView,
  Base64Payload,
  ChannelView,
  ControlEvent,
  ControlSnapshot,
  DeadLetterView,
  DefinitionView,
  EntryView,
  GroupView,
  MessageView,
  NamespaceView,
  Overview,
  RunDetail,
  RunView,
} from './control/views.js'
export type {
  OtelApi,
  OtelAttributes,
  OtelAttributeValue,
  OtelContext,
  OtelSpan,
  OtelSpanContext,
  OtelSpanOptions,
  OtelTracer,
  TracingOptions,
} from './observe/tracing.js'
export type { StepContext, StepFunction } from './workflows/executor.js'

/** Options of {@link Orrery.create}. */
export interface OrreryOptions {
  /** Which engine runs the core. Node: `native` unless `ORRERY_ENGINE=wasm`; browsers: `wasm`. */
  engine?: EngineName
  /** Largest accepted message in bytes, frame included (default 10 MiB). */
  maxMessageBytes?: number
  /** The host clock in ms (default `Date.now`); pass a fake one to control TTLs and timeouts in tests. */
  clock?: () => number
  /**
   * Brokers channels may be bound to, by name: `{ main: { kind: 'redis', url: 'redis://…' } }`.
   * `create` connects each (see docs/transports.md).
   */
  transports?: Readonly<Record<string, TransportOptions>>
  /** Which channels go through which transport: exact names, or prefixes ending in `*` (`{ 'jobs.*': 'main' }`). */
  bindings?: Bindings
  /**
   * OpenTelemetry traces (docs/observability.md): `true` loads `@opentelemetry/api` and traces
   * on its global tracer provider; `{ api?, tracer? }` gives the module or the tracer. Off by
   * default; asked for without the package, `create` fails with UNSUPPORTED.
   */
  tracing?: boolean | TracingOptions
  /**
   * A prom-client Registry (Node) to fill with the metrics of this Orrery's bus, groups and
   * transports, and of the meshes and workflows opened on it (docs/observability.md); or
   * `{ registry, maxChannels }` to cap how many channels are labelled by name (default 200).
   */
  metrics?: PromRegistry | MetricsOptions
}

const ENGINES: readonly EngineName[] = ['native', 'wasm']
const CREATE_KEYS = keysOf<OrreryOptions>()(['engine', 'maxMessageBytes', 'clock', 'transports', 'bindings', 'tracing', 'metrics'])

type EngineLoader = (requested: EngineName | undefined) => Promise<Backend>
let loader: EngineLoader | undefined
const checked = new WeakSet<Backend>()

/** @internal Called by each entry file with its environment's engine loader. */
export function useEngineLoader(load: EngineLoader): void {
  loader = load
}

async function loadBackend(engine: EngineName | undefined): Promise<Backend> {
  if (!loader)
    throw new OrreryError('ENGINE_UNAVAILABLE', "no engine loader: import Orrery from 'orrery' (its node or browser entry), not from an internal file")
  const backend = await loader(engine)
  if (!checked.has(backend)) {
    checkManifest(backend.name, backend.manifestHash())
    checked.add(backend)
  }
  return backend
}

/** Options of {@link Orrery.shutdown}. */
export interface ShutdownOptions {
  /** How long work in hand may take to finish before what is left goes back to the brokers (ms, default 0). */
  drainMs?: number
}
const SHUTDOWN_KEYS = keysOf<ShutdownOptions>()(['drainMs'])

/** Options of {@link Orrery.openStore}: the store's, plus the engine and clock. */
export type OpenStoreOptions = StoreOptions & Pick<OrreryOptions, 'engine' | 'clock'>
const OPEN_STORE_KEYS = keysOf<OpenStoreOptions>()([...STORE_KEYS, 'engine', 'clock'])

function openStoreOn(backend: Backend, options: CheckedStoreOptions, clock: () => number): Store<boolean> {
  const { path, batched, maxValueBytes, history, replica, tombstoneMs, snapshot, maxClockDriftMs } = options
  const core = { maxValueBytes, history, replica, tombstoneMs }
  const store = Store.create<boolean>(
    path === undefined ? backend.createStore(core) : backend.openStore({ ...core, path, batched }),
    clock,
    maxClockDriftMs,
    tombstoneMs,
  )
  if (snapshot !== undefined) {
    try {
      // Throws for a snapshot that does not decode, durable or not (it imports nothing then).
      store.importOnOpen(snapshot)
    } catch (error) {
      // A snapshot that does not import leaves no store open behind the error.
      store.close()
      throw error
    }
  }
  return store
}

/** An in-process Orrery: one core, reached through one engine. */
export class Orrery {
  private constructor(
    /** @internal The engine behind this Orrery: for the facade's own modules and Orrery's tests, not for users. */
    readonly backend: Backend,
    readonly bus: Bus,
    private readonly clock: () => number = Date.now,
    /** Its tracing, handed to the workflows it opens (its bus, groups and meshes reach it through the bus). */
    private readonly tracing: Tracing | undefined = undefined,
  ) {}

  /**
   * Loads the engine and opens a store: in memory, or durable on disk with `path` (native
   * engine), where every write is acknowledged (its Promise resolves) once it is on disk.
   */
  static async openStore(options: OpenStoreOptions & { path: string }): Promise<Store<true>>
  static async openStore(options?: OpenStoreOptions & { path?: undefined }): Promise<Store<false>>
  static async openStore(options: OpenStoreOptions = {}): Promise<Store<boolean>> {
    // Checked before the engine loads: nothing wrong-typed may reach it.
    const checked = checkStoreOptions(options, OPEN_STORE_KEYS)
    const clock = options.clock === undefined ? Date.now : callable<() => number>(options.clock, 'clock', 'option')
    return openStoreOn(await loadBackend(options.engine), checked, clock)
  }

  /**
   * Opens a store on this Orrery's engine and clock (see {@link Orrery.openStore}). The Orrery's
   * `shutdown()` and `close()` close it (after `shutdown()` waited for what it had still to send).
   */
  openStore(options: StoreOptions & { path: string }): Store<true>
  openStore(options?: StoreOptions & { path?: undefined }): Store<false>
  openStore(options: StoreOptions = {}): Store<boolean> {
    const store = openStoreOn(this.backend, checkStoreOptions(options), this.clock)
    // Its shared namespaces (`store.shared`) travel on this Orrery's transports, so it closes
    // before they do (a closed Orrery's store keeps no broker connection of its own open).
    const stores = this.stores
    store.linkBus(this.bus, () => stores?.delete(store))
    stores?.add(store)
    return store
  }

  /** The stores opened on this Orrery and not closed (undefined once it closes). */
  private stores: Set<Store<boolean>> | undefined = new Set()

  /**
   * Starts an agent mesh on this Orrery: its registry, routing, agents and supervisors. Agents
   * are fed through this Orrery's bus.
   */
  async mesh(options?: MeshOptions): Promise<Mesh> {
    if (this.meshes === undefined) throw new OrreryError('CLOSED', 'this Orrery is closed')
    // The Orrery's registry, unless the mesh is given its own.
    const inherited = this.observed?.registry
    const own = options === undefined || (typeof options === 'object' && options !== null && options.metrics === undefined)
    const meshOptions = inherited !== undefined && own ? { ...options, metrics: inherited } : options
    let unobserve: (() => void) | undefined
    const mesh = await Mesh.create(this.backend, this.bus, this.clock, meshOptions, (m) => {
      this.meshes?.delete(m)
      unobserve?.()
    })
    // Its options were checked by `Mesh.create`, which declared its agents' metrics in the registry.
    const registry = meshOptions?.metrics
    if (registry !== undefined) unobserve = observeMesh(await Metrics.for(registry), mesh)
    // Closed while the mesh was made (its metrics load asynchronously): it stops at once.
    if (this.meshes === undefined) {
      mesh.close()
      throw new OrreryError('CLOSED', 'this Orrery is closed')
    }
    this.meshes.add(mesh)
    return mesh
  }

  /** The meshes started on this Orrery and not shut down (undefined once closed). */
  private meshes: Set<Mesh> | undefined = new Set()

  /**
   * Opens workflows on this Orrery: durable runs of workflow definitions whose history lives in
   * `store` (default: a new in-memory store), calling `mesh` for capability steps. On a store
   * with unfinished runs they go on (unless `resume: false`).
   */
  async workflows(options?: WorkflowsOptions): Promise<Workflows> {
    if (this.meshes === undefined) throw new OrreryError('CLOSED', 'this Orrery is closed')
    let unobserve: (() => void) | undefined
    const wf = await Workflows.open(
      this.backend,
      this.clock,
      options,
      () => this.openStore(),
      (w) => {
        this.flows.delete(w)
        unobserve?.()
      },
      this.tracing,
    )
    if (this.observed !== undefined) unobserve = observeWorkflows(this.observed.metrics, wf)
    this.flows.add(wf)
    return wf
  }

  /**
   * The control surface of this Orrery (docs/http.md): one object answering what the HTTP API,
   * the dashboard and the CLI ask, in plain JSON values, over its bus and the `mesh`, `workflows`
   * and `store` given. Closed with the Orrery.
   */
  control(options?: ControlOptions): Control {
    if (this.meshes === undefined) throw new OrreryError('CLOSED', 'this Orrery is closed')
    const checked = Control.checkOptions(options)
    // The registry this Orrery fills (`create({ metrics })`) is what `/metrics` serves, unless another is given.
    const metrics = checked.metrics ?? this.observed?.registry
    const control = new Control({ ...checked, ...(metrics === undefined ? {} : { metrics }), orrery: this })
    this.controls.add(control)
    return control
  }

  /** The controls made on this Orrery. */
  private readonly controls = new Set<Control>()

  /** The workflows opened on this Orrery and not closed. */
  private readonly flows = new Set<Workflows>()

  /** Its metrics (`metrics` given to `create`) until it closes. */
  private observed: { readonly registry: PromRegistry; readonly metrics: Metrics; readonly release: () => void } | undefined

  /** Loads the engine (once per process) and starts an Orrery on a new core. */
  static async create(options: OrreryOptions = {}): Promise<Orrery> {
    const o = checkOptions(options, 'options', 'argument', CREATE_KEYS)
    const max = intOr(o.maxMessageBytes, DEFAULTS.maxMessageBytes, 'maxMessageBytes', { min: LIMITS.minMessageBytes, max: LIMITS.maxMessageBytes })
    const engine = o.engine === undefined ? undefined : oneOf(o.engine, ENGINES, 'engine')
    const clock = o.clock === undefined ? Date.now : callable<() => number>(o.clock, 'clock', 'option')
    // Checked before anything loads or connects.
    const transports = checkTransports(o.transports, o.bindings)
    const observe = checkMetrics(o.metrics)
    const tracing = await Tracing.open(o.tracing)
    const backend = await loadBackend(engine)
    // Loaded before any broker is connected: without prom-client (a page) nothing opens.
    const metrics = observe === undefined ? undefined : await Metrics.for(observe.registry)
    // Refused before any broker is connected: an unreachable one must not hide this.
    const durable = transports?.transports.find((t) => t.kind === 'durable')
    if (durable !== undefined && backend.name === 'wasm') throw inMemoryOnly(durable.name)
    const remote = transports === undefined ? undefined : await Transports.open(transports, backend.openNatsWire)
    try {
      const orrery = new Orrery(backend, Bus.create(backend.createBus({ maxMessageBytes: max }), clock, remote, tracing), clock, tracing)
      if (observe !== undefined && metrics !== undefined) {
        const bound = (transports?.transports ?? []).map(({ name, kind }) => ({ name, kind }))
        orrery.observed = { registry: observe.registry, metrics, release: observeBus(metrics, orrery.bus, bound, observe.maxChannels) }
      }
      return orrery
    } catch (error) {
      remote?.close()
      throw error
    }
  }

  /**
   * Joins, from a worker thread, the core another thread shared with `orrery.share()` (native
   * engine): same channels, groups and messages, no structured clone between threads.
   */
  static async attach(handle: number, options: { clock?: () => number } = {}): Promise<Orrery> {
    const backend = await loadBackend('native')
    const clock = options.clock ?? Date.now
    const bus = Bus.create(backend.attachBus(handle), clock)
    bus.enableWaker()
    return new Orrery(backend, bus, clock)
  }

  /** Which engine runs this Orrery's core. */
  get engine(): EngineName {
    return this.backend.name
  }

  /** Shares this core with worker threads: pass the handle to `Orrery.attach` there. */
  share(): number {
    return this.bus.share()
  }

  /**
   * Stops its meshes at once (agents stop as if they crashed: unacked messages stay in their
   * inboxes; use `mesh.shutdown()` first for a graceful stop), stops deliveries, fails waiting
   * requests with `CLOSED`, and releases this endpoint.
   */
  close(): void {
    // A stop under way (a drain) is cut: its outcome says so.
    if (this.stopping !== undefined) this.cut = true
    for (const store of this.closeAll()) store.close()
    this.unobserve()
    this.bus.close()
  }

  /** Set by a close() during this Orrery's own shutdown. */
  private cut = false

  /** Its bus leaves its registry's scrapes (a closed bus has no stats to read). */
  private unobserve(): void {
    this.observed?.release()
    this.observed = undefined
  }

  /**
   * A graceful stop for an Orrery with transports: its meshes and workflows stop, what it holds
   * of consumer groups on bound channels goes back to the broker at once (other processes take
   * it without waiting for the visibility timeout), the stores it opened send what their shared
   * namespaces have not sent yet, wait for it (`store.flushed()`: each publish bounded by its
   * transport's publishTimeoutMs; a failure is reported on the store's events) and close, every
   * publish is written, then connections close and everything else is as after `close()`.
   * Idempotent (a second call has the same outcome); without transports it is `close()` (after
   * the meshes' drain, with `drainMs`). A `close()` during it cuts it short: the outcome is then
   * `graceful: false`, with the errors so far (none during a drain).
   * Bounded: each step waits for a transport at most its publishTimeoutMs and a second, so a
   * broker that is down does not hold the stop; the outcome says whether all of it was done
   * (`graceful`) and, if not, what was not (`errors`, TRANSPORT_UNAVAILABLE each).
   *
   * `drainMs` (default 0) lets work in hand finish first, for at most that long, before the rest:
   * its groups on broker-bound channels read nothing new, while its meshes stop as
   * `mesh.shutdown()` does (running handlers finish, then their agents stop) and the groups'
   * members go on with what this process holds, until none is left or the time is up; stores,
   * workflows, subscribers and the bus stay as they are meanwhile. What is left then goes back
   * to the broker. So a process stopping (a deploy, a scale-down) does not have its work run
   * again elsewhere. The first call's `drainMs` holds: a later call (with or without one) waits
   * for the same stop. docs/transports.md says what a drain leaves to others.
   */
  shutdown(options?: ShutdownOptions): Promise<ShutdownOutcome> {
    let drainMs: number
    try {
      drainMs = msOr(checkOptions(options, 'options', 'argument', SHUTDOWN_KEYS).drainMs, 0, 'drainMs')
    } catch (error) {
      return Promise.reject(error)
    }
    this.stopping ??= this.shutdownOnce(drainMs)
    return this.stopping
  }

  private stopping: Promise<ShutdownOutcome> | undefined

  private async shutdownOnce(drainMs: number): Promise<ShutdownOutcome> {
    if (drainMs > 0) await this.drain(Date.now() + drainMs)
    if (this.cut) return { graceful: false, errors: [] }
    const flows = [...this.flows]
    const stores = this.closeAll()
    // While the bus still carries them: a failure is reported on the store's events. Shared
    // workflows give up their run leases (docs/workflows.md), so other processes take over at once.
    await Promise.allSettled([...flows.map((wf) => wf.released), ...stores.map((store) => store.flushed())])
    for (const store of stores) store.close()
    this.unobserve()
    const outcome = await this.bus.shutdown()
    return this.cut ? { graceful: false, errors: outcome.errors } : outcome
  }

  /**
   * Lets work in hand finish until `deadline` (see `shutdown`'s `drainMs`): groups read nothing
   * new, while the meshes stop their agents and the groups' members finish what this process holds.
   */
  private async drain(deadline: number): Promise<void> {
    const meshes = [...(this.meshes ?? [])]
    const timeout = Math.max(0, deadline - Date.now())
    let timer: ReturnType<typeof setTimeout> | undefined
    // A mesh's own stop may take longer (one begun before with a longer timeout, agents' onStop):
    // not waited for past the deadline; `closeAll` stops it at once then.
    const deadlinePassed = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeout)
    })
    await Promise.race([Promise.allSettled([this.bus.drain(deadline), ...meshes.map((mesh) => mesh.shutdown({ timeout }))]), deadlinePassed])
    clearTimeout(timer)
  }

  /** Stops the workflows and meshes opened on this Orrery; returns its stores still open, to close next. */
  private closeAll(): Store<boolean>[] {
    // Its meshes stop first, at once (their agents' unacked work stays queued for redelivery):
    // their heartbeat intervals and timers would otherwise keep the process alive.
    for (const control of this.controls) control.close()
    this.controls.clear()
    for (const wf of [...this.flows]) wf.close()
    const meshes = this.meshes
    this.meshes = undefined
    for (const mesh of meshes ?? []) mesh.close()
    const stores = [...(this.stores ?? [])]
    this.stores = undefined
    return stores
  }
}
