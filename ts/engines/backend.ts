/**
 * The interface every engine implements with the same semantics. The facade (`Orrery`, `Bus`)
 * speaks only to this, so the N-API and WebAssembly engines are interchangeable. The codes and
 * field orders below come from the generated `./manifest.ts` (`crates/core/src/manifest.rs`),
 * which the core's `bus::wire` reads too; they are re-exported here for the facade.
 */
import { type CHANNEL_STATS, FIELDS, type GROUP_STATS, type OVERFLOW, type PENDING_FIELDS, type SUBSCRIBER_STATS } from './manifest.js'

export {
  CHANNEL_STATS,
  EVENT_CONSUMER,
  EVENT_KINDS,
  GROUP_STATS,
  OVERFLOW,
  PENDING_FIELDS,
  REMOTE,
  REPLIED,
  REPLY_CONSUMER,
  ROUTE_REFUSED,
  START_MODES,
  SUBSCRIBER_STATS,
} from './manifest.js'

/** Which engine runs the core. */
export type EngineName = 'native' | 'wasm'

export type OverflowPolicy = keyof typeof OVERFLOW

/**
 * A channel's counters: the core's, then what a transport's `signing` refused of it (counted by
 * the TS side: `signatureRefused`, `replayRefused`; 0 where nothing is signed).
 */
export type ChannelStats = Record<(typeof CHANNEL_STATS)[number] | 'signatureRefused' | 'replayRefused', number>
export type SubscriberStats = Record<(typeof SUBSCRIBER_STATS)[number], number>
export type GroupStats = Record<(typeof GROUP_STATS)[number], number>
export type PendingEntry = Record<(typeof PENDING_FIELDS)[number], number>

/** The calls both bindings expose with the same names and arguments. */
export interface RawBus {
  channel(name: string): number
  configure(channel: number, maxCount: number, maxBytes: number, maxAge: number, dedupWindow: number, deadLetterExpired: boolean, now: number): void
  publish(batch: Uint8Array, now: number): number
  subscribe(channel: number, mode: number, value: number, buffer: number, overflow: number): number
  unsubscribe(id: number): void
  /**
   * Makes member `id` leave because it failed at `now` (its agent crashed): what it was delivered
   * `maxDeliveries` times is dead-lettered, the rest handed back. A subscriber is just removed.
   */
  abandon(id: number, now: number): void
  setPaused(id: number, paused: boolean): void
  group(channel: number, name: string, mode: number, value: number, buffer: number, overflow: number, visibility: number, maxDeliveries: number): number
  join(group: number, maxInFlight: number): number
  deleteGroup(group: number): void
  ack(member: number, seq: number, attempt: number): void
  nack(member: number, seq: number, attempt: number, delay: number, reason: string, now: number): void
  claim(group: number, member: number, minIdle: number, max: number, now: number): number
  pending(group: number, now: number): ArrayLike<number>
  request(batch: Uint8Array, timeout: number, now: number): number
  /** What became of a reply: a `REPLIED` code. */
  reply(batch: Uint8Array): number
  nextDeadline(): number
  hasPending(): boolean
  stats(channel: number): ArrayLike<number>
  subscriberStats(id: number): ArrayLike<number>
  groupStats(group: number): ArrayLike<number>
  lateReplies(): number
  /** Binds a channel (and its dead-letter channel) to transport id >= 1, before the channel's first use. */
  bind(channel: number, transport: number): void
  /** Takes in records a transport's driver read (the manifest's `REMOTE` layout); how many were applied. */
  ingest(batch: Uint8Array, now: number): number
  /** The egress records queued since the last call (`REMOTE` layout), a copy the caller owns; none: undefined (native: null). */
  drainEgress(): Uint8Array | null | undefined
  /** How many more deliveries a group's unpaused members can take now (free slots less its inbox). */
  groupRoom(group: number): number
  /** How many more records a mirrored channel can take in before its retention trims one a refusing subscriber has not read. */
  mirrorRoom(channel: number): number
}

/** The durable transport's file of a bus (native engine only; see ts/transports/durable.ts). */
export interface BusDiskCore {
  /** Keeps `channel` (and its dead-letter channel) on disk from now on; before its first use. */
  makeDurable(channel: number): void
  /** Whether `channel` is kept on disk (bound to the durable transport, or read back from its file). */
  isDurable(channel: number): boolean
  /** Asks for a commit of what changed since the last one (group commit: once per turn). */
  submit(): void
  /** Commits what changed and waits for it (the bus closes). */
  flush(): void
  /** `[ticket acknowledging every change so far, last ticket on disk]`; `[-1, -1]` once the disk failed. */
  tickets(): number[]
  /** Why the disk failed, if it did. */
  failure(): string | null | undefined
  /** Called with each committed ticket (-1: a commit failed); keeps Node running while set. */
  setListener(listener: ((committed: number) => void) | null): void
}

/** One bus inside an engine: the raw calls, error-translated, plus draining and sharing. */
export interface BusCore extends RawBus {
  /**
   * Opens the durable transport's file at `path`, reading every durable channel back into this
   * bus; before any channel is used. Absent where the engine cannot (wasm).
   */
  openDisk?(path: string): BusDiskCore
  /** The egress records queued since the last call (`REMOTE` layout), a copy the caller owns, or undefined when none wait. */
  drainEgress(): Uint8Array | undefined
  /**
   * Fires the deadlines due by `now`, then returns the next batch of records, or undefined when
   * none wait. The view stays valid (it is never written again).
   */
  drainRecords(now: number): Uint8Array | undefined
  /** Whether the last `drainRecords` left nothing behind (no need to call again). */
  readonly drainedAll: boolean
  /**
   * The epoch of the last drain, where an epoch counts the calls that may change which group
   * deliveries are current (a drain fires leases, a claim takes deliveries): every record of that
   * drain's batch was current in it. Tagged on a delivery, it tells `ackSoon` whether the delivery
   * can be stale by now.
   */
  readonly epoch: number
  /**
   * Acks as `ack` does. When nothing that could change it reached the core since the delivery was
   * drained (`drainedIn` is still the `epoch`), the ack cannot fail: it is queued to share one
   * crossing with others, sent before any other call (so reads see it).
   */
  ackSoon(member: number, seq: number, attempt: number, drainedIn: number): void
  /** A handle other threads attach with (native engine only). */
  share(): number
  /** Sets the function called when another thread gives this endpoint work (null clears it). */
  setWaker(wake: (() => void) | null): void
  /** Releases this endpoint. */
  free(): void
}

/** The store calls both bindings expose; requests and results travel through `io`. */
export interface RawStore {
  namespace(name: string): number
  setHistory(ns: number, keep: number): void
  writer(name: string): number
  writerName(id: number): string | null | undefined
  conflict(): ArrayLike<number>
  unwatch(id: number): void
  setWatchPaused(id: number, paused: boolean): void
  tick(now: number): void
  nextDeadline(): number
  revision(): number
  export(): Uint8Array
  import(bytes: Uint8Array): void
}

/** Options of a new store core. */
export interface StoreCoreOptions {
  maxValueBytes: number
  history: number
  replica: string
  tombstoneMs: number
}

/** The store calls that read their key, prefix or writes from `io` (both engines, `io` aside). */
export interface StoreIoCalls {
  write(count: number, now: number): number
  get(ns: number, keyLen: number, version: number, now: number): number
  history(ns: number, keyLen: number, now: number): number
  scan(ns: number, prefixLen: number, afterLen: number, values: boolean, now: number): number
  purge(ns: number, keyLen: number, now: number): number
  watch(ns: number, targetLen: number, prefix: boolean, mode: number, from: number, capacity: number): number
  merge(wall: number, logical: number, lww: boolean, now: number): number
}

/** One store inside an engine: the raw calls, error-translated, with `io` managed. */
export interface StoreCore extends RawStore, StoreIoCalls {
  /** Whether writes go to disk (and acknowledge through tickets). */
  readonly durable: boolean
  /** The largest value a write may carry, in bytes (the store's checked `maxValueBytes`). */
  readonly maxValueBytes: number
  /**
   * The request/result buffer, at least `min` bytes, contents kept. Valid until the next call
   * into the core (wasm memory may move); fetch it again after every call.
   */
  io(min?: number): Uint8Array
  /** A DataView over the current `io`. */
  view(): DataView
  /** The next batch of watch records (a copy that stays valid), or undefined when none wait. */
  drain(): Uint8Array | undefined
  /** Hands the changes staged in this turn to the disk writer (a group commit's batch). */
  submitDisk(): void
  /** The ticket that acknowledges every change so far (staged or queued for disk). */
  submitted(): number
  /** The ticket of the last change on disk. */
  committed(): number
  /** Why the disk failed, if it did. */
  diskFailure(): string | null | undefined
  /** Sets the function told each committed ticket (-1: a commit failed); null clears it. */
  setListener(listener: ((ticket: number) => void) | null): void
  /** Commits what is queued and releases the core. */
  close(): void
}

/** A mesh's settings, as the core takes them. */
export interface MeshCoreOptions {
  seed: number
  /** Heartbeat interval (ms), missed beats to degraded / unhealthy / offline, ms offline before deregistration. */
  interval: number
  degradedAfter: number
  unhealthyAfter: number
  offlineAfter: number
  deregisterAfter: number
  /** Every agent's breaker: consecutive failures to open, cool-down (ms), probes, successes to close. */
  failuresToOpen: number
  coolDown: number
  probes: number
  successesToClose: number
}

/** Where `MeshCore.route` puts the time to try again after a `circuitOpen` refusal; the caller owns (and reuses) it. */
export interface RouteRefusal {
  retryAt: number
}

/** Fields per match in `MeshCore.findStates` (`orrery_core::routing::STATE_FIELDS`). */
export const MESH_STATE_FIELDS = FIELDS.meshState

/** Fields per event in `MeshCore.events` (`orrery_core::routing::EVENT_FIELDS`). */
export const MESH_EVENT_FIELDS = FIELDS.meshEvent

/**
 * A mesh's routing state in the core: the registry, a breaker and a bulkhead per agent, rate
 * limiters and seeded backoff. Healths, strategies and breaker states travel as codes.
 */
export interface MeshCore {
  /** Registers an agent; `capabilities` holds `name version priority` lines. Returns its handle. */
  register(id: string, kind: string, capabilities: string, tags: string[], bulkhead: number, now: number): number
  deregister(agent: number): void
  heartbeat(agent: number, health: number, now: number): void
  setHealth(agent: number, health: number, now: number): void
  /** Compiles a query; `also` holds `capability range` lines. Returns its id. */
  query(capability: string, range: string, minHealth: number, tags: string[], also: string): number
  /** The matches of a compiled query, best first, with their state: `MESH_STATE_FIELDS` numbers each (handle, health, in flight, last beat, breaker). */
  findStates(query: number, now: number): ArrayLike<number>
  /**
   * Picks a target past `exclude` (any number of agents), counting the call in flight: returns
   * the agent's handle, or a `ROUTE_REFUSED` code (minus the route's status); after `circuitOpen`, `refusal.retryAt` says
   * when a breaker lets a call through again.
   */
  route(query: number, strategy: number, now: number, exclude: readonly number[], refusal?: RouteRefusal): number
  /** Ends a routed call (outcome 1 success, 0 failure, 2 no verdict); true when events wait. */
  finish(agent: number, outcome: number, now: number): boolean
  /** Takes `n` tokens: 0 when taken, else the ms until they will be there (never 0; Infinity: never). */
  take(limiter: number, n: number, now: number): number
  limiter(capacity: number, perSecond: number, now: number): number
  dropLimiter(limiter: number): void
  backoff(base: number, factor: number, max: number, jitter: number, attempt: number): number
  tick(now: number): void
  nextDeadline(): number
  /** The events since the last call, `MESH_EVENT_FIELDS` numbers each. */
  events(): ArrayLike<number>
  breakerState(agent: number, now: number): number
  /** Health code, calls in flight, last beat. */
  agentState(agent: number): ArrayLike<number>
  /** `name\tscore` lines, best first. */
  similar(name: string, threshold: number): string
  close(): void
}

/**
 * A workflow state machine in the core (`crates/core/src/workflow`): programs (`Float64Array`s,
 * compiled by `ts/workflows/compile.ts`), runs by generational handle, timers on host time, and an
 * outbox of records (`WORKFLOW_LAYOUT.recordWords` numbers each, kinds `WORKFLOW_RECORDS`). Numbers
 * in, numbers out; the core checks every one (a bad handle, token or index is a typed error or
 * `false`, never undefined behaviour), the same on both engines.
 */
export interface WorkflowCore {
  /** Checks and keeps a program; returns its definition id (`DEFINITION_INVALID`). */
  define(program: Float64Array): number
  /**
   * Starts a run of definition `def` with the seed of its jitter; returns its handle. The run
   * fails (`run-timeout`) at `deadline` (host time; `NO_DEADLINE`, the default, for none) or at
   * its root's timeout, whichever comes first: one program serves runs of any deadline. Record
   * the deadline with the start: a replay passes it again.
   */
  start(def: number, seed: number, now: number, deadline?: number): number
  /** The outcome of a step attempt (a `STEP_OUTCOMES` code); false when the token is stale. */
  complete(run: number, token: number, outcome: number, now: number): boolean
  /** The answer to a DECIDE record (-2: the decision itself failed); false when the token is stale. */
  decide(run: number, token: number, value: number, now: number): boolean
  /** Signal `index` (the program's numbering of its signal names) reached the run. */
  signal(run: number, index: number, now: number): void
  /** Cancels a run (nothing on a finished run or one compensating). */
  cancel(run: number, now: number): void
  /** Fires one of the run's timers; false when it is no longer armed. */
  fire(run: number, timer: number, now: number): boolean
  /** The timers due at `now` as `[run, timer, run, timer, ...]` (still armed until fired). */
  due(now: number): Float64Array
  /** When the next timer is due (`NO_DEADLINE` when none). */
  nextDeadline(): number
  /** Queues again the EXECUTE, COMPENSATE and DECIDE records of everything in flight (after a replay). */
  outstanding(run: number): void
  /** The records queued since the last drain, in order (an empty array when none). */
  drain(): Float64Array
  /**
   * Like {@link drain}, but what it returns may be a view of the engine's buffer, valid until
   * the next drain: for a caller that handles the records before draining again (the runtime's
   * pump). A copy of more than 8 numbers is an ArrayBuffer of its own, ~0.5 µs each time.
   */
  drainView(): Float64Array
  /** Forgets a run (finished, or abandoned). */
  release(run: number): void
  /** Releases the core; later calls fail with `CLOSED`. */
  close(): void
}

/** One loaded engine. */
export interface Backend {
  readonly name: EngineName
  createMesh(options: MeshCoreOptions): MeshCore
  createStore(options: StoreCoreOptions): StoreCore
  /** A new workflow core (in memory on both engines: a run's history lives in the store). */
  createWorkflows(): WorkflowCore
  /** Opens a durable store on disk (native engine only). */
  openStore(options: StoreCoreOptions & { path: string; batched: boolean }): StoreCore
  createBus(options: { maxMessageBytes: number }): BusCore
  /** Opens an endpoint of a bus shared by another thread (native engine only). */
  attachBus(handle: number): BusCore
  /** The hash of the manifest the engine was built with (`undefined` from an engine older than the manifest). */
  manifestHash(): string | undefined
  /**
   * Opens a NATS wire: groups' pulls read and answered off the JS thread (native engine only;
   * see ts/transports/nats-wire.ts). It connects in the background and tells `events` when it is
   * up (`connected`) or down (`disconnected`, `closed`).
   */
  openNatsWire?(options: NatsWireOptions, events: (event: string) => void): NatsWireBinding
}

/** An engine's way to open a NATS wire (`Backend.openNatsWire`). */
export type OpenNatsWire = (options: NatsWireOptions, events: (event: string) => void) => NatsWireBinding

/** How a NATS wire connects (`WireOptions` in bindings/node/src/nats_wire.rs). */
export interface NatsWireOptions {
  servers: string[]
  connectTimeoutMs: number
  token?: string | undefined
  user?: string | undefined
  pass?: string | undefined
  nkeySeed?: string | undefined
  creds?: string | undefined
}

/** A NATS wire (bindings/node/src/nats_wire.rs). */
export interface NatsWireBinding {
  pull(id: number, subject: string, request: string, deliver: (batch: Uint8Array) => void): void
  endPull(id: number): void
  answer(handles: Uint32Array, body: string, done: (ok: boolean) => void): void
  forget(handles: Uint32Array): void
  kept(): number
  close(): void
}

/** Maps a stats array onto its field names. */
export function fieldsOf<K extends string>(fields: readonly K[], values: ArrayLike<number>): Record<K, number> {
  const out = {} as Record<K, number>
  fields.forEach((field, i) => {
    out[field] = values[i]!
  })
  return out
}

/** Start size of the drain buffer; it grows to fit the largest record seen. */
export const DRAIN_BYTES = 64 * 1024
