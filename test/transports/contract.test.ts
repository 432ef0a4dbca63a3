/**
 * One contract for every backend a channel can live on: the same tests run on `memory` (a plain
 * Orrery) and `redis` (channels bound to a Redis server). A test is skipped only where the backend
 * declares it lacks what the test needs, and for each such capability another test shows that
 * asking for it fails with CAPABILITY_UNSUPPORTED and publishes nothing.
 *
 * Time is real (a broker has its own clock): waits are for events, with generous bounds; the only
 * idle waits show that something does NOT happen within a bound, or let a TTL run out.
 */
import { describe, expect, it } from 'vitest'

import type { BusEvent, Delivery, Message, Orrery } from '../../ts/node.js'
import { isOrreryError, TRANSPORT_CAPABILITIES } from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { BACKENDS, listen, quiet, range, until, useBackend, withTimeout, type Backend, type Capability, type TestBackend } from './backends.js'

/** The error a call ends with, thrown at the call or rejected by its Promise (undefined when it succeeds). */
async function refusalOf(call: () => unknown): Promise<unknown> {
  try {
    await call()
    return undefined
  } catch (err) {
    return err
  }
}

async function expectUnsupported(call: () => unknown, channel: string): Promise<void> {
  const err = await refusalOf(call)
  expect(err, 'the call was accepted').toBeDefined()
  if (!isOrreryError(err) || err.code !== ('CAPABILITY_UNSUPPORTED' as string)) {
    throw new Error(
      `expected CAPABILITY_UNSUPPORTED, got ${err instanceof Error ? `${(err as { code?: string }).code ?? err.name}: ${err.message}` : String(err)}`,
    )
  }
  // Spec (S1) names the channel in the request refusal; the suite asks the same of every refusal.
  expect((err as Error).message).toContain(channel)
}

const payloads = <T>(list: ReadonlyArray<Message<T>>): T[] => list.map((m) => m.payload)
const ids = (list: ReadonlyArray<{ id: string }>): string[] => list.map((m) => m.id)
const idsOf = <T>(list: ReadonlyArray<Delivery<T>>): string[] => list.map((d) => d.message.id)

/** Distinct instances among peers (memory's peers are one instance). */
const distinct = (list: readonly Orrery[]): Orrery[] => [...new Set(list)]

const T = 60_000

/** A member of group `w` of `ch` on `o` has taken one message, 1, and never settles it (a handler still running at a stop). */
async function runningForever(o: Orrery, ch: string): Promise<void> {
  let started = 0
  o.bus.group<number>(ch, 'w', { visibilityTimeout: 10_000 }).consume(() => {
    started++
    return new Promise(() => {}) // never settles
  })
  await o.bus.attached(ch)
  await o.bus.publish(ch, 1)
  await until(() => started === 1, 20_000, 'the leaving instance to run it')
}

for (const backend of BACKENDS) {
  const title = `transport contract: ${backend.name} (${ENGINE})${backend.skip ? ` [skipped: ${backend.skip}]` : ''}`
  describe.skipIf(backend.skip !== undefined)(title, () => {
    if (backend.broken !== undefined) {
      it('has its server', () => {
        throw new Error(backend.broken)
      })
      return
    }
    contract(backend)
  })
}

function contract(backend: Backend): void {
  const fresh = useBackend(backend)
  const can = (capability: Capability): boolean => backend.has(capability)
  const shared = can('shared')

  describe('publish and subscribe', () => {
    it('publish resolves; a subscriber gets every message, in publish order', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('orders')
      const got = listen(o.bus.subscribe<number>(ch))
      const one = []
      for (let i = 0; i < 20; i++) one.push(await o.bus.publish(ch, i, { id: `o-${i}` }))
      expect(one.map((r) => [r.id, r.published])).toEqual(range(0, 20).map((i) => [`o-${i}`, true]))
      const batch = await o.bus.publishBatch(range(20, 60).map((payload) => ({ channel: ch, payload })))
      expect(batch.published).toBe(40)
      // Not awaited one by one: written in the order published all the same.
      const burst = await Promise.all(range(60, 100).map((i) => o.bus.publish(ch, i)))
      expect(burst.every((r) => r.published)).toBe(true)
      await until(
        () => got.items.length >= 100,
        20_000,
        '100 messages',
        () => got.items.length,
      )
      expect(payloads(got.items)).toEqual(range(0, 100))
      const seqs = got.items.map((m) => m.seq)
      expect(seqs.every((s, i) => i === 0 || s > seqs[i - 1]!)).toBe(true)
      expect(o.bus.stats(ch).published).toBe(100)
    })

    it.runIf(shared)('a second instance sees the same messages in the same order, each publisher in its own order', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('events')
      const gotA = listen(a.bus.subscribe<string>(ch))
      const gotB = listen(b.bus.subscribe<string>(ch))
      // Both publish at once: the broker decides one order, which every instance must see.
      const results = await Promise.all([...range(0, 50).map((i) => a.bus.publish(ch, `a${i}`)), ...range(0, 50).map((i) => b.bus.publish(ch, `b${i}`))])
      expect(results.every((r) => r.published)).toBe(true)
      const all = [...range(0, 50).map((i) => `a${i}`), ...range(0, 50).map((i) => `b${i}`)]
      const missing = (got: { items: Array<Message<string>> }): string[] => all.filter((p) => !got.items.some((m) => m.payload === p))
      await until(
        () => gotA.items.length >= 100 && gotB.items.length >= 100,
        20_000,
        '100 messages on each instance',
        () => ({
          missingOnA: missing(gotA),
          missingOnB: missing(gotB),
          firstOnA: payloads(gotA.items).slice(0, 4),
          firstOnB: payloads(gotB.items).slice(0, 4),
        }),
      )
      expect(payloads(gotA.items)).toEqual(payloads(gotB.items))
      expect(ids(gotA.items)).toEqual(ids(gotB.items))
      expect(payloads(gotA.items).filter((p) => p.startsWith('a'))).toEqual(range(0, 50).map((i) => `a${i}`))
      expect(payloads(gotA.items).filter((p) => p.startsWith('b'))).toEqual(range(0, 50).map((i) => `b${i}`))
    })

    it("from 'earliest' sees the retained history, then what follows", { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('history')
      for (const n of range(0, 5)) await o.bus.publish(ch, n)
      const got = listen(o.bus.subscribe<number>(ch, { from: 'earliest' }))
      await until(
        () => got.items.length >= 5,
        20_000,
        'the 5 retained messages',
        () => payloads(got.items),
      )
      await o.bus.publish(ch, 5)
      await until(
        () => got.items.length >= 6,
        20_000,
        'the message after the history',
        () => payloads(got.items),
      )
      expect(payloads(got.items)).toEqual(range(0, 6))
      if (shared) {
        // A process that starts later replays the same history.
        const late = await t.open()
        const replay = listen(late.bus.subscribe<number>(ch, { from: 'earliest' }))
        await until(
          () => replay.items.length >= 6,
          20_000,
          'the history on another instance',
          () => payloads(replay.items),
        )
        expect(payloads(replay.items)).toEqual(range(0, 6))
        expect(ids(replay.items)).toEqual(ids(got.items))
      }
    })

    it.runIf(shared)('a publish that resolved survives its instance closing at once after it', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('durable')
      const results = await Promise.all(range(0, 20).map((i) => a.bus.publish(ch, i)))
      expect(results.every((r) => r.published)).toBe(true)
      a.close()
      const got = listen(b.bus.group<number>(ch, 'late', { from: 'earliest' }).join())
      await until(
        () => got.items.length >= 20,
        20_000,
        'the 20 messages',
        () => got.items.length,
      )
      for (const d of got.items) d.ack()
      expect(got.items.map((d) => d.message.payload)).toEqual(range(0, 20))
    })

    it("from 'latest' sees only what is published after the subscribe", { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('latest')
      for (const n of range(0, 3)) await a.bus.publish(ch, n)
      const got = listen(b.bus.subscribe<number | string>(ch, { from: 'latest' }))
      await a.bus.publish(ch, 3)
      await a.bus.publish(ch, 4)
      await a.bus.publish(ch, 'end')
      await until(
        () => got.items.some((m) => m.payload === 'end'),
        20_000,
        'the last message',
        () => payloads(got.items),
      )
      expect(payloads(got.items)).toEqual([3, 4, 'end'])
    })

    /** Ten latest subscribes of `subscriber`, each followed by a publish of `publisher`: subscriber i must get exactly publishes i to 9. */
    const interleave = async (subscriber: Orrery, publisher: Orrery, ch: string): Promise<void> => {
      await publisher.bus.publish(ch, -1)
      const subs: Array<ReturnType<typeof listen<Message<number>>>> = []
      const writes: Array<Promise<unknown>> = []
      for (const i of range(0, 10)) {
        subs.push(listen(subscriber.bus.subscribe<number>(ch, { from: 'latest' })))
        writes.push(publisher.bus.publish(ch, i))
      }
      await Promise.all(writes)
      await until(
        () => subs.every((s) => s.items.some((m) => m.payload === 9)),
        20_000,
        'every subscriber to get the last publish',
        () => subs.map((s) => s.items.length),
      )
      expect(subs.map((s) => payloads(s.items))).toEqual(range(0, 10).map((i) => range(i, 10)))
    }

    // Publishes and latest subscribes interleaved in one process: subscriber i gets exactly the
    // publishes made after it (on a broker, a publish not yet written when a later subscribe
    // asked where the stream ends used to wait for that subscribe's start, and reached it).
    it('latest subscribers interleaved with publishes each get exactly what was published after them', { timeout: T }, async () => {
      const t = fresh()
      const a = await t.open()
      await interleave(a, a, t.ch('interleaved'))
    })

    // The same across two Orreries of one process (two connections): a publish of one, not yet
    // written when a latest subscribe of the other asked where the stream ends, reached it too.
    it('latest subscribers of one Orrery interleaved with publishes of another in the same process get exactly what followed them', {
      timeout: T,
    }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      await interleave(a, b, t.ch('interleaved-two'))
    })

    // A latest subscriber waits for its start (on a broker: where the stream ends, and the mirror
    // to read up to there). One still waiting when its Orrery shuts down or closes completes: one
    // whose start was answered as the mirror stopped never started, nor ended (a for-await on it
    // hung). Made at several points of the wait, on instances of their own.
    it('a latest subscriber still waiting for its start completes when its Orrery shuts down or closes', { timeout: T }, async () => {
      const t = fresh()
      const a = await t.open()
      const ch = t.ch('waiting')
      await a.bus.publish(ch, 'there')
      const ends: string[] = []
      for (const [i, delay] of [0, 1, 2, 3, 5, 8, 12, 16].entries()) {
        const o = await t.open()
        for (let k = 0; k < 3; k++)
          o.bus.subscribe(ch, { from: 'latest' }).subscribe({
            complete: () => void ends.push('complete'),
            error: (error: unknown) => void ends.push(`error ${(error as { code?: string }).code}`),
          })
        await new Promise((r) => setTimeout(r, delay))
        if (i % 2 === 0) await o.shutdown()
        else o.close()
      }
      await until(
        () => ends.length >= 24,
        5_000,
        'every subscriber to end',
        () => ends.length,
      )
      expect(ends).toEqual(ends.map(() => 'complete'))
    })

    it('from { time } starts at the first message at or after that time', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('timed')
      await a.bus.publish(ch, 'before-1')
      await a.bus.publish(ch, 'before-2')
      // The clock must move past the writes above, so `at` falls strictly between the two sets.
      const written = Date.now()
      await until(() => Date.now() >= written + 5, 1_000, 'the clock to move')
      const at = Date.now()
      await a.bus.publish(ch, 'after-1')
      await a.bus.publish(ch, 'after-2')
      const got = listen(b.bus.subscribe<string>(ch, { from: { time: at } }))
      await until(
        () => got.items.length >= 2,
        20_000,
        'the messages after the time',
        () => payloads(got.items),
      )
      await a.bus.publish(ch, 'after-3')
      await until(
        () => got.items.length >= 3,
        20_000,
        'the live message',
        () => payloads(got.items),
      )
      expect(payloads(got.items)).toEqual(['after-1', 'after-2', 'after-3'])
      for (const m of got.items) expect(m.timestamp).toBeGreaterThanOrEqual(at)
    })

    it('a subscriber that stops and starts again from earliest sees everything, in order', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('restart')
      const first = listen(o.bus.subscribe<number>(ch))
      await o.bus.publishBatch(range(0, 5).map((payload) => ({ channel: ch, payload })))
      await until(
        () => first.items.length >= 5,
        20_000,
        'the first 5',
        () => payloads(first.items),
      )
      first.subscription.unsubscribe()
      await o.bus.publishBatch(range(5, 10).map((payload) => ({ channel: ch, payload })))
      // A `for await` loop stops the subscription when it breaks.
      const seen: number[] = []
      for await (const m of o.bus.subscribe<number>(ch, { from: 'earliest' })) {
        seen.push(m.payload)
        if (seen.length === 10) break
      }
      expect(seen).toEqual(range(0, 10))
      expect(payloads(first.items)).toEqual(range(0, 5))
      const again = listen(o.bus.subscribe<number>(ch, { from: 'earliest' }))
      await until(
        () => again.items.length >= 10,
        20_000,
        'the whole log again',
        () => payloads(again.items),
      )
      expect(payloads(again.items)).toEqual(range(0, 10))
      if (shared) {
        // The same after the whole instance stops: the messages live on the backend.
        const next = await t.open()
        const replay = listen(next.bus.subscribe<number>(ch, { from: 'earliest' }))
        await until(
          () => replay.items.length >= 10,
          20_000,
          'the log on a new instance',
          () => payloads(replay.items),
        )
        expect(payloads(replay.items)).toEqual(range(0, 10))
      }
    })

    it('an expired message is never delivered to a subscriber', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('ttl-sub')
      const sent = Date.now()
      await o.bus.publish(ch, 'short', { ttl: 200 })
      await o.bus.publish(ch, 'long')
      await until(() => Date.now() > sent + 400, 2_000, 'the TTL to run out')
      const late = listen(o.bus.subscribe<string>(ch, { from: 'earliest' }))
      await o.bus.publish(ch, 'end')
      await until(
        () => late.items.some((m) => m.payload === 'end'),
        20_000,
        'the last message',
        () => payloads(late.items),
      )
      expect(payloads(late.items)).toEqual(['long', 'end'])
    })

    it.runIf(can('dedup'))('dedup: the same id within the window is published once, from any instance', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('dedup')
      for (const o of distinct([a, b])) o.bus.channel(ch, { dedupWindowMs: 60_000 })
      const got = listen(a.bus.subscribe<number | string>(ch))
      expect((await a.bus.publish(ch, 1, { id: 'dup-1' })).published).toBe(true)
      expect((await b.bus.publish(ch, 2, { id: 'dup-1' })).published).toBe(false)
      expect((await a.bus.publish(ch, 3, { id: 'dup-1' })).published).toBe(false)
      // Two instances racing with one id: exactly one wins.
      const race = await Promise.all([a.bus.publish(ch, 4, { id: 'dup-2' }), b.bus.publish(ch, 5, { id: 'dup-2' })])
      expect(race.filter((r) => r.published).length).toBe(1)
      await b.bus.publish(ch, 'end', { id: 'end' })
      await until(
        () => got.items.some((m) => m.payload === 'end'),
        20_000,
        'the last message',
        () => payloads(got.items),
      )
      expect(ids(got.items)).toEqual(['dup-1', 'dup-2', 'end'])
      expect(got.items[0]!.payload).toBe(1)
      expect([4, 5]).toContain(got.items[1]!.payload)
    })

    it('retention maxCount keeps the last N messages', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('retained')
      const n = 50
      o.bus.channel(ch, { retention: { maxCount: n } })
      await o.bus.publishBatch(range(0, 150).map((payload) => ({ channel: ch, payload })))
      await o.bus.publishBatch(range(150, 300).map((payload) => ({ channel: ch, payload })))
      await o.bus.publish(ch, 300)
      const here = listen(o.bus.subscribe<number>(ch, { from: 'earliest' }))
      await until(
        () => here.items.at(-1)?.payload === 300,
        20_000,
        'the last message',
        () => here.items.length,
      )
      // This instance's own view is exact: its channel keeps N.
      expect(payloads(here.items)).toEqual(range(301 - n, 301))
      if (shared) {
        // Another instance, with no retention of its own, reads what the backend kept: the tail,
        // at least N, at most N and the backend's slack. Kafka trims shortly after a write is
        // acknowledged (DeleteRecords), so a reader may start before the last trim: read again until
        // the bound holds, within a few seconds.
        const other = await t.open()
        const deadline = Date.now() + 10_000
        let kept: number[] = []
        for (;;) {
          const there = listen(other.bus.subscribe<number>(ch, { from: 'earliest' }))
          await until(
            () => there.items.at(-1)?.payload === 300,
            20_000,
            'the last message on another instance',
            () => there.items.length,
          )
          there.subscription.unsubscribe()
          kept = payloads(there.items)
          expect(kept.length).toBeGreaterThanOrEqual(n)
          expect(kept).toEqual(range(301 - kept.length, 301))
          if (kept.length <= n + backend.retentionSlack || Date.now() > deadline) break
          await new Promise((resolve) => setTimeout(resolve, 200))
        }
        expect(kept.length).toBeLessThanOrEqual(n + backend.retentionSlack)
      }
    })
    it('retention maxAgeMs: what is older than the age is not replayed', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('aged')
      // An age long enough that 'new' cannot age out while a loaded machine opens the replay, and a
      // wait a second past it, since a broker may stamp 'old' later than this clock read `sent`
      // (Kafka on wasm replayed it once when the wait was 0.2 s past the age).
      o.bus.channel(ch, { retention: { maxAgeMs: 1_500 } })
      const sent = Date.now()
      await o.bus.publish(ch, 'old')
      await until(() => Date.now() > sent + 2_500, 4_000, 'the message to age')
      await o.bus.publish(ch, 'new')
      const got = listen(o.bus.subscribe<string>(ch, { from: 'earliest' }))
      await o.bus.publish(ch, 'end')
      await until(
        () => got.items.some((m) => m.payload === 'end'),
        20_000,
        'the last message',
        () => payloads(got.items),
      )
      expect(payloads(got.items)).toEqual(['new', 'end'])
    })

    it('every field of a message and binary payloads cross intact to another instance', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('fields')
      const got = listen(b.bus.subscribe<unknown>(ch))
      const bytes = Uint8Array.from({ length: 65_536 }, (_, i) => (i * 7 + (i >> 8)) & 0xff)
      const options = {
        id: 'msg-é-1',
        kind: 'event' as const,
        sender: 'shop/π',
        recipient: 'billing',
        correlationId: 'corr-1',
        causationId: 'cause-1',
        schema: 'order@1.2',
        headers: { 'x-trace': 'abc', emoji: '🚀', empty: '' },
      }
      await a.bus.publish(ch, { sku: 'A-1', qty: 2, note: 'naïve ✓', nested: [1, null, { deep: true }] }, options)
      await a.bus.publish(ch, bytes)
      await a.bus.publish(ch, { big: 2n ** 40n, when: 'msgpack' }, { codec: 'msgpack' })
      await until(() => got.items.length >= 3, 20_000, 'the 3 messages')
      const [json, raw, packed] = got.items as [Message<unknown>, Message<unknown>, Message<unknown>]
      expect(json.payload).toEqual({ sku: 'A-1', qty: 2, note: 'naïve ✓', nested: [1, null, { deep: true }] })
      expect(json).toMatchObject({ ...options, channel: ch, codec: 'json' })
      expect(json.headers).toEqual(options.headers)
      expect(raw.codec).toBe('raw')
      const back = raw.payload as Uint8Array
      expect(back.length).toBe(bytes.length)
      expect(back.every((v, i) => v === bytes[i])).toBe(true)
      expect(packed.codec).toBe('msgpack')
      expect(packed.payload).toEqual({ big: 2n ** 40n, when: 'msgpack' })
    })

    it('a batch may mix a channel on the backend and one in this process: both are published', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const bound = t.ch('mixed')
      const local = `local-${t.prefix}mixed`
      const onBound = listen(o.bus.subscribe<number>(bound))
      const onLocal = listen(o.bus.subscribe<number>(local))
      const result = await o.bus.publishBatch([
        { channel: bound, payload: 1 },
        { channel: local, payload: 2 },
        { channel: bound, payload: 3 },
      ])
      expect(result.published).toBe(3)
      await until(
        () => onBound.items.length >= 2 && onLocal.items.length >= 1,
        20_000,
        'both channels',
        () => [payloads(onBound.items), payloads(onLocal.items)],
      )
      expect(payloads(onBound.items)).toEqual([1, 3])
      expect(payloads(onLocal.items)).toEqual([2])
    })

    // A mirror once took in whatever its broker had, and its retention (10,000 by default) then
    // trimmed what such a subscriber had not read: it never got those, and nothing said so.
    it('a subscriber that refuses to lose messages and falls behind by more than the mirror keeps gets every one: the mirror reads on as it takes them', {
      timeout: T,
    }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('slow')
      const n = 12_000
      const reading = b.bus.subscribe<number>(ch, { buffer: 100 })[Symbol.asyncIterator]()
      await b.bus.attached(ch)
      const published = (async () => {
        for (let from = 0; from < n; from += 1_000) await a.bus.publishBatch(range(from, from + 1_000).map((payload) => ({ channel: ch, payload })))
      })()
      // Nothing read meanwhile: its buffer fills, and the rest waits (in the log, or on the broker).
      await new Promise((r) => setTimeout(r, 1_500))
      const got: number[] = []
      while (got.length < n) {
        const next = await withTimeout(reading.next(), 20_000, `message ${got.length}`)
        if (next.done === true) break
        got.push(next.value.payload)
      }
      await published
      await reading.return?.()
      expect(got.length).toBe(n)
      expect(got.every((p, i) => p === i)).toBe(true)
    })
  })

  describe('consumer groups', () => {
    // Made between publishes of this process (its own and another Orrery's): the ones before,
    // still being written when it was made, are not its; the ones after all are.
    it("a group from 'latest' made between publishes takes exactly those made after it", { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('group-between')
      await a.bus.publish(ch, -1)
      const writes: Array<Promise<unknown>> = [a.bus.publish(ch, 0), b.bus.publish(ch, 1)]
      const got = listen(a.bus.group<number>(ch, 'between', { from: 'latest' }).join())
      writes.push(a.bus.publish(ch, 2), b.bus.publish(ch, 3))
      await Promise.all(writes)
      await until(
        () => got.items.length >= 2,
        20_000,
        'the publishes made after the group',
        () => got.items.map((d) => d.message.payload),
      )
      // Time for one that should not come (an earlier publish) to come.
      await quiet(300)
      for (const d of got.items) d.ack()
      expect(got.items.map((d) => d.message.payload).sort()).toEqual([2, 3])
    })

    it("a group from 'earliest' reads the history; one from 'latest' only what follows", { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('backlog')
      await a.bus.publishBatch(range(0, 3).map((payload) => ({ channel: ch, payload })))
      const early = listen(b.bus.group<number>(ch, 'replay', { from: 'earliest' }).join())
      const late = listen(b.bus.group<number>(ch, 'live', { from: 'latest' }).join())
      await until(
        () => early.items.length >= 3,
        20_000,
        'the history',
        () => idsOf(early.items),
      )
      await a.bus.publish(ch, 3)
      await until(
        () => early.items.length >= 4 && late.items.length >= 1,
        20_000,
        'the new message in both groups',
        () => [early.items.length, late.items.length],
      )
      for (const d of [...early.items, ...late.items]) d.ack()
      expect(early.items.map((d) => d.message.payload)).toEqual([0, 1, 2, 3])
      expect(late.items.map((d) => d.message.payload)).toEqual([3])
    })

    it('each message goes to exactly one member across instances; acked ones are never redelivered', { timeout: T }, async () => {
      const t = fresh()
      const peers = await t.peers(2)
      const ch = t.ch('jobs')
      const visibility = 400
      const handled = new Map<string, string[]>()
      const groups = peers.map((o, i) => {
        const group = o.bus.group<number>(ch, 'workers', { visibilityTimeout: visibility })
        group.consume(
          async (d) => {
            handled.set(d.message.id, [...(handled.get(d.message.id) ?? []), `m${i}`])
            await new Promise((resolve) => setTimeout(resolve, 2)) // a little work, so both members get some
          },
          { maxInFlight: 1 },
        )
        return group
      })
      const n = 40
      const published = await peers[0]!.bus.publishBatch(range(0, n).map((payload) => ({ channel: ch, payload })))
      await until(
        () => handled.size >= n,
        30_000,
        `${n} messages handled`,
        () => handled.size,
      )
      expect(new Set(handled.keys())).toEqual(new Set(published.ids))
      // Both members took part (where the broker hands out messages, not partitions).
      const byMember = [...handled.values()].flat()
      if (can('handover')) expect(new Set(byMember)).toEqual(new Set(['m0', 'm1']))
      // Past every lease and the backend's redelivery bound: still once each.
      await quiet(backend.redeliveryBound(visibility))
      expect([...handled.values()].filter((who) => who.length !== 1)).toEqual([])
      // One group handle per instance (memory's peers are one instance, so one group).
      const stats = distinct(peers).map((o) => groups[peers.indexOf(o)]!.stats())
      expect(stats.reduce((sum, s) => sum + s.acked, 0)).toBe(n)
      expect(stats.reduce((sum, s) => sum + s.pending, 0)).toBe(0)
    })

    it('deliveries that fail are redelivered with a higher count; every message ends handled once', { timeout: T }, async () => {
      const t = fresh()
      const peers = await t.peers(2)
      const ch = t.ch('flaky')
      const attempts = new Map<number, number[]>()
      const done = new Map<number, number>()
      for (const o of peers) {
        o.bus.group<number>(ch, 'workers', { visibilityTimeout: 2_000, maxDeliveries: 5 }).consume(
          (d) => {
            const n = d.message.payload
            attempts.set(n, [...(attempts.get(n) ?? []), d.attempt])
            // Every third message fails on its first delivery, on purpose.
            if (n % 3 === 0 && d.attempt === 1) throw new Error('first try fails')
            done.set(n, (done.get(n) ?? 0) + 1)
          },
          { maxInFlight: 4 },
        )
      }
      const n = 30
      await peers[1]!.bus.publishBatch(range(0, n).map((payload) => ({ channel: ch, payload })))
      await until(
        () => done.size >= n,
        30_000,
        'every message handled',
        () => [...done.keys()].sort((x, y) => x - y),
      )
      await quiet(backend.redeliveryBound(2_000))
      expect([...done.entries()].filter(([, count]) => count !== 1)).toEqual([])
      for (const i of range(0, n)) expect([i, attempts.get(i)]).toEqual([i, i % 3 === 0 ? [1, 2] : [1]])
    })

    it('a nack is redelivered at once by hand, with the count of deliveries', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('by-hand')
      const group = o.bus.group<string>(ch, 'audit')
      const got = listen(group.join({ maxInFlight: 4 }))
      await o.bus.publish(ch, 'x', { id: 'x-1' })
      await until(() => got.items.length >= 1, 20_000, 'the delivery')
      expect(got.items[0]!.attempt).toBe(1)
      got.items[0]!.nack()
      await until(() => got.items.length >= 2, 20_000, 'the redelivery')
      expect(got.items[1]!.message.id).toBe('x-1')
      expect(got.items[1]!.attempt).toBe(2)
      got.items[1]!.nack()
      await until(() => got.items.length >= 3, 20_000, 'the second redelivery')
      expect(got.items[2]!.attempt).toBe(3)
      got.items[2]!.ack()
      expect(group.pending()).toEqual([])
    })

    it('nack with a delay: not redelivered before the delay, redelivered after, other work goes on meanwhile', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('delayed')
      const group = o.bus.group<string>(ch, 'w')
      const got = listen(group.join({ maxInFlight: 4 }))
      await o.bus.publish(ch, 'flaky')
      await until(() => got.items.length >= 1, 20_000, 'the delivery')
      const delay = 1_500
      const nackedAt = Date.now()
      got.items[0]!.nack({ delay })
      await o.bus.publish(ch, 'other')
      await until(() => got.items.some((d) => d.message.payload === 'other'), 20_000, 'the other message')
      const other = got.items.find((d) => d.message.payload === 'other')!
      other.ack()
      await until(
        () => got.items.filter((d) => d.message.payload === 'flaky').length >= 2,
        delay + 20_000,
        'the redelivery',
        () => idsOf(got.items),
      )
      const index = got.items.findIndex((d, i) => i > 0 && d.message.payload === 'flaky')
      expect(got.times[index]! - nackedAt).toBeGreaterThanOrEqual(delay - 5)
      expect(got.items.indexOf(other)).toBeLessThan(index)
      expect(got.items[index]!.attempt).toBe(2)
      got.items[index]!.ack()
    })

    it('visibility timeout: what a member holds without acking goes out again; its late ack is STALE_ACK', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('lease')
      const visibility = 400
      const group = o.bus.group<string>(ch, 'w', { visibilityTimeout: visibility })
      const got = listen(group.join({ maxInFlight: 4 }))
      // The lease begins after the publish: the redelivery is timed from here (the first delivery
      // may reach the listener some ms after its lease began, on a loaded machine).
      const sent = Date.now()
      await o.bus.publish(ch, 'task', { id: 'task-1' })
      await until(() => got.items.length >= 1, 20_000, 'the delivery')
      const held = got.items[0]!
      await until(() => got.items.length >= 2, backend.redeliveryBound(visibility) + 10_000, 'the redelivery')
      expect(got.times[1]! - sent).toBeGreaterThanOrEqual(visibility)
      expect(got.items[1]!.message.id).toBe('task-1')
      expect(got.items[1]!.attempt).toBe(2)
      expect(await refusalOf(() => held.ack())).toMatchObject({ code: 'STALE_ACK' })
      got.items[1]!.ack()
      await quiet(backend.redeliveryBound(visibility))
      expect(got.items.length).toBe(2)
      expect(group.pending()).toEqual([])
    })

    it("maxDeliveries moves the message to '<channel>.dead-letter' with the reason; a nack's reason sends it there at once", { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('orders')
      const group = a.bus.group<string>(ch, 'billing', { maxDeliveries: 2 })
      const dead = listen(a.bus.subscribe<string>(`${ch}.dead-letter`, { from: 'earliest' }))
      const got: Array<[string, number]> = []
      group.join({ maxInFlight: 4 }).subscribe((d) => {
        got.push([d.message.id, d.attempt]) // read before settling: the core forgets a settled delivery
        if (d.message.payload === 'bad') d.nack({ deadLetter: 'validation failed' })
        else d.nack()
      })
      await a.bus.publish(ch, 'poison', { id: 'order-1' })
      await until(
        () => dead.items.length >= 1,
        20_000,
        'the dead letter',
        () => got,
      )
      await a.bus.publish(ch, 'bad', { id: 'order-2' })
      await until(
        () => dead.items.length >= 2,
        20_000,
        'the second dead letter',
        () => got,
      )
      expect(
        dead.items.map((m) => [
          m.id,
          m.payload,
          m.headers['x-orrery-dead-letter-reason'],
          m.headers['x-orrery-deliveries'],
          m.headers['x-orrery-origin-channel'],
        ]),
      ).toEqual([
        ['order-1', 'poison', 'max-deliveries', '2', ch],
        ['order-2', 'bad', 'validation failed', '1', ch],
      ])
      expect(got).toEqual([
        ['order-1', 1],
        ['order-1', 2],
        ['order-2', 1],
      ])
      expect(group.stats().deadLettered).toBe(2)
      // The dead-letter channel is an ordinary channel on the same backend: another instance replays it.
      const replay = listen(b.bus.subscribe<string>(`${ch}.dead-letter`, { from: 'earliest' }))
      await until(() => replay.items.length >= 2, 20_000, 'the dead letters from another instance')
      expect(ids(replay.items)).toEqual(['order-1', 'order-2'])
    })

    it('an expired message is not delivered to a group and goes to the dead-letter channel with deadLetterExpired', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('ttl')
      o.bus.channel(ch, { deadLetterExpired: true })
      const group = o.bus.group<string>(ch, 'w')
      const dead = listen(o.bus.subscribe<string>(`${ch}.dead-letter`, { from: 'earliest' }))
      const sent = Date.now()
      await o.bus.publish(ch, 'short', { ttl: 200, id: 'short' })
      await o.bus.publish(ch, 'long', { id: 'long' })
      await until(() => Date.now() > sent + 400, 2_000, 'the TTL to run out')
      const got = listen(group.join())
      await until(
        () => got.items.length >= 1 && dead.items.length >= 1,
        20_000,
        'the live message and the dead letter',
        () => [idsOf(got.items), ids(dead.items)],
      )
      got.items[0]!.ack()
      expect(idsOf(got.items)).toEqual(['long'])
      expect(dead.items.map((m) => [m.id, m.headers['x-orrery-dead-letter-reason']])).toEqual([['short', 'expired']])
    })

    it.runIf(can('handover'))('a member that leaves gives back what it held at once, to a member of another instance', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('leave')
      const visibility = 10_000
      const held = listen(a.bus.group<number>(ch, 'w', { visibilityTimeout: visibility }).join({ maxInFlight: 10 }))
      await a.bus.publishBatch(range(0, 3).map((payload) => ({ channel: ch, payload })))
      await until(() => held.items.length >= 3, 20_000, 'the leaving member to hold all 3')
      // Joins once everything is held: it can only get what the other gives back.
      const taken = listen(b.bus.group<number>(ch, 'w', { visibilityTimeout: visibility }).join({ maxInFlight: 10 }))
      const leftAt = Date.now()
      held.subscription.unsubscribe()
      await until(
        () => taken.items.length >= 3,
        visibility - 2_000,
        'the other member to get them before any lease ran out',
        () => taken.items.length,
      )
      expect(Date.now() - leftAt).toBeLessThan(visibility)
      expect(taken.items.map((d) => d.message.payload).sort()).toEqual([0, 1, 2])
      expect(taken.items.map((d) => d.attempt)).toEqual([2, 2, 2])
      for (const d of taken.items) d.ack()
      expect(await refusalOf(() => held.items[0]!.ack())).toMatchObject({ code: 'STALE_ACK' })
    })

    it.runIf(shared && can('handover'))(
      'an instance that stops without acking: another gets its messages once the lease runs out',
      { timeout: T },
      async () => {
        const t = fresh()
        const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
        const ch = t.ch('crash')
        const visibility = 500
        const groupA = a.bus.group<number>(ch, 'w', { visibilityTimeout: visibility })
        const held = listen(groupA.join({ maxInFlight: 10 }))
        // The leases begin after the publish: the hand-over is timed from here.
        const sent = Date.now()
        await a.bus.publishBatch(range(0, 3).map((payload) => ({ channel: ch, payload })))
        await until(() => held.items.length >= 3, 20_000, 'the crashing instance to hold all 3')
        a.close() // abrupt: nothing released
        const taken = listen(b.bus.group<number>(ch, 'w', { visibilityTimeout: visibility }).join({ maxInFlight: 10 }))
        await until(
          () => taken.items.length >= 3,
          backend.redeliveryBound(visibility) + 10_000,
          'the other instance to take the 3',
          () => taken.items.length,
        )
        expect(taken.items.map((d) => d.message.payload).sort()).toEqual([0, 1, 2])
        expect(taken.items.map((d) => d.attempt)).toEqual([2, 2, 2])
        // Not before the lease ran out where it was held.
        expect(taken.times[0]! - sent).toBeGreaterThanOrEqual(visibility)
        for (const d of taken.items) d.ack()
      },
    )

    it.runIf(shared && can('handover'))('shutdown() gives what an instance held back at once', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('handover')
      const visibility = 10_000
      const held = listen(a.bus.group<number>(ch, 'w', { visibilityTimeout: visibility }).join({ maxInFlight: 10 }))
      await a.bus.publishBatch(range(0, 4).map((payload) => ({ channel: ch, payload })))
      await until(() => held.items.length >= 4, 20_000, 'the leaving instance to hold all 4')
      // Joins once everything is held: it can only get what the other gives back.
      const taken = listen(b.bus.group<number>(ch, 'w', { visibilityTimeout: visibility }).join({ maxInFlight: 10 }))
      const startedAt = Date.now()
      await a.shutdown()
      await until(
        () => taken.items.length >= 4,
        visibility - 1_000,
        "the other instance to take a's share before any lease ran out",
        () => taken.items.length,
      )
      expect(Date.now() - startedAt).toBeLessThan(visibility)
      expect(taken.items.map((d) => d.message.payload).sort()).toEqual([0, 1, 2, 3])
      expect(taken.items.map((d) => d.attempt)).toEqual([2, 2, 2, 2])
      for (const d of taken.items) d.ack()
    })

    // Without drainMs the running handlers' work goes back at once and runs again elsewhere (the
    // test above); with it they finish first, with the Orrery's store still open, and are acked.
    it.runIf(shared && can('handover'))('shutdown({ drainMs }) lets the handlers running finish: nothing runs again elsewhere', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('drain')
      const ns = a.openStore().namespace('done')
      let release = (): void => {}
      const gate = new Promise<void>((resolve) => {
        release = resolve
      })
      const started: number[] = []
      const stored: string[] = []
      const failed: unknown[] = []
      a.bus.group<number>(ch, 'w', { visibilityTimeout: 10_000 }).consume(
        async (d) => {
          started.push(d.message.payload)
          await gate
          await new Promise((r) => setTimeout(r, 200))
          try {
            ns.put(String(d.message.payload), 'done')
            stored.push(String(d.message.payload))
          } catch (error) {
            failed.push(error)
            throw error
          }
        },
        { maxInFlight: 10 },
      )
      await a.bus.attached(ch)
      await a.bus.publishBatch(range(0, 4).map((payload) => ({ channel: ch, payload })))
      await until(() => started.length >= 4, 20_000, 'the leaving instance to run all 4')
      const taken = listen(b.bus.group<number>(ch, 'w', { visibilityTimeout: 10_000 }).join({ maxInFlight: 10 }))
      await b.bus.attached(ch)
      const begun = Date.now()
      const stopping = a.shutdown({ drainMs: 8_000 })
      // A second call waits for the same stop: it does not cut the drain short.
      const again = a.shutdown()
      release()
      const outcome = await stopping
      expect(await again).toBe(outcome)
      expect(outcome).toEqual({ graceful: true, errors: [] })
      // Ended once the work was done, not at the deadline.
      expect(Date.now() - begun).toBeLessThan(6_000)
      expect(failed).toEqual([])
      // Written to the Orrery's store, still open while they ran.
      expect(stored.sort()).toEqual(['0', '1', '2', '3'])
      // Acked where they ran: the other instance gets none of them, not even after a while.
      await new Promise((r) => setTimeout(r, 1_000))
      expect(taken.items.map((d) => d.message.payload)).toEqual([])
      // What is published next is the remaining instance's.
      await b.bus.publish(ch, 4)
      await until(() => taken.items.length >= 1, 20_000, 'the remaining instance to take the next')
      expect(taken.items.map((d) => [d.message.payload, d.attempt])).toEqual([[4, 1]])
      taken.items[0]!.ack()
    })

    it.runIf(shared && can('handover'))('shutdown({ drainMs }) hands back at the deadline what is not done', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('late')
      await runningForever(a, ch)
      const taken = listen(b.bus.group<number>(ch, 'w', { visibilityTimeout: 10_000 }).join())
      await b.bus.attached(ch)
      const begun = Date.now()
      const outcome = await a.shutdown({ drainMs: 300 })
      expect(Date.now() - begun).toBeGreaterThanOrEqual(290)
      expect(outcome).toEqual({ graceful: true, errors: [] })
      await until(() => taken.items.length >= 1, 9_000, 'the other instance to take it before its lease ran out')
      expect(taken.items.map((d) => [d.message.payload, d.attempt])).toEqual([[1, 2]])
      taken.items[0]!.ack()
    })

    // A second signal's close() during the drain: the stop read the freed core and rejected.
    it.runIf(shared && can('handover'))('close() during a draining shutdown ends it at once; the shutdown still resolves', { timeout: T }, async () => {
      const t = fresh()
      const [a] = (await t.peers(1)) as [Orrery]
      const ch = t.ch('cut')
      await runningForever(a, ch)
      const stopping = a.shutdown({ drainMs: 15_000 })
      await new Promise((r) => setTimeout(r, 100))
      const begun = Date.now()
      a.close()
      const outcome = await withTimeout(stopping, 5_000, 'the shutdown to end after close()')
      expect(Date.now() - begun).toBeLessThan(5_000)
      expect(outcome).toEqual({ graceful: false, errors: [] })
    })

    // A read waiting on the broker when the drain began (a Redis blocking read, a NATS pull) went
    // on, and brought what was published meanwhile to the draining process.
    it.runIf(shared && can('handover'))("during a draining shutdown, what is published goes to the group's other instances", { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('meanwhile')
      let release = (): void => {}
      const gate = new Promise<void>((resolve) => {
        release = resolve
      })
      const ranHere: number[] = []
      a.bus.group<number>(ch, 'w', { visibilityTimeout: 10_000 }).consume(
        async (d) => {
          ranHere.push(d.message.payload)
          if (d.message.payload === 0) await gate
        },
        { maxInFlight: 10 },
      )
      await a.bus.attached(ch)
      await a.bus.publish(ch, 0)
      await until(() => ranHere.length === 1, 20_000, 'the leaving instance to run 0')
      // Its read of the group is waiting on the broker again, with room for more.
      await new Promise((r) => setTimeout(r, 300))
      const taken = listen(b.bus.group<number>(ch, 'w', { visibilityTimeout: 10_000 }).join({ maxInFlight: 10 }))
      await b.bus.attached(ch)
      const stopping = a.shutdown({ drainMs: 15_000 })
      await new Promise((r) => setTimeout(r, 200))
      await b.bus.publishBatch(range(1, 6).map((payload) => ({ channel: ch, payload })))
      await until(() => taken.items.length >= 5, 20_000, 'the remaining instance to take what was published')
      for (const d of taken.items) d.ack()
      release()
      expect(await stopping).toEqual({ graceful: true, errors: [] })
      expect(ranHere).toEqual([0])
      expect(taken.items.map((d) => d.message.payload).sort()).toEqual([1, 2, 3, 4, 5])
    })

    // The control's dead-letter keeper (group orrery.control) holds every unsettled dead letter
    // for a day: counted as work in hand, it held every drain until its deadline.
    it.runIf(shared && can('handover'))('a control showing dead letters does not hold a draining shutdown', { timeout: T }, async () => {
      const t = fresh()
      const [a] = (await t.peers(1)) as [Orrery]
      const ch = t.ch('kept')
      const control = a.control()
      a.bus.group<string>(ch, 'w').consume((d) => d.nack({ deadLetter: 'bad' }))
      await a.bus.attached(ch)
      await a.bus.publish(ch, 'x')
      for (const end = Date.now() + 20_000; (await control.deadLetters(ch)).length === 0; ) {
        if (Date.now() > end) throw new Error('the dead letter was never shown')
        await new Promise((r) => setTimeout(r, 100))
      }
      const begun = Date.now()
      expect(await a.shutdown({ drainMs: 15_000 })).toEqual({ graceful: true, errors: [] })
      expect(Date.now() - begun).toBeLessThan(8_000)
    })
  })

  describe.runIf(can('request'))('requests', () => {
    it('a broadcast responder on another instance answers; payload, headers, binary payloads and errors cross intact', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('echo')
      b.bus.respond<{ text: string; fail?: boolean }, { text: string; trace: string | undefined }>(ch, (req) => {
        if (req.payload.fail) throw Object.assign(new Error('refused on purpose'), { code: 'NOPE' })
        return { text: req.payload.text.toUpperCase(), trace: req.headers['trace'] }
      })
      const reply = await a.bus.request<{ text: string; trace: string }>(ch, { text: 'héllo' }, { timeout: 10_000, headers: { trace: 't-1' } })
      expect(reply.payload).toEqual({ text: 'HÉLLO', trace: 't-1' })
      const bin = t.ch('echo.bytes')
      b.bus.respond<Uint8Array, Uint8Array>(bin, (req) => req.payload.slice().reverse())
      const bytes = await a.bus.request<Uint8Array>(bin, new Uint8Array([0, 255, 7]), { timeout: 10_000 })
      expect([...bytes.payload]).toEqual([7, 255, 0])
      const err = await refusalOf(() => a.bus.request(ch, { text: 'x', fail: true }, { timeout: 10_000 }))
      expect(isOrreryError(err, 'HANDLER_ERROR')).toBe(true)
      expect((err as Error).message).toContain('refused on purpose')
      expect((err as { details: Record<string, unknown> }).details['remoteCode']).toBe('NOPE')
    })

    it('a group request is answered once, taken by a member on any instance; many in flight at once', { timeout: T }, async () => {
      const t = fresh()
      const peers = await t.peers(2)
      const ch = t.ch('square')
      const calls = [0, 0]
      for (const [i, o] of peers.entries()) {
        o.bus.respond<number, number>(
          ch,
          async (req) => {
            calls[i]!++
            await new Promise((resolve) => setTimeout(resolve, 2))
            return req.payload * req.payload
          },
          { group: 'squarers' },
        )
      }
      const n = 60
      const replies = await Promise.all(range(0, n).map((i) => peers[i % 2]!.bus.request<number>(ch, i, { timeout: 20_000 })))
      expect(replies.map((r) => r.payload)).toEqual(range(0, n).map((i) => i * i))
      expect(calls[0]! + calls[1]!).toBe(n)
    })

    it('a responder of the same instance answers its own requests (broadcast and group), several in flight', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const [solo, pooled] = [t.ch('self'), t.ch('self.group')]
      o.bus.respond<number, number>(solo, (req) => req.payload + 1)
      o.bus.respond<number, number>(pooled, (req) => req.payload * 10, { group: 'g' })
      const replies = await Promise.all(
        range(0, 10).flatMap((i) => [o.bus.request<number>(solo, i, { timeout: 10_000 }), o.bus.request<number>(pooled, i, { timeout: 10_000 })]),
      )
      expect(replies.map((r) => r.payload)).toEqual(range(0, 10).flatMap((i) => [i + 1, i * 10]))
      expect(o.bus.lateReplies()).toBe(0)
    })

    it('no responder anywhere: TIMEOUT on a shared backend (nobody can know at once), NO_RESPONDER in one process', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('nobody')
      const started = Date.now()
      const err = await refusalOf(() => o.bus.request(ch, 1, { timeout: 300 }))
      if (shared) {
        expect(isOrreryError(err, 'TIMEOUT')).toBe(true)
        expect(Date.now() - started).toBeGreaterThanOrEqual(290)
      } else {
        expect(isOrreryError(err, 'NO_RESPONDER')).toBe(true)
      }
      expect((err as Error).message).toContain(ch)
    })

    it('a reply after the timeout is dropped and counted as late', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('slow')
      let answered = 0
      b.bus.respond<number, number>(ch, async (req) => {
        await new Promise((resolve) => setTimeout(resolve, 400))
        answered++
        return req.payload
      })
      const err = await refusalOf(() => a.bus.request(ch, 1, { timeout: 150 }))
      expect(isOrreryError(err, 'TIMEOUT')).toBe(true)
      const late = () => distinct([a, b]).reduce((sum, o) => sum + o.bus.lateReplies(), 0)
      await until(
        () => answered === 1 && late() === 1,
        10_000,
        'the late reply counted',
        () => ({ answered, late: late() }),
      )
      // Nothing else arrives afterwards: the late reply never settles anything.
      await quiet(200)
      expect(late()).toBe(1)
    })

    it.runIf(shared)('a reply after the requester closed is dropped; the responder goes on answering others', { timeout: T }, async () => {
      const t = fresh()
      const [a, b, c] = (await t.peers(3)) as [Orrery, Orrery, Orrery]
      const ch = t.ch('held')
      const failures = listen(b.bus.events)
      let release: (() => void) | undefined
      const held = new Promise<void>((resolve) => (release = resolve))
      let asked = 0
      b.bus.respond<string, string>(ch, async (req) => {
        asked++
        if (req.payload === 'hold') await held
        return `re:${req.payload}`
      })
      const first = a.bus.request<string>(ch, 'hold', { timeout: 20_000 })
      await until(() => asked === 1, 10_000, 'the request to reach the responder')
      a.close()
      expect(isOrreryError(await refusalOf(() => first), 'CLOSED')).toBe(true)
      release!()
      const next = await c.bus.request<string>(ch, 'next', { timeout: 10_000 })
      expect(next.payload).toBe('re:next')
      expect(failures.items.filter((e) => (e as { type: string }).type !== 'slow-consumer')).toEqual([])
    })
  })

  describe('capabilities', () => {
    it('bus.binding() names the backend of a channel and what it can do', async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('bound')
      if (backend.name === 'memory') {
        expect(o.bus.binding(ch)).toBeUndefined()
        return
      }
      expect(o.bus.binding(ch)).toEqual({ transport: 'main', kind: backend.name, capabilities: TRANSPORT_CAPABILITIES[backend.name] })
      expect(o.bus.binding(`${ch}.dead-letter`)).toMatchObject({ transport: 'main', kind: backend.name })
      expect(o.bus.binding(`unbound-${ch}`)).toBeUndefined()
    })

    // What some backends cannot do: each test runs where the backend can, and the refusal test
    // where it declares it cannot.

    it.runIf(can('request'))('request/response reaches a responder on another instance', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('math.add')
      b.bus.respond<{ x: number; y: number }, number>(ch, (req) => req.payload.x + req.payload.y, { group: 'adders' })
      const reply = await a.bus.request<number>(ch, { x: 2, y: 3 }, { timeout: 10_000 })
      expect(reply.payload).toBe(5)
      expect(reply.channel).toBe(ch)
    })
    it.runIf(!can('request'))('request: refused with CAPABILITY_UNSUPPORTED, nothing published', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('math.add')
      await expectUnsupported(() => o.bus.request(ch, { x: 1 }, { timeout: 1_000 }), ch)
      // A responder there could never be asked: refused too (the spec is silent; a demanding user's reading).
      await expectUnsupported(() => o.bus.respond(ch, () => 1), ch)
      await expectNothingPublished(t, o, ch)
    })

    it.runIf(can('priority'))('priorities: a replay delivers higher priorities first', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('prio')
      await o.bus.publishBatch([
        { channel: ch, payload: 'low', options: { priority: 'low' } },
        { channel: ch, payload: 'normal' },
        { channel: ch, payload: 'critical', options: { priority: 'critical' } },
        { channel: ch, payload: 'high', options: { priority: 'high' } },
      ])
      const got = listen(o.bus.subscribe<string>(ch, { from: 'earliest' }))
      await until(() => got.items.length >= 4, 20_000, 'the 4 messages')
      expect(payloads(got.items)).toEqual(['critical', 'high', 'normal', 'low'])
    })
    it.runIf(!can('priority'))("priority other than 'normal': refused with CAPABILITY_UNSUPPORTED, nothing published", { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('prio')
      for (const priority of ['low', 'high', 'critical'] as const) {
        await expectUnsupported(() => o.bus.publish(ch, priority, { priority }), ch)
      }
      // A batch with one such item is refused whole.
      await expectUnsupported(
        () =>
          o.bus.publishBatch([
            { channel: ch, payload: 'fine' },
            { channel: ch, payload: 'urgent', options: { priority: 'high' } },
          ]),
        ch,
      )
      // A request's too: refused at the call, not sent to wait out its timeout.
      await expectUnsupported(() => o.bus.request(ch, 'asked', { priority: 'high', timeout: 60_000 }), ch)
      expect((await o.bus.publish(ch, 'normal', { priority: 'normal' })).published).toBe(true)
      await expectNothingPublished(t, o, ch, ['normal'])
    })

    it.runIf(!can('dedup'))('dedup: a dedup window is refused with CAPABILITY_UNSUPPORTED, the channel keeps working', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('dedup')
      await expectUnsupported(() => o.bus.channel(ch, { dedupWindowMs: 60_000 }), ch)
      await o.bus.publish(ch, 'one', { id: 'same' })
      await o.bus.publish(ch, 'two', { id: 'same' })
      await expectNothingPublished(t, o, ch, ['one', 'two'])
    })

    it.runIf(can('from.seq'))('replay from { seq } starts at that message', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('seq')
      await o.bus.publishBatch(range(0, 5).map((payload) => ({ channel: ch, payload })))
      const got = listen(o.bus.subscribe<number>(ch, { from: { seq: 2 } }))
      await until(() => got.items.length >= 3, 20_000, 'the messages from seq 2')
      expect(got.items.map((m) => [m.seq, m.payload])).toEqual([
        [2, 2],
        [3, 3],
        [4, 4],
      ])
    })
    it.runIf(!can('from.seq'))('replay from { seq }: refused with CAPABILITY_UNSUPPORTED, no subscriber made', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('seq')
      await o.bus.publish(ch, 0)
      await expectUnsupported(() => o.bus.subscribe(ch, { from: { seq: 0 } }), ch)
      expect(o.bus.stats(ch).subscribers).toBe(0)
      await expectNothingPublished(t, o, ch, [0])
    })

    it.runIf(can('claim'))('claim moves idle deliveries to another member', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('claim')
      const group = o.bus.group<number>(ch, 'w', { visibilityTimeout: 60_000 })
      const stuck = listen(group.join({ maxInFlight: 10 }))
      await o.bus.publishBatch(range(0, 3).map((payload) => ({ channel: ch, payload })))
      await until(() => stuck.items.length >= 3, 20_000, 'the first member to hold 3')
      const helper = group.join()
      const helped = listen(helper)
      expect(group.claim(helper.memberId(), { minIdle: 0, max: 2 })).toBe(2)
      await until(() => helped.items.length >= 2, 20_000, 'the claimed deliveries')
      for (const d of helped.items) d.ack()
      stuck.items[2]!.ack()
      expect(group.pending()).toEqual([])
    })
    it.runIf(shared && can('claim'))('claim takes over what another instance holds, once idle that long', { timeout: T }, async () => {
      const t = fresh()
      const [a, b] = (await t.peers(2)) as [Orrery, Orrery]
      const ch = t.ch('claim-over')
      const visibility = 60_000
      const stuck = listen(a.bus.group<number>(ch, 'w', { visibilityTimeout: visibility }).join({ maxInFlight: 10 }))
      await a.bus.publishBatch(range(0, 3).map((payload) => ({ channel: ch, payload })))
      await until(() => stuck.items.length >= 3, 20_000, 'the first instance to hold 3')
      const heldAt = Date.now()
      const group = b.bus.group<number>(ch, 'w', { visibilityTimeout: visibility })
      const helper = group.join({ maxInFlight: 10 })
      const helped = listen(helper)
      await b.bus.attached(ch)
      const failures: BusEvent[] = []
      const watching = b.bus.events.subscribe((e) => {
        if (e.type === 'transport-error') failures.push(e)
      })
      // Nothing has been idle a minute, nor ever as long as 1e19 ms (past what the broker takes): nothing moves, nothing fails.
      expect(group.claim(helper.memberId(), { minIdle: 60_000 })).toBe(0)
      expect(group.claim(helper.memberId(), { minIdle: 1e19 })).toBe(0)
      await new Promise((r) => setTimeout(r, 500))
      expect(helped.items).toEqual([])
      watching.unsubscribe()
      expect(failures).toEqual([])
      // b's members hold nothing (0 moved here); the broker hands b two of a's three.
      await new Promise((r) => setTimeout(r, Math.max(0, heldAt + 300 - Date.now())))
      expect(group.claim(helper.memberId(), { minIdle: 200, max: 2 })).toBe(0)
      await until(
        () => helped.items.length >= 2,
        20_000,
        'the claimed deliveries',
        () => helped.items.length,
      )
      await new Promise((r) => setTimeout(r, 300))
      expect(helped.items.length).toBe(2)
      expect(helped.items.map((d) => d.attempt)).toEqual([2, 2])
      const taken = helped.items.map((d) => d.message.payload)
      expect(taken.every((p) => stuck.items.some((d) => d.message.payload === p))).toBe(true)
      expect(new Set(taken).size).toBe(2)
      for (const d of helped.items) d.ack()
      for (const d of stuck.items) d.ack()
    })
    it.runIf(!can('claim'))('group.claim: refused with CAPABILITY_UNSUPPORTED, nothing moves', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('claim')
      const group = o.bus.group<number>(ch, 'w', { visibilityTimeout: 60_000 })
      const stuck = listen(group.join({ maxInFlight: 10 }))
      await o.bus.publish(ch, 1)
      await until(() => stuck.items.length >= 1, 20_000, 'the delivery')
      const helper = group.join()
      const helped = listen(helper)
      const before = group.pending().map((p) => [p.seq, p.member])
      await expectUnsupported(() => group.claim(helper.memberId(), { minIdle: 0 }), ch)
      expect(group.pending().map((p) => [p.seq, p.member])).toEqual(before)
      expect(helped.items).toEqual([])
      stuck.items[0]!.ack()
      await expectNothingPublished(t, o, ch, [1])
    })

    it.runIf(can('retention.maxBytes'))('retention maxBytes keeps the newest messages within the bytes', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('bytes')
      o.bus.channel(ch, { retention: { maxBytes: 8_192 } })
      const body = 'x'.repeat(200)
      await o.bus.publishBatch(range(0, 200).map((i) => ({ channel: ch, payload: { i, body } })))
      const got = listen(o.bus.subscribe<{ i: number }>(ch, { from: 'earliest' }))
      await until(() => got.items.at(-1)?.payload.i === 199, 20_000, 'the last message')
      const kept = got.items.map((m) => m.payload.i)
      expect(kept.length).toBeGreaterThan(0)
      expect(kept.length).toBeLessThan(200)
      expect(kept).toEqual(range(200 - kept.length, 200))
    })
    it.runIf(!can('retention.maxBytes'))('retention maxBytes: refused with CAPABILITY_UNSUPPORTED, the channel keeps working', { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('bytes')
      await expectUnsupported(() => o.bus.channel(ch, { retention: { maxBytes: 8_192 } }), ch)
      await expectUnsupported(() => o.bus.channel(ch, { retention: { maxCount: 100, maxBytes: 8_192 } }), ch)
      o.bus.channel(ch, { retention: { maxCount: 100 } })
      await o.bus.publish(ch, 'after')
      await expectNothingPublished(t, o, ch, ['after'])
    })

    it.runIf(can('overflow.reject'))("overflow 'reject': a full subscriber refuses the publish with BACKPRESSURE", { timeout: T }, async () => {
      const t = fresh()
      const o = await t.open()
      const ch = t.ch('bp')
      listen(o.bus.subscribe<number>(ch, { buffer: 2, overflow: 'reject' }))
      const err = await refusalOf(() => o.bus.publishBatch(range(0, 3).map((payload) => ({ channel: ch, payload }))))
      expect(err).toMatchObject({ code: 'BACKPRESSURE' })
      expect(o.bus.stats(ch).published).toBe(0)
    })
    it.runIf(!can('overflow.reject'))(
      "overflow 'reject' for a subscriber: refused with CAPABILITY_UNSUPPORTED, no subscriber made",
      { timeout: T },
      async () => {
        const t = fresh()
        const o = await t.open()
        const ch = t.ch('bp')
        await expectUnsupported(() => o.bus.subscribe(ch, { buffer: 2, overflow: 'reject' }), ch)
        expect(o.bus.stats(ch).subscribers).toBe(0)
        // A group's too: a publish goes to the broker, never into the group's buffer.
        await expectUnsupported(() => o.bus.group(ch, 'g', { buffer: 2, overflow: 'reject' }), ch)
        await expectNothingPublished(t, o, ch)
      },
    )
  })

  /**
   * After a refusal: the channel holds exactly `expected` (what the test published on purpose), as a
   * fresh subscriber from earliest sees it (on another instance where the backend is shared), and
   * its publish count agrees.
   */
  async function expectNothingPublished(t: TestBackend, o: Orrery, ch: string, expected: unknown[] = []): Promise<void> {
    expect(o.bus.stats(ch).published).toBe(expected.length)
    await o.bus.publish(ch, 'sentinel')
    const reader = shared ? await t.open() : o
    const got = listen(reader.bus.subscribe<unknown>(ch, { from: 'earliest' }))
    await until(
      () => got.items.some((m) => m.payload === 'sentinel'),
      20_000,
      'the sentinel',
      () => payloads(got.items),
    )
    expect(payloads(got.items)).toEqual([...expected, 'sentinel'])
    got.subscription.unsubscribe()
  }
}
