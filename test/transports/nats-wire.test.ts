/**
 * The native engine's NATS wire (bindings/node/src/nats_wire.rs, ts/transports/nats-wire.ts) on
 * its own, against the test server: a pull's deliveries with their fields and headers, answers
 * confirmed only once the server holds them, naks delivered again, and a closed wire refusing.
 * The driver's behaviour over it is the contract suite's, on the native engine.
 */
import { createRequire } from 'node:module'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import type { NatsWireBinding, NatsWireOptions } from '../../ts/engines/backend.js'
import { openWire, type Wire, type WireDelivery, type WireRecord } from '../../ts/transports/nats-wire.js'
import { proxyTo } from './proxy.js'

const natsUrl = (): string => {
  try {
    const url = (inject as (key: string) => unknown)('natsUrl')
    if (typeof url === 'string' && url !== '') return url
  } catch {
    // No global setup providing it: the port scripts/servers.sh uses.
  }
  return process.env['ORRERY_NATS_URL'] ?? 'nats://127.0.0.1:14222'
}

const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
const text = new TextDecoder()

async function until(done: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!done()) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe.skipIf(process.env['ORRERY_SERVERS'] === 'none')('the NATS wire (native engine)', () => {
  const addon = createRequire(import.meta.url)('../../bindings/node/binding.cjs') as {
    NatsWire: { open(options: NatsWireOptions, events: (event: string) => void): NatsWireBinding }
  }
  const stream = `wire-${RUN}`
  const subject = `wire.${RUN}`
  let close = async () => {}
  let jsm: import('@nats-io/jetstream').JetStreamManager

  beforeAll(async () => {
    const { connect, headers } = await import('@nats-io/transport-node')
    const { jetstreamManager } = await import('@nats-io/jetstream')
    const nc = await connect({ servers: natsUrl() })
    close = () => nc.close()
    jsm = await jetstreamManager(nc)
    await jsm.streams.add({ name: stream, subjects: [subject], storage: 'memory' })
    const js = jsm.jetstream()
    for (let i = 0; i < 10; i++) {
      const h = headers()
      if (i === 3) h.set('x-orrery-test', 'three')
      await js.publish(subject, `m${i}`, i === 3 ? { headers: h } : {})
    }
  })

  afterAll(async () => {
    await jsm?.streams.delete(stream).catch(() => {})
    await close()
  })

  /** Opens a wire on the test server (or `url`), connected. */
  async function connected(url = natsUrl()): Promise<{ wire: Wire; events: string[] }> {
    const events: string[] = []
    const wire = openWire(
      (o, e) => addon.NatsWire.open(o, e),
      { servers: [url], connectTimeoutMs: 2_000 },
      (e) => events.push(e),
    )
    if (wire === undefined) throw new Error('no wire')
    await until(() => wire.connected)
    return { wire, events }
  }

  /** Pulls up to `batch` from `consumer` until `count` deliveries came. */
  async function pulled(wire: Wire, consumer: string, batch: number, count: number): Promise<WireDelivery[]> {
    const got: WireDelivery[] = []
    const statuses: WireRecord[] = []
    let failure: unknown
    const end = wire.pull(
      `$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`,
      JSON.stringify({ batch, expires: 2e9 }),
      (r) => {
        if (r.kind === 'delivery') got.push(r.delivery)
        else statuses.push(r)
      },
      (error) => {
        failure = error
      },
    )
    await until(() => got.length >= count || failure !== undefined)
    end()
    if (failure !== undefined) throw failure
    return got
  }

  it('brings a pull in order with its fields; acks are confirmed once the server holds them; naks come again', async () => {
    const { AckPolicy } = await import('@nats-io/jetstream')
    await jsm.consumers.add(stream, { durable_name: 'c', ack_policy: AckPolicy.Explicit, ack_wait: 30e9 })
    const { wire, events } = await connected()
    expect(events).toContain('connected')
    const got = await pulled(wire, 'c', 10, 10)
    expect(got.map((d) => text.decode(d.data))).toEqual(Array.from({ length: 10 }, (_, i) => `m${i}`))
    expect(got.map((d) => d.seq)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1))
    expect(got.every((d) => d.info.deliveryCount === 1)).toBe(true)
    // The stream's time, in ns, within a minute of now.
    expect(Math.abs(got[0]!.info.timestampNanos / 1e6 - Date.now())).toBeLessThan(60_000)
    expect(got[3]!.headers?.get('x-orrery-test')).toBe('three')
    expect(got[3]!.headers?.get('absent')).toBe('')
    expect(got[0]!.headers).toBeUndefined()
    expect(wire.kept()).toBe(10)
    for (const d of got.slice(0, 8)) d.ack()
    for (const d of got.slice(8)) d.nak()
    await wire.settled()
    // Answers the server read let their ack subjects go.
    expect(wire.kept()).toBe(0)
    // Settled means read: the server's ack floor is there already, not eventually.
    const info = await jsm.consumers.info(stream, 'c')
    expect(info.ack_floor.stream_seq).toBe(8)
    const again = await pulled(wire, 'c', 10, 2)
    expect(again.map((d) => [d.seq, d.info.deliveryCount])).toEqual([
      [9, 2],
      [10, 2],
    ])
    for (const d of again) d.term()
    await wire.settled()
    expect((await jsm.consumers.info(stream, 'c')).num_ack_pending).toBe(0)
    wire.close()
    expect(wire.connected).toBe(false)
  })

  it('answers the server never read (the connection cut under them) fail, and go once it is back', async () => {
    const { AckPolicy } = await import('@nats-io/jetstream')
    await jsm.consumers.add(stream, { durable_name: 'e', ack_policy: AckPolicy.Explicit, ack_wait: 30e9 })
    const server = new URL(natsUrl())
    const proxy = await proxyTo(server.hostname, Number(server.port))
    try {
      const { wire, events } = await connected(`nats://${proxy.address}`)
      const all = await pulled(wire, 'e', 4, 4)
      const got = all.slice(0, 3)
      // Written to the socket, never read by the server: not settled, and failed by the cut.
      proxy.hold()
      for (const d of got) d.ack()
      // Let go as it is answered: not kept, though its answer fails too.
      all[3]!.nak()
      all[3]!.forget()
      const settled = wire.settled()
      await new Promise((r) => setTimeout(r, 100))
      await proxy.cut()
      await expect(settled).rejects.toThrow(/lost its connection/)
      // The three acked are kept, to be answered again; the one let go is not.
      expect(wire.kept()).toBe(3)
      expect(events).toContain('disconnected')
      expect((await jsm.consumers.info(stream, 'e')).ack_floor.stream_seq).toBe(0)
      // The same deliveries answered again once the wire is back.
      await proxy.restore()
      await until(() => wire.connected)
      for (const d of got) d.ack()
      await wire.settled()
      expect((await jsm.consumers.info(stream, 'e')).ack_floor.stream_seq).toBe(3)
      expect(wire.kept()).toBe(0)
      wire.close()
    } finally {
      await proxy.close()
    }
  })

  it('a delivery let go is kept no more; an answer given in the same turn still goes', async () => {
    const { AckPolicy } = await import('@nats-io/jetstream')
    await jsm.consumers.add(stream, { durable_name: 'f', ack_policy: AckPolicy.Explicit, ack_wait: 30e9 })
    const { wire } = await connected()
    const got = await pulled(wire, 'f', 3, 3)
    expect(wire.kept()).toBe(3)
    got[0]!.forget()
    got[1]!.nak()
    got[1]!.forget()
    await wire.settled()
    expect(wire.kept()).toBe(1)
    // The one let go unanswered is owed nothing here; the nak'ed one comes again.
    const again = await pulled(wire, 'f', 1, 1)
    expect([again[0]!.seq, again[0]!.info.deliveryCount]).toEqual([2, 2])
    // Let go, then answered: no address to answer on, so nothing is sent.
    again[0]!.forget()
    await wire.settled()
    again[0]!.ack()
    got[2]!.ack()
    await wire.settled()
    expect(wire.kept()).toBe(0)
    const info = await jsm.consumers.info(stream, 'f')
    expect(info.num_ack_pending).toBe(2)
    expect(info.ack_floor.stream_seq).toBe(0)
    wire.close()
  })

  it('a closed wire refuses to pull, and answers given as it closes fail instead of hanging', async () => {
    const { AckPolicy } = await import('@nats-io/jetstream')
    await jsm.consumers.add(stream, { durable_name: 'd', ack_policy: AckPolicy.Explicit, ack_wait: 30e9 })
    const { wire } = await connected()
    const got = await pulled(wire, 'd', 1, 1)
    got[0]!.ack()
    wire.close()
    await expect(wire.settled()).rejects.toThrow(/closed/)
    expect(() =>
      wire.pull(
        `$JS.API.CONSUMER.MSG.NEXT.${stream}.d`,
        '{"batch":1}',
        () => {},
        () => {},
      ),
    ).toThrow(/closed/)
    // Never acked: the server still waits for it.
    expect((await jsm.consumers.info(stream, 'd')).num_ack_pending).toBe(1)
  })
})
