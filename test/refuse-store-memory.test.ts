/**
 * Memory a wasm instance cannot provide is a typed error naming the limit, never a trap that
 * poisons the engine (issue 11, item 2: 14 values of 256 MiB, within the documented limits,
 * exhausted wasm memory). The wasm engine only: a WebAssembly instance addresses at most
 * 4 GiB, while the native engine's memory is the process's. In a file of its own: the instance
 * keeps the memory it grew to for the rest of the file.
 */
import { describe, expect, it } from 'vitest'

import { Orrery } from '../ts/node.js'
import { expectEngineUsable, expectRefused } from './bad-input.js'
import { ENGINE } from './engine.js'

const MAX = 256 * 1024 * 1024

describe.runIf(ENGINE === 'wasm')('wasm store memory', () => {
  it('refuses a write the instance cannot hold with VALUE_TOO_LARGE, keeping what it stored', async () => {
    const value = new Uint8Array(MAX)
    // A snapshot of 256 MiB, made while there is room.
    const source = await Orrery.openStore({ engine: ENGINE, maxValueBytes: MAX })
    source.namespace('big', { codec: 'raw' }).put('snap', value)
    const snapshot = source.export()
    source.close()
    const store = await Orrery.openStore({ engine: ENGINE, maxValueBytes: MAX })
    const ns = store.namespace<Uint8Array>('big', { codec: 'raw' })
    let stored = 0
    let error: Error | undefined
    for (; stored < 20 && error === undefined; ) {
      value[0] = stored
      try {
        ns.put(`v${stored}`, value)
        stored++
      } catch (e) {
        error = await expectRefused(() => {
          throw e
        }, 'VALUE_TOO_LARGE')
      }
    }
    expect(error, 'twenty values of 256 MiB cannot all fit in 4 GiB').toBeDefined()
    expect(error!.message).toContain('4096 MiB')
    expect(stored).toBeGreaterThan(3)
    // What was acknowledged is all there, and the refused write wrote nothing.
    expect(store.revision).toBe(stored)
    expect(ns.keys()).toHaveLength(stored)
    const last = ns.get(`v${stored - 1}`)!.value
    expect(last.length).toBe(MAX)
    expect(last[0]).toBe(stored - 1)
    // An export that cannot fit now (a copy of everything held) is refused the same way.
    expect((await expectRefused(() => store.export(), 'VALUE_TOO_LARGE')).message).toContain('4096 MiB')
    // A snapshot that cannot fit now is refused the same way, before it is copied in.
    const refused = await expectRefused(() => store.import(snapshot), 'VALUE_TOO_LARGE')
    expect(refused.message).toContain('4096 MiB')
    expect(store.revision).toBe(stored)
    // Room comes back when keys go.
    for (let i = 0; i < stored; i++) ns.purge(`v${i}`)
    ns.put('again', value)
    store.close()
    await expectEngineUsable()
  }, 120_000)
})
