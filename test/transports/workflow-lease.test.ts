/**
 * Workflows across processes (docs/workflows.md "Workflows across processes"): histories in a
 * strong shared namespace, one owner lease per run. On redis and nats: two workflows in one
 * process share a run (one drives it, the other takes it over when the first closes); a process
 * SIGKILLed mid-run leaves its runs to another once their leases run out (every run completes,
 * each step's completion recorded once, the seqs without a gap; the takeover latency is printed);
 * a stale owner whose lease was taken is refused by the history's create-only records and stops;
 * an owner that sees its lease taken on the change feed stops at once; a process that does not
 * drive a run signals, cancels, follows and awaits it through the broker, and a signal sent while
 * nobody drives the run is given once by the process that takes it over; a continueAsNew chain
 * and queued runs under maxConcurrentRuns go on in the taker.
 * Then the refusals: typed codes. Both engines; node only (TCP to the brokers).
 */
import { fileURLToPath } from 'node:url'

import { lastValueFrom, toArray } from 'rxjs'
import { afterEach, describe, expect, inject, it } from 'vitest'

import {
  branch,
  continueAsNew,
  isOrreryError,
  Orrery,
  parallel,
  sequence,
  step,
  waitFor,
  when,
  workflow,
  type TransportOptions,
  type WorkflowEvent,
  type WorkflowRun,
  type Workflows,
} from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { BACKENDS, until, withTimeout } from './backends.js'
import { type Child, spawnChild } from './child.js'

const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
let names = 0
/** A namespace name no other test or run uses on the shared servers. */
const fresh = (what: string) => `wl-${RUN}-${ENGINE}-${++names}-${what}`

function transportFor(kind: 'redis' | 'nats' | 'kafka'): TransportOptions {
  if (kind === 'redis') return { kind: 'redis', url: inject('redisUrl')! }
  if (kind === 'nats') return { kind: 'nats', servers: inject('natsUrl')! }
  return { kind: 'kafka', brokers: inject('kafkaBrokers')! }
}

const opened: Orrery[] = []
const children: Array<Child<Line>> = []
afterEach(async () => {
  for (const child of children.splice(0)) if (child.proc.exitCode === null) child.proc.kill('SIGKILL')
  for (const o of opened.splice(0)) {
    try {
      await withTimeout(o.shutdown(), 10_000, 'orrery.shutdown()')
    } finally {
      o.close()
    }
  }
})

async function orreryOn(kind: 'redis' | 'nats' | 'kafka'): Promise<Orrery> {
  const o = await Orrery.create({ transports: { main: transportFor(kind) } })
  opened.push(o)
  return o
}

/**
 * Workflows named `owner` on the shared namespace `name` (transport `main`), their functions and
 * definitions given by `setup`; a lease long enough that none runs out unless `leaseMs` is given.
 */
async function sharedOn(
  o: Orrery,
  store: ReturnType<Orrery['openStore']>,
  name: string,
  owner: string,
  setup: (wf: Workflows) => void,
  options: { leaseMs?: number; resume?: boolean } = {},
): Promise<Workflows> {
  const { leaseMs = 60_000, resume } = options
  const wf = await o.workflows({ store, namespace: name, ...(resume === undefined ? {} : { resume }), shared: { transport: 'main', leaseMs, owner } })
  setup(wf)
  return wf
}

/** Three steps in a row, each `fn`. */
const threeSteps = workflow(
  'three',
  sequence(step('a', { fn: 'work' }, { input: '$input' }), step('b', { fn: 'work' }, { input: '$steps.a' }), step('c', { fn: 'work' }, { input: '$steps.b' })),
  { output: '$steps.c' },
)

/** Waits for signal `go`, then doubles its payload. */
const gate = workflow('gate', sequence(waitFor('wait', 'go'), step('double', { fn: 'double' }, { input: '$steps.wait' })), { output: '$steps.double' })

/** Adds one in each generation, up to 6. */
const chain = workflow(
  'chain',
  sequence(
    step('inc', { fn: 'inc' }, { input: '$input' }),
    branch([when({ path: '$steps.inc', op: 'lt', value: 6 }, continueAsNew('again', { input: '$steps.inc' }))]),
  ),
  { output: '$steps.inc' },
)

/** One step: `work` on the input. */
const job = workflow('job', step('work', { fn: 'work' }, { input: '$input' }))

/** What a run's history says: each step's completions, and whether its seqs run 1, 2, 3… without a gap. */
function audit(events: readonly WorkflowEvent[]): { completed: Record<string, number>; contiguous: boolean; finished: number } {
  const completed: Record<string, number> = {}
  for (const e of events) if (e.type === 'step-completed' && e.outcome === 'ok') completed[e.step] = (completed[e.step] ?? 0) + 1
  return {
    completed,
    contiguous: events.every((e, i) => e.seq === i + 1),
    finished: events.filter((e) => e.type === 'run-finished').length,
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** What workflows keep for runs that are not theirs now (internals: failed writes, tenures, rests). */
function leftovers(wf: Workflows): number {
  const inner = wf as unknown as {
    history: { failed?: Map<string, unknown> }
    shared: { history: { tenures: Map<string, unknown> }; leases: { resting: Map<string, number> } }
  }
  return (inner.history.failed?.size ?? 0) + inner.shared.history.tenures.size + inner.shared.leases.resting.size
}

type Line = { event: string; pid: number; key?: string; at?: number; again?: boolean }
const fixture = fileURLToPath(new URL('../fixtures/workflow-lease.mjs', import.meta.url))

for (const backend of BACKENDS.filter((b) => b.name === 'redis' || b.name === 'nats')) {
  const kind = backend.name as 'redis' | 'nats'
  const title = `workflows across processes on ${kind} (${ENGINE})${backend.skip ? ` [skipped: ${backend.skip}]` : ''}`
  describe.skipIf(backend.skip !== undefined)(title, { timeout: 60_000 }, () => {
    if (backend.broken !== undefined) {
      it('has its server', () => {
        throw new Error(backend.broken)
      })
      return
    }

    it('two workflows on one namespace: one drives a run, the other takes it over when the first closes; no step completes twice', async () => {
      const name = fresh('pair')
      const o = await orreryOn(kind)
      const store = o.openStore()
      const calls: Array<{ by: string; key: string; at: number }> = []
      const open = (by: string): Promise<Workflows> =>
        sharedOn(
          o,
          store,
          name,
          by,
          (wf) => {
            wf.register('work', async (input: number, ctx) => {
              calls.push({ by, key: ctx.idempotencyKey, at: Date.now() })
              await sleep(600)
              return input + 1
            })
            wf.define(threeSteps)
          },
          { leaseMs: 1_000 },
        )
      const a = await open('a')
      const b = await open('b')
      const run = await a.start(threeSteps, 10, { id: 'pair-1' })
      await until(() => calls.some((c) => c.key === 'pair-1/b'), 10_000, 'a to begin step b')
      // Past a renewal (a third of the lease) and step a's completion: b still drives nothing.
      await sleep(400)
      expect(calls.filter((c) => c.by === 'b')).toEqual([])
      const closedAt = Date.now()
      a.close()
      await expect(run.result()).rejects.toSatisfy((e: unknown) => isOrreryError(e, 'CLOSED'))
      await until(
        () => b.get('pair-1')?.status() === 'completed',
        10_000,
        'b to complete the run',
        () => ({ calls, status: b.get('pair-1')?.status() }),
      )
      expect(await b.get('pair-1')!.result()).toBe(13)
      // b ran what was in flight (b, under the same key) and what was left (c), never a again.
      expect(calls.map((c) => `${c.by}:${c.key}`)).toEqual(expect.arrayContaining(['a:pair-1/a', 'a:pair-1/b', 'b:pair-1/b', 'b:pair-1/c']))
      expect(calls.filter((c) => c.key === 'pair-1/a')).toHaveLength(1)
      const history = audit(b.get('pair-1')!.history())
      expect(history).toEqual({ completed: { a: 1, b: 1, c: 1 }, contiguous: true, finished: 1 })
      // A closing process gives its leases up: the other takes over at once, not after the lease.
      const takenAfter = calls.find((c) => c.by === 'b')!.at - closedAt
      expect(takenAfter).toBeLessThan(1_000)
      console.log(`[lease ${kind} ${ENGINE}] in-process takeover after close: ${takenAfter} ms`)
      b.close()
    })

    it('two processes start the same run ids at once: both starts are the one run, recorded once; a loser takes runs over later', async () => {
      const name = fresh('race')
      const open = async (owner: string): Promise<{ o: Orrery; wf: Workflows }> => {
        const o = await orreryOn(kind)
        const wf = await sharedOn(
          o,
          o.openStore(),
          name,
          owner,
          (wf) => {
            wf.register('work', async (input: number) => {
              await sleep(20)
              return input * 2
            })
            wf.register('double', (n: number) => n * 2)
            wf.define(job)
            wf.define(gate)
          },
          // A run lost here rests a third of this before this process may take it over.
          { leaseMs: 3_000 },
        )
        return { o, wf }
      }
      const both = await Promise.all([open('a'), open('b')])
      const [a, b] = both.map((p) => p.wf) as [Workflows, Workflows]
      const ids = Array.from({ length: 20 }, (_, i) => `race-${i}`)
      // Each id started by both at once (each first in turn): one drives it, the other's start is that run.
      const pairs = await Promise.all(
        ids.map(async (id, i) => {
          const [first, second] = i % 2 === 0 ? [a, b] : [b, a]
          const runs = await Promise.all([first.start(job, i, { id }), second.start(job, i, { id })])
          return i % 2 === 0 ? runs : runs.reverse()
        }),
      )
      for (const [i, [fromA, fromB]] of pairs.entries()) {
        expect(fromA!.id).toBe(ids[i])
        expect(fromB!.id).toBe(ids[i])
        expect(await fromA!.result()).toBe(i * 2)
        expect(await fromB!.result()).toBe(i * 2)
      }
      for (const id of ids) {
        await until(() => a.get(id)?.status() === 'completed' && b.get(id)?.status() === 'completed', 5_000, `both mirrors to hold ${id} completed`)
        expect(audit(a.get(id)!.history())).toEqual({ completed: { work: 1 }, contiguous: true, finished: 1 })
        expect(a.get(id)!.history()).toEqual(b.get(id)!.history())
      }
      // Nothing is kept for a run once it ended, here or elsewhere (a process starting ids other
      // processes start too would grow without end): no failed write, no tenure, no rest.
      await until(
        () => [a, b].every((wf) => leftovers(wf) === 0),
        5_000,
        'nothing kept for the ended runs',
        () => [a, b].map(leftovers),
      )
      // The same with runs that wait. Then the process that drives more of them closes, and the
      // other takes them over (runs whose start it lost) and records all of them.
      const gates = Array.from({ length: 10 }, (_, i) => `gate-${i}`)
      const waiting = await Promise.all(gates.map((id) => Promise.all([a.start(gate, undefined, { id }), b.start(gate, undefined, { id })])))
      const leases = await both[0]!.o.openStore().shared<{ owner: string }>(name, { transport: 'main', consistency: 'strong', codec: 'msgpack' })
      const owners = () => gates.map((id) => leases.get(`owner/${id}`)?.value.owner)
      await until(() => owners().every((owner) => owner !== undefined), 5_000, 'every gate run to have its lease')
      const wonByA = owners().filter((owner) => owner === 'a').length
      const [closer, taker, takerAt] = wonByA >= 5 ? [a, b, 1] : [b, a, 0]
      await until(() => gates.every((id) => taker.get(id) !== undefined), 5_000, 'the taker to see every gate run')
      await closer.flushed()
      closer.close()
      for (const [i, id] of gates.entries()) await taker.get(id)!.signal('go', i)
      for (const [i, runs] of waiting.entries()) expect(await withTimeout(runs[takerAt]!.result(), 10_000, `${gates[i]}'s result`)).toBe(i * 2)
      for (const id of gates) {
        expect(taker.get(id)!.status()).toBe('completed')
        expect(audit(taker.get(id)!.history())).toEqual({ completed: { double: 1 }, contiguous: true, finished: 1 })
      }
      taker.close()
    })

    it('a start takes over a lease that ran out with no run written (its process died in between); one still held refuses it', async () => {
      const name = fresh('ghost')
      const o = await orreryOn(kind)
      const store = o.openStore()
      const wf = await sharedOn(o, store, name, 'live', (wf) => {
        wf.register('work', (n: number) => n + 1)
        wf.define(job)
      })
      const leases = await store.shared<{ owner: string; until: number }>(name, { transport: 'main', consistency: 'strong', codec: 'msgpack' })
      await leases.put('owner/ghost-1', { owner: 'ghost', until: Date.now() - 1 })
      const run = await withTimeout(wf.start(job, 1, { id: 'ghost-1' }), 5_000, 'the start')
      expect(await run.result()).toBe(2)
      expect(audit(run.history())).toEqual({ completed: { work: 1 }, contiguous: true, finished: 1 })
      // A lease still held (its process alive, its run record on the way): the start waits for
      // the record a lease's length (here 60 s: not reached), so the test only checks it is not taken.
      await leases.put('owner/ghost-2', { owner: 'ghost', until: Date.now() + 60_000 })
      void wf.start(job, 1, { id: 'ghost-2' }).catch(() => {})
      await sleep(300)
      expect(leases.get('owner/ghost-2')?.value.owner).toBe('ghost')
      expect(wf.get('ghost-2')).toBeUndefined()
      wf.close()
    })

    it('events too large together for one record go to the broker as two, read back the same elsewhere', async () => {
      const name = fresh('halves')
      const o = await orreryOn(kind)
      const store = o.openStore({ maxValueBytes: 64 * 1024 })
      const part = 'p'.repeat(40 * 1024)
      const two = workflow(
        'two',
        sequence(parallel([step('a', { fn: 'part' }), step('b', { fn: 'part' })]), step('n', { fn: 'sizes' }, { input: { a: '$steps.a', b: '$steps.b' } })),
      )
      const open = (owner: string) =>
        sharedOn(o, store, name, owner, (wf) => {
          wf.register('part', () => part)
          wf.register('sizes', (v: { a: string; b: string }) => v.a.length + v.b.length)
          wf.define(two)
        })
      const wf = await open('one')
      // The two completions come in one macrotask: together they are over the limit.
      const run = await wf.start(two, null, { id: 'halves-1' })
      expect(await run.result()).toBe(80 * 1024)
      const history = run.history()
      expect(audit(history)).toEqual({ completed: { a: 1, b: 1, n: 1 }, contiguous: true, finished: 1 })
      const other = await open('other')
      await until(() => other.get('halves-1')?.status() === 'completed', 5_000, 'the other to see the run ended')
      expect(other.get('halves-1')!.history()).toEqual(history)
      wf.close()
      other.close()
    })

    it('a stale owner (its lease taken while it was held up) is refused by the create-only history and stops', async () => {
      const name = fresh('fence')
      const o = await orreryOn(kind)
      const store = o.openStore()
      let release!: () => void
      const held = new Promise<void>((resolve) => {
        release = resolve
      })
      const done: string[] = []
      // A long lease: the stale owner renews nothing during the test, so only the history can stop it.
      const stale = await o.workflows({ store, namespace: name, resume: false, shared: { transport: 'main', leaseMs: 60_000, owner: 'stale' } })
      stale.register('work', async (input: number, ctx) => {
        if (ctx.step === 'b') await held
        done.push(`stale:${ctx.step}`)
        return input + 1
      })
      stale.define(threeSteps)
      const taker = await o.workflows({ store, namespace: name, shared: { transport: 'main', leaseMs: 60_000, owner: 'taker' } })
      taker.register('work', (input: number, ctx) => {
        done.push(`taker:${ctx.step}`)
        return input + 1
      })
      taker.define(threeSteps)
      const run = await stale.start(threeSteps, 0, { id: 'fence-1' })
      await until(
        () => done.includes('stale:a') && run.history().some((e) => e.type === 'step-started' && e.step === 'b'),
        10_000,
        'the stale owner to begin b',
      )
      await stale.flushed()
      // The lease forced over, as if it ran out while the owner was held up (a GC pause, a frozen VM).
      const leases = await store.shared<{ owner: string; until: number }>(name, { transport: 'main', consistency: 'strong', codec: 'msgpack' })
      await leases.put('owner/fence-1', { owner: 'stale', until: 0 })
      await until(
        () => taker.get('fence-1')?.status() === 'completed',
        10_000,
        'the taker to complete the run',
        () => done,
      )
      // Now the stale owner's step b ends and it records its completion: refused, and it stops.
      release()
      // The handle follows the run to the taker, which completed it.
      expect(await run.result()).toBe(3)
      expect(run.status()).toBe('completed')
      expect(done).toEqual(['stale:a', 'taker:b', 'taker:c', 'stale:b'])
      expect(audit(taker.get('fence-1')!.history())).toEqual({ completed: { a: 1, b: 1, c: 1 }, contiguous: true, finished: 1 })
      expect(await taker.get('fence-1')!.result()).toBe(3)
      // The stale owner drives it no more: nothing more of its runs is written or run.
      await sleep(200)
      expect(done).toHaveLength(4)
      stale.close()
      taker.close()
    })

    it('a lease another owner takes stops the run here at once (the change feed): its step in flight is not recorded; its handle follows the run', async () => {
      const name = fresh('taken')
      const o = await orreryOn(kind)
      const store = o.openStore()
      let release!: () => void
      const held = new Promise<void>((resolve) => {
        release = resolve
      })
      const done: string[] = []
      const wf = await o.workflows({ store, namespace: name, resume: false, shared: { transport: 'main', leaseMs: 60_000, owner: 'first' } })
      wf.register('work', async (input: number, ctx) => {
        if (ctx.step === 'b') await held
        done.push(ctx.step)
        return input + 1
      })
      wf.define(threeSteps)
      const run = await wf.start(threeSteps, 0, { id: 'taken-1' })
      await until(() => run.history().some((e) => e.type === 'step-started' && e.step === 'b'), 10_000, 'step b to begin')
      await wf.flushed()
      const leases = await store.shared<{ owner: string; until: number }>(name, { transport: 'main', consistency: 'strong', codec: 'msgpack' })
      const before = leases.get('owner/taken-1')!
      expect(before.value.owner).toBe('first')
      const events = lastValueFrom(run.events.pipe(toArray()))
      const result = run.result()
      await leases.put('owner/taken-1', { owner: 'second', until: Date.now() + 60_000 })
      // It stops here at once: its events end (nothing of b).
      expect((await events).map((e) => e.type)).toEqual([])
      // Its step b ends after that: nothing of it is recorded, nothing more runs, the lease stays the taker's.
      release()
      await wf.flushed()
      await sleep(200)
      expect(done).toEqual(['a', 'b'])
      const stored = wf.get('taken-1')!
      expect(audit(stored.history()).completed).toEqual({ a: 1 })
      expect(leases.get('owner/taken-1')?.value.owner).toBe('second')
      // The handle taken before follows the run: a cancel goes through the broker to whoever drives
      // it next, and the result waited for since then settles with that.
      expect(run.status()).toBe('running')
      await run.cancel()
      const next = await o.workflows({ store: o.openStore(), namespace: name, shared: { transport: 'main', leaseMs: 60_000, owner: 'third' } })
      next.register('work', (input: number) => input + 1)
      next.define(threeSteps)
      await leases.put('owner/taken-1', { owner: 'second', until: 0 })
      await expect(result).rejects.toSatisfy((e: unknown) => isOrreryError(e, 'RUN_CANCELLED'))
      expect(run.status()).toBe('cancelled')
      expect(done).toEqual(['a', 'b'])
      next.close()
      wf.close()
    })

    it('a signal given where the run is driven carries a request id: sent again under it after a takeover, it is given once', async () => {
      const name = fresh('again')
      const o = await orreryOn(kind)
      const store = o.openStore()
      const twoGates = workflow('two-gates', sequence(waitFor('w1', 'go'), waitFor('w2', 'go')), { output: '$steps.w2' })
      const wf = await sharedOn(o, store, name, 'first', (w) => w.define(twoGates))
      const run = await wf.start(twoGates, undefined, { id: 'again-1' })
      await run.signal('go', 1)
      const [first] = run.history().filter((e) => e.type === 'signal')
      const request = first?.type === 'signal' ? first.request : undefined
      expect(request).toMatch(/^req\/again-1\/[^/]+$/)
      // What the handle sends through the broker when a takeover refused the signal's write: the
      // same request, marked as given before. Recorded already, it is deleted and not given again.
      const ns = await store.shared<unknown>(name, { transport: 'main', consistency: 'strong', codec: 'msgpack' })
      await ns.create(request!, { signal: 'go', payload: 1, again: true })
      await until(() => ns.get(request!) === undefined, 5_000, 'the request sent again to be deleted')
      await sleep(100)
      expect(run.status()).toBe('running')
      expect(run.history().filter((e) => e.type === 'signal')).toHaveLength(1)
      // One sent again that the run did not record is given, once.
      const other = `req/again-1/resent${Date.now().toString(36)}`
      await ns.create(other, { signal: 'go', payload: 2, again: true })
      expect(await run.result()).toBe(2)
      expect(
        run
          .history()
          .filter((e) => e.type === 'signal')
          .map((e) => (e.type === 'signal' ? [e.payload, e.request] : [])),
      ).toEqual([
        [1, request],
        [2, other],
      ])
      await until(() => ns.keys('req/').length === 0, 5_000, 'the requests to be deleted')
      wf.close()
    })

    it('a signal given to a run here as another owner takes its lease reaches the run once, here or through the broker', async () => {
      const name = fresh('signal-taken')
      const o = await orreryOn(kind)
      const store = o.openStore()
      const wf = await sharedOn(o, store, name, 'first', (w) => {
        w.register('double', (n: number) => n * 2)
        w.define(gate)
      })
      const run = await wf.start(gate, undefined, { id: 'signal-taken-1' })
      await wf.flushed()
      const leases = await store.shared<{ owner: string; until: number }>(name, { transport: 'main', consistency: 'strong', codec: 'msgpack' })
      await leases.put('owner/signal-taken-1', { owner: 'second', until: Date.now() + 60_000 })
      // The change feed has not told this process yet: the signal is given here, and its write
      // lands or is refused (then it goes through the broker).
      const given = run.signal('go', 5)
      const result = run.result()
      await given
      const next = await o.workflows({ store: o.openStore(), namespace: name, shared: { transport: 'main', leaseMs: 60_000, owner: 'third' } })
      next.register('double', (n: number) => n * 2)
      next.define(gate)
      await leases.put('owner/signal-taken-1', { owner: 'second', until: 0 })
      expect(await result).toBe(10)
      const events = next.get('signal-taken-1')!.history()
      expect(events.filter((e) => e.type === 'signal')).toHaveLength(1)
      expect(audit(events)).toEqual({ completed: { double: 1 }, contiguous: true, finished: 1 })
      next.close()
      wf.close()
    })

    it('a process that does not drive a run signals it, cancels it, follows its events and awaits its result, through the broker', async () => {
      const name = fresh('remote')
      const o = await orreryOn(kind)
      const store = o.openStore()
      const open = (owner: string): Promise<Workflows> =>
        sharedOn(o, store, name, owner, (wf) => {
          wf.register('double', (n: number) => n * 2)
          wf.define(gate)
        })
      const driver = await open('driver')
      const other = await open('other')
      // The other process's control tells each status the driver records, from its mirror.
      const told: { id: string; status: string }[] = []
      const watching = o
        .control({ workflows: other })
        .events()
        .subscribe((e) => {
          if (e.source === 'run') told.push({ id: e.run.id, status: e.run.status })
        })
      const run = await driver.start(gate, undefined, { id: 'remote-1' })
      // The other process's mirror has the run once the change feed brings it.
      await until(() => other.get('remote-1') !== undefined, 5_000, 'the other process to see the run')
      const there = other.get('remote-1')!
      expect(there.status()).toBe('running')
      const seen: string[] = []
      const followed = new Promise<void>((resolve) => there.events.subscribe({ next: (e) => seen.push(e.type), complete: resolve }))
      const result = there.result()
      await there.signal('go', 21)
      expect(await result).toBe(42)
      expect(await run.result()).toBe(42)
      await followed
      expect(seen).toEqual(expect.arrayContaining(['signal', 'step-completed', 'run-finished']))
      await until(() => told.some((r) => r.id === 'remote-1' && r.status === 'completed'), 5_000, 'the control to tell the end')
      expect(told.filter((r) => r.id === 'remote-1').map((r) => r.status)).toEqual(['running', 'completed'])
      watching.unsubscribe()
      // Recorded once, with the id of the request that brought it; the request is gone from the broker.
      const signals = run.history().filter((e) => e.type === 'signal')
      expect(signals).toEqual([expect.objectContaining({ name: 'go', payload: 21, request: expect.stringMatching(/^req\/remote-1\//) })])
      const ns = await store.shared<unknown>(name, { transport: 'main', consistency: 'strong', codec: 'msgpack' })
      await until(() => ns.keys('req/').length === 0, 5_000, 'the request to be deleted')

      // A cancel from the other process ends the run cancelled, on both sides.
      const doomed = await driver.start(gate, undefined, { id: 'remote-2' })
      await until(() => other.get('remote-2') !== undefined, 5_000, 'the other process to see the run')
      const doomedThere = other.get('remote-2')!
      await doomedThere.cancel()
      await expect(doomed.result()).rejects.toSatisfy((e: unknown) => isOrreryError(e, 'RUN_CANCELLED'))
      await expect(doomedThere.result()).rejects.toSatisfy((e: unknown) => isOrreryError(e, 'RUN_CANCELLED'))
      expect(other.get('remote-2')!.status()).toBe('cancelled')

      // Bad input is refused at once in the sender, nothing sent: the same codes as on a run driven here.
      const waiting = await driver.start(gate, undefined, { id: 'remote-3' })
      await until(() => other.get('remote-3') !== undefined && ns.keys('req/').length === 0, 5_000, 'the run to be seen and the cancel taken')
      const waitingThere = other.get('remote-3')!
      const code = (call: () => unknown) => {
        try {
          call()
        } catch (error) {
          return isOrreryError(error) ? error.code : String(error)
        }
        return 'no error'
      }
      expect(code(() => waitingThere.signal('nope' as never, 1))).toBe('SIGNAL_UNKNOWN')
      // A lone surrogate: no UTF-8 for it.
      expect(code(() => waitingThere.signal('go', '\ud800'))).toBe('INVALID_PAYLOAD')
      expect(code(() => waiting.signal('nope' as never, 1))).toBe('SIGNAL_UNKNOWN')
      expect(code(() => waiting.signal('go', '\ud800'))).toBe('INVALID_PAYLOAD')
      await sleep(100)
      expect(ns.keys('req/')).toEqual([])
      expect(waiting.status()).toBe('running')
      // A run that ended: nothing is sent, as on a run driven here.
      await expect(other.get('remote-1')!.signal('go', 1)).resolves.toBeUndefined()
      expect(ns.keys('req/')).toEqual([])
      // One sent by a process whose mirror was behind (the run had ended): deleted, given to nobody.
      await ns.create('req/remote-1/late', { signal: 'go', payload: 1 })
      await until(() => ns.keys('req/').length === 0, 5_000, 'the late request to be deleted')
      expect(run.history().filter((e) => e.type === 'signal')).toHaveLength(1)
      // Closing the follower's workflows: its waiters hear CLOSED.
      const pending = waitingThere.result()
      other.close()
      await expect(pending).rejects.toSatisfy((e: unknown) => isOrreryError(e, 'CLOSED'))
      driver.close()
    })

    it('a signal sent while nobody drives the run waits on the broker; the process that takes the run over gives it once', async () => {
      const name = fresh('orphan')
      const o = await orreryOn(kind)
      const store = o.openStore()
      const open = (owner: string, resume: boolean): Promise<Workflows> =>
        sharedOn(
          o,
          store,
          name,
          owner,
          (wf) => {
            wf.register('double', (n: number) => n * 2)
            wf.define(gate)
          },
          { resume },
        )
      const first = await open('first', false)
      const sender = await open('sender', false)
      await first.start(gate, undefined, { id: 'orphan-1' })
      await first.flushed()
      // The owner closes: its lease is given up, and nobody here resumes runs.
      first.close()
      await first.released
      await until(() => sender.get('orphan-1') !== undefined, 5_000, 'the sender to see the run')
      const there = sender.get('orphan-1')!
      await there.signal('go', 5)
      await sleep(300)
      expect(there.status()).toBe('running')
      const result = there.result()
      const taker = await open('taker', true)
      expect(await result).toBe(10)
      const events = taker.get('orphan-1')!.history()
      expect(events.filter((e) => e.type === 'signal')).toHaveLength(1)
      expect(audit(events)).toEqual({ completed: { double: 1 }, contiguous: true, finished: 1 })
      const ns = await store.shared<unknown>(name, { transport: 'main', consistency: 'strong', codec: 'msgpack' })
      await until(() => ns.keys('req/').length === 0, 5_000, 'the request to be deleted')
      sender.close()
      taker.close()
    })

    it('continueAsNew: a chain of generations goes on in the process that takes it over; earlier generations leave the broker', async () => {
      const name = fresh('chain')
      const o = await orreryOn(kind)
      const store = o.openStore()
      const calls: Array<{ by: string; key: string }> = []
      const open = (by: string): Promise<Workflows> =>
        sharedOn(o, store, name, by, (wf) => {
          wf.register('inc', async (n: number, ctx) => {
            calls.push({ by, key: ctx.idempotencyKey })
            await sleep(100)
            return n + 1
          })
          wf.define(chain)
        })
      const a = await open('a')
      const b = await open('b')
      const run = await a.start(chain, 0, { id: 'chain-1' })
      await until(() => run.generation >= 3, 10_000, 'a to reach generation 3')
      a.close()
      await until(
        () => b.get('chain-1')?.status() === 'completed',
        10_000,
        'b to end the chain',
        () => ({ calls, status: b.get('chain-1')?.status() }),
      )
      const ended = b.get('chain-1')!
      expect(await ended.result()).toBe(6)
      expect(ended.generation).toBe(6)
      // Each generation's step ran under its own key; only the one in flight at the close ran in both.
      const keys = calls.map((c) => c.key)
      expect(new Set(keys)).toEqual(new Set(['chain-1/inc', ...[2, 3, 4, 5, 6].map((g) => `chain-1#${g}/inc`)]))
      const twice = keys.filter((k, i) => keys.indexOf(k) !== i)
      expect(twice.length).toBeLessThanOrEqual(1)
      for (const key of twice) expect(calls.filter((c) => c.key === key).map((c) => c.by)).toEqual(['a', 'b'])
      expect(calls.filter((c) => c.by === 'b').length).toBeGreaterThan(0)
      expect(audit(ended.history())).toMatchObject({ completed: { inc: 1 }, finished: 1 })
      // The broker keeps the last generation's events only.
      const ns = await store.shared<unknown>(name, { transport: 'main', consistency: 'strong', codec: 'msgpack' })
      const from = ended.history()[0]!.seq
      await until(
        () => ns.keys('run/chain-1/e/').every((k) => Number(k.slice(-10)) >= from),
        5_000,
        'the earlier generations to be purged',
        () => ({ from, keys: ns.keys('run/chain-1/e/') }),
      )
      b.close()
    })

    it("maxConcurrentRuns: queued runs taken over stay queued and begin in start order under the taker's limit", async () => {
      const name = fresh('limit')
      const o = await orreryOn(kind)
      const store = o.openStore()
      // The limit is each process's: what runs at once is counted by process.
      const log = { began: [] as string[], running: { a: 0, b: 0 } as Record<string, number>, most: { a: 0, b: 0 } as Record<string, number> }
      const open = (by: string): Promise<Workflows> =>
        sharedOn(o, store, name, by, (wf) => {
          wf.register('work', async (n: number, ctx) => {
            log.began.push(`${by}:${ctx.runId}`)
            log.running[by]!++
            log.most[by] = Math.max(log.most[by]!, log.running[by]!)
            try {
              await sleep(150)
            } finally {
              log.running[by]!--
            }
            return n
          })
          wf.define(job, { maxConcurrentRuns: 1 })
        })
      const a = await open('a')
      const b = await open('b')
      const runs: WorkflowRun[] = []
      for (let i = 0; i < 4; i++) runs.push(await a.start(job, i, { id: `job-${i}` }))
      expect(runs.map((r) => r.status())).toEqual(['running', 'queued', 'queued', 'queued'])
      await a.flushed()
      await until(() => log.began.length === 1, 5_000, 'the first run to begin')
      a.close()
      await until(
        () => runs.every((r) => b.get(r.id)?.status() === 'completed'),
        15_000,
        'b to run them all',
        () => log,
      )
      for (let i = 0; i < 4; i++) expect(await b.get(`job-${i}`)!.result()).toBe(i)
      // One at a time: a's first (again in b, it was in flight), then the queued ones in start order.
      expect(log.most).toEqual({ a: 1, b: 1 })
      expect(log.began).toEqual(['a:job-0', 'b:job-0', 'b:job-1', 'b:job-2', 'b:job-3'])
      b.close()
    })

    it('a process SIGKILLed mid-run: another takes its runs over once their leases run out; each step completes once', { timeout: 90_000 }, async () => {
      const name = fresh('kill')
      const url = kind === 'redis' ? inject('redisUrl')! : inject('natsUrl')!
      const leaseMs = 1_500
      const runs = 4
      const taker = spawnChild<Line>(fixture, [kind, url, name, 'take', String(leaseMs), String(runs)], children)
      const ready = await taker.next('ready', 60_000)
      expect(ready.pid).toBe(taker.proc.pid)
      const owner = spawnChild<Line>(fixture, [kind, url, name, 'start', String(leaseMs), String(runs)], children)
      await owner.next('started', 60_000)
      const o = await orreryOn(kind)
      const store = o.openStore()
      const ns = await store.shared<unknown>(name, { transport: 'main', consistency: 'strong', codec: 'msgpack' })
      const fx = await store.shared<{ pid: number }>(`${name}-fx`, { transport: 'main', consistency: 'strong' })
      // The end of each run's lease as its first owner last renewed it.
      const ownerUntil = new Map<string, number>()
      const note = (key: string, value: unknown) => {
        const lease = value as { owner: string; until: number }
        if (lease.owner.startsWith('start-')) ownerUntil.set(key.slice('owner/'.length), lease.until)
      }
      for (const e of ns.entries('owner/')) note(e.key, e.value)
      ns.watchPrefix('owner/').subscribe((c) => {
        if (c.type === 'put') note(c.key, c.value)
      })
      // Every run is in its second step there, its first step's completion on the broker.
      const ids = Array.from({ length: runs }, (_, i) => `lease-${i}`)
      // Stored events are tuples [type code, seq, at, ...fields]: code 2 is step-completed (token, step, ...).
      const recorded = (id: string, s: string) => ns.entries(`run/${id}/e/`).some((e) => (e.value as unknown[][]).some((ev) => ev[0] === 2 && ev[4] === s))
      await until(
        () => ids.every((id) => recorded(id, 'a') && owner.lines.some((l) => l.event === 'step' && l.key === `${id}/b`)),
        20_000,
        'the owner to record step a and begin step b of every run',
      )
      owner.proc.kill('SIGKILL')
      const killedAt = Date.now()
      expect(taker.lines.filter((l) => l.event === 'step')).toEqual([])
      await taker.next('done', 30_000)

      // An ended run's lease is given up (once its end is on the broker).
      await until(
        () => ns.keys('owner/').length === 0,
        10_000,
        "the taker to give up the ended runs' leases",
        () => ns.entries('owner/'),
      )
      const reader = await o.workflows({ store, namespace: name, resume: false, shared: { transport: 'main' } })
      const afterExpiry: number[] = []
      const sinceKill: number[] = []
      for (let i = 0; i < runs; i++) {
        const id = `lease-${i}`
        const run = reader.get(id)!
        expect(run.status()).toBe('completed')
        expect(await run.result()).toBe(i + 3)
        expect(audit(run.history())).toEqual({ completed: { a: 1, b: 1, c: 1 }, contiguous: true, finished: 1 })
        // Step a, completed before the kill, never ran again; b (in flight) and c ran in the taker.
        const stepsOf = (c: Child<Line>) => c.lines.filter((l) => l.event === 'step' && l.key?.startsWith(`${id}/`)).map((l) => l.key)
        expect(stepsOf(owner)).toEqual([`${id}/a`, `${id}/b`])
        expect(stepsOf(taker)).toEqual([`${id}/b`, `${id}/c`])
        // Each effect recorded once, by its idempotency key.
        for (const s of ['a', 'b', 'c']) expect(fx.get(`fx/${id}/${s}`)?.value.pid).toBeTypeOf('number')
        const resumedAt = taker.lines.find((l) => l.event === 'step' && l.key === `${id}/b`)!.at!
        sinceKill.push(resumedAt - killedAt)
        afterExpiry.push(resumedAt - ownerUntil.get(id)!)
      }
      // No run resumed before its lease ran out, and each soon after (the expiry timer, no polling).
      for (const ms of afterExpiry) expect(ms).toBeGreaterThanOrEqual(0)
      expect(Math.max(...afterExpiry)).toBeLessThan(1_000)
      expect(Math.max(...sinceKill)).toBeLessThan(leaseMs + 1_000)
      console.log(
        `[lease ${kind} ${ENGINE}] leaseMs ${leaseMs}: SIGKILL to resumed ${sinceKill.join(', ')} ms; lease expiry to resumed ${afterExpiry.join(', ')} ms`,
      )
      reader.close()
    })
  })
}

const redis = BACKENDS.find((b) => b.name === 'redis')!
describe.skipIf(redis.skip !== undefined)(`shared workflows refused (${ENGINE})`, () => {
  it('bad options: a typed code, nothing opened', async () => {
    const o = await Orrery.create({ transports: { main: { kind: 'redis', url: inject('redisUrl')! }, here: { kind: 'memory' } } })
    opened.push(o)
    const refused = async (shared: unknown, code: string, details: Record<string, unknown> = {}) => {
      await expect(o.workflows({ shared: shared as never })).rejects.toSatisfy(
        (e: unknown) => isOrreryError(e, code as never) && Object.entries(details).every(([k, v]) => e.details[k] === v),
      )
    }
    await refused('main', 'INVALID_OPTION', { option: 'shared' })
    await refused({}, 'INVALID_OPTION', { option: 'transport' })
    await refused({ transport: 'main', leaseMs: 50 }, 'INVALID_OPTION', { option: 'leaseMs' })
    await refused({ transport: 'main', leaseMs: 1.5 }, 'INVALID_OPTION', { option: 'leaseMs' })
    await refused({ transport: 'main', owner: '' }, 'INVALID_OPTION', { option: 'owner' })
    await refused({ transport: 'main', lease: 1000 }, 'INVALID_OPTION')
    await refused({ transport: 'nowhere' }, 'INVALID_OPTION', { option: 'transport' })
    // A memory transport is this process's own: no compare-and-set another process could see.
    await refused({ transport: 'here' }, 'CAPABILITY_UNSUPPORTED', { capability: 'store.strong' })
    // A store without transports (Orrery.openStore) has no broker.
    const bare = await Orrery.openStore()
    await expect(o.workflows({ store: bare, shared: { transport: 'main' } })).rejects.toSatisfy((e: unknown) => isOrreryError(e, 'INVALID_OPTION'))
    bare.close()
  })
})
