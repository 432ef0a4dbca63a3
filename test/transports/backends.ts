/**
 * The backends the transport contract suite runs on, and what each test needs from one: a fresh
 * channel prefix per test, Orrery instances bound to it (a second instance stands for a second
 * process), what the backend declares it can do, and how long its redelivery may take.
 *
 * `memory` is a plain Orrery (no transport). `redis` binds the test's prefix to the Redis server the
 * global setup started (`inject('redisUrl')`); it runs wherever the transport API exists, and a
 * missing server fails the suite unless `ORRERY_SERVERS=none` says there are no servers on purpose.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import type { Observable, Subscription } from 'rxjs'
import { afterAll, afterEach, inject } from 'vitest'

import { Orrery, TRANSPORT_CAPABILITIES, type Capability as TransportCapability, type TransportKind } from '../../ts/node.js'
import { ENGINE, IN_BROWSER } from '../engine.js'

/**
 * What a contract test may need beyond publish, subscribe and groups: an entry of
 * `TRANSPORT_CAPABILITIES`, or one of the suite's own: `shared`, a channel that two Orrery
 * instances (two processes) see alike, which the in-process bus cannot be; `handover`, a group
 * whose messages go to the members of any instance, so what one instance lets go (a member
 * leaving, a shutdown, a crash) goes to another at once, its delivery count kept (not Kafka,
 * whose groups hand out partitions: what an instance lets go stays with the partition's holder).
 */
export type Capability = 'shared' | 'handover' | TransportCapability

type Env = Record<string, string | undefined>
const env: Env = (globalThis as { process?: { env: Env } }).process?.env ?? (import.meta as unknown as { env: Env }).env

const declared = (kind: TransportKind, capability: TransportCapability): boolean => TRANSPORT_CAPABILITIES[kind][capability]

export interface Backend {
  readonly name: 'memory' | 'redis' | 'nats' | 'kafka' | 'durable'
  /** Why this backend does not run here, said in the suite's name (undefined: it runs). */
  readonly skip: string | undefined
  /** Set when the backend should run but cannot: the suite fails with this message. */
  readonly broken: string | undefined
  has(capability: Capability): boolean
  /** A new Orrery whose channels starting with `prefix` live on this backend. */
  open(prefix: string): Promise<Orrery>
  /**
   * The longest an unacked message may take to reach a member again after its lease ended in an
   * instance that is gone (closed without releasing it), with room for a loaded machine.
   */
  redeliveryBound(visibilityMs: number): number
  /** How many messages past `retention.maxCount` the broker may keep (Redis trims whole stream nodes). */
  readonly retentionSlack: number
}

const memory: Backend = {
  name: 'memory',
  skip: undefined,
  broken: undefined,
  has: (capability) => capability === 'handover' || (capability !== 'shared' && declared('memory', capability)),
  open: () => Orrery.create(),
  redeliveryBound: (visibility) => visibility + 1_000,
  retentionSlack: 0,
}

function redis(): Backend {
  const url = inject('redisUrl')
  let skip: string | undefined
  let broken: string | undefined
  if (IN_BROWSER) skip = 'a browser page cannot open a TCP connection to Redis'
  else if (env['ORRERY_SERVERS'] === 'none') skip = 'ORRERY_SERVERS=none: no test servers on this run'
  else if (url === undefined || url === '')
    broken =
      "no Redis server for the contract suite: inject('redisUrl') is empty. The global setup (test/transports/global-setup.ts) must start one with scripts/servers.sh; set ORRERY_SERVERS=none to skip server tests on purpose"
  return {
    name: 'redis',
    skip,
    broken,
    has: (capability) => capability === 'shared' || capability === 'handover' || declared('redis', capability),
    open: (prefix) => Orrery.create({ transports: { main: { kind: 'redis', url: url! } }, bindings: { [`${prefix}*`]: 'main' } }),
    // The broker takes back an abandoned entry once it has been idle for visibility + max(1 s, 10 %),
    // found by a reclaim loop running every min(visibility / 2, 1 s).
    redeliveryBound: (visibility) => visibility + Math.max(1_000, visibility / 10) + Math.min(visibility / 2, 1_000) + 3_000,
    // stream-node-max-entries (100 by default): `MAXLEN ~` removes whole nodes only.
    retentionSlack: 100,
  }
}

function nats(): Backend {
  const url = inject('natsUrl')
  let skip: string | undefined
  let broken: string | undefined
  if (IN_BROWSER) skip = 'a browser page cannot open a TCP connection to NATS'
  else if (env['ORRERY_SERVERS'] === 'none') skip = 'ORRERY_SERVERS=none: no test servers on this run'
  else if (url === undefined || url === '')
    broken =
      "no NATS server for the contract suite: inject('natsUrl') is empty. The global setup (test/transports/global-setup.ts) must start one with scripts/servers.sh; set ORRERY_SERVERS=none to skip server tests on purpose"
  return {
    name: 'nats',
    skip,
    broken,
    has: (capability) => capability === 'shared' || capability === 'handover' || declared('nats', capability),
    open: (prefix) => Orrery.create({ transports: { main: { kind: 'nats', servers: url! } }, bindings: { [`${prefix}*`]: 'main' } }),
    // JetStream redelivers an unacked message once ack_wait (visibility + max(1 s, 10 %)) has passed.
    redeliveryBound: (visibility) => visibility + Math.max(1_000, visibility / 10) + 3_000,
    // max_msgs is exact.
    retentionSlack: 0,
  }
}

function kafka(): Backend {
  const brokers = inject('kafkaBrokers')
  let skip: string | undefined
  let broken: string | undefined
  if (IN_BROWSER) skip = 'a browser page cannot open a TCP connection to Kafka'
  else if (env['ORRERY_SERVERS'] === 'none') skip = 'ORRERY_SERVERS=none: no test servers on this run'
  else if (brokers === undefined || brokers === '')
    broken =
      "no Kafka broker for the contract suite: inject('kafkaBrokers') is empty. The global setup (test/transports/global-setup.ts) must start one with scripts/servers.sh; set ORRERY_SERVERS=none to skip server tests on purpose"
  return {
    name: 'kafka',
    skip,
    broken,
    // Kafka's groups hand out partitions, not messages: no handover between instances.
    has: (capability) => capability === 'shared' || (capability !== 'handover' && declared('kafka', capability)),
    open: (prefix) => Orrery.create({ transports: { main: { kind: 'kafka', brokers: brokers! } }, bindings: { [`${prefix}*`]: 'main' } }),
    // What a lease lets go is delivered again by the process that holds the partition, at once.
    redeliveryBound: (visibility) => visibility + 3_000,
    // DeleteRecords trims each partition exactly.
    retentionSlack: 0,
  }
}

/** `durable` (native engine): this process's bus kept on disk, a fresh file per instance (so never `shared`). */
function durable(): Backend {
  const skip = IN_BROWSER || ENGINE !== 'native' ? "the durable transport is the native engine's (wasm refuses it at create: UNSUPPORTED)" : undefined
  let dir: string | undefined
  let files = 0
  // Registered while the suite is collected (this runs at import): the files go with the run.
  afterAll(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })
  return {
    name: 'durable',
    skip,
    broken: undefined,
    has: (capability) => capability === 'handover' || (capability !== 'shared' && declared('durable', capability)),
    open: (prefix) => {
      dir ??= mkdtempSync(join(tmpdir(), 'orrery-contract-'))
      const path = join(dir, `${prefix}${++files}.redb`)
      return Orrery.create({ transports: { main: { kind: 'durable', path } }, bindings: { [`${prefix}*`]: 'main' } })
    },
    redeliveryBound: (visibility) => visibility + 1_000,
    retentionSlack: 0,
  }
}

/** Every backend of this session, in the order the suite runs them. */
export const BACKENDS: readonly Backend[] = [memory, redis(), nats(), kafka(), durable()]

/** A unique channel prefix per test: files and runs share one server without seeing each other. */
const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
let counter = 0

/** One test's view of a backend: its prefix, its channels, and the instances it opened (closed after it). */
export interface TestBackend {
  readonly prefix: string
  /** A channel name under the test's prefix. */
  ch(name: string): string
  /** A new instance (another "process" where the backend is shared; a second in-process bus otherwise). */
  open(): Promise<Orrery>
  /**
   * `n` instances that see the same channels: distinct ones where the backend is shared, else the
   * same one `n` times (its members then share a group in one process).
   */
  peers(n: number): Promise<Orrery[]>
}

/** Call once per describe: gives each test its backend view and closes what it opened after it. */
export function useBackend(backend: Backend): () => TestBackend {
  const opened: Orrery[] = []
  afterEach(async () => {
    for (const o of opened.splice(0)) await stop(o)
  })
  return () => {
    const prefix = `ct-${RUN}-${++counter}.`
    const open = async (): Promise<Orrery> => {
      const o = await backend.open(prefix)
      opened.push(o)
      return o
    }
    return {
      prefix,
      ch: (name) => `${prefix}${name}`,
      open,
      async peers(n) {
        if (backend.has('shared')) return Promise.all(Array.from({ length: n }, open))
        const one = await open()
        return Array.from({ length: n }, () => one)
      },
    }
  }
}

/** Ends an instance gracefully (a test may have closed it already: shutdown is then a no-op), never hanging the suite. */
export async function stop(o: Orrery): Promise<void> {
  try {
    await withTimeout(o.shutdown(), 10_000, 'orrery.shutdown()')
  } finally {
    o.close()
  }
}

/** Items a stream delivered, kept in arrival order with the time each came. */
export interface Listened<T> {
  readonly items: T[]
  readonly times: number[]
  readonly subscription: Subscription
  /** Errors the stream ended with. */
  readonly errors: unknown[]
}

export function listen<T>(source: Observable<T>): Listened<T> {
  const items: T[] = []
  const times: number[] = []
  const errors: unknown[] = []
  const subscription = source.subscribe({
    next: (item) => {
      items.push(item)
      times.push(Date.now())
    },
    error: (err: unknown) => errors.push(err),
  })
  return { items, times, subscription, errors }
}

/**
 * Waits until `done()` holds, checking every few ms; fails after `ms` saying what it waited for
 * and what it saw (`state`).
 */
export async function until(done: () => boolean, ms: number, what: string, state: () => unknown = () => ''): Promise<void> {
  const deadline = Date.now() + ms
  while (!done()) {
    if (Date.now() > deadline) {
      const seen = state()
      throw new Error(`timed out after ${ms} ms waiting for ${what}${seen === '' ? '' : `; saw ${JSON.stringify(seen)}`}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** Polls the asynchronous `probe` every `every` ms until it returns a value; fails after `ms` saying what it waited for. */
export async function poll<T>(probe: () => Promise<T | undefined>, ms: number, what: string, every = 20): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, every))
  }
}

/**
 * Lets `ms` pass: only where a test must show something does NOT happen within a bound (no
 * redelivery of what was acked), or must let a TTL run out; never to wait for something to happen.
 */
export function quiet(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i)
