/**
 * The Agent base class and the mesh's routing, on both engines, on fake time: typed handlers,
 * configuration, discovery, strategies, retries, dead letters, rate limits, breakers, fallback,
 * timeouts and bulkheads.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import { z } from 'zod'

import { Agent, FatalError, PermanentError, type AgentContext, type Message } from '../ts/node.js'
import { collect, errorOf } from './helpers.js'
import { Echo, fakeMesh, kinds } from './mesh-helpers.js'

afterEach(() => {
  vi.useRealTimers()
  delete process.env['SUMMARY_MAX_WORDS']
})

const Doc = z.object({ text: z.string().min(1) })

class Summarizer extends Agent<{ maxWords: number }> {
  static readonly capabilities = [{ name: 'summarize', version: '1.3.0', priority: 5 }]
  static readonly config = z.object({ maxWords: z.number().int().min(1) })
  seen: string[] = []
  constructor(context: AgentContext<{ maxWords: number }>) {
    super(context)
    this.handle('summarize', { schema: Doc }, (doc) => doc.text.split(' ').slice(0, this.config.maxWords).join(' '))
    this.on<string>('event', (text) => { this.seen.push(text) })
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
    expect(bad?.code).toBe('HANDLER_ERROR')
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

  it('loads config from values and the environment, validates it, and hot-reloads it', async () => {
    const { mesh, events } = await fakeMesh()
    mesh.define('summarizer', Summarizer)
    process.env['SUMMARY_MAX_WORDS'] = '1'
    const [h] = await mesh.spawn('summarizer', { config: { maxWords: 5 }, configFrom: { env: 'SUMMARY_' } })
    expect(h!.agent.config).toEqual({ maxWords: 1 })
    const invalid = await errorOf(() => mesh.spawn('summarizer', { config: { maxWords: 0 } }))
    expect(invalid?.code).toBe('INVALID_CONFIG')
    expect(invalid?.details?.['issues']).toEqual([expect.objectContaining({ path: 'maxWords' })])
    const changes: unknown[] = []
    ;(h!.agent as Summarizer).onConfig = (next, prev) => { changes.push([prev, next]) }
    await h!.reconfigure({ maxWords: 2 })
    expect(changes).toEqual([[{ maxWords: 1 }, { maxWords: 2 }]])
    const refused = await errorOf(() => h!.reconfigure({ maxWords: -1 }))
    expect(refused?.code).toBe('INVALID_CONFIG')
    expect(h!.agent.config).toEqual({ maxWords: 2 })
    expect(kinds(events, 'config')).toEqual([`config:${h!.id}`])
    await mesh.shutdown()
  })
})
