/**
 * The durable store (native engine): what was acknowledged survives closing, reopening and
 * SIGKILL at any moment, and the file always reopens cleanly.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterAll, describe, expect, it } from 'vitest'

import { Orrery } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { errorOf } from './helpers.js'

const dir = mkdtempSync(join(tmpdir(), 'orrery-store-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let files = 0
const fresh = () => join(dir, `store-${files++}.redb`)

describe.runIf(ENGINE === 'native')('durable store', () => {
  it('keeps values, history, TTLs, writers and versions across a reopen', async () => {
    const path = fresh()
    let now = 1_000
    const store = await Orrery.openStore({ path, history: 2, clock: () => now })
    expect(store.durable).toBe(true)
    const ns = store.namespace('agents')
    const versions = await Promise.all([ns.put('a', 1), ns.put('a', 2, { writer: 'planner' }), ns.put('b', 'short', { ttl: 100 })])
    expect(versions).toEqual([1, 2, 3])
    await expect(ns.put('a', 3, { ifVersion: 1 })).rejects.toMatchObject({ code: 'VERSION_CONFLICT' })
    await store
      .transaction()
      .delete(ns, 'a')
      .put(ns, 'c', { deep: [1] })
      .commit()
    store.close()

    const again = await Orrery.openStore({ path, clock: () => now })
    const ns2 = again.namespace('agents')
    expect(ns2.get('a')).toBeUndefined()
    expect(ns2.history('a').map((c) => c.type)).toEqual(['put', 'put', 'delete'])
    expect(ns2.history('a')[1]!.stamp.writer).toBe('planner')
    expect(ns2.get('c')!.value).toEqual({ deep: [1] })
    expect(ns2.get('b')!.expiresAt).toBe(1_100)
    expect(again.revision).toBe(4)
    now = 1_200
    expect(ns2.get('b')).toBeUndefined()
    expect(await ns2.put('d', 1)).toBe(6)
    again.close()

    const third = await Orrery.openStore({ path, clock: () => now })
    expect(third.namespace('agents').keys()).toEqual(['c', 'd'])
    third.close()
  })

  it('acknowledges each write from disk with either durability setting', async () => {
    for (const durability of ['every', 'batched'] as const) {
      const path = fresh()
      const store = await Orrery.openStore({ path, durability })
      const ns = store.namespace('n')
      const acks = await Promise.all(Array.from({ length: 50 }, (_, i) => ns.put(`k${i}`, i)))
      expect(acks).toEqual(Array.from({ length: 50 }, (_, i) => i + 1))
      await store.flushed()
      store.close()
      const again = await Orrery.openStore({ path })
      expect(again.namespace('n').keys()).toHaveLength(50)
      again.close()
    }
  })

  it('refuses a file it cannot use with STORE_IO', async () => {
    expect((await errorOf(() => Orrery.openStore({ path: dir })))?.code).toBe('STORE_IO')
    const path = fresh()
    const first = await Orrery.openStore({ path })
    expect((await errorOf(() => Orrery.openStore({ path })))?.code).toBe('STORE_IO')
    first.close()
  })

  it('refuses a damaged snapshot with INVALID_SNAPSHOT, imports nothing and leaves the file closed', async () => {
    const source = await Orrery.openStore()
    const ns = source.namespace('n')
    for (let i = 0; i < 20; i++) ns.put(`k${i}`, { i })
    const bytes = source.export()
    source.close()
    const damaged = bytes.slice()
    damaged[damaged.length >> 1]! ^= 0x10
    const path = fresh()
    expect((await errorOf(() => Orrery.openStore({ path, snapshot: damaged })))?.code).toBe('INVALID_SNAPSHOT')
    const orrery = await Orrery.create({ engine: 'native' })
    expect((await errorOf(() => orrery.openStore({ path, snapshot: damaged })))?.code).toBe('INVALID_SNAPSHOT')
    // Nothing was imported, and the refused opens left the file free to open again.
    const empty = orrery.openStore({ path })
    expect(empty.revision).toBe(0)
    expect(empty.namespace('n').keys()).toEqual([])
    empty.close()
    // An undamaged snapshot imports, and is on disk across a reopen.
    const imported = orrery.openStore({ path, snapshot: bytes })
    await imported.flushed()
    imported.close()
    const again = await Orrery.openStore({ path })
    expect(again.namespace('n').keys()).toHaveLength(20)
    expect(again.namespace('n').get('k3')?.value).toEqual({ i: 3 })
    again.close()
    orrery.close()
  })

  it('reopens after a commit that took in rows of a writer named in the next turn', async () => {
    const path = fresh()
    const store = await Orrery.openStore({ path })
    const ns = store.namespace('n')
    const big = 'v'.repeat(64 * 1024)
    const acks: Promise<number>[] = []
    // A busy turn keeps the disk writer inserting while the next turn's rows arrive.
    for (let i = 0; i < 500; i++) acks.push(ns.put(`big${i}`, big))
    await new Promise((resolve) => setImmediate(resolve))
    for (let i = 0; i < 128; i++) acks.push(ns.put(`w${i}`, i, { writer: 'agent-new' }))
    const until = Date.now() + 100
    while (Date.now() < until) {
      /* hold the turn open */
    }
    await Promise.all(acks)
    store.close()
    const again = await Orrery.openStore({ path })
    expect(again.namespace('n').get('w0')).toMatchObject({ value: 0, stamp: { writer: 'agent-new' } })
    again.close()
  })

  it('commits expiries, and keeps tombstones and their end across a reopen', async () => {
    const path = fresh()
    let now = 1_000
    const store = await Orrery.openStore({ path, clock: () => now, tombstoneMs: 500 })
    const ns = store.namespace('n')
    await ns.put('session', 'token', { ttl: 100 })
    now = 1_200
    store.flush()
    await store.flushed()
    store.close()
    const again = await Orrery.openStore({ path, clock: () => now, tombstoneMs: 500 })
    const n2 = again.namespace('n')
    expect(n2.get('session')).toBeUndefined()
    expect(n2.history('session').map((c) => c.type)).toEqual(['expire'])
    now = 1_800
    again.flush()
    expect(n2.history('session')).toEqual([])
    again.close()
  })

  it('fails pending writes with STORE_IO when the disk refuses, without crashing', async () => {
    const path = fresh()
    const fixture = fileURLToPath(new URL('./fixtures/store-disk-full.mjs', import.meta.url))
    // `ulimit -f` caps the file at 4 MiB: the writes pass it after a few hundred.
    const child = spawn('bash', ['-c', `ulimit -f 4096; exec "${process.execPath}" "${fixture}" "${path}"`], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString()
    })
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
    expect(code).toBe(0)
    const outcomes = JSON.parse(out.trim()) as Record<string, number>
    expect(outcomes['STORE_IO']).toBeGreaterThan(0)
    expect(Object.keys(outcomes).filter((k) => k !== 'ok' && k !== 'STORE_IO')).toEqual([])
  })

  it('keeps every transaction whole on disk across a crash, wherever its rows were chunked', async () => {
    const fixture = fileURLToPath(new URL('./fixtures/store-torn.mjs', import.meta.url))
    for (let run = 0; run < 6; run++) {
      const path = fresh()
      const child = spawn(process.execPath, [fixture, path], { stdio: ['ignore', 'pipe', 'inherit'] })
      await new Promise((resolve) => child.stdout.once('data', resolve))
      await new Promise((resolve) => setTimeout(resolve, 300 + Math.random() * 500))
      child.kill('SIGKILL')
      await new Promise((resolve) => child.on('exit', resolve))
      const store = await Orrery.openStore({ path })
      const ns = store.namespace('n')
      const values = ['a', 'b', 'c', 'd', 'e'].map((key) => ns.get(key)?.value)
      expect(new Set(values).size, `run ${run}: ${values.join(',')}`).toBe(1)
      store.close()
    }
  }, 60_000)

  it('loses no acknowledged write when the writer is killed at random moments', async () => {
    const path = fresh()
    const fixture = fileURLToPath(new URL('./fixtures/store-writer.mjs', import.meta.url))
    const acked = new Set<number>()
    let counter = 0
    let txnRound = -1
    let next = 0
    for (let round = 0; round < 12; round++) {
      const child = spawn(process.execPath, [fixture, path, String(next), round % 3 === 2 ? 'every' : 'batched'], { stdio: ['ignore', 'pipe', 'inherit'] })
      let pending = ''
      child.stdout.on('data', (chunk: Buffer) => {
        pending += chunk.toString()
        const lines = pending.split('\n')
        pending = lines.pop()!
        for (const line of lines) {
          const [what, n] = line.split(' ')
          if (what === 'ready') setTimeout(() => child.kill('SIGKILL'), 20 + Math.random() * 150)
          else if (what === 'ack') acked.add(Number(n))
          else if (what === 'counter') counter = Math.max(counter, Number(n))
          else if (what === 'txn') txnRound = Math.max(txnRound, Number(n))
        }
      })
      const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_, s) => resolve(s)))
      expect(signal).toBe('SIGKILL')

      const store = await Orrery.openStore({ path })
      const ns = store.namespace('crash')
      const missing = [...acked].filter((n) => ns.get(`k${n}`)?.value !== n)
      expect(missing).toEqual([])
      expect((ns.get('counter')?.value as number | undefined) ?? 0).toBeGreaterThanOrEqual(counter)
      // A transaction is all or nothing on disk too, even one larger than a chunk of rows.
      const rounds = new Set(ns.entries('t/').map((e) => e.value))
      expect(rounds.size).toBeLessThanOrEqual(1)
      if (txnRound >= 0) expect(ns.get('t/0')?.value as number).toBeGreaterThanOrEqual(txnRound)
      next = Math.max(next, ...acked) + 1
      store.close()
    }
    // The rounds did real work: thousands of writes acknowledged and checked.
    expect(acked.size).toBeGreaterThan(500)
    expect(counter).toBeGreaterThan(20)
  }, 120_000)
})
