/**
 * Lifecycle and supervision on both engines, on fake time: heartbeats and health checks, pause
 * and resume, graceful shutdown with messages in flight, OTP restart strategies, restart
 * intensity, crash loops and failed starts.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'

import { Agent, FatalError, type AgentContext, type HealthReport } from '../ts/node.js'
import { collect, errorOf } from './helpers.js'
import { fakeMesh, kinds } from './mesh-helpers.js'

afterEach(() => {
  vi.useRealTimers()
})

/** Records every life (construction) and every handled payload; `crash` makes a handler fatal. */
class Worker extends Agent {
  static readonly capabilities = [{ name: 'job', version: '1.0.0' }]
  static lives: string[] = []
  static done: string[] = []
  /** Each job a handler took, with its attempt (`name#attempt`). */
  static taken: string[] = []
  static crashOn = new Set<string>()
  static failStart = new Set<string>()
  static wedged = new Set<string>()
  constructor(context: AgentContext<unknown>) {
    super(context)
    Worker.lives.push(this.id)
    this.handle<{ name: string; ms?: number }, string>('job', async (job, ctx) => {
      Worker.taken.push(`${job.name}#${ctx.attempt}`)
      if (Worker.crashOn.has(job.name)) {
        Worker.crashOn.delete(job.name)
        throw new FatalError(`${job.name} broke ${this.id}`)
      }
      if (job.ms) await new Promise((resolve) => setTimeout(resolve, job.ms))
      if (ctx.signal.aborted) throw ctx.signal.reason
      Worker.done.push(`${this.id}:${job.name}`)
      return job.name
    })
  }
  override onStart(): void {
    if (Worker.failStart.has(this.id)) throw new Error(`${this.id} cannot start`)
  }
  override healthCheck(): HealthReport | Promise<HealthReport> {
    if (Worker.wedged.has(this.id)) return new Promise(() => {})
    return { status: 'healthy' }
  }
}

function reset() {
  Worker.lives = []
  Worker.done = []
  Worker.taken = []
  Worker.crashOn = new Set()
  Worker.failStart = new Set()
  Worker.wedged = new Set()
}

describe('lifecycle', () => {
  it('beats, and moves a wedged agent down the health states until it counts as crashed', async () => {
    reset()
    const { mesh, events, advance } = await fakeMesh({ heartbeat: { interval: 1_000, deregisterAfter: 2_000 } })
    mesh.define('worker', Worker)
    await mesh.spawn('worker', { id: 'w' })
    expect(mesh.registry.get('w')?.health).toBe('healthy')
    Worker.wedged.add('w')
    await advance(10_000)
    const health = events.filter((e) => e.type === 'health' && e.agent === 'w').map((e) => e.type === 'health' && e.to)
    expect(health).toEqual(['healthy', 'degraded', 'unhealthy', 'offline'])
    expect(kinds(events, 'crashed')).toEqual(['crashed:w'])
    expect(mesh.agent('w')?.state).toBe('crashed')
    expect(mesh.registry.get('w')).toBeUndefined()
    await mesh.shutdown()
  })

  it('a supervisor stopped while a restart waits on its backoff: what this process asked of the dead child fails at once', async () => {
    reset()
    const { mesh, advance } = await fakeMesh()
    mesh.define('worker', Worker)
    await mesh.supervise({ children: [{ type: 'worker', id: 'w' }], backoff: { base: 10_000, jitter: 'none' } })
    const asked = errorOf(() => mesh.request('job', { name: 'slow', ms: 1_000 }, { timeout: 60_000, retries: 0 }))
    await advance(1)
    Worker.crashOn.add('boom')
    await mesh.send('job', { name: 'boom' })
    await advance(1)
    // Dead, its restart 10 s off: the stop means it gets none, and the call fails now.
    await mesh.shutdown()
    await advance(1)
    expect(await asked).toMatchObject({ code: 'HANDLER_ERROR', details: { remoteCode: 'CLOSED', channel: 'inbox.w' } })
    expect(Worker.lives).toEqual(['w'])
  })

  it('keeps a request its agent held when it crashed for the next life, which answers it', async () => {
    reset()
    const { mesh, events, advance } = await fakeMesh()
    mesh.define('worker', Worker)
    await mesh.supervise({ children: [{ type: 'worker', id: 'w' }] })
    const reply = mesh.request<string>('job', { name: 'slow', ms: 1_000 }, { timeout: 60_000 })
    await advance(1)
    Worker.crashOn.add('boom')
    await mesh.send('job', { name: 'boom' })
    await advance(5_000)
    // The first life was abandoned mid-job; the restarted one ran it and answered: no fallback.
    expect((await reply).payload).toBe('slow')
    expect(Worker.lives).toEqual(['w', 'w'])
    expect(Worker.done.filter((d) => d === 'w:slow')).toEqual(['w:slow'])
    // The next life is told it may have run before.
    expect(Worker.taken.filter((t) => t.startsWith('slow'))).toEqual(['slow#1', 'slow#2'])
    expect(kinds(events, 'crashed', 'fallback')).toEqual(['crashed:w'])
    await mesh.shutdown()
  })

  it('reports what the health check says', async () => {
    reset()
    const { mesh, advance } = await fakeMesh()
    class Tired extends Worker {
      override healthCheck(): HealthReport {
        return { status: 'degraded', reason: 'slow disk' }
      }
    }
    mesh.define('tired', Tired)
    await mesh.spawn('tired', { id: 't' })
    await advance(1_000)
    expect(mesh.registry.get('t')?.health).toBe('degraded')
    expect(mesh.registry.find({ capability: 'job', minHealth: 'healthy' })).toEqual([])
    await mesh.shutdown()
  })

  it('pauses (its queue waits) and resumes', async () => {
    reset()
    const { mesh, orrery, advance } = await fakeMesh()
    mesh.define('worker', Worker)
    await mesh.spawn('worker', { id: 'p' })
    await mesh.pause('p')
    expect(mesh.registry.get('p')?.health).toBe('paused')
    expect(mesh.registry.find('job')).toEqual([])
    expect((await errorOf(() => mesh.request('job', { name: 'x' })))?.code).toBe('NO_RESPONDER')
    // A direct message waits in the paused agent's inbox.
    await orrery.bus.send('p', { name: 'queued' }, { headers: { 'orrery-capability': 'job' } })
    await advance(5_000)
    expect(Worker.done).toEqual([])
    expect(mesh.registry.get('p')?.health).toBe('paused')
    await mesh.resume()
    await advance(1)
    expect(Worker.done).toEqual(['p:queued'])
    expect(mesh.registry.get('p')?.health).toBe('healthy')
    await mesh.shutdown()
  })

  it('shuts down gracefully: finished work is acked, unfinished work is redelivered after a restart', async () => {
    reset()
    const { mesh, orrery, events, advance } = await fakeMesh()
    mesh.define('worker', Worker)
    await mesh.spawn('worker', { id: 'g', concurrency: 8 })
    const jobs = [
      ['a', 50],
      ['b', 80],
      ['c', 5_000],
      ['d', 9_000],
    ] as const
    for (const [name, ms] of jobs) await orrery.bus.send('g', { name, ms }, { headers: { 'orrery-capability': 'job' } })
    await advance(10)
    const stopping = mesh.shutdown({ timeout: 100 })
    await advance(100)
    await stopping
    expect(Worker.done.sort()).toEqual(['g:a', 'g:b'])
    expect(kinds(events, 'stopped')).toEqual(['stopped:g'])
    expect(mesh.registry.list()).toEqual([])
    // The abandoned handlers finish later in the dead life: their results are ignored.
    await advance(10_000)
    // A new mesh on the same bus restarts the agent: it gets exactly the unfinished jobs.
    Worker.done = []
    const again = await orrery.mesh({ seed: 1, heartbeat: { interval: 1_000 } })
    again.define('worker', Worker)
    await again.spawn('worker', { id: 'g' })
    await advance(10_000)
    expect(Worker.done.sort()).toEqual(['g:c', 'g:d'])
    const stats = orrery.bus.group('inbox.g', 'agent').stats()
    expect(stats.acked).toBe(4)
    expect(stats.pending).toBe(0)
    expect(stats.deadLettered).toBe(0)
    await again.shutdown()
  })
})

describe('supervision', () => {
  async function supervised(strategy: 'one-for-one' | 'one-for-all' | 'rest-for-one') {
    reset()
    const fake = await fakeMesh()
    fake.mesh.define('worker', Worker)
    const supervisor = await fake.mesh.supervise({ strategy, children: [{ type: 'worker', id: 'w', replicas: 3 }] })
    expect(Worker.lives).toEqual(['w-1', 'w-2', 'w-3'])
    Worker.lives = []
    return { ...fake, supervisor }
  }

  it('one-for-one restarts the crashed agent, which gets its unfinished message again', async () => {
    const { mesh, orrery, events, advance } = await supervised('one-for-one')
    Worker.crashOn.add('boom')
    await orrery.bus.send('w-2', { name: 'boom' }, { headers: { 'orrery-capability': 'job' } })
    await advance(1)
    expect(kinds(events, 'crashed')).toEqual(['crashed:w-2'])
    await advance(100) // the restart's backoff
    expect(Worker.lives).toEqual(['w-2'])
    await advance(1)
    expect(Worker.done).toEqual(['w-2:boom'])
    expect(mesh.registry.get('w-2')?.health).toBe('healthy')
    expect(events.filter((e) => e.type === 'restart').map((e) => e.type === 'restart' && e.agents)).toEqual([['w-2']])
    await mesh.shutdown()
  })

  it('one-for-all restarts every child, rest-for-one those started after the crashed one', async () => {
    for (const [strategy, restarted] of [
      ['one-for-all', ['w-1', 'w-2', 'w-3']],
      ['rest-for-one', ['w-2', 'w-3']],
    ] as const) {
      const { mesh, orrery, advance } = await supervised(strategy)
      Worker.crashOn.add('boom')
      await orrery.bus.send('w-2', { name: 'boom' }, { headers: { 'orrery-capability': 'job' } })
      await advance(200)
      expect(Worker.lives).toEqual(restarted)
      expect(mesh.registry.list().map((a) => a.health)).toEqual(['healthy', 'healthy', 'healthy'])
      await mesh.shutdown()
      vi.useRealTimers()
    }
  })

  it('does not bring back a child stopped on purpose, under one-for-all', async () => {
    const { mesh, orrery, events, advance } = await supervised('one-for-all')
    await mesh.stop('w-1')
    Worker.crashOn.add('boom-2')
    Worker.crashOn.add('boom-3')
    // Two children crash in the same instant (a shared dependency failed).
    await orrery.bus.send('w-2', { name: 'boom-2' }, { headers: { 'orrery-capability': 'job' } })
    await orrery.bus.send('w-3', { name: 'boom-3' }, { headers: { 'orrery-capability': 'job' } })
    await advance(1_000)
    const crashes = kinds(events, 'crashed')
    const restarts = events.filter((e) => e.type === 'restart').map((e) => e.type === 'restart' && e.agents)
    // w-3's message reaches it before or after the first restart: either it crashes the old
    // life (then one restart covers both) or the new one (a second incident, a second restart).
    expect(restarts.length).toBeLessThanOrEqual(crashes.length)
    expect(restarts.every((agents) => JSON.stringify(agents) === JSON.stringify(['w-2', 'w-3']))).toBe(true)
    expect(Worker.lives).not.toContain('w-1')
    expect(Worker.done.sort()).toEqual(['w-2:boom-2', 'w-3:boom-3'])
    expect(mesh.agent('w-1')?.state).toBe('stopped')
    await mesh.shutdown()
  })

  it('dead-letters a message that crashes every life (poison) instead of giving up', async () => {
    const { mesh, orrery, events, advance } = await supervised('one-for-one')
    class Poisoned extends Worker {
      constructor(context: AgentContext<unknown>) {
        super(context)
        this.handle('job', () => {
          throw new FatalError('poison')
        })
      }
    }
    mesh.define('poisoned', Poisoned)
    await mesh.supervise({ name: 'p', children: [{ type: 'poisoned', id: 'victim' }] })
    const dead = collect(orrery.bus.subscribe('inbox.victim.dead-letter', { from: 'earliest' }))
    await orrery.bus.send('victim', { name: 'x' }, { headers: { 'orrery-capability': 'job' } })
    await advance(1_000)
    expect(kinds(events, 'crashed').filter((k) => k === 'crashed:victim')).toHaveLength(2)
    expect(kinds(events, 'gave-up')).toEqual([])
    expect(dead).toHaveLength(1)
    expect(dead[0]!.headers['x-orrery-dead-letter-reason']).toMatch(/^poison: crashed the agent 2 times/)
    expect(mesh.registry.get('victim')?.health).toBe('healthy')
    await mesh.shutdown()
  })

  it('dead-letters a message its agent stops beating on in every life, and answers such a request, at the last delivery', async () => {
    reset()
    const { mesh, orrery, events, advance } = await fakeMesh()
    /** Never settles `hang`, and its health check then never answers: it stops beating. */
    class Hanger extends Worker {
      hanging = false
      constructor(context: AgentContext<unknown>) {
        super(context)
        this.handle<{ name: string }, string>('job', (job, ctx) => {
          Worker.taken.push(`${job.name}#${ctx.attempt}`)
          if (job.name !== 'hang') return job.name
          this.hanging = true
          return new Promise<string>(() => {})
        })
      }
      override healthCheck(): HealthReport | Promise<HealthReport> {
        return this.hanging ? new Promise(() => {}) : { status: 'healthy' }
      }
    }
    // Retries 0: the inbox dead-letters at the second delivery.
    mesh.define('hanger', Hanger, { retry: { attempts: 0 } })
    await mesh.supervise({ children: [{ type: 'hanger', id: 'h' }] })
    const dead = collect(orrery.bus.subscribe('inbox.h.dead-letter', { from: 'earliest' }))
    await orrery.bus.send('h', { name: 'hang' }, { headers: { 'orrery-capability': 'job' } })
    await advance(20_000)
    // Two lives crashed on it; the second ended its last delivery, so the third never got it.
    expect(kinds(events, 'crashed')).toEqual(['crashed:h', 'crashed:h'])
    expect(dead.map((m) => m.headers['x-orrery-dead-letter-reason'])).toEqual(['max-deliveries'])
    await orrery.bus.send('h', { name: 'fine' }, { headers: { 'orrery-capability': 'job' } })
    await advance(10)
    expect(Worker.taken).toEqual(['hang#1', 'hang#2', 'fine#1'])
    // A request is answered instead (dead-lettered, its caller would wait for its timeout).
    const asked = errorOf(() => mesh.request('job', { name: 'hang' }, { timeout: 60_000 }))
    await advance(20_000)
    expect(await asked).toMatchObject({ details: { remoteCode: 'CLOSED', channel: 'inbox.h' } })
    expect(kinds(events, 'crashed')).toHaveLength(4)
    expect(Worker.taken.slice(3)).toEqual(['hang#1', 'hang#2'])
    expect(dead).toHaveLength(1)
    expect(mesh.registry.get('h')?.health).toBe('healthy')
    await mesh.shutdown()
  })

  it('restarts an agent that stopped beating', async () => {
    const { mesh, events, advance } = await supervised('one-for-one')
    Worker.wedged.add('w-3')
    await advance(5_000)
    Worker.wedged.delete('w-3')
    await advance(200)
    expect(kinds(events, 'crashed')).toEqual(['crashed:w-3'])
    expect(Worker.lives).toEqual(['w-3'])
    expect(mesh.registry.get('w-3')?.health).toBe('healthy')
    await mesh.shutdown()
  })

  it('gives up past its restart intensity (a crash loop), marks the agents failed and escalates', async () => {
    reset()
    const { mesh, events, advance } = await fakeMesh()
    mesh.define('worker', Worker)
    Worker.failStart.add('loop')
    const supervisor = await mesh.supervise({
      name: 'sup',
      intensity: { restarts: 3, withinMs: 5_000 },
      children: [
        { type: 'worker', id: 'ok' },
        { type: 'worker', id: 'loop' },
      ],
    })
    await advance(2_000)
    expect(Worker.lives.filter((id) => id === 'loop')).toHaveLength(4)
    expect(events.filter((e) => e.type === 'restart').map((e) => e.type === 'restart' && e.delay)).toEqual([100, 200, 400])
    expect(kinds(events, 'gave-up')).toEqual(['gave-up:sup'])
    expect(supervisor.status).toBe('failed')
    const error = await errorOf(() => supervisor.failed)
    expect(error?.code).toBe('AGENT_FAILED')
    expect(error?.details?.['agents']).toEqual(['ok', 'loop'])
    expect(mesh.agent('ok')?.state).toBe('crashed')
    expect(mesh.registry.list()).toEqual([])
    await mesh.shutdown()
  })

  it('restarts within intensity when crashes are spread out', async () => {
    reset()
    const { mesh, orrery, events, advance } = await fakeMesh()
    mesh.define('worker', Worker)
    await mesh.supervise({ children: [{ type: 'worker', id: 'spread' }] })
    for (let i = 0; i < 5; i++) {
      Worker.crashOn.add(`boom-${i}`)
      await orrery.bus.send('spread', { name: `boom-${i}` }, { headers: { 'orrery-capability': 'job' } })
      await advance(3_000)
    }
    expect(kinds(events, 'gave-up')).toEqual([])
    expect(kinds(events, 'crashed')).toHaveLength(5)
    expect(Worker.done).toHaveLength(5)
    await mesh.shutdown()
  })
})
