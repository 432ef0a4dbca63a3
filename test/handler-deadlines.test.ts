/**
 * Handler timeouts among many finished handlers: the runner drops finished jobs from its
 * deadline queue as they finish (it once held them, and their messages, until the timer fired),
 * and a handler still running keeps its deadline wherever it sits in the queue.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'

import { Agent, type AgentContext } from '../ts/node.js'
import { errorOf } from './helpers.js'
import { fakeMesh } from './mesh-helpers.js'

afterEach(() => {
  vi.useRealTimers()
})

/** `fast` answers at once; `slow` never does. */
class Mixed extends Agent {
  static readonly capabilities = [
    { name: 'fast', version: '1.0.0' },
    { name: 'slow', version: '1.0.0' },
  ]
  constructor(context: AgentContext<unknown>) {
    super(context)
    this.handle<number, number>('fast', (n) => n)
    this.handle('slow', () => new Promise(() => {}))
  }
}

async function fast(mesh: Awaited<ReturnType<typeof fakeMesh>>['mesh'], count: number): Promise<void> {
  for (let i = 0; i < count; i++) expect((await mesh.request<number>('fast', i)).payload).toBe(i)
}

describe('handler deadlines', () => {
  it('times out hanging handlers started before, between and after thousands of finished ones', async () => {
    const { mesh, advance } = await fakeMesh({ heartbeat: { interval: 60_000 } })
    mesh.define('mixed', Mixed)
    await mesh.spawn('mixed', { id: 'm', handlerTimeout: 1_000, concurrency: 64 })
    const first = errorOf(() => mesh.request('slow', 1, { retries: 0, timeout: 10_000 }))
    await fast(mesh, 1_100)
    await advance(500)
    const second = errorOf(() => mesh.request('slow', 2, { retries: 0, timeout: 10_000 }))
    await fast(mesh, 1_100)
    await advance(499)
    expect(mesh.registry.get('m')?.inFlight).toBe(2)
    await advance(1)
    expect((await first)?.code).toBe('TIMEOUT')
    expect(mesh.registry.get('m')?.inFlight).toBe(1)
    await advance(499)
    expect(mesh.registry.get('m')?.inFlight).toBe(1)
    await advance(1)
    expect((await second)?.code).toBe('TIMEOUT')
    // Every job finished: the queue is empty, and a hanging handler started now gets a whole timeout.
    await fast(mesh, 10)
    const third = errorOf(() => mesh.request('slow', 3, { retries: 0, timeout: 10_000 }))
    await advance(999)
    expect(mesh.registry.get('m')?.inFlight).toBe(1)
    await advance(1)
    expect((await third)?.code).toBe('TIMEOUT')
    const stopped = mesh.shutdown({ timeout: 0 })
    await advance(0)
    await stopped
  })
})
