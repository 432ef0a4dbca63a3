// A mesh shared by processes through Redis. Run by test/examples.test.ts on both engines against
// the test server (scripts/servers.sh, port 16379; ORRERY_REDIS_URL names another); the region is
// the code block of docs/agents.md, "A mesh across processes". Two Orrery instances stand for two
// processes (each has its own process id on the broker).
import assert from 'node:assert/strict'
import { Agent, type AgentContext, Orrery } from 'orrery'

const url = process.env['ORRERY_REDIS_URL'] ?? 'redis://127.0.0.1:16379'
// The example needs a server; a test run without servers says so and has nothing to show.
if (process.env['ORRERY_SERVERS'] === 'none') process.exit(0)
const keyPrefix = `example-${process.pid}-${Date.now().toString(36)}:`
const until = async (done: () => boolean) => {
  while (!done()) await new Promise((resolve) => setTimeout(resolve, 10))
}

// #region shared-mesh
class Resizer extends Agent {
  static capabilities = [{ name: 'resize', version: '1.0.0' }]
  readonly widths: unknown[] = []

  constructor(context: AgentContext) {
    super(context)
    this.handle('resize', (width) => {
      this.widths.push(width)
    })
  }
}

const options = { transports: { main: { kind: 'redis', url, keyPrefix } } } as const
const a = await Orrery.create(options) // one process...
const b = await Orrery.create(options) // ...and another, as far as Redis can tell

// `shared` names a transport: the mesh binds its registry channel and every agent inbox to it.
const meshA = await a.mesh({ shared: 'main', heartbeat: { interval: 1_000 } })
meshA.define('resizer', Resizer)
const [resizer] = await meshA.spawn('resizer')
assert.ok(resizer)
assert.equal(resizer.id, `resizer-1.${meshA.process?.slice(0, 8)}`) // generated ids name their process

// B joins later and asks the others for their agents: A's resizer is in B's registry, marked remote.
const meshB = await b.mesh({ shared: 'main', heartbeat: { interval: 1_000 } })
await until(() => meshB.registry.find('resize').length === 1)
const [found] = meshB.registry.find('resize')
assert.equal(found?.remote, true)
assert.equal(found?.process, meshA.process)

// Routed in B, the message goes to the agent's inbox on Redis and is handled in A.
await meshB.send('resize', 640)
await until(() => (resizer.agent as Resizer).widths.length === 1)

// A graceful stop deregisters A's agents everywhere at once (a killed process's go after the heartbeat deadline).
await meshA.shutdown()
await until(() => meshB.registry.find('resize').length === 0)
await meshB.shutdown()
await a.shutdown()
await b.shutdown()
// #endregion
