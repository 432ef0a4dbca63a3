/**
 * The part of a StoreCore both engines share: the calls without `io`, with their arguments
 * checked (wasm-bindgen's release glue does not check types) and failures translated by the
 * engine. Each engine adds where `io` lives and how watch records leave.
 */
import type { RawStore } from './backend.js'
import { OrreryError } from '../errors.js'
import type { EngineFailures } from './failures.js'
import { MAX_KEY_BYTES, pad8, RECORD_HEADER } from '../store/wire.js'
import { text } from '../check.js'

/** The drain buffer holds the largest record: header, longest key, largest value. */
export const drainCapacity = (maxValueBytes: number): number => Math.max(64 * 1024, pad8(RECORD_HEADER + MAX_KEY_BYTES + maxValueBytes))

export abstract class StoreAdapter implements RawStore {
  protected abstract readonly raw: RawStore

  constructor(private readonly failures: EngineFailures) {}

  /** Turns whatever a call threw into an OrreryError (and notes a wasm trap). */
  protected fail(error: unknown): OrreryError {
    return this.failures.fail(error)
  }

  /** Throws if the engine can no longer be called. */
  protected usable(): void {
    this.failures.usable()
  }

  namespace(name: string): number {
    this.usable()
    try {
      return this.raw.namespace(text(name, 'namespace name'))
    } catch (e) {
      throw this.fail(e)
    }
  }

  setHistory(ns: number, keep: number): void {
    this.usable()
    try {
      this.raw.setHistory(ns, keep)
    } catch (e) {
      throw this.fail(e)
    }
  }

  writer(name: string): number {
    this.usable()
    try {
      return this.raw.writer(text(name, 'writer name'))
    } catch (e) {
      throw this.fail(e)
    }
  }

  writerName(id: number): string | null | undefined {
    this.usable()
    try {
      return this.raw.writerName(id)
    } catch (e) {
      throw this.fail(e)
    }
  }

  conflict(): ArrayLike<number> {
    this.usable()
    try {
      return this.raw.conflict()
    } catch (e) {
      throw this.fail(e)
    }
  }

  unwatch(id: number): void {
    this.usable()
    try {
      this.raw.unwatch(id)
    } catch (e) {
      throw this.fail(e)
    }
  }

  setWatchPaused(id: number, paused: boolean): void {
    this.usable()
    try {
      this.raw.setWatchPaused(id, paused)
    } catch (e) {
      throw this.fail(e)
    }
  }

  tick(now: number): void {
    this.usable()
    try {
      this.raw.tick(now)
    } catch (e) {
      throw this.fail(e)
    }
  }

  nextDeadline(): number {
    this.usable()
    try {
      return this.raw.nextDeadline()
    } catch (e) {
      throw this.fail(e)
    }
  }

  revision(): number {
    this.usable()
    try {
      return this.raw.revision()
    } catch (e) {
      throw this.fail(e)
    }
  }

  export(): Uint8Array {
    this.usable()
    let bytes: Uint8Array
    try {
      bytes = this.raw.export()
    } catch (e) {
      throw this.fail(e)
    }
    // The same type from both engines: native hands out a Node Buffer, whose `slice` is a view
    // (and a small one may sit in Node's shared pool); a plain copy behaves as wasm's does.
    return Object.getPrototypeOf(bytes) === Uint8Array.prototype ? bytes : new Uint8Array(bytes)
  }

  import(bytes: Uint8Array): void {
    this.usable()
    if (!(bytes instanceof Uint8Array)) throw new OrreryError('INVALID_ARGUMENT', 'a snapshot must be a Uint8Array', { details: { argument: 'snapshot' } })
    try {
      this.raw.import(bytes)
    } catch (e) {
      throw this.fail(e)
    }
  }
}
