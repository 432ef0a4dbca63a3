/**
 * Requests across processes on Redis and NATS, what the contract suite cannot see from the API
 * alone: what a request writes to the stream (the frame, the reply address, the timeout), that the
 * reply goes to the requester's address and not into the stream, that a request the server refuses
 * fails at once instead of waiting for its timeout, and that a request is held to the server's
 * size limit as a publish is (NATS). Two Orrery instances stand for two processes. Same on both
 * engines.
 */
import { createClient } from 'redis'
import { afterEach, describe, expect, inject, it } from 'vitest'

import { isOrreryError, Orrery } from '../../ts/node.js'
import { forEachEgress, IngestWriter, REMOTE } from '../../ts/transports/records.js'
import { ENGINE } from '../engine.js'
import { BACKENDS, stop, withTimeout } from './backends.js'

const redis = BACKENDS.find((b) => b.name === 'redis')!
const title = `requests across processes on redis (${ENGINE})${redis.skip ? ` [skipped: ${redis.skip}]` : ''}`
const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}-${ENGINE}`
let runs = 0

/** The node-redis calls this test makes on a connection of its own. */
interface Raw {
  connect(): Promise<unknown>
  sendCommand(args: string[]): Promise<unknown>
  quit(): Promise<unknown>
  on(event: 'error', listener: (error: unknown) => void): unknown
}

describe.skipIf(redis.skip !== undefined)(title, () => {
  if (redis.broken !== undefined) {
    it('has its server', () => {
      throw new Error(redis.broken)
    })
    return
  }
  const url = inject('redisUrl')!
  const opened: Orrery[] = []
  const raws: Raw[] = []
  afterEach(async () => {
    for (const o of opened.splice(0)) await stop(o)
    for (const r of raws.splice(0)) await r.quit().catch(() => {})
  })
  const open = async (prefix: string): Promise<Orrery> => {
    const o = await Orrery.create({ transports: { main: { kind: 'redis', url } }, bindings: { [`${prefix}*`]: 'main' } })
    opened.push(o)
    return o
  }
  const raw = async (): Promise<Raw> => {
    const r = createClient({ url, RESP: 2 }) as unknown as Raw
    r.on('error', () => {})
    await r.connect()
    raws.push(r)
    return r
  }

  it('a request is an entry of the stream with its reply address and timeout; the reply is not', { timeout: 30_000 }, async () => {
    const prefix = `rq-${RUN}-${++runs}.`
    const [a, b] = [await open(prefix), await open(prefix)]
    b.bus.respond<number, number>(`${prefix}double`, (req) => req.payload * 2, { group: 'doublers' })
    const reply = await a.bus.request<number>(`${prefix}double`, 21, { timeout: 7_500 })
    expect(reply.payload).toBe(42)
    const r = await raw()
    const entries = (await r.sendCommand(['XRANGE', `orrery:ch:${prefix}double`, '-', '+'])) as Array<[string, string[]]>
    expect(entries).toHaveLength(1)
    const fields = entries[0]![1]
    const field = (name: string) => fields[fields.indexOf(name) + 1]
    expect(fields.filter((_, i) => i % 2 === 0)).toEqual(['f', 'r', 't'])
    expect(field('r')).toMatch(/^[0-9a-f]{16}$/)
    expect(field('t')).toBe('7500')
    // The reply went to the requester's address, which it listens to.
    const listening = (await r.sendCommand(['PUBSUB', 'NUMSUB', `orrery:reply:${field('r')}`])) as [string, number]
    expect(Number(listening[1])).toBe(1)
    // The group took the request and settled it: nothing pending on the broker.
    const pending = (await r.sendCommand(['XPENDING', `orrery:ch:${prefix}double`, 'doublers'])) as [number]
    expect(Number(pending[0])).toBe(0)
  })

  it('a request the server refuses fails at once with the transport error, not after its timeout', { timeout: 30_000 }, async () => {
    const prefix = `rq-${RUN}-${++runs}.`
    const r = await raw()
    // A key of another type where the channel's stream would be: the server refuses the XADD.
    await r.sendCommand(['SET', `orrery:ch:${prefix}taken`, 'not a stream'])
    const o = await open(prefix)
    const started = Date.now()
    const err = await withTimeout(
      o.bus.request(`${prefix}taken`, 1, { timeout: 20_000 }).then(
        () => undefined,
        (error: unknown) => error,
      ),
      10_000,
      'the refused request',
    )
    expect(isOrreryError(err, 'TRANSPORT_UNAVAILABLE')).toBe(true)
    expect((err as Error).message).toContain('WRONGTYPE')
    expect(Date.now() - started).toBeLessThan(5_000)
    await r.sendCommand(['DEL', `orrery:ch:${prefix}taken`])
  })

  it('a request that waits for ever and could not be written is forgotten by the core too: a reply to it is late', { timeout: 30_000 }, async () => {
    const prefix = `rq-${RUN}-${++runs}.`
    const r = await raw()
    await r.sendCommand(['SET', `orrery:ch:${prefix}taken`, 'not a stream'])
    const o = await open(prefix)
    // Watch the request leave the core (the link drains it), to answer it by hand afterwards.
    const core = o.bus.core
    const drain = core.drainEgress.bind(core)
    const requests: Uint8Array[] = []
    core.drainEgress = () => {
      const batch = drain()
      if (batch !== undefined) forEachEgress(batch, (kind, _id, _value, _pos, frame) => kind === REMOTE.request && requests.push(frame.slice()))
      return batch
    }
    const err = await withTimeout(
      o.bus.request(`${prefix}taken`, 1, { timeout: Infinity }).then(
        () => undefined,
        (error: unknown) => error,
      ),
      10_000,
      'the refused request',
    )
    expect(isOrreryError(err, 'TRANSPORT_UNAVAILABLE')).toBe(true)
    expect(requests).toHaveLength(1)
    const writer = new IngestWriter()
    writer.replied(requests[0]!)
    expect(core.ingest(writer.take()!, Date.now())).toBe(0)
    expect(o.bus.lateReplies()).toBe(1)
    await r.sendCommand(['DEL', `orrery:ch:${prefix}taken`])
  })
})

const nats = BACKENDS.find((b) => b.name === 'nats')!

describe.skipIf(nats.skip !== undefined)(`requests across processes on nats (${ENGINE})${nats.skip ? ` [skipped: ${nats.skip}]` : ''}`, () => {
  if (nats.broken !== undefined) {
    it('has its server', () => {
      throw new Error(nats.broken)
    })
    return
  }
  const opened: Orrery[] = []
  afterEach(async () => {
    for (const o of opened.splice(0)) await stop(o)
  })

  it("a request over the server's max_payload (with its headers) fails at once with MESSAGE_TOO_LARGE; one under it is answered", {
    timeout: 30_000,
  }, async () => {
    const prefix = `rqn-${RUN}-${++runs}.`
    const [a, b] = [await nats.open(prefix), await nats.open(prefix)]
    opened.push(a, b)
    b.bus.respond<Uint8Array, number>(`${prefix}size`, (req) => req.payload.length, { group: 'sizers' })
    const started = Date.now()
    const err = await a.bus.request(`${prefix}size`, new Uint8Array(1_048_576), { timeout: 20_000 }).then(
      () => undefined,
      (error: unknown) => error,
    )
    expect(isOrreryError(err, 'MESSAGE_TOO_LARGE')).toBe(true)
    expect((err as { details: Record<string, unknown> }).details).toMatchObject({ transport: 'main', channel: `${prefix}size`, limit: 1_048_576 })
    expect(Date.now() - started).toBeLessThan(5_000)
    const reply = await a.bus.request<number>(`${prefix}size`, new Uint8Array(900_000), { timeout: 20_000 })
    expect(reply.payload).toBe(900_000)
  })

  it("a reply over the server's max_payload fails its request at once (HANDLER_ERROR, remoteCode MESSAGE_TOO_LARGE); the responder reports it", {
    timeout: 30_000,
  }, async () => {
    const prefix = `rqn-${RUN}-${++runs}.`
    const [a, b] = [await nats.open(prefix), await nats.open(prefix)]
    opened.push(a, b)
    const reported: unknown[] = []
    b.bus.events.subscribe((e) => {
      if (e.type === 'transport-error') reported.push(e.error)
    })
    b.bus.respond<number, string>(`${prefix}echo`, (req) => 'x'.repeat(req.payload), { group: 'echoers' })
    const started = Date.now()
    const err = await a.bus.request(`${prefix}echo`, 2_000_000, { timeout: 20_000 }).then(
      () => undefined,
      (error: unknown) => error,
    )
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(isOrreryError(err, 'HANDLER_ERROR')).toBe(true)
    const { message, details } = err as { message: string; details: Record<string, unknown> }
    expect(details).toMatchObject({ remoteCode: 'MESSAGE_TOO_LARGE', channel: `${prefix}echo` })
    expect(message).toContain('1048576')
    expect(message).toMatch(/a reply on channel .* is \d+ bytes/)
    // The responder's process says so too, with the numbers.
    await withTimeout(
      (async () => {
        while (reported.length === 0) await new Promise((r) => setTimeout(r, 10))
      })(),
      5_000,
      'the transport-error on the responder',
    )
    expect(reported).toHaveLength(1)
    expect(isOrreryError(reported[0], 'MESSAGE_TOO_LARGE')).toBe(true)
    const bytes = (reported[0] as { details: Record<string, unknown> }).details['bytes'] as number
    expect((reported[0] as { details: Record<string, unknown> }).details).toMatchObject({ transport: 'main', channel: `${prefix}echo`, limit: 1_048_576 })
    expect(bytes).toBeGreaterThan(2_000_000)
    expect(message).toContain(String(bytes))
    // The responder goes on: a reply under the limit comes back.
    const reply = await a.bus.request<string>(`${prefix}echo`, 900_000, { timeout: 20_000 })
    expect(reply.payload).toHaveLength(900_000)
    expect(a.bus.lateReplies()).toBe(0)
  })
})

const kafka = BACKENDS.find((b) => b.name === 'kafka')!

describe.skipIf(kafka.skip !== undefined)(`requests across processes on kafka (${ENGINE})${kafka.skip ? ` [skipped: ${kafka.skip}]` : ''}`, () => {
  if (kafka.broken !== undefined) {
    it('has its server', () => {
      throw new Error(kafka.broken)
    })
    return
  }
  const opened: Orrery[] = []
  afterEach(async () => {
    for (const o of opened.splice(0)) await stop(o)
  })

  // The broker refused the reply's produce and the requester waited out its timeout (for ever
  // with `timeout: Infinity`): the refusal is answered in the reply's place now, as on NATS.
  it("a reply over the topic's max.message.bytes fails its request at once (HANDLER_ERROR, remoteCode MESSAGE_TOO_LARGE); the responder reports it", {
    timeout: 60_000,
  }, async () => {
    const prefix = `rqk-${RUN}-${++runs}.`
    const [a, b] = [await kafka.open(prefix), await kafka.open(prefix)]
    opened.push(a, b)
    const reported: unknown[] = []
    b.bus.events.subscribe((e) => {
      if (e.type === 'transport-error') reported.push(e.error)
    })
    b.bus.respond<number, string>(`${prefix}echo`, (req) => 'x'.repeat(req.payload), { group: 'echoers' })
    await b.bus.attached(`${prefix}echo`)
    const err = await a.bus.request(`${prefix}echo`, 2_000_000, { timeout: Infinity }).then(
      () => undefined,
      (error: unknown) => error,
    )
    expect(isOrreryError(err, 'HANDLER_ERROR')).toBe(true)
    expect((err as { details: Record<string, unknown> }).details).toMatchObject({ remoteCode: 'MESSAGE_TOO_LARGE', channel: `${prefix}echo` })
    expect(reported.some((e) => isOrreryError(e, 'MESSAGE_TOO_LARGE'))).toBe(true)
    // The responder goes on: a reply under the limit comes back.
    const reply = await a.bus.request<string>(`${prefix}echo`, 900_000, { timeout: 20_000 })
    expect(reply.payload).toHaveLength(900_000)
    expect(a.bus.lateReplies()).toBe(0)
  })
})
