/**
 * Bad input to consumer groups (issue 11): group options, join and consume, deliveries' nack,
 * claim; each refused with a typed error at the call, nothing joined or consumed, the process
 * and the engine unharmed.
 */
import { afterAll, describe, expect, it } from 'vitest'

import { Orrery, type BusEvent, type Delivery } from '../ts/node.js'
import { escaped, expectEngineUsable, expectRefused, NOT_A_COUNT } from './bad-input.js'
import { ENGINE } from './engine.js'

const tick = () => new Promise((resolve) => setTimeout(resolve, 0))

afterAll(async () => {
  await expectEngineUsable()
})

describe(`group options (${ENGINE})`, () => {
  it('refuses numeric strings, fractions and prototype names, the same on both engines', async () => {
    const { bus } = await Orrery.create()
    bus.channel('jobs')
    const bad: Array<Record<string, unknown>> = [
      { buffer: '10' },
      { buffer: 0 },
      { buffer: 1.5 },
      { buffer: 2 ** 28 + 1 },
      { visibilityTimeout: '100' },
      { visibilityTimeout: 0 },
      { visibilityTimeout: -1 },
      { visibilityTimeout: NaN },
      { visibilityTimeout: Infinity },
      { maxDeliveries: 1.5 },
      { maxDeliveries: 0 },
      { maxDeliveries: '5' },
      { maxDeliveries: 2 ** 32 },
      { overflow: '__proto__' },
      { overflow: 'toString' },
      { overflow: 'constructor' },
      { overflow: 1 },
      { from: 'now' },
      { from: { seq: -1 } },
      { from: { time: 8.64e15 + 1 } },
      { from: null },
      { schema: {} },
      { schema: 5 },
    ]
    for (const options of bad) {
      await expectRefused(() => bus.group('jobs', 'g', options as never), 'INVALID_OPTION').catch((e: Error) => {
        throw new Error(`${JSON.stringify(options)}: ${e.message}`)
      })
    }
    for (const options of [null, 5, 'x']) await expectRefused(() => bus.group('jobs', 'g', options as never), 'INVALID_ARGUMENT')
    for (const name of ['', 'a b', 5, null]) await expectRefused(() => bus.group('jobs', name as never), ['INVALID_NAME', 'INVALID_ARGUMENT'])
    expect(bus.stats('jobs').groups).toBe(0)
  })
})

describe(`join and consume (${ENGINE})`, () => {
  it('refuses maxInFlight 0 or -1 at the call: nothing joins, nothing escapes to the process', async () => {
    const { bus } = await Orrery.create()
    const group = bus.group('jobs', 'g')
    for (const [label, maxInFlight] of [...NOT_A_COUNT, ['0', 0], ['2^28 + 1', 2 ** 28 + 1]] as const) {
      const caught = await escaped(async () => {
        await expectRefused(() => group.consume(() => {}, { maxInFlight: maxInFlight as never }), 'INVALID_OPTION')
        await expectRefused(() => group.join({ maxInFlight: maxInFlight as never }), 'INVALID_OPTION')
      })
      expect(caught, label).toEqual([])
    }
    expect(group.stats().members).toBe(0)
  })

  it('refuses bad handlers and consume options', async () => {
    const { bus } = await Orrery.create()
    const group = bus.group('jobs', 'g')
    for (const handler of [null, undefined, 5, 'f']) await expectRefused(() => group.consume(handler as never), 'INVALID_ARGUMENT')
    for (const options of [null, 5]) {
      await expectRefused(() => group.consume(() => {}, options as never), 'INVALID_ARGUMENT')
      await expectRefused(() => group.join(options as never), 'INVALID_ARGUMENT')
    }
    for (const options of [{ retryDelay: -1 }, { retryDelay: '5' }, { retryDelay: Infinity }, { isPermanent: 'yes' }]) {
      await expectRefused(() => group.consume(() => {}, options as never), 'INVALID_OPTION')
    }
    expect(group.stats().members).toBe(0)
  })

  it('reports a throwing join subscriber on bus.events and keeps the process alive', async () => {
    const { bus } = await Orrery.create()
    const events: BusEvent[] = []
    bus.events.subscribe((e) => events.push(e))
    const group = bus.group<number>('jobs', 'g')
    const seen: number[] = []
    const caught = await escaped(async () => {
      group.join().subscribe((d) => {
        seen.push(d.message.payload)
        d.ack()
        throw new Error('member failed')
      })
      await bus.publishBatch([1, 2].map((payload) => ({ channel: 'jobs', payload })))
      await tick()
    })
    expect(caught).toEqual([])
    expect(seen).toEqual([1, 2])
    expect(events.filter((e) => e.type === 'subscriber-error')).toEqual([
      expect.objectContaining({ channel: 'jobs', group: 'g' }),
      expect.objectContaining({ channel: 'jobs', group: 'g' }),
    ])
    expect(group.stats()).toMatchObject({ acked: 2, pending: 0 })
  })
})

describe(`settling and claiming (${ENGINE})`, () => {
  it('refuses bad nack and claim arguments without settling anything', async () => {
    const { bus } = await Orrery.create()
    const group = bus.group<number>('jobs', 'g')
    const got: Delivery<number>[] = []
    const member = group.join()
    member.subscribe((d) => got.push(d))
    await bus.publish('jobs', 1)
    await tick()
    const delivery = got[0]!
    for (const options of [{ delay: '5' }, { delay: -1 }, { delay: NaN }, { delay: Infinity }, { deadLetter: 5 }, { deadLetter: null }]) {
      await expectRefused(() => delivery.nack(options as never), 'INVALID_OPTION')
    }
    await expectRefused(() => delivery.nack(null as never), 'INVALID_ARGUMENT')
    for (const options of [null, undefined, 5, { minIdle: '5' }, { minIdle: -1 }, { minIdle: 0, max: 0 }, { minIdle: 0, max: 1.5 }]) {
      await expectRefused(() => group.claim(member.memberId(), options as never), ['INVALID_OPTION', 'INVALID_ARGUMENT'])
    }
    for (const id of ['1', -1, 1.5, NaN, null]) await expectRefused(() => group.claim(id as never, { minIdle: 0 }), 'INVALID_ARGUMENT')
    expect(group.stats()).toMatchObject({ pending: 1, nacked: 0, acked: 0 })
    delivery.ack()
    expect(group.stats()).toMatchObject({ pending: 0, acked: 1 })
  })

  it("refuses a claim for another group's member (nothing of that group moves), and a deleted group's claim", async () => {
    const { bus } = await Orrery.create()
    const a = bus.group<number>('jobs.a', 'ga')
    const b = bus.group<number>('jobs.b', 'gb')
    a.join().subscribe(() => {})
    const b1 = b.join()
    b1.subscribe(() => {})
    const b2 = b.join()
    b2.subscribe(() => {})
    await bus.publish('jobs.b', 1)
    await tick()
    const holder = b.pending()[0]!.member
    const other = holder === b1.memberId() ? b2.memberId() : b1.memberId()
    // A claim on group a naming group b's member: refused, b's delivery stays where it is.
    const refused = await expectRefused(() => a.claim(other, { minIdle: 0 }), 'UNKNOWN_SUBSCRIPTION')
    expect(refused.message).toContain('consumer group ga on jobs.a')
    expect(b.pending().map((p) => p.member)).toEqual([holder])
    // Through a handle of its own group it moves.
    expect(bus.group<number>('jobs.b', 'gb').claim(other, { minIdle: 0 })).toBe(1)
    expect(b.pending().map((p) => p.member)).toEqual([other])
    b.delete()
    await expectRefused(() => b.claim(other, { minIdle: 0 }), 'UNKNOWN_GROUP')
  })
})

describe(`a closed Orrery's groups (${ENGINE})`, () => {
  it('fail every call with CLOSED, and join adds no member', async () => {
    const { orrery, bus } = await Orrery.create().then((o) => ({ orrery: o, bus: o.bus }))
    const group = bus.group('jobs', 'g')
    const got: Delivery[] = []
    group.join().subscribe((d) => got.push(d))
    await bus.publish('jobs', 1)
    await tick()
    orrery.close()
    await expectRefused(() => group.join(), 'CLOSED')
    await expectRefused(() => group.join().subscribe(() => {}), 'CLOSED')
    await expectRefused(() => group.consume(() => {}), 'CLOSED')
    await expectRefused(() => group.stats(), 'CLOSED')
    await expectRefused(() => group.pending(), 'CLOSED')
    await expectRefused(() => group.claim(0, { minIdle: 0 }), 'CLOSED')
    await expectRefused(() => group.delete(), 'CLOSED')
    await expectRefused(() => got[0]!.ack(), 'CLOSED')
    await expectRefused(() => got[0]!.nack(), ['CLOSED', 'STALE_ACK'])
  })
})

describe(`dead-letter reasons (${ENGINE})`, () => {
  it('a reason too long for a header, or with a lone surrogate, is made to fit: the dead letter keeps all its headers', async () => {
    const { bus } = await Orrery.create()
    const group = bus.group<number>('jobs', 'g')
    const got: Delivery<number>[] = []
    group.join().subscribe((d) => got.push(d))
    const dead: Array<Record<string, string>> = []
    bus.subscribe('jobs.dead-letter').subscribe((m) => dead.push({ ...m.headers }))
    await bus.publishBatch([1, 2].map((payload) => ({ channel: 'jobs', payload })))
    await tick()
    // Before: a reason over 65,535 bytes was dropped by the core, with the delivery count after it.
    got[0]!.nack({ deadLetter: 'r'.repeat(1_000_000) })
    got[1]!.nack({ deadLetter: 'a\uD800b' })
    await tick()
    expect(dead).toHaveLength(2)
    expect(dead[0]!['x-orrery-dead-letter-reason']).toBe(`${'r'.repeat(4095)}…`)
    expect(dead[0]!['x-orrery-deliveries']).toBe('1')
    expect(dead[1]!['x-orrery-dead-letter-reason']).toBe('a\uFFFDb')
    expect(dead[1]!['x-orrery-origin-channel']).toBe('jobs')
  })
})
