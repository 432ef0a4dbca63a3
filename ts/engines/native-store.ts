/**
 * The native store: plain functions taking the store's handle (a class method costs ~220 ns
 * through napi-rs, a plain function ~20 ns). Requests and results travel through `io`, a
 * buffer JS owns and hands the addon once (and again whenever it grows), so hot calls carry
 * only numbers. A durable store's commits arrive through a listener the
 * addon calls from its disk thread.
 */
import type { RawStore, StoreCore, StoreCoreOptions } from './backend.js'
import { fromEngine, OrreryError } from '../errors.js'
import { callBlock } from './call-block.js'
import { drainCapacity, StoreAdapter } from './store.js'
import { NATIVE_FAILURES } from './failures.js'

/** The object that owns a store's lifetime. */
export interface NativeStoreHandle {
  readonly handle: number
  setListener(listener: ((ticket: number) => void) | null): void
  close(): { committed: number; failure?: string | null }
}

/** The store functions of `bindings/node` (its generated `binding.d.cts` must satisfy this). */
export interface NativeStoreBinding {
  NativeStore: {
    new (maxValueBytes: number, history: number, replica: string, tombstoneMs: number): NativeStoreHandle
    open(path: string, batched: boolean, maxValueBytes: number, history: number, replica: string, tombstoneMs: number): NativeStoreHandle
  }
  storeNamespace(h: number, name: string): number
  storeSetHistory(h: number, ns: number, keep: number): void
  storeWriter(h: number, name: string): number
  storeWriterName(h: number, id: number): string | null | undefined
  storeUseIo(h: number, io: Uint8Array): void
  storeUseCallBlock(block: Float64Array): void
  storeWrite(): void
  storeConflict(h: number): number[]
  storeGet(): void
  storeHistory(h: number, ns: number, keyLen: number, now: number): number
  storeScan(h: number, ns: number, prefixLen: number, afterLen: number, values: boolean, now: number): number
  storePurge(h: number, ns: number, keyLen: number, now: number): number
  storeWatch(h: number, ns: number, targetLen: number, prefix: boolean, mode: number, from: number, capacity: number): number
  storeUnwatch(h: number, id: number): void
  storeSetWatchPaused(h: number, id: number, paused: boolean): void
  storeDrain(h: number, out: Uint8Array): number
  storeMerge(h: number, wall: number, logical: number, lww: boolean, now: number): number
  storeTick(h: number, now: number): void
  storeNextDeadline(h: number): number
  storeRevision(h: number): number
  storeExport(h: number): Uint8Array
  storeImport(h: number, bytes: Uint8Array): void
  storeTickets(): void
  storeSubmit(): void
  storeDiskFailure(h: number): string | null | undefined
}

/** The calls without `io`, bound to one handle. */
function raw(b: NativeStoreBinding, h: number): RawStore {
  return {
    namespace: (name) => b.storeNamespace(h, name),
    setHistory: (ns, keep) => b.storeSetHistory(h, ns, keep),
    writer: (name) => b.storeWriter(h, name),
    writerName: (id) => b.storeWriterName(h, id),
    conflict: () => b.storeConflict(h),
    unwatch: (id) => b.storeUnwatch(h, id),
    setWatchPaused: (id, paused) => b.storeSetWatchPaused(h, id, paused),
    tick: (now) => b.storeTick(h, now),
    nextDeadline: () => b.storeNextDeadline(h),
    revision: () => b.storeRevision(h),
    export: () => b.storeExport(h),
    import: (bytes) => b.storeImport(h, bytes),
  }
}

class NativeStoreCore extends StoreAdapter implements StoreCore {
  private buf = new Uint8Array(64 * 1024)
  private dv = new DataView(this.buf.buffer)
  private out: Uint8Array
  private readonly h: number
  private readonly call: Float64Array
  protected readonly raw: RawStore
  /** Set by close: how far the disk got. */
  private closed: { committed: number; failure?: string | null } | undefined

  constructor(
    private readonly b: NativeStoreBinding,
    private readonly owner: NativeStoreHandle,
    readonly durable: boolean,
    readonly maxValueBytes: number,
  ) {
    super(NATIVE_FAILURES)
    this.h = owner.handle
    this.raw = raw(b, this.h)
    this.out = new Uint8Array(drainCapacity(maxValueBytes))
    b.storeUseIo(this.h, this.buf)
    // The hottest calls (`storeGet`, `storeWrite`) take their handle and arguments from it.
    this.call = callBlock(b, 'store', (block) => b.storeUseCallBlock(block))
  }

  io(min = 0): Uint8Array {
    if (min > this.buf.length) {
      const grown = new Uint8Array(Math.max(min, this.buf.length * 2))
      grown.set(this.buf)
      try {
        this.b.storeUseIo(this.h, grown)
      } catch (e) {
        throw fromEngine(e)
      }
      this.buf = grown
      this.dv = new DataView(grown.buffer)
    }
    return this.buf
  }

  view(): DataView {
    return this.dv
  }

  write(count: number, now: number): number {
    const { call } = this
    call[0] = this.h
    call[1] = count
    call[2] = now
    try {
      this.b.storeWrite()
    } catch (e) {
      throw fromEngine(e)
    }
    return call[0]!
  }

  get(ns: number, keyLen: number, version: number, now: number): number {
    const { call } = this
    call[0] = this.h
    call[1] = ns
    call[2] = keyLen
    call[3] = version
    call[4] = now
    try {
      this.b.storeGet()
    } catch (e) {
      throw fromEngine(e)
    }
    return call[0]!
  }

  history(ns: number, keyLen: number, now: number): number {
    try {
      return this.b.storeHistory(this.h, ns, keyLen, now)
    } catch (e) {
      throw fromEngine(e)
    }
  }

  scan(ns: number, prefixLen: number, afterLen: number, values: boolean, now: number): number {
    try {
      return this.b.storeScan(this.h, ns, prefixLen, afterLen, values, now)
    } catch (e) {
      throw fromEngine(e)
    }
  }

  purge(ns: number, keyLen: number, now: number): number {
    try {
      return this.b.storePurge(this.h, ns, keyLen, now)
    } catch (e) {
      throw fromEngine(e)
    }
  }

  watch(ns: number, targetLen: number, prefix: boolean, mode: number, from: number, capacity: number): number {
    try {
      return this.b.storeWatch(this.h, ns, targetLen, prefix, mode, from, capacity)
    } catch (e) {
      throw fromEngine(e)
    }
  }

  merge(wall: number, logical: number, lww: boolean, now: number): number {
    try {
      return this.b.storeMerge(this.h, wall, logical, lww, now)
    } catch (e) {
      throw fromEngine(e)
    }
  }

  drain(): Uint8Array | undefined {
    for (;;) {
      let result: number
      try {
        result = this.b.storeDrain(this.h, this.out)
      } catch (e) {
        throw fromEngine(e)
      }
      if (result < 0) {
        // A record larger than the buffer (a value loaded from a snapshot past the limit).
        this.out = new Uint8Array(Math.max(-result, this.out.length * 2))
        continue
      }
      const n = (result - (result % 2)) / 2
      return n === 0 ? undefined : this.out.slice(0, n)
    }
  }

  submitDisk(): void {
    const { call } = this
    call[0] = this.h
    try {
      this.b.storeSubmit()
    } catch (e) {
      throw fromEngine(e)
    }
  }

  submitted(): number {
    const { call } = this
    call[0] = this.h
    try {
      this.b.storeTickets()
    } catch (e) {
      throw fromEngine(e)
    }
    return call[0]!
  }

  committed(): number {
    if (this.closed) return this.closed.committed
    const { call } = this
    call[0] = this.h
    try {
      this.b.storeTickets()
    } catch (e) {
      throw fromEngine(e)
    }
    return call[1]!
  }

  diskFailure(): string | null | undefined {
    return this.closed ? this.closed.failure : this.b.storeDiskFailure(this.h)
  }

  setListener(listener: ((ticket: number) => void) | null): void {
    if (this.closed) return
    try {
      this.owner.setListener(listener)
    } catch (e) {
      throw fromEngine(e)
    }
  }

  close(): void {
    if (this.closed) return
    try {
      this.closed = this.owner.close()
    } catch (e) {
      throw fromEngine(e)
    }
  }
}

export function createNativeStore(b: NativeStoreBinding, o: StoreCoreOptions): StoreCore {
  try {
    return new NativeStoreCore(b, new b.NativeStore(o.maxValueBytes, o.history, o.replica, o.tombstoneMs), false, o.maxValueBytes)
  } catch (e) {
    throw fromEngine(e)
  }
}

export function openNativeStore(b: NativeStoreBinding, o: StoreCoreOptions & { path: string; batched: boolean }): StoreCore {
  try {
    return new NativeStoreCore(b, b.NativeStore.open(o.path, o.batched, o.maxValueBytes, o.history, o.replica, o.tombstoneMs), true, o.maxValueBytes)
  } catch (e) {
    throw openFailure(e, o.path)
  }
}

/**
 * What opening the file at `path` failed with: a disk failure (`STORE_IO`) names the file and
 * says whether it is damaged (rather than missing a directory or space), as fields, since a
 * process may open several files and a damaged one needs a person. The store's and the durable
 * transport's opens both say so.
 */
export function openFailure(e: unknown, path: string): OrreryError {
  const error = fromEngine(e)
  if (error.code !== 'STORE_IO') return error
  const damaged = error.message.includes('the file is damaged')
  return new OrreryError('STORE_IO', error.message, { cause: e, details: { ...error.details, path, damaged } })
}
