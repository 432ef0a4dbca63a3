/**
 * Several processes on one consumer group over NATS JetStream and over Kafka, one SIGKILLed
 * mid-stream (processes.test.ts does this on Redis, where it also reads what the killed process
 * held from the broker). Three worker processes (test/fixtures/transport-worker.mjs) share the
 * group `workers` of a bound channel; this process publishes 1,500 messages at once and kills one
 * worker once a third are handled. Each message's effect is recorded in Redis under its id (SET
 * NX, every execution listed), so the test reads what happened: nothing lost, each effect applied
 * once, every process took part and the survivors finished. On NATS a message runs again only
 * after the kill, by a survivor, and only if the killed process had taken it. On Kafka the group
 * moves partitions while its members join and after the kill; a new owner reads on from the last
 * commit, so what the old owner held of a partition it lost runs again: a few dozen at most here.
 */
import { fileURLToPath } from 'node:url'

import { createClient } from 'redis'
import { afterEach, describe, expect, inject, it } from 'vitest'

import { Orrery, type TransportOptions } from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { BACKENDS, poll, range, withTimeout } from './backends.js'
import { type Child, spawnChild } from './child.js'

const fixture = fileURLToPath(new URL('../fixtures/transport-worker.mjs', import.meta.url))
const MESSAGES = 1_500
const PROCESSES = 3
const MAX_IN_FLIGHT = 8
const WORK_MS = 30
// Long enough that a loaded machine never lets a living process's delivery go (a run again before the kill).
const VISIBILITY_MS = 5_000
const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`

type Line = Record<string, unknown> & { event: string; pid: number }
const children: Array<Child<Line>> = []

interface Raw {
  connect(): Promise<unknown>
  get(key: string): Promise<string | null>
  lRange(key: string, from: number, to: number): Promise<string[]>
  sendCommand(args: string[]): Promise<unknown>
  quit(): Promise<unknown>
  on(event: 'error', listener: (error: unknown) => void): unknown
}

const redis = BACKENDS.find((b) => b.name === 'redis')!
const BROKERS: ReadonlyArray<{ name: 'nats' | 'kafka'; transport: () => TransportOptions }> = [
  { name: 'nats', transport: () => ({ kind: 'nats', servers: inject('natsUrl')! }) },
  // A partition per process: Kafka's groups hand out partitions, not messages.
  { name: 'kafka', transport: () => ({ kind: 'kafka', brokers: inject('kafkaBrokers')!, partitions: PROCESSES }) },
]

afterEach(() => {
  for (const child of children.splice(0)) if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL')
})

for (const broker of BROKERS) {
  const backend = BACKENDS.find((b) => b.name === broker.name)!
  const skip = backend.skip ?? redis.skip
  describe.skipIf(skip !== undefined)(`several processes on ${broker.name} (${ENGINE})${skip ? ` [skipped: ${skip}]` : ''}`, () => {
    it(`${PROCESSES} processes share a group; one SIGKILLed mid-stream: 0 lost, each effect once, runs again only after the kill`, {
      timeout: 150_000,
    }, async () => {
      const prefix = `pb-${RUN}-${broker.name}.`
      const url = inject('redisUrl')!
      const raw = createClient({ url, RESP: 2 }) as unknown as Raw
      raw.on('error', () => {})
      await raw.connect()
      const transport = broker.transport()
      const publisher = await Orrery.create({ transports: { main: transport }, bindings: { [`${prefix}*`]: 'main' } })
      try {
        const workers = range(0, PROCESSES).map(() =>
          spawnChild<Line>(
            fixture,
            ['worker', url, prefix, String(MAX_IN_FLIGHT), String(VISIBILITY_MS), String(WORK_MS), JSON.stringify(transport)],
            children,
          ),
        )
        for (const worker of workers) expect((await worker.next('ready', 60_000))['engine']).toBe(ENGINE)
        const handled = async (): Promise<number> => Number((await raw.get(`${prefix}handled`)) ?? 0)

        const ids = range(0, MESSAGES).map((i) => `m-${String(i).padStart(5, '0')}`)
        const published = await withTimeout(Promise.all(ids.map((id) => publisher.bus.publish(`${prefix}jobs`, id, { id }))), 60_000, 'the publishes')
        expect(published.filter((r) => !r.published)).toEqual([])

        // A third handled: the process with the most effects so far dies (on Kafka a process may
        // have no partition yet while the group settles).
        await poll(async () => ((await handled()) >= MESSAGES / 3 ? true : undefined), 90_000, `${MESSAGES / 3} messages handled`)
        const owners = await Promise.all(ids.map((id) => raw.get(`${prefix}effect:${id}`)))
        const victim = workers.reduce((a, b) => (owners.filter((o) => o === String(b.pid)).length > owners.filter((o) => o === String(a.pid)).length ? b : a))
        victim.proc.kill('SIGKILL')
        const killedAt = Date.now()
        expect((await victim.exited).signal).toBe('SIGKILL')
        const survivors = new Set(workers.filter((w) => w !== victim).map((w) => w.pid))

        await poll(
          async () => ((await raw.sendCommand(['EXISTS', ...ids.map((id) => `${prefix}effect:${id}`)])) === MESSAGES ? true : undefined),
          120_000,
          'every effect recorded',
        )

        const executions = new Map<string, Array<{ pid: number; at: number; applied: boolean }>>()
        await Promise.all(
          ids.map(async (id) => {
            const list = await raw.lRange(`${prefix}exec:${id}`, 0, -1)
            executions.set(
              id,
              list.map((line) => {
                const [pid, at, , outcome] = line.split(' ')
                return { pid: Number(pid), at: Number(at), applied: outcome === 'applied' }
              }),
            )
          }),
        )
        const repeated = ids.filter((id) => executions.get(id)!.length > 1)
        const byPid = new Map<number, number>()
        for (const list of executions.values()) for (const e of list) if (e.applied) byPid.set(e.pid, (byPid.get(e.pid) ?? 0) + 1)
        const extra = [...executions.values()].reduce((n, list) => n + list.length, 0) - MESSAGES
        console.log(
          `several processes on ${broker.name} (${ENGINE}): ${MESSAGES} messages, ${PROCESSES} processes, killed pid ${victim.pid}; ` +
            `${extra} executions beyond one (${repeated.length} messages), all done ${Date.now() - killedAt} ms after the kill; effects by process ${JSON.stringify(Object.fromEntries(byPid))}`,
        )

        // 0 lost, each effect applied once.
        expect(ids.filter((id) => executions.get(id)!.length === 0)).toEqual([])
        expect(ids.filter((id) => executions.get(id)!.filter((e) => e.applied).length !== 1)).toEqual([])
        // Every process took part, and the survivors finished the killed one's share.
        expect(byPid.get(victim.pid) ?? 0, 'effects by the killed process').toBeGreaterThan(0)
        for (const pid of survivors) expect(byPid.get(pid) ?? 0, `effects by survivor ${pid}`).toBeGreaterThan(0)
        // On NATS a message runs again only after the kill, by a survivor, and only one the killed
        // process had taken. Kafka's group moves partitions while its members join (and again after
        // the kill), and a new owner reads on from the last commit: runs again come at each move,
        // bounded below, each effect still applied once (checked above).
        if (broker.name === 'nats')
          for (const id of repeated) {
            const [first, ...again] = executions.get(id)!
            expect(
              again.every((e) => survivors.has(e.pid) && e.at >= killedAt - 50),
              `${id} ran again before the kill or by the killed process: ${JSON.stringify(executions.get(id))}`,
            ).toBe(true)
            expect(first!.pid, `${id} first run by the killed process`).toBe(victim.pid)
          }
        // On NATS what the killed process held is bounded by its in-flight limit (with acks it had
        // written that the server never read).
        if (broker.name === 'nats') expect(extra).toBeLessThanOrEqual(3 * MAX_IN_FLIGHT)
        // On Kafka a partition moves three times or more (two joins, the kill), and what runs again
        // at each move is what the old owner held of it: its members' deliveries, what waited for
        // their room, and acks not committed yet. A process that went on with a partition it lost
        // (records its client had fetched already) ran hundreds again.
        if (broker.name === 'kafka') expect(extra).toBeLessThanOrEqual(8 * MAX_IN_FLIGHT)
      } finally {
        for (const worker of children) if (worker.proc.exitCode === null && worker.proc.signalCode === null) worker.proc.stdin?.write('stop\n')
        await Promise.all(children.map((c) => withTimeout(c.exited, 30_000, `worker ${c.pid} stopping`).catch(() => c.proc.kill('SIGKILL'))))
        await publisher.shutdown()
        await raw.quit()
      }
    })
  })
}
