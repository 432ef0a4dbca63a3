/**
 * Fault injection on both engines, on fake time: handlers that throw (transiently,
 * permanently), hang past their timeout, and run over their rate limit; the breaker's
 * transitions; fallback to the next candidate; bulkheads; selection strategies.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'

import { Agent, FatalError, OrreryError, PermanentError, type AgentContext } from '../ts/node.js'
import { collect, errorOf } from './helpers.js'
import { Echo, fakeMesh, kinds } from './mesh-helpers.js'

afterEach(() => {
  vi.useRealTimers()
})

/** Fails while `failing` says so (a flaky dependency), counting calls. */
class Flaky extends Agent {
  static readonly capabilities = [{ name: 'work', version: '1.0.0' }]
  static failing = new Set<string>()
  static calls: string[] = []
  constructor(context: AgentContext<unknown>) {
    super(context)
    this.handle<string, string>('work', (input) => {
      Flaky.calls.push(this.id)
      if (Flaky.failing.has(this.id)) throw new Error(`${this.id} is down`)
      if (input === 'bad') throw new PermanentError('bad input')
      return `${this.id} did ${input}`
    })
  }
}

/** Never answers. */
class Hang extends Agent {
  static readonly capabilities = [{ name: 'work', version: '1.0.0', priority: 10 }]
  constructor(context: AgentContext<unknown>) {
    super(context)
    this.handle('work', () => new Promise(() => {}))
  }
}

function reset() {
  Flaky.failing = new Set()
  Flaky.calls = []
}

describe('routing and resilience', () => {
  it('falls back to the next candidate, opens the breaker, then probes and closes it', async () => {
    reset()
    const { mesh, events, advance } = await fakeMesh({ breaker: { failures: 2, coolDown: 1_000 } })
    mesh.define('flaky', Flaky)
    await mesh.spawn('flaky', { id: 'a', capabilities: [{ name: 'work', version: '1.0.0', priority: 9 }] })
    await mesh.spawn('flaky', { id: 'b' })
    Flaky.failing.add('a')
    for (let i = 0; i < 2; i++) expect((await mesh.request<string>('work', 'x')).payload).toBe('b did x')
    expect(Flaky.calls).toEqual(['a', 'b', 'a', 'b'])
    expect(mesh.registry.get('a')?.breaker).toBe('open')
    // Open: a is skipped without being called.
    Flaky.calls = []
    expect((await mesh.request<string>('work', 'y')).payload).toBe('b did y')
    expect(Flaky.calls).toEqual(['b'])
    Flaky.failing.delete('a')
    await advance(1_000)
    expect(mesh.registry.get('a')?.breaker).toBe('half-open')
    expect((await mesh.request<string>('work', 'z')).payload).toBe('a did z')
    const breaker = events.filter((e) => e.type === 'breaker').map((e) => e.type === 'breaker' && `${e.agent}:${e.from}>${e.to}`)
    expect(breaker).toEqual(['a:closed>open', 'a:open>half-open', 'a:half-open>closed'])
    await mesh.shutdown()
  })

  it('retries with backoff when every candidate fails, and gives up after the limit', async () => {
    reset()
    const { mesh, advance } = await fakeMesh({ breaker: { failures: 100 } })
    mesh.define('flaky', Flaky)
    await mesh.spawn('flaky', { id: 'only' })
    Flaky.failing.add('only')
    const pending = errorOf(() => mesh.request('work', 'x', { retries: 2, backoff: { base: 100, jitter: 'none' } }))
    await advance(1)
    expect(Flaky.calls).toEqual(['only'])
    await advance(100)
    expect(Flaky.calls).toHaveLength(2)
    await advance(200)
    const error = await pending
    expect(Flaky.calls).toHaveLength(3)
    expect(error?.code).toBe('HANDLER_ERROR')
    expect(error?.details?.['attempts']).toBe(3)
    // A permanent error is returned at once and leaves the breaker alone.
    Flaky.failing.clear()
    Flaky.calls = []
    const bad = await errorOf(() => mesh.request('work', 'bad'))
    expect(bad?.details?.['permanent']).toBe(true)
    expect(Flaky.calls).toEqual(['only'])
    await mesh.shutdown()
  })

  it('bounds every call with a timeout and falls back past a hung agent', async () => {
    reset()
    const { mesh, advance } = await fakeMesh()
    mesh.define('hang', Hang).define('flaky', Flaky)
    await mesh.spawn('hang', { id: 'stuck' })
    await mesh.spawn('flaky', { id: 'ok' })
    const reply = mesh.request<string>('work', 'x', { timeout: 500 })
    await advance(500)
    expect((await reply).payload).toBe('ok did x')
    const alone = errorOf(() => mesh.request('work', 'y', { timeout: 500, retries: 0, tags: ['none'] }))
    await advance(1)
    expect((await alone)?.code).toBe('NO_RESPONDER')
    // The hung handler holds up a graceful stop only until its timeout.
    const stopped = mesh.shutdown({ timeout: 200 })
    await advance(200)
    await stopped
  })

  it('falls back at once from an agent that ends holding the call: stopped past its timeout, or crashed with no supervisor', async () => {
    reset()
    // A breaker that opens at the first failure: none opens, the agent's end being no fault of its.
    const { mesh, events, advance } = await fakeMesh({ breaker: { failures: 1 } })
    /** Hangs on `work`; `break` crashes it. */
    class Brittle extends Hang {
      static override readonly capabilities = [...Hang.capabilities, { name: 'break', version: '1.0.0', priority: 1 }]
      constructor(context: AgentContext<unknown>) {
        super(context)
        this.handle('break', () => {
          throw new FatalError('broken')
        })
      }
    }
    mesh.define('brittle', Brittle).define('flaky', Flaky)
    await mesh.spawn('flaky', { id: 'ok' })
    // A call's timeout far off: it is answered long before, by the fallback.
    const fellBack = () => events.filter((e) => e.type === 'fallback').map((e) => e.type === 'fallback' && `${e.agent}: ${e.error}`)
    for (const [id, end] of [
      ['stopped', () => void mesh.stop('stopped', { timeout: 100 })],
      ['crashed', () => void mesh.send('break', null)],
    ] as const) {
      await mesh.spawn('brittle', { id })
      const reply = mesh.request<string>('work', id, { timeout: 60_000 })
      await advance(1)
      end()
      await advance(100)
      expect((await reply).payload).toBe(`ok did ${id}`)
      expect(fellBack().at(-1)).toBe(`${id}: the responder on inbox.${id} failed: agent ${id} ${id} before it answered`)
    }
    expect(kinds(events, 'crashed')).toEqual(['crashed:crashed'])
    expect(events.filter((e) => e.type === 'breaker')).toEqual([])
    // One running and one waiting for its rate limit's token (a second off) when the agent stops:
    // both fall back at once.
    await mesh.spawn('brittle', { id: 'limited', rateLimit: { agent: { perSecond: 1, burst: 1 } } })
    const replies = ['r1', 'r2'].map((x) => mesh.request<string>('work', x, { timeout: 60_000 }))
    await advance(1)
    void mesh.stop('limited', { timeout: 10 })
    await advance(10)
    expect((await Promise.all(replies)).map((m) => m.payload)).toEqual(['ok did r1', 'ok did r2'])
    expect(fellBack().slice(-2)).toEqual(['r1', 'r2'].map(() => 'limited: the responder on inbox.limited failed: agent limited stopped before it answered'))
    expect(events.filter((e) => e.type === 'breaker')).toEqual([])
    // A handler's own CLOSED error (something it uses was closed) is its failure: its breaker opens.
    class Closing extends Agent {
      static readonly capabilities = [{ name: 'work', version: '1.0.0', priority: 10 }]
      constructor(context: AgentContext<unknown>) {
        super(context)
        this.handle('work', () => {
          throw new OrreryError('CLOSED', 'its pool is closed')
        })
      }
    }
    mesh.define('closing', Closing)
    await mesh.spawn('closing', { id: 'closing' })
    expect((await mesh.request<string>('work', 'c')).payload).toBe('ok did c')
    expect(fellBack().at(-1)).toBe('closing: the responder on inbox.closing failed: OrreryError: its pool is closed')
    expect(mesh.registry.get('closing')?.breaker).toBe('open')
    await mesh.shutdown()
  })

  it('retries transient failures of messages with backoff, then dead-letters them with the error', async () => {
    reset()
    const { mesh, orrery, events, advance } = await fakeMesh()
    mesh.define('flaky', Flaky, { retry: { attempts: 2, backoff: { base: 100, jitter: 'none' } } })
    await mesh.spawn('flaky', { id: 'w' })
    Flaky.failing.add('w')
    const dead = collect(orrery.bus.subscribe<string>('inbox.w.dead-letter', { from: 'earliest' }))
    await mesh.send('work', 'x')
    await advance(1)
    await advance(100)
    await advance(200)
    await advance(10)
    expect(Flaky.calls).toEqual(['w', 'w', 'w'])
    expect(dead).toHaveLength(1)
    expect(dead[0]!.headers['x-orrery-dead-letter-reason']).toMatch(/retries exhausted after 3 attempts: Error: w is down/)
    expect(kinds(events, 'retry', 'dead-letter')).toEqual(['retry:w', 'retry:w', 'dead-letter:w'])
    // Permanent: straight to the dead-letter channel.
    Flaky.failing.clear()
    await mesh.send('work', 'bad')
    await advance(10)
    expect(dead).toHaveLength(2)
    expect(dead[1]!.headers['x-orrery-dead-letter-reason']).toBe('PermanentError: bad input')
    // A transient failure that recovers is handled on its retry.
    Flaky.failing.add('w')
    Flaky.calls = []
    await mesh.send('work', 'y')
    await advance(1)
    Flaky.failing.clear()
    await advance(100)
    expect(Flaky.calls).toEqual(['w', 'w'])
    expect(dead).toHaveLength(2)
    await mesh.shutdown()
  })

  it('rate-limits per agent and per capability: waiting, or refusing with RATE_LIMITED', async () => {
    reset()
    const { mesh, advance } = await fakeMesh()
    mesh.define('flaky', Flaky)
    await mesh.spawn('flaky', { id: 'limited', rateLimit: { capabilities: { work: { perSecond: 2 } }, policy: 'reject' } })
    const results = await Promise.all(['1', '2', '3'].map((x) => errorOf(() => mesh.request('work', x, { retries: 0 }))))
    expect(results.map((r) => r?.details?.['remoteCode'] ?? 'ok')).toEqual(['ok', 'ok', 'RATE_LIMITED'])
    await mesh.stop('limited')
    await mesh.spawn('flaky', { id: 'patient', rateLimit: { agent: { perSecond: 1 } } })
    Flaky.calls = []
    const replies = [mesh.request<string>('work', 'a'), mesh.request<string>('work', 'b')]
    await advance(1)
    expect(Flaky.calls).toEqual(['patient'])
    await advance(1_000)
    expect(Flaky.calls).toEqual(['patient', 'patient'])
    expect((await Promise.all(replies)).map((m) => m.payload)).toEqual(['patient did a', 'patient did b'])
    await mesh.shutdown()
  })

  it('caps concurrent calls per agent with a bulkhead', async () => {
    const { mesh, advance } = await fakeMesh()
    mesh.define('hang', Hang)
    await mesh.spawn('hang', { id: 'h', bulkhead: 2 })
    const first = [1, 2].map((n) => errorOf(() => mesh.request('work', n, { timeout: 100, retries: 0 })))
    const third = await errorOf(() => mesh.request('work', 3, { retries: 0 }))
    expect(third?.code).toBe('BULKHEAD_FULL')
    expect(mesh.registry.get('h')?.inFlight).toBe(2)
    await advance(100)
    for (const p of first) expect((await p)?.code).toBe('TIMEOUT')
    expect(mesh.registry.get('h')?.inFlight).toBe(0)
    const stopped = mesh.shutdown({ timeout: 0 })
    await advance(0)
    await stopped
  })

  it('selects by priority, round-robin, least-loaded and seeded random', async () => {
    const { mesh } = await fakeMesh()
    mesh.define('echo', Echo)
    await mesh.spawn('echo', { replicas: 3, id: 'e' })
    const who = async (strategy: 'priority' | 'round-robin' | 'random') => (await mesh.request<string>('echo', 'x', { strategy })).payload.split(':')[0]
    const rr: string[] = []
    for (let i = 0; i < 6; i++) rr.push((await who('round-robin'))!)
    expect(new Set(rr.slice(0, 3))).toEqual(new Set(['e-1', 'e-2', 'e-3']))
    expect(rr.slice(3)).toEqual(rr.slice(0, 3))
    expect(await who('priority')).toBe('e-1')
    const drawn = new Set<string>()
    for (let i = 0; i < 30; i++) drawn.add((await who('random'))!)
    expect(drawn.size).toBe(3)
    expect(mesh.registry.select('echo', 'least-loaded')?.id).toBe('e-1')
    await mesh.shutdown()
  })

  it('NO_RESPONDER says which condition left no agent, and never suggests the name asked for', async () => {
    const { mesh } = await fakeMesh()
    const registry = mesh.registry
    registry.register({ id: 'a', type: 't', capabilities: [{ name: 'summarize', version: '1.2.0' }], tags: ['cpu'] })
    registry.register({ id: 'b', type: 't', capabilities: [{ name: 'summarize', version: '1.3.0' }], tags: ['cpu'] })
    registry.heartbeat('a')
    registry.heartbeat('b')
    const untagged = await errorOf(() => mesh.request('summarize', 'x', { tags: ['gpu'] }))
    expect(untagged).toMatchObject({ code: 'NO_RESPONDER', details: { capability: 'summarize', offered: 2, similar: [] } })
    expect(untagged?.message).toBe('2 agents offer summarize, but none has tags [gpu]')
    const ranged = await errorOf(() => mesh.request('summarize@^2.0.0', 'x'))
    expect(ranged?.message).toBe('2 agents offer summarize, but none at a version in ^2.0.0 (offered: 1.2.0, 1.3.0)')
    // Registered and not yet started: initializing, below the default minimum health.
    registry.register({ id: 'c', type: 't', capabilities: [{ name: 'translate', version: '1.0.0' }] })
    const starting = await errorOf(() => mesh.send('translate', 'x', {}))
    expect(starting).toMatchObject({ code: 'NO_RESPONDER', details: { capability: 'translate', offered: 1 } })
    expect(starting?.message).toBe('1 agent offers translate, but none is healthy or degraded (they are initializing; minHealth is degraded)')
    for (const err of [untagged, ranged, starting]) expect(err?.message).not.toContain('did you mean')
    const typo = await errorOf(() => mesh.request('sumarize', 'x'))
    expect(typo).toMatchObject({ code: 'NO_RESPONDER', details: { capability: 'sumarize', offered: 0, similar: ['summarize'] } })
    expect(typo?.message).toBe('no agent offers sumarize (did you mean summarize?)')
    await mesh.shutdown()
  })
})
