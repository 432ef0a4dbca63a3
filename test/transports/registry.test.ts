/**
 * The shared registry (`orrery.mesh({ shared })`) on each broker: two or three Orrery instances in
 * this test process stand for processes (each has a link of its own, with its own process id, as
 * far as the broker can tell). Discovery both ways, a late joiner, direct messages to another
 * process's agent, a graceful shutdown deregistering at once, heartbeats that stop deregistering
 * within the deadline, and the refusals of bad `shared` options before anything is published.
 *
 * Each test gets a key prefix (Redis), a subject prefix (NATS) or a topic prefix (Kafka) of its own,
 * so the registry channels of tests and files running at once on one server never meet.
 */
import { describe, expect, inject, it } from 'vitest'

import {
  Agent,
  type AgentContext,
  isOrreryError,
  type MeshEvent,
  type Mesh,
  type Message,
  Orrery,
  type OrreryOptions,
  TRANSPORT_CAPABILITIES,
} from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { BACKENDS, quiet, stop, until } from './backends.js'
import { proxyTo } from './proxy.js'

const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
let tests = 0

/** Heartbeats fast enough for a test: down after 5 missed beats (500 ms), deregistered 500 ms later. */
const HEARTBEAT = { interval: 100, deregisterAfter: 500 }
const T = 60_000

class Echo extends Agent {
  static capabilities = [{ name: 'echo', version: '1.0.0' }]
  readonly seen: unknown[] = []
  constructor(context: AgentContext) {
    super(context)
    // A routed message (mesh.send) and a request both reach the capability's handler.
    this.handle('echo', (payload) => {
      this.seen.push(payload)
      return payload
    })
  }
}

/** Answers after a while: a request to it is in flight when its process begins to stop. */
class Slow extends Agent {
  static capabilities = [{ name: 'slow', version: '1.0.0' }]
  static runs = 0
  constructor(context: AgentContext) {
    super(context)
    this.handle('slow', async (payload) => {
      Slow.runs++
      await new Promise((r) => setTimeout(r, 700))
      return payload
    })
  }
}

/** Never answers on its own: its handler ends when its attempt is aborted (its agent stops). */
class Hang extends Agent {
  static capabilities = [{ name: 'job', version: '1.0.0' }]
  static runs = 0
  static aborted = 0
  constructor(context: AgentContext) {
    super(context)
    this.handle('job', (_payload, ctx) => {
      Hang.runs++
      return new Promise((_, reject) =>
        ctx.signal.addEventListener('abort', () => {
          Hang.aborted++
          reject(ctx.signal.reason)
        }),
      )
    })
  }
}

/** Answers at once, saying who did. */
class Quick extends Agent {
  static capabilities = [{ name: 'job', version: '1.0.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle('job', (payload) => ({ by: 'quick', payload }))
  }
}

/** Fails every request (a transient error): its caller falls back to another agent. */
class Flaky extends Agent {
  static capabilities = [{ name: 'echo', version: '1.0.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle('echo', () => {
      throw new Error('flaky')
    })
  }
}

for (const backend of BACKENDS.filter((b) => b.name === 'redis' || b.name === 'nats' || b.name === 'kafka')) {
  const title = `shared registry: ${backend.name} (${ENGINE})${backend.skip ? ` [skipped: ${backend.skip}]` : ''}`
  describe.skipIf(backend.skip !== undefined)(title, () => {
    if (backend.broken !== undefined) {
      it('has its server', () => {
        throw new Error(backend.broken)
      })
      return
    }

    /** Options for an Orrery of this test: transport `main` on the backend, under a prefix of the test's own. */
    const optionsFor = (ns: string, extra: Partial<OrreryOptions> = {}): OrreryOptions =>
      backend.name === 'redis'
        ? { transports: { main: { kind: 'redis', url: inject('redisUrl')!, keyPrefix: `orrery-${ns}:` } }, ...extra }
        : backend.name === 'nats'
          ? { transports: { main: { kind: 'nats', servers: inject('natsUrl')!, prefix: ns } }, ...extra }
          : { transports: { main: { kind: 'kafka', brokers: inject('kafkaBrokers')!, prefix: ns } }, ...extra }

    /** A namespace per test, and instances opened in it (stopped after the test). */
    const world = () => {
      const ns = `rg${RUN}${++tests}`
      const opened: Orrery[] = []
      return {
        ns,
        opened,
        async open(extra?: Partial<OrreryOptions>): Promise<Orrery> {
          const o = await Orrery.create(optionsFor(ns, extra))
          opened.push(o)
          return o
        },
        async end() {
          for (const o of opened) await stop(o)
        },
      }
    }

    const ids = (mesh: Mesh, query = 'echo') =>
      mesh.registry
        .find({ capability: query, minHealth: 'offline' })
        .map((a) => a.id)
        .sort()

    it(
      'discovers the agents of other processes, both ways and for a late joiner, and tells them apart',
      async () => {
        const w = world()
        try {
          const [a, b] = [await w.open(), await w.open()]
          const meshA = await a.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          meshA.define('echo', Echo)
          const spawned = await meshA.spawn('echo', { replicas: 2 })
          expect(meshA.process).toMatch(/^[0-9a-f]{16}$/)
          // Generated ids carry the process: two processes spawning a type never collide.
          expect(spawned.map((h) => h.id)).toEqual([`echo-1.${meshA.process!.slice(0, 8)}`, `echo-2.${meshA.process!.slice(0, 8)}`])

          // B joins after A's agents registered: it hears of them by asking.
          const meshB = await b.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          meshB.define('echo', Echo)
          await until(
            () => ids(meshB).length === 2,
            10_000,
            'B to see A agents',
            () => ids(meshB),
          )
          const [seen] = meshB.registry.find('echo')
          expect(seen).toMatchObject({ remote: true, process: meshA.process, health: 'healthy', type: 'echo' })
          expect(meshB.process).not.toBe(meshA.process)

          // Then an agent of B's: A hears at once (a register event), with its health.
          const registeredOnA: MeshEvent[] = []
          meshA.events.subscribe((e) => {
            if (e.type === 'registered') registeredOnA.push(e)
          })
          const [b1] = await meshB.spawn('echo')
          await until(
            () => ids(meshA).length === 3,
            10_000,
            'A to see B agent',
            () => ids(meshA),
          )
          expect(registeredOnA).toMatchObject([{ type: 'registered', agent: b1!.id, agentType: 'echo', remote: true, process: meshB.process }])
          expect(meshA.registry.get(b1!.id)).toMatchObject({ remote: true, process: meshB.process })
          // Its own agents: not remote, this process's id.
          expect(meshA.registry.get(spawned[0]!.id)).toMatchObject({ remote: false, process: meshA.process })
          // Handles are for agents this process runs: the others are in the registry only.
          expect(meshA.agents().map((h) => h.id)).toEqual(spawned.map((h) => h.id))

          // A third process, later still, sees all three.
          const c = await w.open()
          const meshC = await c.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          await until(
            () => ids(meshC).length === 3,
            10_000,
            'C to see every agent',
            () => ids(meshC),
          )
          expect(meshC.registry.list().every((info) => info.remote)).toBe(true)
        } finally {
          await w.end()
        }
      },
      T,
    )

    it(
      'tells health changes at once, not at the next beat',
      async () => {
        const w = world()
        try {
          const [a, b] = [await w.open(), await w.open()]
          // Beats far apart: what arrives sooner came with the change itself.
          const slow = { interval: 4_000, deregisterAfter: 60_000 }
          const meshA = await a.mesh({ shared: 'main', heartbeat: slow })
          const meshB = await b.mesh({ shared: 'main', heartbeat: slow })
          meshA.define('echo', Echo)
          const started = Date.now()
          const [handle] = await meshA.spawn('echo')
          const healthOnB = () => meshB.registry.get(handle!.id)?.health
          await until(() => healthOnB() === 'healthy', 10_000, 'B to see the agent healthy', healthOnB)
          expect(Date.now() - started).toBeLessThan(slow.interval)
          const paused = Date.now()
          await handle!.pause()
          await until(() => healthOnB() === 'paused', 10_000, 'B to see the pause', healthOnB)
          await handle!.resume()
          await until(() => healthOnB() === 'healthy', 10_000, 'B to see the resume', healthOnB)
          expect(Date.now() - paused).toBeLessThan(slow.interval)
        } finally {
          await w.end()
        }
      },
      T,
    )

    it(
      "sends a direct message to another process's agent through its inbox",
      async () => {
        const w = world()
        try {
          const [a, b] = [await w.open(), await w.open()]
          const meshA = await a.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          meshA.define('echo', Echo)
          const [handle] = await meshA.spawn('echo')
          const meshB = await b.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          await until(() => ids(meshB).length === 1, 10_000, 'B to see A agent')
          const sent = await meshB.send('echo', { n: 1 })
          expect(sent.agent).toBe(handle!.id)
          const agent = handle!.agent as Echo
          await until(() => agent.seen.length === 1, 10_000, 'the message to reach the agent in A')
          expect(agent.seen).toEqual([{ n: 1 }])
          expect(b.bus.binding(`inbox.${handle!.id}`)).toMatchObject({ transport: 'main', kind: backend.name })
        } finally {
          await w.end()
        }
      },
      T,
    )

    // Requests on bound channels are the transport's capability (TRANSPORT_CAPABILITIES).
    it.skipIf(!TRANSPORT_CAPABILITIES[backend.name].request)(
      "routes requests to other processes' agents, with fallbacks and breakers as locally",
      async () => {
        const w = world()
        try {
          const [a, b, c] = [await w.open(), await w.open(), await w.open()]
          const meshA = await a.mesh({ shared: 'main', heartbeat: HEARTBEAT, breaker: { failures: 1, coolDown: 60_000 } })
          const meshB = await b.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          const meshC = await c.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          meshB.define('echo', Echo)
          meshC.define('flaky', Flaky)
          const [echo] = await meshB.spawn('echo', { capabilities: [{ name: 'echo', version: '1.0.0', priority: 1 }] })
          const [flaky] = await meshC.spawn('flaky', { capabilities: [{ name: 'echo', version: '1.0.0', priority: 9 }] })
          await until(
            () => meshA.registry.find('echo').length === 2,
            10_000,
            'A to see both agents healthy',
            () => meshA.registry.list(),
          )
          const fallbacks: MeshEvent[] = []
          meshA.events.subscribe((e) => {
            if (e.type === 'fallback' || e.type === 'breaker') fallbacks.push(e)
          })

          // The flaky agent (in C) is tried first (its priority), fails, and the call falls back to B's.
          const reply = await meshA.request<{ n: number }>('echo@^1', { n: 1 }, { timeout: 5_000 })
          expect(reply.payload).toEqual({ n: 1 })
          expect((echo!.agent as Echo).seen).toEqual([{ n: 1 }])
          expect(fallbacks).toMatchObject([
            { type: 'breaker', agent: flaky!.id, to: 'open' },
            { type: 'fallback', agent: flaky!.id, capability: 'echo' },
          ])
          // Its breaker is open in A: the next call goes to B's agent at once.
          await meshA.request('echo', { n: 2 })
          expect((echo!.agent as Echo).seen).toEqual([{ n: 1 }, { n: 2 }])
          expect(meshA.registry.get(flaky!.id)).toMatchObject({ breaker: 'open', remote: true, process: meshC.process })
        } finally {
          await w.end()
        }
      },
      T,
    )

    it(
      'shutdown({ drainMs }): a routed request in flight to an agent of the stopping process is answered there',
      async () => {
        const w = world()
        try {
          const [a, b] = [await w.open(), await w.open()]
          const meshA = await a.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          const meshB = await b.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          meshA.define('slow', Slow)
          await meshA.spawn('slow')
          await until(
            () => meshB.registry.find('slow').length === 1,
            20_000,
            'B to see the agent ready',
            () => meshB.registry.find({ capability: 'slow', minHealth: 'offline' }),
          )
          Slow.runs = 0
          const asked = meshB.request('slow', { n: 1 }, { timeout: 10_000 })
          await until(() => Slow.runs === 1, 10_000, 'the agent to take the request')
          const begun = Date.now()
          const outcome = await a.shutdown({ drainMs: 8_000 })
          expect(outcome).toEqual({ graceful: true, errors: [] })
          expect((await asked).payload).toEqual({ n: 1 })
          expect(Slow.runs).toBe(1)
          expect(Date.now() - begun).toBeLessThan(5_000)
          // Gone from the registry with its process.
          await until(() => ids(meshB, 'slow').length === 0, 5_000, 'the agent to be deregistered')
        } finally {
          await w.end()
        }
      },
      T,
    )

    /**
     * A request in flight to `Hang` in process B (tried first: its priority) while `Quick` in C
     * also offers `job`; `end(b)` then takes B away. Resolves with the caller's reply, how long it
     * took after `end` began, and the fallbacks the caller's mesh reported.
     */
    const fallBack = async (w: ReturnType<typeof world>, b: Orrery, end: (b: Orrery) => Promise<unknown>) => {
      const [r, c] = [await w.open(), await w.open()]
      // A breaker that opens at the first failure: the agent's end is none of its handler's.
      const meshR = await r.mesh({ shared: 'main', heartbeat: HEARTBEAT, breaker: { failures: 1 } })
      const meshB = await b.mesh({ shared: 'main', heartbeat: HEARTBEAT })
      const meshC = await c.mesh({ shared: 'main', heartbeat: HEARTBEAT })
      meshB.define('hang', Hang)
      meshC.define('quick', Quick)
      const [hang] = await meshB.spawn('hang', { capabilities: [{ name: 'job', version: '1.0.0', priority: 9 }] })
      await meshC.spawn('quick', { capabilities: [{ name: 'job', version: '1.0.0', priority: 1 }] })
      await until(
        () => meshR.registry.find('job').length === 2,
        20_000,
        'the caller to see both agents healthy',
        () => meshR.registry.find({ capability: 'job', minHealth: 'offline' }),
      )
      const fallbacks: MeshEvent[] = []
      const breakers: MeshEvent[] = []
      meshR.events.subscribe((e) => {
        if (e.type === 'fallback') fallbacks.push(e)
        if (e.type === 'breaker') breakers.push(e)
      })
      Hang.runs = 0
      Hang.aborted = 0
      // Far longer than the test waits: an answer in time came from the fallback, not the timeout.
      const asked = meshR.request<{ by: string; payload: unknown }>('job', { n: 1 }, { timeout: 30_000 })
      await until(() => Hang.runs === 1, 10_000, 'the hanging agent to take the request')
      const begun = Date.now()
      // Timed to the reply, not to the end of B's stop (which also leaves its groups).
      const answeredAt = asked.then(() => Date.now())
      await end(b)
      const reply = await asked
      return { reply: reply.payload, ms: (await answeredAt) - begun, fallbacks, breakers, hang: hang!.id, process: meshB.process }
    }

    it.skipIf(!TRANSPORT_CAPABILITIES[backend.name].request)(
      'a routed request in flight to an agent of a process that stops without a drain falls back at once to another agent',
      async () => {
        const w = world()
        try {
          const b = await w.open()
          // The stop abandons the running handler: the request is answered CLOSED, and the caller
          // tries the next agent (it used to wait for its timeout, the agent's inbox having no reader).
          const { reply, ms, fallbacks, breakers, hang } = await fallBack(w, b, (b) => b.shutdown())
          expect(breakers).toEqual([])
          expect(reply).toEqual({ by: 'quick', payload: { n: 1 } })
          expect(Hang.aborted).toBe(1)
          expect(fallbacks).toMatchObject([
            { type: 'fallback', agent: hang, capability: 'job', attempt: 1, error: expect.stringMatching(/stopped before it answered/) },
          ])
          expect(ms).toBeLessThan(5_000)
        } finally {
          await w.end()
        }
      },
      T,
    )

    // The broker taken from one process alone: a TCP proxy in front of it (not Kafka's, whose
    // clients connect to the brokers its metadata names).
    it.skipIf(!TRANSPORT_CAPABILITIES[backend.name].request || backend.name === 'kafka')(
      'a routed request in flight to an agent whose process stops beating falls back once the agent is offline',
      async () => {
        const w = world()
        const server = new URL(backend.name === 'redis' ? inject('redisUrl')! : inject('natsUrl')!)
        const proxy = await proxyTo(server.hostname, Number(server.port))
        let b: Orrery | undefined
        try {
          const address = `${server.protocol}//${proxy.address}`
          const main = optionsFor(w.ns).transports!['main']!
          b = await w.open({
            transports: { main: main.kind === 'redis' ? { ...main, url: address } : main.kind === 'nats' ? { ...main, servers: address } : main },
          })
          // Its connection's loss is expected: listened to, so it is not printed.
          b.bus.events.subscribe(() => {})
          // Cut off, B neither beats nor answers: the caller marks its agent offline after 5
          // missed beats (500 ms) and falls back then, not at its timeout.
          const { reply, ms, fallbacks, breakers, hang, process } = await fallBack(w, b, () => proxy.cut())
          expect(breakers).toEqual([])
          expect(reply).toEqual({ by: 'quick', payload: { n: 1 } })
          expect(fallbacks).toMatchObject([
            { type: 'fallback', agent: hang, capability: 'job', attempt: 1, error: `agent ${hang} of process ${process} stopped beating before it answered` },
          ])
          expect(ms).toBeLessThan(5_000)
        } finally {
          // Cut off, B could only wait out its writes' timeouts: it is closed.
          b?.close()
          await w.end()
          await proxy.close()
        }
      },
      T,
    )

    it(
      'a graceful shutdown deregisters at once, long before the liveness deadline',
      async () => {
        const w = world()
        try {
          const [a, b, c] = [await w.open(), await w.open(), await w.open()]
          // Slow deadlines: a deregistration that comes fast was the shutdown's, not the liveness machine's.
          const slow = { interval: 100, deregisterAfter: 30_000 }
          const meshA = await a.mesh({ shared: 'main', heartbeat: slow })
          const meshB = await b.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          const meshC = await c.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          for (const m of [meshA, meshB, meshC]) m.define('echo', Echo)
          await meshB.spawn('echo', { replicas: 2 })
          await meshC.spawn('echo')
          await until(
            () => ids(meshA).length === 3,
            10_000,
            'A to see every agent',
            () => ids(meshA),
          )
          const gone: Array<MeshEvent & { type: 'deregistered' }> = []
          meshA.events.subscribe((e) => {
            if (e.type === 'deregistered') gone.push(e)
          })

          const started = Date.now()
          await meshB.shutdown()
          await until(() => gone.length === 2, 5_000, 'B agents to be deregistered on A')
          const graceful = Date.now() - started
          expect(gone.every((e) => e.reason === 'requested' && e.remote === true && e.process === meshB.process)).toBe(true)
          expect(graceful).toBeLessThan(2_000)

          // C's agent stays: its process still beats.
          await quiet(HEARTBEAT.interval * 6 + HEARTBEAT.deregisterAfter)
          expect(ids(meshA)).toEqual(ids(meshC))
          const [cAgent] = ids(meshC)

          // The Orrery's own graceful stop (its meshes stop at once) deregisters them too.
          const closing = Date.now()
          await c.shutdown()
          await until(() => gone.some((e) => e.agent === cAgent), 5_000, 'C agent to be deregistered on A')
          expect(gone.at(-1)).toMatchObject({ agent: cAgent, reason: 'requested', remote: true, process: meshC.process })
          expect(Date.now() - closing).toBeLessThan(2_000)
          expect(ids(meshA)).toEqual([])
          console.log(`[registry ${backend.name} ${ENGINE}] graceful deregistration seen ${graceful} ms after shutdown() began`)
        } finally {
          await w.end()
        }
      },
      T,
    )

    it(
      "mirrors the rest of a process's agents when this registry refuses one of them, and does not ask for it again",
      async () => {
        const w = world()
        try {
          const a = await w.open()
          const meshA = await a.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          // Another process (of another version, say) whose first agent this registry refuses:
          // its capability version is no semver here. Written by hand on the registry channel.
          const other = await w.open({ bindings: { 'orrery.registry': 'main' } })
          const asked: string[] = []
          other.bus.subscribe<{ t: string; to?: string }>('orrery.registry').subscribe((m: Message<{ t: string; to?: string }>) => {
            if (m.payload.t === 'hello' && m.payload.to !== undefined) asked.push(m.payload.to)
          })
          const p = 'f00df00df00df00d'
          const agent = (id: string, version: string) => ({ id, type: 'echo', capabilities: [{ name: 'echo', version }], tags: [], bulkhead: 0, health: 0 })
          await other.bus.publish('orrery.registry', { v: 1, t: 'register', p, agents: [agent('odd', 'one'), agent('fine', '1.0.0')] })
          await until(
            () => ids(meshA).includes('fine'),
            10_000,
            'A to mirror the agent listed after the refused one',
            () => ids(meshA),
          )
          expect(ids(meshA)).toEqual(['fine'])
          // Its beats list both: the refused one is not unknown, so A asks nothing.
          for (let i = 0; i < 6; i++) {
            await other.bus.publish('orrery.registry', {
              v: 1,
              t: 'beat',
              p,
              agents: [
                ['odd', 0, 0],
                ['fine', 0, 0],
              ],
            })
            await quiet(100)
          }
          expect(asked.filter((to) => to === p)).toEqual([])
          expect(meshA.registry.get('fine')).toMatchObject({ remote: true, process: p, health: 'healthy' })
        } finally {
          await w.end()
        }
      },
      T,
    )

    it(
      'refuses bad `shared` options with INVALID_OPTION naming it, before anything is published',
      async () => {
        const w = world()
        try {
          const watcher = await w.open()
          const watch = await watcher.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          const heard: string[] = []
          watcher.bus.subscribe<{ p: string }>('orrery.registry').subscribe((m: Message<{ p: string }>) => heard.push(m.payload.p))

          const a = await w.open({ transports: { ...optionsFor(w.ns).transports, local: { kind: 'memory' } } })
          const refused = async (options: unknown, words: RegExp) => {
            let error: unknown
            try {
              await a.mesh(options as never)
            } catch (e) {
              error = e
            }
            expect(isOrreryError(error, 'INVALID_OPTION'), String(error)).toBe(true)
            expect((error as { details: Record<string, unknown> }).details['option']).toBe('shared')
            expect((error as Error).message).toMatch(words)
          }
          await refused({ shared: 'nope' }, /shared must name a transport of `transports` \(main, local\)/)
          await refused({ shared: 'local' }, /memory transport/)
          await refused({ shared: 5 }, /shared must be a string/)
          await refused({ shared: '' }, /shared/)
          await refused({ shared: ['main'] }, /shared must be a string/)
          // A plain Orrery has no transport to share on.
          const plain = await Orrery.create()
          w.opened.push(plain)
          await expect(plain.mesh({ shared: 'main' })).rejects.toMatchObject({ code: 'INVALID_OPTION', details: { option: 'shared' } })

          // Nothing was bound or published by the refusals: a good one works, and is the first A says.
          await quiet(300)
          const heardBefore = [...heard]
          const mesh = await a.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          expect(heardBefore).not.toContain(mesh.process)
          await refused({ shared: 'main' }, /runs a shared mesh already/)
          // What the watcher heard of A came after the good call only.
          await until(() => heard.includes(mesh.process!), 10_000, 'the watcher to hear A')
          await mesh.shutdown()
          // Shut down, the Orrery may share a mesh again.
          const again = await a.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          expect(again.process).toBe(mesh.process)
          expect(watch.process).not.toBe(mesh.process)

          // A channel the shared mesh would bind, in use already: refused, naming it.
          const used = await w.open()
          await used.bus.publish('inbox.someone', 'early')
          await expect(used.mesh({ shared: 'main' })).rejects.toMatchObject({
            code: 'INVALID_OPTION',
            message: expect.stringMatching(/channel inbox\.someone is in use already, unbound/),
          })
          // Closed while it joins: refused at once with CLOSED (no wait for the join's timeout).
          const closing = await w.open()
          const joining = closing.mesh({ shared: 'main', heartbeat: HEARTBEAT })
          const closedAt = Date.now()
          closing.close()
          await expect(joining).rejects.toMatchObject({ code: 'CLOSED' })
          expect(Date.now() - closedAt).toBeLessThan(2_000)

          // A binding sending the inboxes elsewhere: refused, naming it.
          const { main } = optionsFor(w.ns).transports!
          const elsewhere = await w.open({ transports: { main: main!, other: main! }, bindings: { 'inbox.*': 'other' } })
          await expect(elsewhere.mesh({ shared: 'main' })).rejects.toMatchObject({
            code: 'INVALID_OPTION',
            message: expect.stringMatching(/`bindings` send it to other/),
          })
        } finally {
          await w.end()
        }
      },
      T,
    )
  })
}
