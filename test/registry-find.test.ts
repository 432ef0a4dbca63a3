/**
 * `registry.find` hands out one frozen snapshot per agent while its state stays the same, and a
 * new one as soon as anything it shows changes: health, last beat, calls in flight, breaker, or
 * the agent behind a reused slot. Both engines, on fake time.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'

import { Agent, type AgentContext, type AgentInfo } from '../ts/node.js'
import { fakeMesh } from './mesh-helpers.js'

afterEach(() => {
  vi.useRealTimers()
})

/** Holds each call until `release` is called; fails while `failing`. */
class Held extends Agent {
  static readonly capabilities = [{ name: 'work', version: '1.2.0' }]
  static failing = false
  static waiting: Array<() => void> = []
  constructor(context: AgentContext<unknown>) {
    super(context)
    this.handle('work', async () => {
      if (Held.failing) throw new Error('down')
      await new Promise<void>((resolve) => Held.waiting.push(resolve))
      return 'done'
    })
  }
}

const byId = (found: AgentInfo[]) => Object.fromEntries(found.map((a) => [a.id, a]))

describe('registry.find snapshots', () => {
  it('reuses an unchanged agent’s snapshot and renews it on every change', async () => {
    const { mesh, advance } = await fakeMesh({ breaker: { failures: 1, coolDown: 1_000 } })
    const registry = mesh.registry
    registry.register({ id: 'x', type: 'worker', capabilities: [{ name: 'work', version: '1.2.0', priority: 5 }] })
    registry.register({ id: 'y', type: 'worker', capabilities: [{ name: 'work', version: '1.3.0', priority: 1 }] })
    registry.heartbeat('x')
    registry.heartbeat('y')
    const first = registry.find('work@^1.2')
    expect(first.map((a) => a.id)).toEqual(['x', 'y'])
    expect(Object.isFrozen(first[0])).toBe(true)
    const again = registry.find({ capability: 'work@^1.2' })
    expect(again[0]).toBe(first[0])
    expect(again[1]).toBe(first[1])
    expect(again).not.toBe(first)

    // Health and last beat.
    await advance(10)
    registry.heartbeat('x', 'degraded')
    const degraded = byId(registry.find('work'))
    expect(degraded.x).not.toBe(first[0])
    expect(degraded.x).toMatchObject({ health: 'degraded', lastBeat: first[0]!.lastBeat + 10 })
    expect(degraded.y).toBe(first[1])
    expect(first[0]!.health).toBe('healthy')
    registry.heartbeat('x')
    expect(byId(registry.find('work')).x).toMatchObject({ health: 'healthy' })
    await advance(10)
    registry.heartbeat('x')
    const beat = byId(registry.find('work')).x!
    expect(beat.lastBeat).toBe(first[0]!.lastBeat + 20)
    expect(byId(registry.find('work')).x).toBe(beat)

    // Calls in flight, then a failure opening the breaker, then its cool-down.
    registry.deregister('x')
    registry.deregister('y')
    expect(registry.find('work')).toEqual([])
    mesh.define('held', Held)
    await mesh.spawn('held', { id: 'h' })
    const idle = registry.find('work')
    expect(idle).toMatchObject([{ id: 'h', inFlight: 0, breaker: 'closed' }])
    const reply = mesh.request<string>('work', 'go')
    await advance(1)
    expect(Held.waiting.length).toBe(1)
    const busy = registry.find('work')
    expect(busy).toMatchObject([{ id: 'h', inFlight: 1 }])
    expect(busy[0]).not.toBe(idle[0])
    Held.waiting.shift()!()
    expect((await reply).payload).toBe('done')
    const after = registry.find('work')
    expect(after).toMatchObject([{ id: 'h', inFlight: 0, breaker: 'closed' }])
    expect(after[0]).not.toBe(busy[0])
    Held.failing = true
    await expect(mesh.request('work', 'go', { retries: 0 })).rejects.toThrow()
    expect(registry.find({ capability: 'work', minHealth: 'offline' })).toMatchObject([{ id: 'h', breaker: 'open' }])
    await advance(1_000)
    expect(registry.find('work')).toMatchObject([{ id: 'h', breaker: 'half-open' }])
    Held.failing = false

    // A slot freed and taken again: the new agent, never the old snapshot.
    const before = registry.find('work')[0]!
    await mesh.stop('h')
    expect(registry.find('work')).toEqual([])
    registry.register({ id: 'z', type: 'other', capabilities: [{ name: 'work', version: '1.4.0' }] })
    registry.heartbeat('z')
    const reused = registry.find('work')
    expect(reused).toMatchObject([{ id: 'z', type: 'other', inFlight: 0, breaker: 'closed' }])
    expect(reused[0]).not.toBe(before)
    await mesh.shutdown()
  })
})
