import { describe, expect, it } from 'vitest'

import type { Delivery } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { clocked, collect, errorOf, settle } from './helpers.js'

describe(`request/response and direct messages (${ENGINE})`, () => {
  it('answers a request, correlating the reply', async () => {
    const { bus } = await clocked()
    bus.respond<{ a: number; b: number }, number>('math.add', (req) => req.payload.a + req.payload.b)
    const reply = await bus.request<number>('math.add', { a: 2, b: 3 }, { sender: 'client' })
    expect(reply.payload).toBe(5)
    expect(reply.kind).toBe('response')
    expect(reply.correlationId).toBeTruthy()
  })

  it('fails at once with NO_RESPONDER when nobody consumes the channel', async () => {
    const { bus } = await clocked()
    const err = await errorOf(() => bus.request('nobody.home', 1))
    expect(err).toMatchObject({ name: 'OrreryError', code: 'NO_RESPONDER' })
    expect(err?.message).toContain('no responder for channel "nobody.home"')
    expect(err?.message).toContain('respond()')
  })

  it('times out with TIMEOUT, and drops and counts a late reply', async () => {
    const { bus, advance } = await clocked()
    const held: Array<() => void> = []
    bus.respond('slow', () => new Promise<string>((resolve) => held.push(() => resolve('late'))))
    const pending = bus.request('slow', 'x', { timeout: 200 })
    const outcome = pending.then(
      () => 'resolved',
      (e: { code: string }) => e.code,
    )
    await settle()
    advance(199)
    await settle()
    advance(1)
    expect(await outcome).toBe('TIMEOUT')
    held[0]!()
    await settle(10)
    expect(bus.lateReplies()).toBe(1)
  })

  it('turns a throwing handler into HANDLER_ERROR with its message', async () => {
    const { bus } = await clocked()
    bus.respond('fragile', () => {
      throw Object.assign(new Error('disk full'), { code: 'ENOSPC' })
    })
    const err = await errorOf(() => bus.request('fragile', 1))
    expect(err).toMatchObject({ code: 'HANDLER_ERROR', details: { remoteCode: 'ENOSPC' } })
    expect(err?.message).toContain('disk full')
  })

  it('shares requests among the members of a responder group', async () => {
    const { bus } = await clocked()
    const served: string[] = []
    bus.respond(
      'svc',
      () => {
        served.push('a')
        return 'a'
      },
      { group: 'replicas' },
    )
    bus.respond(
      'svc',
      () => {
        served.push('b')
        return 'b'
      },
      { group: 'replicas' },
    )
    const replies = await Promise.all([1, 2, 3, 4].map((n) => bus.request<string>('svc', n)))
    expect(replies.map((r) => r.payload).sort()).toEqual(['a', 'a', 'b', 'b'])
    expect(served.length).toBe(4)
  })

  it('delivers direct messages to an agent inbox', async () => {
    const { bus } = await clocked()
    const alice = collect(bus.inbox<string>('alice'))
    const bob = collect(bus.inbox<string>('bob'))
    await bus.send('alice', 'hi alice', { sender: 'bob' })
    await settle()
    expect(alice.map((m) => [m.payload, m.sender, m.recipient])).toEqual([['hi alice', 'bob', 'alice']])
    expect(bob).toEqual([])
  })

  it('fails waiting requests with CLOSED when the Orrery closes', async () => {
    const { orrery, bus } = await clocked()
    bus.respond('never', () => new Promise(() => {}))
    const pending = bus.request('never', 1)
    orrery.close()
    expect(await errorOf(() => pending)).toMatchObject({ code: 'CLOSED' })
  })

  it('refuses a bad timeout', async () => {
    const { bus } = await clocked()
    bus.respond('svc', () => 1)
    expect((await errorOf(() => bus.request('svc', 1, { timeout: 0 })))?.code).toBe('INVALID_OPTION')
  })
})

describe(`responders that return what cannot be sent (${ENGINE})`, () => {
  it('fail the request with HANDLER_ERROR instead of crashing or timing out', async () => {
    const { bus } = await clocked()
    bus.respond('void', () => undefined)
    bus.respond('void-async', async () => undefined)
    expect(await errorOf(() => bus.request('void', 1))).toMatchObject({ code: 'HANDLER_ERROR' })
    expect(await errorOf(() => bus.request('void-async', 1))).toMatchObject({ code: 'HANDLER_ERROR' })
  })
})

describe(`requests and backpressure (${ENGINE})`, () => {
  it('a request to a full blocking responder waits for room instead of failing', async () => {
    const { bus } = await clocked()
    const served: number[] = []
    bus.subscribe<number>('busy', { buffer: 1, overflow: 'block' }).subscribe(() => {})
    bus.respond<number, number>('busy', (req) => {
      served.push(req.payload)
      return req.payload * 2
    })
    void bus.publish('busy', 0) // fills the one-message buffer until the next drain
    const reply = await bus.request<number>('busy', 21)
    expect(reply.payload).toBe(42)
    expect(served).toContain(21)
  })

  it('a request waits only behind its own channel: another channel answers at once, the waiting one keeps its order', async () => {
    const { bus } = await clocked()
    const deliveries: Array<Delivery<number>> = []
    // A's responders are a group whose member holds one delivery and buffers two more.
    bus
      .group<number>('A', 'slow', { buffer: 2, overflow: 'block' })
      .join({ maxInFlight: 1 })
      .subscribe((d) => deliveries.push(d))
    bus.respond<number, number>('B', (req) => req.payload + 1)
    await bus.publishBatch([1, 2, 3].map((payload) => ({ channel: 'A', payload })))
    await settle()
    const waiting = bus.publish('A', 4)
    await settle()
    expect(bus.stats('A').published).toBe(3)
    // B is not held up by A's wait.
    expect((await bus.request<number>('B', 41)).payload).toBe(42)
    // A request to A queues behind the publish waiting there.
    const toA = bus.request<number>('A', 5, { timeout: 60_000 })
    await settle()
    expect(bus.stats('A').published).toBe(3)
    for (let i = 0; i < 5; i++) {
      await settle()
      deliveries[i]!.ack()
    }
    await waiting
    expect(deliveries.map((d) => d.message.payload)).toEqual([1, 2, 3, 4, 5])
    bus.answer(deliveries[4]!.message, 'done')
    expect((await toA).payload).toBe('done')
  })
})
