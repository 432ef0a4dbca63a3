/**
 * Replicas on worker threads (`mesh.autoscale(type, { worker })`, native engine): each replica is
 * a worker thread serving one agent, whose inbox is in the shared core. A burst grows the type
 * onto more threads (requests answered from several), it shrinks back by draining a thread, a
 * thread that crashes is started again under its id and its message redelivered, and shutdown
 * ends every thread. Bad options are refused with their codes, on both engines.
 */
import { describe, expect, it } from 'vitest'

import { isOrreryError, Orrery, type AutoscaleEvent, type MeshEvent } from '../ts/node.js'
import { ENGINE, IN_BROWSER } from './engine.js'

const fixture = new URL('./fixtures/autoscale-worker.mjs', import.meta.url)

type Crunched = { n: number; thread: number; agent: string; attempt: number }

/** The types of `events`. */
const kindsOf = (events: readonly MeshEvent[]) => events.map((e) => e.type)

/** Waits (real time: threads run on their own) until `done()` holds. */
async function until(done: () => boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/**
 * An Orrery whose mesh shares its registry with worker threads, beating every 100 ms
 * (`heartbeat` on top of that), its events recorded.
 */
async function threadsMesh(options: { heartbeat?: { deregisterAfter?: number }; breaker?: { failures?: number } } = {}) {
  const orrery = await Orrery.create()
  const mesh = await orrery.mesh({ threads: true, ...options, heartbeat: { interval: 100, ...options.heartbeat } })
  const events: MeshEvent[] = []
  mesh.events.subscribe((e) => events.push(e))
  return { orrery, mesh, events }
}

describe(`replicas on worker threads (${ENGINE})`, { timeout: 60_000 }, () => {
  it.runIf(ENGINE === 'native')(
    'a burst grows the type onto more threads, each answering; idle, it shrinks by draining a thread; shutdown ends them all',
    async () => {
      const { orrery, mesh, events } = await threadsMesh()
      const scaler = await mesh.autoscale('cruncher', { min: 1, max: 2, targetLag: 2, interval: 50, cooldown: 300, worker: fixture })
      expect(scaler.replicas).toBe(1)
      const first = events.find((e) => e.type === 'started') as { agent: string }
      // Resolved once its agent is healthy in this thread's registry (a remote agent, of its thread's mesh).
      expect(mesh.registry.get(first.agent)).toMatchObject({ remote: true, type: 'cruncher', health: 'healthy' })
      expect(mesh.agents()).toEqual([]) // it runs on its thread, not here

      // A burst of 20 requests of 30 ms of CPU each grows the type onto a second thread...
      const request = (n: number) => mesh.request<Crunched>('crunch', { n, ms: 30 }, { timeout: 30_000, strategy: 'round-robin' }).then((m) => m.payload)
      const burst = Array.from({ length: 20 }, (_, n) => request(n))
      await until(() => events.some((e) => e.type === 'scale-up' && e.from > 0), 'a scale-up')
      // (the first scale-up started the first replica, 0 to 1)
      const up = events.filter((e): e is AutoscaleEvent => e.type === 'scale-up' && e.from > 0)
      expect(up[0]).toMatchObject({ agentType: 'cruncher', from: 1, to: 2 })
      const second = up[0]!.agents[0]!
      await until(() => mesh.registry.get(second)?.health === 'healthy', 'the second replica to be healthy here')
      // ...and what is routed from then on is answered by both threads, none of them this one.
      const replies = await Promise.all([...burst, ...Array.from({ length: 20 }, (_, n) => request(20 + n))])
      expect(replies.map((r) => r.n)).toEqual(Array.from({ length: 40 }, (_, n) => n))
      const threads = new Set(replies.map((r) => r.thread))
      expect(threads.size).toBe(2)
      expect(threads.has(0)).toBe(false)
      expect(new Set(replies.map((r) => r.agent))).toEqual(new Set([first.agent, second]))

      // Idle past the cooldown: one thread drains and ends.
      await until(() => events.some((e) => e.type === 'scale-down'), 'a scale-down')
      const down = events.find((e): e is AutoscaleEvent => e.type === 'scale-down')!
      await until(() => events.some((e) => e.type === 'stopped' && e.agent === down.agents[0]), 'the drained thread to stop')
      await until(() => mesh.registry.get(down.agents[0]!) === undefined, 'the drained replica to leave the registry')
      expect(scaler.replicas).toBe(1)
      // Still served by the one left.
      expect((await mesh.request<Crunched>('crunch', { n: 99 }, { timeout: 10_000 })).payload.n).toBe(99)

      // A new autoscaler of the type counts the replica an earlier one left running: it starts none.
      scaler.stop()
      const startedBefore = events.filter((e) => e.type === 'started').length
      const again = await mesh.autoscale('cruncher', { min: 1, max: 1, targetLag: 10, interval: 50, worker: fixture })
      expect(again.replicas).toBe(1)
      expect(events.filter((e) => e.type === 'started').length).toBe(startedBefore)

      await mesh.shutdown()
      const stopped = events.filter((e) => e.type === 'stopped').map((e) => (e as { agent: string }).agent)
      expect(new Set(stopped)).toEqual(new Set([first.agent, ...up.flatMap((e) => e.agents)]))
      expect(events.some((e) => e.type === 'crashed')).toBe(false)
      orrery.close()
    },
  )

  it.runIf(ENGINE === 'native')(
    'a replica whose agent crashes ends its thread; it is started again under its id and the message it held is redelivered',
    async () => {
      const { orrery, mesh, events } = await threadsMesh()
      await mesh.autoscale('cruncher', { min: 1, max: 1, targetLag: 10, interval: 50, worker: fixture })
      const id = (events.find((e) => e.type === 'started') as { agent: string }).agent
      await until(() => mesh.registry.get(id) !== undefined, 'the replica to be registered here')
      const crunched: Crunched[] = []
      orrery.bus.subscribe<Crunched>('crunched').subscribe((m) => crunched.push(m.payload))
      await mesh.send('crunch', { n: 7, crash: true, report: true })
      await until(() => crunched.length > 0, 'the message to be handled again')
      expect(crunched).toEqual([expect.objectContaining({ n: 7, agent: id, attempt: 2 })])
      expect(events.filter((e) => e.type === 'crashed').map((e) => (e as { agent: string }).agent)).toEqual([id])
      // Its thread's "ready" may come after the answer (a message between threads, not the core's channel).
      await until(() => events.filter((e) => e.type === 'started').length === 2, 'the new thread to be started')
      expect(events.filter((e) => e.type === 'started').map((e) => (e as { agent: string }).agent)).toEqual([id, id])
      await mesh.shutdown()
      orrery.close()
    },
  )

  it.runIf(ENGINE === 'native')(
    'a replica whose handler holds its thread past the heartbeat deadline is not failed over: it answers once, and no breaker opens',
    async () => {
      // Offline after 5 missed beats of 100 ms: 500 ms.
      const { orrery, mesh, events } = await threadsMesh({ breaker: { failures: 1 } })
      await mesh.autoscale('cruncher', { min: 2, max: 2, targetLag: 10, interval: 50, worker: fixture })
      const ids = events.filter((e) => e.type === 'started').map((e) => (e as { agent: string }).agent)
      await until(() => ids.every((id) => mesh.registry.get(id)?.health === 'healthy'), 'both replicas to be healthy here')
      // 1.5 s of CPU: its thread beats no more meanwhile, and this thread sees it go offline.
      const reply = await mesh.request<Crunched>('crunch', { n: 1, ms: 1_500 }, { timeout: 10_000 })
      const busy = reply.payload.agent
      expect(events.some((e) => e.type === 'health' && e.to === 'offline' && e.agent === busy)).toBe(true)
      expect(reply.payload.attempt).toBe(1)
      expect(events.filter((e) => e.type === 'fallback' || e.type === 'retry' || e.type === 'breaker')).toEqual([])
      // Beating again (its own mesh may have restarted it, as it does an agent that misses its
      // beats), it is routed to again.
      await until(() => mesh.registry.get(busy)?.health === 'healthy', 'the busy replica to be healthy again')
      const again = await Promise.all([1, 2, 3, 4].map((n) => mesh.request<Crunched>('crunch', { n }, { timeout: 10_000, strategy: 'round-robin' })))
      expect(again.some((r) => r.payload.agent === busy)).toBe(true)
      await mesh.shutdown()
      orrery.close()
    },
  )

  it.runIf(ENGINE === 'native')(
    'a replica whose thread is wedged for good is ended past its heartbeat deadline; its next life answers what it held',
    async () => {
      // Offline after 500 ms without a beat, deregistered 300 ms later: its thread is ended after 800 ms silent.
      const { orrery, mesh, events } = await threadsMesh({ heartbeat: { deregisterAfter: 300 } })
      await mesh.autoscale('cruncher', { min: 1, max: 1, targetLag: 10, interval: 50, worker: fixture })
      const id = (events.find((e) => e.type === 'started') as { agent: string }).agent
      await until(() => mesh.registry.get(id)?.health === 'healthy', 'the replica to be healthy here')
      const reply = await mesh.request<Crunched>('crunch', { n: 3, wedge: id }, { timeout: 20_000 })
      expect(reply.payload).toMatchObject({ n: 3, agent: id })
      expect(events.find((e) => e.type === 'crashed')).toMatchObject({
        agent: id,
        error: 'TIMEOUT',
        reason: expect.stringMatching(/past its heartbeat deadline \(800 ms without a turn of its event loop\)/),
      })
      expect(events.filter((e) => e.type === 'fallback' || e.type === 'retry')).toEqual([])
      await mesh.shutdown()
      orrery.close()
    },
  )

  it.runIf(ENGINE === 'native')('a drained replica (out of the registry) that wedges is ended too; its next life finishes its inbox', async () => {
    const { orrery, mesh, events } = await threadsMesh({ heartbeat: { deregisterAfter: 300 } })
    const crunched: Crunched[] = []
    orrery.bus.subscribe<Crunched>('crunched').subscribe((m) => crunched.push(m.payload))
    // Straight into one replica's inbox, as routing would put it.
    const into = (id: string, payload: Record<string, unknown>) => orrery.bus.publish(`inbox.${id}`, payload, { headers: { 'orrery-capability': 'crunch' } })
    const scaler = await mesh.autoscale('cruncher', { min: 1, max: 2, targetLag: 5, interval: 50, cooldown: 300, worker: fixture })
    const first = (events.find((e) => e.type === 'started') as { agent: string }).agent
    const grown = new Promise<string>((resolve) => scaler.events.subscribe((e) => e.type === 'scale-up' && resolve(e.agents[0]!)))
    // A backlog of 8 (800 ms of work) grows it to two replicas.
    for (let n = 0; n < 8; n++) await mesh.send('crunch', { n, hold: 100 })
    const second = await grown
    // Once the first replica is done with that, it holds 2 (a wait, then a wedge) and the second
    // 3 (each 2 s): 5 in all, one replica's worth, so the first (the less loaded) is drained while
    // it waits, and wedges drained.
    await into(first, { n: 100, hold: 1_000 })
    await into(first, { n: 101, wedge: first, report: true })
    for (let n = 200; n < 203; n++) await into(second, { n, hold: 2_000 })
    await until(() => crunched.some((c) => c.n === 101), 'the wedged message to be handled by a next life', 30_000)
    const drained = events.find((e) => e.type === 'scale-down') as AutoscaleEvent | undefined
    expect(drained?.agents).toEqual([first])
    expect(events.find((e) => e.type === 'crashed')).toMatchObject({
      agent: first,
      error: 'TIMEOUT',
      reason: expect.stringMatching(/past its heartbeat deadline/),
    })
    expect(crunched.find((c) => c.n === 101)?.agent).toBe(first)
    await mesh.shutdown()
    orrery.close()
  })

  it.runIf(ENGINE === 'native')(
    "a message that holds every life's thread is ended in each, even before the next life says it is ready, until it is dead-lettered",
    async () => {
      const { orrery, mesh, events } = await threadsMesh({ heartbeat: { deregisterAfter: 300 } })
      // Two deliveries of a message at most (retry.attempts + 2).
      await mesh.autoscale('cruncher', { min: 1, max: 1, targetLag: 10, interval: 50, worker: fixture, spawn: { retry: { attempts: 0 } } })
      const id = (events.find((e) => e.type === 'started') as { agent: string }).agent
      await until(() => mesh.registry.get(id)?.health === 'healthy', 'the replica to be healthy here')
      const dead: unknown[] = []
      orrery.bus.subscribe(`inbox.${id}.dead-letter`, { from: 'earliest' }).subscribe((m) => dead.push(m.payload))
      await mesh.send('crunch', { n: 1, stuck: true })
      await until(() => events.some((e) => e.type === 'crashed'), 'the first life to be ended')
      expect(events.find((e) => e.type === 'crashed')).toMatchObject({ agent: id, error: 'TIMEOUT' })
      // The next life takes it again as its inbox is read, before it says it is ready: ended too
      // (not at the 30 s start timeout), and the message, delivered twice, is dead-lettered: the
      // life after answers.
      await until(() => dead.length > 0, 'the message to be dead-lettered', 15_000)
      expect(dead).toEqual([{ n: 1, stuck: true }])
      await until(() => mesh.registry.get(id)?.health === 'healthy', 'the third life to be healthy here')
      const reply = await mesh.request<Crunched>('crunch', { n: 2 }, { timeout: 15_000 })
      expect(reply.payload).toMatchObject({ n: 2, agent: id })
      await mesh.shutdown()
      orrery.close()
    },
  )

  it.runIf(ENGINE === 'native')('a stall of this thread longer than the deadline ends no healthy thread', async () => {
    const { orrery, mesh, events } = await threadsMesh({ heartbeat: { deregisterAfter: 300 } })
    await mesh.autoscale('cruncher', { min: 1, max: 1, targetLag: 10, interval: 50, worker: fixture })
    const id = (events.find((e) => e.type === 'started') as { agent: string }).agent
    await until(() => mesh.registry.get(id)?.health === 'healthy', 'the replica to be healthy here')
    // This thread's loop is held for 2 s (its thread's signals and beats queue meanwhile).
    const end = Date.now() + 2_000
    while (Date.now() < end) {}
    const reply = await mesh.request<Crunched>('crunch', { n: 4 }, { timeout: 10_000 })
    expect(reply.payload).toMatchObject({ n: 4, agent: id })
    await new Promise((resolve) => setTimeout(resolve, 500))
    expect(kindsOf(events).filter((t) => t === 'crashed' || t === 'started')).toEqual(['started'])
    await mesh.shutdown()
    orrery.close()
  })

  it.runIf(ENGINE === 'native')(
    'a call from one thread to a busy agent on another waits for it (not failed over at its missed beats); one whose thread ends for good fails at once',
    async () => {
      // Offline after 500 ms without a beat; its thread ended after 3 s.
      const { orrery, mesh, events } = await threadsMesh({ heartbeat: { deregisterAfter: 2_500 } })
      const crunchers = await mesh.autoscale('cruncher', { min: 1, max: 1, targetLag: 10, interval: 50, worker: fixture })
      await mesh.autoscale('relayer', { min: 1, max: 1, targetLag: 10, interval: 50, worker: fixture })
      const [cruncher, relayer] = events.filter((e) => e.type === 'started').map((e) => (e as { agent: string }).agent)
      await until(() => [cruncher!, relayer!].every((id) => mesh.registry.get(id)?.health === 'healthy'), 'both replicas to be healthy here')
      type Relayed = { ok?: Crunched; code?: string; message?: string; ms: number }
      /**
       * Relays until the relayer's thread knows the cruncher healthy (its registry hears of it on
       * its own: unknown, or known and not healthy yet, it is refused).
       */
      const reached = async () => {
        for (let n = 100; ; n++) {
          const relayed = await mesh.request<Relayed>('relay', { n }, { timeout: 20_000 })
          if (relayed.payload.ok) return
          expect(relayed.payload).toMatchObject({ code: 'NO_RESPONDER', message: expect.stringMatching(/offers? crunch/) })
          await new Promise((resolve) => setTimeout(resolve, 50))
        }
      }
      await reached()
      // 1.5 s of CPU on the cruncher's thread: the relayer's thread sees it go offline, and waits.
      const busy = await mesh.request<Relayed>('relay', { n: 1, ms: 1_500 }, { timeout: 20_000 })
      expect(busy.payload.ok).toMatchObject({ n: 1, agent: cruncher, attempt: 1 })
      expect(events.some((e) => e.type === 'health' && e.to === 'offline' && e.agent === cruncher)).toBe(true)
      // Beating again (its own mesh may have restarted it), it is reached from the relayer's thread again.
      await until(() => mesh.registry.get(cruncher!)?.health === 'healthy', 'the cruncher to be healthy again')
      await reached()
      // Its autoscaler stopped, the cruncher is not brought back: stuck, its thread is ended, and
      // the relayer's call fails then, not at its 20 s timeout.
      crunchers.stop()
      const stuck = await mesh.request<Relayed>('relay', { n: 2, stuck: true }, { timeout: 20_000 })
      expect(stuck.payload).toMatchObject({ code: 'NO_RESPONDER', message: expect.stringContaining(cruncher!) })
      expect(stuck.payload.ms).toBeLessThan(10_000)
      // Its end: TIMEOUT when ended stuck; AGENT_FAILED when its own mesh, under load, counted the
      // busy handler's missed beats as a crash only now, so late that it ended for good first.
      const ends = events.filter((e) => e.type === 'crashed' && e.agent === cruncher)
      expect(ends.at(-1)).toMatchObject({ error: expect.stringMatching(/^(TIMEOUT|AGENT_FAILED)$/) })
      await mesh.shutdown()
      orrery.close()
    },
  )

  it.runIf(ENGINE === 'native')('orrery.close() ends the threads at once, and nothing is reported after', async () => {
    const ports = () => process.getActiveResourcesInfo().filter((r) => r === 'MessagePort').length
    const before = ports()
    const orrery = await Orrery.create()
    const mesh = await orrery.mesh({ threads: true })
    const events: MeshEvent[] = []
    mesh.events.subscribe((e) => events.push(e))
    await mesh.autoscale('cruncher', { min: 2, max: 2, targetLag: 1, worker: fixture })
    expect(ports()).toBe(before + 2)
    const seen = events.length
    orrery.close()
    await until(() => ports() === before, 'the threads to end')
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(events.length).toBe(seen)
  })

  it('bad options are refused with their codes; a worker module without the type rejects, leaving no thread', async () => {
    const orrery = await Orrery.create()
    const code = async (call: () => Promise<unknown>) =>
      call().then(
        () => 'no error',
        (e: unknown) => (isOrreryError(e) ? `${e.code} ${String(e.details['option'] ?? e.details['argument'] ?? '')}`.trim() : String(e)),
      )
    if (ENGINE !== 'native') {
      // One thread: nothing to share the registry with; in a page, no worker threads at all.
      expect(await code(() => orrery.mesh({ threads: true }))).toBe('ENGINE_UNAVAILABLE threads')
      const mesh = await orrery.mesh()
      expect(await code(() => mesh.autoscale('cruncher', { min: 1, max: 1, targetLag: 1, worker: fixture }))).toBe(
        IN_BROWSER ? 'UNSUPPORTED worker' : 'INVALID_OPTION worker',
      )
      orrery.close()
      return
    }
    expect(await code(() => orrery.mesh({ threads: 'yes' as never }))).toBe('INVALID_OPTION threads')
    expect(await code(() => orrery.mesh({ threads: true, shared: 'main' }))).toBe('INVALID_OPTION threads')
    const plain = await orrery.mesh()
    expect(await code(() => plain.autoscale('cruncher', { min: 1, max: 2, targetLag: 1, worker: fixture }))).toBe('INVALID_OPTION worker')
    await plain.shutdown()
    const mesh = await orrery.mesh({ threads: true })
    expect(await code(() => orrery.mesh({ threads: true }))).toBe('INVALID_OPTION threads') // one per Orrery
    expect(await code(() => mesh.autoscale('cruncher', { min: 1, max: 2, targetLag: 1, worker: 42 as never }))).toBe('INVALID_OPTION worker')
    expect(await code(() => mesh.autoscale('cruncher', { min: 1, max: 2, targetLag: 1, worker: '' }))).toBe('INVALID_OPTION worker')
    // Node takes a path that starts with / or ./, or a URL: a bare name is refused at once.
    expect(await code(() => mesh.autoscale('cruncher', { min: 1, max: 2, targetLag: 1, worker: 'autoscale-worker.mjs' }))).toBe('INVALID_OPTION worker')
    expect(await code(() => mesh.autoscale('cruncher', { min: 1, max: 2, targetLag: 1, worker: fixture, spawn: { config: { at: () => 1 } } }))).toBe(
      'INVALID_OPTION spawn',
    )
    expect(await code(() => mesh.autoscale('cruncher', { min: 1, max: 2, targetLag: 1, worker: fixture, spawn: { retry: { isFatal: () => true } } }))).toBe(
      'INVALID_OPTION spawn.retry',
    )
    expect(await code(() => mesh.autoscale('cruncher', { min: 1, max: 2, targetLag: 1, worker: fixture, spawn: { id: 'x' } as never }))).toBe(
      'INVALID_OPTION spawn.id',
    )
    // The module defines no such type: the thread's spawn refuses it, and autoscale rejects with that.
    const events: MeshEvent[] = []
    mesh.events.subscribe((e) => events.push(e))
    expect(await code(() => mesh.autoscale('missing', { min: 1, max: 2, targetLag: 1, worker: fixture }))).toBe('UNKNOWN_AGENT_TYPE')
    // A module that does not load: AGENT_FAILED.
    expect(
      await code(() => mesh.autoscale('cruncher', { min: 1, max: 2, targetLag: 1, worker: new URL('./fixtures/no-such-module.mjs', import.meta.url) })),
    ).toBe('AGENT_FAILED')
    expect(events.filter((e) => e.type === 'started')).toEqual([])
    // Still usable: the type autoscales once the options are right.
    const scaler = await mesh.autoscale('cruncher', { min: 1, max: 1, targetLag: 1, worker: fixture })
    expect(scaler.replicas).toBe(1)
    await mesh.shutdown()
    // serveAgents outside a thread an autoscaler started (the Node entry's).
    const { serveAgents } = await import('../ts/node.js')
    expect(await code(() => serveAgents(() => {}))).toBe('INVALID_ARGUMENT workerData')
    orrery.close()
  })
})
