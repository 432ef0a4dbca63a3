/**
 * The wasm store: `io` lives inside the instance's memory, which JS writes requests into and
 * reads results from through a view (re-made whenever the memory grows and detaches it). The
 * store is in memory only; a browser host persists it with export/import.
 */
import type { RawStore, StoreCore, StoreCoreOptions, StoreIoCalls } from './backend.js'
import { OrreryError } from '../errors.js'
import { drainCapacity, StoreAdapter } from './store.js'
import type { EngineFailures } from './failures.js'

export interface WasmStoreHandle extends RawStore, StoreIoCalls {
  reserve(len: number): number
  room(bytes: number): void
  ioPtr(): number
  drain(capacity: number): number
  outPtr(): number
  free(): void
}

export type WasmStoreClass = new (maxValueBytes: number, history: number, replica: string, tombstoneMs: number) => WasmStoreHandle

class WasmStoreCore extends StoreAdapter implements StoreCore {
  readonly durable = false
  private len: number
  private ptr: number
  private buf: Uint8Array
  private dv: DataView
  private capacity: number
  private closed = false

  constructor(
    protected readonly raw: WasmStoreHandle,
    private readonly memory: WebAssembly.Memory,
    failures: EngineFailures,
    readonly maxValueBytes: number,
  ) {
    super(failures)
    this.len = 64 * 1024
    this.ptr = raw.reserve(this.len)
    this.buf = new Uint8Array(memory.buffer, this.ptr, this.len)
    this.dv = new DataView(memory.buffer, this.ptr, this.len)
    this.capacity = drainCapacity(maxValueBytes)
  }

  /**
   * A snapshot is copied into the instance, then decoded into the store (about as many bytes
   * again): room for both is asked for first, so a snapshot too large for the 4 GiB instance is
   * `VALUE_TOO_LARGE` rather than an allocation that aborts and poisons the engine.
   */
  override import(bytes: Uint8Array): void {
    if (bytes instanceof Uint8Array && bytes.length >= 64 * 1024) {
      this.usable()
      try {
        this.raw.room(2 * bytes.length)
      } catch (e) {
        throw this.fail(e)
      }
    }
    super.import(bytes)
  }

  protected override usable(): void {
    super.usable()
    if (this.closed) throw new OrreryError('CLOSED', 'the store is closed')
  }

  io(min = 0): Uint8Array {
    if (min > this.len) {
      this.usable()
      // Doubling, but never past what a wasm32 length holds (a larger one would wrap); the
      // length changes only once the engine has made the room (it refuses what memory cannot hold).
      const len = Math.min(Math.max(min, this.len * 2), Math.max(min, 0xffffffff))
      if (len > 0xffffffff)
        throw new OrreryError('VALUE_TOO_LARGE', `the wasm engine cannot hold ${len} bytes in one buffer (at most 4 GiB)`, { details: { bytes: len } })
      try {
        this.ptr = this.raw.reserve(len)
      } catch (e) {
        throw this.fail(e)
      }
      this.len = len
      this.remap()
    } else if (this.buf.byteLength === 0) {
      this.remap()
    }
    return this.buf
  }

  private remap(): void {
    this.buf = new Uint8Array(this.memory.buffer, this.ptr, this.len)
    this.dv = new DataView(this.memory.buffer, this.ptr, this.len)
  }

  view(): DataView {
    if (this.buf.byteLength === 0) this.remap()
    return this.dv
  }

  write(count: number, now: number): number {
    this.usable()
    try {
      return this.raw.write(count, now)
    } catch (e) {
      throw this.fail(e)
    }
  }

  get(ns: number, keyLen: number, version: number, now: number): number {
    this.usable()
    try {
      return this.raw.get(ns, keyLen, version, now)
    } catch (e) {
      throw this.fail(e)
    }
  }

  history(ns: number, keyLen: number, now: number): number {
    this.usable()
    try {
      return this.raw.history(ns, keyLen, now)
    } catch (e) {
      throw this.fail(e)
    }
  }

  scan(ns: number, prefixLen: number, afterLen: number, values: boolean, now: number): number {
    this.usable()
    try {
      return this.raw.scan(ns, prefixLen, afterLen, values, now)
    } catch (e) {
      throw this.fail(e)
    }
  }

  purge(ns: number, keyLen: number, now: number): number {
    this.usable()
    try {
      return this.raw.purge(ns, keyLen, now)
    } catch (e) {
      throw this.fail(e)
    }
  }

  watch(ns: number, targetLen: number, prefix: boolean, mode: number, from: number, capacity: number): number {
    this.usable()
    try {
      return this.raw.watch(ns, targetLen, prefix, mode, from, capacity)
    } catch (e) {
      throw this.fail(e)
    }
  }

  merge(wall: number, logical: number, lww: boolean, now: number): number {
    this.usable()
    try {
      return this.raw.merge(wall, logical, lww, now)
    } catch (e) {
      throw this.fail(e)
    }
  }

  drain(): Uint8Array | undefined {
    this.usable()
    let result: number
    for (;;) {
      try {
        result = this.raw.drain(this.capacity)
      } catch (e) {
        throw this.fail(e)
      }
      if (result >= 0) break
      // A record larger than the buffer (a value loaded from a snapshot past the limit).
      this.capacity = Math.max(-result, this.capacity * 2)
    }
    const n = (result - (result % 2)) / 2
    // One copy out of the instance's memory, which later calls overwrite or move.
    return n === 0 ? undefined : new Uint8Array(this.memory.buffer, this.raw.outPtr(), n).slice()
  }

  submitDisk(): void {}

  submitted(): number {
    return 0
  }

  committed(): number {
    return 0
  }

  diskFailure(): undefined {
    return undefined
  }

  setListener(): void {}

  close(): void {
    if (this.closed) return
    this.closed = true
    try {
      this.raw.free()
    } catch {
      /* already poisoned: nothing left to release */
    }
  }
}

export function createWasmStore(cls: WasmStoreClass, memory: WebAssembly.Memory, failures: EngineFailures, o: StoreCoreOptions): StoreCore {
  failures.usable()
  try {
    return new WasmStoreCore(new cls(o.maxValueBytes, o.history, o.replica, o.tombstoneMs), memory, failures, o.maxValueBytes)
  } catch (e) {
    throw failures.fail(e)
  }
}

export function unsupportedDurable(): OrreryError {
  return new OrreryError(
    'UNSUPPORTED',
    'the wasm engine keeps the store in memory: persist it with store.export() and Orrery.openStore({ snapshot }), or use the native engine for a durable store',
  )
}
