/**
 * The durable transport (native engine): channels kept on disk. What a publish acknowledged
 * survives closing and SIGKILL, groups come back with what they owe and its delivery counts,
 * acked messages never come back, and the wasm engine refuses it at create.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterAll, describe, expect, it } from 'vitest'

import { type Delivery, Orrery } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { errorOf } from './helpers.js'

const dir = mkdtempSync(join(tmpdir(), 'orrery-bus-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let files = 0
const fresh = () => join(dir, `bus-${files++}.redb`)

const open = (path: string) => Orrery.create({ transports: { disk: { kind: 'durable', path } }, bindings: { 'jobs*': 'disk' } })

/** Every delivery a member gets until `quiet` ms pass without one. */
async function deliveries<T>(stream: { subscribe(f: (d: Delivery<T>) => void): unknown }, quiet = 150): Promise<Delivery<T>[]> {
  const got: Delivery<T>[] = []
  let last = Date.now()
  stream.subscribe((d) => {
    got.push(d)
    last = Date.now()
  })
  while (Date.now() - last < quiet) await new Promise((resolve) => setTimeout(resolve, 20))
  return got
}

describe.runIf(ENGINE === 'native')('durable transport', () => {
  it('keeps a log and its seqs, and a group with what it owes, across a reopen', async () => {
    const path = fresh()
    const first = await open(path)
    expect(first.bus.binding('jobs')).toMatchObject({ transport: 'disk', kind: 'durable' })
    expect(first.bus.binding('other')).toBeUndefined()
    const group = first.bus.group<number>('jobs', 'workers', { from: 'earliest' })
    for (let i = 0; i < 6; i++) await first.bus.publish('jobs', i)
    const got = await deliveries(group.join())
    expect(got.map((d) => d.message.payload)).toEqual([0, 1, 2, 3, 4, 5])
    for (const d of got) if (d.message.payload % 2 === 0) d.ack()
    // An ack is on disk once a later commit is: the next publish's (to another durable channel).
    await first.bus.publish('jobs.marks', 'acked')
    first.close()

    const again = await open(path)
    const stats = again.bus.stats('jobs')
    expect([stats.firstSeq, stats.nextSeq]).toEqual([0, 6])
    const group2 = again.bus.group<number>('jobs', 'workers')
    const redelivered = await deliveries(group2.join())
    expect(redelivered.map((d) => [d.message.payload, d.attempt])).toEqual([
      [1, 2],
      [3, 2],
      [5, 2],
    ])
    for (const d of redelivered) d.ack()
    await again.bus.publish('jobs', 6)
    again.close()

    const third = await open(path)
    expect((await deliveries(third.bus.group<number>('jobs', 'workers').join())).map((d) => d.message.payload)).toEqual([6])
    const replay: number[] = []
    third.bus.subscribe<number>('jobs', { from: 'earliest' }).subscribe((m) => replay.push(m.payload))
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(replay).toEqual([0, 1, 2, 3, 4, 5, 6])
    third.close()
  })

  it('keeps dead letters and the dedup window', async () => {
    const path = fresh()
    const first = await open(path)
    first.bus.channel('jobs', { dedupWindowMs: 60_000 })
    const group = first.bus.group<string>('jobs', 'workers', { from: 'earliest' })
    await first.bus.publish('jobs', 'poison', { id: 'p1' })
    const [d] = await deliveries(group.join())
    d!.nack({ deadLetter: 'bad input' })
    await first.bus.publish('jobs', 'after', { id: 'p2' })
    first.close()
    const again = await open(path)
    expect((await again.bus.publish('jobs', 'poison', { id: 'p1' })).published).toBe(false)
    const dead: string[] = []
    again.bus.subscribe('jobs.dead-letter', { from: 'earliest' }).subscribe((m) => dead.push(m.headers['x-orrery-dead-letter-reason']!))
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(dead).toEqual(['bad input'])
    again.close()
  })

  it('refuses what it cannot open', async () => {
    const path = fresh()
    const first = await open(path)
    // The file is named in details (as the durable store's open names it).
    expect(await errorOf(() => open(path))).toMatchObject({ code: 'STORE_IO', details: { path, damaged: false } })
    first.close()
    expect(await errorOf(() => open(dir))).toMatchObject({ code: 'STORE_IO', details: { path: dir } })
    const two = { a: { kind: 'durable', path: fresh() }, b: { kind: 'durable', path: fresh() } } as const
    expect(await errorOf(() => Orrery.create({ transports: two }))).toMatchObject({ code: 'INVALID_OPTION' })
    expect(await errorOf(() => Orrery.create({ transports: { a: { kind: 'durable' } as never } }))).toMatchObject({ code: 'INVALID_OPTION' })
  })

  it('settles a publish made right before close as it landed: on disk', async () => {
    const path = fresh()
    const first = await open(path)
    const published = first.bus.publish('jobs', 'last').then(
      () => 'ok',
      (e: { code?: string }) => e.code,
    )
    first.close()
    expect(await published).toBe('ok')
    const again = await open(path)
    expect(again.bus.stats('jobs').nextSeq).toBe(1)
    again.close()
  })

  it('opens an empty file (a crash while creating it) as a new one, and refuses one that is not a bus file', async () => {
    const empty = fresh()
    writeFileSync(empty, '')
    const orrery = await open(empty)
    await orrery.bus.publish('jobs', 1)
    orrery.close()
    const again = await open(empty)
    expect(again.bus.stats('jobs').nextSeq).toBe(1)
    again.close()
    const other = fresh()
    writeFileSync(other, 'not a bus file')
    expect(await errorOf(() => open(other))).toMatchObject({ code: 'STORE_IO' })
  })

  it('fails publishes with TRANSPORT_UNAVAILABLE once the disk refuses, refuses later ones unpublished, and leaves memory channels be', async () => {
    const path = fresh()
    const fixture = fileURLToPath(new URL('./fixtures/bus-disk-full.mjs', import.meta.url))
    // `ulimit -f` caps the file at 4 MiB: the publishes of 8 kB pass it after a few hundred.
    const child = spawn('bash', ['-c', `ulimit -f 4096; exec "${process.execPath}" "${fixture}" "${path}"`], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString()
    })
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
    expect(code).toBe(0)
    const { after, memo, delivered, ...outcomes } = JSON.parse(out.trim()) as Record<string, number | string | string[]>
    expect(outcomes['TRANSPORT_UNAVAILABLE']).toBeGreaterThan(0)
    expect(Object.keys(outcomes).filter((k) => !['ok', 'TRANSPORT_UNAVAILABLE'].includes(k))).toEqual([])
    // Once the disk failed, a durable publish is refused before it is published: nobody got it.
    expect(after).toBe('TRANSPORT_UNAVAILABLE')
    // A memory channel of the same Orrery is not affected.
    expect(memo).toBe('ok')
    expect(delivered).toEqual(['memo'])
    // What was acknowledged before is there after a reopen.
    const again = await open(path)
    expect(again.bus.stats('jobs').nextSeq).toBeGreaterThanOrEqual(outcomes['ok'] as number)
    again.close()
  })

  it('dead-letters a message that kills its consumer once it was delivered maxDeliveries times', async () => {
    const fixture = fileURLToPath(new URL('./fixtures/bus-poison.mjs', import.meta.url))
    const run = async (path: string, mode: string) => {
      const child = spawn(process.execPath, [fixture, path, mode], { stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString()
      })
      await new Promise((resolve) => child.on('exit', resolve))
      return out.trim()
    }
    // The handler kills the process synchronously (its delivery is on disk before it runs), or
    // after a little work.
    for (const mode of ['sync', 'async']) {
      const path = fresh()
      await run(path, 'publish')
      const lives: string[] = []
      for (let i = 0; i < 4; i++) lives.push(await run(path, mode))
      expect(lives, mode).toEqual(['attempt 1', 'attempt 2', 'none', 'none'])
      const orrery = await open(path)
      const dead: unknown[] = []
      orrery.bus
        .subscribe('jobs.dead-letter', { from: 'earliest' })
        .subscribe((m) => dead.push([m.payload, m.headers['x-orrery-dead-letter-reason'], m.headers['x-orrery-deliveries']]))
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect(dead, mode).toEqual([['poison', 'max-deliveries', '2']])
      orrery.close()
    }
  }, 30_000)

  it('loses no acknowledged publish and redelivers no acked message when killed at random moments', async () => {
    const path = fresh()
    const fixture = fileURLToPath(new URL('./fixtures/bus-writer.mjs', import.meta.url))
    const published = new Set<number>()
    const acked = new Set<number>()
    let next = 0
    let checked = 0
    for (let round = 0; round < 8; round++) {
      // What this round's child was given, with its delivery count, and never acked on disk.
      const held = new Map<number, number>()
      const child = spawn(process.execPath, [fixture, path, String(next)], { stdio: ['ignore', 'pipe', 'inherit'] })
      let pending = ''
      child.stdout.on('data', (chunk: Buffer) => {
        pending += chunk.toString()
        const lines = pending.split('\n')
        pending = lines.pop()!
        for (const line of lines) {
          const [what, n, count] = line.split(' ')
          if (what === 'ready') setTimeout(() => child.kill('SIGKILL'), 100 + Math.random() * 400)
          else if (what === 'pub') published.add(Number(n))
          else if (what === 'got') held.set(Number(n), Number(count))
          else if (what === 'acked') acked.add(Number(n))
        }
      })
      const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_, s) => resolve(s)))
      expect(signal).toBe('SIGKILL')

      const orrery = await Orrery.create({ transports: { disk: { kind: 'durable', path } }, bindings: { jobs: 'disk', marks: 'disk' } })
      const log = new Map<number, number>()
      orrery.bus.subscribe<number>('jobs', { from: 'earliest' }).subscribe((m) => log.set(m.payload, (log.get(m.payload) ?? 0) + 1))
      const group = orrery.bus.group<number>('jobs', 'workers', { from: 'earliest' })
      const again = await deliveries(group.join({ maxInFlight: 100_000 }))
      // Every acknowledged publish is in the log, once.
      expect([...published].filter((n) => log.get(n) !== 1)).toEqual([])
      // No message whose ack is on disk comes back; every other one given out does, counted.
      const back = new Map(again.map((d) => [d.message.payload, d.attempt]))
      expect([...back.keys()].filter((n) => acked.has(n))).toEqual([])
      // Odd messages are never acked: each given out whose publish was acknowledged comes back,
      // counted at least as often (one delivered before its publish was on disk may be gone with
      // it: its publisher was never told it was published); an even one whose ack was not yet
      // known to be on disk may come back or not.
      for (const [n, count] of held)
        if ((n % 2 === 1 && published.has(n)) || back.has(n)) expect(back.get(n) ?? 0, `message ${n}`).toBeGreaterThanOrEqual(count)
      // Every acknowledged publish not acked is owed.
      expect([...published].filter((n) => n % 2 === 1 && !back.has(n))).toEqual([])
      checked += back.size
      next = Math.max(next, ...published, ...log.keys()) + 1
      orrery.close()
    }
    console.log(`durable bus crash rounds: ${published.size} publishes acknowledged, ${acked.size} acks on disk, ${checked} redeliveries checked`)
    expect(published.size).toBeGreaterThan(200)
    expect(acked.size).toBeGreaterThan(50)
    expect(checked).toBeGreaterThan(100)
  }, 120_000)
})

describe.runIf(ENGINE === 'wasm')('durable transport on wasm', () => {
  it('is refused at create with UNSUPPORTED', async () => {
    const error = await errorOf(() => Orrery.create({ transports: { disk: { kind: 'durable', path: fresh() } } }))
    expect(error).toMatchObject({ code: 'UNSUPPORTED', details: { transport: 'disk', kind: 'durable' } })
  })

  it('is refused before any other transport connects (an unreachable broker does not hide it)', async () => {
    const started = Date.now()
    const error = await errorOf(() =>
      Orrery.create({
        transports: { disk: { kind: 'durable', path: fresh() }, far: { kind: 'redis', url: 'redis://127.0.0.1:1', connectTimeoutMs: 10_000 } },
      }),
    )
    expect(error).toMatchObject({ code: 'UNSUPPORTED', details: { transport: 'disk' } })
    expect(Date.now() - started).toBeLessThan(2_000)
  })
})
