/**
 * The N-API engine: each call goes straight to the addon; a thrown core error or a caught Rust
 * panic becomes an `OrreryError`. Records are drained into a buffer JS owns and reuses.
 */
import { fromEngine, isEngineFailure } from '../errors.js'
import { DRAIN_BYTES, type Backend, type NatsWireBinding, type NatsWireOptions, type RawBus } from './backend.js'
import { adaptBus, Slab } from './adapter.js'
import { guardOf, NATIVE_FAILURES } from './failures.js'
import { callBlock } from './call-block.js'
import { createNativeMesh, type NativeMeshBinding } from './native-mesh.js'
import { createNativeStore, openFailure, openNativeStore, type NativeStoreBinding } from './native-store.js'
import { createNativeWorkflows, type NativeWorkflowBinding } from './native-workflow.js'
import { registerEngineHooks } from './test-hooks.js'

/** The surface of `bindings/node` (its generated `binding.d.cts` must satisfy this). */
export interface NativeBinding extends NativeStoreBinding, NativeMeshBinding, NativeWorkflowBinding {
  NativeBus: {
    new (maxMessageBytes: number): NativeBusHandle
    attach(handle: number): NativeBusHandle
  }
  /** Absent from an addon built before the manifest existed. */
  manifestHash?(): string
  panicForTests(message: string): void
  busUseCallBlock(block: Float64Array): void
  busUseOut(slot: number, out: Uint8Array): void
  busAck(): void
  busAckMany(acks: Float64Array): void
  busPublish(batch: Uint8Array): void
  busRequest(batch: Uint8Array): void
  busReply(batch: Uint8Array): void
  busDrain(): void
  busAckDrain(): void
  busNextDeadline(): void
  busHasPending(): void
  NatsWire: { open(options: NatsWireOptions, events: (event: string) => void): NatsWireBinding }
}

/** The calls the addon makes only through the call block (`bus_calls.rs`), not as methods. */
type HotCall = 'ack' | 'publish' | 'request' | 'reply' | 'hasPending' | 'nextDeadline'

export interface NativeBusHandle extends Omit<RawBus, HotCall> {
  /** The endpoint's slot in the addon's registry, which the hot calls name in the call block. */
  readonly slot: number
  share(): number
  setWaker(wake: (() => void) | null): void
  /** Releases the endpoint now (its slot, drain buffer, waker and share of the core). */
  close(): void
  openDisk(path: string): void
  makeDurable(channel: number): void
  isDurable(channel: number): boolean
  diskSubmit(): void
  diskFlush(): void
  diskTickets(): number[]
  diskFailure(): string | null
  setDiskListener(listener: ((committed: number) => void) | null): void
}

const EMPTY = new Uint8Array(0)

/** Every RawBus call the call block does not take: bound to the handle. */
const RAW_BUS_CALLS = [
  'channel',
  'configure',
  'subscribe',
  'unsubscribe',
  'abandon',
  'setPaused',
  'group',
  'join',
  'deleteGroup',
  'nack',
  'claim',
  'pending',
  'stats',
  'subscriberStats',
  'groupStats',
  'lateReplies',
  'bind',
  'ingest',
  'drainEgress',
  'groupRoom',
  'mirrorRoom',
] as const satisfies readonly Exclude<keyof RawBus, HotCall>[]

/** The raw calls, the hot ones through the call block (napi methods need their own `this`). */
function hot(b: NativeBinding, handle: NativeBusHandle, call: Float64Array): RawBus {
  const { slot } = handle
  const bound = {} as Record<string, unknown>
  for (const name of RAW_BUS_CALLS) bound[name] = (handle[name] as (...args: unknown[]) => unknown).bind(handle)
  // Spread into one new object: `Object.assign` onto `bound` left it a dictionary in V8, and
  // every `raw.publish` a dictionary lookup.
  return {
    ...(bound as unknown as RawBus),
    ack(_member: number, _seq: number, _attempt: number): void {
      call[0] = slot
      call[1] = _member
      call[2] = _seq
      call[3] = _attempt
      b.busAck()
    },
    publish(batch: Uint8Array, now: number): number {
      call[0] = slot
      call[1] = now
      b.busPublish(batch)
      return call[0]!
    },
    request(batch: Uint8Array, timeout: number, now: number): number {
      call[0] = slot
      call[1] = timeout
      call[2] = now
      b.busRequest(batch)
      return call[0]!
    },
    reply(batch: Uint8Array): number {
      call[0] = slot
      b.busReply(batch)
      return call[0]!
    },
    hasPending(): boolean {
      call[0] = slot
      b.busHasPending()
      return call[0] === 1
    },
    nextDeadline(): number {
      call[0] = slot
      b.busNextDeadline()
      return call[0]!
    },
  }
}

const guard = guardOf(NATIVE_FAILURES)

function adapt(b: NativeBinding, handle: NativeBusHandle, attached = false) {
  const slab = new Slab()
  let out = new Uint8Array(DRAIN_BYTES)
  // Acks, publishes, requests, replies and drains take their endpoint and arguments from it.
  const call = callBlock(b, 'bus', (block) => b.busUseCallBlock(block))
  const { slot } = handle
  b.busUseOut(slot, out)
  const drainOnce = (now: number) => {
    call[0] = slot
    call[1] = now
    b.busDrain()
    return call[0]!
  }
  const drainer = {
    done: false,
    ackRefused: false,
    drain(now: number): Uint8Array | undefined {
      return this.taken(drainOnce(now), now)
    },
    ackThenDrain(now: number, member: number, seq: number, attempt: number): Uint8Array | undefined {
      call[0] = slot
      call[1] = now
      call[2] = member
      call[3] = seq
      call[4] = attempt
      b.busAckDrain()
      this.ackRefused = call[1] === 1
      return this.taken(call[0]!, now)
    },
    /** The records a drain's `result` says it wrote; a buffer too small grows and is drained again. */
    taken(result: number, now: number): Uint8Array | undefined {
      while (result < 0) {
        out = new Uint8Array(Math.max(-result, out.length * 2))
        b.busUseOut(slot, out)
        result = drainOnce(now)
      }
      this.done = result % 2 === 1
      const n = (result - (result % 2)) / 2
      return n === 0 ? undefined : slab.keep(out.subarray(0, n))
    },
  }
  const core = adaptBus(hot(b, handle, call), guard, drainer, {
    attached,
    ackMany(acks: Float64Array, n: number): number {
      if (n === 1) {
        // One ack (an agent's after each request, most often): the call block alone, about half
        // the cost of handing over the array.
        call[0] = slot
        call[1] = acks[0]!
        call[2] = acks[1]!
        call[3] = acks[2]!
        try {
          b.busAck()
          return 0
        } catch (e) {
          // Refused, it is counted as `busAckMany` counts it; a panic, or an endpoint that is
          // gone (which `busAckMany` throws too), goes on up.
          const error = fromEngine(e)
          if (error.code === 'UNKNOWN_ENDPOINT' || isEngineFailure(error)) throw e
          return 1
        }
      }
      call[0] = slot
      call[1] = n
      b.busAckMany(acks)
      return call[0]!
    },
    share: () => handle.share(),
    setWaker: (wake) => handle.setWaker(wake),
    // Releases at once what a finalizer would release only when the handle is collected: 5,000
    // create/close cycles grew the process by 437 MiB waiting for that. Clearing the waker (part of
    // close) lets this thread exit.
    free: () => {
      handle.close()
      out = EMPTY
    },
  })
  core.openDisk = (path) => {
    guard(() => {
      try {
        handle.openDisk(path)
      } catch (e) {
        throw openFailure(e, path)
      }
    })
    return {
      makeDurable: (channel) => guard(() => handle.makeDurable(channel)),
      isDurable: (channel) => guard(() => handle.isDurable(channel)),
      submit: () => guard(() => handle.diskSubmit()),
      flush: () => guard(() => handle.diskFlush()),
      tickets: () => guard(() => handle.diskTickets()),
      failure: () => guard(() => handle.diskFailure()),
      setListener: (listener) => guard(() => handle.setDiskListener(listener)),
    }
  }
  return core
}

/** Wraps a loaded `bindings/node` module as a Backend. */
export function nativeBackend(binding: NativeBinding): Backend {
  const backend: Backend = {
    name: 'native',
    createBus: ({ maxMessageBytes }) =>
      adapt(
        binding,
        guard(() => new binding.NativeBus(maxMessageBytes)),
      ),
    attachBus: (handle) =>
      adapt(
        binding,
        guard(() => binding.NativeBus.attach(handle)),
        true,
      ),
    createStore: (options) => createNativeStore(binding, options),
    createMesh: (options) => createNativeMesh(binding, options),
    createWorkflows: () => createNativeWorkflows(binding),
    openStore: (options) => openNativeStore(binding, options),
    manifestHash: () => binding.manifestHash?.(),
    openNatsWire: (options, events) => binding.NatsWire.open(options, events),
  }
  return registerEngineHooks(backend, { panic: (message) => guard(() => binding.panicForTests(message)) })
}
