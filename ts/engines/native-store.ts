/**
 * The native store: `io` is a buffer JS owns and passes with each call; the addon reads the
 * request from it and writes the result over it. A durable store's commits arrive through a
 * listener the addon calls from its disk thread.
 */
import type { RawStore, StoreCore, StoreCoreOptions } from '../backend.js'
import { fromEngine, type OrreryError } from '../errors.js'
import { drainCapacity, StoreAdapter } from './store.js'

export interface NativeStoreHandle extends RawStore {
  write(io: Uint8Array, count: number, now: number): number
  get(ns: number, keyLen: number, version: number, now: number, io: Uint8Array): number
  history(ns: number, keyLen: number, now: number, io: Uint8Array): number
  scan(ns: number, prefixLen: number, afterLen: number, values: boolean, now: number, io: Uint8Array): number
  purge(ns: number, keyLen: number, now: number, io: Uint8Array): number
  watch(ns: number, targetLen: number, prefix: boolean, mode: number, from: number, capacity: number, io: Uint8Array): number
  merge(io: Uint8Array, wall: number, logical: number, lww: boolean, now: number): number
  drain(out: Uint8Array): number
  submitted(): number
  committed(): number
  diskFailure(): string | null | undefined
  setListener(listener: ((ticket: number) => void) | null): void
  close(): void
}

export interface NativeStoreClass {
  new (maxValueBytes: number, history: number, replica: string): NativeStoreHandle
  open(path: string, batched: boolean, maxValueBytes: number, history: number, replica: string): NativeStoreHandle
}

class NativeStoreCore extends StoreAdapter implements StoreCore {
  private buf = new Uint8Array(64 * 1024)
  private dv = new DataView(this.buf.buffer)
  private readonly out: Uint8Array

  constructor(protected readonly raw: NativeStoreHandle, readonly durable: boolean, maxValueBytes: number) {
    super()
    this.out = new Uint8Array(drainCapacity(maxValueBytes))
  }

  protected fail(error: unknown): OrreryError {
    return fromEngine(error)
  }

  protected usable(): void {}

  io(min = 0): Uint8Array {
    if (min > this.buf.length) {
      const grown = new Uint8Array(Math.max(min, this.buf.length * 2))
      grown.set(this.buf)
      this.buf = grown
      this.dv = new DataView(grown.buffer)
    }
    return this.buf
  }

  view(): DataView {
    return this.dv
  }

  write(count: number, now: number): number {
    try { return this.raw.write(this.buf, count, now) } catch (e) { throw fromEngine(e) }
  }

  get(ns: number, keyLen: number, version: number, now: number): number {
    try { return this.raw.get(ns, keyLen, version, now, this.buf) } catch (e) { throw fromEngine(e) }
  }

  history(ns: number, keyLen: number, now: number): number {
    try { return this.raw.history(ns, keyLen, now, this.buf) } catch (e) { throw fromEngine(e) }
  }

  scan(ns: number, prefixLen: number, afterLen: number, values: boolean, now: number): number {
    try { return this.raw.scan(ns, prefixLen, afterLen, values, now, this.buf) } catch (e) { throw fromEngine(e) }
  }

  purge(ns: number, keyLen: number, now: number): number {
    try { return this.raw.purge(ns, keyLen, now, this.buf) } catch (e) { throw fromEngine(e) }
  }

  watch(ns: number, targetLen: number, prefix: boolean, mode: number, from: number, capacity: number): number {
    try { return this.raw.watch(ns, targetLen, prefix, mode, from, capacity, this.buf) } catch (e) { throw fromEngine(e) }
  }

  merge(wall: number, logical: number, lww: boolean, now: number): number {
    try { return this.raw.merge(this.buf, wall, logical, lww, now) } catch (e) { throw fromEngine(e) }
  }

  drain(): Uint8Array | undefined {
    let result: number
    try { result = this.raw.drain(this.out) } catch (e) { throw fromEngine(e) }
    const n = (result - (result % 2)) / 2
    return n === 0 ? undefined : this.out.slice(0, n)
  }

  submitted(): number {
    return this.raw.submitted()
  }

  committed(): number {
    return this.raw.committed()
  }

  diskFailure(): string | null | undefined {
    return this.raw.diskFailure()
  }

  setListener(listener: ((ticket: number) => void) | null): void {
    try { this.raw.setListener(listener) } catch (e) { throw fromEngine(e) }
  }

  close(): void {
    try { this.raw.close() } catch (e) { throw fromEngine(e) }
  }
}

export function createNativeStore(cls: NativeStoreClass, o: StoreCoreOptions): StoreCore {
  try {
    return new NativeStoreCore(new cls(o.maxValueBytes, o.history, o.replica), false, o.maxValueBytes)
  } catch (e) {
    throw fromEngine(e)
  }
}

export function openNativeStore(cls: NativeStoreClass, o: StoreCoreOptions & { path: string; batched: boolean }): StoreCore {
  try {
    return new NativeStoreCore(cls.open(o.path, o.batched, o.maxValueBytes, o.history, o.replica), true, o.maxValueBytes)
  } catch (e) {
    throw fromEngine(e)
  }
}
