/**
 * Kafka going away and coming back, on the spare broker (kafka-spare, 19094; test/transports/spare.ts):
 * a process created while the broker is down is refused with TRANSPORT_UNAVAILABLE; a publish
 * whose publishTimeoutMs ends during the outage rejects with TRANSPORT_UNAVAILABLE at that time
 * (no hang), one with time left is written once the broker is back; the group's consumer, whose
 * member the broker keeps through its restart, joins again as that member and reads on within
 * seconds (a consumer joining under a new id waited a session timeout for the old one: 33 s with
 * the default visibility); every failure is a transport-error on the bus's events. Both engines; Node only.
 */
import { afterAll, describe, expect, it } from 'vitest'

import { isOrreryError, Orrery } from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { listen, range, stop, until, withTimeout } from './backends.js'
import { leaveSpare, mustRun, SPARE_SKIP, SPARE_URL, withSpare } from './spare.js'

const RUN = `ko-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`

describe.skipIf(SPARE_SKIP !== undefined)(`kafka broker outage (${ENGINE})${SPARE_SKIP ? ` [skipped: ${SPARE_SKIP}]` : ''}`, () => {
  afterAll(() => leaveSpare('kafka-spare'), 60_000)

  const open = (prefix: string, extra: Record<string, unknown> = {}): Promise<Orrery> =>
    Orrery.create({
      transports: { main: { kind: 'kafka', brokers: SPARE_URL['kafka-spare'], connectTimeoutMs: 2_000, ...extra } as never },
      bindings: { [`${prefix}*`]: 'main' },
    })

  it('down at create: refused; publishes fail typed at their timeout or land after; the group reads on as the same member', { timeout: 180_000 }, () =>
    withSpare('kafka-spare', async () => {
      const prefix = `${RUN}-${ENGINE}.`
      const ch = `${prefix}jobs`
      const producer = await open(prefix)
      const impatient = await open(prefix, { publishTimeoutMs: 2_000 })
      const consumer = await open(prefix)
      const errors = listen(consumer.bus.events)
      try {
        const handled = new Map<number, number>()
        consumer.bus.group<number>(ch, 'workers', { from: 'earliest' }).consume(
          (d) => {
            handled.set(d.message.payload, (handled.get(d.message.payload) ?? 0) + 1)
          },
          { maxInFlight: 8 },
        )
        await producer.bus.publishBatch(range(0, 20).map((payload) => ({ channel: ch, payload })))
        await until(() => handled.size >= 20, 30_000, 'the group to consume the first 20')

        await mustRun('stop', 'kafka-spare')
        const downAt = Date.now()
        // A process starting now is refused, within its connectTimeoutMs.
        const refused = await open(prefix).then(
          (o) => {
            o.close()
            return undefined
          },
          (error: unknown) => error,
        )
        expect(isOrreryError(refused, 'TRANSPORT_UNAVAILABLE'), String(refused)).toBe(true)
        expect(Date.now() - downAt).toBeLessThan(6_000)
        // A publish with 2 s to live rejects at its timeout, typed; those with 30 s wait.
        const shortAt = Date.now()
        const short = await impatient.bus.publish(ch, -1).then(
          () => undefined,
          (error: unknown) => error,
        )
        const shortMs = Date.now() - shortAt
        expect(isOrreryError(short, 'TRANSPORT_UNAVAILABLE'), String(short)).toBe(true)
        expect(shortMs).toBeGreaterThanOrEqual(1_900)
        expect(shortMs).toBeLessThan(4_000)
        const waiting = range(20, 30).map((payload) => producer.bus.publish(ch, payload))
        // Down long enough for every client to have failed at least once (fetches, coordinators).
        await new Promise((resolve) => setTimeout(resolve, 6_000 - (Date.now() - downAt)))

        await mustRun('start', '--keep', '--for', String(process.pid), 'kafka-spare')
        const backAt = Date.now()
        await withTimeout(Promise.all(waiting), 30_000, 'the publishes made while the broker was down')
        await producer.bus.publishBatch(range(30, 40).map((payload) => ({ channel: ch, payload })))
        await until(
          () => range(0, 40).every((i) => handled.has(i)),
          60_000,
          'the group to read on after the broker came back',
          () => range(0, 40).filter((i) => !handled.has(i)),
        )
        const resumedMs = Date.now() - backAt
        // Well inside the session timeout (33 s here) a consumer under a new member id waited.
        expect(resumedMs).toBeLessThan(20_000)
        expect(handled.has(-1)).toBe(false)
        const reported = errors.items.filter((e) => e.type === 'transport-error')
        expect(reported.length, 'the outage is reported on the bus events').toBeGreaterThan(0)
        console.info(
          `kafka outage (${ENGINE}): short publish rejected after ${shortMs} ms; the group had all 40 ${resumedMs} ms after the broker was back; ${reported.length} transport-error events; ${[...handled.values()].filter((n) => n > 1).length} handled twice`,
        )
      } finally {
        errors.subscription.unsubscribe()
        for (const o of [producer, impatient, consumer]) await stop(o)
      }
    }),
  )

  it('shut down while the broker is down: the process has nothing left open', { timeout: 120_000 }, () =>
    withSpare('kafka-spare', async () => {
      const prefix = `${RUN}-${ENGINE}-shut.`
      const ch = `${prefix}jobs`
      const o = await open(prefix, { publishTimeoutMs: 1_000 })
      const events = listen(o.bus.events)
      try {
        const got = listen(o.bus.group<number>(ch, 'w', { from: 'earliest' }).join({ maxInFlight: 4 }))
        listen(o.bus.subscribe<number>(ch))
        await o.bus.publish(ch, 1)
        await until(() => got.items.length >= 1, 30_000, 'the first delivery')
        await mustRun('stop', 'kafka-spare')
        const { getActiveResourcesInfo } = process
        const before = getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPWRAP').length
        await withTimeout(o.shutdown(), 20_000, 'shutdown with the broker down')
        o.close()
        // The group's consumer could not leave (no broker): it is closed all the same, as are the
        // mirror's, the producer's and the admin's connections.
        await until(
          () => getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPWRAP').length === 0,
          10_000,
          'every Kafka socket closed',
          () => ({ before, now: getActiveResourcesInfo() }),
        )
      } finally {
        events.subscription.unsubscribe()
        await stop(o)
      }
    }),
  )
})
