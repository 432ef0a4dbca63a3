/**
 * The WebAssembly engine. wasm32 aborts on a Rust panic: the instance traps and its memory can
 * no longer be trusted, so the engine marks itself poisoned and every later call, on any bus
 * of that instance, fails with `ENGINE_POISONED` naming the original panic (which the panic
 * hook reported just before the trap). Records are read through a view of the instance's
 * memory, without a copy out.
 */
import { DRAIN_BYTES, type Backend, type RawBus } from './backend.js'
import { fromEngine, OrreryError } from '../errors.js'
import { adaptBus, notShareable, Slab } from './adapter.js'
import { guardOf, releaseOf, type EngineFailures } from './failures.js'
import { createWasmMesh, type WasmMeshClass } from './wasm-mesh.js'
import { createWasmStore, unsupportedDurable, type WasmStoreClass } from './wasm-store.js'
import { createWasmWorkflows, type WasmWorkflowsClass } from './wasm-workflow.js'
import { registerEngineHooks } from './test-hooks.js'

/** The surface of the wasm-bindgen `web` glue, which browsers and Node both load. */
export interface WasmBinding {
  WasmBus: new (maxMessageBytes: number) => WasmBusHandle
  WasmStore: WasmStoreClass
  WasmMesh: WasmMeshClass
  WasmWorkflows: WasmWorkflowsClass
  /** Absent from a module built before the manifest existed. */
  manifestHash?(): string
  wasmMemory(): WebAssembly.Memory
  panicForTests(message: string): void
  setPanicReporter(reporter: (message: string) => void): void
}

export interface WasmBusHandle extends RawBus {
  /** Acks the (member, seq, attempt) triples of `acks`; how many were refused. */
  ackMany(acks: Float64Array): number
  drain(capacity: number, now: number): number
  scratchPtr(): number
  free(): void
}

/** Wraps an initialised wasm-bindgen module as a Backend. */
export function wasmBackend(binding: WasmBinding): Backend {
  let poison: OrreryError | undefined
  let lastPanic = ''
  binding.setPanicReporter((message) => {
    lastPanic = message
  })

  // Poisoned after a trap: the instance's memory can no longer be trusted.
  const failures: EngineFailures = {
    usable() {
      if (poison) {
        throw new OrreryError(
          'ENGINE_POISONED',
          `the wasm engine is unusable after an earlier panic (${poison.message}); create a new Orrery in a fresh context`,
          { cause: poison },
        )
      }
    },
    fail(e) {
      if (e instanceof WebAssembly.RuntimeError) {
        poison = new OrreryError('PANIC', `the Orrery core panicked: ${lastPanic || e.message}`, { cause: e })
        return poison
      }
      return fromEngine(e)
    },
    poisoned: () => poison !== undefined,
  }

  const guard = guardOf(failures)
  const release = releaseOf(failures)

  const adapt = (handle: WasmBusHandle) => {
    let capacity = DRAIN_BYTES
    const slab = new Slab()
    const drainer = {
      done: false,
      drain(now: number): Uint8Array | undefined {
        for (;;) {
          const result = handle.drain(capacity, now)
          if (result < 0) {
            capacity = Math.max(-result, capacity * 2)
            continue
          }
          this.done = result % 2 === 1
          const n = (result - (result % 2)) / 2
          if (n === 0) return undefined
          // One copy out of the instance's memory (which a later call may overwrite or move).
          return slab.keep(new Uint8Array(binding.wasmMemory().buffer, handle.scratchPtr(), n))
        }
      },
    }
    return adaptBus(
      handle,
      guard,
      drainer,
      {
        // One call for the whole queue; the glue copies only the triples in use.
        ackMany: (acks, n) => handle.ackMany(acks.subarray(0, 3 * n)),
        share: () => {
          throw notShareable('wasm')
        },
        setWaker: () => {
          throw notShareable('wasm')
        },
        free: () => {
          if (!poison) handle.free()
        },
      },
      release,
    )
  }

  const backend: Backend = {
    name: 'wasm',
    createBus: ({ maxMessageBytes }) => adapt(guard(() => new binding.WasmBus(maxMessageBytes))),
    attachBus: () => {
      throw notShareable('wasm')
    },
    createMesh: (options) => createWasmMesh(binding.WasmMesh, binding.wasmMemory(), failures, options),
    createStore: (options) => createWasmStore(binding.WasmStore, binding.wasmMemory(), failures, options),
    createWorkflows: () => createWasmWorkflows(binding.WasmWorkflows, binding.wasmMemory(), failures),
    openStore: () => {
      throw unsupportedDurable()
    },
    manifestHash: () => guard(() => binding.manifestHash?.()),
  }
  return registerEngineHooks(backend, { panic: (message) => guard(() => binding.panicForTests(message)) })
}
