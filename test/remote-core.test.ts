/**
 * Channels bound to a transport, as the engines' bus core does them (`BusCore`, engine-neutral):
 * egress records out, ingest records in, remote groups settled through egress. No driver and no
 * broker here: the test plays the driver, reading and writing the manifest's `REMOTE` layout, so
 * the same file passing on every project means both engines agree byte for byte.
 */
import { afterEach, describe, expect, it } from 'vitest'

import { Orrery } from '../ts/node.js'
import { type BusCore, CHANNEL_STATS, GROUP_STATS, OVERFLOW, PENDING_FIELDS, START_MODES } from '../ts/engines/backend.js'
import { REMOTE } from '../ts/engines/manifest.js'
import { FrameWriter, forEachRecord, frameHeaders, framePayload, frameString, LAYOUT, MetaString } from '../ts/frame.js'
import { errorOf } from './helpers.js'

const T = 3 // a transport id
const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** One egress record, decoded through the manifest's offsets. */
interface Egress {
  kind: number
  id: number
  pos: string
  value: number
  frame: Uint8Array
}

function egressOf(bytes: Uint8Array | undefined): Egress[] {
  if (bytes === undefined) return []
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const out: Egress[] = []
  for (let at = 0; at < bytes.length; ) {
    const len = view.getUint32(at + REMOTE.offLength, true)
    const posLen = view.getUint32(at + REMOTE.offPosLen, true)
    const body = at + REMOTE.headerLen
    out.push({
      kind: bytes[at + REMOTE.offKind]!,
      id: view.getUint32(at + REMOTE.offId, true),
      pos: decoder.decode(bytes.subarray(body, body + posLen)),
      value: view.getFloat64(at + REMOTE.offValue, true),
      frame: bytes.slice(body + posLen, at + len),
    })
    expect(view.getUint32(at + REMOTE.offCount, true)).toBe(0)
    at += len
  }
  return out
}

/** One ingest record: `kind` live or group, laid out by the manifest's offsets. */
function record(kind: number, id: number, pos: string, count: number, value: number, frame: Uint8Array): Uint8Array {
  const p = encoder.encode(pos)
  const out = new Uint8Array(REMOTE.headerLen + p.length + frame.length)
  const view = new DataView(out.buffer)
  view.setUint32(REMOTE.offLength, out.length, true)
  out[REMOTE.offKind] = kind
  view.setUint32(REMOTE.offId, id, true)
  view.setUint32(REMOTE.offPosLen, p.length, true)
  view.setUint32(REMOTE.offCount, count, true)
  view.setFloat64(REMOTE.offValue, value, true)
  out.set(p, REMOTE.headerLen)
  out.set(frame, REMOTE.headerLen + p.length)
  return out
}

const live = (channel: number, at: number, frame: Uint8Array) => record(REMOTE.live, channel, '', 0, at, frame)
const grouped = (group: number, pos: string, count: number, frame: Uint8Array) => record(REMOTE.group, group, pos, count, 0, frame)

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/** One frame on `channel` (another process's id for it, on ingest). */
function frame(channel: number, payload: string, id = '', expiresAt = 0): Uint8Array {
  const w = new FrameWriter()
  w.push(channel, { id, kind: 'data', priority: 'normal', codec: 'raw', timestamp: 0, expiresAt }, encoder.encode(payload))
  return w.bytes().slice()
}

interface Delivery {
  consumer: number
  attempt: number
  seq: number
  payload: string
  channel: number
}

function drain(core: BusCore, now: number): Delivery[] {
  const got: Delivery[] = []
  for (let batch = core.drainRecords(now); batch; batch = core.drainedAll ? undefined : core.drainRecords(now)) {
    forEachRecord(batch, (consumer, attempt, seq, f) => {
      const channel = new DataView(f.buffer, f.byteOffset).getUint32(LAYOUT.offChannel, true)
      got.push({ consumer, attempt, seq, payload: decoder.decode(framePayload(f)), channel })
    })
  }
  return got
}

const stat = (core: BusCore, channel: number, name: (typeof CHANNEL_STATS)[number]) => core.stats(channel)[CHANNEL_STATS.indexOf(name)]
const groupStat = (core: BusCore, group: number, name: (typeof GROUP_STATS)[number]) => core.groupStats(group)[GROUP_STATS.indexOf(name)]

let open: Orrery[] = []
afterEach(() => {
  for (const o of open) o.close()
  open = []
})

async function core(): Promise<BusCore> {
  const orrery = await Orrery.create()
  open.push(orrery)
  return orrery.backend.createBus({ maxMessageBytes: 1 << 20 })
}

function subscribe(bus: BusCore, channel: number): number {
  return bus.subscribe(channel, START_MODES.latest, 0, 100, OVERFLOW.block)
}

function group(bus: BusCore, channel: number, visibility = 10_000, maxDeliveries = 3): number {
  return bus.group(channel, 'workers', START_MODES.latest, 0, 100, OVERFLOW.block, visibility, maxDeliveries)
}

describe('a bus core with a channel bound to a transport', () => {
  it('binds before first use only, once per transport', async () => {
    const bus = await core()
    const orders = bus.channel('orders')
    expect((await errorOf(() => bus.bind(orders, 0)))?.code).toBe('INVALID_ARGUMENT')
    expect((await errorOf(() => bus.bind(orders, 1.5)))?.code).toBe('INVALID_ARGUMENT')
    bus.bind(orders, T)
    bus.bind(orders, T)
    const other = await errorOf(() => bus.bind(orders, T + 1))
    expect(other?.code).toBe('INVALID_OPTION')
    expect(other?.message).toContain('"orders"')
    const used = bus.channel('used')
    subscribe(bus, used)
    const late = await errorOf(() => bus.bind(used, T))
    expect(late?.code).toBe('INVALID_OPTION')
    expect(late?.message).toContain('before first use')
    // Its dead-letter channel is bound with it: it cannot be bound elsewhere.
    expect((await errorOf(() => bus.bind(bus.channel('orders.dead-letter'), T + 1)))?.code).toBe('INVALID_OPTION')
  })

  it('turns each bound frame of a mixed batch into one PUBLISH record and delivers the local ones', async () => {
    const bus = await core()
    const orders = bus.channel('orders')
    bus.bind(orders, T)
    const local = bus.channel('local')
    const sub = subscribe(bus, local)
    bus.configure(orders, 0, 0, Number.POSITIVE_INFINITY, 250, false, 0)
    expect(bus.drainEgress()).toBeUndefined()
    const batch = concat(frame(orders, 'first', 'o-1'), frame(local, 'here'), frame(orders, 'second', 'o-2'), frame(orders, 'again', 'o-1'))
    expect(bus.publish(batch, 42)).toBe(3)
    expect(bus.hasPending()).toBe(true)
    const out = egressOf(bus.drainEgress())
    expect(out.map((o) => [o.kind, o.id, o.pos, o.value, decoder.decode(framePayload(o.frame))])).toEqual([
      [REMOTE.publish, orders, '', 250, 'first'],
      [REMOTE.publish, orders, '', 250, 'second'],
    ])
    for (const o of out) {
      const view = new DataView(o.frame.buffer, o.frame.byteOffset)
      expect(view.getUint32(0, true)).toBe(o.frame.length)
      expect(view.getFloat64(LAYOUT.offTimestamp, true)).toBe(42) // stamped as a local publish is
    }
    expect(frameString(out[0]!.frame, MetaString.Id)).toBe('o-1')
    expect(drain(bus, 42).map((d) => [d.consumer, d.payload])).toEqual([[sub, 'here']])
    expect(bus.drainEgress()).toBeUndefined()
    expect([stat(bus, orders, 'published'), stat(bus, orders, 'duplicates'), stat(bus, orders, 'retained')]).toEqual([2, 1, 0])
  })

  it('sends a request to a bound channel as one REQUEST record carrying its token and timeout', async () => {
    const bus = await core()
    const orders = bus.channel('orders')
    bus.bind(orders, T)
    const token = bus.request(frame(orders, 'q'), 1000, 0)
    const out = egressOf(bus.drainEgress())
    expect(out.map((r) => [r.kind, r.id, r.value])).toEqual([[REMOTE.request, orders, 1000]])
    expect(new DataView(out[0]!.frame.buffer).getUint32(LAYOUT.offReply, true)).toBe(token)
  })

  it("appends LIVE records to the mirror, for its subscribers, under this process's channel id", async () => {
    const bus = await core()
    const orders = bus.channel('orders')
    bus.bind(orders, T)
    const sub = subscribe(bus, orders)
    const applied = bus.ingest(
      concat(live(orders, 100, frame(777, 'one')), live(orders, 90, frame(777, 'two')), live(orders, 90, frame(777, 'x').subarray(0, 30))),
      200,
    )
    expect(applied).toBe(2)
    expect(drain(bus, 200)).toEqual([
      { consumer: sub, attempt: 0, seq: 0, payload: 'one', channel: orders },
      { consumer: sub, attempt: 0, seq: 1, payload: 'two', channel: orders },
    ])
    expect([stat(bus, orders, 'ingested'), stat(bus, orders, 'rejected'), stat(bus, orders, 'published')]).toEqual([2, 1, 0])
    expect(bus.drainEgress()).toBeUndefined()
  })

  it("hands GROUP records to members with the broker's count, and settles them as ACK, RELEASE and DEAD records", async () => {
    const bus = await core()
    const jobs = bus.channel('jobs')
    bus.bind(jobs, T)
    const dlq = bus.channel('jobs.dead-letter')
    const g = group(bus, jobs, 10_000, 3)
    expect(bus.groupRoom(g)).toBe(0)
    const m = bus.join(g, 5)
    expect(bus.groupRoom(g)).toBe(5)
    const batch = concat(grouped(g, '1-0', 1, frame(777, 'a')), grouped(g, '1-1', 2, frame(777, 'b')), grouped(g, '1-2', 4, frame(777, 'poison', 'p-1')))
    expect(bus.ingest(batch, 10)).toBe(3)
    expect(bus.groupRoom(g)).toBe(3)

    // Past maxDeliveries (3): dead at once, its dead-letter frame in the record.
    const [dead, ...none] = egressOf(bus.drainEgress())
    expect(none).toEqual([])
    expect([dead!.kind, dead!.id, dead!.pos]).toEqual([REMOTE.dead, g, '1-2'])
    expect(new DataView(dead!.frame.buffer).getUint32(LAYOUT.offChannel, true)).toBe(dlq)
    expect(frameString(dead!.frame, MetaString.Id)).toBe('p-1')
    expect(decoder.decode(framePayload(dead!.frame))).toBe('poison')
    expect(frameHeaders(dead!.frame)).toEqual({
      'x-orrery-dead-letter-reason': 'max-deliveries',
      'x-orrery-deliveries': '3',
      'x-orrery-origin-channel': 'jobs',
      'x-orrery-origin-seq': '1-2', // the broker's position: the local seq means nothing elsewhere
    })

    const got = drain(bus, 10)
    expect(got.map((d) => [d.consumer, d.seq, d.payload, d.channel])).toEqual([
      [m, 0, 'a', jobs],
      [m, 1, 'b', jobs],
    ])
    const pending = bus.pending(g, 10)
    const fields = PENDING_FIELDS.length
    const deliveriesAt = PENDING_FIELDS.indexOf('deliveries')
    expect([pending[deliveriesAt], pending[fields + deliveriesAt]]).toEqual([1, 2])

    bus.ack(m, got[0]!.seq, got[0]!.attempt)
    bus.nack(m, got[1]!.seq, got[1]!.attempt, 1500, '', 11)
    expect(egressOf(bus.drainEgress()).map((o) => [o.kind, o.id, o.pos, o.value, o.frame.length])).toEqual([
      [REMOTE.ack, g, '1-0', 0, 0],
      [REMOTE.release, g, '1-1', 1500, 0],
    ])
    // Released to the broker: the entry is no longer this member's.
    expect((await errorOf(() => bus.ack(m, got[1]!.seq, got[1]!.attempt)))?.code).toBe('STALE_ACK')
    expect(drain(bus, 2000)).toEqual([])
    expect(bus.nextDeadline()).toBe(Number.POSITIVE_INFINITY)

    // A nack with a reason dead-letters at once.
    bus.ingest(grouped(g, '1-3', 1, frame(777, 'bad')), 20)
    const [again] = drain(bus, 20)
    bus.nack(m, again!.seq, again!.attempt, 0, 'validation failed', 21)
    const [deadToo] = egressOf(bus.drainEgress())
    expect([deadToo!.kind, deadToo!.pos, frameHeaders(deadToo!.frame)['x-orrery-dead-letter-reason']]).toEqual([REMOTE.dead, '1-3', 'validation failed'])
    expect([groupStat(bus, g, 'acked'), groupStat(bus, g, 'nacked'), groupStat(bus, g, 'redelivered'), groupStat(bus, g, 'deadLettered')]).toEqual([1, 2, 1, 2])
    expect(stat(bus, jobs, 'deadLettered')).toBe(2)
    expect(stat(bus, dlq, 'retained')).toBe(0)
  })

  it('releases what a leaving member held, and an expired lease, to the broker', async () => {
    const bus = await core()
    const jobs = bus.channel('jobs')
    bus.bind(jobs, T)
    const g = group(bus, jobs, 100, 5)
    const m = bus.join(g, 1)
    bus.ingest(concat(grouped(g, 'a', 1, frame(777, 'a')), grouped(g, 'b', 1, frame(777, 'b'))), 0)
    const [a] = drain(bus, 0)
    expect(a?.payload).toBe('a')
    expect(groupStat(bus, g, 'backlog')).toBe(1)
    bus.ack(m, a!.seq, a!.attempt)
    expect(egressOf(bus.drainEgress()).map((o) => [o.kind, o.pos])).toEqual([[REMOTE.ack, 'a']])
    // Handed over at 60, 'b' keeps the lease it got at ingest: it ends at 100, not 160.
    const [b] = drain(bus, 60)
    expect(b?.payload).toBe('b')
    expect(bus.nextDeadline()).toBe(100)
    expect(drain(bus, 100)).toEqual([])
    expect(egressOf(bus.drainEgress()).map((o) => [o.kind, o.pos, o.value])).toEqual([[REMOTE.release, 'b', 0]])
    expect((await errorOf(() => bus.ack(m, b!.seq, b!.attempt)))?.code).toBe('STALE_ACK')
    bus.ingest(grouped(g, 'c', 1, frame(777, 'c')), 200)
    drain(bus, 200)
    bus.unsubscribe(m)
    expect(egressOf(bus.drainEgress()).map((o) => [o.kind, o.pos, o.value])).toEqual([[REMOTE.release, 'c', 0]])
  })

  it('gives an entry still waiting in the inbox back to the broker when its lease from ingest ends', async () => {
    const bus = await core()
    const jobs = bus.channel('jobs')
    bus.bind(jobs, T)
    const g = group(bus, jobs, 100, 5)
    bus.join(g, 1)
    // Read beyond the room: 'b' waits, with no member, but its lease runs.
    bus.ingest(concat(grouped(g, 'a', 1, frame(777, 'a')), grouped(g, 'b', 1, frame(777, 'b'))), 0)
    expect(drain(bus, 0).map((d) => d.payload)).toEqual(['a'])
    expect(bus.nextDeadline()).toBe(100)
    expect(drain(bus, 100)).toEqual([])
    expect(egressOf(bus.drainEgress()).map((o) => [o.kind, o.pos, o.value])).toEqual([
      [REMOTE.release, 'a', 0],
      [REMOTE.release, 'b', 0],
    ])
    expect([groupStat(bus, g, 'redelivered'), groupStat(bus, g, 'backlog'), groupStat(bus, g, 'pending')]).toEqual([2, 0, 0])
    expect(bus.groupRoom(g)).toBe(1)
  })

  it('releases a GROUP record at once when no member can take it', async () => {
    const bus = await core()
    const jobs = bus.channel('jobs')
    bus.bind(jobs, T)
    const g = group(bus, jobs, 10_000, 5)
    expect(bus.ingest(grouped(g, '1-0', 1, frame(777, 'a')), 0)).toBe(0)
    const m = bus.join(g, 5)
    bus.setPaused(m, true)
    expect(bus.ingest(grouped(g, '1-1', 1, frame(777, 'b')), 0)).toBe(0)
    expect(egressOf(bus.drainEgress()).map((o) => [o.kind, o.pos, o.value])).toEqual([
      [REMOTE.release, '1-0', 0],
      [REMOTE.release, '1-1', 0],
    ])
    expect([groupStat(bus, g, 'backlog'), groupStat(bus, g, 'pending')]).toEqual([0, 0])
    expect(bus.nextDeadline()).toBe(Number.POSITIVE_INFINITY)
  })

  it('dead-letters a well-formed GROUP frame too large for this process, and acks a malformed one', async () => {
    const orrery = await Orrery.create()
    open.push(orrery)
    const bus = orrery.backend.createBus({ maxMessageBytes: 100 })
    const jobs = bus.channel('jobs')
    bus.bind(jobs, T)
    const g = group(bus, jobs, 10_000, 5)
    bus.join(g, 5)
    const broken = frame(777, 'x')
    broken[LAYOUT.offVersion] = 99
    expect(bus.ingest(concat(grouped(g, '1-0', 2, frame(777, 'y'.repeat(200), 'big')), grouped(g, '1-1', 1, broken)), 0)).toBe(1)
    const out = egressOf(bus.drainEgress())
    expect(out.map((o) => [o.kind, o.pos])).toEqual([
      [REMOTE.dead, '1-0'],
      [REMOTE.ack, '1-1'],
    ])
    expect(frameString(out[0]!.frame, MetaString.Id)).toBe('big')
    expect(frameHeaders(out[0]!.frame)).toEqual({
      'x-orrery-dead-letter-reason': 'too-large',
      'x-orrery-deliveries': '1',
      'x-orrery-origin-channel': 'jobs',
      'x-orrery-origin-seq': '1-0',
    })
    expect(drain(bus, 0)).toEqual([])
    expect([stat(bus, jobs, 'rejected'), stat(bus, jobs, 'ingested'), stat(bus, jobs, 'deadLettered')]).toEqual([2, 0, 1])
  })

  it('refuses a malformed ingest batch whole with MALFORMED_FRAME', async () => {
    const bus = await core()
    const orders = bus.channel('orders')
    bus.bind(orders, T)
    const sub = subscribe(bus, orders)
    const good = live(orders, 1, frame(777, 'ok'))
    const badKind = live(orders, 1, frame(777, 'x'))
    badKind[REMOTE.offKind] = 9
    const short = good.subarray(0, REMOTE.headerLen - 1)
    const overlong = live(orders, 1, frame(777, 'x'))
    new DataView(overlong.buffer).setUint32(REMOTE.offLength, overlong.length + 1, true)
    for (const bad of [badKind, short, overlong]) {
      const err = await errorOf(() => bus.ingest(concat(good, bad), 1))
      expect(err?.code).toBe('MALFORMED_FRAME')
      expect(err?.message).toContain('ingest record 1')
    }
    expect((await errorOf(() => bus.ingest('nope' as unknown as Uint8Array, 1)))?.code).toBe('INVALID_ARGUMENT')
    for (const now of [Number.NaN, Number.POSITIVE_INFINITY]) {
      const err = await errorOf(() => bus.ingest(good, now))
      expect(err?.code).toBe('INVALID_ARGUMENT')
      expect(err?.message).toContain('now')
    }
    expect(drain(bus, 1)).toEqual([])
    expect(stat(bus, orders, 'ingested')).toBe(0)
    expect(bus.ingest(good, 1)).toBe(1)
    expect(drain(bus, 1).map((d) => [d.consumer, d.payload])).toEqual([[sub, 'ok']])
  })
})
