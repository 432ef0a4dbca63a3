/**
 * A broker taken away from one Orrery while it works, through a TCP proxy in front of the shared
 * test server (proxy.ts: the server stays up for every other test): a shutdown during the outage
 * ends within its bound and says what it could not do; a request made while the server is down
 * fails typed; the outage and its end are reported once each on `bus.events`. Redis and NATS, both
 * engines; Node only.
 */
import { afterEach, describe, expect, inject, it, vi } from 'vitest'

import { type BusEvent, isOrreryError, Orrery, OrreryError, type TransportOptions } from '../../ts/node.js'
import { runnerLink } from '../../ts/bus/bus.js'
import type { NatsDriver } from '../../ts/transports/nats.js'
import { ENGINE, IN_BROWSER } from '../engine.js'
import { poll, until, withTimeout } from './backends.js'
import { proxyTo, type TcpProxy } from './proxy.js'

type Env = Record<string, string | undefined>
const env: Env = (globalThis as { process?: { env: Env } }).process?.env ?? {}
const skip = IN_BROWSER ? 'a browser page cannot reach the brokers' : env['ORRERY_SERVERS'] === 'none' ? 'ORRERY_SERVERS=none' : undefined

const RUN = `out-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}-${ENGINE}`
let runs = 0

const proxies: TcpProxy[] = []
const opened: Orrery[] = []
afterEach(async () => {
  for (const o of opened.splice(0)) o.close()
  for (const p of proxies.splice(0)) await p.close()
})

const brokers = [
  {
    name: 'redis' as const,
    url: () => inject('redisUrl'),
    options: (address: string, run: string): TransportOptions => ({ kind: 'redis', url: `redis://${address}`, keyPrefix: `${run}:`, publishTimeoutMs: 1_000 }),
  },
  {
    name: 'nats' as const,
    url: () => inject('natsUrl'),
    options: (address: string, run: string): TransportOptions => ({ kind: 'nats', servers: `nats://${address}`, prefix: run, publishTimeoutMs: 1_000 }),
  },
]

/** An Orrery binding every channel to `broker` through a proxy of its own. */
async function behindProxy(broker: (typeof brokers)[number]): Promise<{ o: Orrery; proxy: TcpProxy; run: string }> {
  const target = new URL(
    broker
      .url()!
      .replace(/^nats:/, 'http:')
      .replace(/^redis:/, 'http:'),
  )
  const proxy = await proxyTo(target.hostname, Number(target.port))
  proxies.push(proxy)
  const run = `${RUN}-${++runs}`
  const o = await Orrery.create({ engine: ENGINE, transports: { main: broker.options(proxy.address, run) }, bindings: { '*': 'main' } })
  opened.push(o)
  return { o, proxy, run }
}

/** What `o`'s NATS driver keeps of deliveries: held for an answer, and ack subjects on its wire (the native engine's). */
function keptBy(o: Orrery): { held: number; wire: number } {
  const driver = runnerLink(o.bus).transports!.transportNamed('main')!.driver as unknown as Pick<NatsDriver, 'wire'> & {
    held: Map<number, Map<string, unknown>>
  }
  return { held: [...driver.held.values()].reduce((n, m) => n + m.size, 0), wire: driver.wire?.kept() ?? 0 }
}

/** A group member that has read one message, so the group is open and read. */
async function readingGroup(o: Orrery): Promise<void> {
  const got: number[] = []
  o.bus.group<number>('jobs', 'g', { from: 'earliest' }).consume((d) => void got.push(d.message.payload))
  await o.bus.publish('jobs', 1)
  await until(() => got.length >= 1, 10_000, 'the first job')
}

describe.skipIf(skip !== undefined)(`a broker outage (${ENGINE})${skip ? ` [skipped: ${skip}]` : ''}`, () => {
  it("a broker client's raw error reaches transport-error as an OrreryError, the raw one its cause", async () => {
    const { createClient } = await import('redis')
    const raw = createClient({ url: inject('redisUrl')! })
    raw.on('error', () => {})
    await raw.connect()
    const run = `${RUN}-${++runs}`
    try {
      // The channel's stream key holds a string: the broker refuses the group's XGROUP CREATE (WRONGTYPE).
      await raw.set(`${run}:ch:jobs`, 'not a stream')
      const o = await Orrery.create({
        engine: ENGINE,
        transports: { main: brokers[0]!.options(new URL(inject('redisUrl')!).host, run) },
        bindings: { '*': 'main' },
      })
      opened.push(o)
      const errors: OrreryError[] = []
      o.bus.events.subscribe((e) => {
        if (e.type === 'transport-error') errors.push(e.error)
      })
      o.bus.group('jobs', 'g').consume(() => {})
      await until(() => errors.length > 0, 5_000, 'the refusal reported')
      expect(errors[0]).toBeInstanceOf(OrreryError)
      expect(errors[0]!.code).toBe('TRANSPORT_UNAVAILABLE')
      expect(errors[0]!.message).toMatch(/WRONGTYPE/)
      expect(errors[0]!.cause).toBeInstanceOf(Error)
      expect(errors[0]!.cause).not.toBeInstanceOf(OrreryError)
    } finally {
      await raw.del(`${run}:ch:jobs`)
      raw.destroy()
    }
  })

  it('a subscriber whose stream the broker refuses fails typed, naming the channel, as a latest one does when its start is refused; the Orrery goes on', async () => {
    const { createClient } = await import('redis')
    const raw = createClient({ url: inject('redisUrl')! })
    raw.on('error', () => {})
    await raw.connect()
    const run = `${RUN}-${++runs}`
    const key = `${run}:ch:feed`
    try {
      await raw.set(key, 'not a stream')
      const o = await Orrery.create({
        engine: ENGINE,
        transports: { main: brokers[0]!.options(new URL(inject('redisUrl')!).host, run) },
        bindings: { '*': 'main' },
      })
      opened.push(o)
      o.bus.events.subscribe(() => {})
      const failure = (from: 'earliest' | 'latest') =>
        new Promise<unknown>((resolve) => {
          o.bus.subscribe('feed', { from }).subscribe({ error: resolve, complete: () => resolve('completed') })
        })
      const typed = (error: unknown) => {
        expect(error).toBeInstanceOf(OrreryError)
        expect((error as OrreryError).code).toBe('TRANSPORT_UNAVAILABLE')
        expect((error as OrreryError).message).toMatch(/channel feed.*WRONGTYPE/)
        expect((error as OrreryError).details).toMatchObject({ transport: 'main', channel: 'feed' })
      }
      // The history cannot be read: the subscriber fails.
      typed(await withTimeout(failure('earliest'), 5_000, 'the earliest subscriber to fail'))
      // The next subscriber tries again, and reads once the key is a stream.
      await raw.del(key)
      const got: number[] = []
      o.bus.subscribe<number>('feed', { from: 'earliest' }).subscribe((m) => void got.push(m.payload))
      await o.bus.publish('feed', 1)
      await until(() => got.length >= 1, 5_000, 'the first message')
      // Where the stream ends cannot be read: a latest subscriber fails rather than wait for ever.
      await raw.del(key)
      await raw.set(key, 'not a stream')
      typed(await withTimeout(failure('latest'), 5_000, 'the latest subscriber to fail'))
      // The Orrery goes on.
      const other: number[] = []
      o.bus.subscribe<number>('other', { from: 'earliest' }).subscribe((m) => void other.push(m.payload))
      await o.bus.publish('other', 2)
      await until(() => other.length >= 1, 5_000, 'a message on another channel')
    } finally {
      await raw.del(key)
      raw.destroy()
    }
  })

  for (const broker of brokers)
    for (const group of [undefined, 'g'])
      it(`on ${broker.name}, a ${group === undefined ? 'responder' : 'group responder'} whose first reads an outage cuts answers once the server is back, and no raw error reaches it`, async () => {
        const { o, proxy } = await behindProxy(broker)
        const events: BusEvent[] = []
        o.bus.events.subscribe((e) => void events.push(e))
        // Held, then cut: the first reads (a mirror's history and the subscribe's marker; a group's
        // XGROUP CREATE) are sent and still unanswered when their connection drops.
        proxy.hold()
        o.bus.respond<number, number>('q', (r) => r.payload + 1, group === undefined ? {} : { group })
        await new Promise((r) => setTimeout(r, 300))
        await proxy.cut()
        await until(() => events.some((e) => e.type === 'transport-error'), 5_000, 'the outage reported')
        await new Promise((r) => setTimeout(r, 500))
        await proxy.restore()
        await until(() => events.some((e) => e.type === 'transport-restored'), 10_000, 'the end of the outage reported')
        const reply = await o.bus.request<number>('q', 1, { timeout: 5_000 })
        expect(reply.payload).toBe(2)
        expect(events.filter((e) => e.type === 'subscriber-error')).toEqual([])
        for (const e of events)
          if (e.type === 'transport-error') {
            expect(e.error).toBeInstanceOf(OrreryError)
            expect(e.error.details).toMatchObject({ transport: 'main', outage: true })
          }
        expect(events.filter((e) => e.type === 'transport-error')).toHaveLength(1)
      })

  for (const broker of brokers) {
    describe(broker.name, () => {
      it('shutdown while the server is down ends within its bound, closes everything and says what it could not do', async () => {
        const { o, proxy } = await behindProxy(broker)
        await readingGroup(o)
        // One held by a handler that never ends: the stop has something to hand back.
        const held: number[] = []
        o.bus.group<number>('held', 'h', { from: 'earliest' }).consume((d) => {
          held.push(d.message.payload)
          return new Promise<void>(() => {})
        })
        await o.bus.publish('held', 7)
        await until(() => held.length >= 1, 10_000, 'the held job')
        await proxy.cut()
        const started = Date.now()
        const outcome = await o.shutdown()
        const took = Date.now() - started
        // publishTimeoutMs (1 s) for the hand-back and the writes, and a little more.
        expect(took, `${took} ms`).toBeLessThan(5_000)
        expect(outcome.graceful).toBe(false)
        expect(outcome.errors.length).toBeGreaterThan(0)
        for (const e of outcome.errors) {
          expect(isOrreryError(e, 'TRANSPORT_UNAVAILABLE'), String(e)).toBe(true)
          expect(e.details['transport']).toBe('main')
        }
        // Closed: nothing more is taken.
        await expect(o.bus.publish('jobs', 2)).rejects.toMatchObject({ code: 'CLOSED' })
        // The same outcome again (shutdown is idempotent).
        expect(await o.shutdown()).toBe(outcome)
      })

      it("a process's first request while the server is down fails typed, and closing then reports nothing", async () => {
        const { o, proxy } = await behindProxy(broker)
        const events: BusEvent[] = []
        o.bus.events.subscribe((e) => void events.push(e))
        o.bus.respond<number, number>('q', (r) => r.payload + 1)
        await proxy.cut()
        for (const timeout of [500, 5_000]) {
          const started = Date.now()
          const error = await o.bus.request('q2', 1, { timeout }).then(
            () => undefined,
            (e: unknown) => e,
          )
          // TIMEOUT at the request's timeout, or TRANSPORT_UNAVAILABLE once publishTimeoutMs (1 s) has passed.
          expect(isOrreryError(error, 'TIMEOUT') || isOrreryError(error, 'TRANSPORT_UNAVAILABLE'), String(error)).toBe(true)
          expect(Date.now() - started).toBeLessThan(timeout + 3_000)
        }
        const before = events.length
        // What the close cuts (the responder's mirror still opening) is the bus's own stop, not a
        // subscriber's failure (after the close nobody listens to the events, so it would be printed).
        const printed = vi.spyOn(console, 'error').mockImplementation(() => {})
        try {
          o.close()
          await new Promise((r) => setTimeout(r, 500))
          expect(printed.mock.calls.map((c) => String(c[0]))).toEqual([])
        } finally {
          printed.mockRestore()
        }
        expect(events.slice(before)).toEqual([])
      })

      it('an outage while a group member reads is reported once when it begins and once when it ends', async () => {
        const { o, proxy } = await behindProxy(broker)
        const events: BusEvent[] = []
        o.bus.events.subscribe((e) => void events.push(e))
        const got: number[] = []
        o.bus.group<number>('jobs', 'g', { from: 'earliest' }).consume((d) => void got.push(d.message.payload))
        await o.bus.publish('jobs', 1)
        await until(() => got.length >= 1, 10_000, 'the first job')
        // Its ack written (one still in flight at the cut would fail after publishTimeoutMs, and be reported too).
        await new Promise((r) => setTimeout(r, 300))
        await proxy.cut()
        await until(() => events.some((e) => e.type === 'transport-error'), 5_000, 'the outage reported')
        // The client retries many times meanwhile: still one event.
        await new Promise((r) => setTimeout(r, 2_000))
        const errors = events.filter((e): e is Extract<BusEvent, { type: 'transport-error' }> => e.type === 'transport-error')
        expect(errors.map((e) => String((e as { error: unknown }).error))).toEqual([expect.any(String)])
        // An OrreryError by its type: its code and details read without a cast.
        const error = errors[0]!.error
        expect(error.code).toBe('TRANSPORT_UNAVAILABLE')
        expect(error.details).toMatchObject({ transport: 'main', outage: true })
        await proxy.restore()
        await until(() => events.some((e) => e.type === 'transport-restored'), 10_000, 'the end of the outage reported')
        const restored = events.filter((e) => e.type === 'transport-restored')
        expect(restored).toHaveLength(1)
        expect(restored[0]).toMatchObject({ transport: 'main' })
        expect((restored[0] as { downMs: number }).downMs).toBeGreaterThanOrEqual(1_500)
        // And the group reads on.
        await o.bus.publish('jobs', 2)
        await until(() => got.includes(2), 10_000, 'a job after the outage')
        expect(events.filter((e) => e.type === 'transport-error')).toHaveLength(1)
      })

      // Cut before the group is made, or while its opening waits for the server.
      for (const when of ['before', 'while'] as const)
        it(`a group made while the server is unreachable (cut ${when} it opens) is opened once it is back, reads and acks`, { timeout: 60_000 }, async () => {
          const { o, proxy, run } = await behindProxy(broker)
          const events: BusEvent[] = []
          o.bus.events.subscribe((e) => void events.push(e))
          if (when === 'before') await proxy.cut()
          else proxy.hold()
          const got: number[] = []
          o.bus.group<number>('late', 'g', { from: 'earliest' }).consume((d) => void got.push(d.message.payload))
          if (when === 'while') {
            await new Promise((r) => setTimeout(r, 300))
            await proxy.cut()
          }
          // Longer than nats.js's own timeout (5 s): NATS asks again after it, as node-redis keeps
          // its commands for the reconnection. The group is not open meanwhile; attached waits,
          // or, if it settled, says why, typed.
          const attached = o.bus.attached('late').then(
            () => 'open',
            (error: unknown) => error,
          )
          await new Promise((r) => setTimeout(r, 7_000))
          const early = await Promise.race([attached, new Promise((r) => setTimeout(() => r('pending'), 10))])
          if (early !== 'pending') expect(early).toMatchObject({ code: 'TRANSPORT_UNAVAILABLE' })
          await proxy.restore()
          await until(() => events.some((e) => e.type === 'transport-restored'), 10_000, 'the end of the outage reported')
          // Opened again by itself: attached resolves once it is.
          await poll(
            () =>
              o.bus.attached('late').then(
                () => true,
                () => undefined,
              ),
            20_000,
            'the group opened',
            100,
          )
          await o.bus.publish('late', 1)
          await until(() => got.includes(1), 10_000, 'a job of the group made during the outage')
          for (const e of events) if (e.type === 'transport-error') expect(e.error.code).toBe('TRANSPORT_UNAVAILABLE')
          if (broker.name === 'nats') {
            // Its ack reached the server (not held back for good by the disconnect while it opened).
            const { connect } = await import('@nats-io/transport-node')
            const { jetstreamManager } = await import('@nats-io/jetstream')
            const c = await connect({ servers: broker.url()! })
            try {
              const jsm = await jetstreamManager(c)
              await poll(
                async () => ((await jsm.consumers.info(`${run}-ch-late`, 'g')).num_ack_pending === 0 ? true : undefined),
                10_000,
                'the ack on the server',
                100,
              )
            } finally {
              await c.close()
            }
          }
        })

      if (broker.name === 'nats')
        it('a group deleted during an outage keeps nothing of what its member held once its answers are given up', async () => {
          const { o, proxy } = await behindProxy(broker)
          const events: BusEvent[] = []
          o.bus.events.subscribe((e) => void events.push(e))
          const group = o.bus.group<number>('kept', 'g', { from: 'earliest' })
          let got = 0
          // Never answered: each delivery stays held in the driver (and its ack subject on the native wire).
          group.consume(() => {
            got++
            return new Promise<void>(() => {})
          })
          await o.bus.publishBatch([1, 2, 3].map((payload) => ({ channel: 'kept', payload })))
          await until(() => got === 3, 10_000, 'three deliveries')
          expect(keptBy(o).held).toBe(3)
          await proxy.cut()
          await until(() => events.some((e) => e.type === 'transport-error'), 5_000, 'the outage reported')
          // Its releases wait for the stream to be looked at again, which the deleted group's reader
          // never does: they fail after publishTimeoutMs (1 s), and what they answered is let go.
          group.delete()
          await until(() => keptBy(o).held + keptBy(o).wire === 0, 5_000, 'nothing kept of the deleted group')
          await proxy.restore()
          await until(() => events.some((e) => e.type === 'transport-restored'), 10_000, 'the end of the outage reported')
          expect(keptBy(o)).toEqual({ held: 0, wire: 0 })
        })

      if (broker.name === 'nats' && ENGINE === 'native')
        it("after an outage a group reads through the native engine's wire again at once (not through nats.js for a minute, as after a wire's own drop)", async () => {
          const { o, proxy } = await behindProxy(broker)
          const events: BusEvent[] = []
          o.bus.events.subscribe((e) => void events.push(e))
          let got = 0
          // Never answered: what the wire brings keeps its ack subject there, what nats.js brings does not.
          o.bus.group<number>('wired', 'g', { from: 'earliest' }).consume(() => {
            got++
            return new Promise<void>(() => {})
          })
          await o.bus.publish('wired', 0)
          await until(() => got === 1, 10_000, 'the first delivery')
          expect(keptBy(o).wire).toBe(1)
          await proxy.cut()
          await until(() => events.some((e) => e.type === 'transport-error'), 5_000, 'the outage reported')
          await proxy.restore()
          await until(() => events.some((e) => e.type === 'transport-restored'), 10_000, 'the end of the outage reported')
          await o.bus.publishBatch([1, 2, 3].map((payload) => ({ channel: 'wired', payload })))
          await until(() => got === 4, 10_000, 'three deliveries after the outage')
          // The three came on the wire too (the first is still held: the stream is the one it was read from).
          await until(
            () => keptBy(o).wire === 4,
            5_000,
            'the deliveries held on the wire',
            () => keptBy(o),
          )
        })

      it('shutdown with the server up is graceful', async () => {
        const { o } = await behindProxy(broker)
        await readingGroup(o)
        const outcome = await o.shutdown()
        expect(outcome).toEqual({ graceful: true, errors: [] })
      })
    })
  }
})
