/**
 * How a driver's looks ride out an outage (ts/transports/asking.ts) and how a `latest`
 * subscription waits for its marker (ts/transports/catch-up.ts), without a broker: a look asked
 * again while its errors pass, ended by a refusal, the transport's close or its subscription's
 * cancel; a cancelled subscription's marker then reports nothing and holds up no publish.
 */
import { describe, expect, it } from 'vitest'

import { ASK_AGAIN_MS, type Asker, askUntilAnswered } from '../ts/transports/asking.js'
import { CatchUps, catchUpWith, GroupStarts, Markers, sendable, serversKey } from '../ts/transports/catch-up.js'
import type { Egress, GroupRef } from '../ts/transports/driver.js'
import { Writes } from '../ts/transports/writes.js'
import { OrreryError } from '../ts/errors.js'

class Passing extends Error {}
class Gone extends Error {}
class Refused extends Error {}

/** A broker that fails each look with the next of `errors`, then answers `answer`; past `reportAfterMs` a passing failure is reported. */
function broker(errors: Error[], reportAfterMs = 300, answer = 'answered') {
  const seen = { looks: 0, mended: 0, reported: [] as unknown[], up: true, closed: false }
  const asker: Asker = {
    closed: () => seen.closed,
    connected: () => seen.up,
    passing: (e) => e instanceof Passing,
    mended: (e) => {
      if (!(e instanceof Gone)) return false
      seen.mended++
      return true
    },
    reportAfterMs,
    report: (e) => void seen.reported.push(e),
  }
  const look = async () => {
    const error = errors[seen.looks++]
    if (error !== undefined) throw error
    return answer
  }
  return { seen, asker, look }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('asking a broker until it answers', () => {
  it('asks again while errors pass or mend, and reports a long wait once', async () => {
    const { seen, asker, look } = broker([new Passing('a'), new Gone('b'), new Passing('c'), new Passing('d')], 100)
    const started = Date.now()
    expect(await askUntilAnswered(asker, look, () => false)).toBe('answered')
    expect(seen.looks).toBe(5)
    expect(seen.mended).toBe(1)
    expect(Date.now() - started).toBeGreaterThanOrEqual(4 * ASK_AGAIN_MS - 20)
    // The second failure (~200 ms) is past reportAfterMs (100) but mended, which is never
    // reported; the third (~400 ms) is the first passing one past it: said once, with that error.
    expect(seen.reported).toHaveLength(1)
    expect((seen.reported[0] as Error).message).toBe('c')
  })

  it('ends at once with a refusal, and with the last error on close or stop', async () => {
    const refused = broker([new Passing('a'), new Refused('no')])
    await expect(askUntilAnswered(refused.asker, refused.look, () => false)).rejects.toThrow('no')
    expect(refused.seen.looks).toBe(2)

    const closing = broker(Array.from({ length: 100 }, () => new Passing('down')))
    setTimeout(() => (closing.seen.closed = true), 300)
    await expect(askUntilAnswered(closing.asker, closing.look, () => false)).rejects.toThrow('down')
    expect(closing.seen.looks).toBeLessThanOrEqual(4)

    let stopped = false
    const stopping = broker(Array.from({ length: 100 }, () => new Passing('down')))
    setTimeout(() => (stopped = true), 300)
    await expect(askUntilAnswered(stopping.asker, stopping.look, () => stopped)).rejects.toThrow('down')
  })

  it('waits while the connection is down, and says nothing of it', async () => {
    const { seen, asker } = broker([], 300)
    // Two failures with the connection up, then one past reportAfterMs as the connection drops.
    const look = async () => {
      seen.looks++
      if (seen.looks === 3) seen.up = false
      if (seen.looks <= 3) throw new Passing(`look ${seen.looks}`)
      return 'answered'
    }
    const answer = askUntilAnswered(asker, look, () => false)
    await sleep(1_000)
    expect(seen.looks).toBe(3)
    seen.up = true
    expect(await answer).toBe('answered')
    expect(seen.looks).toBe(4)
    expect(seen.reported).toEqual([])
  })
})

describe("a latest subscription's catch-up", () => {
  it('cancelled while its marker is asked: publishes wait no more, asking stops, nothing is reported or started', async () => {
    const { seen, asker, look } = broker(Array.from({ length: 1_000 }, () => new Passing('down')))
    const markers = new Markers()
    const waiters = new CatchUps<string>()
    const failed: unknown[] = []
    let started = 0
    const cancel = catchUpWith(
      (cancelled) => askUntilAnswered(asker, look, cancelled),
      (marker) => markers.add('stream', marker),
      (marker) =>
        waiters.add(
          marker,
          () => void started++,
          () => {},
          (error) => void failed.push(error),
          () => false,
        ),
    )
    await sleep(2 * ASK_AGAIN_MS + 50)
    // A write made now is held by the marker.
    const write: { records: string[]; after: Promise<unknown> | undefined } = { records: ['stream'], after: undefined }
    markers.hold(write, (key) => key)
    expect(write.after).toBeDefined()
    expect(waiters.waiting).toBe(true)

    const looks = seen.looks
    cancel()
    expect(waiters.waiting).toBe(false)
    // Publishes wait for it no more (at once, not when the asking next gives up), and it is not asked again.
    expect(markers.any).toBe(false)
    expect(await Promise.race([write.after!.then(() => 'released'), sleep(5).then(() => 'held')])).toBe('released')
    await sleep(3 * ASK_AGAIN_MS)
    expect(seen.looks).toBe(looks)
    expect(failed).toEqual([])
    expect(started).toBe(0)
  })

  it('a marker that fails for a subscription still waiting goes to its failure; once the driver ended, the subscription starts instead', async () => {
    const waiters = new CatchUps<string>()
    const failed: unknown[] = []
    let started = 0
    let ended = false
    const add = () =>
      waiters.add(
        Promise.reject(new Refused('no')),
        () => void started++,
        () => {},
        (error) => void failed.push(error),
        () => ended,
      )
    add()
    await sleep(0)
    expect(failed).toHaveLength(1)
    expect(started).toBe(0)
    expect(waiters.waiting).toBe(false)
    ended = true
    add()
    await sleep(0)
    expect(failed).toHaveLength(1)
    expect(started).toBe(1)
    expect(waiters.waiting).toBe(false)
  })

  it('a write held by a marker goes once the marker is answered, or at once when its subscription goes; writes behind it wait', async () => {
    const markers = new Markers()
    let answer = () => {}
    const marker = new Promise<void>((resolve) => {
      answer = resolve
    })
    const forget = markers.add('s', marker)
    type W = { records: string[]; after: Promise<unknown> | undefined; settled: boolean }
    const free: W = { records: ['other'], after: undefined, settled: false }
    const held: W = { records: ['s', 'other'], after: undefined, settled: false }
    markers.hold(free, (k) => k)
    markers.hold(held, (k) => k)
    expect(free.after).toBeUndefined()
    expect(held.after).toBeDefined()
    // A batch goes up to the held write, and a settled one before it is no reason to wait.
    expect(sendable([free, held, free])).toBe(1)
    expect(sendable([{ ...free, settled: true, after: held.after }, held])).toBe(1)
    forget()
    await held.after
    expect(held.after).toBeUndefined()
    expect(sendable([free, held, free])).toBe(3)
    // A marker answered lets its writes go too.
    markers.add('s', marker)
    const next: W = { records: ['s'], after: undefined, settled: false }
    markers.hold(next, (k) => k)
    expect(await Promise.race([next.after!.then(() => 'released'), sleep(5).then(() => 'held')])).toBe('held')
    answer()
    await next.after
    expect(markers.any).toBe(false)
  })

  it('a marker is asked after the writes to its stream open then, of every Orrery of the process, and those alone', async () => {
    const markers = new Markers()
    const keyOf = (r: Egress) => ('channel' in r ? r.channel : undefined)
    const publish = (channel: string): Egress => ({ kind: 'publish', channel, frame: new Uint8Array(0) }) as unknown as Egress
    const expired = () => new OrreryError('TRANSPORT_UNAVAILABLE', 'late')
    const one = new Writes(markers, keyOf)
    const two = new Writes(markers, keyOf)
    expect(markers.earlier('s')).toBeUndefined()
    const a = one.add([publish('s')], 60_000, expired)
    const b = two.add([publish('other'), publish('s')], 60_000, expired)
    const c = two.add([publish('other')], 60_000, expired)
    const earlier = markers.earlier('s')!
    let settled = false
    void earlier.then(() => {
      settled = true
    })
    // A write made after the marker was asked is not waited for.
    const later = one.add([publish('s')], 60_000, expired)
    one.succeed(a.write)
    await sleep(0)
    expect(settled).toBe(false)
    // Either way: a failed write settles too.
    two.fail(b.write, expired())
    await b.written.catch(() => {})
    await sleep(0)
    expect(settled).toBe(true)
    expect(markers.earlier('other')).toBeDefined()
    two.succeed(c.write)
    one.succeed(later.write)
    // No write open: neither driver is asked any more.
    expect(markers.earlier('s')).toBeUndefined()
    expect(markers.earlier('other')).toBeUndefined()
  })

  it("a group from 'latest' is made after the earlier writes to its stream, holds later ones until made, and is not made once closed", async () => {
    const markers = new Markers()
    const starts = new GroupStarts(markers)
    const keyOf = (r: Egress) => ('channel' in r ? r.channel : undefined)
    const publish = (channel: string): Egress => ({ kind: 'publish', channel, frame: new Uint8Array(0) }) as unknown as Egress
    const expired = () => new OrreryError('TRANSPORT_UNAVAILABLE', 'late')
    const writes = new Writes(markers, keyOf)
    const group = (id: number, at: 'latest' | 'earliest'): GroupRef => ({ id, name: `g${id}`, channel: 's', start: { at }, visibilityMs: 1000 }) as GroupRef
    type W = { records: string[]; after: Promise<unknown> | undefined; settled: boolean }
    const later = (): W => {
      const w: W = { records: ['s'], after: undefined, settled: false }
      markers.hold(w, (k) => k)
      return w
    }
    const before = writes.add([publish('s')], 60_000, expired)
    const made: string[] = []
    let finish = () => {}
    const one = starts.make(
      group(1, 'latest'),
      's',
      () => {
        made.push('g1')
        return new Promise<void>((resolve) => {
          finish = resolve
        })
      },
      () => false,
    )
    const held = later()
    await sleep(0)
    // Not made while a write made before it is open; a write made after waits for it.
    expect(made).toEqual([])
    expect(held.after).toBeDefined()
    writes.succeed(before.write)
    await sleep(0)
    expect(made).toEqual(['g1'])
    expect(await Promise.race([held.after!.then(() => 'released'), sleep(5).then(() => 'held')])).toBe('held')
    finish()
    await one
    await held.after
    expect(markers.any).toBe(false)
    // Closed while it waited for earlier writes: never made, and the writes it held go at once.
    let closed = false
    const open = writes.add([publish('s')], 60_000, expired)
    const two = starts.make(
      group(2, 'latest'),
      's',
      async () => {
        made.push('g2')
      },
      () => closed,
    )
    const waiting = later()
    closed = true
    starts.drop(2)
    await waiting.after
    writes.succeed(open.write)
    await expect(two).rejects.toThrow('group g2 went before it was made')
    expect(made).toEqual(['g1'])
    // A group from 'earliest' is made at once and holds nothing.
    const pending = writes.add([publish('s')], 60_000, expired)
    await starts.make(
      group(3, 'earliest'),
      's',
      async () => {
        made.push('g3')
      },
      () => false,
    )
    expect(made).toEqual(['g1', 'g3'])
    expect(later().after).toBeUndefined()
    writes.succeed(pending.write)
  })

  it('one server spelled two ways is one marker key; two servers are two', () => {
    expect(serversKey(['nats://u:p@Host-A:4222', 'host-b'], 4222)).toBe(serversKey(['host-b:4222', 'tls://host-a:4222/'], 4222))
    expect(serversKey(['host-a:4222', 'host-a'], 4222)).toBe('host-a:4222')
    expect(serversKey(['[::1]', 'nats://[::1]:5222'], 4222)).toBe('[::1]:4222,[::1]:5222')
    expect(serversKey(['host-a:9092'], 9092)).not.toBe(serversKey(['host-a:9093'], 9092))
    expect(serversKey(['host-a'], 9092)).not.toBe(serversKey(['host-b'], 9092))
  })
})
