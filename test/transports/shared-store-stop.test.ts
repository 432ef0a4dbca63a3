/**
 * How a process with shared store namespaces stops (docs/store.md "A namespace across
 * processes", Stopping): child processes (test/fixtures/store-stop.mjs, on the TypeScript under
 * test) open a namespace with `orrery.openStore(...).shared(...)`, write, and stop with
 * `orrery.shutdown()`, `orrery.close()`, `store.close()` then `shutdown()`, or `store.flushed()`
 * then `shutdown()`, never closing anything else: each must end on its own (nothing of the store,
 * a Redis strong namespace's blocking connection included, keeps it alive), and a replicated
 * write made in the same turn as the stop must reach this process. Also: what `shared-error`
 * events carry (an OrreryError: HANDLER_ERROR for a merge function that threw), and a bug in the
 * store's code (a ReferenceError) is INTERNAL, never TRANSPORT_UNAVAILABLE. Both engines; node
 * only (TCP to the brokers, child processes).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { afterEach, describe, expect, inject, it } from 'vitest'

import { isOrreryError, Orrery, type StoreEvent, type TransportOptions } from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { BACKENDS, until, withTimeout } from './backends.js'

const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
let names = 0
const fresh = (what: string) => `sst-${RUN}-${ENGINE}-${++names}-${what}`

const fixture = fileURLToPath(new URL('../fixtures/store-stop.mjs', import.meta.url))
const runSource = fileURLToPath(new URL('../fixtures/run-source.mjs', import.meta.url))
/** How long a child may stay alive after it printed `stopped` (it ends in ~20-70 ms when nothing is left open). */
const EXIT_MS = 5_000

type Stop = 'shutdown' | 'close' | 'store-close' | 'flushed'
type Line = { event: string; code?: string; message?: string; pid: number }

interface Stopping {
  readonly stop: Stop
  readonly proc: ChildProcess
  readonly lines: Line[]
  stderr: string
  /** Resolves once it exited, with its code and the ms from `stopped` to its exit (killed: code null). */
  readonly ended: Promise<{ code: number | null; afterStopMs: number | undefined }>
}

const children: ChildProcess[] = []
const opened: Orrery[] = []
afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL')
  for (const o of opened.splice(0)) await withTimeout(o.shutdown(), 10_000, 'orrery.shutdown()').finally(() => o.close())
})

function urlOf(kind: 'redis' | 'nats'): string {
  return kind === 'redis' ? inject('redisUrl')! : inject('natsUrl')!
}

function transportFor(kind: 'redis' | 'nats'): TransportOptions {
  return kind === 'redis' ? { kind, url: urlOf(kind) } : { kind, servers: urlOf(kind) }
}

/** Starts a child that opens `name` in `mode`, writes `last-<pid>` and stops as `stop` says; killed if alive EXIT_MS after. */
function stopping(kind: 'redis' | 'nats', name: string, mode: 'strong' | 'replicated', stop: Stop): Stopping {
  const proc = spawn(process.execPath, ['--import', runSource, fixture, kind, urlOf(kind), name, mode, stop], {
    env: { ...process.env, ORRERY_ENGINE: ENGINE },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.push(proc)
  let out = ''
  let stoppedAt: number | undefined
  let killer: ReturnType<typeof setTimeout> | undefined
  const child: Stopping = {
    stop,
    proc,
    lines: [],
    stderr: '',
    ended: new Promise((resolve) => {
      proc.on('exit', (code) => {
        clearTimeout(killer)
        resolve({ code, afterStopMs: stoppedAt === undefined ? undefined : Date.now() - stoppedAt })
      })
    }),
  }
  proc.stdout!.setEncoding('utf8')
  proc.stdout!.on('data', (chunk: string) => {
    out += chunk
    const complete = out.split('\n')
    out = complete.pop()!
    for (const line of complete) {
      const parsed = JSON.parse(line) as Line
      child.lines.push(parsed)
      if (parsed.event === 'stopped') {
        stoppedAt = Date.now()
        killer = setTimeout(() => proc.kill('SIGKILL'), EXIT_MS)
      }
    }
  })
  proc.stderr!.setEncoding('utf8')
  proc.stderr!.on('data', (chunk: string) => {
    child.stderr += chunk
  })
  return child
}

/** Waits for each child's end: it printed `stopped` and exited 0 on its own within EXIT_MS. */
async function endedOnTheirOwn(all: Stopping[]): Promise<number[]> {
  const ends = await withTimeout(Promise.all(all.map((c) => c.ended)), 90_000, 'the children to end')
  ends.forEach((end, i) => {
    const child = all[i]!
    const what = `${child.stop}: ${JSON.stringify(child.lines)} ${child.stderr.slice(-1500)}`
    expect(end.afterStopMs, `never stopped: ${what}`).toBeDefined()
    expect(end.code, `still alive ${EXIT_MS} ms after ${child.stop} (killed): ${what}`).toBe(0)
  })
  return ends.map((e) => e.afterStopMs!)
}

for (const backend of BACKENDS.filter((b) => b.name === 'redis' || b.name === 'nats')) {
  const kind = backend.name as 'redis' | 'nats'
  const title = `a process with shared namespaces on ${kind} stops (${ENGINE})${backend.skip ? ` [skipped: ${backend.skip}]` : ''}`
  describe.skipIf(backend.skip !== undefined)(title, { timeout: 120_000 }, () => {
    if (backend.broken !== undefined) {
      it('has its server', () => {
        throw new Error(backend.broken)
      })
      return
    }

    it('strong: the process ends on its own after orrery.shutdown(), orrery.close(), or store.close() then shutdown()', async () => {
      const all = (['shutdown', 'close', 'store-close'] as const).map((stop) => stopping(kind, fresh(`strong-${stop}`), 'strong', stop))
      const ms = await endedOnTheirOwn(all)
      for (const child of all) expect(child.lines.filter((l) => l.event !== 'stopped')).toEqual([])
      console.log(`strong on ${kind} (${ENGINE}): exited ${ms.join(', ')} ms after shutdown / close / store.close+shutdown`)
    })

    it('replicated: a put in the same turn as shutdown() (or store.close() then shutdown(), or after store.flushed()) reaches the other process; close() ends too', async () => {
      const name = fresh('replicated')
      const here = await Orrery.create({ transports: { main: transportFor(kind) } })
      opened.push(here)
      const store = here.openStore({ replica: 'here' })
      const ns = await store.shared<number>(name, { transport: 'main' })
      const all = (['shutdown', 'store-close', 'flushed', 'close'] as const).map((stop) => stopping(kind, name, 'replicated', stop))
      const ms = await endedOnTheirOwn(all)
      // No publish failed in them (they would print a shared-error).
      for (const child of all) expect(child.lines.filter((l) => l.event !== 'stopped')).toEqual([])
      const graceful = all.filter((c) => c.stop !== 'close')
      await until(
        () => graceful.every((c) => ns.get(`last-${c.proc.pid}`)?.value === c.proc.pid),
        10_000,
        'every last write of a graceful stop',
        () => ns.keys(),
      )
      console.log(`replicated on ${kind} (${ENGINE}): exited ${ms.join(', ')} ms after shutdown / store.close+shutdown / flushed+shutdown / close`)
    })

    it('store.flushed() resolves once the broker took every change written so far; a merge function that throws is a HANDLER_ERROR shared-error', async () => {
      const name = fresh('flushed')
      const [a, b] = [await Orrery.create({ transports: { main: transportFor(kind) } }), await Orrery.create({ transports: { main: transportFor(kind) } })]
      opened.push(a, b)
      const sa = a.openStore({ replica: 'a' })
      const sb = b.openStore({ replica: 'b' })
      const codes: string[] = []
      sb.events.subscribe((e: StoreEvent) => {
        // Typed: `error` is an OrreryError, its code read without a cast.
        if (e.type === 'shared-error') codes.push(`${e.operation} ${e.error.code}`)
      })
      const na = await sa.shared<number>(name, { transport: 'main' })
      const nb = await sb.shared<number>(name, {
        transport: 'main',
        merge: (_local, remote) => {
          if (remote === 13) throw new Error('unlucky')
          return remote ?? 0
        },
      })
      na.put('k', 1)
      await sa.flushed()
      await until(() => nb.get('k')?.value === 1, 10_000, 'b to merge k')
      na.put('k', 13)
      await sa.flushed()
      await until(() => codes.length === 1, 10_000, "b's shared-error")
      expect(codes).toEqual(['merge HANDLER_ERROR'])
      expect(nb.get('k')?.value).toBe(1)
      // Once a's Orrery shut down, its store is closed: it kept nothing open.
      await a.shutdown()
      expect(() => na.get('k')).toThrow(expect.objectContaining({ code: 'CLOSED' }))
    })
  })
}

const redis = BACKENDS.find((b) => b.name === 'redis')!
describe.skipIf(redis.skip !== undefined || redis.broken !== undefined)(`a bug in a strong namespace's code is not a broker failure (${ENGINE})`, () => {
  it('a ReferenceError in a write or a read is INTERNAL (its cause), never TRANSPORT_UNAVAILABLE or indeterminate; the namespace works after', async () => {
    const o = await Orrery.create({ transports: { main: transportFor('redis') } })
    opened.push(o)
    const store = o.openStore({ replica: 'a' })
    // The change feed meets the bug too (node-redis encodes with Buffer): reported, as INTERNAL.
    const reported: string[] = []
    store.events.subscribe((e) => reported.push(`${e.type} ${e.type === 'shared-error' ? e.error.code : ''}`))
    const ns = await store.shared<number>(fresh('bug'), { transport: 'main', consistency: 'strong' })
    const v = await ns.put('k', 1)
    // The Redis namespace's code uses Node's Buffer (a page has none: that was the bug there).
    const g = globalThis as { Buffer?: unknown }
    const saved = g.Buffer
    const failures: unknown[] = []
    try {
      delete g.Buffer
      failures.push(await ns.put('k', 2, { ifVersion: v }).catch((e: unknown) => e))
      failures.push(await ns.fetch('k').catch((e: unknown) => e))
    } finally {
      g.Buffer = saved
    }
    for (const error of failures) {
      expect(isOrreryError(error, 'INTERNAL'), String(error)).toBe(true)
      expect((error as Error).cause).toBeInstanceOf(ReferenceError)
      expect((error as { details: Record<string, unknown> }).details['indeterminate']).toBeUndefined()
    }
    expect(reported.filter((r) => r !== 'shared-error INTERNAL')).toEqual([])
    expect((await ns.fetch('k'))?.value).toBe(1)
    expect(await ns.put('k', 3, { ifVersion: v })).toBeGreaterThan(v)
  })
})
