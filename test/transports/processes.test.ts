/**
 * Several processes on one Redis Streams consumer group (issue #14's "several processes" test):
 * three Node processes (test/fixtures/transport-worker.mjs, on this project's engine, running the
 * TypeScript under test: child.ts) share the group `workers` of a bound channel; this process publishes 3,000
 * messages at once; once a third are handled, the process holding the most is killed with SIGKILL
 * mid-stream. The survivors are still busy with the backlog when the broker's threshold passes.
 * Each message's effect is recorded in Redis under its id as idempotency key (SET NX), and every
 * execution is listed, so the test reads from the server what happened: nothing lost, executions
 * beyond one only for what the killed process held, no effect twice, and the survivors, never
 * restarted, take over the killed one's messages once the threshold has passed, not after the
 * backlog.
 *
 * Then create's refusals from a process of their own: a wrong password (a Redis ACL user made for
 * the test) is TRANSPORT_AUTH, a closed port or a server that never answers is
 * TRANSPORT_UNAVAILABLE within connectTimeoutMs, and each process ends on its own (nothing left open).
 */
import { createServer, type Server, type Socket } from 'node:net'
import { fileURLToPath } from 'node:url'

import { createClient } from 'redis'
import { afterEach, describe, expect, inject, it } from 'vitest'

import { Orrery } from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { BACKENDS, poll, range, withTimeout } from './backends.js'
import { type Child, spawnChild } from './child.js'

const redis = BACKENDS.find((b) => b.name === 'redis')!
const title = `several processes on redis (${ENGINE})${redis.skip ? ` [skipped: ${redis.skip}]` : ''}`
const fixture = fileURLToPath(new URL('../fixtures/transport-worker.mjs', import.meta.url))

/** Messages published, processes sharing the group, each process's in-flight bound, the group's visibility timeout. */
const MESSAGES = 3_000
const PROCESSES = 3
const MAX_IN_FLIGHT = 8
/** How long a handler works, on average: the survivors are still busy with the backlog when the threshold passes. */
const WORK_MS = 60
const VISIBILITY_MS = 1_000
/** The broker hands an entry to another consumer once it has been idle this long (docs/transports.md). */
const THRESHOLD_MS = VISIBILITY_MS + Math.max(1_000, VISIBILITY_MS / 10)

const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
let runs = 0

/** The node-redis calls this test makes on connections of its own. */
interface Raw {
  connect(): Promise<unknown>
  sendCommand(args: string[]): Promise<unknown>
  get(key: string): Promise<string | null>
  lRange(key: string, from: number, to: number): Promise<string[]>
  quit(): Promise<unknown>
  on(event: 'error', listener: (error: unknown) => void): unknown
}

async function connect(url: string): Promise<Raw> {
  const raw = createClient({ url, RESP: 2 }) as unknown as Raw
  raw.on('error', () => {})
  await raw.connect()
  return raw
}
type Line = Record<string, unknown> & { event: string; pid: number }

const children: Array<Child<Line>> = []
const spawnFixture = (args: string[]): Child<Line> => spawnChild(fixture, args, children)

/** Waits for a process to end on its own within `ms`; one still running is killed and reported. */
async function endsOnItsOwn(child: Child<Line>, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  try {
    return await withTimeout(child.exited, ms, `process ${child.pid} ending on its own (something stayed open)`)
  } catch (error) {
    child.proc.kill('SIGKILL')
    throw error
  }
}

/** A flat [name, value, ...] reply as an object. */
function pairs(reply: unknown): Record<string, unknown> {
  const list = reply as unknown[]
  const out: Record<string, unknown> = {}
  for (let i = 0; i + 1 < list.length; i += 2) out[String(list[i])] = list[i + 1]
  return out
}

/** The group's consumers on the broker: name and how many entries each holds (none before the group exists). */
async function consumers(raw: Raw, stream: string): Promise<Map<string, number>> {
  try {
    const reply = (await raw.sendCommand(['XINFO', 'CONSUMERS', stream, 'workers'])) as unknown[]
    return new Map(reply.map((c) => pairs(c)).map((c) => [String(c['name']), Number(c['pending'])]))
  } catch {
    return new Map()
  }
}

/** Deletes every key matching one of `patterns`. */
async function deleteKeys(raw: Raw, patterns: string[]): Promise<void> {
  for (const pattern of patterns) {
    let cursor = '0'
    do {
      const [next, keys] = (await raw.sendCommand(['SCAN', cursor, 'MATCH', pattern, 'COUNT', '1000'])) as [string, string[]]
      cursor = next
      if (keys.length > 0) await raw.sendCommand(['DEL', ...keys])
    } while (cursor !== '0')
  }
}

describe.skipIf(redis.skip !== undefined)(title, () => {
  if (redis.broken !== undefined) {
    it('has its server', () => {
      throw new Error(redis.broken)
    })
    return
  }
  const url = inject('redisUrl')!

  afterEach(() => {
    // A test that failed half-way leaves no process of its own behind.
    for (const child of children.splice(0)) if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL')
  })

  it(`${PROCESSES} processes share a group; one SIGKILLed mid-stream: 0 lost, extra executions within what it held, 0 duplicate effects, hand-over after the broker threshold`, {
    timeout: 120_000,
  }, async () => {
    const began = Date.now()
    const prefix = `proc-${RUN}-${++runs}.`
    const stream = `orrery:ch:${prefix}jobs`
    const raw = await connect(url)
    let publisher: Orrery | undefined
    try {
      publisher = await Orrery.create({ transports: { main: { kind: 'redis', url } }, bindings: { [`${prefix}*`]: 'main' } })
      const ids = range(0, MESSAGES).map((i) => `m-${String(i).padStart(5, '0')}`)
      const results: Array<{ id: string; published: boolean }> = []
      let sent = 0
      const handled = async (): Promise<number> => Number((await raw.get(`${prefix}handled`)) ?? 0)

      // One process at a time, so each one's consumer on the broker is known: the broker makes a
      // consumer when it first hands it an entry, so the first messages go out one by one until
      // the newcomer has taken one (a process already there may take one first).
      const workers: Array<{ child: Child<Line>; consumer: string }> = []
      for (let i = 0; i < PROCESSES; i++) {
        const child = spawnFixture(['worker', url, prefix, String(MAX_IN_FLIGHT), String(VISIBILITY_MS), String(WORK_MS)])
        const ready = await child.next('ready', 60_000)
        expect(ready['engine']).toBe(ENGINE)
        const known = new Set(workers.map((w) => w.consumer))
        const consumer = await poll(
          async () => {
            const fresh = [...(await consumers(raw, stream)).keys()].find((name) => !known.has(name))
            if (fresh === undefined && (await handled()) >= sent) {
              const id = ids[sent++]!
              results.push(await publisher!.bus.publish(`${prefix}jobs`, id, { id }))
            }
            return fresh
          },
          15_000,
          `the consumer of process ${child.pid} on the broker`,
        )
        workers.push({ child, consumer })
      }
      const warmUp = sent
      // Their start is not timed: each loads the TypeScript under test, seconds on a loaded machine.
      const joinedAt = Date.now()

      const published = Promise.all(ids.slice(sent).map((id) => publisher!.bus.publish(`${prefix}jobs`, id, { id })))

      // About a third handled: the process holding the most is killed while it holds them.
      const handledAtKill = await poll(
        async () => {
          const n = await handled()
          return n >= MESSAGES / 3 ? n : undefined
        },
        30_000,
        `${MESSAGES / 3} messages handled`,
        2,
      )
      const holding = await consumers(raw, stream)
      const victim = workers.reduce((a, b) => ((holding.get(b.consumer) ?? 0) > (holding.get(a.consumer) ?? 0) ? b : a))
      victim.child.proc.kill('SIGKILL')
      const killedAt = Date.now()
      const survivors = workers.filter((w) => w !== victim)
      // What it held, as the broker saw it just after: each entry with how long it had been idle.
      // (Acks it sent just before dying may still land: this can only shrink, never grow.)
      const snapshotAt = Date.now()
      const held = (
        (await raw.sendCommand(['XPENDING', stream, 'workers', '-', '+', '10000', victim.consumer])) as Array<[string, string, number, number]>
      ).map(([entry, , idle]) => ({ entry, idle: Number(idle) }))
      expect((await victim.child.exited).signal).toBe('SIGKILL')

      results.push(...(await withTimeout(published, 30_000, 'the publishes')))
      expect(results.filter((r) => !r.published)).toEqual([])
      expect(new Set(results.map((r) => r.id)).size).toBe(MESSAGES)

      // Every effect recorded, and nothing left unacknowledged on the broker.
      await poll(
        async () => {
          const [effects, summary] = await Promise.all([
            raw.sendCommand(['EXISTS', ...ids.map((id) => `${prefix}effect:${id}`)]) as Promise<number>,
            raw.sendCommand(['XPENDING', stream, 'workers']) as Promise<[number, ...unknown[]]>,
          ])
          return effects === MESSAGES && Number(summary[0]) === 0 ? true : undefined
        },
        30_000,
        'every effect recorded and every entry acknowledged',
        50,
      )
      const doneAt = Date.now()

      // Which message each held entry carries (the frame holds the id, which is also the payload).
      const heldIds = new Map<string, number>()
      for (const { entry, idle } of held) {
        const [found] = (await raw.sendCommand(['XRANGE', stream, entry, entry])) as Array<[string, string[]]>
        const fields = found?.[1] ?? []
        const id = /m-\d{5}/.exec(fields.join(' '))?.[0]
        expect(id, `message id in stream entry ${entry}`).toBeDefined()
        heldIds.set(id!, idle)
      }

      const executions = new Map<string, Array<{ pid: number; at: number; attempt: number; applied: boolean }>>()
      const owners = new Map<string, string | null>()
      await Promise.all(
        ids.map(async (id) => {
          const [list, owner] = await Promise.all([raw.lRange(`${prefix}exec:${id}`, 0, -1), raw.get(`${prefix}effect:${id}`)])
          executions.set(
            id,
            list.map((line) => {
              const [pid, at, attempt, outcome] = line.split(' ')
              return { pid: Number(pid), at: Number(at), attempt: Number(attempt), applied: outcome === 'applied' }
            }),
          )
          owners.set(id, owner)
        }),
      )

      // What happened, from the server's records (printed before the checks, so a failure says it too).
      const lost = ids.filter((id) => owners.get(id) === null || executions.get(id)!.length === 0)
      const appliedTwice = ids.filter((id) => executions.get(id)!.filter((e) => e.applied).length !== 1)
      const total = [...executions.values()].reduce((n, list) => n + list.length, 0)
      const extra = total - MESSAGES
      const repeated = ids.filter((id) => executions.get(id)!.length > 1)
      // Repeats of messages the killed process did not hold: none may happen (with their runs, for the failure).
      const strayRepeats = repeated.filter((id) => !heldIds.has(id)).map((id) => ({ id, runs: executions.get(id) }))
      const survivorPids = new Set(survivors.map((s) => s.child.pid))
      const bound = redis.redeliveryBound(VISIBILITY_MS)
      const takeovers = [...heldIds].map(([id, idle]) => {
        const taken = executions.get(id)!.find((e) => survivorPids.has(e.pid) && e.at >= killedAt)
        // Claimable once idle for the threshold, never before (a slow but living holder keeps it).
        return { id, after: taken === undefined ? undefined : taken.at - killedAt, earliest: snapshotAt - idle + THRESHOLD_MS - killedAt }
      })
      const handover = takeovers.flatMap((t) => (t.after === undefined ? [] : [t.after]))
      const lastAt = Math.max(...[...executions.values()].flatMap((list) => list.map((e) => e.at)))
      const byPid = new Map<number, number>()
      for (const list of executions.values()) for (const e of list) if (e.applied) byPid.set(e.pid, (byPid.get(e.pid) ?? 0) + 1)
      console.log(
        `several processes (${ENGINE}): ${MESSAGES} messages, ${PROCESSES} processes (maxInFlight ${MAX_IN_FLIGHT}, visibility ${VISIBILITY_MS} ms, ~${WORK_MS} ms of work a message); ` +
          `${warmUp} published one by one as the processes joined; killed pid ${victim.child.pid} after ${handledAtKill} handled, holding ${held.length} on the broker; ` +
          `${total} executions (${extra} beyond one, ${repeated.length} messages run twice or more, ${strayRepeats.length} of them not held by the killed one), ${lost.length} lost, ${appliedTwice.length} not applied exactly once; ` +
          `hand-over ${Math.min(...handover)}..${Math.max(...handover)} ms after the kill (broker threshold ${THRESHOLD_MS} ms, bound ${bound} ms); ` +
          `last execution ${lastAt - killedAt} ms, all done ${doneAt - killedAt} ms after the kill, test ${Date.now() - began} ms; effects by process ${JSON.stringify(Object.fromEntries(byPid))}`,
      )

      // 0 lost: every message took effect.
      expect(lost).toEqual([])
      // 0 duplicate effects: each message applied once, by the process its key names.
      expect(appliedTwice).toEqual([])
      for (const id of ids) expect(String(executions.get(id)!.find((e) => e.applied)!.pid), id).toBe(owners.get(id))

      // Executions beyond one per message: only messages the killed process held, within what it held.
      expect(held.length, 'the killed process held deliveries when it died').toBeGreaterThan(0)
      expect(strayRepeats.slice(0, 5), 'messages run twice that the killed process did not hold').toEqual([])
      expect(extra).toBeLessThanOrEqual(held.length)
      for (const id of repeated) {
        const list = executions.get(id)!
        expect(list[0]!.pid, `${id} first run by the killed process`).toBe(victim.child.pid)
        expect(heldIds.has(id), `${id} held by the killed process`).toBe(true)
        expect(list.slice(1).every((e) => e.pid !== victim.child.pid && e.attempt > 1)).toBe(true)
      }

      // The survivors, still the same processes, took each held message once its threshold passed,
      // while the backlog still kept them busy (the stream ran past the bound).
      expect(lastAt - killedAt, 'the stream still ran past the hand-over bound').toBeGreaterThan(bound)
      expect(
        takeovers.filter((t) => t.after === undefined).map((t) => t.id),
        'held messages no survivor ran after the kill',
      ).toEqual([])
      expect(
        takeovers.filter((t) => t.after! < t.earliest - 50),
        'taken over before the broker threshold',
      ).toEqual([])
      expect(
        takeovers.filter((t) => t.after! > bound),
        `taken over later than ${bound} ms after the kill`,
      ).toEqual([])
      for (const { child } of survivors) expect(child.proc.exitCode, `survivor ${child.pid} still running`).toBeNull()
      for (const { child } of workers) expect(byPid.get(child.pid) ?? 0, `effects of process ${child.pid}`).toBeGreaterThan(0)

      // The survivors stop gracefully and end on their own.
      for (const { child } of survivors) child.proc.stdin!.write('stop\n')
      for (const { child } of survivors) {
        await child.next('stopped', 15_000)
        expect(await endsOnItsOwn(child, 10_000)).toEqual({ code: 0, signal: null })
      }
      expect(Date.now() - joinedAt).toBeLessThan(45_000)
    } finally {
      publisher?.close()
      await deleteKeys(raw, [`${prefix}*`, `orrery:*${prefix}*`]).catch(() => {})
      await raw.quit().catch(() => {})
    }
  })

  it('a request round trip between processes: 2 responder processes in one group, an asker process and this one; every reply right, both responders answer', {
    timeout: 90_000,
  }, async () => {
    const prefix = `req-${RUN}-${++runs}.`
    const responders = [spawnFixture(['responder', url, prefix]), spawnFixture(['responder', url, prefix])]
    await Promise.all(responders.map((r) => r.next('ready', 60_000)))
    const asker = spawnFixture(['asker', url, prefix, '100'])
    const answered = await Promise.race([
      asker.next('answered', 40_000),
      asker.next('failed', 40_000).then((l) => Promise.reject(new Error(JSON.stringify(l)))),
    ])
    const own = await Orrery.create({ transports: { main: { kind: 'redis', url } }, bindings: { [`${prefix}*`]: 'main' } })
    try {
      const started = performance.now()
      const reply = await own.bus.request<{ sum: number; pid: number }>(`${prefix}add`, { a: 40, b: 2 }, { timeout: 10_000 })
      const ms = performance.now() - started
      const times = (answered['ms'] as number[]).slice().sort((x, y) => x - y)
      const pids = answered['pids'] as number[]
      const byPid = Object.fromEntries(responders.map((r) => [r.pid, pids.filter((p) => p === r.pid).length]))
      console.log(
        `requests between processes (${ENGINE}): 100 at once from a child, answered by pid ${JSON.stringify(byPid)}; round trip p50 ${times[50]!.toFixed(1)} ms, p99 ${times[98]!.toFixed(1)} ms; one from this process ${ms.toFixed(1)} ms`,
      )
      expect(reply.payload.sum).toBe(42)
      expect(responders.map((r) => r.pid)).toContain(reply.payload.pid)
      expect(answered['wrong']).toBe(0)
      expect(pids.length).toBe(100)
      expect(Object.values(byPid).every((count) => count > 0)).toBe(true)
      expect(pids.every((p) => responders.some((r) => r.pid === p))).toBe(true)
    } finally {
      await own.shutdown()
      own.close()
    }
    await endsOnItsOwn(asker, 10_000)
    for (const r of responders) r.proc.stdin!.write('stop\n')
    for (const r of responders) await r.next('stopped', 10_000)
    for (const r of responders) expect((await endsOnItsOwn(r, 10_000)).code).toBe(0)
    for (const c of [...responders, asker]) expect(c.stderr).toBe('')
  })

  it('create refuses a wrong password with TRANSPORT_AUTH, a closed port or a silent server with TRANSPORT_UNAVAILABLE within connectTimeoutMs; each process ends on its own', {
    timeout: 90_000,
  }, async () => {
    const raw = await connect(url)
    const user = `orrery-test-${RUN}`
    const password = `right-${Math.random().toString(36).slice(2)}`
    await raw.sendCommand(['ACL', 'SETUSER', user, 'on', `>${password}`, '~*', '&*', '+@all'])
    const as = (pass: string): string => {
      const u = new URL(url)
      u.username = user
      u.password = pass
      return u.toString()
    }
    // A port nobody listens on (taken from the system, then let go), and a server that accepts and never answers.
    const closedPort = await new Promise<number>((resolve) => {
      const s = createServer()
      s.listen(0, '127.0.0.1', () => {
        const { port } = s.address() as { port: number }
        s.close(() => resolve(port))
      })
    })
    const sockets = new Set<Socket>()
    const silent: Server = createServer((socket) => {
      sockets.add(socket)
      socket.on('error', () => {})
    })
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const silentPort = (silent.address() as { port: number }).port
    try {
      const cases = {
        wrongPassword: spawnFixture(['connect', as('wrong'), '3000']),
        rightPassword: spawnFixture(['connect', as(password), '3000']),
        closedPort: spawnFixture(['connect', `redis://127.0.0.1:${closedPort}`, '2000']),
        silentServer: spawnFixture(['connect', `redis://127.0.0.1:${silentPort}`, '1000']),
      }
      const outcome: Record<string, Line> = {}
      for (const [name, child] of Object.entries(cases)) {
        expect(await endsOnItsOwn(child, 60_000), `${name}: ${child.stderr}`).toEqual({ code: 0, signal: null })
        expect(child.lines, name).toHaveLength(1)
        outcome[name] = child.lines[0]!
      }
      // The user exists and its password works: the refusal is the wrong password's.
      expect(outcome['rightPassword']!).toMatchObject({ event: 'connected', engine: ENGINE })
      expect(outcome['wrongPassword']!).toMatchObject({ event: 'refused', code: 'TRANSPORT_AUTH' })
      expect(outcome['closedPort']!).toMatchObject({ event: 'refused', code: 'TRANSPORT_UNAVAILABLE' })
      expect(outcome['closedPort']!['ms']).toBeLessThan(2_000)
      expect(outcome['silentServer']!).toMatchObject({ event: 'refused', code: 'TRANSPORT_UNAVAILABLE' })
      expect(outcome['silentServer']!['ms']).toBeGreaterThanOrEqual(950)
      expect(outcome['silentServer']!['ms']).toBeLessThan(3_000)
      expect(sockets.size, 'the silent server was reached').toBeGreaterThan(0)
    } finally {
      for (const s of sockets) s.destroy()
      silent.close()
      await raw.sendCommand(['ACL', 'DELUSER', user]).catch(() => {})
      await raw.quit().catch(() => {})
    }
  })
})
