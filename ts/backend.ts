/**
 * The interface every engine implements with the same semantics. The facade (`Orrery`, `Bus`)
 * speaks only to this, so the N-API and WebAssembly engines are interchangeable.
 */

/** Which engine runs the core. */
export type EngineName = 'native' | 'wasm'

/** Where a new subscription starts: codes shared with the bindings' `subscribe(mode)`. */
export const START_MODES = { latest: 0, earliest: 1, seq: 2, time: 3 } as const

/** Field order of the engines' `stats()` arrays. */
export const STATS_FIELDS = ['published', 'delivered', 'retained', 'retainedBytes', 'firstSeq', 'nextSeq', 'subscribers'] as const
export type ChannelStats = Record<(typeof STATS_FIELDS)[number], number>

/** One bus inside an engine. Every method throws an `OrreryError` on failure. */
export interface BusCore {
  channel(name: string): number
  channelName(id: number): string | undefined
  setRetention(channel: number, maxCount: number, maxBytes: number, maxAge: number, now: number): void
  /** Publishes a batch of frames all or nothing; returns how many were published. */
  publish(batch: Uint8Array, now: number): number
  subscribe(channel: number, mode: number, value: number): number
  unsubscribe(id: number): void
  /** The next batch of delivery records, or undefined when none wait. The view is valid until the next call. */
  drain(): Uint8Array | undefined
  hasPending(): boolean
  stats(channel: number): ChannelStats
  /** Releases the engine's memory for this bus. */
  free(): void
}

/** One loaded engine. */
export interface Backend {
  readonly name: EngineName
  createBus(options: { maxMessageBytes: number }): BusCore
  /** The core's frame layout constants as `name=value`. */
  frameLayout(): string[]
  /** Makes the core panic, for tests of panic handling. */
  panicForTests(message: string): void
}

export function statsFrom(values: ArrayLike<number>): ChannelStats {
  const out = {} as ChannelStats
  STATS_FIELDS.forEach((field, i) => { out[field] = values[i]! })
  return out
}

/** Start size of the drain buffer; it grows to fit the largest record seen. */
export const DRAIN_BYTES = 64 * 1024
