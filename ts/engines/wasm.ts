/**
 * The WebAssembly engine adapter. wasm32 aborts on a Rust panic: the instance traps and its
 * memory can no longer be trusted. The adapter then marks the engine poisoned, and every later
 * call, on any bus of that instance, fails with `ENGINE_POISONED` naming the original panic.
 */
import { fromEngine, OrreryError } from '../errors.js'
import { DRAIN_BYTES, statsFrom, type Backend, type BusCore } from '../backend.js'

/** The surface of the wasm-bindgen glue (both the `web` and the `nodejs` outputs). */
export interface WasmBinding {
  WasmBus: new (maxMessageBytes: number) => WasmBusHandle
  frameLayout(): string[]
  wasmMemory(): WebAssembly.Memory
  panicForTests(message: string): void
  setPanicReporter(reporter: (message: string) => void): void
}

export interface WasmBusHandle {
  channel(name: string): number
  channelName(channel: number): string | undefined
  setRetention(channel: number, maxCount: number, maxBytes: number, maxAge: number, now: number): void
  publish(batch: Uint8Array, now: number): number
  subscribe(channel: number, mode: number, value: number): number
  unsubscribe(id: number): void
  drain(capacity: number): number
  scratchPtr(): number
  hasPending(): boolean
  stats(channel: number): Float64Array
  free(): void
}

/** Shared by every bus of one instance: once poisoned, always poisoned. */
class Instance {
  poison: OrreryError | undefined
  lastPanic = ''

  constructor(readonly binding: WasmBinding) {
    binding.setPanicReporter((message) => { this.lastPanic = message })
  }

  /** Runs `call`, translating errors and poisoning the instance on a trap. */
  run<T>(call: () => T): T {
    if (this.poison) throw this.poisoned()
    try {
      return call()
    } catch (e) {
      if (e instanceof WebAssembly.RuntimeError) {
        this.poison = new OrreryError('PANIC', `the Orrery core panicked: ${this.lastPanic || e.message}`, { cause: e })
        throw this.poison
      }
      throw fromEngine(e)
    }
  }

  poisoned(): OrreryError {
    return new OrreryError('ENGINE_POISONED', `the wasm engine is unusable after an earlier panic (${this.poison!.message}); create a new Orrery in a fresh context`, { cause: this.poison })
  }
}

class WasmBus implements BusCore {
  private capacity = DRAIN_BYTES

  constructor(private readonly instance: Instance, private readonly handle: WasmBusHandle) {}

  channel(name: string): number { return this.instance.run(() => this.handle.channel(name)) }
  channelName(id: number): string | undefined { return this.instance.run(() => this.handle.channelName(id)) }
  setRetention(channel: number, maxCount: number, maxBytes: number, maxAge: number, now: number): void {
    this.instance.run(() => this.handle.setRetention(channel, maxCount, maxBytes, maxAge, now))
  }
  publish(batch: Uint8Array, now: number): number { return this.instance.run(() => this.handle.publish(batch, now)) }
  subscribe(channel: number, mode: number, value: number): number {
    return this.instance.run(() => this.handle.subscribe(channel, mode, value))
  }
  unsubscribe(id: number): void { this.instance.run(() => this.handle.unsubscribe(id)) }
  drain(): Uint8Array | undefined {
    return this.instance.run(() => {
      for (;;) {
        const n = this.handle.drain(this.capacity)
        if (n === 0) return undefined
        if (n < 0) {
          this.capacity = Math.max(-n, this.capacity * 2)
          continue
        }
        // A view straight into the instance's memory: valid until the next call into it.
        return new Uint8Array(this.instance.binding.wasmMemory().buffer, this.handle.scratchPtr(), n)
      }
    })
  }
  hasPending(): boolean { return this.instance.run(() => this.handle.hasPending()) }
  stats(channel: number) { return this.instance.run(() => statsFrom(this.handle.stats(channel))) }
  free(): void {
    if (!this.instance.poison) this.handle.free()
  }
}

/** Wraps an initialised wasm-bindgen module as a Backend. */
export function wasmBackend(binding: WasmBinding): Backend {
  const instance = new Instance(binding)
  return {
    name: 'wasm',
    createBus: ({ maxMessageBytes }) => new WasmBus(instance, instance.run(() => new binding.WasmBus(maxMessageBytes))),
    frameLayout: () => instance.run(() => binding.frameLayout()),
    panicForTests: (message) => instance.run(() => binding.panicForTests(message)),
  }
}
