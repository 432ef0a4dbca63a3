import { describe, expect, it } from 'vitest'

import { runnerLink } from '../ts/bus/bus.js'
import { type Delivery, Orrery } from '../ts/node.js'
import { ENGINE, IN_BROWSER } from './engine.js'
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

  it("redelivers a group responder's request after the group's visibilityTimeout, within the requester's timeout", async () => {
    const { bus, advance } = await clocked()
    const stuck: string[] = []
    // The first member takes the request and never answers (a responder that hangs or died).
    const first = bus.respond(
      'work',
      (req) => {
        stuck.push(String(req.payload))
        return new Promise<string>(() => {})
      },
      { group: 'workers', visibilityTimeout: 100 },
    )
    const reply = bus.request<string>('work', 'job', { timeout: 1_000 })
    await settle()
    expect(stuck).toEqual(['job'])
    first()
    bus.respond('work', (req) => `done ${String(req.payload)}`, { group: 'workers' })
    await settle()
    advance(100)
    await settle()
    expect((await reply).payload).toBe('done job')
  })

  it('refuses group responder options without a group, before anything subscribes', async () => {
    const { bus } = await clocked()
    bus.channel('alone')
    for (const options of [{ visibilityTimeout: 100 }, { from: 'earliest' as const }]) {
      const err = await errorOf(() => bus.respond('alone', () => 1, options))
      expect(err).toMatchObject({ code: 'INVALID_OPTION', message: expect.stringContaining('give `group` too') })
    }
    expect(bus.stats('alone')).toMatchObject({ subscribers: 0, groups: 0 })
    const err = await errorOf(() => bus.respond('alone', () => 1, { group: 'g', visibilityTimeout: -1 }))
    expect(err).toMatchObject({ code: 'INVALID_OPTION', details: { option: 'visibilityTimeout' } })
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
    runnerLink(bus).answer(deliveries[4]!.message, 'done')
    expect((await toA).payload).toBe('done')
  })
})

describe(`replies to a request of the same Orrery (${ENGINE})`, () => {
  // Such a reply is settled in the core without being queued and resolved from the frame the
  // responder sent, without a drain: it must look exactly like one that was queued and drained.
  it('carry the reply as sent: kind, correlation, codec, headers of none, seq 0', async () => {
    const { bus } = await clocked()
    bus.respond<number, { doubled: number }>('math.double', (req) => ({ doubled: req.payload * 2 }), { codec: 'msgpack' })
    const seen = collect(bus.subscribe('math.double'))
    const reply = await bus.request<{ doubled: number }>('math.double', 21, { id: 'req-1', timeout: 1_000 })
    expect(reply).toMatchObject({ channel: 'math.double', seq: 0, kind: 'response', codec: 'msgpack', correlationId: 'req-1', headers: {} })
    expect(reply.payload).toEqual({ doubled: 42 })
    // The request itself went through the channel as any message does.
    expect(seen.map((m) => [m.id, m.kind])).toEqual([['req-1', 'query']])
    // (The responder and the subscriber share one core subscription: one delivery.)
    expect(bus.stats('math.double')).toMatchObject({ published: 1, delivered: 1 })
    expect(bus.lateReplies()).toBe(0)
  })

  it('take the first of several local responders; the others are late replies', async () => {
    const { bus } = await clocked()
    bus.respond('svc', () => 'first')
    bus.respond('svc', () => 'second')
    expect((await bus.request('svc', 1)).payload).toBe('first')
    expect(bus.lateReplies()).toBe(1)
  })

  it('reject with HANDLER_ERROR when an async handler rejects, and settle nothing twice', async () => {
    const { bus } = await clocked()
    const errors: unknown[] = []
    bus.events.subscribe((e) => {
      if (e.type === 'handler-error') errors.push(e.error)
    })
    bus.respond('async.fragile', async () => {
      await settle(2)
      throw Object.assign(new Error('nope'), { code: 'E_NOPE' })
    })
    const err = await errorOf(() => bus.request('async.fragile', 1))
    expect(err).toMatchObject({ code: 'HANDLER_ERROR', details: { remoteCode: 'E_NOPE', channel: 'async.fragile' } })
    expect(errors).toHaveLength(1)
    expect(bus.lateReplies()).toBe(0)
  })

  it('time out while the handler holds the request, and drop its answer as late', async () => {
    const { bus, advance } = await clocked()
    let answer: (value: string) => void = () => {}
    bus.respond('held', () => new Promise<string>((resolve) => (answer = resolve)))
    const outcome = bus.request('held', 1, { timeout: 50 }).then(
      () => 'resolved',
      (e: { code: string }) => e.code,
    )
    await settle()
    advance(50)
    expect(await outcome).toBe('TIMEOUT')
    answer('too late')
    await settle()
    expect(bus.lateReplies()).toBe(1)
    // The next request on the channel is answered as usual.
    bus.respond('quick', () => 'ok')
    expect((await bus.request('quick', 1)).payload).toBe('ok')
  })

  it('answer many requests in flight at once, each with its own reply', async () => {
    const { bus } = await clocked()
    bus.respond<number, number>('square', (req) => req.payload * req.payload)
    const replies = await Promise.all(Array.from({ length: 200 }, (_, n) => bus.request<number>('square', n)))
    expect(replies.map((r) => r.payload)).toEqual(Array.from({ length: 200 }, (_, n) => n * n))
    expect(bus.lateReplies()).toBe(0)
  })
})

describe(`a settled request holds nothing open (${ENGINE})`, () => {
  /** The timers that keep Node's event loop alive (unref'd ones are not listed). */
  const heldTimers = () => process.getActiveResourcesInfo().filter((what) => what === 'Timeout').length

  // A request arms the timer for its own timeout; once answered, that timer must not keep the
  // process alive until the timeout (5 s by default, or days with a long timeout).
  it.skipIf(IN_BROWSER)('lets the process exit once every request is answered, and holds it again for a new one', async () => {
    const orrery = await Orrery.create()
    try {
      const { bus } = orrery
      const before = heldTimers()
      bus.respond<number, number>('svc', (request) => request.payload + 1)
      expect((await bus.request<number>('svc', 1, { timeout: 2 ** 31 - 1 })).payload).toBe(2)
      expect(heldTimers()).toBe(before)
      // An answer that comes later: the request's timer holds the process while it waits.
      let answer: (n: number) => void = () => {}
      bus.respond<number, number>('slow', () => new Promise<number>((resolve) => (answer = resolve)))
      const pending = bus.request<number>('slow', 1, { timeout: 60_000 })
      await settle()
      expect(heldTimers()).toBe(before + 1)
      answer(7)
      expect((await pending).payload).toBe(7)
      expect(heldTimers()).toBe(before)
    } finally {
      orrery.close()
    }
  })
})
