/**
 * The state store refuses bad input with a typed error, writes nothing, and leaves the engine
 * usable (issue 11: items 2, 5, 6, 7, 10, 11, 12 and 13, store part), on both engines.
 */
import { afterAll, describe, expect, it } from 'vitest'

import { Orrery, type Namespace, type Store } from '../ts/node.js'
import { expectEngineUsable, expectPrototypeUntouched, expectRefused, HOSTILE, NOT_A_COUNT } from './bad-input.js'
import { ENGINE } from './engine.js'

const NOW = 1_000_000

async function open(options: Record<string, unknown> = {}): Promise<Store<false>> {
  return Orrery.openStore({ engine: ENGINE, clock: () => NOW, ...options })
}

/** Nothing was written: no revision, no key in any of `spaces`. */
function expectUntouched(store: Store<false>, ...spaces: Namespace<unknown, false>[]): void {
  expect(store.revision).toBe(0)
  for (const ns of spaces) expect(ns.keys()).toEqual([])
}

const stamp = (over: Record<string, unknown> = {}) => ({ wall: NOW, logical: 0, writer: 'b', ...over })

describe(`refused store input (${ENGINE})`, () => {
  afterAll(async () => {
    await expectEngineUsable()
  })

  it('item 6: a transaction or merge refuses a namespace of another store and writes nothing', async () => {
    const a = await open()
    const b = await open()
    // Same name, same order: both stores give `gamma` the same id.
    const mine = a.namespace('gamma')
    const theirs = b.namespace('gamma')
    await expectRefused(() => a.transaction().put(theirs, 'x', 1).commit(), 'INVALID_ARGUMENT')
    await expectRefused(() => a.transaction().create(theirs, 'x', 1).commit(), 'INVALID_ARGUMENT')
    await expectRefused(() => a.transaction().delete(theirs, 'x').commit(), 'INVALID_ARGUMENT')
    await expectRefused(() => a.transaction().check(theirs, 'x', 0).commit(), 'INVALID_ARGUMENT')
    await expectRefused(() => a.merge(theirs, { key: 'x', type: 'put', value: 1, stamp: stamp() }), 'INVALID_ARGUMENT')
    await expectRefused(() => a.transaction().put({ id: 0, name: 'gamma' } as never, 'x', 1), 'INVALID_ARGUMENT')
    expectUntouched(a, mine)
    expectUntouched(b, theirs)
    // Its own namespace still works.
    expect(a.transaction().put(mine, 'x', 1).commit()).toBe(1)
    expect(theirs.get('x')).toBeUndefined()
    a.close()
    b.close()
  })

  it('item 5: merge refuses stamps that are not valid or too far ahead, and merges nothing', async () => {
    const store = await open()
    const ns = store.namespace('hlc')
    const bad: Record<string, unknown>[] = [
      { wall: 2 ** 64 },
      { wall: 1e300 },
      { wall: -1 },
      { wall: 1.5 },
      { wall: NaN },
      { wall: Infinity },
      { wall: '5' },
      { wall: null },
      { logical: -1 },
      { logical: 1.5 },
      { logical: 2 ** 32 },
      { logical: NaN },
      { logical: '0' },
      { writer: '' },
      { writer: 5 },
      { writer: 'a\uD800' },
      { writer: null },
      // More than the default drift (60 s) ahead of the local clock.
      { wall: NOW + 60_001 },
    ]
    for (const over of bad) {
      await expectRefused(() => store.merge(ns, { key: 'k', type: 'put', value: 1, stamp: stamp(over) as never }), 'INVALID_ARGUMENT')
    }
    expectUntouched(store, ns)
    // Within the drift it merges, and the local clock follows it by no more than the drift.
    expect(store.merge(ns, { key: 'k', type: 'put', value: 1, stamp: stamp({ wall: NOW + 60_000 }) })).toBe(1)
    ns.put('local', 2)
    expect(ns.get('local')!.stamp.wall).toBe(NOW + 60_000)
    store.close()
  })

  it('item 5: a host clock gone wild cannot push stamps past what a number holds exactly', async () => {
    const store = await Orrery.openStore({ engine: ENGINE, clock: () => 1e300 })
    const ns = store.namespace('hlc')
    ns.put('k', 1)
    expect(ns.get('k')!.stamp.wall).toBe(Number.MAX_SAFE_INTEGER)
    store.close()
  })

  it('item 5: maxClockDriftMs is an option, checked like the rest', async () => {
    const strict = await open({ maxClockDriftMs: 0 })
    const ns = strict.namespace('hlc')
    await expectRefused(() => strict.merge(ns, { key: 'k', type: 'put', value: 1, stamp: stamp({ wall: NOW + 1 }) }), 'INVALID_ARGUMENT')
    expect(strict.merge(ns, { key: 'k', type: 'put', value: 1, stamp: stamp() })).toBe(1)
    strict.close()
    for (const value of [-1, NaN, -Infinity, '10', null]) await expectRefused(() => open({ maxClockDriftMs: value }), 'INVALID_OPTION')
    // Infinity turns the check off: a stamp from any future is merged.
    const lax = await open({ maxClockDriftMs: Infinity })
    expect(lax.merge(lax.namespace('hlc'), { key: 'k', type: 'put', value: 1, stamp: stamp({ wall: NOW + 10 ** 12 }) })).toBe(1)
    lax.close()
  })

  it('item 11: keys, names and writers with lone surrogates are refused, never merged into one', async () => {
    const store = await open()
    const ns = store.namespace('s')
    await expectRefused(() => ns.put('a\uD800', 1), 'INVALID_KEY')
    await expectRefused(() => ns.put('a\uDFFF', 2), 'INVALID_KEY')
    await expectRefused(() => ns.get('a\uDFFF'), 'INVALID_KEY')
    await expectRefused(() => ns.keys('\uD800'), 'INVALID_KEY')
    await expectRefused(() => store.transaction().put(ns, 'x\uDC00', 1).commit(), 'INVALID_KEY')
    await expectRefused(() => store.namespace('n\uD800'), 'INVALID_ARGUMENT')
    await expectRefused(() => ns.put('k', 1, { writer: 'w\uD800' }), 'INVALID_OPTION')
    await expectRefused(() => store.transaction({ writer: 'w\uDFFF' }), 'INVALID_OPTION')
    await expectRefused(() => open({ replica: 'r\uD800' }), 'INVALID_OPTION')
    expectUntouched(store, ns)
    // A well-formed pair is an ordinary key.
    ns.put('a\uD83D\uDE00', 1)
    expect(ns.keys()).toEqual(['a\uD83D\uDE00'])
    store.close()
  })

  it('item 10: export() is a plain Uint8Array on both engines', async () => {
    const store = await open()
    store.namespace('n').put('k', 1)
    const bytes = store.export()
    expect(Object.getPrototypeOf(bytes)).toBe(Uint8Array.prototype)
    // `slice` copies (a Buffer's would be a view).
    const copy = bytes.slice()
    copy[0] = copy[0]! ^ 0xff
    expect(bytes[0]).not.toBe(copy[0])
    store.close()
  })

  it('item 2: every openStore option is checked before the engine is called', async () => {
    const table: [string, unknown][] = []
    for (const [, value] of HOSTILE) {
      // Strings the facade passes on are names and paths the core and the disk judge.
      const passed = typeof value === 'string' && value !== '' && !value.includes('\uD800')
      if (!passed) table.push(['replica', value], ['path', value])
      if (value !== 'batched' && value !== 'every') table.push(['durability', value])
      if (!(typeof value === 'number' && Number.isFinite(value) && value >= 0)) table.push(['tombstoneMs', value])
      table.push(['snapshot', value])
    }
    for (const [, value] of NOT_A_COUNT) table.push(['history', value], ['maxValueBytes', value])
    table.push(['maxValueBytes', 0], ['maxValueBytes', 256 * 1024 * 1024 + 1], ['history', 2 ** 32])
    for (const [option, value] of table) {
      await expectRefused(() => open({ [option]: value }), 'INVALID_OPTION')
      const orrery = await Orrery.create({ engine: ENGINE })
      await expectRefused(() => orrery.openStore({ [option]: value } as never), 'INVALID_OPTION')
      orrery.close()
    }
    for (const options of [null, 5, 'x', [1]]) await expectRefused(() => Orrery.openStore(options as never), 'INVALID_ARGUMENT')
    await expectRefused(() => Orrery.openStore({ engine: ENGINE, clock: 5 as never }), 'INVALID_OPTION')
    // The engine was never poisoned.
    const store = await open({ replica: 'after' })
    store.namespace('n').put('k', 1)
    expect(store.namespace('n').get('k')!.stamp.writer).toBe('after')
    store.close()
    expectPrototypeUntouched()
  })

  it('items 12 and 13: null options and silent accepts are typed errors, nothing written', async () => {
    const store = await open()
    const ns = store.namespace<unknown>('n')
    await expectRefused(() => store.namespace('m', null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => store.namespace(5 as never), 'INVALID_ARGUMENT')
    await expectRefused(() => ns.put('k', 1, null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => ns.create('k', 1, null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => ns.delete('k', null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => ns.update('k', () => 1, null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => ns.watch('k', null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => ns.watchPrefix('k', null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => store.transaction(null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => store.merge(ns, null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => store.merge(ns, { key: 'k', type: 'put', value: 1 } as never), 'INVALID_ARGUMENT')
    await expectRefused(() => store.merge(ns, { key: 5, type: 'put', value: 1, stamp: stamp() } as never), 'INVALID_ARGUMENT')
    await expectRefused(() => store.merge(ns, { key: 'k', type: '__proto__', stamp: stamp() } as never), 'INVALID_ARGUMENT')
    await expectRefused(() => store.merge(ns, { key: 'k', type: 'put', value: 1, stamp: stamp() }, 5 as never), 'INVALID_ARGUMENT')
    for (const version of [1e300, 0, -1, 1.5, NaN, '1', null]) await expectRefused(() => ns.getVersion('k', version as never), 'INVALID_ARGUMENT')
    for (const ttl of ['100', true, NaN, Infinity, -1, null, {}]) {
      await expectRefused(() => ns.put('k', 1, { ttl: ttl as never }), 'INVALID_OPTION')
      await expectRefused(() => store.transaction().put(ns, 'k', 1, { ttl: ttl as never }), 'INVALID_OPTION')
    }
    for (const ifVersion of ['1', true, NaN, -1, 1.5, 2 ** 53, null]) {
      await expectRefused(() => ns.put('k', 1, { ifVersion: ifVersion as never }), 'INVALID_ARGUMENT')
      await expectRefused(() => ns.delete('k', { ifVersion: ifVersion as never }), 'INVALID_ARGUMENT')
      await expectRefused(() => store.transaction().put(ns, 'k', 1, { ifVersion: ifVersion as never }), 'INVALID_ARGUMENT')
      await expectRefused(() => store.transaction().check(ns, 'k', ifVersion as never), 'INVALID_ARGUMENT')
    }
    for (const writer of [5, null, true, {}]) await expectRefused(() => ns.put('k', 1, { writer: writer as never }), 'INVALID_OPTION')
    for (const history of ['1', 1.5, -1, null, true]) await expectRefused(() => store.namespace('h', { history: history as never }), 'INVALID_OPTION')
    for (const codec of ['__proto__', 'toString', 5, null]) await expectRefused(() => store.namespace('c', { codec: codec as never }), 'INVALID_OPTION')
    for (const from of ['later', '__proto__', -1, 1.5, 2 ** 60, null]) await expectRefused(() => ns.watch('k', { from: from as never }), 'INVALID_OPTION')
    for (const buffer of ['8', 0, 1.5, 2 ** 28 + 1, null]) await expectRefused(() => ns.watch('k', { buffer: buffer as never }), 'INVALID_OPTION')
    await expectRefused(() => store.import('snapshot' as never), 'INVALID_ARGUMENT')
    expectUntouched(store, ns)
    // None of the refused namespaces or writers was created either.
    const fresh = await open()
    fresh.namespace('n')
    expect(store.export()).toEqual(fresh.export())
    fresh.close()
    store.close()
  })

  it('item 7: every bit flip of a snapshot is refused as INVALID_SNAPSHOT and imports nothing', async () => {
    const source = await open()
    const ns = source.namespace('cfg')
    ns.put('a', { n: 1 }, { writer: 'agent-7' })
    ns.put('b', 'x', { ttl: 60_000 })
    source.namespace('other', { codec: 'raw' }).put('r', new Uint8Array([1, 2, 3]))
    const bytes = source.export()
    source.close()
    const target = await open()
    const kept = target.namespace('kept')
    kept.put('k', 1)
    const before = target.export()
    for (let bit = 0; bit < bytes.length * 8; bit++) {
      const flipped = bytes.slice()
      flipped[bit >> 3] = flipped[bit >> 3]! ^ (1 << (bit & 7))
      await expectRefused(() => target.import(flipped), 'INVALID_SNAPSHOT')
      await expectRefused(() => open({ snapshot: flipped }), 'INVALID_SNAPSHOT')
    }
    for (const len of [0, 1, 4, 12, bytes.length - 1]) await expectRefused(() => target.import(bytes.subarray(0, len)), 'INVALID_SNAPSHOT')
    expect(target.export()).toEqual(before)
    expect(kept.get('k')!.value).toBe(1)
    target.import(bytes)
    expect(target.namespace('cfg').get('a')).toMatchObject({ value: { n: 1 }, stamp: { writer: 'agent-7' } })
    target.close()
  })

  it('every key-taking call refuses a key that is not one, and writes nothing', async () => {
    const store = await open()
    const ns = store.namespace<unknown>('n')
    const other = store.namespace<unknown>('other')
    other.put('x', 1)
    const stamp0 = stamp({ wall: 1 })
    const calls: Record<string, (key: unknown) => unknown> = {
      get: (k) => ns.get(k as never),
      getVersion: (k) => ns.getVersion(k as never, 1),
      history: (k) => ns.history(k as never),
      put: (k) => ns.put(k as never, 1),
      create: (k) => ns.create(k as never, 1),
      delete: (k) => ns.delete(k as never),
      update: (k) => ns.update(k as never, () => 1),
      purge: (k) => ns.purge(k as never),
      watch: (k) => ns.watch(k as never),
      'transaction put': (k) =>
        store
          .transaction()
          .put(ns, k as never, 1)
          .commit(),
      'transaction delete': (k) =>
        store
          .transaction()
          .delete(ns, k as never)
          .commit(),
      'transaction check': (k) =>
        store
          .transaction()
          .check(ns, k as never, 0)
          .commit(),
      merge: (k) => store.merge(ns, { key: k as never, type: 'put', value: 1, stamp: stamp0 }),
    }
    const prefixCalls: Record<string, (prefix: unknown) => unknown> = {
      keys: (p) => ns.keys(p as never),
      entries: (p) => ns.entries(p as never),
      watchPrefix: (p) => ns.watchPrefix(p as never),
    }
    const badKeys: [string, unknown, string][] = [
      ...HOSTILE.filter(([, v]) => typeof v !== 'string').map(([label, v]) => [label, v, 'INVALID_ARGUMENT'] as [string, unknown, string]),
      ['an empty string', '', 'INVALID_KEY'],
      ['1025 bytes', 'k'.repeat(1025), 'INVALID_KEY'],
      ['a huge string', 'x'.repeat(100_000), 'INVALID_KEY'],
      ['a lone high surrogate', 'a\uD800', 'INVALID_KEY'],
      ['a lone low surrogate', '\uDFFFa', 'INVALID_KEY'],
    ]
    for (const [name, call] of Object.entries(calls)) {
      for (const [label, key, code] of badKeys) {
        await expectRefused(() => call(key), code as never).catch((e: Error) => {
          throw new Error(`${name}(${label}): ${e.message}`)
        })
      }
    }
    for (const [name, call] of Object.entries(prefixCalls)) {
      // A listing's prefix may be empty (everything) or longer than any key (nothing).
      const refused =
        name === 'watchPrefix' ? badKeys.filter(([, k]) => k !== '') : badKeys.filter(([, k]) => typeof k !== 'string' || /[\uD800-\uDFFF]/.test(k))
      for (const [label, key, code] of refused) {
        await expectRefused(() => call(key), code as never).catch((e: Error) => {
          throw new Error(`${name}(${label}): ${e.message}`)
        })
      }
    }
    for (const fn of [null, 5, 'f', {}]) await expectRefused(() => ns.update('k', fn as never), 'INVALID_ARGUMENT')
    for (const value of [10n, Symbol('s'), () => 1]) await expectRefused(() => ns.put('k', value), 'INVALID_PAYLOAD')
    expect(store.revision).toBe(1)
    expect(ns.keys()).toEqual([])
    expect(other.keys()).toEqual(['x'])
    store.close()
    expectPrototypeUntouched()
  })

  it('a stored value that does not decode with the reading codec is a typed error, not a SyntaxError', async () => {
    const store = await open()
    store.namespace('v', { codec: 'raw' }).put('k', new Uint8Array([0xff, 0x00, 0x7b]))
    const json = store.namespace('v', { codec: 'json' })
    const error = await expectRefused(() => json.get('k'), 'INVALID_PAYLOAD')
    expect(error.message).toContain('json')
    await expectRefused(() => json.entries(), 'INVALID_PAYLOAD')
    await expectRefused(() => json.history('k'), 'INVALID_PAYLOAD')
    store.close()
  })
})
