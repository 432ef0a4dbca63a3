import fc from 'fast-check'
import { describe, expect, it } from 'vitest'

import { LIMITS } from '../ts/engines/manifest.js'
import { FrameWriter } from '../ts/frame.js'
import { ERROR_CODES, Orrery } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { clocked, errorOf } from './helpers.js'

const FRAME_ERRORS = new Set(['MALFORMED_FRAME', 'MESSAGE_TOO_LARGE', 'UNKNOWN_CHANNEL'])

describe(`bad input reaches a typed error, never a crash (${ENGINE})`, () => {
  it('random bytes published straight into the core are refused and publish nothing', async () => {
    const { bus } = await clocked()
    bus.channel('target')
    const core = bus.core
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), (bytes) => {
        try {
          core.publish(bytes, 0)
        } catch (err) {
          return FRAME_ERRORS.has((err as { code: string }).code)
        }
        return true // a random batch can be a valid frame by chance; then it was published whole
      }),
      { numRuns: 500 },
    )
    const published = bus.stats('target').published
    expect(published).toBeLessThanOrEqual(1)
  })

  it('a valid frame with one corrupted byte is refused as a whole batch', async () => {
    const { bus } = await clocked()
    const channel = bus.channel('target')
    const w = new FrameWriter()
    w.push(channel, { id: 'x', kind: 'data', priority: 'normal', codec: 'json', timestamp: 0, expiresAt: 0, headers: { a: 'b' } }, new Uint8Array([1, 2, 3]))
    const good = w.bytes().slice()
    fc.assert(
      fc.property(fc.nat(good.length - 1), fc.integer({ min: 1, max: 255 }), (at, delta) => {
        const bad = good.slice()
        bad[at] = (bad[at]! + delta) & 0xff
        const batch = new Uint8Array(good.length * 2)
        batch.set(good)
        batch.set(bad, good.length)
        const before = bus.stats('target').published
        try {
          bus.core.publish(batch, 0)
          return true // some bytes (payload, timestamps, ids) may take any value
        } catch (err) {
          return FRAME_ERRORS.has((err as { code: string }).code) && bus.stats('target').published === before
        }
      }),
      { numRuns: 300 },
    )
  })

  it('maps every other refusal to its code', async () => {
    const { bus } = await clocked()
    const core = bus.core
    const codeOf = async (fn: () => unknown) => (await errorOf(fn))?.code
    expect(await codeOf(() => bus.subscriberStats(123_456))).toBe('UNKNOWN_SUBSCRIPTION')
    expect(await codeOf(() => core.join(987_654, 1))).toBe('UNKNOWN_GROUP')
    expect(await codeOf(() => core.stats(4242))).toBe('UNKNOWN_CHANNEL')
    expect(await codeOf(() => core.ack(123_456, 0, 1))).toBe('UNKNOWN_SUBSCRIPTION') // never issued
    const w = new FrameWriter()
    w.push(bus.channel('svc'), { id: '', kind: 'response', priority: 'normal', codec: 'json', timestamp: 0, expiresAt: 0 }, new Uint8Array([0x31]))
    expect(await codeOf(() => core.reply(w.bytes()))).toBe('NOT_A_REPLY')
    expect(await codeOf(() => core.channel(42 as never))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(() => core.subscribe(bus.channel('svc'), 0, 0, 10, 7))).toBe('INVALID_OPTION')
    expect(await codeOf(() => core.subscribe(bus.channel('svc'), 9, 0, 10, 0))).toBe('INVALID_OPTION')
    expect(
      await codeOf(() => bus.subscribe('svc', { from: { seq: -1 } }).subscribe({ error: () => {} }) && core.subscribe(bus.channel('svc'), 2, -1, 10, 0)),
    ).toBe('INVALID_OPTION')
    expect(await codeOf(() => bus.publish('svc', 1, { kind: 'shout' as never }))).toBe('INVALID_OPTION')
    expect(await codeOf(() => bus.channel('svc', { retention: { maxAgeMs: -1 } }))).toBe('INVALID_OPTION')
    expect(await codeOf(() => bus.channel('svc', { dedupWindowMs: Number.NaN }))).toBe('INVALID_OPTION')
  })
})

describe(`messages name the user's objects (${ENGINE})`, () => {
  it('UNKNOWN_SUBSCRIPTION says what may have become of the subscription', async () => {
    const { bus } = await clocked()
    const err = await errorOf(() => bus.subscriberStats(123_456))
    expect(err).toMatchObject({ code: 'UNKNOWN_SUBSCRIPTION' })
    expect(err?.message).toContain('no subscription 123456: it was removed (unsubscribed')
  })

  it('MESSAGE_TOO_LARGE names the channel, the size and the maxMessageBytes that would allow it', async () => {
    const { bus } = await clocked({ maxMessageBytes: 1_000 })
    const err = await errorOf(() =>
      bus.publishBatch([
        { channel: 'small', payload: 1 },
        { channel: 'uploads', payload: 'x'.repeat(2_000) },
      ]),
    )
    expect(err).toMatchObject({ name: 'OrreryError', code: 'MESSAGE_TOO_LARGE' })
    expect(err?.message).toMatch(/^a message of \d{4} bytes \(frame included\) to channel "uploads" is over maxMessageBytes = 1000 \(item 1 of its batch\)/)
    expect(err?.message).toContain('pass a larger maxMessageBytes to Orrery.create')
    expect(bus.stats('small').published).toBe(0)
    bus.respond('uploads', () => 'ok')
    const request = await errorOf(() => bus.request('uploads', 'x'.repeat(2_000)))
    expect(request?.message).toContain('to channel "uploads" is over maxMessageBytes = 1000')
  })

  it('VALUE_TOO_LARGE names the key and the maxValueBytes that would allow it', async () => {
    const store = await Orrery.openStore({ engine: ENGINE, maxValueBytes: 16 })
    const err = await errorOf(() => store.namespace('blobs').put('avatar.png', 'x'.repeat(100)))
    expect(err).toMatchObject({ code: 'VALUE_TOO_LARGE' })
    expect(err?.message).toMatch(/^the value for key "avatar.png" is \d+ bytes, over maxValueBytes = 16; pass a larger maxValueBytes to openStore/)
    store.close()
  })

  it('a fixed limit reached is CAPACITY_EXCEEDED, the same on both engines, and changes nothing', async () => {
    const store = await Orrery.openStore({ engine: ENGINE })
    const ns = store.namespace<number>('many')
    let txn = store.transaction()
    for (let i = 0; i <= LIMITS.maxTxnWrites; i++) txn = txn.put(ns, `k${i}`, i)
    const err = await errorOf(() => txn.commit())
    expect(err).toMatchObject({ code: 'CAPACITY_EXCEEDED', message: `writes in one transaction: at most ${LIMITS.maxTxnWrites}` })
    expect(ns.get('k0')).toBeUndefined()
    store.close()
  })

  it('every code has its meaning in ERROR_CODES, from the core', () => {
    for (const [code, meaning] of Object.entries(ERROR_CODES)) expect(meaning, code).toMatch(/^[a-z]/)
    expect(Object.keys(ERROR_CODES)).toContain('ENGINE_MISMATCH')
    expect(Object.keys(ERROR_CODES)).not.toContain('LAYOUT_MISMATCH')
  })
})

describe(`arguments of the wrong type (${ENGINE})`, () => {
  it('get INVALID_ARGUMENT and leave the engine usable', async () => {
    const { bus } = await clocked()
    const codeOf = async (fn: () => unknown) => (await errorOf(fn))?.code
    expect(await codeOf(() => bus.publish(42 as never, 'x'))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(() => bus.group({} as never, 'g'))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(() => bus.group('jobs', 7 as never))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(() => bus.core.publish('frames' as never, 0))).toBe('INVALID_ARGUMENT')
    await expect(bus.publish('still-fine', 1)).resolves.toHaveProperty('published', true)
  })
})
