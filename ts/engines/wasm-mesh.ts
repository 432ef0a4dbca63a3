/**
 * The wasm mesh: a wasm-bindgen class whose hot calls take numbers only. A route's exclusions,
 * its retry time and a search's matches travel through `io`, a `f64` buffer in the instance's
 * memory, viewed afresh after each call that may have grown the memory.
 */
import { MESH_STATE_FIELDS, ROUTE_REFUSED, type MeshCore, type MeshCoreOptions } from './backend.js'
import type { EngineFailures } from './failures.js'
import { adaptMesh, meshArgs, type MeshArgs, type RawMesh } from './mesh.js'

export interface WasmMeshHandle {
  reserve(len: number): number
  ioPtr(): number
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

export type WasmMeshClass = new (...args: MeshArgs) => WasmMeshHandle

export function createWasmMesh(cls: WasmMeshClass, memory: WebAssembly.Memory, failures: EngineFailures, o: MeshCoreOptions): MeshCore {
  return adaptMesh(() => rawMesh(new cls(...meshArgs(o)), memory), failures)
}

function rawMesh(m: WasmMeshHandle, memory: WebAssembly.Memory): RawMesh {
  return {
    register: (id, kind, caps, tags, bulkhead, now) => m.register(id, kind, caps, tags, bulkhead, now),
    deregister: (agent) => m.deregister(agent),
    heartbeat: (agent, health, now) => m.heartbeat(agent, health, now),
    setHealth: (agent, health, now) => m.setHealth(agent, health, now),
    query: (capability, range, minHealth, tags, also) => m.query(capability, range, minHealth, tags, also),
    findStates(query, now) {
      const n = m.find(query, now) * MESH_STATE_FIELDS
      return new Float64Array(memory.buffer, m.ioPtr(), n)
    },
    route(query, strategy, now, exclude, refusal) {
      if (exclude.length > 0) {
        // Reserve first: it may grow the memory, which detaches an older view of it.
        const at = m.reserve(exclude.length)
        const io = new Float64Array(memory.buffer, at, exclude.length)
        for (let i = 0; i < exclude.length; i++) io[i] = exclude[i]!
      }
      const result = m.route(query, strategy, now, exclude.length)
      if (result === ROUTE_REFUSED.circuitOpen && refusal) refusal.retryAt = new Float64Array(memory.buffer, m.ioPtr(), 1)[0]!
      return result
    },
    finish: (agent, outcome, now) => m.finish(agent, outcome, now) === 1,
    take: (limiter, n, now) => m.take(limiter, n, now),
    limiter: (capacity, perSecond, now) => m.limiter(capacity, perSecond, now),
    dropLimiter: (limiter) => m.dropLimiter(limiter),
    backoff: (base, factor, max, jitter, attempt) => m.backoff(base, factor, max, jitter, attempt),
    tick: (now) => m.tick(now),
    nextDeadline: () => m.nextDeadline(),
    events: () => m.events(),
    breakerState: (agent, now) => m.breakerState(agent, now),
    agentState: (agent) => m.agentState(agent),
    similar: (name, threshold) => m.similar(name, threshold),
    close() {
      try {
        m.free()
      } catch {
        /* poisoned: nothing left to release */
      }
    },
  }
}
