/**
 * The public API shared by every entry (`node.ts`, `browser.ts`). An entry injects the engine
 * loader for its environment with {@link useEngineLoader}; the facade never imports an engine.
 */
import type { Backend, EngineName } from './backend.js'
import { Bus } from './bus.js'
import { OrreryError } from './errors.js'
import { checkLayout } from './frame.js'

export { Bus } from './bus.js'
export type { Message, PublishOptions, RetentionOptions, StartFrom } from './bus.js'
export type { ChannelStats, EngineName } from './backend.js'
export { OrreryError, isOrreryError } from './errors.js'
export type { ErrorCode } from './errors.js'
export type { CodecName, Kind, Priority } from './frame.js'

/** Options of {@link Orrery.create}. */
export interface OrreryOptions {
  /** Which engine runs the core. Node: `native` unless `ORRERY_ENGINE=wasm`; browsers: `wasm`. */
  engine?: EngineName
  /** Largest accepted message in bytes, frame included (default 10 MiB). */
  maxMessageBytes?: number
  /** The host clock in ms (default `Date.now`); pass a fake one to control TTLs in tests. */
  clock?: () => number
}

type EngineLoader = (requested: EngineName | undefined) => Promise<Backend>
let loader: EngineLoader | undefined
const checked = new WeakSet<Backend>()

/** @internal Called by each entry file with its environment's engine loader. */
export function useEngineLoader(load: EngineLoader): void {
  loader = load
}

/** An in-process Orrery: one core, reached through one engine. */
export class Orrery {
  /** The message bus. */
  readonly bus: Bus

  private constructor(readonly backend: Backend, options: OrreryOptions) {
    const max = options.maxMessageBytes ?? 10 * 1024 * 1024
    if (!Number.isInteger(max) || max < 64 || max > 0xffffffff) {
      throw new OrreryError('INVALID_OPTION', 'maxMessageBytes must be an integer from 64 to 4294967295', { details: { option: 'maxMessageBytes', value: max } })
    }
    this.bus = new Bus(backend.createBus({ maxMessageBytes: max }), options.clock ?? Date.now)
  }

  /** Loads the engine (once per process) and starts an Orrery on it. */
  static async create(options: OrreryOptions = {}): Promise<Orrery> {
    if (!loader) throw new OrreryError('ENGINE_UNAVAILABLE', "no engine loader: import Orrery from 'orrery' (its node or browser entry), not from an internal file")
    const backend = await loader(options.engine)
    if (!checked.has(backend)) {
      checkLayout(backend.frameLayout())
      checked.add(backend)
    }
    return new Orrery(backend, options)
  }

  /** Which engine runs this Orrery's core. */
  get engine(): EngineName {
    return this.backend.name
  }

  /** Stops deliveries and frees the core's memory; later calls fail with `CLOSED`. */
  close(): void {
    this.bus.close()
  }
}
