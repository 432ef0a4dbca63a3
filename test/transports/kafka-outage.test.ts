/**
 * Kafka going away and coming back, on the spare broker (kafka-spare, 19094; test/transports/spare.ts):
 * a process created while the broker is down is refused with TRANSPORT_UNAVAILABLE; a publish
 * whose publishTimeoutMs ends during the outage rejects with TRANSPORT_UNAVAILABLE at that time
 * (no hang), one with time left is written once the broker is back; the group's consumer, whose
 * member the broker keeps through its restart, joins again as that member and reads on within
 * seconds (a consumer joining under a new id waited a session timeout for the old one: 33 s with
 * the default visibility); every failure is a transport-error on the bus's events. Both engines; Node only.
 */
import type { Socket } from 'node:net'

import { afterAll, describe, expect, it } from 'vitest'

import { isOrreryError, Orrery } from '../../ts/node.js'
import { topicPart } from '../../ts/transports/kafka.js'
import { ENGINE } from '../engine.js'
import { listen, poll, range, stop, until, withTimeout } from './backends.js'
import { leaveSpare, mustRun, SPARE_SKIP, SPARE_URL, signalSpare, withSpare } from './spare.js'

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
        // A responder made while the broker is down: its mirror and its start are asked again
        // until the broker answers, and it answers then.
        consumer.bus.respond<number, number>(`${prefix}ask`, (r) => r.payload * 2)
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
        const answer = await producer.bus.request<number>(`${prefix}ask`, 21, { timeout: 30_000 })
        expect(answer.payload).toBe(42)
        expect(errors.items.filter((e) => e.type === 'subscriber-error')).toEqual([])
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

  // A produce the broker stored but never answered (sent to a broker frozen with SIGSTOP, whose
  // connections are then cut from this side: the bytes wait in the broker's socket, and it stores
  // them when woken) must be sent again as it was. Sent with the publishes made meanwhile under its
  // sequence numbers, it was refused as out of order until its write expired; a later produce of as
  // many records then reused those numbers, and the broker took it for a copy of the stored one:
  // answered as written, never stored (the acknowledged m-600 of restart.test.ts's SIGKILL run).
  it('a produce stored but unanswered is sent again as it was: nothing refused, nothing acknowledged lost, nothing stored twice', { timeout: 120_000 }, () =>
    withSpare('kafka-spare', async () => {
      const prefix = `${RUN}-${ENGINE}-unanswered.`
      const ch = `${prefix}jobs`
      const { subscribe, unsubscribe } = await import('node:diagnostics_channel')
      const port = Number(SPARE_URL['kafka-spare'].split(':')[1])
      // Every client socket of this process to the spare: cut while `cutting`.
      const sockets = new Set<Socket>()
      let cutting = false
      const onSocket = (message: unknown) => {
        const socket = (message as { socket: Socket }).socket
        socket.once('connect', () => {
          if (socket.remotePort !== port) return
          if (cutting) socket.destroy()
          else sockets.add(socket)
        })
        socket.once('close', () => sockets.delete(socket))
      }
      subscribe('net.client.socket', onSocket)
      const producer = await open(prefix, { publishTimeoutMs: 15_000 })
      const consumer = await open(prefix)
      let frozen = false
      try {
        const handled = new Map<number, number>()
        consumer.bus.group<number>(ch, 'workers', { from: 'earliest' }).consume((d) => {
          handled.set(d.message.payload, (handled.get(d.message.payload) ?? 0) + 1)
        })
        await producer.bus.publish(ch, 0)
        await until(() => handled.has(0), 30_000, 'the group to read the first')

        const outcomes: Array<{ payload: number; error?: unknown }> = []
        const publish = (payload: number) =>
          producer.bus.publish(ch, payload).then(
            () => void outcomes.push({ payload }),
            (error: unknown) => void outcomes.push({ payload, error }),
          )
        await signalSpare('kafka-spare', 'SIGSTOP')
        frozen = true
        // One record in flight to the frozen broker; one more waiting behind it.
        const writes = [publish(1)]
        await new Promise((resolve) => setTimeout(resolve, 300))
        writes.push(publish(2))
        // The connections cut (and every new one, while cutting): the produce fails, and is tried again.
        cutting = true
        for (const socket of sockets) socket.destroy()
        await new Promise((resolve) => setTimeout(resolve, 2_000))
        cutting = false
        await signalSpare('kafka-spare', 'SIGCONT')
        frozen = false
        await withTimeout(Promise.all(writes), 30_000, 'the publishes made while the broker was frozen')
        // One more after, alone: a produce of one record, as many as the one stored unanswered.
        await publish(3)

        const failures = outcomes.filter((o) => o.error !== undefined).map((o) => ({ payload: o.payload, error: String(o.error) }))
        expect.soft(failures).toEqual([])
        await until(
          () => range(0, 4).every((i) => handled.has(i)),
          30_000,
          'every acknowledged publish at the group',
          () => range(0, 4).filter((i) => !handled.has(i)),
        )
        // The broker has each once: the produce sent again unchanged was answered as the one it had.
        const kafka = await import('@platformatic/kafka')
        const raw = new kafka.Consumer({ clientId: 'orrery-test', bootstrapBrokers: [SPARE_URL['kafka-spare']], groupId: `${prefix}raw` })
        try {
          const ends = await raw.listOffsets({ topics: [`orrery-ch-${topicPart(ch)}`], timestamp: -1n })
          expect([...ends.values()][0]![0]).toBe(4n)
        } finally {
          await raw.close(true)
        }
      } finally {
        unsubscribe('net.client.socket', onSocket)
        cutting = false
        if (frozen) await signalSpare('kafka-spare', 'SIGCONT')
        for (const o of [producer, consumer]) await stop(o)
      }
    }),
  )

  // The producer's requests waited 30 s for an answer (the client's default), as long as the
  // default publishTimeoutMs: a produce to a frozen broker was never sent again before its
  // publishes expired (on a cluster, a new leader would never be tried). The producer's request
  // timeout is now a third of publishTimeoutMs: 4 s here, so it is sent again at about 4 s (the
  // margins are wide for a loaded machine: the broker is slow for seconds after it wakes).
  // Skipped: whether the client sends the produce again while the broker is frozen is not
  // deterministic here (under Node 24 in CI, 1 produce in 8 s with a 4 s request timeout; the
  // client keeps the frozen socket after a timeout). The retry it checks needs a multi-broker
  // cluster to matter; kept to be made deterministic, not run.
  it.skip('a produce to a frozen broker is sent again within publishTimeoutMs, and stored once when the broker wakes', { timeout: 120_000 }, () =>
    withSpare('kafka-spare', async () => {
      const prefix = `${RUN}-${ENGINE}-frozen.`
      const ch = `${prefix}jobs`
      const { subscribe, unsubscribe } = await import('node:diagnostics_channel')
      // Produce requests (API key 0) this process sends.
      let produces = 0
      const onRequest = (message: unknown) => {
        if ((message as { apiKey?: number }).apiKey === 0) produces++
      }
      const producer = await open(prefix, { publishTimeoutMs: 12_000 })
      let frozen = false
      try {
        await producer.bus.publish(ch, 0)
        subscribe('tracing:plt:kafka:connections:api:start', onRequest)
        await signalSpare('kafka-spare', 'SIGSTOP')
        frozen = true
        const at = Date.now()
        const written = producer.bus.publish(ch, 1).then(
          () => Date.now() - at,
          (error: unknown) => error,
        )
        // Woken as soon as the produce was sent again (or at 8 s, which fails below): a fixed
        // freeze either ended before a loaded machine's retry or left the publish too little time.
        const until = Date.now() + 8_000
        while (produces < 2 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 50))
        const sent = produces
        const frozenMs = Date.now() - at
        await signalSpare('kafka-spare', 'SIGCONT')
        frozen = false
        const ms = await written
        expect(typeof ms, String(ms)).toBe('number')
        expect(sent, 'produce requests sent while the broker was frozen (up to 8 s)').toBeGreaterThanOrEqual(2)
        // Every copy carried the same sequence numbers: the broker stored it once.
        const kafka = await import('@platformatic/kafka')
        const raw = new kafka.Consumer({ clientId: 'orrery-test', bootstrapBrokers: [SPARE_URL['kafka-spare']], groupId: `${prefix}raw` })
        try {
          const ends = await raw.listOffsets({ topics: [`orrery-ch-${topicPart(ch)}`], timestamp: -1n })
          expect([...ends.values()][0]![0]).toBe(2n)
        } finally {
          await raw.close(true)
        }
        console.info(
          `kafka frozen broker (${ENGINE}): ${sent} produce requests while frozen for ${frozenMs} ms; the publish resolved ${ms} ms after it was made`,
        )
      } finally {
        unsubscribe('tracing:plt:kafka:connections:api:start', onRequest)
        if (frozen) await signalSpare('kafka-spare', 'SIGCONT')
        await stop(producer)
      }
    }),
  )

  // The Kafka counterpart of a NATS server back without its data: the topic is made again and
  // numbers its offsets from 0 again, so acks of what a process held of the old topic must not
  // commit offsets of the new one (that would skip the new records).
  it("a broker back without its data: acks of the old topic's records skip nothing of the new topic's", { timeout: 180_000 }, () =>
    withSpare('kafka-spare', async () => {
      const prefix = `${RUN}-${ENGINE}-wiped.`
      const ch = `${prefix}jobs`
      const a = await open(prefix)
      const b = await open(prefix)
      const events = listen(a.bus.events)
      // b's reports of the outage are expected: heard, so they are not printed.
      const bEvents = listen(b.bus.events)
      try {
        const got = listen(a.bus.group<number>(ch, 'w', { from: 'earliest' }).join({ maxInFlight: 3 }))
        const seen = listen(a.bus.subscribe<number>(ch, { from: 'earliest' }))
        // b answers a's requests: a's reply topic is lost with the data too.
        b.bus.respond<number, number>(`${prefix}double`, (req) => req.payload * 2, { group: 'doublers' })
        expect((await a.bus.request<number>(`${prefix}double`, 1, { timeout: 30_000 })).payload).toBe(2)
        // 0 is acked and committed (the group's offset then goes back to the new topic's start); 1 to 3 are held.
        await b.bus.publish(ch, 0)
        await until(() => got.items.length >= 1, 30_000, 'a to take 0')
        got.items[0]!.ack()
        await new Promise((resolve) => setTimeout(resolve, 1_000))
        await b.bus.publishBatch([1, 2, 3].map((payload) => ({ channel: ch, payload })))
        await until(() => got.items.length >= 4 && seen.items.length >= 4, 30_000, 'a to hold 1, 2 and 3')
        await mustRun('stop', 'kafka-spare')
        await mustRun('start', '--for', String(process.pid), 'kafka-spare')
        await withTimeout(
          b.bus.publishBatch([11, 12, 13].map((payload) => ({ channel: ch, payload }))),
          60_000,
          'the publishes to the broker back without its data',
        )
        for (const d of got.items.slice(1, 4)) d.ack()
        await until(
          () => [11, 12, 13].every((n) => got.items.some((d) => d.message.payload === n)),
          90_000,
          "a to read the new topic's records",
          () => got.items.map((d) => d.message.payload),
        )
        expect(got.items.slice(4).map((d) => [d.message.payload, d.attempt])).toEqual([
          [11, 1],
          [12, 1],
          [13, 1],
        ])
        for (const d of got.items.slice(4)) d.ack()
        // A subscriber reads the new topic too.
        await until(
          () => seen.items.length >= 7,
          60_000,
          "a's subscriber to read the new topic",
          () => seen.items.map((m) => m.payload),
        )
        expect(seen.items.map((m) => m.payload)).toEqual([0, 1, 2, 3, 11, 12, 13])
        expect(events.items.some((e) => e.type === 'transport-error' && /made again/.test(e.error.message))).toBe(true)
        // Requests cross again: the request topic and a's reply topic are made again.
        const answer = await poll(
          () =>
            a.bus.request<number>(`${prefix}double`, 2, { timeout: 5_000 }).then(
              (r) => r.payload,
              () => undefined,
            ),
          60_000,
          "a's request to be answered again",
        )
        expect(answer).toBe(4)
      } finally {
        bEvents.subscription.unsubscribe()
        events.subscription.unsubscribe()
        for (const o of [a, b]) await stop(o)
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
