import { firstValueFrom, take, toArray } from 'rxjs'
import { describe, expect, it } from 'vitest'

import { Orrery, OrreryError } from '../ts/node.js'
import { checkManifest } from '../ts/engines/check-manifest.js'
import { MANIFEST_HASH } from '../ts/engines/manifest.js'
import { decodeFrame, FrameWriter, LAYOUT } from '../ts/frame.js'
import { ENGINE } from './engine.js'

describe(`bus (${ENGINE})`, () => {
  it('delivers after the publish call returns, never during it', async () => {
    const { bus } = await Orrery.create()
    const order: string[] = []
    bus.subscribe('c').subscribe(() => order.push('delivered'))
    const done = bus.publish('c', 1)
    order.push('publish returned')
    await done
    await Promise.resolve()
    expect(order).toEqual(['publish returned', 'delivered'])
  })

  it('works with rxjs operators and tears the core subscription down on unsubscribe', async () => {
    const { bus } = await Orrery.create()
    const firstTwo = firstValueFrom(bus.subscribe<number>('numbers').pipe(take(2), toArray()))
    expect(bus.stats('numbers').subscribers).toBe(1)
    await bus.publishBatch([1, 2, 3].map((n) => ({ channel: 'numbers', payload: n })))
    expect((await firstTwo).map((m) => m.payload)).toEqual([1, 2])
    expect(bus.stats('numbers').subscribers).toBe(0)
  })

  it('generates ids <bus prefix>-<n> counting from 0, the same the publish returns and the subscriber reads', async () => {
    const { bus } = await Orrery.create()
    const got = firstValueFrom(bus.subscribe('counted').pipe(take(1001), toArray()))
    const published = await bus.publishBatch(Array.from({ length: 1001 }, (_, i) => ({ channel: 'counted', payload: i })))
    const ids = published.ids
    const prefix = ids[0]!.slice(0, -2)
    expect(ids[0]).toBe(`${prefix}-0`)
    // Past every carry: 9 to 10, 99 to 100, 999 to 1000.
    expect(ids).toEqual(Array.from({ length: 1001 }, (_, i) => `${prefix}-${i}`))
    expect((await got).map((m) => m.id)).toEqual(ids)
    // A producer's own id takes no number: the next generated one follows on.
    const mixed = await bus.publishBatch([
      { channel: 'counted', payload: 0, options: { id: 'mine' } },
      { channel: 'counted', payload: 1 },
    ])
    expect(mixed.ids).toEqual(['mine', `${prefix}-1001`])
  })

  it('carries JSON payloads of every length and script as they were sent', async () => {
    const { bus } = await Orrery.create()
    // Around the lengths where the text is written differently (64 characters; 64 Ki characters),
    // ASCII and not, surrogate pairs, a lone surrogate (JSON escapes it), and a reply.
    const payloads: unknown[] = [
      0,
      'a'.repeat(62),
      'a'.repeat(63),
      'a'.repeat(64),
      'é',
      `${'a'.repeat(61)}é`,
      `${'a'.repeat(70)}ü`,
      { emoji: '🪐🪐', nested: [1, null, true, 'x'] },
      '\ud800 lone',
      'z'.repeat(64 * 1024 - 2),
      'z'.repeat(64 * 1024 - 1),
      `${'z'.repeat(64 * 1024)}ü`,
    ]
    const got = firstValueFrom(bus.subscribe('texts').pipe(take(payloads.length), toArray()))
    await bus.publishBatch(payloads.map((payload) => ({ channel: 'texts', payload })))
    const messages = await got
    expect(messages.map((m) => m.payload)).toEqual(payloads)
    expect(messages.every((m) => m.codec === 'json')).toBe(true)
    const stop = bus.respond('echo', (m) => m.payload)
    for (const payload of payloads) expect((await bus.request('echo', payload)).payload).toEqual(payload)
    stop()
  })

  it('replays from a time', async () => {
    let now = 0
    const { bus } = await Orrery.create({ clock: () => now })
    for (const t of [10, 20, 30]) {
      now = t
      await bus.publish('timeline', t)
    }
    const got = await firstValueFrom(bus.subscribe<number>('timeline', { from: { time: 15 } }).pipe(take(2), toArray()))
    expect(got.map((m) => m.payload)).toEqual([20, 30])
  })

  it('carries raw bytes and every envelope field', async () => {
    const { bus } = await Orrery.create()
    const next = firstValueFrom(bus.subscribe<Uint8Array>('bytes'))
    await bus.publish('bytes', new Uint8Array([9, 8, 7]), {
      id: 'm-1',
      kind: 'command',
      sender: 'a',
      recipient: 'b',
      correlationId: 'c',
      causationId: 'd',
      schema: 'order@1.2',
      headers: { 'x-ü': 'ünïcode' },
    })
    const m = await next
    expect([...m.payload]).toEqual([9, 8, 7])
    expect(m).toMatchObject({
      id: 'm-1',
      kind: 'command',
      sender: 'a',
      recipient: 'b',
      correlationId: 'c',
      causationId: 'd',
      schema: 'order@1.2',
      headers: { 'x-ü': 'ünïcode' },
      codec: 'raw',
    })
  })

  it('delivers messages larger than the drain buffer', async () => {
    const { bus } = await Orrery.create()
    const next = firstValueFrom(bus.subscribe<string>('large'))
    const big = 'z'.repeat(200_000)
    await bus.publish('large', big)
    expect((await next).payload).toBe(big)
  })

  it('keeps channel order for a subscriber that publishes while handling', async () => {
    const { bus } = await Orrery.create()
    const seen: number[] = []
    bus.subscribe<number>('echo').subscribe((m) => {
      seen.push(m.payload)
      if (m.payload < 5) void bus.publish('echo', m.payload + 1)
    })
    await bus.publish('echo', 0)
    for (let i = 0; i < 10; i++) await Promise.resolve()
    expect(seen).toEqual([0, 1, 2, 3, 4, 5])
  })

  it('refuses ids and names over 255 bytes and leaves the batch empty', async () => {
    const { bus } = await Orrery.create()
    await expect(bus.publish('c', 1, { id: 'i'.repeat(256) })).rejects.toMatchObject({ code: 'INVALID_OPTION' })
    await expect(bus.publish('n'.repeat(256), 1)).rejects.toMatchObject({ code: 'INVALID_NAME' })
    expect(bus.stats('c').published).toBe(0)
  })

  it('refuses a bad channel name when subscribe is called, not later through the Observable', async () => {
    const { bus } = await Orrery.create()
    let err: unknown
    try {
      bus.subscribe('bad name')
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(OrreryError)
    expect((err as OrreryError).code).toBe('INVALID_NAME')
  })
})

describe('frame layout', () => {
  it('comes from the manifest the engine was built with, and an engine built from another is refused', async () => {
    const orrery = await Orrery.create()
    expect(orrery.backend.manifestHash()).toBe(MANIFEST_HASH)
    expect(() => checkManifest(orrery.backend.name, orrery.backend.manifestHash())).not.toThrow()
    const stale = expectThrown(() => checkManifest('native', '0123456789abcdef'))
    expect(stale).toMatchObject({ code: 'ENGINE_MISMATCH', details: { engine: 'native', engineManifest: '0123456789abcdef', expected: MANIFEST_HASH } })
    expect(stale.message).toContain('bash scripts/build.sh native')
    // An engine from before the manifest has no hash to report at all.
    expect(expectThrown(() => checkManifest('wasm', undefined)).message).toContain('built before engines reported a manifest')
    await orrery.close()
  })

  it('round-trips through FrameWriter and decodeFrame', () => {
    const w = new FrameWriter()
    w.push(7, { id: 'x', kind: 'query', priority: 'critical', codec: 'json', timestamp: 5, expiresAt: 9, headers: { a: 'b' } }, new Uint8Array([1]))
    const f = decodeFrame(w.bytes())
    expect(f).toMatchObject({ channel: 7, id: 'x', kind: 'query', priority: 'critical', timestamp: 5, expiresAt: 9, headers: { a: 'b' } })
    expect(w.bytes().length).toBe(LAYOUT.headerLen + f.payload.byteOffset - LAYOUT.headerLen + 1)
  })
})

describe(`shared live subscriptions (${ENGINE})`, () => {
  it('plain subscribers of a channel share one core subscription and each gets every message', async () => {
    const { bus } = await Orrery.create()
    const a: number[] = []
    const b: number[] = []
    const subA = bus.subscribe<number>('news').subscribe((m) => a.push(m.payload))
    const subB = bus.subscribe<number>('news').subscribe((m) => b.push(m.payload))
    expect(bus.stats('news').subscribers).toBe(1)
    await bus.publishBatch([1, 2, 3].map((payload) => ({ channel: 'news', payload })))
    await Promise.resolve()
    expect(a).toEqual([1, 2, 3])
    expect(b).toEqual([1, 2, 3])
    subA.unsubscribe()
    expect(bus.stats('news').subscribers).toBe(1)
    subB.unsubscribe()
    expect(bus.stats('news').subscribers).toBe(0)
  })

  it('a subscriber joining later gets only what is published after it joined, even if undelivered', async () => {
    const { bus } = await Orrery.create()
    const early: number[] = []
    const late: number[] = []
    bus.subscribe<number>('news').subscribe((m) => early.push(m.payload))
    void bus.publish('news', 1) // appended, not yet delivered
    bus.subscribe<number>('news').subscribe((m) => late.push(m.payload))
    void bus.publish('news', 2)
    await Promise.resolve()
    await Promise.resolve()
    expect(early).toEqual([1, 2])
    expect(late).toEqual([2])
  })

  it('subscribers with their own start, schema or iterator keep a core subscription of their own', async () => {
    const { bus } = await Orrery.create()
    bus.subscribe('news').subscribe()
    bus.subscribe('news', { from: 'earliest' }).subscribe()
    bus.subscribe('news', { buffer: 5 }).subscribe()
    const iterator = bus.subscribe('news')[Symbol.asyncIterator]()
    expect(bus.stats('news').subscribers).toBe(4)
    await iterator.return?.()
    expect(bus.stats('news').subscribers).toBe(3)
  })
})

function expectThrown(call: () => void): OrreryError {
  try {
    call()
  } catch (e) {
    return e as OrreryError
  }
  throw new Error('expected a throw')
}
