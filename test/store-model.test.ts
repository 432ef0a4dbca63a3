/**
 * The store through the whole stack (TS facade, wire layout, engine, core) against a plain model,
 * on the engine under test: random puts, creates, compare-and-sets, deletes, transactions and
 * reads over a few keys (some not ASCII), with history kept.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'

import { Orrery } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { errorOf } from './helpers.js'

const KEYS = ['a', 'b', 'ключ', 'emoji-😀']

type Op =
  | { op: 'put'; key: number; value: number }
  | { op: 'create'; key: number; value: number }
  | { op: 'cas'; key: number; value: number; stale: boolean }
  | { op: 'delete'; key: number }
  | { op: 'txn'; writes: { key: number; value: number | null; guard: 'none' | 'fresh' | 'stale' }[] }

const key = fc.integer({ min: 0, max: KEYS.length - 1 })
const value = fc.integer({ min: 0, max: 1000 })
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('put' as const), key, value }),
  fc.record({ op: fc.constant('create' as const), key, value }),
  fc.record({ op: fc.constant('cas' as const), key, value, stale: fc.boolean() }),
  fc.record({ op: fc.constant('delete' as const), key }),
  fc.record({
    op: fc.constant('txn' as const),
    writes: fc.uniqueArray(
      fc.record({ key, value: fc.option(value, { nil: null }), guard: fc.constantFrom('none' as const, 'fresh' as const, 'stale' as const) }),
      { selector: (w) => w.key, minLength: 1, maxLength: 4 },
    ),
  }),
)

describe(`store against a model (${ENGINE})`, () => {
  it('agrees with a plain map of versioned values and their history', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 40 }), async (ops) => {
        const store = await Orrery.openStore({ engine: ENGINE, history: 2 })
        const ns = store.namespace('m')
        const model = new Map<string, { value: number; version: number }>()
        const history = new Map<string, (number | null)[]>()
        let revision = 0
        const live = (k: string) => model.get(k)?.version ?? 0
        const record = (k: string, v: number | null, version: number) => {
          if (v === null) model.delete(k)
          else model.set(k, { value: v, version })
          history.set(k, [...(history.get(k) ?? []), v].slice(-3))
        }
        for (const o of ops) {
          if (o.op === 'txn') {
            const txn = store.transaction()
            for (const w of o.writes) {
              const k = KEYS[w.key]!
              const guard = w.guard === 'none' ? {} : { ifVersion: live(k) + (w.guard === 'stale' ? 1 : 0) }
              if (w.value === null) txn.delete(ns, k, guard)
              else txn.put(ns, k, w.value, guard)
            }
            if (o.writes.some((w) => w.guard === 'stale')) {
              // All or nothing: one stale guard refuses the whole transaction.
              expect((await errorOf(() => txn.commit()))?.code).toBe('VERSION_CONFLICT')
              continue
            }
            const changes = o.writes.some((w) => w.value !== null || live(KEYS[w.key]!) !== 0)
            const got = txn.commit()
            if (!changes) {
              expect(got).toBe(0)
              continue
            }
            revision++
            expect(got).toBe(revision)
            for (const w of o.writes) {
              const k = KEYS[w.key]!
              if (w.value === null && live(k) === 0) continue
              record(k, w.value, revision)
            }
            continue
          }
          const k = KEYS[o.key]!
          if (o.op === 'put') {
            expect(ns.put(k, o.value)).toBe(++revision)
            record(k, o.value, revision)
          } else if (o.op === 'create') {
            if (live(k) !== 0) {
              expect((await errorOf(() => ns.create(k, o.value)))?.details).toMatchObject({ current: live(k) })
            } else {
              expect(ns.create(k, o.value)).toBe(++revision)
              record(k, o.value, revision)
            }
          } else if (o.op === 'cas') {
            const expected = live(k) + (o.stale ? 1 : 0)
            if (o.stale) {
              expect((await errorOf(() => ns.put(k, o.value, { ifVersion: expected })))?.code).toBe('VERSION_CONFLICT')
            } else {
              expect(ns.put(k, o.value, { ifVersion: expected })).toBe(++revision)
              record(k, o.value, revision)
            }
          } else if (live(k) === 0) {
            expect(ns.delete(k)).toBe(0)
          } else {
            expect(ns.delete(k)).toBe(++revision)
            record(k, null, revision)
          }
        }
        for (const k of KEYS) {
          const entry = ns.get(k)
          expect(entry ? { value: entry.value, version: entry.version } : undefined).toEqual(model.get(k))
          expect(ns.history(k).map((c) => (c.type === 'put' ? c.value : null))).toEqual(history.get(k) ?? [])
        }
        expect(ns.keys().sort()).toEqual([...model.keys()].sort())
        expect(store.revision).toBe(revision)
        store.close()
      }),
      { numRuns: 150 },
    )
  })
})
