/**
 * `store.shared(name, options)`: a namespace shared by processes through a transport of the
 * Orrery that opened the store. This module checks the call (before anything is bound, published
 * or written) and opens one of the two modes: replicated (replicated.ts: local writes published
 * and merged by stamp) or strong (strong.ts: writes through the broker, which checks versions).
 */
import { runnerLink, type Bus } from '../bus/bus.js'
import { callable, keysOf, oneOf, options as optionsOf, text } from '../check.js'
import { OrreryError } from '../errors.js'
import type { CodecName } from '../frame.js'
import type { StandardSchemaV1 } from '../schema.js'
import type { TransportKind } from '../transports/capabilities.js'
import type { Driver } from '../transports/driver.js'
import type { Namespace, NamespaceOptions } from './namespace.js'
import { Replicator } from './replicated.js'
import type { RemoteChange, StoreEvent } from './store.js'
import { openStrong, type StrongNamespace } from './strong.js'

/** Options of a replicated namespace ({@link Store.shared}, the default consistency). */
export interface ReplicatedOptions<T> {
  /** The transport of the Orrery (redis, nats or kafka) its changes travel on. */
  transport: string
  /** `replicated` (default). */
  consistency?: 'replicated'
  /**
   * Merges a change another process made into the value here (`remote` undefined: it deleted the
   * key), written as a new local change. Left out, the later stamp wins (clock, then writer name).
   * Replicas converge when it is commutative, associative and idempotent (a max, a set union).
   */
  merge?: (local: T | undefined, remote: T | undefined) => T
  /** How values become bytes (default `json`); every process must use the same. */
  codec?: CodecName
  /** Validates every value written here and every value merged from another process. */
  schema?: StandardSchemaV1
  /** How many older versions each key keeps here (default: the store's). */
  history?: number
}
const REPLICATED_KEYS = keysOf<ReplicatedOptions<unknown>>()(['transport', 'consistency', 'merge', 'codec', 'schema', 'history'])

/** Options of a strongly consistent namespace ({@link Store.shared} with `consistency: 'strong'`). */
export interface StrongOptions {
  /** The transport of the Orrery (redis or nats) that keeps the namespace. */
  transport: string
  consistency: 'strong'
  /** How values become bytes (default `json`); every process must use the same. */
  codec?: CodecName
  /** Validates every value written (a synchronous validator). */
  schema?: StandardSchemaV1
  /**
   * How many older records each key keeps on the broker (0 to 64), set by the process that
   * makes the namespace; left out, the namespace's (0 when this process makes it). A process
   * asking for another than the namespace keeps is refused.
   */
  history?: number
}
const STRONG_KEYS = keysOf<StrongOptions>()(['transport', 'consistency', 'codec', 'schema', 'history'])

/** What a shared namespace needs of its store. */
export interface SharedHost {
  /** The bus of the Orrery that opened the store (undefined: `Orrery.openStore`, no transports). */
  readonly bus: Bus | undefined
  /** The store's writer name (its `replica`). */
  readonly replica: string
  /** The largest value a write may carry (the store's `maxValueBytes`). */
  readonly maxValueBytes: number
  /** How long the store keeps a deleted key's tombstone (its `tombstoneMs`). */
  readonly tombstoneMs: number
  /** How far ahead of this store's clock a merged stamp may be (its `maxClockDriftMs`). */
  readonly maxClockDriftMs: number
  /** The store's clock (ms). */
  now(): number
  isClosed(): boolean
  /** The store's revision (a merge that changed something moved it to its version). */
  revision(): number
  namespace(name: string, options: NamespaceOptions<StandardSchemaV1 | undefined>): Namespace<unknown, boolean>
  merge(ns: Namespace<unknown, boolean>, change: RemoteChange<unknown>, resolve?: (local: unknown, remote: unknown) => unknown): number | Promise<number>
  /** Reports a failure no caller waits for on `store.events` (as an OrreryError: INTERNAL for a bug). */
  report(event: Omit<Extract<StoreEvent, { type: 'shared-error' }>, 'error'> & { error: unknown }): void
  /** Runs `stop` when the store closes. */
  onClose(stop: () => void): void
  /** Runs `flush` in `store.flushed()`: resolves once what the namespace wrote so far reached the broker. */
  onFlush(flush: () => Promise<void>): void
}

/** A transport a shared namespace may use, with the driver that reaches its broker. */
export interface SharedTransport {
  readonly name: string
  readonly kind: TransportKind
  readonly driver: Driver
  /** This Orrery's id on its transports (the shared mesh's too). */
  readonly processId: string
}

/** Which transport kinds carry which mode: a memory or durable transport is one process's own. */
const MODES: Readonly<Record<TransportKind, { replicated: boolean; strong: boolean }>> = {
  memory: { replicated: false, strong: false },
  durable: { replicated: false, strong: false },
  redis: { replicated: true, strong: true },
  nats: { replicated: true, strong: true },
  kafka: { replicated: true, strong: false },
}

/** Replicated namespaces open on each bus, by name: one per name and Orrery (their channel is one). */
const open = new WeakMap<Bus, Set<string>>()

/** Checks the call, then opens the namespace in its mode. */
export async function openShared(
  host: SharedHost,
  name: string,
  given: ReplicatedOptions<unknown> | StrongOptions,
): Promise<Namespace<unknown, boolean> | StrongNamespace<unknown>> {
  text(name, 'namespace name', { nonEmpty: true })
  const o = optionsOf(given as ReplicatedOptions<unknown> | undefined, 'options', 'argument')
  const consistency = o.consistency === undefined ? 'replicated' : oneOf(o.consistency, ['replicated', 'strong'], 'consistency')
  optionsOf(o, 'options', 'argument', consistency === 'strong' ? STRONG_KEYS : REPLICATED_KEYS)
  const transportName = text(o.transport, 'transport', { nonEmpty: true }, 'option')
  if (o.codec !== undefined) oneOf(o.codec, ['json', 'msgpack', 'raw'], 'codec')
  if (o.merge !== undefined) callable(o.merge, 'merge', 'option')
  const transport = transportOf(host, transportName, consistency)
  const namespaceOptions: NamespaceOptions<StandardSchemaV1 | undefined> = {
    ...(o.codec === undefined ? {} : { codec: o.codec }),
    ...(o.schema === undefined ? {} : { schema: o.schema }),
    ...(o.history === undefined ? {} : { history: o.history }),
  }
  if (consistency === 'strong') return openStrong(host, name, namespaceOptions, transport)

  // Two processes writing at one clock reading tie on their writer names: equal names would keep
  // each its own value for ever.
  if (host.replica === 'local')
    throw new OrreryError(
      'INVALID_OPTION',
      "a replicated namespace needs a replica name of its own in each process (orrery.openStore({ replica: '<unique name>' })), not the default 'local': stamps from two processes tie on it",
      { details: { option: 'replica', value: 'local' } },
    )
  const bus = host.bus!
  let names = open.get(bus)
  if (names === undefined) {
    names = new Set<string>()
    open.set(bus, names)
  }
  if (names.has(name))
    throw new OrreryError('INVALID_OPTION', `namespace ${name} is shared on this Orrery already (one store per Orrery may share a name)`, {
      details: { option: 'namespace', value: name },
    })
  // The namespace's checks (codec, history, schema) run before anything is bound.
  const ns = host.namespace(name, namespaceOptions)
  const channel = Replicator.channelOf(name)
  runnerLink(bus).transports!.bindAtRunTime([channel], transport.name, 'transport')
  names.add(name)
  const replicator = new Replicator(
    host,
    bus,
    ns,
    transport.processId,
    o.codec ?? 'json',
    o.merge as ((l: unknown, r: unknown) => unknown) | undefined,
    (transport.driver as { maxPayload?: number }).maxPayload,
  )
  const release = names
  host.onClose(() => {
    replicator.close()
    release.delete(name)
  })
  host.onFlush(() => replicator.flush())
  try {
    await replicator.start()
  } catch (error) {
    replicator.close()
    release.delete(name)
    throw error
  }
  return ns
}

/** The transport `name` of the store's Orrery, refused (nothing bound) unless it can carry `mode`. */
function transportOf(host: SharedHost, name: string, mode: 'replicated' | 'strong'): SharedTransport {
  const transports = host.bus === undefined ? undefined : runnerLink(host.bus).transports
  if (transports === undefined)
    throw new OrreryError(
      'INVALID_OPTION',
      `transport ${name}: this store has no transports; open it with orrery.openStore() on an Orrery created with transports (Orrery.create({ transports }))`,
      { details: { option: 'transport', value: name } },
    )
  const t = transports.transportNamed(name)
  if (t === undefined)
    throw new OrreryError(
      'INVALID_OPTION',
      `transport must name a transport of \`transports\` (${transports.configuredNames().join(', ')}), not ${JSON.stringify(name)}`,
      { details: { option: 'transport', value: name } },
    )
  if (!MODES[t.kind][mode] || t.driver === undefined) {
    const why =
      t.kind === 'memory' || t.kind === 'durable'
        ? `a ${t.kind} transport is this process's own: no other process reaches it`
        : `${t.kind} has no compare-and-set on a key (use consistency: 'replicated', or a redis or nats transport)`
    throw new OrreryError('CAPABILITY_UNSUPPORTED', `transport ${name} (${t.kind}) cannot carry a ${mode} namespace: ${why}`, {
      details: { capability: `store.${mode}`, transport: name, kind: t.kind },
    })
  }
  // A strong namespace writes its own keys and streams through the broker (store-redis.ts,
  // store-nats.ts), which carry no signature: on a transport whose messages are signed, anyone
  // who can write the broker could set its values unchecked.
  if (mode === 'strong' && t.signed)
    throw new OrreryError(
      'CAPABILITY_UNSUPPORTED',
      `transport ${name} (${t.kind}) cannot carry a strong namespace: its messages are signed (signing), and a strong namespace's writes are not (use consistency: 'replicated', whose changes travel as signed messages, or a transport without signing)`,
      { details: { capability: 'store.strong', transport: name, kind: t.kind } },
    )
  return { name: t.name, kind: t.kind, driver: t.driver, processId: transports.processId }
}
