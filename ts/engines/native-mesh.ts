/**
 * The native mesh: plain functions taking the mesh's handle; the hot calls (route, finish,
 * find, take) take no arguments at all and use the mesh call block instead (see call-block.ts).
 */
import { MESH_STATE_FIELDS, ROUTE_REFUSED, type MeshCore, type MeshCoreOptions } from './backend.js'
import { callBlock } from './call-block.js'
import { CALL_BLOCK } from './manifest.js'
import { NATIVE_FAILURES } from './failures.js'
import { adaptMesh, meshArgs, type MeshArgs, type RawMesh } from './mesh.js'

/** Slots of the mesh call block: the handle, arguments, and up to 819 matches' states. */
const BLOCK_SLOTS = CALL_BLOCK.meshSlots

/** The mesh functions of `bindings/node` (its generated `binding.d.cts` must satisfy this). */
export interface NativeMeshBinding {
  NativeMesh: new (...args: MeshArgs) => { readonly handle: number; close(): void }
  meshUseCallBlock(block: Float64Array): void
  meshRegister(h: number, id: string, kind: string, capabilities: string, tags: string[], bulkhead: number, now: number): number
  meshDeregister(h: number, agent: number): void
  meshHeartbeat(h: number, agent: number, health: number, now: number): void
  meshSetHealth(h: number, agent: number, health: number, now: number): void
  meshQuery(h: number, capability: string, range: string, minHealth: number, tags: string[], also: string): number
  meshFind(): void
  meshFindStates(h: number, query: number, now: number): number[]
  meshRoute(): void
  meshRouteExcluding(h: number, query: number, strategy: number, now: number, exclude: Float64Array): number[]
  meshFinish(): void
  meshTake(): void
  meshLimiter(h: number, capacity: number, perSecond: number, now: number): number
  meshDropLimiter(h: number, limiter: number): void
  meshBackoff(h: number, base: number, factor: number, max: number, jitter: number, attempt: number): number
  meshTick(h: number, now: number): void
  meshNextDeadline(h: number): number
  meshEvents(h: number): number[]
  meshBreakerState(h: number, agent: number, now: number): number
  meshAgentState(h: number, agent: number): number[]
  meshSimilar(h: number, name: string, threshold: number): string
}

export function createNativeMesh(b: NativeMeshBinding, o: MeshCoreOptions): MeshCore {
  return adaptMesh(() => {
    const owner = new b.NativeMesh(...meshArgs(o))
    return rawMesh(b, owner)
  }, NATIVE_FAILURES)
}

function rawMesh(b: NativeMeshBinding, owner: { readonly handle: number; close(): void }): RawMesh {
  const h = owner.handle
  const call = callBlock(b, 'mesh', (block) => b.meshUseCallBlock(block), BLOCK_SLOTS)
  return {
    register: (id, kind, caps, tags, bulkhead, now) => b.meshRegister(h, id, kind, caps, tags, bulkhead, now),
    deregister: (agent) => b.meshDeregister(h, agent),
    heartbeat: (agent, health, now) => b.meshHeartbeat(h, agent, health, now),
    setHealth: (agent, health, now) => b.meshSetHealth(h, agent, health, now),
    query: (capability, range, minHealth, tags, also) => b.meshQuery(h, capability, range, minHealth, tags, also),
    findStates(query, now) {
      call[0] = h
      call[1] = query
      call[2] = now
      b.meshFind()
      const n = call[0]! * MESH_STATE_FIELDS
      return n < BLOCK_SLOTS ? call.subarray(1, 1 + n) : b.meshFindStates(h, query, now)
    },
    route(query, strategy, now, exclude, refusal) {
      // Exclusions come only after a failed call: they travel as an argument, so there is no
      // count of them a block could not hold.
      if (exclude.length > 0) {
        const [result, retryAt] = b.meshRouteExcluding(h, query, strategy, now, Float64Array.from(exclude))
        if (result === ROUTE_REFUSED.circuitOpen && refusal) refusal.retryAt = retryAt!
        return result!
      }
      call[0] = h
      call[1] = query
      call[2] = strategy
      call[3] = now
      b.meshRoute()
      const result = call[0]!
      if (result === ROUTE_REFUSED.circuitOpen && refusal) refusal.retryAt = call[1]!
      return result
    },
    finish(agent, outcome, now) {
      call[0] = h
      call[1] = agent
      call[2] = outcome
      call[3] = now
      b.meshFinish()
      return call[0] === 1
    },
    take(limiter, n, now) {
      call[0] = h
      call[1] = limiter
      call[2] = n
      call[3] = now
      b.meshTake()
      return call[0]!
    },
    limiter: (capacity, perSecond, now) => b.meshLimiter(h, capacity, perSecond, now),
    dropLimiter: (limiter) => b.meshDropLimiter(h, limiter),
    backoff: (base, factor, max, jitter, attempt) => b.meshBackoff(h, base, factor, max, jitter, attempt),
    tick: (now) => b.meshTick(h, now),
    nextDeadline: () => b.meshNextDeadline(h),
    events: () => b.meshEvents(h),
    breakerState: (agent, now) => b.meshBreakerState(h, agent, now),
    agentState: (agent) => b.meshAgentState(h, agent),
    similar: (name, threshold) => b.meshSimilar(h, name, threshold),
    close: () => owner.close(),
  }
}
