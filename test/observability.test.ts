/**
 * What agents report on both engines: pino child loggers (agent id, trace id) and prom-client
 * metrics in the user's registry.
 */
import { Writable } from 'node:stream'

import pino from 'pino'
import { Registry as PromRegistry } from 'prom-client'
import { afterEach, describe, expect, it, vi } from 'vitest'

import { Agent, type AgentContext } from '../ts/node.js'
import { errorOf } from './helpers.js'
import { fakeMesh } from './mesh-helpers.js'

afterEach(() => {
  vi.useRealTimers()
})

class Greeter extends Agent {
  static readonly capabilities = [{ name: 'greet', version: '2.0.0' }]
  constructor(context: AgentContext<unknown>) {
    super(context)
    this.handle<string, string>('greet', (name, ctx) => {
      ctx.log.info({ name }, 'greeting')
      if (name === '') throw new Error('no name')
      return `hello ${name}`
    })
  }
}

describe('observability', () => {
  it('logs through a pino child per agent, with the trace id a message carries', async () => {
    const lines: Array<Record<string, unknown>> = []
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(JSON.parse(String(chunk)))
        done()
      },
    })
    const logger = pino({ level: 'info' }, sink)
    const { mesh } = await fakeMesh({ logger })
    mesh.define('greeter', Greeter)
    await mesh.spawn('greeter', { id: 'g1' })
    await mesh.request('greet', 'ada', { headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' } })
    await mesh.request('greet', 'bob')
    await vi.advanceTimersByTimeAsync(0)
    const greetings = lines.filter((l) => l['msg'] === 'greeting')
    expect(greetings.map((l) => [l['agent'], l['agentType'], l['traceId'], l['name']])).toEqual([
      ['g1', 'greeter', '4bf92f3577b34da6a3ce929d0e0e4736', 'ada'],
      ['g1', 'greeter', undefined, 'bob'],
    ])
    await mesh.shutdown()
  })

  it('records handled, failed, latency and in-flight in the injected prom-client registry', async () => {
    const registry = new PromRegistry()
    const { mesh } = await fakeMesh({ metrics: registry })
    mesh.define('greeter', Greeter)
    await mesh.spawn('greeter', { id: 'g2' })
    await mesh.request('greet', 'ada')
    await mesh.request('greet', 'bob')
    expect((await errorOf(() => mesh.request('greet', '', { retries: 0 })))?.code).toBe('HANDLER_ERROR')
    const text = await registry.metrics()
    expect(text).toContain('orrery_agent_messages_handled_total{agent="g2",type="greeter",capability="greet"} 2')
    expect(text).toContain('orrery_agent_messages_failed_total{agent="g2",type="greeter",capability="greet",kind="transient"} 1')
    expect(text).toContain('orrery_agent_handler_duration_seconds_count{agent="g2",type="greeter",capability="greet"} 2')
    expect(text).toContain('orrery_agent_in_flight{agent="g2",type="greeter"} 0')
    // A second mesh shares the registry's metrics rather than failing on duplicate names.
    const second = await fakeMesh({ metrics: registry })
    await second.mesh.shutdown()
    await mesh.shutdown()
  })

  it('keeps in-flight at 0 when a timed-out handler closes everything from its abort listener', async () => {
    const registry = new PromRegistry()
    const { orrery, mesh, advance } = await fakeMesh({ metrics: registry })
    // The timeout takes the job off the runner's queue, aborts it, then fails it; closing from the
    // abort listener ends the agent's life in between, and must not count the job out twice.
    class Closer extends Agent {
      static readonly capabilities = [{ name: 'hang', version: '1.0.0' }]
      constructor(context: AgentContext) {
        super(context)
        this.handle('hang', (_payload, { signal }) => new Promise<never>(() => signal.addEventListener('abort', () => orrery.close())))
      }
    }
    mesh.define('closer', Closer)
    await mesh.spawn('closer', { id: 'c1', handlerTimeout: 1_000 })
    const outcome = errorOf(() => mesh.request('hang', 1, { retries: 0, timeout: 10_000 }))
    await advance(1_000)
    expect((await outcome)?.code).toBe('CLOSED')
    expect(await registry.metrics()).toContain('orrery_agent_in_flight{agent="c1",type="closer"} 0')
  })
})
