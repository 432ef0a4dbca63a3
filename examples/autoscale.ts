// Autoscaling an agent type from its inbox lag. Run by test/examples.test.ts on both engines; the
// region is the code block of docs/agents.md (Autoscaling).
import assert from 'node:assert/strict'
import { Agent, Orrery, type AgentContext, type AutoscaleEvent } from 'orrery'

class Resizer extends Agent {
  static capabilities = [{ name: 'resize', version: '1.0.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle<number, number>('resize', async (size) => {
      await new Promise((resolve) => setTimeout(resolve, 20)) // 20 ms of work
      return size / 2
    })
  }
}

const orrery = await Orrery.create()
const mesh = await orrery.mesh()

// #region autoscale
mesh.define('resizer', Resizer, { concurrency: 1 })
// Resolves once `min` replicas run; then reads the backlog every `interval` ms.
const scaler = await mesh.autoscale('resizer', { min: 1, max: 4, targetLag: 5, interval: 50, cooldown: 1_000 })
const decisions: AutoscaleEvent[] = []
scaler.events.subscribe((e) => decisions.push(e))

// A burst: 60 requests queue in resizer-1's inbox; the next tick starts resizer-2 to -4 (60 / 5 > 4),
// and later requests are spread over all four (round-robin).
const first = Array.from({ length: 60 }, (_, i) => mesh.request<number>('resize', i, { timeout: 30_000 }))
await new Promise((resolve) => setTimeout(resolve, 120))
assert.equal(scaler.replicas, 4)
const more = Array.from({ length: 40 }, (_, i) => mesh.request<number>('resize', i, { strategy: 'round-robin', timeout: 30_000 }))
await Promise.all([...first, ...more])

// Idle for the cooldown: the replicas it started leave routing, finish their inbox and stop.
await new Promise((resolve) => setTimeout(resolve, 1_500))
assert.equal(scaler.replicas, 1)
assert.deepEqual(decisions[0]?.agents, ['resizer-2', 'resizer-3', 'resizer-4']) // scale-up 1->4
assert.ok(decisions.slice(1).every((d) => d.type === 'scale-down'))
scaler.stop() // the autoscaler ends; the replicas stay as they are
// #endregion

await mesh.shutdown()
orrery.close()
