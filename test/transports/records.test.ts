/**
 * The records a request and its reply cross in (ts/transports/records.ts against the core's
 * `REMOTE` layout), on both engines and without a broker: two Orrery instances whose channel is
 * bound straight in their cores, egress carried from one to the other by hand as a driver would.
 */
import { describe, expect, it } from 'vitest'

import { FRAME } from '../../ts/engines/manifest.js'
import { forEachEgress, IngestWriter, REMOTE, routeOf } from '../../ts/transports/records.js'
import { ENGINE } from '../engine.js'
import { type Clocked, clocked } from '../helpers.js'

interface Out {
  kind: number
  id: number
  value: number
  frame: Uint8Array
  route: string
}

function egress(c: Clocked): Out[] {
  const out: Out[] = []
  const batch = c.bus.core.drainEgress()
  if (batch === undefined) return out
  forEachEgress(batch, (kind, id, value, _pos, frame, route) => out.push({ kind, id, value, frame: frame.slice(), route: new TextDecoder().decode(route) }))
  return out
}

/** An instance with `svc` bound to transport 1 in its core (no driver: the test carries the records). */
async function bound(): Promise<{ c: Clocked; ch: number }> {
  const c = await clocked()
  const ch = c.bus.channel('svc')
  c.bus.core.bind(ch, 1)
  return { c, ch }
}

describe(`request records (${ENGINE})`, () => {
  it('routeOf takes a reply address and a timeout > 0 (Infinity too), else the entry is a plain message', () => {
    expect(routeOf('ab12', '250')).toEqual({ address: 'ab12', timeoutMs: 250 })
    expect(routeOf('ab12', 'Infinity')).toEqual({ address: 'ab12', timeoutMs: Infinity })
    for (const [address, timeout] of [
      ['', '250'],
      [undefined, '250'],
      ['ab12', undefined],
      ['ab12', '0'],
      ['ab12', '-5'],
      ['ab12', 'NaN'],
      ['ab12', 'soon'],
    ] as const)
      expect(routeOf(address, timeout)).toBeUndefined()
  })

  it('a request crosses as REQUEST, is answered under a local token, and its REPLY settles it in the requester', async () => {
    const a = await bound()
    const b = await bound()
    b.c.bus.respond<number, number>('svc', (req) => req.payload + 1)
    const answer = a.c.bus.request<number>('svc', 41, { timeout: 500 })
    a.c.bus.flush()
    const requests = egress(a.c)
    expect(requests.map((r) => [r.kind, r.id, r.value])).toEqual([[REMOTE.request, a.ch, 500]])
    const writer = new IngestWriter()
    writer.live(b.ch, 1_000, requests[0]!.frame, { address: 'process-a', timeoutMs: requests[0]!.value })
    expect(b.c.bus.core.ingest(writer.take()!, b.c.now())).toBe(1)
    b.c.advance(0)
    const replies = egress(b.c)
    expect(replies.map((r) => [r.kind, r.id, r.route])).toEqual([[REMOTE.reply, b.ch, 'process-a']])
    writer.replied(replies[0]!.frame)
    expect(a.c.bus.core.ingest(writer.take()!, a.c.now())).toBe(1)
    a.c.advance(0)
    const reply = await answer
    expect(reply.payload).toBe(42)
    expect(reply.channel).toBe('svc')
    expect(a.c.bus.lateReplies() + b.c.bus.lateReplies()).toBe(0)
  })

  it('an UNSENT record forgets a request its driver could not write (one that waits for ever too): a reply to it is late', async () => {
    const a = await bound()
    void a.c.bus.request<number>('svc', 1, { timeout: Infinity }).catch(() => {})
    a.c.bus.flush()
    const [request] = egress(a.c)
    const token = new DataView(request!.frame.buffer).getUint32(FRAME.offReply, true)
    const writer = new IngestWriter()
    writer.unsent(token)
    writer.unsent(token)
    expect(a.c.bus.core.ingest(writer.take()!, a.c.now())).toBe(1)
    writer.replied(request!.frame)
    expect(a.c.bus.core.ingest(writer.take()!, a.c.now())).toBe(0)
    expect(a.c.bus.lateReplies()).toBe(1)
  })

  it('a request read back long expired by its broker time opens no route: its answer goes nowhere', async () => {
    const a = await bound()
    const b = await bound()
    void a.c.bus.request<number>('svc', 2, { timeout: 500 }).catch(() => {})
    a.c.bus.flush()
    const [old] = egress(a.c)
    let answered = 0
    b.c.bus.respond<number, number>('svc', (req) => {
      answered++
      return req.payload
    })
    // Written by the broker's clock 500 ms + 60 s (the allowed skew) + 1 ms before it is read.
    b.c.advance(61_000)
    const writer = new IngestWriter()
    writer.live(b.ch, b.c.now() - 500 - 60_001, old!.frame, { address: 'process-a', timeoutMs: 500 })
    // One just inside the allowance is answered.
    writer.live(b.ch, b.c.now() - 500 - 59_999, old!.frame, { address: 'process-a', timeoutMs: 500 })
    expect(b.c.bus.core.ingest(writer.take()!, b.c.now())).toBe(2)
    b.c.advance(0)
    await Promise.resolve()
    b.c.advance(0)
    expect(answered).toBe(2)
    expect(egress(b.c).map((r) => [r.kind, r.route])).toEqual([[REMOTE.reply, 'process-a']])
    expect(b.c.bus.stats('svc')).toMatchObject({ ingested: 2, routesDropped: 0 })
  })

  it("a reply after the requester's timeout is dropped where it is made, and counted there", async () => {
    const a = await bound()
    const b = await bound()
    let respond: ((n: number) => void) | undefined
    b.c.bus.respond<number, number>('svc', () => new Promise<number>((resolve) => (respond = resolve)))
    const answer = a.c.bus.request<number>('svc', 1, { timeout: 100 }).catch((error: unknown) => error)
    a.c.bus.flush()
    const writer = new IngestWriter()
    const [request] = egress(a.c)
    writer.live(b.ch, 1_000, request!.frame, { address: 'process-a', timeoutMs: request!.value })
    b.c.bus.core.ingest(writer.take()!, b.c.now())
    b.c.advance(0)
    a.c.advance(100)
    expect(((await answer) as { code?: string }).code).toBe('TIMEOUT')
    // The responder's clock passes the requester's timeout too: its mapping is gone.
    b.c.advance(100)
    respond!(2)
    await Promise.resolve()
    b.c.advance(0)
    expect(egress(b.c)).toEqual([])
    expect(b.c.bus.lateReplies()).toBe(1)
  })
})
