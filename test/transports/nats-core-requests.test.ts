/**
 * A nats transport with `requests: 'core'`: requests travel as core NATS messages, never stored.
 * Several Orrery instances stand for several processes on one real NATS server; the same suite on
 * both engines. What is checked: a group's request is handled once across processes and many are
 * in flight at once; broadcast responders each answer; nothing of a request reaches the channel's
 * stream; a lease that lapses sends the request to the group again; signed requests verify, and a
 * copy sent again or one signed with another key is refused; a bad option value is refused.
 */
import { afterEach, describe, expect, inject, it } from 'vitest'

import { isOrreryError, Orrery } from '../../ts/node.js'
import { brokerName } from '../../ts/transports/nats.js'
import { ENGINE } from '../engine.js'
import { BACKENDS, listen, stop, until } from './backends.js'

const nats = BACKENDS.find((b) => b.name === 'nats')!
const RUN = `ncr-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}-${ENGINE}`
let runs = 0
const K1 = 'first-secret-of-at-least-16-bytes'
const K2 = 'other-secret-of-at-least-16-bytes'

describe.skipIf(nats.skip !== undefined)(`core NATS requests (${ENGINE})${nats.skip ? ` [skipped: ${nats.skip}]` : ''}`, () => {
  if (nats.broken !== undefined) {
    it('has its server', () => {
      throw new Error(nats.broken)
    })
    return
  }
  const url = inject('natsUrl')!
  const opened: Orrery[] = []
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    for (const o of opened.splice(0)) await stop(o)
    for (const c of cleanups.splice(0)) await c().catch(() => {})
  })
  const open = async (prefix: string, extra: Record<string, unknown> = {}): Promise<Orrery> => {
    const o = await Orrery.create({ transports: { main: { kind: 'nats', servers: url, requests: 'core', ...extra } }, bindings: { [`${prefix}*`]: 'main' } })
    opened.push(o)
    return o
  }
  const fresh = () => `${RUN}-${++runs}.`
  /** What the server's own client sees on `subject` (from when this resolves), and a way to send it again. */
  const tap = async (subject: string) => {
    const { connect } = await import('@nats-io/transport-node')
    const nc = await connect({ servers: url })
    cleanups.push(() => nc.close())
    const captured: Array<{ data: Uint8Array; headers: import('@nats-io/transport-node').MsgHdrs | undefined }> = []
    nc.subscribe(subject, {
      callback: (_, m) => {
        captured.push({ data: m.data, headers: m.headers })
      },
    })
    await nc.flush()
    return { captured, publish: (data: Uint8Array, headers: import('@nats-io/transport-node').MsgHdrs) => nc.publish(subject, data, { headers }) }
  }

  it('a group request is handled once, by a member in any process, 400 in flight; none of them is an entry of the stream', { timeout: 60_000 }, async () => {
    const p = fresh()
    const ch = `${p}add`
    const [a, b, c] = [await open(p), await open(p), await open(p)]
    const handled = new Map<Orrery, number[]>([
      [b, []],
      [c, []],
    ])
    for (const o of [b, c]) {
      o.bus.respond<number, number>(
        ch,
        (req) => {
          handled.get(o)!.push(req.payload)
          return req.payload + 1
        },
        { group: 'adders' },
      )
    }
    await Promise.all([b.bus.attached(ch), c.bus.attached(ch)])
    const n = 400
    const replies = await Promise.all(Array.from({ length: n }, (_, i) => a.bus.request<number>(ch, i, { timeout: 20_000 })))
    expect(replies.map((r) => r.payload)).toEqual(Array.from({ length: n }, (_, i) => i + 1))
    const all = [...handled.get(b)!, ...handled.get(c)!].sort((x, y) => x - y)
    expect(all).toEqual(Array.from({ length: n }, (_, i) => i))
    // The server spreads a queue group's messages over its members.
    expect(handled.get(b)!.length).toBeGreaterThan(0)
    expect(handled.get(c)!.length).toBeGreaterThan(0)
    // Publishes still go to the stream; requests never did: a reader from the start sees the publish only.
    await a.bus.publish(ch, -1)
    const d = await open(p)
    const seen = listen(d.bus.subscribe<number>(ch, { from: 'earliest' }))
    await until(() => seen.items.length > 0, 10_000, 'the publish')
    expect(seen.items.map((m) => m.payload)).toEqual([-1])
  })

  it("a group's pull of its stream lasts through the core requests its members answer; a publish still reaches them", { timeout: 30_000 }, async () => {
    const p = fresh()
    const ch = `${p}busy`
    const [a, b] = [await open(p), await open(p)]
    const seen: unknown[] = []
    b.bus.respond<number, number>(
      ch,
      (req) => {
        seen.push(req.payload)
        return 1
      },
      { group: 'g' },
    )
    await b.bus.attached(ch)
    // Every pull the group makes of its stream is a request to JetStream's API.
    const { captured: pulls } = await tap(`$JS.API.CONSUMER.MSG.NEXT.*.${brokerName('g')}`)
    for (let i = 0; i < 5; i++) {
      const replies = await Promise.all(Array.from({ length: 64 }, (_, j) => a.bus.request<number>(ch, i * 64 + j, { timeout: 10_000 })))
      expect(replies.every((r) => r.payload === 1)).toBe(true)
    }
    // Core requests in members' hands are no reason to end the pull and make another (one per batch, before).
    expect(pulls.length).toBeLessThanOrEqual(1)
    await a.bus.publish(ch, 'plain')
    await until(() => seen.includes('plain'), 10_000, 'the publish delivered to the group')
    expect(seen.length).toBe(321)
  })

  it("members with no room, holding core requests, pull nothing of the stream: another process's members get its messages", { timeout: 30_000 }, async () => {
    const p = fresh()
    const ch = `${p}full`
    const [a, b, c] = [await open(p), await open(p), await open(p)]
    // In b, one member with room for two that never answers; in c, one that takes everything.
    const stuck: unknown[] = []
    b.bus
      .group(ch, 'g')
      .join({ maxInFlight: 2 })
      .subscribe((d) => {
        stuck.push(d.message.payload)
      })
    const got: unknown[] = []
    c.bus
      .group(ch, 'g')
      .join({ maxInFlight: 64 })
      .subscribe((d) => {
        got.push(d.message.payload)
        d.ack()
      })
    await Promise.all([b.bus.attached(ch), c.bus.attached(ch)])
    // Requests until b's member holds two (the server hands each to b or c): b has no room left.
    for (let i = 0; stuck.length < 2; i++) {
      if (i === 200) throw new Error('b was handed no requests')
      void a.bus.request(ch, `rq${i}`, { timeout: 200 }).catch(() => {})
      await new Promise((r) => setTimeout(r, 5))
    }
    // A turn for b to end its pull, then the stream's messages.
    await new Promise((r) => setTimeout(r, 100))
    const sent = Array.from({ length: 20 }, (_, i) => `m${i}`)
    for (const m of sent) await a.bus.publish(ch, m)
    // All of them reach c now, none waits in b for its visibility timeout (30 s).
    await until(
      () => sent.every((m) => got.includes(m)),
      5_000,
      "the stream's messages at c",
      () => ({ got, stuck }),
    )
    expect(stuck.filter((m) => sent.includes(m as string))).toEqual([])
  })

  it('broadcast responders in two processes each answer: the first reply settles the request, the other is a late reply', { timeout: 30_000 }, async () => {
    const p = fresh()
    const ch = `${p}who`
    const [a, b, c] = [await open(p), await open(p), await open(p)]
    const asked: string[] = []
    for (const [name, o] of [
      ['b', b],
      ['c', c],
    ] as const) {
      o.bus.respond<string, string>(ch, (req) => {
        asked.push(`${name}:${req.payload}:${req.headers['trace']}`)
        return name
      })
    }
    await Promise.all([b.bus.attached(ch), c.bus.attached(ch)])
    const late = a.bus.lateReplies()
    const reply = await a.bus.request<string>(ch, 'x', { timeout: 10_000, headers: { trace: 't-1' } })
    expect(['b', 'c']).toContain(reply.payload)
    await until(
      () => asked.length === 2 && a.bus.lateReplies() === late + 1,
      10_000,
      'the second answer',
      () => asked,
    )
    expect(asked.sort()).toEqual(['b:x:t-1', 'c:x:t-1'])
  })

  for (const signed of [false, true]) {
    it(`a request whose lease lapses where it was taken goes to the group again and is answered${signed ? ' (signed anew)' : ''}`, {
      timeout: 30_000,
    }, async () => {
      const p = fresh()
      const ch = `${p}slow`
      const extra = signed ? { signing: { keys: { k1: K1 }, sign: 'k1' } } : {}
      const [a, b] = [await open(p, extra), await open(p, extra)]
      let calls = 0
      b.bus.respond<string, string>(
        ch,
        (req) => {
          calls++
          // The first delivery is never answered: its lease lapses and the request is sent again.
          return calls === 1 ? new Promise<string>(() => {}) : `done:${req.payload}`
        },
        { group: 'slow', visibilityTimeout: 300 },
      )
      await b.bus.attached(ch)
      const started = Date.now()
      const reply = await a.bus.request<string>(ch, 'job', { timeout: 10_000 })
      expect(reply.payload).toBe('done:job')
      expect(calls).toBe(2)
      expect(Date.now() - started).toBeGreaterThanOrEqual(300)
      expect(b.bus.stats(ch)).toMatchObject({ signatureRefused: 0, replayRefused: 0 })
    })
  }

  it('a request sent again goes to its group alone: another group and a subscriber on the channel see it once', { timeout: 30_000 }, async () => {
    const p = fresh()
    const ch = `${p}fanout`
    const [a, b, c] = [await open(p), await open(p), await open(p)]
    let calls = 0
    b.bus.respond<string, string>(
      ch,
      () => {
        calls++
        return calls === 1 ? new Promise<string>(() => {}) : 'slow'
      },
      { group: 'slow', visibilityTimeout: 300 },
    )
    const audited: string[] = []
    c.bus.respond<string, string>(
      ch,
      (req) => {
        audited.push(req.payload)
        return 'audit'
      },
      { group: 'audit' },
    )
    const watched = listen(c.bus.subscribe<string>(ch))
    await Promise.all([b.bus.attached(ch), c.bus.attached(ch)])
    // The audit group answers first; the slow group's answer after its lease lapsed comes late.
    expect((await a.bus.request<string>(ch, 'job', { timeout: 10_000 })).payload).toBe('audit')
    await until(() => calls === 2 && a.bus.lateReplies() === 1, 10_000, 'the slow group asked again')
    // Given time to come twice, the other group and the subscriber still saw it once.
    await new Promise((resolve) => setTimeout(resolve, 500))
    expect(audited).toEqual(['job'])
    expect(watched.items.map((m) => m.payload)).toEqual(['job'])
  })

  it('a shutdown hands what its process holds to another process of the group at once', { timeout: 30_000 }, async () => {
    const p = fresh()
    const ch = `${p}handover`
    const [a, b, c] = [await open(p), await open(p), await open(p)]
    let held = 0
    // A long lease: only the hand-back can bring the request to c in time.
    b.bus.respond<string, string>(
      ch,
      () => {
        held++
        return new Promise<string>(() => {})
      },
      { group: 'g', visibilityTimeout: 30_000 },
    )
    await b.bus.attached(ch)
    const reply = a.bus.request<string>(ch, 'job', { timeout: 10_000 })
    await until(() => held === 1, 10_000, 'the request held by b')
    c.bus.respond<string, string>(ch, (req) => `c:${req.payload}`, { group: 'g', visibilityTimeout: 30_000 })
    await c.bus.attached(ch)
    const started = Date.now()
    opened.splice(opened.indexOf(b), 1)
    await stop(b)
    expect((await reply).payload).toBe('c:job')
    expect(Date.now() - started).toBeLessThan(5_000)
  })

  // Core requests come through a queue subscription, which the drain's "no room" does not limit:
  // a draining process went on taking its share of the group's new requests.
  it("a draining shutdown answers what its process holds; the group's new requests go to its other processes", { timeout: 30_000 }, async () => {
    const p = fresh()
    const ch = `${p}drain`
    const [a, b, c] = [await open(p), await open(p), await open(p)]
    let release = (): void => {}
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    let held = 0
    b.bus.respond<string, string>(
      ch,
      async (req) => {
        held++
        if (req.payload === 'first') await gate
        return `b:${req.payload}`
      },
      { group: 'g', visibilityTimeout: 30_000 },
    )
    await b.bus.attached(ch)
    const first = a.bus.request<string>(ch, 'first', { timeout: 10_000 })
    await until(() => held === 1, 10_000, 'the request held by b')
    c.bus.respond<string, string>(ch, (req) => `c:${req.payload}`, { group: 'g' })
    await c.bus.attached(ch)
    opened.splice(opened.indexOf(b), 1)
    const stopping = b.shutdown({ drainMs: 10_000 })
    await new Promise((r) => setTimeout(r, 100))
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => a.bus.request<string>(ch, String(i), { timeout: 10_000 })))
    expect(replies.map((r) => r.payload)).toEqual(Array.from({ length: 20 }, (_, i) => `c:${i}`))
    release()
    expect((await first).payload).toBe('b:first')
    expect(await stopping).toEqual({ graceful: true, errors: [] })
    expect(held).toBe(1)
  })

  it('signed: a re-sent request whose delivery count was changed is refused', { timeout: 30_000 }, async () => {
    const p = fresh()
    const ch = `${p}count`
    const signing = { keys: { k1: K1 }, sign: 'k1' }
    const [a, b] = [await open(p, { signing }), await open(p, { signing })]
    let calls = 0
    b.bus.respond<string, string>(
      ch,
      () => {
        calls++
        return calls === 1 ? new Promise<string>(() => {}) : 'done'
      },
      { group: 'g', visibilityTimeout: 300 },
    )
    await b.bus.attached(ch)
    // The subject a re-send to group g travels on: only the group's queue and this listener read it.
    const { captured, publish } = await tap(`orrery.rq.${brokerName(ch)}.g.${brokerName('g')}`)
    expect((await a.bus.request<string>(ch, 'job', { timeout: 10_000 })).payload).toBe('done')
    await until(() => captured.length === 1, 10_000, 'the re-send seen on its subject')
    const headers = captured[0]!.headers!
    expect(headers.get('Orrery-Delivered')).toBe('1')
    headers.set('Orrery-Delivered', '7')
    publish(captured[0]!.data, headers)
    await until(
      () => b.bus.stats(ch).signatureRefused === 1,
      10_000,
      'the changed count refused',
      () => b.bus.stats(ch),
    )
    expect(calls).toBe(2)
  })

  it('past maxDeliveries a core request goes to the dead-letter channel; its requester times out', { timeout: 30_000 }, async () => {
    const p = fresh()
    const ch = `${p}doomed`
    const [a, b] = [await open(p), await open(p)]
    b.bus.group(ch, 'g', { maxDeliveries: 2, visibilityTimeout: 200 })
    let calls = 0
    b.bus.respond<string, string>(
      ch,
      () => {
        calls++
        return new Promise<string>(() => {})
      },
      { group: 'g' },
    )
    const dead = listen(a.bus.subscribe<string>(`${ch}.dead-letter`, { from: 'earliest' }))
    await Promise.all([b.bus.attached(ch), a.bus.attached(`${ch}.dead-letter`)])
    const err = await a.bus.request(ch, 'x', { timeout: 2_000 }).catch((e: unknown) => e)
    expect(isOrreryError(err, 'TIMEOUT')).toBe(true)
    await until(() => dead.items.length === 1, 10_000, 'the dead letter')
    expect(calls).toBe(2)
    expect(dead.items[0]!.payload).toBe('x')
    expect(dead.items[0]!.headers['x-orrery-dead-letter-reason']).toBe('max-deliveries')
  })

  it('signed: answered between processes with the same keys; a copy sent again and a request signed with another key are refused', {
    timeout: 30_000,
  }, async () => {
    const p = fresh()
    const ch = `${p}svc`
    const signing = { keys: { k1: K1 }, sign: 'k1' }
    const [a, b] = [await open(p, { signing }), await open(p, { signing })]
    let handled = 0
    b.bus.respond<number, number>(
      ch,
      (req) => {
        handled++
        return req.payload * 2
      },
      { group: 'g' },
    )
    await b.bus.attached(ch)
    // The server's own client sees the request on its subject, and sends the same bytes again.
    const { captured, publish } = await tap(`orrery.rq.${brokerName(ch)}`)
    expect((await a.bus.request<number>(ch, 21, { timeout: 10_000 })).payload).toBe(42)
    expect(handled).toBe(1)
    await until(() => captured.length === 1, 10_000, 'the request seen on its subject')
    expect(captured[0]!.headers?.get('Orrery-Sig')).toMatch(/^k1:\d+:/)
    publish(captured[0]!.data, captured[0]!.headers!)
    await until(
      () => b.bus.stats(ch).replayRefused === 1,
      10_000,
      'the copy refused',
      () => b.bus.stats(ch),
    )
    // Another key: refused by the responder, so its requester times out.
    const other = await open(p, { signing: { keys: { k2: K2 }, sign: 'k2' } })
    const err = await other.bus.request(ch, 1, { timeout: 500 }).catch((e: unknown) => e)
    expect(isOrreryError(err, 'TIMEOUT')).toBe(true)
    await until(() => b.bus.stats(ch).signatureRefused === 1, 10_000, 'the foreign request refused')
    expect(handled).toBe(1)
    // The signed pair still talks.
    expect((await a.bus.request<number>(ch, 5, { timeout: 10_000 })).payload).toBe(10)
  })

  it('attached: at once for a channel of this process only; INVALID_ARGUMENT for a bad name; CLOSED once closed', { timeout: 30_000 }, async () => {
    const p = fresh()
    const a = await open(p)
    await a.bus.attached('local.only')
    // Nothing read here yet: nothing to wait for.
    await a.bus.attached(`${p}idle`)
    const bad = await a.bus.attached(42 as never).catch((e: unknown) => e)
    expect(isOrreryError(bad, 'INVALID_ARGUMENT')).toBe(true)
    a.close()
    const closed = await a.bus.attached(`${p}idle`).catch((e: unknown) => e)
    expect(isOrreryError(closed, 'CLOSED')).toBe(true)
  })

  it("what is no request on a channel's core subject is ignored, in the same batch as requests that are", { timeout: 30_000 }, async () => {
    const p = fresh()
    const ch = `${p}noise`
    const [a, b] = [await open(p), await open(p)]
    const seen: unknown[] = []
    const failures: unknown[] = []
    b.bus.events.subscribe((e) => {
      if (e.type === 'transport-error' || e.type === 'engine-failed') failures.push(e)
    })
    b.bus.respond<number, number>(
      ch,
      (req) => {
        seen.push(req.payload)
        return req.payload + 1
      },
      { group: 'g' },
    )
    await b.bus.attached(ch)
    const { captured, publish } = await tap(`orrery.rq.${brokerName(ch)}`)
    expect((await a.bus.request<number>(ch, 1, { timeout: 10_000 })).payload).toBe(2)
    await until(() => captured.length === 1, 10_000, 'the request seen on its subject')
    const good = captured[0]!.data
    const route = (timeout: number, length: number, address = 'x'): Uint8Array => {
      const out = new Uint8Array(11 + address.length)
      out[0] = 1
      new DataView(out.buffer).setUint16(1, length, true)
      new DataView(out.buffer).setFloat64(3, timeout, true)
      out.set(new TextEncoder().encode(address), 11)
      return out
    }
    const junk = [
      new Uint8Array(0),
      new TextEncoder().encode('hello'),
      route(Number.NaN, 1),
      route(-5, 1),
      route(1_000, 0, ''),
      route(1_000, 500),
      Uint8Array.of(2, ...good.subarray(1)),
      // A well-formed route before a frame that is none.
      Uint8Array.of(...route(1_000, 1), 1, 2, 3),
    ]
    // Sent between two copies of a real request, so they reach the responder in one read.
    const headers = (await import('@nats-io/transport-node')).headers()
    publish(good, headers)
    for (const data of junk) publish(data, headers)
    publish(good, headers)
    await until(() => seen.length === 3, 10_000, 'both copies answered')
    expect(seen).toEqual([1, 1, 1])
    expect((await a.bus.request<number>(ch, 5, { timeout: 10_000 })).payload).toBe(6)
    expect(failures).toEqual([])
  })

  it("a request nobody serves times out (nothing stores it to be answered later); `requests` other than 'stream' or 'core' is INVALID_OPTION", {
    timeout: 30_000,
  }, async () => {
    const p = fresh()
    const a = await open(p)
    const err = await a.bus.request(`${p}nobody`, 1, { timeout: 300 }).catch((e: unknown) => e)
    expect(isOrreryError(err, 'TIMEOUT')).toBe(true)
    for (const requests of ['fast', 1, null, 'Core']) {
      const refused = await Orrery.create({ transports: { main: { kind: 'nats', servers: url, requests } as never } }).catch((e: unknown) => e)
      expect(isOrreryError(refused, 'INVALID_OPTION'), String(requests)).toBe(true)
      expect((refused as { details: Record<string, unknown> }).details['option']).toBe('transports.main.requests')
    }
  })
})
