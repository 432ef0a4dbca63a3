/**
 * The native mesh: plain functions taking the mesh's handle; the hot calls (route, finish,
 * find, take) take no arguments at all and use the mesh call block instead (see call-block.ts).
 */
import { MESH_STATE_FIELDS, type MeshCore, type MeshCoreOptions } from './backend.js'
import { fromEngine } from '../errors.js'
import { callBlock } from './call-block.js'

/** Slots of the mesh call block: the handle, arguments, and up to 4,090 exclusions or 819 matches' states. */
const BLOCK_SLOTS = 4096

/** The mesh functions of `bindings/node` (its generated `binding.d.cts` must satisfy this). */
export interface NativeMeshBinding {
  NativeMesh: new (
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
  ) => { readonly handle: number; close(): void }
  meshUseCallBlock(block: Float64Array): void
  meshRegister(h: number, id: string, kind: string, capabilities: string, tags: string[], bulkhead: number, now: number): number
  meshDeregister(h: number, agent: number): void
  meshHeartbeat(h: number, agent: number, health: number, now: number): void
  meshSetHealth(h: number, agent: number, health: number, now: number): void
  meshQuery(h: number, capability: string, range: string, minHealth: number, tags: string[], also: string): number
  meshFind(): void
  meshFindStates(h: number, query: number, now: number): number[]
  meshRoute(): void
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

function guarded<T>(call: () => T): T {
  try {
    return call()
  } catch (e) {
    throw fromEngine(e)
  }
}

export function createNativeMesh(b: NativeMeshBinding, o: MeshCoreOptions): MeshCore {
  const owner = guarded(
    () =>
      new b.NativeMesh(
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
  const h = owner.handle
  const call = callBlock(b, 'mesh', (block) => b.meshUseCallBlock(block), BLOCK_SLOTS)
  const maxExcluded = BLOCK_SLOTS - 5
  return {
    get second() {
      return call[1]!
    },
    register: (id, kind, caps, tags, bulkhead, now) => guarded(() => b.meshRegister(h, id, kind, caps, tags, bulkhead, now)),
    deregister: (agent) => guarded(() => b.meshDeregister(h, agent)),
    heartbeat: (agent, health, now) => guarded(() => b.meshHeartbeat(h, agent, health, now)),
    setHealth: (agent, health, now) => guarded(() => b.meshSetHealth(h, agent, health, now)),
    query: (capability, range, minHealth, tags, also) => guarded(() => b.meshQuery(h, capability, range, minHealth, tags, also)),
    findStates(query, now) {
      call[0] = h
      call[1] = query
      call[2] = now
      guarded(() => b.meshFind())
      const n = call[0]! * MESH_STATE_FIELDS
      return n < BLOCK_SLOTS ? call.subarray(1, 1 + n) : guarded(() => b.meshFindStates(h, query, now))
    },
    route(query, strategy, now, exclude) {
      call[0] = h
      call[1] = query
      call[2] = strategy
      call[3] = now
      // The most recent exclusions are the ones that matter when there are more than fit.
      const from = Math.max(0, exclude.length - maxExcluded)
      call[4] = exclude.length - from
      for (let i = from; i < exclude.length; i++) call[5 + i - from] = exclude[i]!
      try {
        b.meshRoute()
      } catch (e) {
        throw fromEngine(e)
      }
      return call[0]!
    },
    finish(agent, outcome, now) {
      call[0] = h
      call[1] = agent
      call[2] = outcome
      call[3] = now
      try {
        b.meshFinish()
      } catch (e) {
        throw fromEngine(e)
      }
      return call[0] === 1
    },
    take(limiter, n, now) {
      call[0] = h
      call[1] = limiter
      call[2] = n
      call[3] = now
      guarded(() => b.meshTake())
      return call[0] === 1
    },
    limiter: (capacity, perSecond, now) => guarded(() => b.meshLimiter(h, capacity, perSecond, now)),
    dropLimiter: (limiter) => guarded(() => b.meshDropLimiter(h, limiter)),
    backoff: (base, factor, max, jitter, attempt) => guarded(() => b.meshBackoff(h, base, factor, max, jitter, attempt)),
    tick: (now) => guarded(() => b.meshTick(h, now)),
    nextDeadline: () => guarded(() => b.meshNextDeadline(h)),
    events: () => guarded(() => b.meshEvents(h)),
    breakerState: (agent, now) => guarded(() => b.meshBreakerState(h, agent, now)),
    agentState: (agent) => guarded(() => b.meshAgentState(h, agent)),
    similar: (name, threshold) => guarded(() => b.meshSimilar(h, name, threshold)),
    close: () => owner.close(),
  }
}
