/**
 * A shared mesh rides out a broker outage, on a spare server of its own (test/transports/spare.ts:
 * the shared servers other files use stay up): two Orrery instances (two processes to the
 * broker) see each other's agents; the broker stops for longer than the heartbeat deadline, so
 * each deregisters the other's agents (their beats stopped coming), while its own keep running;
 * once the broker is back, the beats flow again, each asks the other for the agents it no longer
 * knows, and both see all of them again, healthy, with nothing done by hand. Each agent is
 * supervised: no supervisor restarts anything, the other process's agents being none of its own,
 * and no process salvages the other's inboxes (its own link was down).
 */
import { afterAll, describe, expect, it } from 'vitest'

import { Agent, type AgentContext, type Mesh, type MeshEvent, Orrery, type OrreryOptions } from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { quiet, stop, until } from './backends.js'
import { leaveSpare, mustRun, SPARE_SKIP, SPARE_URL, type Spare, withSpare } from './spare.js'

const HEARTBEAT = { interval: 100, deregisterAfter: 500 }
/** Longer than the deadline (5 missed beats + deregisterAfter). */
const OUTAGE_MS = 2_500
const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`

class Worker extends Agent {
  static capabilities = [{ name: 'work', version: '1.0.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle('work', (payload) => payload)
  }
}

const spares: Array<{ name: 'redis' | 'nats'; spare: Spare; options: (ns: string) => OrreryOptions }> = [
  {
    name: 'redis',
    spare: 'redis-spare',
    options: (ns) => ({ transports: { main: { kind: 'redis', url: SPARE_URL['redis-spare'], keyPrefix: `orrery-${ns}:` } } }),
  },
  { name: 'nats', spare: 'nats-spare', options: (ns) => ({ transports: { main: { kind: 'nats', servers: SPARE_URL['nats-spare'], prefix: ns } } }) },
]

for (const server of spares) {
  describe.skipIf(SPARE_SKIP !== undefined)(
    `shared registry across a broker outage: ${server.name} (${ENGINE})${SPARE_SKIP ? ` [skipped: ${SPARE_SKIP}]` : ''}`,
    () => {
      afterAll(() => leaveSpare(server.spare))

      it('deregisters the other process agents while the broker is down, and finds them again once it is back', { timeout: 90_000 }, () =>
        withSpare(server.spare, async () => {
          const ns = `ro${RUN}${ENGINE}`
          const opened: Orrery[] = []
          try {
            const open = async () => {
              const o = await Orrery.create(server.options(ns))
              opened.push(o)
              return o
            }
            const [a, b] = [await open(), await open()]
            const meshes: Mesh[] = []
            const crashes: MeshEvent[] = []
            const salvaged: MeshEvent[] = []
            for (const o of [a, b]) {
              const mesh = await o.mesh({ shared: 'main', heartbeat: HEARTBEAT })
              mesh.define('worker', Worker)
              // Supervised: the other process's agents going down must not look like a crash here.
              await mesh.supervise({ children: [{ type: 'worker' }] })
              mesh.events.subscribe((e) => {
                if (e.type === 'crashed' || e.type === 'restart' || e.type === 'gave-up') crashes.push(e)
                if (e.type === 'salvaged') salvaged.push(e)
              })
              meshes.push(mesh)
            }
            const [meshA, meshB] = meshes as [Mesh, Mesh]
            const healthy = (mesh: Mesh) => mesh.registry.find({ capability: 'work', minHealth: 'healthy' }).length
            await until(() => healthy(meshA) === 2 && healthy(meshB) === 2, 15_000, 'both to see both agents')
            const remoteOf = (mesh: Mesh) => mesh.registry.list().filter((info) => info.remote).length

            await mustRun('stop', server.spare)
            const down = Date.now()
            await until(() => remoteOf(meshA) === 0 && remoteOf(meshB) === 0, 10_000, "each to deregister the other's agent")
            const gone = Date.now() - down
            // Each keeps its own agent, beating locally.
            expect(meshA.registry.list().map((info) => info.remote)).toEqual([false])
            expect(meshB.registry.list().map((info) => info.remote)).toEqual([false])
            await quiet(Math.max(0, OUTAGE_MS - gone))

            await mustRun('start', '--keep', '--for', String(process.pid), server.spare)
            const up = Date.now()
            await until(
              () => healthy(meshA) === 2 && healthy(meshB) === 2,
              30_000,
              'both to see both agents again',
              () => [meshA.registry.list(), meshB.registry.list()],
            )
            const back = Date.now() - up
            console.log(
              `[registry outage ${server.name} ${ENGINE}] remote agents deregistered ${gone} ms after the stop; seen again ${back} ms after the start`,
            )
            expect(meshB.registry.list().find((info) => info.remote)).toMatchObject({ process: meshA.process, health: 'healthy' })
            // Supervisors never touched the other process's agents, nor their own.
            expect(crashes).toEqual([])
            // Their link to the broker was down: neither took the other's (generated-id) agent for
            // dead and emptied its inbox.
            expect(salvaged).toEqual([])
          } finally {
            for (const o of opened) await stop(o)
          }
        }),
      )
    },
  )
}
