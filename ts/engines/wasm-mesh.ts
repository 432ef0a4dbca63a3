/**
 * The wasm mesh: a wasm-bindgen class whose hot calls take numbers only. A route's exclusions
 * and a search's matches travel through `io`, a `f64` buffer in the instance's memory, viewed
 * afresh after each call that may have grown the memory.
 */
import { MESH_STATE_FIELDS, type MeshCore, type MeshCoreOptions } from './backend.js'
import { OrreryError } from '../errors.js'
import type { WasmFailures } from './wasm-store.js'

export interface WasmMeshHandle {
  reserve(len: number): number
  ioPtr(): number
  readonly second: number
  register(id: string, kind: string, capabilities: string, tags: string[], bulkhead: number, now: number): number
  deregister(agent: number): void
  heartbeat(agent: number, health: number, now: number): void
  setHealth(agent: number, health: number, now: number): void
  query(capability: string, range: string, minHealth: number, tags: string[], also: string): number
  find(query: number, now: number): number
  route(query: number, strategy: number, now: number, excluded: number): number
  finish(agent: number, outcome: number, now: number): number
  take(limiter: number, n: number, now: number): number
  limiter(capacity: number, perSecond: number, now: number): number
  dropLimiter(limiter: number): void
  backoff(base: number, factor: number, max: number, jitter: number, attempt: number): number
  tick(now: number): void
  nextDeadline(): number
  events(): Float64Array
  breakerState(agent: number, now: number): number
  agentState(agent: number): Float64Array
  similar(name: string, threshold: number): string
  free(): void
}

export type WasmMeshClass = new (
  seed: number,
  interval: number,
  degradedAfter: number,
  unhealthyAfter: number,
  offlineAfter: number,
  deregisterAfter: number,
  failuresToOpen: number,
  coolDown: number,
  probes: number,
  successesToClose: number,
) => WasmMeshHandle

export function createWasmMesh(cls: WasmMeshClass, memory: WebAssembly.Memory, failures: WasmFailures, o: MeshCoreOptions): MeshCore {
  let closed = false
  const guarded = <T>(call: () => T): T => {
    failures.usable()
    if (closed) throw new OrreryError('CLOSED', 'the mesh is closed')
    try {
      return call()
    } catch (e) {
      throw failures.fail(e)
    }
  }
  // Calls that only let go (see Release in adapter.ts): nothing to do on a poisoned instance.
  const released = (call: () => void): void => {
    try {
      failures.usable()
    } catch {
      return
    }
    guarded(call)
  }
  const m = guarded(
    () =>
      new cls(
        o.seed,
        o.interval,
        o.degradedAfter,
        o.unhealthyAfter,
        o.offlineAfter,
        o.deregisterAfter,
        o.failuresToOpen,
        o.coolDown,
        o.probes,
        o.successesToClose,
      ),
  )
  return {
    get second() {
      return m.second
    },
    register: (id, kind, caps, tags, bulkhead, now) => guarded(() => m.register(id, kind, caps, tags, bulkhead, now)),
    deregister: (agent) => released(() => m.deregister(agent)),
    heartbeat: (agent, health, now) => guarded(() => m.heartbeat(agent, health, now)),
    setHealth: (agent, health, now) => guarded(() => m.setHealth(agent, health, now)),
    query: (capability, range, minHealth, tags, also) => guarded(() => m.query(capability, range, minHealth, tags, also)),
    findStates(query, now) {
      const n = guarded(() => m.find(query, now)) * MESH_STATE_FIELDS
      return new Float64Array(memory.buffer, m.ioPtr(), n)
    },
    route(query, strategy, now, exclude) {
      return guarded(() => {
        if (exclude.length > 0) {
          // Reserve first: it may grow the memory, which detaches an older view of it.
          const at = m.reserve(exclude.length)
          const io = new Float64Array(memory.buffer, at, exclude.length)
          for (let i = 0; i < exclude.length; i++) io[i] = exclude[i]!
        }
        return m.route(query, strategy, now, exclude.length)
      })
    },
    finish: (agent, outcome, now) => guarded(() => m.finish(agent, outcome, now)) === 1,
    take: (limiter, n, now) => guarded(() => m.take(limiter, n, now)) === 1,
    limiter: (capacity, perSecond, now) => guarded(() => m.limiter(capacity, perSecond, now)),
    dropLimiter: (limiter) => released(() => m.dropLimiter(limiter)),
    backoff: (base, factor, max, jitter, attempt) => guarded(() => m.backoff(base, factor, max, jitter, attempt)),
    tick: (now) => guarded(() => m.tick(now)),
    nextDeadline: () => guarded(() => m.nextDeadline()),
    events: () => guarded(() => m.events()),
    breakerState: (agent, now) => guarded(() => m.breakerState(agent, now)),
    agentState: (agent) => guarded(() => m.agentState(agent)),
    similar: (name, threshold) => guarded(() => m.similar(name, threshold)),
    close() {
      if (closed) return
      closed = true
      try {
        m.free()
      } catch {
        /* poisoned: nothing left to release */
      }
    },
  }
}
