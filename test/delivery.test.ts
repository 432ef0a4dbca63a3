import { describe, expect, it } from 'vitest'

import type { BusEvent, Delivery, Message } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { clocked, collect, errorOf, settle } from './helpers.js'

describe(`delivery semantics (${ENGINE})`, () => {
  it('delivers higher priorities first, FIFO within a priority', async () => {
    const { bus } = await clocked()
    const got = collect(bus.subscribe<string>('p'))
    await bus.publishBatch([
      { channel: 'p', payload: 'n1' },
      { channel: 'p', payload: 'c1', options: { priority: 'critical' } },
      { channel: 'p', payload: 'l1', options: { priority: 'low' } },
      { channel: 'p', payload: 'h1', options: { priority: 'high' } },
      { channel: 'p', payload: 'c2', options: { priority: 'critical' } },
      { channel: 'p', payload: 'n2' },
    ])
    await settle()
    expect(got.map((m) => m.payload)).toEqual(['c1', 'c2', 'h1', 'n1', 'n2', 'l1'])
  })

  it('never delivers an expired message, counts it, and can dead-letter it', async () => {
    const { bus, advance } = await clocked()
    bus.channel('ttl', { deadLetterExpired: true })
    const sub = bus.subscribe<string>('ttl', { from: 'earliest' })
    await bus.publishBatch([
      { channel: 'ttl', payload: 'short', options: { ttl: 50 } },
      { channel: 'ttl', payload: 'long', options: { ttl: 5_000 } },
    ])
    advance(100) // both are buffered; the clock passes the first one's expiry before delivery
    const got = collect(sub)
    await settle()
    expect(got.map((m) => m.payload)).toEqual(['long'])
    expect(bus.stats('ttl')).toMatchObject({ expired: 1, deadLettered: 1 })
    const dead = collect(bus.subscribe<string>('ttl.dead-letter', { from: 'earliest' }))
    await settle()
    expect(dead.map((m) => [m.payload, m.headers['x-orrery-dead-letter-reason']])).toEqual([['short', 'expired']])
  })

  it('backpressure "reject": a full subscriber refuses the publish and nothing is published', async () => {
    const { bus } = await clocked()
    const got = collect(bus.subscribe<number>('bp', { buffer: 2, overflow: 'reject' }))
    const err = await errorOf(() => bus.publishBatch([1, 2, 3].map((payload) => ({ channel: 'bp', payload }))))
    expect(err).toMatchObject({ name: 'OrreryError', code: 'BACKPRESSURE' })
    expect(err?.message).toMatch(/^a subscriber of channel "bp" is full \(2 messages buffered\).*larger `buffer` option$/)
    expect(bus.stats('bp').published).toBe(0)
    void bus.publishBatch([
      { channel: 'bp', payload: 1 },
      { channel: 'bp', payload: 2 },
    ])
    // Still in the same tick: the subscriber has not drained, its buffer is full.
    expect((await errorOf(() => bus.publish('bp', 3)))?.code).toBe('BACKPRESSURE')
    await settle()
    await bus.publish('bp', 3)
    await settle()
    expect(got.map((m) => m.payload)).toEqual([1, 2, 3])
  })

  it('backpressure "reject" from a group names the group and the channel', async () => {
    const { bus } = await clocked()
    bus
      .group('orders', 'billing', { buffer: 1, overflow: 'reject' })
      .join({ maxInFlight: 1 })
      .subscribe(() => {})
    await bus.publishBatch([1, 2].map((payload) => ({ channel: 'orders', payload }))) // one held, one buffered
    const err = await errorOf(() => bus.publish('orders', 3))
    expect(err).toMatchObject({ code: 'BACKPRESSURE' })
    expect(err?.message).toMatch(/^consumer group "billing" of channel "orders" is full \(1 messages buffered\)/)
  })

  it('backpressure "block": publish waits until the subscriber drains, then goes through', async () => {
    const { bus } = await clocked()
    const got = collect(bus.subscribe<number>('bp', { buffer: 2, overflow: 'block' }))
    void bus.publishBatch([
      { channel: 'bp', payload: 1 },
      { channel: 'bp', payload: 2 },
    ])
    let done = false
    const third = bus.publish('bp', 3).then(() => {
      done = true
    })
    expect(done).toBe(false)
    expect(bus.stats('bp').published).toBe(2)
    await third
    expect(done).toBe(true)
    await settle()
    expect(got.map((m) => m.payload)).toEqual([1, 2, 3])
    // A batch larger than the whole buffer is taken when the buffer is empty, not blocked forever.
    await bus.publishBatch([4, 5, 6, 7, 8].map((payload) => ({ channel: 'bp', payload })))
    await settle()
    expect(got.length).toBe(8)
  })

  it('backpressure "block" holds up only the waiting channel: other channels publish at once, the waiting one keeps its order', async () => {
    const { bus } = await clocked()
    // A consumer of A that holds one unacked delivery and buffers two more: a fourth publish waits.
    const deliveries: Array<Delivery<number>> = []
    bus
      .group<number>('A', 'slow', { buffer: 2, overflow: 'block' })
      .join({ maxInFlight: 1 })
      .subscribe((d) => deliveries.push(d))
    const gotB = collect(bus.subscribe<string>('B'))
    await bus.publishBatch([1, 2, 3].map((payload) => ({ channel: 'A', payload })))
    await settle()
    let fourth = false
    const waiting = bus.publish('A', 4).then(() => {
      fourth = true
    })
    await settle()
    expect(fourth).toBe(false)
    // B has no full consumer: its publish goes through in the same call, not behind A's.
    const b = bus.publish('B', 'b1')
    expect(bus.stats('B').published).toBe(1)
    await b
    await settle()
    expect(gotB.map((m) => m.payload)).toEqual(['b1'])
    expect(fourth).toBe(false)
    // A later publish to A queues behind the waiting one, and so does a batch touching A.
    const fifth = bus.publish('A', 5)
    const mixed = bus.publishBatch([
      { channel: 'B', payload: 'b2' },
      { channel: 'A', payload: 6 },
    ])
    expect(bus.stats('A').published).toBe(3)
    expect(bus.stats('B').published).toBe(1)
    // A's consumer drains, one ack at a time: the waiting publishes arrive in order.
    for (let i = 0; i < 6; i++) {
      await settle()
      deliveries[i]!.ack()
    }
    await Promise.all([waiting, fifth, mixed])
    expect(deliveries.map((d) => d.message.payload)).toEqual([1, 2, 3, 4, 5, 6])
    await settle()
    expect(gotB.map((m) => m.payload)).toEqual(['b1', 'b2'])
  })

  it('backpressure "drop-oldest": keeps the newest, reports slow consumer and drops', async () => {
    const { bus } = await clocked()
    const events = collect(bus.events)
    const stream = bus.subscribe<number>('lossy', { buffer: 4, overflow: 'drop-oldest' })
    const iterator = stream[Symbol.asyncIterator]()
    const first = iterator.next() // subscribes; nothing consumed yet
    await bus.publishBatch([0, 1, 2, 3, 4, 5].map((n) => ({ channel: 'lossy', payload: n })))
    expect((await first).value?.payload).toBe(2)
    const rest: number[] = []
    for (let i = 0; i < 3; i++) rest.push(((await iterator.next()).value as Message<number>).payload)
    expect(rest).toEqual([3, 4, 5])
    await iterator.return?.()
    const kinds = events.map((e: BusEvent) => e.type)
    expect(kinds).toContain('slow-consumer')
    expect(kinds.filter((k) => k === 'dropped').length).toBe(2)
    expect(events.find((e) => e.type === 'dropped')).toMatchObject({ channel: 'lossy', count: 1 })
  })

  it('iterating with for await pauses the consumer in the core instead of piling up in JS', async () => {
    const { bus } = await clocked()
    const stream = bus.subscribe<number>('many', { buffer: 50, overflow: 'block' })
    const seen: number[] = []
    const consumer = (async () => {
      for await (const m of stream) {
        seen.push(m.payload)
        if (seen.length === 1000) break
      }
    })()
    await settle()
    for (let i = 0; i < 1000; i += 100) {
      await bus.publishBatch(Array.from({ length: 100 }, (_, k) => ({ channel: 'many', payload: i + k })))
    }
    await consumer
    expect(seen).toEqual(Array.from({ length: 1000 }, (_, i) => i))
    expect(bus.stats('many').subscribers).toBe(0)
  })

  it('drops a retried publish with the same id inside the dedup window', async () => {
    const { bus, advance } = await clocked()
    bus.channel('once', { dedupWindowMs: 1_000 })
    const got = collect(bus.subscribe('once'))
    expect((await bus.publish('once', 'a', { id: 'payment-7' })).published).toBe(true)
    expect((await bus.publish('once', 'a', { id: 'payment-7' })).published).toBe(false)
    advance(1_000)
    expect((await bus.publish('once', 'a', { id: 'payment-7' })).published).toBe(true)
    await settle()
    expect(got.length).toBe(2)
    expect(bus.stats('once')).toMatchObject({ published: 2, duplicates: 1 })
  })

  it('a dedup window of Infinity drops a repeated id however late it comes', async () => {
    const { bus, advance } = await clocked()
    bus.channel('forever', { dedupWindowMs: Infinity })
    expect((await bus.publish('forever', 'a', { id: 'payment-8' })).published).toBe(true)
    advance(2 ** 31)
    expect((await bus.publish('forever', 'a', { id: 'payment-8' })).published).toBe(false)
    expect(bus.stats('forever')).toMatchObject({ published: 1, duplicates: 1 })
  })

  it('encodes payloads as JSON, msgpack or raw bytes', async () => {
    const { bus } = await clocked()
    const got = collect(bus.subscribe('codecs'))
    const value = { n: 1, list: [1, 'two', null], nested: { ok: true } }
    await bus.publish('codecs', value)
    await bus.publish('codecs', value, { codec: 'msgpack' })
    await bus.publish('codecs', new Uint8Array([1, 2, 3]))
    await settle()
    expect(got.map((m) => m.codec)).toEqual(['json', 'msgpack', 'raw'])
    expect(got[0]!.payload).toEqual(value)
    expect(got[1]!.payload).toEqual(value)
    expect([...(got[2]!.payload as Uint8Array)]).toEqual([1, 2, 3])
    expect(got[1]!.bytes.length).toBeLessThan(got[0]!.bytes.length)
    expect((await errorOf(() => bus.publish('codecs', 1, { codec: 'yaml' as never })))?.code).toBe('INVALID_OPTION')
    const circular: Record<string, unknown> = {}
    circular['self'] = circular
    expect((await errorOf(() => bus.publish('codecs', circular, { codec: 'msgpack' })))?.code).toBe('INVALID_PAYLOAD')
    expect((await errorOf(() => bus.publish('codecs', circular)))?.code).toBe('INVALID_PAYLOAD')
  })

  it('generates unique ids unless the producer gives one', async () => {
    const { bus } = await clocked()
    const got = collect(bus.subscribe('ids'))
    const { ids } = await bus.publishBatch([
      { channel: 'ids', payload: 1 },
      { channel: 'ids', payload: 2 },
      { channel: 'ids', payload: 3, options: { id: 'mine' } },
    ])
    await settle()
    expect(got.map((m) => m.id)).toEqual(ids)
    expect(new Set(ids).size).toBe(3)
    expect(ids[2]).toBe('mine')
  })
})
