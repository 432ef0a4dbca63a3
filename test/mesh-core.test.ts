/**
 * The mesh core as the facade sees it (`MeshCore`, engine-neutral): plain results, the same on
 * both engines whatever the input, however each engine carries it across.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'

import { Agent, type AgentContext } from '../ts/node.js'
import { ROUTE_REFUSED, type RouteRefusal } from '../ts/engines/backend.js'
import { errorOf } from './helpers.js'
import { fakeMesh } from './mesh-helpers.js'

afterEach(() => {
  vi.useRealTimers()
})

class Broken extends Agent {
  static readonly capabilities = [{ name: 'work', version: '1.0.0' }]
  constructor(context: AgentContext<unknown>) {
    super(context)
    this.handle('work', () => {
      throw new Error('down')
    })
  }
}

describe('MeshCore', () => {
  it('routes past more excluded agents than the native call block holds (4,091)', async () => {
    const { orrery, mesh } = await fakeMesh()
    const registry = mesh.registry
    const n = 5_000
    for (let i = 0; i < n; i++) {
      registry.register({ id: `w${i}`, type: 't', capabilities: [{ name: 'wide', version: '1.0.0' }] })
      registry.heartbeat(`w${i}`)
    }
    const core = registry.core
    const query = registry.compile('wide')
    const found = Array.from(core.findStates(query, registry.now()))
    const handles = found.filter((_, i) => i % 5 === 0)
    expect(handles).toHaveLength(n)
    // Priority order is stable: every agent but the last is excluded, so only the last may be picked.
    const last = handles[n - 1]!
    const picked = core.route(query, 0, registry.now(), handles.slice(0, n - 1))
    expect(picked).toBe(last)
    core.finish(picked, 2, registry.now())
    // Every agent excluded: nothing to pick (the oldest exclusions count as much as the newest).
    expect(core.route(query, 0, registry.now(), handles)).toBe(ROUTE_REFUSED.noMatch)
    // Exclusions in any order, with repeats.
    const shuffled = [...handles.slice(1).reverse(), ...handles.slice(1, 100)]
    const first = core.route(query, 0, registry.now(), shuffled)
    expect(first).toBe(handles[0])
    core.finish(first, 2, registry.now())
    orrery.close()
  })

  it('says when an open circuit lets a call through again', async () => {
    const { orrery, mesh } = await fakeMesh({ breaker: { failures: 1, coolDown: 5_000 } })
    mesh.define('broken', Broken)
    await mesh.spawn('broken', { id: 'b' })
    const failedAt = Date.now()
    expect((await errorOf(() => mesh.request('work', 1, { retries: 0 })))?.code).toBe('HANDLER_ERROR')
    const refused = await errorOf(() => mesh.request('work', 1, { retries: 0 }))
    expect(refused?.code).toBe('CIRCUIT_OPEN')
    expect(refused?.details).toMatchObject({ capability: 'work', retryAt: failedAt + 5_000 })
    // The same through the core: the caller's refusal object is filled only then.
    const registry = mesh.registry
    const refusal: RouteRefusal = { retryAt: -1 }
    expect(registry.core.route(registry.compile('work'), 0, registry.now(), [], refusal)).toBe(ROUTE_REFUSED.circuitOpen)
    expect(refusal.retryAt).toBe(failedAt + 5_000)
    await mesh.shutdown()
    orrery.close()
  })

  it('take gives 0 when taken, else how long until the tokens are there', async () => {
    const { orrery, mesh } = await fakeMesh()
    const core = mesh.registry.core
    const now = Date.now()
    const limiter = core.limiter(2, 4, now)
    expect(core.take(limiter, 1, now)).toBe(0)
    expect(core.take(limiter, 1, now)).toBe(0)
    // Four a second: one more in 250 ms, three more (past the capacity of 2) never.
    expect(core.take(limiter, 1, now)).toBe(250)
    expect(core.take(limiter, 3, now)).toBe(Infinity)
    expect(core.take(limiter, 1, now + 250)).toBe(0)
    // A wait far below the clock's precision is still a wait, never read as taken.
    const fast = core.limiter(1, 1e12, now)
    expect(core.take(fast, 1, now)).toBe(0)
    expect(core.take(fast, 1, now)).toBeGreaterThan(0)
    orrery.close()
  })
})
