/**
 * The N-API engine adapter. Each call goes straight to the addon; a thrown core error or a
 * caught Rust panic becomes an `OrreryError` with its code.
 */
import { fromEngine } from '../errors.js'
import { DRAIN_BYTES, statsFrom, type Backend, type BusCore } from '../backend.js'

/** The surface of `bindings/node` (its generated `binding.d.cts` is checked against this). */
export interface NativeBinding {
  NativeBus: new (maxMessageBytes: number) => NativeBusHandle
  frameLayout(): string[]
  panicForTests(message: string): void
}

export interface NativeBusHandle {
  channel(name: string): number
  channelName(channel: number): string | null | undefined
  setRetention(channel: number, maxCount: number, maxBytes: number, maxAge: number, now: number): void
  publish(batch: Uint8Array, now: number): number
  subscribe(channel: number, mode: number, value: number): number
  unsubscribe(id: number): void
  drain(out: Uint8Array): number
  hasPending(): boolean
  stats(channel: number): number[]
}

class NativeBus implements BusCore {
  private out = new Uint8Array(DRAIN_BYTES)

  constructor(private readonly handle: NativeBusHandle) {}

  channel(name: string): number {
    try { return this.handle.channel(name) } catch (e) { throw fromEngine(e) }
  }
  channelName(id: number): string | undefined {
    try { return this.handle.channelName(id) ?? undefined } catch (e) { throw fromEngine(e) }
  }
  setRetention(channel: number, maxCount: number, maxBytes: number, maxAge: number, now: number): void {
    try { this.handle.setRetention(channel, maxCount, maxBytes, maxAge, now) } catch (e) { throw fromEngine(e) }
  }
  publish(batch: Uint8Array, now: number): number {
    try { return this.handle.publish(batch, now) } catch (e) { throw fromEngine(e) }
  }
  subscribe(channel: number, mode: number, value: number): number {
    try { return this.handle.subscribe(channel, mode, value) } catch (e) { throw fromEngine(e) }
  }
  unsubscribe(id: number): void {
    try { this.handle.unsubscribe(id) } catch (e) { throw fromEngine(e) }
  }
  drain(): Uint8Array | undefined {
    try {
      for (;;) {
        const n = this.handle.drain(this.out)
        if (n > 0) return this.out.subarray(0, n)
        if (n === 0) return undefined
        this.out = new Uint8Array(Math.max(-n, this.out.length * 2))
      }
    } catch (e) { throw fromEngine(e) }
  }
  hasPending(): boolean {
    try { return this.handle.hasPending() } catch (e) { throw fromEngine(e) }
  }
  stats(channel: number) {
    try { return statsFrom(this.handle.stats(channel)) } catch (e) { throw fromEngine(e) }
  }
  free(): void {
    // The addon's finalizer frees the bus when the handle is collected.
  }
}

/** Wraps a loaded `bindings/node` module as a Backend. */
export function nativeBackend(binding: NativeBinding): Backend {
  return {
    name: 'native',
    createBus: ({ maxMessageBytes }) => {
      try { return new NativeBus(new binding.NativeBus(maxMessageBytes)) } catch (e) { throw fromEngine(e) }
    },
    frameLayout: () => binding.frameLayout(),
    panicForTests: (message) => {
      try { binding.panicForTests(message) } catch (e) { throw fromEngine(e) }
    },
  }
}
