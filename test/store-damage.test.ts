/**
 * A damaged store file (native engine) is reported as damaged, naming its path, and never opened
 * as an empty store or a partial one, and never panics (issue 11, item 8): truncated to any
 * length, or overwritten in the middle at offsets across the whole file.
 */
import { copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeSync, closeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { isOrreryError, Orrery, type Store } from '../ts/node.js'
import { expectEngineUsable } from './bad-input.js'
import { ENGINE } from './engine.js'

const dir = mkdtempSync(join(tmpdir(), 'orrery-damage-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const original = join(dir, 'original.redb')
const KEYS = 200
let copies = 0

/** A copy of the written file, damaged by `damage`. */
function damaged(damage: (path: string, size: number) => void): string {
  const path = join(dir, `copy-${copies++}.redb`)
  copyFileSync(original, path)
  damage(path, statSync(path).size)
  return path
}

function overwrite(path: string, at: number, bytes: Uint8Array): void {
  const fd = openSync(path, 'r+')
  writeSync(fd, bytes, 0, bytes.length, at)
  closeSync(fd)
}

/**
 * Reopens a damaged copy: either it is refused as damaged (STORE_IO naming the path), or every
 * acknowledged write reads back exactly (the damage hit space no commit uses). Returns which.
 */
async function reopen(path: string): Promise<'refused' | 'intact'> {
  let store: Store<true>
  try {
    store = await Orrery.openStore({ path })
  } catch (error) {
    if (!isOrreryError(error, 'STORE_IO')) throw new Error(`expected STORE_IO, got ${String((error as { code?: string }).code)}: ${(error as Error).message}`)
    expect(error.message).toContain(path)
    expect(error.message).toContain('damaged')
    expect(error.details).toMatchObject({ path, damaged: true })
    return 'refused'
  }
  try {
    const ns = store.namespace<number>('acked')
    expect(store.revision).toBe(KEYS)
    expect(ns.keys()).toHaveLength(KEYS)
    for (let i = 0; i < KEYS; i++) expect(ns.get(`k${String(i).padStart(3, '0')}`)?.value).toBe(i)
    return 'intact'
  } finally {
    store.close()
  }
}

describe.runIf(ENGINE === 'native')('damaged store files', () => {
  beforeAll(async () => {
    const store = await Orrery.openStore({ path: original, durability: 'every' })
    const ns = store.namespace<number>('acked')
    // 200 acknowledged writes, one commit each.
    for (let i = 0; i < KEYS; i++) await ns.put(`k${String(i).padStart(3, '0')}`, i)
    store.close()
  })

  afterAll(async () => {
    await expectEngineUsable()
  })

  it('refuses a file truncated to 0 bytes instead of opening it empty', async () => {
    const path = damaged((p) => truncateSync(p, 0))
    expect(await reopen(path)).toBe('refused')
    // Refusing left the file as it was: nothing was initialised over it.
    expect(statSync(path).size).toBe(0)
  })

  it('refuses a file that is not a store file', async () => {
    expect(await reopen(damaged((p) => overwrite(p, 0, new TextEncoder().encode('not a store'))))).toBe('refused')
    expect(await reopen(damaged((p) => truncateSync(p, 5)))).toBe('refused')
  })

  it('never opens a truncated file as a partial store', async () => {
    const size = statSync(original).size
    const outcomes = []
    for (const fraction of [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]) {
      outcomes.push(await reopen(damaged((p) => truncateSync(p, Math.floor(size * fraction)))))
    }
    expect(outcomes).toContain('refused')
  })

  it('never panics on a file overwritten in the middle, at offsets across the file', async () => {
    const size = statSync(original).size
    const garbage = new Uint8Array(512).map((_, i) => (i * 131 + 7) & 0xff)
    const outcomes: string[] = []
    for (let n = 0; n < 31; n++) {
      const at = Math.floor(((n + 0.5) / 31) * (size - garbage.length))
      outcomes.push(await reopen(damaged((p) => overwrite(p, at, garbage))))
    }
    // The file itself (a damaged page the store reads) is refused at least once; never a PANIC.
    expect(outcomes).toContain('refused')
    expect(readFileSync(original).length).toBe(size)
  })

  it('refuses a file whose live rows were overwritten', async () => {
    // Every copy of the last key's row (copy-on-write leaves older ones in freed pages).
    const bytes = readFileSync(original)
    const needle = Buffer.from('acked\u0000k199')
    const outcomes: string[] = []
    for (let at = bytes.indexOf(needle); at >= 0; at = bytes.indexOf(needle, at + 1)) {
      outcomes.push(await reopen(damaged((p) => overwrite(p, at, new Uint8Array(needle.length).fill(0x5a)))))
    }
    expect(outcomes).toContain('refused')
  })
})
