/**
 * A Redis server restarts in the middle of a stream (`scripts/servers.sh restart redis-spare`: it keeps
 * its data, fsyncing every write): every publish Redis acknowledged reaches the consumer group and
 * the subscriber afterwards, and both resume on their own. Publishes made while the server was down
 * are retried in order until written: the restart takes seconds, the publish timeout 30 s, so none fails.
 * The server restarted is a spare one (port 16380) this file starts for itself, so the other files using
 * the shared Redis at the same time never see the outage.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { Orrery } from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { BACKENDS, listen, range, until, useBackend, withTimeout } from './backends.js'

const shared = BACKENDS.find((b) => b.name === 'redis')!
const SPARE_URL = 'redis://127.0.0.1:16380'
const redis = {
  ...shared,
  open: (prefix: string) => Orrery.create({ transports: { main: { kind: 'redis', url: SPARE_URL } }, bindings: { [`${prefix}*`]: 'main' } }),
}

/** Runs scripts/servers.sh with `args` from the repository's root. */
async function servers(...args: string[]): Promise<string> {
  // Node-only modules, loaded here: the browser project skips this file's suite.
  const { execFile } = await import('node:child_process')
  const { fileURLToPath } = await import('node:url')
  const root = fileURLToPath(new URL('../..', import.meta.url))
  return new Promise((resolve, reject) => {
    execFile('bash', ['scripts/servers.sh', ...args], { cwd: root, timeout: 60_000 }, (error, stdout, stderr) =>
      error ? reject(new Error(`scripts/servers.sh ${args.join(' ')} failed: ${error.message}\n${stderr}`)) : resolve(stdout),
    )
  })
}
const title = `redis restarted mid-stream (${ENGINE})${redis.skip ? ` [skipped: ${redis.skip}]` : ''}`

describe.skipIf(redis.skip !== undefined)(title, () => {
  if (redis.broken !== undefined) {
    it('has its server', () => {
      throw new Error(redis.broken)
    })
    return
  }
  // The spare server is this file's: started for this worker, stopped when no run still uses it.
  beforeAll(() => servers('start', '--for', String(process.pid), 'redis-spare'), 60_000)
  afterAll(() => servers('stop', '--for', String(process.pid), 'redis-spare'), 60_000)
  const fresh = useBackend(redis)

  it('loses no acknowledged publish; the group and the subscriber resume on their own', { timeout: 240_000 }, async () => {
    const restartRedis = (): Promise<string> => servers('restart', 'redis-spare')

    const t = fresh()
    const producer = await t.open()
    const consumer = await t.open()
    const ch = t.ch('stream')
    const handled = new Map<string, number>()
    consumer.bus.group<number>(ch, 'workers').consume(
      (d) => {
        handled.set(d.message.id, (handled.get(d.message.id) ?? 0) + 1)
      },
      { maxInFlight: 16 },
    )
    const mirror = listen(consumer.bus.subscribe<number>(ch))

    const acked: string[] = []
    const failed: Array<{ i: number; afterMs: number; error: unknown }> = []
    const writes: Array<Promise<void>> = []
    let restarting = false
    let duringRestart = 0
    let slowest = 0
    const publish = (i: number): void => {
      const at = Date.now()
      if (restarting) duringRestart++
      writes.push(
        producer.bus.publish(ch, i, { id: `m-${i}` }).then(
          (r) => {
            slowest = Math.max(slowest, Date.now() - at)
            if (r.published) acked.push(r.id)
          },
          (error: unknown) => {
            failed.push({ i, afterMs: Date.now() - at, error })
          },
        ),
      )
    }

    // A stream over time: 10 publishes every 10 ms; the server restarts once the group is busy.
    let restarted: Promise<string> | undefined
    const total = 600
    for (let i = 0; i < total; i++) {
      publish(i)
      if (i === 150) {
        await until(
          () => handled.size >= 100,
          30_000,
          'the group to be consuming before the restart',
          () => handled.size,
        )
        restarting = true
        restarted = restartRedis().finally(() => {
          restarting = false
        })
      }
      if (i % 10 === 9) await new Promise((resolve) => setTimeout(resolve, 10))
    }
    await withTimeout(restarted!, 90_000, 'the restart')
    await withTimeout(Promise.all(writes), 90_000, 'the publishes made around the restart')
    // After the restart: the same instances go on without being told.
    for (const i of range(total, total + 50)) publish(i)
    await withTimeout(Promise.all(writes), 60_000, 'the publishes after the restart')

    // The server is back within seconds, far inside publishTimeoutMs (30 s by default): every write
    // made while it was down is retried until written, none fails.
    const failures = failed.map(({ i, afterMs, error }) => ({ i, afterMs, code: (error as { code?: string }).code, message: (error as Error).message }))
    expect.soft(failures.slice(0, 5), `${failures.length} publishes failed`).toEqual([])
    expect.soft(acked.length).toBe(total + 50)
    const lostByGroup = (): string[] => acked.filter((id) => !handled.has(id))
    await until(
      () => lostByGroup().length === 0,
      60_000,
      'every acknowledged publish at the group',
      () => ({ missing: lostByGroup().slice(0, 20), count: lostByGroup().length }),
    )
    const seen = new Set(mirror.items.map((m) => m.id))
    const lostBySubscriber = (): string[] => acked.filter((id) => !seen.has(id))
    await until(
      () => {
        for (const m of mirror.items) seen.add(m.id)
        return lostBySubscriber().length === 0
      },
      60_000,
      'every acknowledged publish at the subscriber',
      () => ({ missing: lostBySubscriber().slice(0, 20), count: lostBySubscriber().length }),
    )
    expect(lostByGroup()).toEqual([])
    expect(lostBySubscriber()).toEqual([])
    // Each publisher's order holds for the subscriber, across the restart.
    const order = mirror.items.map((m) => m.payload)
    const firsts = order.filter((p, i) => order.indexOf(p) === i)
    expect(firsts).toEqual([...firsts].sort((a, b) => a - b))
    const duplicates = [...handled.values()].filter((n) => n > 1).length
    // The restart did happen mid-stream: publishes were made while it ran.
    expect(duringRestart).toBeGreaterThan(0)
    console.info(
      `restart: ${acked.length} acknowledged, ${duringRestart} published while the server restarted, slowest publish ${slowest} ms, ${failed.length} failed, ${duplicates} handled more than once (at-least-once)`,
    )
  })
})
