/** The state store through the engine under test: versions, conditions, history, TTLs, transactions, watches, snapshots, merges. */
import { firstValueFrom, take, toArray } from 'rxjs'
import { describe, expect, it } from 'vitest'
import { z } from 'zod'

import { Orrery, type Change, type OpenStoreOptions } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { collect, errorOf, sameBytes, settle } from './helpers.js'

async function open(options: Omit<OpenStoreOptions, 'path'> = {}) {
  let now = 1_000
  const store = await Orrery.openStore({ engine: ENGINE, clock: () => now, ...options })
  return {
    store,
    advance(ms: number) {
      now += ms
      store.flush()
    },
  }
}

const brief = (c: Change<unknown>) => `${c.type} ${c.key}@${c.version}${c.type === 'put' ? `=${JSON.stringify(c.value)}` : ''}`

describe(`store (${ENGINE})`, () => {
  it('gives every write a growing version and guards writes by version', async () => {
    const { store } = await open()
    const ns = store.namespace('jobs')
    const v1 = ns.put('a', { step: 1 })
    const v2 = ns.put('a', { step: 2 }, { ifVersion: v1 })
    expect(v2).toBeGreaterThan(v1)
    expect(ns.get('a')).toMatchObject({ key: 'a', value: { step: 2 }, version: v2, expiresAt: undefined })
    expect(ns.get('a')!.stamp.writer).toBe('local')

    const stale = await errorOf(() => ns.put('a', { step: 3 }, { ifVersion: v1 }))
    expect(stale).toMatchObject({ code: 'VERSION_CONFLICT', details: { key: 'a', namespace: 'jobs', expected: v1, current: v2 } })
    expect((await errorOf(() => ns.create('a', { step: 0 })))?.details).toMatchObject({ expected: 0, current: v2 })
    expect(ns.get('a')!.value).toEqual({ step: 2 })
    expect(store.revision).toBe(v2)

    expect((await errorOf(() => ns.delete('a', { ifVersion: v1 })))?.code).toBe('VERSION_CONFLICT')
    const gone = ns.delete('a', { ifVersion: v2 })
    expect(gone).toBeGreaterThan(v2)
    expect(ns.get('a')).toBeUndefined()
    expect(ns.delete('a')).toBe(0)
    expect(ns.create('a', { step: 9 })).toBeGreaterThan(gone)
    expect(ns.update('a', (cur) => ({ step: (cur as { step: number }).step + 1 }))).toBe(store.revision)
    expect(ns.get('a')!.value).toEqual({ step: 10 })
    expect(ns.put('b', 1, { writer: 'agent-7' })).toBe(store.revision)
    expect(ns.get('b')!.stamp.writer).toBe('agent-7')
  })

  it('keeps the last N versions of each key, readable by version', async () => {
    const { store } = await open({ history: 1 })
    const ns = store.namespace('cfg', { history: 2 })
    const versions = [1, 2, 3, 4].map((i) => ns.put('k', i))
    expect(ns.getVersion('k', versions[1]!)?.value).toBe(2)
    expect(ns.getVersion('k', versions[0]!)).toBeUndefined()
    ns.delete('k')
    expect(ns.history('k').map((c) => c.type)).toEqual(['put', 'put', 'delete'])
    expect(ns.history('k').map((c) => (c.type === 'put' ? c.value : null))).toEqual([3, 4, null])
    const none = store.namespace('none', { history: 0 })
    none.put('k', 1)
    none.put('k', 2)
    expect(none.history('k').map(brief)).toEqual([`put k@${store.revision}=2`])
    expect(store.namespace('default').put('x', 1) && store.namespace('default').put('x', 2)).toBeGreaterThan(0)
    expect(store.namespace('default').history('x')).toHaveLength(2)
  })

  it('expires keys on the host clock and tells watchers', async () => {
    const { store, advance } = await open()
    const ns = store.namespace('sessions')
    const seen = collect(ns.watch('s1'))
    ns.put('s1', 'token', { ttl: 100 })
    expect(ns.get('s1')?.expiresAt).toBe(1_100)
    advance(99)
    expect(ns.get('s1')?.value).toBe('token')
    advance(1)
    expect(ns.get('s1')).toBeUndefined()
    await settle()
    expect(seen.map((c) => c.type)).toEqual(['put', 'expire'])
    ns.put('s2', 'x', { ttl: 10 })
    ns.put('s2', 'kept')
    advance(50)
    expect(ns.get('s2')?.value).toBe('kept')
  })

  it('applies transactions over several namespaces all or nothing', async () => {
    const { store } = await open()
    const a = store.namespace('a')
    const b = store.namespace('b')
    const v = store.transaction().put(a, 'x', 1).create(b, 'y', 1).commit()
    expect(a.get('x')!.version).toBe(v)
    expect(b.get('y')!.version).toBe(v)
    const err = await errorOf(() =>
      store
        .transaction()
        .put(a, 'x', 2)
        .put(b, 'y', 2, { ifVersion: v + 10 })
        .put(a, 'z', 2)
        .commit(),
    )
    expect(err).toMatchObject({ code: 'VERSION_CONFLICT', details: { index: 1, namespace: 'b', key: 'y', expected: v + 10, current: v } })
    expect(a.get('x')!.value).toBe(1)
    expect(a.get('z')).toBeUndefined()
    const guarded = store.transaction({ writer: 'planner' }).check(b, 'y', v).delete(a, 'x').put(a, 'z', 3).commit()
    expect(a.get('x')).toBeUndefined()
    expect(a.get('z')).toMatchObject({ value: 3, version: guarded })
    expect(a.get('z')!.stamp.writer).toBe('planner')
    expect((await errorOf(() => store.transaction().put(a, 'k', 1).put(a, 'k', 2).commit()))?.code).toBe('MALFORMED_WRITE')
    expect(store.transaction().check(a, 'nothing', 0).commit()).toBe(0)
  })

  it('watches a key or a prefix from now, from a version, or from the current values', async () => {
    const { store } = await open({ history: 4 })
    const ns = store.namespace('jobs')
    const v1 = ns.put('job/1', 'queued')
    const key = collect(ns.watch('job/1'))
    const prefix = collect(ns.watchPrefix('job/'))
    ns.put('job/1', 'running')
    ns.put('job/2', 'queued')
    ns.put('other', 'x')
    ns.delete('job/1')
    await settle()
    expect(key.map(brief)).toEqual(['put job/1@2="running"', 'delete job/1@5'])
    expect(prefix.map(brief)).toEqual(['put job/1@2="running"', 'put job/2@3="queued"', 'delete job/1@5'])

    const replay = await firstValueFrom(ns.watchPrefix('job/', { from: v1 }).pipe(take(3), toArray()))
    expect(replay.map(brief)).toEqual(prefix.map(brief))
    const current = await firstValueFrom(ns.watchPrefix('', { from: 'current' }).pipe(take(2), toArray()))
    expect(current.map(brief)).toEqual(['put job/2@3="queued"', 'put other@4="x"'])
    expect(current[0]!.stamp).toMatchObject({ writer: 'local', logical: expect.any(Number) })
  })

  it('shares one core watch among live watchers of a key, each from when it joined', async () => {
    const { store } = await open()
    const ns = store.namespace('cfg')
    const first: Change<unknown>[] = []
    const a = ns.watch('mode').subscribe((c) => first.push(c))
    ns.put('mode', 'fast')
    const second = collect(ns.watch('mode'))
    ns.put('mode', 'safe')
    await settle()
    expect(first.map(brief)).toEqual(['put mode@1="fast"', 'put mode@2="safe"'])
    expect(second.map(brief)).toEqual(['put mode@2="safe"'])
    expect(second[0]).toBe(first[1])
    a.unsubscribe()
    ns.put('mode', 'off')
    await settle()
    expect(first).toHaveLength(2)
    expect(second.map(brief)).toEqual(['put mode@2="safe"', 'put mode@3="off"'])
  })

  it('catches a watcher up from history when it falls behind its buffer', async () => {
    const { store } = await open({ history: 100 })
    const ns = store.namespace('n')
    const seen = collect(ns.watchPrefix('', { buffer: 4 }))
    for (let i = 0; i < 50; i++) ns.put(`k${i % 3}`, i)
    await settle()
    expect(seen.map((c) => (c.type === 'put' ? c.value : -1))).toEqual(Array.from({ length: 50 }, (_, i) => i))
  })

  it('tells a watcher it lagged when history no longer holds what it missed', async () => {
    const { store } = await open({ history: 0 })
    const ns = store.namespace('n')
    let error: { code?: string; details?: Record<string, unknown> } | undefined
    const seen: unknown[] = []
    ns.watchPrefix('', { buffer: 2 }).subscribe({
      next: (c) => seen.push(c.version),
      error: (e) => {
        error = e
      },
    })
    for (let i = 0; i < 10; i++) ns.put('k', i)
    await settle()
    expect(error?.code).toBe('WATCH_LAGGED')
    expect(seen).toEqual([1, 2])
    expect(error?.details).toEqual({ after: 2 })
    const late = await errorOf(() => firstValueFrom(ns.watch('k', { from: 3 })))
    expect(late?.code).toBe('WATCH_LAGGED')
  })

  it('iterates a watch with backpressure, resuming from history after a pause', async () => {
    const { store } = await open({ history: 1000 })
    const ns = store.namespace('n')
    const iterator = ns.watch('k')[Symbol.asyncIterator]()
    for (let i = 0; i < 600; i++) ns.put('k', i)
    const got: unknown[] = []
    for (let i = 0; i < 600; i++) {
      const next = await iterator.next()
      got.push((next.value as { value: unknown }).value)
      if (i === 300) for (let j = 600; j < 700; j++) ns.put('k', j)
    }
    expect(got).toEqual(Array.from({ length: 600 }, (_, i) => i))
    expect(((await iterator.next()).value as { value: unknown }).value).toBe(600)
    await iterator.return!()
  })

  it('exports a consistent snapshot and imports it, ending open watches', async () => {
    const { store } = await open({ history: 2 })
    const ns = store.namespace('kv')
    ns.put('a', 1)
    ns.put('a', 2, { writer: 'agent-1' })
    ns.put('b', 'x', { ttl: 500 })
    const snapshot = store.export()
    const copy = (await open({ snapshot })).store
    const cns = copy.namespace('kv')
    expect(cns.entries().map((e) => [e.key, e.value, e.version, e.stamp.writer])).toEqual(ns.entries().map((e) => [e.key, e.value, e.version, e.stamp.writer]))
    expect(cns.history('a')).toHaveLength(2)
    expect(cns.get('b')?.expiresAt).toBe(1_500)
    expect(copy.revision).toBe(store.revision)

    const watched = ns.watch('a')
    let ended: { code?: string } | undefined
    watched.subscribe({
      error: (e) => {
        ended = e
      },
    })
    ns.put('a', 3)
    store.import(snapshot)
    await settle()
    expect(ended?.code).toBe('WATCH_LAGGED')
    expect(ns.get('a')?.value).toBe(2)
    expect(store.revision).toBeGreaterThanOrEqual(4)
    expect(ns.put('a', 4)).toBeGreaterThan(4)
    expect((await errorOf(() => store.import(snapshot.subarray(0, 10))))?.code).toBe('INVALID_SNAPSHOT')
    expect(ns.get('a')?.value).toBe(4)
  })

  it('merges replica changes: last writer wins by stamp, or a merge function decides', async () => {
    const { store } = await open()
    const ns = store.namespace<number[]>('sets')
    ns.put('s', [1])
    const local = ns.get('s')!.stamp
    expect(store.merge(ns, { key: 's', type: 'put', value: [9], stamp: { wall: local.wall - 10, logical: 0, writer: 'b' } })).toBe(0)
    expect(ns.get('s')!.value).toEqual([1])
    const won = store.merge(ns, { key: 's', type: 'put', value: [2], stamp: { wall: local.wall + 5_000, logical: 3, writer: 'b' } })
    expect(won).toBeGreaterThan(0)
    expect(ns.get('s')).toMatchObject({ value: [2], stamp: { wall: local.wall + 5_000, logical: 3, writer: 'b' } })
    const unioned = store.merge(ns, { key: 's', type: 'put', value: [3], stamp: { wall: 1, logical: 0, writer: 'c' } }, (mine, theirs) =>
      [...new Set([...(mine ?? []), ...(theirs ?? [])])].sort(),
    )
    expect(unioned).toBeGreaterThan(won)
    expect(ns.get('s')!.value).toEqual([2, 3])
    expect(ns.get('s')!.stamp.wall).toBeGreaterThanOrEqual(local.wall + 5_000)
    expect(store.merge(ns, { key: 's', type: 'delete', stamp: { wall: local.wall + 9_000, logical: 0, writer: 'b' } })).toBeGreaterThan(unioned)
    expect(ns.get('s')).toBeUndefined()
    expect((await errorOf(() => store.merge(ns, { key: 's', type: 'nope' as never, stamp: { wall: 1, logical: 0, writer: 'b' } })))?.code).toBe(
      'INVALID_ARGUMENT',
    )
  })

  it("a merged put with expiresAt expires at its writer's deadline, with the put's stamp; one already over merges as a deletion", async () => {
    const { store, advance } = await open()
    const ns = store.namespace<string>('ttl')
    const seen = collect(ns.watchPrefix(''))
    const stamp = { wall: 990, logical: 2, writer: 'b' }
    expect(store.merge(ns, { key: 'k', type: 'put', value: 'v', stamp, expiresAt: 1_500 })).toBeGreaterThan(0)
    expect(ns.get('k')).toMatchObject({ value: 'v', expiresAt: 1_500 })
    // A local put with a TTL: its watched change says when it expires, as the entry does.
    ns.put('local', 'l', { ttl: 200 })
    advance(499)
    expect(ns.get('k')?.value).toBe('v')
    advance(1)
    expect(ns.get('k')).toBeUndefined()
    await settle()
    expect(seen.map((c) => [c.type, c.key, c.type === 'put' ? c.expiresAt : undefined, c.stamp])).toEqual([
      ['put', 'k', 1_500, stamp],
      ['put', 'local', 1_200, ns.history('local')[0]!.stamp],
      ['expire', 'local', undefined, ns.history('local')[0]!.stamp],
      ['expire', 'k', undefined, stamp],
    ])
    // The same put again stays expired; a write stamped after it wins over the expiry.
    expect(store.merge(ns, { key: 'k', type: 'put', value: 'v', stamp, expiresAt: 1_500 })).toBe(0)
    expect(store.merge(ns, { key: 'k', type: 'put', value: 'w', stamp: { ...stamp, logical: 3 } })).toBeGreaterThan(0)
    expect(ns.get('k')).toMatchObject({ value: 'w', expiresAt: undefined })
    // Over before it arrives: a deletion with its stamp, which an older write cannot undo.
    const late = { wall: 1_400, logical: 0, writer: 'c' }
    expect(store.merge(ns, { key: 'k', type: 'put', value: 'x', stamp: late, expiresAt: 1_450 })).toBeGreaterThan(0)
    expect(ns.get('k')).toBeUndefined()
    expect(ns.history('k').at(-1)).toMatchObject({ type: 'delete', stamp: late })
    expect(store.merge(ns, { key: 'k', type: 'put', value: 'y', stamp: { ...late, wall: 1_300 } })).toBe(0)
    // With a merge function, the result lasts as long as the longest-lived value it was made of.
    const join = (mine: string | undefined, theirs: string | undefined) => `${mine ?? ''}+${theirs ?? ''}`
    store.merge(ns, { key: 'm', type: 'put', value: 'r', stamp: late, expiresAt: 1_900 }, join)
    expect(ns.get('m')).toMatchObject({ value: '+r', expiresAt: 1_900 })
    store.merge(ns, { key: 'm', type: 'put', value: 's', stamp: late, expiresAt: 1_700 }, join)
    expect(ns.get('m')).toMatchObject({ value: '+r+s', expiresAt: 1_900 })
    store.merge(ns, { key: 'm', type: 'put', value: 't', stamp: late }, join)
    expect(ns.get('m')).toMatchObject({ value: '+r+s+t', expiresAt: undefined })
    ns.put('n', 'l', { ttl: 300 })
    store.merge(ns, { key: 'n', type: 'delete', stamp: late }, join)
    expect(ns.get('n')).toMatchObject({ value: 'l+', expiresAt: 1_800 })
    // A bad expiresAt is refused before anything is merged.
    for (const expiresAt of [Number.NaN, -1, Infinity, '1900']) {
      const before = store.revision
      const error = await errorOf(() => store.merge(ns, { key: 'n', type: 'put', value: 'z', stamp: late, expiresAt: expiresAt as number }))
      expect(error).toMatchObject({ code: 'INVALID_ARGUMENT', details: { argument: 'change.expiresAt' } })
      expect(store.revision).toBe(before)
    }
  })

  it('validates values with a schema and encodes with msgpack or raw', async () => {
    const { store } = await open()
    const agents = store.namespace('agents', { schema: z.object({ name: z.string(), load: z.number().min(0) }) })
    agents.put('a1', { name: 'summarizer', load: 1 })
    const err = await errorOf(() => agents.put('a1', { name: 'x', load: -1 }))
    expect(err).toMatchObject({ code: 'SCHEMA_INVALID', details: { field: 'load' } })
    expect(agents.get('a1')!.value).toEqual({ name: 'summarizer', load: 1 })
    const packed = store.namespace('packed', { codec: 'msgpack' })
    packed.put('m', { when: new Date(5), n: 1n << 40n })
    expect(packed.get('m')!.value).toEqual({ when: new Date(5), n: 1n << 40n })
    const raw = store.namespace('raw', { codec: 'raw' })
    raw.put('r', new Uint8Array([1, 2, 3]))
    expect(raw.get('r')!.value).toEqual(new Uint8Array([1, 2, 3]))
    expect((await errorOf(() => raw.put('r', 'text' as never)))?.code).toBe('INVALID_PAYLOAD')
  })

  it('takes a callable Standard Schema and refuses one without ~standard.validate', async () => {
    const { store } = await open()
    // Some schema libraries' types are functions carrying `~standard`.
    const positive = Object.assign((value: unknown) => value, {
      '~standard': {
        version: 1 as const,
        vendor: 'test',
        validate: (value: unknown) => (typeof value === 'number' && value > 0 ? { value } : { issues: [{ message: 'must be positive' }] }),
      },
    })
    const ns = store.namespace('callable', { schema: positive })
    expect(ns.put('a', 2)).toBeGreaterThan(0)
    expect((await errorOf(() => ns.put('a', -1)))?.code).toBe('SCHEMA_INVALID')
    expect(ns.get('a')!.value).toBe(2)
    for (const schema of [{ '~standard': {} }, { '~standard': { validate: 1 } }, () => {}]) {
      expect(await errorOf(() => store.namespace('broken', { schema: schema as never }))).toMatchObject({
        code: 'INVALID_OPTION',
        details: { option: 'schema' },
      })
    }
  })

  it('reports a watcher that throws on store.events and goes on delivering', async () => {
    const { store } = await open()
    const ns = store.namespace<number>('w')
    const events: string[] = []
    store.events.subscribe((e) => events.push(`${e.type}:${e.type === 'watcher-error' ? `${e.namespace}:${(e.error as Error).message}` : ''}`))
    const seen: number[] = []
    ns.watch('k').subscribe((c) => {
      seen.push(c.version)
      if (seen.length === 1) throw new Error('boom')
    })
    ns.put('k', 1)
    await settle()
    ns.put('k', 2)
    await settle()
    expect(seen).toHaveLength(2)
    expect(events).toEqual(['watcher-error:w:boom'])
    store.close()
  })

  it('lists keys by prefix across many pages, and handles large values and unicode keys', async () => {
    const { store } = await open({ maxValueBytes: 4 * 1024 * 1024 })
    const ns = store.namespace('many')
    for (let i = 0; i < 3_000; i++) ns.put(`item/${String(i).padStart(5, '0')}`, i)
    ns.put('other', 0)
    const keys = ns.keys('item/')
    expect(keys).toHaveLength(3_000)
    expect(keys[2_999]).toBe('item/02999')
    expect(ns.entries('item/0299').map((e) => e.value)).toEqual([2990, 2991, 2992, 2993, 2994, 2995, 2996, 2997, 2998, 2999])
    const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251)
    const raw = store.namespace('big', { codec: 'raw' })
    raw.put('blob', big)
    expect(sameBytes(raw.get('blob')!.value as Uint8Array, big)).toBe(true)
    const seen = collect(raw.watch('blob'))
    raw.put('blob', big.subarray(1))
    await settle()
    expect((seen[0] as { value: Uint8Array }).value.length).toBe(big.length - 1)
    ns.put('ключ/😀', 'ü')
    expect(ns.get('ключ/😀')!.value).toBe('ü')
    expect(ns.keys('ключ')).toEqual(['ключ/😀'])
  })

  it('refuses bad input with typed errors and changes nothing', async () => {
    const { store } = await open({ maxValueBytes: 16 })
    const ns = store.namespace('n')
    const codes = {
      name: await errorOf(() => store.namespace('has space')),
      emptyKey: await errorOf(() => ns.put('', 1)),
      longKey: await errorOf(() => ns.put('k'.repeat(1025), 1)),
      notAString: await errorOf(() => ns.get(7 as never)),
      tooLarge: await errorOf(() => ns.put('k', 'x'.repeat(20))),
      badTtl: await errorOf(() => ns.put('k', 1, { ttl: -5 })),
      badVersion: await errorOf(() => ns.getVersion('k', 1.5)),
      badFrom: await errorOf(() => ns.watch('k', { from: 'later' as never })),
      badBuffer: await errorOf(() => ns.watch('k', { buffer: 0 })),
      badHistory: await errorOf(() => store.namespace('h', { history: -1 })),
      badWriter: await errorOf(() => ns.put('k', 1, { writer: 'no spaces allowed' })),
      badOptions: await errorOf(() => Orrery.openStore({ engine: ENGINE, maxValueBytes: 0 })),
      badDurability: await errorOf(() => Orrery.openStore({ engine: ENGINE, durability: 'sometimes' as never })),
      hugeKey: await errorOf(() => ns.put('k'.repeat(65_539), 1)),
      badIfVersion: await errorOf(() => ns.put('k', 1, { ifVersion: -1 })),
      fractionalIfVersion: await errorOf(() => store.transaction().put(ns, 'k', 1, { ifVersion: 1.5 })),
      farFrom: await errorOf(() => ns.watch('k', { from: 2 ** 60 })),
      badTombstones: await errorOf(() => Orrery.openStore({ engine: ENGINE, tombstoneMs: -1 })),
    }
    expect(Object.fromEntries(Object.entries(codes).map(([k, v]) => [k, v?.code]))).toEqual({
      name: 'INVALID_NAME',
      emptyKey: 'INVALID_KEY',
      longKey: 'INVALID_KEY',
      notAString: 'INVALID_ARGUMENT',
      tooLarge: 'VALUE_TOO_LARGE',
      badTtl: 'INVALID_OPTION',
      badVersion: 'INVALID_ARGUMENT',
      badFrom: 'INVALID_OPTION',
      badBuffer: 'INVALID_OPTION',
      badHistory: 'INVALID_OPTION',
      badWriter: 'INVALID_NAME',
      badOptions: 'INVALID_OPTION',
      badDurability: 'INVALID_OPTION',
      hugeKey: 'INVALID_KEY',
      badIfVersion: 'INVALID_ARGUMENT',
      fractionalIfVersion: 'INVALID_ARGUMENT',
      farFrom: 'INVALID_OPTION',
      badTombstones: 'INVALID_OPTION',
    })
    expect(store.revision).toBe(0)
    expect(ns.keys()).toEqual([])
    store.close()
    expect((await errorOf(() => ns.put('k', 1)))?.code).toBe('CLOSED')
    expect((await errorOf(() => ns.get('k')))?.code).toBe('CLOSED')
  })

  it('keeps every shared watcher whole when others leave or fail mid-delivery', async () => {
    const { store } = await open({ history: 0 })
    const ns = store.namespace('n')
    const first = firstValueFrom(ns.watch('k'))
    const rest = collect(ns.watch('k'))
    ns.put('k', 1)
    await settle()
    expect((await first).version).toBe(1)
    expect(rest.map((c) => c.version)).toEqual([1])

    const ended: string[] = []
    for (const name of ['a', 'b', 'c']) ns.watch('lagging', { buffer: 1 }).subscribe({ error: (e: { code: string }) => ended.push(`${name}:${e.code}`) })
    for (let i = 0; i < 5; i++) ns.put('lagging', i)
    await settle()
    expect(ended.sort()).toEqual(['a:WATCH_LAGGED', 'b:WATCH_LAGGED', 'c:WATCH_LAGGED'])
  })

  it('pauses an iterating watcher without losing what it was already handed', async () => {
    const { store } = await open({ history: 0 })
    const ns = store.namespace('n')
    const iterator = ns.watchPrefix('')[Symbol.asyncIterator]()
    const txn = store.transaction()
    for (let i = 0; i < 300; i++) txn.put(ns, `k${String(i).padStart(3, '0')}`, i)
    txn.commit()
    for (let i = 0; i < 300; i++) ns.put('solo', i)
    const got: unknown[] = []
    for (let i = 0; i < 600; i++) got.push(((await iterator.next()).value as { value: unknown }).value)
    expect(got).toEqual([...Array.from({ length: 300 }, (_, i) => i), ...Array.from({ length: 300 }, (_, i) => i)])
    await iterator.return!()
  })

  it('lets a watch handler close the store', async () => {
    const { store } = await open()
    const ns = store.namespace('n')
    let seen = 0
    ns.watch('k').subscribe(() => {
      seen++
      store.close()
    })
    ns.put('k', 1)
    ns.put('k', 2)
    await settle()
    expect(seen).toBe(1)
    expect((await errorOf(() => store.revision))?.code).toBe('CLOSED')
  })

  it('forgets a deleted key once its tombstone has run out, and merges respect it until then', async () => {
    const { store, advance } = await open({ history: 0, tombstoneMs: 1_000 })
    const ns = store.namespace('n')
    ns.put('k', 'local')
    const stamp = ns.get('k')!.stamp
    const deleted = ns.delete('k')
    expect(ns.history('k').map((c) => c.type)).toEqual(['delete'])
    const older = { key: 'k', type: 'put' as const, value: 'old', stamp: { wall: stamp.wall + 1, logical: 0, writer: 'b' } }
    // The deletion was stamped after the older remote put, whose stamp is now behind it.
    expect(ns.get('k')).toBeUndefined()
    expect(store.merge(ns, { ...older, stamp: { ...older.stamp, wall: stamp.wall - 1 } })).toBe(0)
    expect(ns.get('k')).toBeUndefined()
    advance(1_000)
    expect(ns.history('k')).toEqual([])
    expect(deleted).toBeGreaterThan(0)
  })

  it('shifts an import into a written store past its versions', async () => {
    const { store } = await open()
    const ns = store.namespace('n')
    const other = (await open()).store
    other.namespace('n').put('a', 'theirs')
    const snapshot = other.export()
    const mine = ns.put('a', 'mine')
    ns.put('gone', 1)
    store.import(snapshot)
    expect(ns.get('a')).toMatchObject({ value: 'theirs' })
    expect(ns.get('a')!.version).toBeGreaterThan(2)
    expect((await errorOf(() => ns.put('a', 'cas', { ifVersion: mine })))?.code).toBe('VERSION_CONFLICT')
    expect((await errorOf(() => firstValueFrom(ns.watchPrefix('', { from: 2 }))))?.code).toBe('WATCH_LAGGED')
  })

  it('delivers a value past its limit that came in with a snapshot', async () => {
    const big = (await open({ maxValueBytes: 300_000 })).store
    big.namespace('n').put('big', 'x'.repeat(200_000))
    const { store } = await open({ maxValueBytes: 1_000 })
    let ended: { code?: string } | undefined
    store
      .namespace('n')
      .watchPrefix('', { from: 'current' })
      .subscribe({
        error: (e) => {
          ended = e
        },
      })
    store.import(big.export())
    await settle()
    expect(ended?.code).toBe('WATCH_LAGGED')
    // The import ended that watch; a fresh one from the current values gets the big value.
    const again = await firstValueFrom(store.namespace('n').watch('big', { from: 'current' }))
    expect(again.type === 'put' && (again.value as string).length).toBe(200_000)
  })

  it.runIf(ENGINE === 'native')('STORE_IO for a missing directory names the file and the directory to create', async () => {
    const err = await errorOf(() => Orrery.openStore({ path: '/no/such/dir/state.redb' }))
    expect(err).toMatchObject({ name: 'OrreryError', code: 'STORE_IO' })
    expect(err?.message).toContain('"/no/such/dir/state.redb"')
    expect(err?.message).toContain('/no/such/dir does not exist; create it first')
  })

  it.runIf(ENGINE === 'wasm')('keeps the store in memory on the wasm engine', async () => {
    expect((await errorOf(() => Orrery.openStore({ engine: 'wasm', path: '/tmp/never' })))?.code).toBe('UNSUPPORTED')
  })
})
