/**
 * The ordered key index a strong namespace's mirror reads prefixes from (ts/store/key-index.ts):
 * after any mix of adds and removes, a prefix read gives exactly the live keys with that prefix,
 * in the order a sort by `<` gives.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'

import { KeyIndex } from '../ts/store/key-index.js'

const key = fc.string({ unit: fc.constantFrom('a', 'b', '/', 'é', '\u{1F600}'), maxLength: 5 })

describe('key index', () => {
  it('a prefix read is the sorted live keys with that prefix, after any adds and removes', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), key), { maxLength: 200 }), fc.array(key, { maxLength: 10 }), (ops, prefixes) => {
        const index = new KeyIndex()
        const live = new Set<string>()
        for (const [add, k] of ops) {
          if (add) {
            index.add(k)
            live.add(k)
          } else {
            index.remove(k)
            live.delete(k)
          }
        }
        const sorted = [...live].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
        for (const prefix of ['', ...prefixes]) expect(index.withPrefix(prefix)).toEqual(sorted.filter((k) => k.startsWith(prefix)))
      }),
    )
  })
})
