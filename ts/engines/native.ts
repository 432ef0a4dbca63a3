/**
 * The N-API engine: each call goes straight to the addon; a thrown core error or a caught Rust
 * panic becomes an `OrreryError`. Records are drained into a buffer JS owns and reuses.
 */
import { DRAIN_BYTES, type Backend, type RawBus } from '../backend.js'
import { fromEngine } from '../errors.js'
import { adaptBus, Slab, type Guard } from './adapter.js'
import { createNativeStore, openNativeStore, type NativeStoreBinding } from './native-store.js'

/** The surface of `bindings/node` (its generated `binding.d.cts` must satisfy this). */
export interface NativeBinding extends NativeStoreBinding {
  NativeBus: {
    new (maxMessageBytes: number): NativeBusHandle
    attach(handle: number): NativeBusHandle
  }
  frameLayout(): string[]
  panicForTests(message: string): void
}

export interface NativeBusHandle extends RawBus {
  drain(out: Uint8Array, now: number): number
  share(): number
  setWaker(wake: (() => void) | null): void
}

const guard: Guard = (call) => {
  try {
    return call()
  } catch (e) {
    throw fromEngine(e)
  }
}

function adapt(handle: NativeBusHandle) {
  const slab = new Slab()
  let out = new Uint8Array(DRAIN_BYTES)
  const drainer = {
    done: false,
    drain(now: number): Uint8Array | undefined {
      for (;;) {
        const result = handle.drain(out, now)
        if (result < 0) {
          out = new Uint8Array(Math.max(-result, out.length * 2))
          continue
        }
        this.done = result % 2 === 1
        const n = (result - (result % 2)) / 2
        return n === 0 ? undefined : slab.keep(out.subarray(0, n))
      }
    },
  }
  return adaptBus(handle, guard, drainer, {
    share: () => handle.share(),
    setWaker: (wake) => handle.setWaker(wake),
    // Clearing the waker lets this thread exit; the addon closes the endpoint when the handle is collected.
    free: () => handle.setWaker(null),
  })
}

/** Wraps a loaded `bindings/node` module as a Backend. */
export function nativeBackend(binding: NativeBinding): Backend {
  return {
    name: 'native',
    createBus: ({ maxMessageBytes }) => adapt(guard(() => new binding.NativeBus(maxMessageBytes))),
    attachBus: (handle) => adapt(guard(() => binding.NativeBus.attach(handle))),
    createStore: (options) => createNativeStore(binding, options),
    openStore: (options) => openNativeStore(binding, options),
    frameLayout: () => binding.frameLayout(),
    panicForTests: (message) => guard(() => binding.panicForTests(message)),
  }
}
