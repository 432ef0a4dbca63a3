/**
 * What namespaces and transactions need of their store, in a module of its own: the store
 * implements it and hands it down, and they import it as a type, so the store module is the one
 * that imports them (no import cycle).
 */
import type { Subscriber } from 'rxjs'

import type { StoreCore } from '../engines/backend.js'
import { encodePayload } from '../codec.js'
import { OrreryError } from '../errors.js'
import type { CodecName } from '../frame.js'
import { validate, type StandardSchemaV1 } from '../schema.js'
import type { Change } from './records.js'

/** What a write returns: its version in memory, a Promise of it on a durable store. */
export type Ack<D extends boolean> = D extends true ? Promise<number> : number

/** @internal One subscriber of a core watch: it gets the changes after version `after`. */
export interface WatchSubscriber {
  readonly sink: Subscriber<Change<unknown>>
  readonly after: number
  /** Cleared when it leaves: a delivery loop already under way skips it from then on. */
  active: boolean
}

/**
 * @internal One core watch and its subscribers. Live watches of the same key or prefix from
 * now (the common case: many agents watching one config key) share one: a change crosses the
 * boundary and is decoded once, and one Change object goes to all of them.
 */
export interface WatchSink {
  readonly codec: CodecName
  /** Replaced, never changed in place, so a delivery loop walks a stable list. */
  subscribers: readonly WatchSubscriber[]
  /** The version of the last change handed on. */
  last: number
  /** Its key in `StoreContext.shared`, when subscribers may join it. */
  readonly sharedAs: string | undefined
}

/** Where a write that failed its condition was: namespace and key. */
export type ConflictAt = (index: number) => { namespace: string; key: string }

/** @internal What namespaces and transactions need of their store. */
export interface StoreContext {
  readonly core: StoreCore
  readonly durable: boolean
  /** Set once the store is closed. */
  closed: boolean
  /**
   * Whether a key may have a TTL. Reads pass the clock only then (reading it costs ~35 ns, a
   * third of a read); without TTLs the core has nothing to expire.
   */
  expiring: boolean
  now(): number
  writerId(name: string | undefined): number
  writerName(id: number): string
  /**
   * Acknowledges a write that returned `result` (a version, or -1 when a condition failed:
   * then `conflictAt` names the write). `ttl` says it set a TTL (the timer may need re-arming).
   */
  ack(result: number, ttl: boolean, conflictAt: ConflictAt): number | Promise<number>
  /** Runs a write on a durable store, turning a throw into a rejection. */
  guarded(write: () => number | Promise<number>): number | Promise<number>
  changed(ttl: boolean): void
  /** Durable stores: hand this turn's changes (expiries a read ran, too) to the disk. */
  submitSoon(): void
  /** A watcher of `namespace` threw (or failed without an error callback): reported, never rethrown. */
  watcherFailed(namespace: string, error: unknown): void
  watches: Map<number, WatchSink>
  /** Shareable core watches by namespace, target and options. */
  shared: Map<string, { id: number; watch: WatchSink }>
}

/** The error of any call after close. */
export const closedError = (): OrreryError => new OrreryError('CLOSED', 'the store is closed')

/** @internal Validates (if a schema is set) and encodes a value; a Promise only for async validators. */
export function encodeValue(codec: CodecName, schema: StandardSchemaV1 | undefined, where: string, value: unknown): Uint8Array | Promise<Uint8Array> {
  if (!schema) return encodePayload(codec, value)
  const checked = validate(schema, value, where)
  return checked instanceof Promise ? checked.then((v) => encodePayload(codec, v)) : encodePayload(codec, checked)
}
