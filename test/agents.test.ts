/**
 * The Agent base class and the mesh's routing, on both engines, on fake time: typed handlers,
 * configuration, discovery, strategies, retries, dead letters, rate limits, breakers, fallback,
 * timeouts and bulkheads.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import { z } from 'zod'

import { Agent, type AgentContext } from '../ts/node.js'
import { IN_BROWSER } from './engine.js'
import { errorOf } from './helpers.js'
import { fakeMesh, kinds } from './mesh-helpers.js'

afterEach(() => {
  vi.useRealTimers()
  vi.unstubAllEnvs()
})

const Doc = z.object({ text: z.string().min(1) })

class Summarizer extends Agent<{ maxWords: number }> {
  static readonly capabilities = [{ name: 'summarize', version: '1.3.0', priority: 5 }]
  static readonly config = z.object({ maxWords: z.number().int().min(1) })
  seen: string[] = []
  constructor(context: AgentContext<{ maxWords: number }>) {
    super(context)
    this.handle('summarize', { schema: Doc }, (doc) => doc.text.split(' ').slice(0, this.config.maxWords).join(' '))
    this.on<string>('event', (text) => {
      this.seen.push(text)
    })
  }
}

describe('agents', () => {
  it('answers requests by capability with validated, typed payloads', async () => {
    const { mesh } = await fakeMesh()
    mesh.define('summarizer', Summarizer)
    await mesh.spawn('summarizer', { config: { maxWords: 2 } })
    const reply = await mesh.request<string>('summarize@^1.2', { text: 'one two three' })
    expect(reply.payload).toBe('one two')
    const bad = await errorOf(() => mesh.request('summarize', { text: '' }))
    expect(bad?.code).toBe('SCHEMA_INVALID')
    expect(bad?.details?.['permanent']).toBe(true)
    expect(bad?.message).toMatch(/SCHEMA_INVALID|text/)
    await mesh.shutdown()
  })

  it('routes direct messages by kind and reports a missing capability with similar names', async () => {
    const { mesh, orrery } = await fakeMesh()
    mesh.define('summarizer', Summarizer)
    const [handle] = await mesh.spawn('summarizer', { id: 's', config: { maxWords: 3 } })
    await orrery.bus.send('s', 'hello', { kind: 'event' })
    await vi.advanceTimersByTimeAsync(1)
    expect((handle!.agent as Summarizer).seen).toEqual(['hello'])
    const missing = await errorOf(() => mesh.request('sumarize', {}))
    expect(missing?.code).toBe('NO_RESPONDER')
    expect(missing?.details?.['similar']).toEqual(['summarize'])
    await mesh.shutdown()
  })

  it('replies null for undefined, and an error for a result that cannot be sent, once each', async () => {
    const { mesh, orrery } = await fakeMesh()
    let calls = 0
    class Odd extends Agent {
      static readonly capabilities = [{ name: 'odd', version: '1.0.0' }]
      constructor(context: AgentContext<unknown>) {
        super(context)
        this.handle<string, unknown>('odd', (what) => {
          calls++
          if (what === 'cycle') {
            const a: Record<string, unknown> = {}
            a['self'] = a
            return a
          }
          return undefined
        })
      }
    }
    mesh.define('odd', Odd)
    await mesh.spawn('odd', { id: 'o' })
    expect((await mesh.request('odd', 'nothing')).payload).toBeNull()
    const cycle = await errorOf(() => mesh.request('odd', 'cycle', { retries: 0 }))
    expect(cycle?.details?.['permanent']).toBe(true)
    expect(calls).toBe(2)
    expect(orrery.bus.group('inbox.o', 'agent').stats().acked).toBe(2)
    await mesh.shutdown()
  })

  it('refuses bad declarations with their own codes and leaves the id free', async () => {
    const { mesh } = await fakeMesh()
    class Unhandled extends Agent {
      static readonly capabilities = [{ name: 'x', version: '1.0.0' }]
    }
    class Twice extends Agent {
      static readonly capabilities = [
        { name: 'x', version: '1.0.0' },
        { name: 'x', version: '2.0.0' },
      ]
      constructor(context: AgentContext<unknown>) {
        super(context)
        this.handle('x', () => 1)
      }
    }
    mesh.define('unhandled', Unhandled).define('twice', Twice).define('summarizer', Summarizer)
    expect((await errorOf(() => mesh.spawn('unhandled', { id: 'same' })))?.code).toBe('NO_HANDLER')
    expect((await errorOf(() => mesh.spawn('twice', { id: 'same' })))?.code).toBe('INVALID_ARGUMENT')
    expect((await errorOf(() => mesh.spawn('twice', { id: 'same' })))?.message).toBe('capability "x" of agent "same" is listed twice')
    expect(
      (await errorOf(() => mesh.spawn('summarizer', { id: 'same', capabilities: [{ name: 'summarize', version: 'one' }], config: { maxWords: 1 } })))?.code,
    ).toBe('INVALID_VERSION')
    expect(mesh.registry.list()).toEqual([])
    await mesh.spawn('summarizer', { id: 'same', config: { maxWords: 1 } })
    // Two starts of one id at once: one of them is refused.
    const both = await Promise.all([0, 1].map(() => errorOf(() => mesh.spawn('summarizer', { id: 'twin', config: { maxWords: 1 } }))))
    expect(both.map((e) => e?.code ?? 'ok').sort()).toEqual(['DUPLICATE_AGENT', 'ok'])
    // Bad request options reject (never throw).
    const rejected = mesh.request('summarize@not-a-range', {})
    expect((await errorOf(() => rejected))?.code).toBe('INVALID_VERSION')
    await mesh.shutdown()
  })

  it('loads config from values, validates it, and hot-reloads it', async () => {
    const { mesh, events } = await fakeMesh()
    mesh.define('summarizer', Summarizer)
    const [h] = await mesh.spawn('summarizer', { config: { maxWords: 5 } })
    expect(h!.agent.config).toEqual({ maxWords: 5 })
    const invalid = await errorOf(() => mesh.spawn('summarizer', { config: { maxWords: 0 } }))
    expect(invalid?.code).toBe('INVALID_CONFIG')
    expect(invalid?.details?.['issues']).toEqual([expect.objectContaining({ path: 'maxWords' })])
    const changes: unknown[] = []
    ;(h!.agent as Summarizer).onConfig = (next, prev) => {
      changes.push([prev, next])
    }
    await h!.reconfigure({ maxWords: 2 })
    expect(changes).toEqual([[{ maxWords: 5 }, { maxWords: 2 }]])
    const refused = await errorOf(() => h!.reconfigure({ maxWords: -1 }))
    expect(refused?.code).toBe('INVALID_CONFIG')
    expect(h!.agent.config).toEqual({ maxWords: 2 })
    expect(kinds(events, 'config')).toEqual([`config:${h!.id}`])
    await mesh.shutdown()
  })

  // configFrom.env reads process.env, which a page does not have.
  it.skipIf(IN_BROWSER)('takes config from the environment over the values given', async () => {
    const { mesh } = await fakeMesh()
    mesh.define('summarizer', Summarizer)
    vi.stubEnv('SUMMARY_MAX_WORDS', '1')
    const [h] = await mesh.spawn('summarizer', { config: { maxWords: 5 }, configFrom: { env: 'SUMMARY_' } })
    expect(h!.agent.config).toEqual({ maxWords: 1 })
    await mesh.shutdown()
  })
})
