/**
 * A shared mesh over three Node processes (test/fixtures/registry-worker.mjs, on this project's
 * engine, running the TypeScript under test: child.ts), on each broker: two agents offering `work` in each
 * process, and this test process's own shared mesh (no agents) routing requests to them. Once
 * routed work runs, the process that handled the most is killed with SIGKILL: the survivors (and
 * this process) must mark its agents down and deregister them within the heartbeat deadline,
 * routed requests must go on, answered by the survivors, every request answered (a call whose
 * agent died falls back to another), every answer handled where it says; then a graceful stop of
 * a survivor deregisters its agents in the others at once.
 */
import { fileURLToPath } from 'node:url'

import { afterEach, describe, expect, inject, it } from 'vitest'

import { type MeshEvent, Orrery, TRANSPORT_CAPABILITIES } from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { BACKENDS, stop, until, withTimeout } from './backends.js'
import { type Child, spawnChild } from './child.js'

const fixture = fileURLToPath(new URL('../fixtures/registry-worker.mjs', import.meta.url))

const PROCESSES = 3
const AGENTS = 2
const INTERVAL = 100
const DEREGISTER_AFTER = 500
/** Missed beats before offline (the default): deregistration comes DEREGISTER_AFTER later. */
const OFFLINE_AFTER = 5
/** The heartbeat deadline: offline after 5 missed beats, then deregistered. */
const DEADLINE = INTERVAL * OFFLINE_AFTER + DEREGISTER_AFTER
const WORK_MS = 20
/** The salvage test's agents' handler timeout: their inbox lease is 5 s longer. */
const HANDLER_TIMEOUT = 1_000
const REQUESTS = 600
const IN_FLIGHT = 8

const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
let runs = 0

type Line = Record<string, unknown> & { event: string; pid: number }

const children: Array<Child<Line>> = []
const spawnWorker = (args: string[]): Child<Line> => spawnChild(fixture, args, children)

for (const backend of BACKENDS.filter((b) => b.name === 'redis' || b.name === 'nats')) {
  const title = `shared registry over ${PROCESSES} processes: ${backend.name} (${ENGINE})${backend.skip ? ` [skipped: ${backend.skip}]` : ''}`
  describe.skipIf(backend.skip !== undefined)(title, () => {
    if (backend.broken !== undefined) {
      it('has its server', () => {
        throw new Error(backend.broken)
      })
      return
    }
    afterEach(() => {
      for (const child of children.splice(0)) if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL')
    })

    it('SIGKILL one: its agents deregistered in the others within the heartbeat deadline, routed work goes on on the survivors, nothing acknowledged lost; a graceful stop deregisters at once', {
      timeout: 90_000,
    }, async () => {
      const ns = `rp${RUN}${++runs}`
      const url = backend.name === 'redis' ? inject('redisUrl')! : inject('natsUrl')!
      const main = backend.name === 'redis' ? { kind: 'redis' as const, url, keyPrefix: `orrery-${ns}:` } : { kind: 'nats' as const, servers: url, prefix: ns }
      const workers = Array.from({ length: PROCESSES }, () =>
        spawnWorker([backend.name, url, ns, String(AGENTS), String(INTERVAL), String(DEREGISTER_AFTER), String(WORK_MS)]),
      )
      const ready = await Promise.all(workers.map((w) => w.next('ready', 60_000)))
      const agentsOf = new Map(workers.map((w, i) => [w, ready[i]!['agents'] as string[]]))
      const processOf = new Map(workers.map((w, i) => [w, ready[i]!['process'] as string]))
      const all = [...agentsOf.values()].flat()
      expect(all).toHaveLength(PROCESSES * AGENTS)

      const orrery = await Orrery.create({ transports: { main } })
      try {
        const mesh = await orrery.mesh({ shared: 'main', heartbeat: { interval: INTERVAL, deregisterAfter: DEREGISTER_AFTER } })
        const here: Array<MeshEvent & { at: number }> = []
        mesh.events.subscribe((e) => here.push(e as MeshEvent & { at: number }))
        const listed = () => mesh.registry.find({ capability: 'work', minHealth: 'offline' }).map((a) => a.id)
        await until(() => listed().length === all.length, 20_000, 'this process to see every agent', listed)
        // Each worker hears of the other two's agents.
        await until(
          () =>
            workers.every(
              (w) =>
                new Set(w.lines.flatMap((l) => (l.event === 'known' ? (l['agents'] as string[]) : l.event === 'registered' ? [l['agent'] as string] : [])))
                  .size ===
                (PROCESSES - 1) * AGENTS,
            ),
          20_000,
          'every worker to see the others',
        )

        // Routed requests, IN_FLIGHT at a time, spread round-robin; each must be answered.
        const answers = new Map<number, { agent: string; pid: number; at: number }>()
        const failures: string[] = []
        let issued = 0
        const caller = async () => {
          while (issued < REQUESTS) {
            const i = issued++
            try {
              const reply = await mesh.request<{ i: number; agent: string; pid: number }>(
                'work@^1',
                { i },
                { strategy: 'round-robin', timeout: 1_000, retries: 8 },
              )
              answers.set(i, { agent: reply.payload.agent, pid: reply.payload.pid, at: Date.now() })
            } catch (error) {
              failures.push(`${i}: ${(error as Error).message}`)
            }
          }
        }
        // Requests on bound channels are the transport's capability; where it lacks them, the
        // routed work after the kill is the direct messages below.
        const routed = TRANSPORT_CAPABILITIES[backend.name].request
        const callers = routed ? Array.from({ length: IN_FLIGHT }, caller) : []
        await until(
          () => !routed || answers.size >= REQUESTS / 4 || failures.length > 0,
          30_000,
          'routed work to run',
          () => failures,
        )

        // Kill the worker that answered the most.
        const counts = workers.map((w) => [...answers.values()].filter((a) => a.pid === w.pid).length)
        const victim = workers[counts.indexOf(Math.max(...counts))]!
        const survivors = workers.filter((w) => w !== victim)
        const killedAgents = agentsOf.get(victim)!
        const killedAt = Date.now()
        victim.proc.kill('SIGKILL')
        await victim.exited

        // Each survivor (and this process) deregisters the victim's agents by the deadline.
        const deregisteredIn = (w: Child<Line>) =>
          w.lines.filter((l) => l.event === 'deregistered' && killedAgents.includes(l['agent'] as string)).map((l) => l['at'] as number)
        await until(
          () =>
            survivors.every((w) => deregisteredIn(w).length === AGENTS) &&
            here.filter((e) => e.type === 'deregistered' && killedAgents.includes(e.agent)).length === AGENTS,
          DEADLINE + 10_000,
          "the killed process's agents to be deregistered everywhere",
        )
        const after = [
          ...survivors.flatMap((w) => deregisteredIn(w)),
          ...here.filter((e) => e.type === 'deregistered' && killedAgents.includes(e.agent)).map((e) => e.at),
        ].map((at) => at - killedAt)
        const reasons = [
          ...survivors.flatMap((w) => w.lines.filter((l) => l.event === 'deregistered' && killedAgents.includes(l['agent'] as string)).map((l) => l['reason'])),
        ]
        const answeredAtKill = [...answers.values()].filter((a) => a.at <= killedAt).length

        await Promise.all(callers)
        // Messages routed now (mesh.send) all go to the survivors' agents, and each is handled.
        const sends = Array.from({ length: 60 }, (_, k) => REQUESTS + k)
        const sentTo = await Promise.all(sends.map((i) => mesh.send('work', { i }, { strategy: 'round-robin' })))
        const handled = new Map<number, Set<number>>()
        const collect = () => {
          handled.clear()
          for (const w of workers)
            for (const l of w.lines) if (l.event === 'handled') handled.set(l['i'] as number, (handled.get(l['i'] as number) ?? new Set()).add(w.pid))
        }
        await until(
          () => {
            collect()
            return sends.every((i) => handled.has(i))
          },
          15_000,
          'every message sent after the kill to be handled',
          () => sends.filter((i) => !handled.has(i)),
        )
        expect(sentTo.every((s) => !killedAgents.includes(s.agent))).toBe(true)
        expect(sends.every((i) => !handled.get(i)!.has(victim.pid))).toBe(true)
        const unhandled = [...answers].filter(([i, a]) => !handled.get(i)?.has(a.pid)).map(([i]) => i)
        const bySurvivors = [...answers.values()].filter((a) => a.at > killedAt && a.pid !== victim.pid).length
        console.log(
          `[registry processes ${backend.name} ${ENGINE}] deregistered ${Math.min(...after)}..${Math.max(...after)} ms after the SIGKILL (deadline ${DEADLINE} ms: ${OFFLINE_AFTER} beats of ${INTERVAL} ms + ${DEREGISTER_AFTER}); ` +
            `${routed ? '' : 'no routed requests on this transport yet; '}${answers.size}/${routed ? REQUESTS : 0} answered (${answeredAtKill} before the kill, ${bySurvivors} by survivors after), ${failures.length} failed; ` +
            `fallbacks ${here.filter((e) => e.type === 'fallback').length}, retries ${here.filter((e) => e.type === 'retry').length}`,
        )
        expect(reasons.every((r) => r === 'missed-heartbeats')).toBe(true)
        // The deadline, plus one beat (the last one may have just arrived) and a loaded machine's slack.
        expect(Math.max(...after)).toBeLessThan(DEADLINE + INTERVAL + 1_500)
        expect(failures).toEqual([])
        expect(unhandled).toEqual([])
        if (routed) {
          expect(answers.size).toBe(REQUESTS)
          expect(bySurvivors).toBeGreaterThan(0)
        }

        // A graceful stop: the others hear at once, with no wait for the deadline.
        const [leaving, staying] = survivors as [Child<Line>, Child<Line>]
        const stoppedAt = Date.now()
        leaving.proc.stdin!.write('stop\n')
        await leaving.next('stopped', 15_000)
        const gone = agentsOf.get(leaving)!
        await until(
          () => staying.lines.filter((l) => l.event === 'deregistered' && gone.includes(l['agent'] as string)).length === AGENTS,
          5_000,
          'the graceful stop to reach the other survivor',
        )
        const graceful = staying.lines
          .filter((l) => l.event === 'deregistered' && gone.includes(l['agent'] as string))
          .map((l) => ({ ms: (l['at'] as number) - stoppedAt, reason: l['reason'], process: l['process'] }))
        console.log(`[registry processes ${backend.name} ${ENGINE}] graceful stop seen by the other survivor after ${graceful.map((g) => g.ms).join(', ')} ms`)
        expect(graceful.every((g) => g.reason === 'requested' && g.process === processOf.get(leaving))).toBe(true)
        expect(await withTimeout(leaving.exited, 10_000, 'the stopped worker ending on its own')).toEqual({ code: 0, signal: null })
        staying.proc.stdin!.write('stop\n')
        await staying.next('stopped', 15_000)
        await mesh.shutdown()
      } finally {
        await stop(orrery)
      }
    })

    it('SIGKILL one with messages queued for its agents: the survivors empty their inboxes, sending every message on to a live agent', {
      timeout: 60_000,
    }, async () => {
      const ns = `rp${RUN}${++runs}`
      const url = backend.name === 'redis' ? inject('redisUrl')! : inject('natsUrl')!
      const main = backend.name === 'redis' ? { kind: 'redis' as const, url, keyPrefix: `orrery-${ns}:` } : { kind: 'nats' as const, servers: url, prefix: ns }
      const args = (workMs: number) => [
        backend.name,
        url,
        ns,
        String(AGENTS),
        String(INTERVAL),
        String(DEREGISTER_AFTER),
        String(workMs),
        String(HANDLER_TIMEOUT),
      ]
      // The victim's handlers take 10 s: what it holds when killed is in flight (back on the broker
      // at the lease's threshold, HANDLER_TIMEOUT + 5 s + 1 s), the rest queued.
      const victim = spawnWorker(args(10_000))
      const survivor = spawnWorker(args(5))
      const [victimReady, survivorReady] = await Promise.all([victim.next('ready', 60_000), survivor.next('ready', 60_000)])
      const doomed = victimReady['agents'] as string[]
      const orrery = await Orrery.create({ transports: { main } })
      try {
        const mesh = await orrery.mesh({ shared: 'main', heartbeat: { interval: INTERVAL, deregisterAfter: DEREGISTER_AFTER } })
        const here: MeshEvent[] = []
        mesh.events.subscribe((e) => here.push(e))
        const listed = () => mesh.registry.find({ capability: 'work', minHealth: 'offline' }).length
        await until(() => listed() === 2 * AGENTS, 20_000, 'this process to see every agent')
        const knownBySurvivor = () =>
          new Set(survivor.lines.flatMap((l) => (l.event === 'known' ? (l['agents'] as string[]) : l.event === 'registered' ? [l['agent'] as string] : [])))
        await until(() => doomed.every((id) => knownBySurvivor().has(id)), 20_000, "the survivor to know the victim's agents")
        // 20 messages to each of the victim's agents, sent for `work` as routing sends them.
        const MESSAGES = 20 * AGENTS
        for (let i = 0; i < MESSAGES; i++) await orrery.bus.send(doomed[i % AGENTS]!, { i }, { headers: { 'orrery-capability': 'work' } })
        // It takes its first ones (16 at a time for each agent), then dies with all of them.
        await new Promise((resolve) => setTimeout(resolve, 300))
        const killedAt = Date.now()
        victim.proc.kill('SIGKILL')
        await victim.exited
        const handled = () => {
          const counts = new Map<number, number>()
          for (const l of survivor.lines) if (l.event === 'handled') counts.set(l['i'] as number, (counts.get(l['i'] as number) ?? 0) + 1)
          return counts
        }
        await until(
          () => handled().size === MESSAGES,
          DEADLINE + 20_000,
          "every message queued for the victim's agents to be handled by the survivor",
          () => [...Array(MESSAGES).keys()].filter((i) => !handled().has(i)),
        )
        const allHandled = Date.now() - killedAt
        expect(victim.lines.filter((l) => l.event === 'handled')).toEqual([])
        // Each salvage (one per agent in each of the two other processes: here and the survivor)
        // ends once its inbox stays empty, and says what it did.
        const reports = () =>
          [...here.filter((e) => e.type === 'salvaged'), ...survivor.lines.filter((l) => l.event === 'salvaged')] as Array<{
            agent: string
            rerouted: number
            dropped: number
            deadLettered: number
          }>
        await until(() => reports().length === 2 * AGENTS, 20_000, 'every salvage to end')
        expect(new Set(reports().map((r) => r.agent))).toEqual(new Set(doomed))
        const rerouted = reports().reduce((n, r) => n + r.rerouted, 0)
        // Sent on once each; a second time only if a salvage's lease ran out while it sent one on.
        expect(rerouted).toBeGreaterThanOrEqual(MESSAGES)
        expect([...handled().values()].filter((n) => n > 1).length).toBe(rerouted - MESSAGES)
        expect(reports().every((r) => r.dropped === 0 && r.deadLettered === 0)).toBe(true)
        console.log(
          `[registry processes ${backend.name} ${ENGINE}] salvage: ${MESSAGES} messages queued for the killed process's agents, ${rerouted} sent on (${reports()
            .map((r) => r.rerouted)
            .join(' + ')}), all handled by the survivor ${allHandled} ms after the SIGKILL (deadline ${DEADLINE} ms)`,
        )
        expect(survivorReady['agents']).toHaveLength(AGENTS)
        survivor.proc.stdin!.write('stop\n')
        await survivor.next('stopped', 15_000)
        await mesh.shutdown()
      } finally {
        await stop(orrery)
      }
    })
  })
}
