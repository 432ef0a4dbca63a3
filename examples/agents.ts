// Agents, the mesh and supervision. Run by test/examples.test.ts on both engines; the regions
// are the code blocks of docs/agents.md.
import assert from 'node:assert/strict'
import { Agent, isOrreryError, Orrery, PermanentError, type AgentContext, type HealthReport, type MeshEvent } from 'orrery'
import { z } from 'zod' // or any Standard Schema validator

// #region agent
const Config = z.object({ maxWords: z.number().int().min(1) })
type Config = z.infer<typeof Config>
const Doc = z.object({ text: z.string() })

class Summarizer extends Agent<Config> {
  static capabilities = [{ name: 'summarize', version: '1.3.0', priority: 5 }]
  static config = Config // validates the configuration (and types it)

  constructor(context: AgentContext) {
    super(context)
    // A request's payload is validated against Doc (an invalid one is a PermanentError) and typed.
    this.handle('summarize', { schema: Doc }, (doc) => {
      if (doc.text === '') throw new PermanentError('nothing to summarize')
      return doc.text.split(' ').slice(0, this.config.maxWords).join(' ')
    })
  }

  // Overrides name their types: TypeScript does not take them from the base class.
  override onConfig(next: Config, previous: Config): void {
    this.log.info({ from: previous.maxWords, to: next.maxWords }, 'reconfigured')
  }

  override healthCheck(): HealthReport {
    return this.config.maxWords < 2 ? { status: 'degraded', reason: 'summaries too short' } : { status: 'healthy' }
  }
}
// #endregion

// #region mesh
const orrery = await Orrery.create()
const mesh = await orrery.mesh({ seed: 1, heartbeat: { interval: 50 } })
const events: MeshEvent[] = []
mesh.events.subscribe((e) => events.push(e))

mesh.define('summarizer', Summarizer, { retry: { attempts: 3, backoff: { base: 100, jitter: 'full' } } })
const [s1] = await mesh.spawn('summarizer', { replicas: 2, config: { maxWords: 3 }, tags: ['gpu'], concurrency: 16 })
assert.equal(s1?.id, 'summarizer-1')

// Routed by capability and semver range, to one of the agents that match.
const reply = await mesh.request<string>('summarize@^1.2', { text: 'one two three four' }, { strategy: 'round-robin', timeout: 2_000, tags: ['gpu'] })
assert.equal(reply.payload, 'one two three')

// A new configuration is validated first: INVALID_CONFIG lists every issue, the old one stays.
await assert.rejects(s1!.reconfigure({ maxWords: 0 }), (err) => isOrreryError(err, 'INVALID_CONFIG'))
await s1!.reconfigure({ maxWords: 1 })

// A permanent error comes back at once, without retries.
await assert.rejects(mesh.request('summarize', { text: '' }), (err) => isOrreryError(err, 'HANDLER_ERROR') && /nothing to summarize/.test(err.message))

assert.deepEqual(mesh.registry.find({ capability: 'summarize@^1.2', tags: ['gpu'] }).map((a) => a.id), ['summarizer-1', 'summarizer-2'])
assert.deepEqual(mesh.registry.find({ capability: 'summarize@^2' }), [])
// #endregion

// #region health
// The health check runs with each heartbeat (every 50 ms here); maxWords 1 reports degraded.
await new Promise<void>((resolve) => {
  mesh.events.subscribe((e) => {
    if (e.type === 'health' && e.agent === 'summarizer-1' && e.to === 'degraded') resolve()
  })
})
assert.deepEqual(mesh.registry.find({ capability: 'summarize', minHealth: 'healthy' }).map((a) => a.id), ['summarizer-2'])
// #endregion

// #region shutdown
// A running agent keeps the process alive (its heartbeat timer and inbox) until shutdown.
await mesh.shutdown({ timeout: 1_000 }) // finished work is acked, unfinished work is redelivered later
assert.ok(events.some((e) => e.type === 'started' && e.agent === 'summarizer-2'))
orrery.close()
// #endregion
