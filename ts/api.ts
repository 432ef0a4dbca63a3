/**
 * The public API shared by every entry (`node.ts`, `browser.ts`). An entry injects the engine
 * loader for its environment with {@link useEngineLoader}; the facade never imports an engine.
 */
import type { Backend, EngineName } from './backend.js'
import { Bus } from './bus.js'
import { OrreryError } from './errors.js'
import { checkLayout } from './frame.js'

export { Bus, Published } from './bus.js'
export type { BatchItem, BusEvent, ChannelOptions, PublishOptions, Reply, StartFrom, SubscribeOptions } from './bus.js'
export { Group } from './group.js'
export type { Delivery, GroupOptions } from './group.js'
export type { Message } from './message.js'
export { Stream } from './stream.js'
export { Topic } from './topic.js'
export type { TopicOptions } from './topic.js'
export type { ChannelStats, EngineName, GroupStats, OverflowPolicy, PendingEntry, SubscriberStats } from './backend.js'
export { OrreryError, isOrreryError } from './errors.js'
export type { ErrorCode } from './errors.js'
export type { CodecName, Kind, Priority } from './frame.js'
export type { InferOutput, StandardSchemaV1 } from './schema.js'

/** Options of {@link Orrery.create}. */
export interface OrreryOptions {
  /** Which engine runs the core. Node: `native` unless `ORRERY_ENGINE=wasm`; browsers: `wasm`. */
  engine?: EngineName
  /** Largest accepted message in bytes, frame included (default 10 MiB). */
  maxMessageBytes?: number
  /** The host clock in ms (default `Date.now`); pass a fake one to control TTLs and timeouts in tests. */
  clock?: () => number
}

type EngineLoader = (requested: EngineName | undefined) => Promise<Backend>
let loader: EngineLoader | undefined
const checked = new WeakSet<Backend>()

/** @internal Called by each entry file with its environment's engine loader. */
export function useEngineLoader(load: EngineLoader): void {
  loader = load
}

async function loadBackend(engine: EngineName | undefined): Promise<Backend> {
  if (!loader) throw new OrreryError('ENGINE_UNAVAILABLE', "no engine loader: import Orrery from 'orrery' (its node or browser entry), not from an internal file")
  const backend = await loader(engine)
  if (!checked.has(backend)) {
    checkLayout(backend.frameLayout())
    checked.add(backend)
  }
  return backend
}

/** An in-process Orrery: one core, reached through one engine. */
export class Orrery {
  private constructor(readonly backend: Backend, readonly bus: Bus) {}

  /** Loads the engine (once per process) and starts an Orrery on a new core. */
  static async create(options: OrreryOptions = {}): Promise<Orrery> {
    const max = options.maxMessageBytes ?? 10 * 1024 * 1024
    if (!Number.isInteger(max) || max < 64 || max > 0xffffffff) {
      throw new OrreryError('INVALID_OPTION', 'maxMessageBytes must be an integer from 64 to 4294967295', { details: { option: 'maxMessageBytes', value: max } })
    }
    const backend = await loadBackend(options.engine)
    return new Orrery(backend, new Bus(backend.createBus({ maxMessageBytes: max }), options.clock ?? Date.now))
  }

  /**
   * Joins, from a worker thread, the core another thread shared with `orrery.share()` (native
   * engine): same channels, groups and messages, no structured clone between threads.
   */
  static async attach(handle: number, options: { clock?: () => number } = {}): Promise<Orrery> {
    const backend = await loadBackend('native')
    const bus = new Bus(backend.attachBus(handle), options.clock ?? Date.now)
    bus.enableWaker()
    return new Orrery(backend, bus)
  }

  /** Which engine runs this Orrery's core. */
  get engine(): EngineName {
    return this.backend.name
  }

  /** Shares this core with worker threads: pass the handle to `Orrery.attach` there. */
  share(): number {
    return this.bus.share()
  }

  /** Stops deliveries, fails waiting requests with `CLOSED`, and releases this endpoint. */
  close(): void {
    this.bus.close()
  }
}
