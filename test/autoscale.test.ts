/**
 * Autoscaling an agent type from its inbox lag, on both engines and on fake time: a burst grows
 * the type up to `max`, it shrinks back to `min` after the cooldown by draining replicas, and no
 * routed request is lost or handled twice on the way; bad options are refused with their codes.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'

import { Agent, FatalError, type AgentContext, type AutoscaleEvent, type Mesh } from '../ts/node.js'
import { IN_BROWSER } from './engine.js'
import { errorOf } from './helpers.js'
import { fakeMesh } from './mesh-helpers.js'

afterEach(() => {
  vi.useRealTimers()
})

/**
 * Defines `work`, a type whose handler takes 100 ms (1 s for payloads from 10,000; a negative one
 * crashes its agent the first time), counting the runs of each payload.
 */
function defineWorker(mesh: Mesh): Map<number, number> {
  const runs = new Map<number, number>()
  class Worker extends Agent {
    static readonly capabilities = [{ name: 'work', version: '1.0.0' }]
    constructor(context: AgentContext<unknown>) {
      super(context)
      this.handle<number, string>('work', async (n) => {
        runs.set(n, (runs.get(n) ?? 0) + 1)
        if (n < 0 && runs.get(n) === 1) throw new FatalError(`crash on ${n}`)
        await new Promise((resolve) => setTimeout(resolve, n >= 10_000 ? 1_000 : 100))
        return `${this.id}:${n}`
      })
    }
  }
  mesh.define('worker', Worker, { concurrency: 1 })
  return runs
}

/** Agents of `worker` running now. */
function running(mesh: Mesh): string[] {
  return mesh
    .agents()
    .filter((a) => a.type === 'worker' && a.state === 'running')
    .map((a) => a.id)
}

const OPTIONS = { min: 1, max: 3, targetLag: 4, interval: 100, cooldown: 1_000 }

describe('autoscale', () => {
  it('grows to max under a burst, never past it, then shrinks to min after the cooldown, losing and repeating nothing', async () => {
    const { mesh, orrery, advance, events } = await fakeMesh()
    const runs = defineWorker(mesh)
    const scaler = await mesh.autoscale('worker', OPTIONS)
    expect(scaler.replicas).toBe(1)
    expect(running(mesh)).toEqual(['worker-1'])
    const decisions: AutoscaleEvent[] = []
    scaler.events.subscribe((e) => decisions.push(e))

    const replies = new Map<number, string>()
    const failures: unknown[] = []
    const ask = (n: number) =>
      void mesh.request<string>('work', n, { strategy: 'round-robin', timeout: 600_000, retries: 0 }).then(
        (r) => {
          expect(replies.has(n)).toBe(false)
          replies.set(n, r.payload)
        },
        (e: unknown) => failures.push(e),
      )
    // 40 at once (all to worker-1, the only one), then 80 more, one per 25 ms, over the replicas there are.
    for (let n = 0; n < 40; n++) ask(n)
    let most = 0
    for (let n = 40; n < 120; n++) {
      await advance(25)
      ask(n)
      most = Math.max(most, running(mesh).length, scaler.replicas)
    }
    expect(scaler.replicas).toBe(3)
    expect(running(mesh)).toEqual(['worker-1', 'worker-2', 'worker-3'])
    // Wait for the burst to be done, and the cooldown, watching the bound all along.
    for (let t = 0; t < 120 && replies.size < 120; t++) {
      await advance(100)
      most = Math.max(most, running(mesh).length)
    }
    expect(most).toBe(3)
    expect(failures).toEqual([])
    expect(replies.size).toBe(120)
    for (let n = 0; n < 120; n++) {
      expect(runs.get(n), `payload ${n}`).toBe(1)
      expect(replies.get(n)).toMatch(new RegExp(`^worker-\\d:${n}$`))
    }
    // New replicas took new work (round-robin), not only worker-1.
    expect(new Set([...replies.values()].map((r) => r.split(':')[0])).size).toBe(3)
    await advance(OPTIONS.cooldown + 5 * OPTIONS.interval)
    expect(scaler.replicas).toBe(1)
    expect(running(mesh)).toEqual(['worker-1'])
    expect(decisions.map((d) => `${d.type}:${d.from}->${d.to}`)).toEqual(['scale-up:1->3', 'scale-down:3->1'])
    expect(decisions[1]!.agents).toEqual(['worker-3', 'worker-2'])
    // Decisions are mesh events too (the first started min); drained replicas stopped with nothing left in their inboxes.
    const scaled = events.filter((e) => e.type === 'scale-up' || e.type === 'scale-down')
    expect(scaled[0]).toMatchObject({ type: 'scale-up', from: 0, to: 1, agents: ['worker-1'] })
    expect(scaled.slice(1)).toEqual(decisions)
    for (const id of ['worker-2', 'worker-3']) {
      expect(mesh.agent(id)?.state).toBe('stopped')
      const stats = orrery.bus.group(`inbox.${id}`, 'agent').stats()
      expect(stats.backlog + stats.pending).toBe(0)
    }
    scaler.stop()
    await mesh.shutdown()
  })

  it('drains a replica before stopping it: requests queued in its inbox and sent during the shrink are all answered once', async () => {
    const { mesh, advance } = await fakeMesh()
    const runs = defineWorker(mesh)
    const scaler = await mesh.autoscale('worker', { ...OPTIONS, max: 4, targetLag: 2, cooldown: 300 })
    const answered: number[] = []
    const failures: unknown[] = []
    const ask = (n: number) =>
      void mesh.request<string>('work', n, { strategy: 'round-robin', timeout: 600_000, retries: 0 }).then(
        () => answered.push(n),
        (e: unknown) => failures.push(e),
      )
    let n = 0
    // Waves of load with pauses between: each pause lets the type shrink while the queues drain.
    let downs = 0
    scaler.events.subscribe((e) => {
      if (e.type === 'scale-down') downs++
    })
    for (let wave = 0; wave < 4; wave++) {
      for (let i = 0; i < 24; i++) ask(n++)
      for (let t = 0; t < 30; t++) {
        await advance(50)
        ask(n++)
        expect(running(mesh).length).toBeLessThanOrEqual(4 + 4) // draining ones run until empty
        expect(scaler.replicas).toBeLessThanOrEqual(4)
      }
    }
    for (let t = 0; t < 200 && answered.length < n; t++) await advance(100)
    expect(failures).toEqual([])
    expect(answered.length).toBe(n)
    expect(new Set(answered).size).toBe(n)
    for (let i = 0; i < n; i++) expect(runs.get(i), `payload ${i}`).toBe(1)
    expect(downs).toBeGreaterThan(0)
    await advance(2_000)
    expect(scaler.replicas).toBe(1)
    await mesh.shutdown()
  })

  it('takes a replica out of routing first, and stops it only once its inbox is empty', async () => {
    const { mesh, advance, orrery } = await fakeMesh()
    const runs = defineWorker(mesh)
    // worker-1 is spawned by hand: counted, never stopped by the autoscaler.
    await mesh.spawn('worker')
    const scaler = await mesh.autoscale('worker', { min: 1, max: 2, targetLag: 10, interval: 100, cooldown: 0 })
    for (let n = 0; n < 12; n++) void mesh.request('work', n, { timeout: 600_000 })
    await advance(100)
    expect(running(mesh)).toEqual(['worker-1', 'worker-2'])
    // Three messages straight into worker-2's inbox: 3 s of work, queued behind each other.
    for (const n of [10_000, 10_001, 10_002]) await orrery.bus.send('worker-2', n, { headers: { 'orrery-capability': 'work' } })
    const decisions: AutoscaleEvent[] = []
    scaler.events.subscribe((e) => decisions.push(e))
    // worker-1's 12 need 1.2 s; once under the target, worker-2 is drained while its inbox still holds work.
    for (let t = 0; t < 50 && decisions.length === 0; t++) await advance(100)
    expect(decisions[0]).toMatchObject({ type: 'scale-down', from: 2, to: 1, agents: ['worker-2'] })
    const load = orrery.bus.group('inbox.worker-2', 'agent').stats()
    expect(load.backlog + load.pending).toBeGreaterThan(0)
    expect(mesh.agent('worker-2')?.state).toBe('running')
    expect(mesh.registry.get('worker-2')).toBeUndefined()
    // Routed work now goes to worker-1 alone.
    const reply = mesh.request<string>('work', 500, { timeout: 600_000, strategy: 'round-robin' })
    await advance(1_000) // behind worker-1's queue
    expect((await reply).payload).toBe('worker-1:500')
    await advance(3_500)
    for (const n of [10_000, 10_001, 10_002]) expect(runs.get(n), `payload ${n}`).toBe(1)
    expect(mesh.agent('worker-2')?.state).toBe('stopped')
    expect(scaler.replicas).toBe(1)
    await mesh.shutdown()
  })

  it('keeps min replicas while idle, and brings back a gone replica of its own under its id', async () => {
    const { mesh, advance, orrery } = await fakeMesh()
    const runs = defineWorker(mesh)
    const scaler = await mesh.autoscale('worker', { ...OPTIONS, min: 2 })
    const decisions: AutoscaleEvent[] = []
    scaler.events.subscribe((e) => decisions.push(e))
    await advance(10 * OPTIONS.cooldown)
    expect(running(mesh)).toEqual(['worker-1', 'worker-2'])
    expect(decisions).toEqual([])
    // A replica stopped by hand, with a message sent to it afterwards: the next tick restarts that id, which serves it.
    await mesh.stop('worker-2')
    await orrery.bus.send('worker-2', 5, { headers: { 'orrery-capability': 'work' } })
    await advance(OPTIONS.interval + 200)
    expect(running(mesh)).toEqual(['worker-1', 'worker-2'])
    expect(runs.get(5)).toBe(1)
    expect(decisions.map((d) => `${d.type}:${d.from}->${d.to}:${d.agents.join()}`)).toEqual(['scale-up:1->2:worker-2'])
    await mesh.shutdown()
  })

  it('a replica that crashes keeps the requests queued in its inbox: its next life answers them', async () => {
    const { mesh, advance, orrery, events } = await fakeMesh()
    const runs = defineWorker(mesh)
    await mesh.autoscale('worker', { ...OPTIONS, min: 2, max: 2 })
    // worker-2 busy for a second, then a message that crashes it, then two requests queued behind.
    for (const n of [10_000, -1]) await orrery.bus.send('worker-2', n, { headers: { 'orrery-capability': 'work' } })
    const asked = [7, 8].map((n) => orrery.bus.request<string>('inbox.worker-2', n, { timeout: 60_000, headers: { 'orrery-capability': 'work' } }))
    await advance(1_000 + OPTIONS.interval + 500)
    expect(events.filter((e) => e.type === 'crashed').map((e) => e.type === 'crashed' && e.agent)).toEqual(['worker-2'])
    expect((await Promise.all(asked)).map((m) => m.payload)).toEqual(['worker-2:7', 'worker-2:8'])
    expect([runs.get(7), runs.get(8), runs.get(-1)]).toEqual([1, 1, 2])
    await mesh.shutdown()
  })

  /** worker-1 spawned by hand, worker-2 started by the autoscaler and drained with `queued` still in its inbox. */
  async function drainingWithWork(queued: number[], interval = 100) {
    const fake = await fakeMesh()
    const { mesh, advance, orrery } = fake
    const runs = defineWorker(mesh)
    await mesh.spawn('worker')
    const scaler = await mesh.autoscale('worker', { min: 1, max: 2, targetLag: 10, interval, cooldown: 0 })
    // Enough work for worker-1 to still need help at the first tick after the start.
    if (interval >= 1_000) for (let n = 0; n < 30; n++) void mesh.send('work', 20_000 + n)
    else for (let n = 0; n < 12; n++) void mesh.send('work', n)
    await advance(interval)
    expect(running(mesh)).toEqual(['worker-1', 'worker-2'])
    for (const n of queued) await orrery.bus.send('worker-2', n, { headers: { 'orrery-capability': 'work' } })
    for (let t = 0; t < 400 && mesh.registry.get('worker-2') !== undefined; t++) await advance(100)
    expect(mesh.registry.get('worker-2')).toBeUndefined()
    expect(mesh.agent('worker-2')?.state).toBe('running')
    return { ...fake, runs, scaler }
  }

  it('brings back a drained replica that crashed with messages in its inbox, still draining, and stops it once they are handled', async () => {
    const { mesh, advance, runs, scaler, events } = await drainingWithWork([10_000, 10_001, -1, 10_002, 10_003])
    for (let t = 0; t < 100 && mesh.agent('worker-2')?.state !== 'stopped'; t++) await advance(100)
    expect(events.some((e) => e.type === 'crashed' && e.agent === 'worker-2')).toBe(true)
    for (const n of [10_000, 10_001, 10_002, 10_003]) expect(runs.get(n), `payload ${n}`).toBe(1)
    expect(mesh.agent('worker-2')?.state).toBe('stopped')
    // It came back out of routing: never a replica again, never registered.
    expect(scaler.replicas).toBe(1)
    expect(mesh.registry.get('worker-2')).toBeUndefined()
    await mesh.shutdown()
  })

  it('pauses and resumes a mesh while a replica drains; a paused type is not grown, and the drained replica stops once empty', async () => {
    const { mesh, advance, runs, scaler, orrery } = await drainingWithWork([10_000, 10_001])
    await mesh.pause()
    expect(mesh.agents().map((a) => `${a.id}:${a.state}`)).toEqual(['worker-1:paused', 'worker-2:paused'])
    // Work piles up while paused: the paused replica still counts, and nothing new starts.
    for (let n = 100; n < 130; n++) await orrery.bus.send('worker-1', n, { headers: { 'orrery-capability': 'work' } })
    await advance(2_000)
    expect(scaler.replicas).toBe(1)
    expect(mesh.agents().map((a) => a.id)).toEqual(['worker-1', 'worker-2'])
    await mesh.resume()
    for (let t = 0; t < 100 && mesh.agent('worker-2')?.state !== 'stopped'; t++) await advance(100)
    for (const n of [10_000, 10_001]) expect(runs.get(n), `payload ${n}`).toBe(1)
    expect(mesh.agent('worker-2')?.state).toBe('stopped')
    await advance(4_000) // worker-1's pile
    expect(runs.get(129)).toBe(1)
    await mesh.shutdown()
  })

  it('a stopped autoscaler still draining a replica is ended by close, leaving no timer behind', async () => {
    // Ticks 5 s apart: the next one is due long after the handlers' timers.
    const { mesh, orrery, scaler } = await drainingWithWork([10_000, 10_001], 5_000)
    scaler.stop()
    expect(mesh.agent('worker-2')?.state).toBe('running')
    orrery.close()
    // Handlers still sleeping when their agents died keep their own timers: let them end.
    await vi.advanceTimersByTimeAsync(1_000)
    expect(vi.getTimerCount()).toBe(0)
  })

  it('stop() ends the autoscaler and leaves the replicas as they are', async () => {
    const { mesh, advance } = await fakeMesh()
    defineWorker(mesh)
    const scaler = await mesh.autoscale('worker', OPTIONS)
    let completed = false
    scaler.events.subscribe({ complete: () => (completed = true) })
    for (let n = 0; n < 30; n++) void mesh.request('work', n, { timeout: 600_000 })
    await advance(OPTIONS.interval)
    expect(scaler.replicas).toBe(3)
    scaler.stop()
    expect(completed).toBe(true)
    await advance(20 * OPTIONS.cooldown)
    expect(running(mesh)).toEqual(['worker-1', 'worker-2', 'worker-3'])
    // The type can be autoscaled again; the new autoscaler counts what runs.
    const again = await mesh.autoscale('worker', { ...OPTIONS, cooldown: 0 })
    expect(again.replicas).toBe(3)
    await advance(5 * OPTIONS.interval)
    // It drains only replicas it started itself: none here.
    expect(again.replicas).toBe(3)
    again.stop()
    await mesh.shutdown()
  })

  it('refuses bad options with typed codes, starting nothing', async () => {
    const { mesh } = await fakeMesh()
    defineWorker(mesh)
    const cases: Array<[unknown, unknown, string, string | undefined]> = [
      ['nope', OPTIONS, 'UNKNOWN_AGENT_TYPE', undefined],
      [42, OPTIONS, 'INVALID_ARGUMENT', 'type'],
      ['worker', undefined, 'INVALID_ARGUMENT', 'options'],
      ['worker', [], 'INVALID_ARGUMENT', 'options'],
      ['worker', { ...OPTIONS, min: 0 }, 'INVALID_OPTION', 'min'],
      ['worker', { ...OPTIONS, min: 4, max: 3 }, 'INVALID_OPTION', 'min'],
      ['worker', { ...OPTIONS, min: 1.5 }, 'INVALID_OPTION', 'min'],
      ['worker', { ...OPTIONS, max: undefined }, 'INVALID_OPTION', 'max'],
      ['worker', { ...OPTIONS, targetLag: 0 }, 'INVALID_OPTION', 'targetLag'],
      ['worker', { ...OPTIONS, targetLag: Number.NaN }, 'INVALID_OPTION', 'targetLag'],
      ['worker', { ...OPTIONS, targetLag: '4' }, 'INVALID_OPTION', 'targetLag'],
      ['worker', { ...OPTIONS, interval: 0 }, 'INVALID_OPTION', 'interval'],
      ['worker', { ...OPTIONS, cooldown: -1 }, 'INVALID_OPTION', 'cooldown'],
      ['worker', { ...OPTIONS, spawn: { id: 'w' } }, 'INVALID_OPTION', 'spawn.id'],
      ['worker', { ...OPTIONS, spawn: { replicas: 2 } }, 'INVALID_OPTION', 'spawn.replicas'],
      ['worker', { ...OPTIONS, spawn: { concurrency: 0 } }, 'INVALID_OPTION', 'concurrency'],
    ]
    for (const [type, options, code, option] of cases) {
      const error = await errorOf(() => mesh.autoscale(type as string, options as typeof OPTIONS))
      expect(error?.code, JSON.stringify(options)).toBe(code)
      if (option !== undefined) expect(error?.details?.[code === 'INVALID_OPTION' ? 'option' : 'argument'], JSON.stringify(options)).toBe(option)
    }
    expect(mesh.agents()).toEqual([])
    const scaler = await mesh.autoscale('worker', OPTIONS)
    const twice = await errorOf(() => mesh.autoscale('worker', OPTIONS))
    expect(twice?.code).toBe('INVALID_OPTION')
    expect(twice?.details?.['option']).toBe('type')
    scaler.stop()
    await mesh.shutdown()
    expect((await errorOf(() => mesh.autoscale('worker', OPTIONS)))?.code).toBe('CLOSED')
  })

  it.skipIf(IN_BROWSER)('records the backlog and lag per type in the prom-client registry (prom-client is Node only)', async () => {
    // A variable specifier: the browser project must not bundle prom-client for a skipped test.
    const prom = 'prom-client'
    const { Registry } = (await import(/* @vite-ignore */ prom)) as typeof import('prom-client')
    const registry = new Registry()
    const { mesh, advance } = await fakeMesh({ metrics: registry })
    defineWorker(mesh)
    const scaler = await mesh.autoscale('worker', { ...OPTIONS, max: 1 })
    for (let n = 0; n < 12; n++) void mesh.request('work', n, { timeout: 600_000 })
    await advance(OPTIONS.interval)
    const text = await registry.metrics()
    // 12 queued or in flight, one replica (max 1).
    expect(text).toContain('orrery_agent_inbox_backlog{type="worker"} 12')
    expect(text).toContain('orrery_agent_inbox_lag{type="worker"} 12')
    await advance(2_000)
    expect(await registry.metrics()).toContain('orrery_agent_inbox_backlog{type="worker"} 0')
    // Once it ends, the type's gauges go: nothing reads a stale backlog.
    scaler.stop()
    expect(await registry.metrics()).not.toContain('{type="worker"}')
    await mesh.shutdown()
  })
})
