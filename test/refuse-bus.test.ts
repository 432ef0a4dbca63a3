/**
 * Bad input to the bus (issue 11): every refusal is a typed OrreryError, the same code on both
 * engines, raised before anything is published; nothing kills the process (an uncaught error
 * thrown later from a timer would), and the engine stays usable.
 */
import { afterAll, describe, expect, it, vi } from 'vitest'

import { Orrery, type BusEvent, type ErrorCode, type Message } from '../ts/node.js'
import { escaped, expectEngineUsable, expectPrototypeUntouched, expectRefused, HOSTILE, NOT_A_COUNT } from './bad-input.js'
import { ENGINE, IN_BROWSER } from './engine.js'

const tick = () => new Promise((resolve) => setTimeout(resolve, 0))

/** A bus with one channel `c` that nothing was published to. */
async function fresh() {
  const orrery = await Orrery.create()
  orrery.bus.channel('c')
  return { orrery, bus: orrery.bus }
}

afterAll(async () => {
  await expectEngineUsable()
})

describe(`the process survives ordinary mistakes (${ENGINE})`, () => {
  it('refuses bad responders at the call, and nothing escapes to the process', async () => {
    const { bus } = await fresh()
    for (const channel of ['', 'a b', 'é', 'a\uD800', 'x'.repeat(256)]) {
      expect(
        await escaped(async () => {
          await expectRefused(() => bus.respond(channel, () => 1), 'INVALID_NAME')
        }),
      ).toEqual([])
    }
    expect(
      await escaped(async () => {
        await expectRefused(() => bus.respond(5 as never, () => 1), 'INVALID_ARGUMENT')
        await expectRefused(() => bus.respond('c', 5 as never), 'INVALID_ARGUMENT')
        await expectRefused(() => bus.respond('c', () => 1, null as never), 'INVALID_ARGUMENT')
        await expectRefused(() => bus.respond('c', () => 1, { codec: 'yaml' as never }), 'INVALID_OPTION')
        await expectRefused(() => bus.respond('c', () => 1, { codec: '__proto__' as never }), 'INVALID_OPTION')
      }),
    ).toEqual([])
    expect(bus.stats('c').subscribers).toBe(0)
  })

  it('refuses a responder in group "" rather than making it a broadcast responder', async () => {
    const { bus } = await fresh()
    await expectRefused(() => bus.respond('c', () => 1, { group: '' }), 'INVALID_OPTION')
    await expectRefused(() => bus.respond('c', () => 1, { group: 5 as never }), 'INVALID_OPTION')
    expect(bus.stats('c')).toMatchObject({ subscribers: 0, groups: 0 })
  })

  it('refuses bad subscriptions when subscribe is called, before anything is subscribed', async () => {
    const { bus } = await fresh()
    expect(
      await escaped(async () => {
        await expectRefused(() => bus.subscribe('bad name'), 'INVALID_NAME')
        await expectRefused(() => bus.subscribe(''), 'INVALID_NAME')
        await expectRefused(() => bus.subscribe(7 as never), 'INVALID_ARGUMENT')
        await expectRefused(() => bus.subscribe('c', null as never), 'INVALID_ARGUMENT')
        await expectRefused(() => bus.subscribe('c', { overflow: 'sideways' as never }), 'INVALID_OPTION')
      }),
    ).toEqual([])
    // Before: the call returned a stream, and subscribing to it ended the process from a timer.
    expect(
      await escaped(() => {
        try {
          bus.subscribe('bad name').subscribe(() => {})
        } catch {
          /* refused at the call */
        }
        try {
          bus.subscribe('c', { overflow: 'sideways' as never }).subscribe(() => {})
        } catch {
          /* refused at the call */
        }
      }),
    ).toEqual([])
    expect(bus.stats('c').subscribers).toBe(0)
  })

  it('refuses respond, subscribe and consume after close with CLOSED, and nothing escapes', async () => {
    const { orrery, bus } = await fresh()
    const group = bus.group('c', 'g')
    orrery.close()
    expect(
      await escaped(async () => {
        await expectRefused(() => bus.respond('c', () => 1), 'CLOSED')
        await expectRefused(() => bus.respond('c', () => 1, { group: 'g' }), 'CLOSED')
        await expectRefused(() => bus.subscribe('c'), 'CLOSED')
        await expectRefused(() => group.consume(() => {}), 'CLOSED')
        await expectRefused(() => group.join(), 'CLOSED')
      }),
    ).toEqual([])
  })

  it('reports a throwing subscriber on bus.events and keeps delivering to it and to the others', async () => {
    const { bus } = await fresh()
    const events: BusEvent[] = []
    bus.events.subscribe((e) => events.push(e))
    const others: number[] = []
    const thrower: number[] = []
    const iterated: number[] = []
    const caught = await escaped(async () => {
      bus.subscribe<number>('c').subscribe((m) => {
        thrower.push(m.payload)
        throw new Error(`boom ${m.payload}`)
      })
      bus.subscribe<number>('c').subscribe((m) => others.push(m.payload))
      // A replaying subscriber has its own core subscription: the same holds for it.
      bus.subscribe<number>('c', { from: 'earliest' }).subscribe({
        next: (m) => {
          iterated.push(m.payload)
          throw new TypeError('bad')
        },
      })
      await bus.publishBatch([1, 2, 3].map((payload) => ({ channel: 'c', payload })))
      await tick()
    })
    expect(caught).toEqual([])
    expect(thrower).toEqual([1, 2, 3])
    expect(others).toEqual([1, 2, 3])
    expect(iterated).toEqual([1, 2, 3])
    const reported = events.filter((e): e is Extract<BusEvent, { type: 'subscriber-error' }> => e.type === 'subscriber-error')
    expect(reported).toHaveLength(6)
    expect(reported[0]).toMatchObject({ channel: 'c' })
    expect(reported.map((e) => (e.error as Error).message).sort()).toEqual(['bad', 'bad', 'bad', 'boom 1', 'boom 2', 'boom 3'])
  })

  it('reports a throwing error or complete callback too, and an unhandled stream error', async () => {
    const { orrery, bus } = await fresh()
    const events: BusEvent[] = []
    bus.events.subscribe((e) => events.push(e))
    const caught = await escaped(() => {
      bus.subscribe('c').subscribe({
        complete: () => {
          throw new Error('on complete')
        },
      })
      orrery.close()
    })
    expect(caught).toEqual([])
    expect(events).toEqual([expect.objectContaining({ type: 'subscriber-error', channel: 'c', error: expect.objectContaining({ message: 'on complete' }) })])
  })
})

describe(`publish checks every envelope field before encoding (${ENGINE})`, () => {
  it('refused publishes do not grow the frame writer (it doubled per call: 768 MiB after 16)', async () => {
    const { bus } = await fresh()
    const writer = (bus as unknown as { writer: { buf: Uint8Array } }).writer
    for (let i = 0; i < 24; i++) await expectRefused(() => bus.publish('c', 1, { sender: 5 as never }), 'INVALID_OPTION')
    expect(writer.buf.length).toBeLessThanOrEqual(4096)
    expect(bus.stats('c').published).toBe(0)
  })

  const fields = ['id', 'sender', 'recipient', 'correlationId', 'causationId', 'schema'] as const
  for (const field of fields) {
    it(`refuses a ${field} that is not a well-formed string`, async () => {
      const { bus } = await fresh()
      for (const [label, value] of HOSTILE) {
        if (typeof value === 'string' && value !== '' && !value.includes('\uD800') && value.length < 256) continue
        if (value === '' && field !== 'id') continue // an empty envelope string is an absent one
        const refused = await expectRefused(() => bus.publish('c', 1, { [field]: value } as never), 'INVALID_OPTION').catch((e: Error) => {
          throw new Error(`${field} = ${label}: ${e.message}`)
        })
        expect(refused.message).toContain(field)
      }
      expect(bus.stats('c').published).toBe(0)
    })
  }

  it('refuses headers that are not an object of well-formed strings', async () => {
    const { bus } = await fresh()
    const bad: unknown[] = [
      null,
      'abc',
      5,
      true,
      [['a', 'b']],
      { a: 5 },
      { a: null },
      { a: undefined },
      { a: 'b\uDC00' },
      { ['k\uD800']: 'v' },
      { a: ['x'] },
      { a: { b: 'c' } },
    ]
    for (const headers of bad) await expectRefused(() => bus.publish('c', 1, { headers: headers as never }), 'INVALID_OPTION')
    const many = Object.fromEntries(Array.from({ length: 65_536 }, (_, i) => [`h${i}`, '']))
    await expectRefused(() => bus.publish('c', 1, { headers: many }), 'INVALID_OPTION')
    expect(bus.stats('c').published).toBe(0)
  })

  it('refuses kinds, priorities and codecs by value, and ttl that is not a finite number > 0', async () => {
    const { bus } = await fresh()
    for (const value of ['__proto__', 'toString', 'constructor', 'hasOwnProperty', 5, null, true, '']) {
      await expectRefused(() => bus.publish('c', 1, { kind: value as never }), 'INVALID_OPTION')
      await expectRefused(() => bus.publish('c', 1, { priority: value as never }), 'INVALID_OPTION')
      await expectRefused(() => bus.publish('c', 1, { codec: value as never }), 'INVALID_OPTION')
    }
    for (const ttl of ['100', true, null, 0, -1, NaN, Infinity, 10n, {}, [5]]) {
      await expectRefused(() => bus.publish('c', 1, { ttl: ttl as never }), 'INVALID_OPTION')
    }
    expect(bus.stats('c').published).toBe(0)
  })

  it('refuses options that are not an object', async () => {
    const { bus } = await fresh()
    for (const options of [null, 'x', 5, true, [1]]) {
      await expectRefused(() => bus.publish('c', 1, options as never), 'INVALID_ARGUMENT')
      await expectRefused(() => bus.request('c', 1, options as never), 'INVALID_ARGUMENT')
      await expectRefused(() => bus.send('agent', 1, options as never), 'INVALID_ARGUMENT')
    }
    expect(bus.stats('c').published).toBe(0)
  })

  it('refuses batches that are not arrays of items, all or nothing', async () => {
    const { bus } = await fresh()
    for (const items of [null, undefined, 5, 'abc', { length: 1, 0: { channel: 'c', payload: 1 } }]) {
      await expectRefused(() => bus.publishBatch(items as never), 'INVALID_ARGUMENT')
    }
    for (const item of [null, 5, 'c', [], { payload: 1 }, { channel: 'c', payload: 1, options: null }]) {
      const code: ErrorCode[] = ['INVALID_ARGUMENT', 'INVALID_OPTION']
      await expectRefused(() => bus.publishBatch([{ channel: 'c', payload: 1 }, item as never]), code)
    }
    expect(bus.stats('c').published).toBe(0)
  })

  it('refuses send to an empty or non-string agent (it published to "inbox.")', async () => {
    const { bus } = await fresh()
    for (const agent of ['', 5, null, 'a\uD800']) {
      await expectRefused(() => bus.send(agent as never, 1), ['INVALID_ARGUMENT', 'INVALID_NAME'])
      await expectRefused(() => bus.inbox(agent as never), ['INVALID_ARGUMENT', 'INVALID_NAME'])
    }
    expect(bus.stats('inbox.').published).toBe(0)
  })

  it('refuses request timeouts a timer cannot wait (-1, NaN, 2^31, strings); Infinity is no timeout', async () => {
    const { bus } = await fresh()
    bus.respond('c', () => 1)
    expect((await bus.request('c', 1, { timeout: Infinity })).payload).toBe(1)
    for (const timeout of [-1, 0, NaN, -Infinity, 2 ** 31, '100', true, null]) {
      await expectRefused(() => bus.request('c', 1, { timeout: timeout as never }), 'INVALID_OPTION')
    }
    expect(bus.stats('c').published).toBe(1)
    expect((await bus.request('c', 1, { timeout: 2 ** 31 - 1 })).payload).toBe(1)
  })
})

describe(`channel and subscription options are checked in TS, the same on both engines (${ENGINE})`, () => {
  it('refuses overflow names found on the prototype (wasm made them block)', async () => {
    const { bus } = await fresh()
    for (const overflow of ['__proto__', 'toString', 'constructor', 'valueOf', 5, null, '']) {
      await expectRefused(() => bus.subscribe('c', { overflow: overflow as never }), 'INVALID_OPTION')
      await expectRefused(() => bus.subscribe('c', { overflow: overflow as never, from: 'earliest' }), 'INVALID_OPTION')
    }
    expect(bus.stats('c').subscribers).toBe(0)
  })

  it('refuses a shutdown drainMs that is not a number of ms, and the Orrery stays open', async () => {
    const { orrery, bus } = await fresh()
    for (const drainMs of [-1, Number.NaN, '5', 2 ** 40, null]) await expectRefused(() => orrery.shutdown({ drainMs: drainMs as never }), 'INVALID_OPTION')
    await expectRefused(() => orrery.shutdown({ drain: 5 } as never), 'INVALID_OPTION')
    await expectRefused(() => orrery.shutdown('soon' as never), 'INVALID_ARGUMENT')
    expect((await bus.publish('c', 1)).published).toBe(true)
    expect((await orrery.shutdown({ drainMs: 100 })).graceful).toBe(true)
  })

  it('refuses numeric strings and fractions for buffer and from (wasm coerced them)', async () => {
    const { bus } = await fresh()
    for (const buffer of ['10', 0, -1, 1.5, NaN, Infinity, 2 ** 28 + 1, true, null]) {
      await expectRefused(() => bus.subscribe('c', { buffer: buffer as never }), 'INVALID_OPTION')
    }
    // A time past the end of year 9999 names no moment a broker can seek to.
    for (const from of [
      'now',
      5,
      null,
      { seq: '1' },
      { seq: -1 },
      { seq: 1.5 },
      { time: NaN },
      { time: '5' },
      { time: 1e20 },
      { time: 253_402_300_800_000 },
      {},
    ]) {
      await expectRefused(() => bus.subscribe('c', { from: from as never }), 'INVALID_OPTION')
    }
    await expectRefused(() => bus.subscribe('c', { schema: {} as never }), 'INVALID_OPTION')
    expect(bus.stats('c').subscribers).toBe(0)
  })

  it('refuses channel options that are not whole numbers or flags (maxCount 0.5 became unlimited)', async () => {
    const { bus } = await fresh()
    const bad: unknown[] = [
      null,
      5,
      { retention: null },
      { retention: { maxCount: 0.5 } },
      { retention: { maxCount: '10' } },
      { retention: { maxCount: -1 } },
      { retention: { maxBytes: 1.5 } },
      { retention: { maxBytes: NaN } },
      { retention: { maxAgeMs: -1 } },
      { retention: { maxAgeMs: '5' } },
      { dedupWindowMs: -1 },
      { dedupWindowMs: NaN },
      { dedupWindowMs: '100' },
      { deadLetterExpired: 'yes' },
    ]
    for (const options of bad) await expectRefused(() => bus.channel('c', options as never), ['INVALID_OPTION', 'INVALID_ARGUMENT'])
    // The retention still keeps everything (the default), so nothing was reconfigured.
    await bus.publishBatch(Array.from({ length: 3 }, (_, i) => ({ channel: 'c', payload: i })))
    expect(bus.stats('c').retained).toBe(3)
  })

  it('refuses bad options to Orrery.create', async () => {
    for (const options of [null, 5, 'x', [1]]) await expectRefused(() => Orrery.create(options as never), 'INVALID_ARGUMENT')
    for (const options of [
      { clock: 'x' },
      { clock: 5 },
      { maxMessageBytes: '100' },
      { maxMessageBytes: 63 },
      { maxMessageBytes: 1.5 },
      { engine: 'gpu' },
      { engine: '__proto__' },
    ]) {
      await expectRefused(() => Orrery.create(options as never), 'INVALID_OPTION')
    }
  })

  it('refuses a topic without a schema, and topic calls with bad arguments', async () => {
    const { bus } = await fresh()
    for (const options of [undefined, null, {}, { schema: null }, { schema: {} }, { schema: { '~standard': {} } }, 5]) {
      await expectRefused(() => bus.topic('c', options as never), ['INVALID_OPTION', 'INVALID_ARGUMENT'])
    }
    await expectRefused(() => bus.topic('bad name', { schema: anything }), 'INVALID_NAME')
    const topic = bus.topic('c', { schema: anything })
    for (const items of [null, 5, [null]]) await expectRefused(() => topic.publishBatch(items as never), 'INVALID_ARGUMENT')
    await expectRefused(() => topic.publish(1, { ttl: '5' as never }), 'INVALID_OPTION')
    expect(bus.stats('c').published).toBe(0)
  })
})

/** A Standard Schema that accepts any value. */
const anything = { '~standard': { version: 1 as const, vendor: 'test', validate: (value: unknown) => ({ value }) } }

describe(`what goes in comes out (${ENGINE})`, () => {
  it('keeps a header named __proto__ as an ordinary header', async () => {
    const { bus } = await fresh()
    const got: Message[] = []
    bus.subscribe('c').subscribe((m) => got.push(m))
    const headers = JSON.parse('{"__proto__": "p", "constructor": "k", "a": "b"}') as Record<string, string>
    await bus.publish('c', 1, { headers })
    await tick()
    const received = got[0]!.headers
    expect(Object.keys(received)).toEqual(['__proto__', 'constructor', 'a'])
    expect(Object.getOwnPropertyDescriptor(received, '__proto__')?.value).toBe('p')
    expect(Object.getPrototypeOf(received)).toBe(Object.prototype)
    expectPrototypeUntouched()
  })

  it('keeps a __proto__ key of a msgpack or JSON payload as an own key, polluting nothing', async () => {
    const { bus } = await fresh()
    const got: Message[] = []
    bus.subscribe('c').subscribe((m) => got.push(m))
    const payload = JSON.parse('{"__proto__": {"polluted": 1}, "a": [{"__proto__": 2, "b": {"x": 1}}], "n": null}') as object
    await bus.publish('c', payload, { codec: 'msgpack' })
    await bus.publish('c', payload, { codec: 'json' })
    await bus.publish('c', { plain: [1, 'two', { three: 3 }] }, { codec: 'msgpack' })
    await tick()
    for (const m of got.slice(0, 2)) {
      const out = m.payload as Record<string, unknown>
      expect(Object.keys(out)).toEqual(['__proto__', 'a', 'n'])
      expect(Object.getPrototypeOf(out)).toBe(Object.prototype)
      expect(Object.getOwnPropertyDescriptor(out, '__proto__')?.value).toEqual({ polluted: 1 })
      expect((out as { polluted?: number }).polluted).toBeUndefined()
      const inner = (out['a'] as Array<Record<string, unknown>>)[0]!
      expect(Object.keys(inner)).toEqual(['__proto__', 'b'])
      expect(Object.getOwnPropertyDescriptor(inner, '__proto__')?.value).toBe(2)
      expect(inner['b']).toEqual({ x: 1 })
      expect(JSON.stringify(out)).toBe(JSON.stringify(payload))
    }
    expect(got[2]!.payload).toEqual({ plain: [1, 'two', { three: 3 }] })
    expectPrototypeUntouched()
  })

  it('keeps lone surrogates of a JSON payload exactly, and refuses them in a msgpack payload (UTF-8 made them U+FFFD)', async () => {
    const { bus } = await fresh()
    const odd = ['a\uD800', `${'x'.repeat(100)}\uDC00`, { ['k\uD800']: 1 }, [{ deep: new Map([['m', '\uDBFF']]) }], new Set(['\uDFFF'])]
    for (const payload of odd) await expectRefused(() => bus.publish('c', payload, { codec: 'msgpack' }), 'INVALID_PAYLOAD')
    expect(bus.stats('c').published).toBe(0)
    const got: Message[] = []
    bus.subscribe('c').subscribe((m) => got.push(m))
    const payload = { ['k\uD800']: ['a\uD800', `${'x'.repeat(100)}\uDC00`] }
    await bus.publish('c', payload)
    await bus.publish('c', { fine: 'a\uD83D\uDE00' }, { codec: 'msgpack' })
    await tick()
    expect(got[0]!.payload).toEqual(payload)
    expect(got[1]!.payload).toEqual({ fine: 'a\uD83D\uDE00' })
  })

  it('keeps text whose UTF-8 holds the bytes a lone surrogate leaves (Hangul, U+FFFD) and a large __proto__ payload', async () => {
    const { bus } = await fresh()
    const got: Message[] = []
    bus.subscribe('c').subscribe((m) => got.push(m))
    // U+D000-U+D7FF encode as ED xx xx and U+FFFD as EF BF BD: the byte scan only decides whether
    // to walk the value; the walk finds nothing to refuse.
    const text = { korean: '한국어 텍스트', replacement: 'a\uFFFDb', long: '힣'.repeat(5_000) }
    await bus.publish('c', text, { codec: 'msgpack' })
    // Over 64 bytes, the __proto__ search takes the one-call path.
    const big = JSON.parse(`{"rows": ${JSON.stringify(Array.from({ length: 50 }, (_, i) => ({ snake_case_key: i })))}, "__proto__": {"polluted": 1}}`) as object
    await bus.publish('c', big, { codec: 'msgpack' })
    await tick()
    expect(got[0]!.payload).toEqual(text)
    const out = got[1]!.payload as Record<string, unknown>
    expect(Object.keys(out)).toEqual(['rows', '__proto__'])
    expect(Object.getOwnPropertyDescriptor(out, '__proto__')?.value).toEqual({ polluted: 1 })
    expect((out['rows'] as unknown[]).length).toBe(50)
    expectPrototypeUntouched()
  })

  it("prints a throwing subscriber's error when nobody listens on bus.events, instead of losing it", async () => {
    const { orrery, bus } = await fresh()
    const printed: unknown[][] = []
    const spy = vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
      printed.push(args)
    })
    try {
      bus.subscribe('c').subscribe(() => {
        throw new Error('boom in a subscriber')
      })
      await bus.publish('c', 1)
      await tick()
      expect(printed).toHaveLength(1)
      expect(String(printed[0]![0])).toContain('channel c')
      expect((printed[0]![1] as Error).message).toBe('boom in a subscriber')
      // With a listener, it goes to the listener and nothing is printed.
      const events: BusEvent[] = []
      bus.events.subscribe((e) => events.push(e))
      await bus.publish('c', 2)
      await tick()
      expect(printed).toHaveLength(1)
      expect(events.map((e) => e.type)).toEqual(['subscriber-error'])
    } finally {
      spy.mockRestore()
      orrery.close()
    }
  })

  it('refuses lone surrogates in ids, envelope strings and headers; keeps well-formed ones exactly', async () => {
    const { bus } = await fresh()
    for (const options of [
      { id: 'a\uD800' },
      { sender: '\uDFFF' },
      { correlationId: 'x\uDBFFy' },
      { headers: { k: 'a\uD800' } },
      { headers: { ['a\uDC00']: 'v' } },
    ]) {
      await expectRefused(() => bus.publish('c', 1, options), 'INVALID_OPTION')
    }
    expect(bus.stats('c').published).toBe(0)
    const got: Message[] = []
    bus.subscribe('c').subscribe((m) => got.push(m))
    const odd = 'a\u0000b\uD83D\uDE00é'
    await bus.publish('c', odd, { id: odd, sender: odd, headers: { [odd]: odd } })
    await tick()
    expect(got[0]).toMatchObject({ id: odd, sender: odd, payload: odd, headers: { [odd]: odd } })
  })
})

describe(`every call after close fails with CLOSED (${ENGINE})`, () => {
  it('on the bus, its groups and its topics, the same on both engines', async () => {
    const { orrery, bus } = await fresh()
    const group = bus.group('c', 'g')
    const topic = bus.topic('c', { schema: anything })
    const stream = bus.subscribe('c')
    orrery.close()
    const calls: Array<[string, () => unknown]> = [
      ['publish', () => bus.publish('c', 1)],
      ['publishBatch', () => bus.publishBatch([{ channel: 'c', payload: 1 }])],
      ['request', () => bus.request('c', 1)],
      ['send', () => bus.send('a', 1)],
      ['respond', () => bus.respond('c', () => 1)],
      ['subscribe', () => bus.subscribe('c')],
      ['inbox', () => bus.inbox('a')],
      ['group', () => bus.group('c', 'g2')],
      ['topic', () => bus.topic('c', { schema: anything })],
      ['channel', () => bus.channel('c')],
      ['stats', () => bus.stats('c')],
      ['subscriberStats', () => bus.subscriberStats(0)],
      ['lateReplies', () => bus.lateReplies()],
      ['share', () => bus.share()],
      ['group.join', () => group.join()],
      ['group.consume', () => group.consume(() => {})],
      ['group.stats', () => group.stats()],
      ['group.pending', () => group.pending()],
      ['group.claim', () => group.claim(0, { minIdle: 0 })],
      ['group.delete', () => group.delete()],
      ['topic.publish', () => topic.publish(1)],
      ['topic.publishBatch', () => topic.publishBatch([{ payload: 1 }])],
      ['topic.request', () => topic.request(1)],
      ['topic.subscribe', () => topic.subscribe()],
      ['topic.group', () => topic.group('g')],
    ]
    for (const [name, call] of calls) {
      await expectRefused(call, 'CLOSED').catch((e: Error) => {
        throw new Error(`${name}: ${e.message}`)
      })
    }
    // A stream made before close and subscribed after fails with CLOSED (to its error callback).
    const failed = await new Promise((resolve) => stream.subscribe({ error: resolve, complete: () => resolve('completed') }))
    expect(failed).toMatchObject({ code: 'CLOSED' })
  })
})

describe(`sweeps of hostile values (${ENGINE})`, () => {
  it('every count option refuses every value that is not a whole number in range', async () => {
    const { bus } = await fresh()
    const counts: Array<[string, (value: unknown) => unknown]> = [
      ['subscribe buffer', (buffer) => bus.subscribe('c', { buffer } as never)],
      ['replaying subscribe buffer', (buffer) => bus.subscribe('c', { buffer, from: 'earliest' } as never)],
      ['group buffer', (buffer) => bus.group('c', 'g', { buffer } as never)],
      ['group maxDeliveries', (maxDeliveries) => bus.group('c', 'g', { maxDeliveries } as never)],
      ['retention.maxCount', (maxCount) => bus.channel('c', { retention: { maxCount } } as never)],
      ['retention.maxBytes', (maxBytes) => bus.channel('c', { retention: { maxBytes } } as never)],
      ['from.seq', (seq) => bus.subscribe('c', { from: { seq } } as never)],
    ]
    for (const [name, call] of counts) {
      for (const [label, value] of NOT_A_COUNT) {
        if (value === null && name.startsWith('from')) continue // { seq: null } has no seq: refused as a bad `from` below
        await expectRefused(() => call(value), 'INVALID_OPTION').catch((e: Error) => {
          throw new Error(`${name} = ${label}: ${e.message}`)
        })
      }
    }
    expect(bus.stats('c')).toMatchObject({ subscribers: 0, groups: 0 })
  })

  it('every channel argument refuses what is not a string (INVALID_ARGUMENT) or not a name (INVALID_NAME)', async () => {
    const { bus } = await fresh()
    const entries: Array<[string, (channel: unknown) => unknown]> = [
      ['publish', (channel) => bus.publish(channel as never, 1)],
      ['publishBatch', (channel) => bus.publishBatch([{ channel: channel as never, payload: 1 }])],
      ['request', (channel) => bus.request(channel as never, 1)],
      ['respond', (channel) => bus.respond(channel as never, () => 1)],
      ['subscribe', (channel) => bus.subscribe(channel as never)],
      ['group', (channel) => bus.group(channel as never, 'g')],
      ['topic', (channel) => bus.topic(channel as never, { schema: anything })],
      ['channel', (channel) => bus.channel(channel as never)],
      ['stats', (channel) => bus.stats(channel as never)],
    ]
    for (const [name, call] of entries) {
      for (const [label, value] of HOSTILE) {
        if (typeof value === 'string' && /^[A-Za-z0-9._\-:/*>]{1,255}$/.test(value)) continue // a valid name
        const code: ErrorCode = typeof value === 'string' ? 'INVALID_NAME' : 'INVALID_ARGUMENT'
        await expectRefused(() => call(value), code).catch((e: Error) => {
          throw new Error(`${name}(${label}): ${e.message}`)
        })
      }
    }
    expect(bus.stats('c')).toMatchObject({ published: 0, subscribers: 0, groups: 0 })
    expectPrototypeUntouched()
  })

  it('names found on Object.prototype are ordinary channel and group names', async () => {
    const { bus } = await fresh()
    for (const name of ['__proto__', 'toString', 'constructor', 'hasOwnProperty']) {
      const got: unknown[] = []
      bus.subscribe(name).subscribe((m) => got.push(m.payload))
      const group = bus.group<number>(name, name)
      const taken: number[] = []
      group.consume((d) => {
        taken.push(d.message.payload)
      })
      bus.respond(`${name}.rpc`, (req) => req.payload, { group: name })
      await bus.publish(name, 1)
      expect((await bus.request(`${name}.rpc`, name)).payload).toBe(name)
      await tick()
      expect(got).toEqual([1])
      expect(taken).toEqual([1])
      expect(bus.stats(name).published).toBe(1)
    }
    expectPrototypeUntouched()
  })
})

describe(`refusals read the same on both engines (run from ${ENGINE})`, () => {
  // Needs the native engine beside the wasm one: Node only.
  it.skipIf(IN_BROWSER)('each bad call gets the same code and message from a native and a wasm Orrery', async () => {
    const engines = await Promise.all([Orrery.create({ engine: 'native' }), Orrery.create({ engine: 'wasm' })])
    const calls: Array<[string, (bus: Orrery['bus']) => unknown]> = [
      ['respond("")', (bus) => bus.respond('', () => 1)],
      ['respond("a\\uD800")', (bus) => bus.respond('a\uD800', () => 1)],
      ['subscribe("bad name")', (bus) => bus.subscribe('bad name')],
      ['subscribe overflow toString', (bus) => bus.subscribe('c', { overflow: 'toString' as never })],
      ['subscribe buffer "10"', (bus) => bus.subscribe('c', { buffer: '10' as never })],
      ['group visibilityTimeout "100"', (bus) => bus.group('c', 'g', { visibilityTimeout: '100' as never })],
      ['group maxDeliveries 1.5', (bus) => bus.group('c', 'g', { maxDeliveries: 1.5 })],
      ['group name 5', (bus) => bus.group('c', 5 as never)],
      ['join maxInFlight "8"', (bus) => bus.group('c', 'g').join({ maxInFlight: '8' as never })],
      ['publish sender 5', (bus) => bus.publish('c', 1, { sender: 5 as never })],
      ['publish ttl "100"', (bus) => bus.publish('c', 1, { ttl: '100' as never })],
      ['publish channel 5', (bus) => bus.publish(5 as never, 1)],
      ['request timeout 2^31', (bus) => bus.request('c', 1, { timeout: 2 ** 31 })],
      ['channel maxCount 0.5', (bus) => bus.channel('c', { retention: { maxCount: 0.5 } })],
      ['publish too large', (bus) => bus.publish('c', 'x'.repeat(11 * 1024 * 1024))],
    ]
    for (const [name, call] of calls) {
      const [native, wasm] = await Promise.all(
        engines.map(async (o) => {
          const e = await expectRefused(() => call(o.bus), ['INVALID_ARGUMENT', 'INVALID_OPTION', 'INVALID_NAME', 'MESSAGE_TOO_LARGE'])
          return { code: (e as { code?: string }).code, message: e.message }
        }),
      )
      expect(wasm, name).toEqual(native)
    }
    for (const o of engines) o.close()
  })
})
