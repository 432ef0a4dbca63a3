import { describe, expect, it } from 'vitest'

import type { Delivery } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { clocked, collect, errorOf, settle } from './helpers.js'

describe(`consumer groups (${ENGINE})`, () => {
  it('gives each message to exactly one member', async () => {
    const { bus } = await clocked()
    const group = bus.group<number>('jobs', 'workers')
    const a = collect(group.join())
    const b = collect(group.join())
    await bus.publishBatch([0, 1, 2, 3, 4, 5].map((n) => ({ channel: 'jobs', payload: n })))
    await settle()
    expect(a.length + b.length).toBe(6)
    expect(a.length).toBe(3)
    expect([...a, ...b].map((d) => d.message.payload).sort()).toEqual([0, 1, 2, 3, 4, 5])
    for (const d of [...a, ...b]) d.ack()
    expect(group.stats()).toMatchObject({ members: 2, delivered: 6, acked: 6, pending: 0, backlog: 0 })
  })

  it('redelivers an unacked message after the visibility timeout; the late ack is STALE_ACK', async () => {
    const { bus, advance } = await clocked()
    const group = bus.group('jobs', 'workers', { visibilityTimeout: 100 })
    const slow = collect(group.join({ maxInFlight: 1 }))
    const fast = collect(group.join({ maxInFlight: 1 }))
    await bus.publish('jobs', 'task')
    await settle()
    const first = slow[0] ?? fast[0]!
    advance(99)
    expect(slow.length + fast.length).toBe(1)
    advance(1)
    expect(slow.length + fast.length).toBe(2)
    const second = [...slow, ...fast].find((d) => d !== first)!
    expect(second.message.seq).toBe(first.message.seq)
    expect(second.attempt).toBe(2)
    expect((await errorOf(() => first.ack()))?.code).toBe('STALE_ACK')
    second.ack()
    expect(group.stats()).toMatchObject({ acked: 1, redelivered: 1, pending: 0 })
  })

  it('dead-letters after maxDeliveries with the reason and count in the headers', async () => {
    const { bus } = await clocked()
    const group = bus.group<string>('orders', 'billing', { maxDeliveries: 2 })
    const seen = collect(group.join())
    const dead = collect(bus.subscribe<string>('orders.dead-letter', { from: 'earliest' }))
    await bus.publish('orders', 'poison', { id: 'order-1' })
    await settle()
    seen[0]!.nack()
    await settle()
    seen[1]!.nack()
    await settle()
    expect(seen.length).toBe(2)
    expect(dead.length).toBe(1)
    expect(dead[0]!.payload).toBe('poison')
    expect(dead[0]!.id).toBe('order-1')
    expect(dead[0]!.headers).toMatchObject({
      'x-orrery-dead-letter-reason': 'max-deliveries',
      'x-orrery-deliveries': '2',
      'x-orrery-origin-channel': 'orders',
    })
    expect(bus.stats('orders').deadLettered).toBe(1)
    // The dead-letter channel is ordinary: it can be replayed.
    const replay = collect(bus.subscribe('orders.dead-letter', { from: 'earliest' }))
    await settle()
    expect(replay.length).toBe(1)
  })

  it('nack with a delay waits; nack with deadLetter goes straight to the dead-letter channel', async () => {
    const { bus, advance } = await clocked()
    const group = bus.group<string>('jobs', 'w')
    const seen = collect(group.join())
    await bus.publishBatch([
      { channel: 'jobs', payload: 'flaky' },
      { channel: 'jobs', payload: 'bad' },
    ])
    await settle()
    seen[0]!.nack({ delay: 500 })
    seen[1]!.nack({ deadLetter: 'validation failed' })
    advance(499)
    expect(seen.length).toBe(2)
    advance(1)
    expect(seen.map((d) => d.message.payload)).toEqual(['flaky', 'bad', 'flaky'])
    const dead = collect(bus.subscribe<string>('jobs.dead-letter', { from: 'earliest' }))
    await settle()
    expect(dead.map((m) => [m.payload, m.headers['x-orrery-dead-letter-reason']])).toEqual([['bad', 'validation failed']])
    expect(() => seen[2]!.nack({ delay: -1 })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }))
  })

  it('a member that leaves gives back what it held; claims move idle work', async () => {
    const { bus, advance } = await clocked()
    const group = bus.group('jobs', 'w', { visibilityTimeout: 60_000 })
    const stuck: Delivery[] = []
    const stuckSub = group.join({ maxInFlight: 10 }).subscribe((d) => stuck.push(d))
    await bus.publishBatch([1, 2, 3].map((n) => ({ channel: 'jobs', payload: n })))
    await settle()
    expect(stuck.length).toBe(3)
    const helperStream = group.join()
    const helped = collect(helperStream)
    advance(1_000)
    expect(group.claim(helperStream.memberId(), { minIdle: 500, max: 1 })).toBe(1)
    await settle()
    expect(helped.map((d) => d.message.payload)).toEqual([1])
    expect(group.pending().map((p) => [p.seq, p.member === helperStream.memberId()])).toEqual([
      [0, true],
      [1, false],
      [2, false],
    ])
    stuckSub.unsubscribe()
    await settle()
    expect(helped.map((d) => d.message.payload)).toEqual([1, 2, 3])
  })

  it('an ack or nack from a member that has left is STALE_ACK, naming the group, and the message goes to the others', async () => {
    const { bus } = await clocked()
    const group = bus.group<number>('orders', 'billing')
    const held: Array<Delivery<number>> = []
    const leaving = group.join().subscribe((d) => held.push(d))
    await bus.publishBatch([7, 8].map((payload) => ({ channel: 'orders', payload })))
    await settle()
    expect(held.length).toBe(2)
    const other = collect(group.join())
    leaving.unsubscribe()
    await settle()
    expect(other.map((d) => d.message.payload)).toEqual([7, 8])
    const acked = await errorOf(() => held[0]!.ack())
    expect(acked).toMatchObject({ name: 'OrreryError', code: 'STALE_ACK', details: { group: 'billing', channel: 'orders' } })
    expect(acked?.message).toContain('consumer group billing on orders')
    expect(acked?.message).toContain('no longer in its group')
    expect(await errorOf(() => held[1]!.nack())).toMatchObject({ code: 'STALE_ACK', details: { group: 'billing', channel: 'orders' } })
    for (const d of other) d.ack()
    expect(group.stats()).toMatchObject({ acked: 2, nacked: 0, pending: 0, members: 1 })
  })

  it('consume() acks what resolves, retries what throws, dead-letters what is permanent', async () => {
    const { bus, advance } = await clocked()
    const attempts = new Map<string, number>()
    const group = bus.group<string>('work', 'w', { maxDeliveries: 3 })
    group.consume(
      async (d) => {
        const n = (attempts.get(d.message.payload) ?? 0) + 1
        attempts.set(d.message.payload, n)
        if (d.message.payload === 'flaky' && n < 2) throw new Error('try again')
        if (d.message.payload === 'fatal') throw Object.assign(new Error('cannot parse'), { permanent: true })
      },
      { retryDelay: 10, isPermanent: (e) => (e as { permanent?: boolean }).permanent === true },
    )
    await bus.publishBatch(['ok', 'flaky', 'fatal'].map((payload) => ({ channel: 'work', payload })))
    await settle(20)
    advance(10)
    await settle(20)
    expect(Object.fromEntries(attempts)).toEqual({ ok: 1, flaky: 2, fatal: 1 })
    expect(group.stats()).toMatchObject({ acked: 2, deadLettered: 1, pending: 0 })
    const dead = collect(bus.subscribe('work.dead-letter', { from: 'earliest' }))
    await settle()
    expect(dead[0]!.headers['x-orrery-dead-letter-reason']).toBe('cannot parse')
  })

  it('refuses bad group input with typed errors', async () => {
    const { bus } = await clocked()
    expect((await errorOf(() => bus.group('jobs', 'bad name')))?.code).toBe('INVALID_NAME')
    expect((await errorOf(() => bus.group('jobs', 'g', { maxDeliveries: 0 })))?.code).toBe('INVALID_OPTION')
    expect((await errorOf(() => bus.group('jobs', 'g', { visibilityTimeout: -5 })))?.code).toBe('INVALID_OPTION')
    expect((await errorOf(() => bus.group('jobs', 'g', { overflow: 'sometimes' as never })))?.code).toBe('INVALID_OPTION')
    const group = bus.group('jobs', 'g')
    // Refused at the call: a refusal raised when the stream is subscribed had no error callback to go to.
    expect((await errorOf(() => group.join({ maxInFlight: 0 })))?.code).toBe('INVALID_OPTION')
    await bus.publish('jobs', 1)
    const got = collect(group.join())
    await settle()
    got[0]!.ack()
    expect((await errorOf(() => got[0]!.ack()))?.code).toBe('STALE_ACK')
  })
})

describe(`consumer groups under load (${ENGINE})`, () => {
  it('a publisher blocked by a slow group waits without starving timers, and gets through', async () => {
    const orrery = await (await import('../ts/node.js')).Orrery.create()
    const { bus } = orrery
    const group = bus.group<number>('slow', 'w', { buffer: 2, overflow: 'block' })
    const handled: number[] = []
    group.consume(
      async (d) => {
        await new Promise((resolve) => setTimeout(resolve, 1)) // real I/O-like wait
        handled.push(d.message.payload)
      },
      { maxInFlight: 1 },
    )
    for (let i = 0; i < 20; i++) await bus.publish('slow', i)
    await until(() => handled.length === 20)
    expect(handled).toEqual(Array.from({ length: 20 }, (_, i) => i))
    orrery.close()
  })

  it('two subscriptions to one join() stream are two members; leaving one keeps the other', async () => {
    const { bus } = await clocked()
    const group = bus.group<number>('jobs', 'w')
    const stream = group.join()
    const a: number[] = []
    const b: number[] = []
    const subA = stream.subscribe((d) => {
      a.push(d.message.payload)
      d.ack()
    })
    stream.subscribe((d) => {
      b.push(d.message.payload)
      d.ack()
    })
    expect(group.stats().members).toBe(2)
    subA.unsubscribe()
    expect(group.stats().members).toBe(1)
    await bus.publishBatch([1, 2, 3].map((payload) => ({ channel: 'jobs', payload })))
    await settle()
    expect(b).toEqual([1, 2, 3])
    expect(a).toEqual([])
  })
})

async function until(done: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!done()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

describe(`deleting a group (${ENGINE})`, () => {
  it('completes its members, discards its work, and a new group can replay the log', async () => {
    const { bus } = await clocked()
    const group = bus.group<number>('jobs', 'w')
    let completed = false
    const held: number[] = []
    group.join().subscribe({
      next: (d) => held.push(d.message.payload),
      complete: () => {
        completed = true
      },
    })
    await bus.publish('jobs', 1)
    await settle()
    group.delete()
    expect(completed).toBe(true)
    expect(bus.stats('jobs').groups).toBe(0)
    // Every later call on the handle names the group and channel, not the core's id.
    for (const call of [() => group.delete(), () => group.stats(), () => group.pending(), () => group.claim(0, { minIdle: 0 })]) {
      const err = await errorOf(call)
      expect(err).toMatchObject({ name: 'OrreryError', details: { group: 'w', channel: 'jobs' } })
      expect(err?.message).not.toMatch(/ id \d/)
    }
    for (const call of [() => group.delete(), () => group.stats(), () => group.pending()]) {
      const err = await errorOf(call)
      expect(err?.code).toBe('UNKNOWN_GROUP')
      expect(err?.message).toContain('consumer group w on jobs was deleted')
    }
    const joinError = await new Promise<{ code?: string; message?: string }>((resolve) => group.join().subscribe({ error: resolve }))
    expect(joinError).toMatchObject({ code: 'UNKNOWN_GROUP', message: expect.stringContaining('consumer group w on jobs was deleted') })
    const replay = collect(bus.group<number>('jobs', 'w', { from: 'earliest' }).join())
    await settle()
    expect(replay.map((d) => d.message.payload)).toEqual([1])
    expect(held).toEqual([1])
  })
})
