/**
 * The Kafka driver beyond the contract suite: its options, what it makes on the broker (topics,
 * their configs, retention trimmed with DeleteRecords, group offsets committed as the acked
 * prefix), and how its groups share work across instances (by partition: what one instance held
 * unacked goes to the next holder of the partition, counted from 1 there). Read back with
 * @platformatic/kafka's own admin client. Both engines; Node only.
 */
import { describe, expect, it } from 'vitest'

import { runnerLink } from '../../ts/bus/bus.js'
import { isOrreryError, Orrery } from '../../ts/node.js'
import { REQUEST_BYTES } from '../../ts/transports/kafka.js'
import { ENGINE, IN_BROWSER } from '../engine.js'
import { listen, poll, range, stop, until, withTimeout } from './backends.js'

type Env = Record<string, string | undefined>
const env: Env = (globalThis as { process?: { env: Env } }).process?.env ?? {}

const brokers = (await import('vitest')).inject('kafkaBrokers')
const skip = IN_BROWSER ? 'a browser page cannot reach Kafka' : env['ORRERY_SERVERS'] === 'none' ? 'ORRERY_SERVERS=none' : undefined

const RUN = `kd-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
let n = 0
const prefix = () => `${RUN}-${++n}.`

/** The topic Orrery makes for `channel` with the default prefix (`.` is `_2E`, `-` stays). */
const topicOf = (channel: string) => `orrery-ch-${channel.replace(/[^A-Za-z0-9-]/g, (c) => `_${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)}`

async function admin() {
  const kafka = await import('@platformatic/kafka')
  return new kafka.Admin({ clientId: 'orrery-test', bootstrapBrokers: [brokers!] })
}

async function open(p: string, extra: Record<string, unknown> = {}): Promise<Orrery> {
  return Orrery.create({ transports: { main: { kind: 'kafka', brokers: brokers!, ...extra } as never }, bindings: { [`${p}*`]: 'main' } })
}

/**
 * Runs `test` with an Orrery on a fresh prefix `p` and its topic for channel `strict` made beforehand
 * with max.message.bytes 2000 (a record of 5,000 bytes is refused); `end(channel)` is the end
 * offset of the channel's first partition, read with the client's own consumer.
 */
async function withStrictTopic(
  test: (t: { p: string; o: Orrery; strict: string; end: (channel: string) => Promise<bigint | undefined> }) => Promise<void>,
): Promise<void> {
  const p = prefix()
  const o = await open(p)
  const a = await admin()
  const kafka = await import('@platformatic/kafka')
  const reader = new kafka.Consumer({ clientId: 'orrery-test', bootstrapBrokers: [brokers!], groupId: `${p}raw` })
  try {
    const strict = `${p}strict`
    await a.createTopics({ topics: [topicOf(strict)], partitions: 1, replicas: 1, configs: [{ name: 'max.message.bytes', value: '2000' }] })
    const end = async (ch: string) => (await reader.listOffsets({ topics: [topicOf(ch)], timestamp: -1n })).get(topicOf(ch))?.[0]
    await test({ p, o, strict, end })
  } finally {
    await reader.close(true)
    await a.close()
    await stop(o)
  }
}

describe.skipIf(skip !== undefined)(`kafka driver${skip ? ` [skipped: ${skip}]` : ''}`, () => {
  it('refuses bad options before connecting, and an unreachable broker within connectTimeoutMs', async () => {
    const bad = async (options: Record<string, unknown>) => {
      try {
        await Orrery.create({ transports: { main: { kind: 'kafka', ...options } as never } })
        return undefined
      } catch (error) {
        return error
      }
    }
    for (const [options, option] of [
      [{}, 'transports.main.brokers'],
      [{ brokers: 'localhost' }, 'transports.main.brokers'],
      [{ brokers: ['127.0.0.1:19092', 'h:70000'] }, 'transports.main.brokers[1]'],
      [{ brokers: '127.0.0.1:19092', partitions: 0 }, 'transports.main.partitions'],
      [{ brokers: '127.0.0.1:19092', prefix: 'a.b' }, 'transports.main.prefix'],
      [{ brokers: '127.0.0.1:19092', sasl: { mechanism: 'MD5', username: 'u', password: 'p' } }, 'transports.main.sasl.mechanism'],
    ] as const) {
      const error = await bad(options)
      expect(isOrreryError(error, 'INVALID_OPTION'), `${JSON.stringify(options)}: ${String(error)}`).toBe(true)
      expect((error as Error).message).toContain(option)
    }
    const started = Date.now()
    const error = await bad({ brokers: '127.0.0.1:1', connectTimeoutMs: 1_000 })
    expect(isOrreryError(error, 'TRANSPORT_UNAVAILABLE'), String(error)).toBe(true)
    expect(Date.now() - started).toBeLessThan(5_000)
  })

  it('a channel is a topic with the broker clock; retention by count and age is set on it and trimmed exactly', { timeout: 60_000 }, async () => {
    const p = prefix()
    const o = await open(p)
    const a = await admin()
    try {
      const ch = `${p}kept`
      o.bus.channel(ch, { retention: { maxCount: 5, maxAgeMs: 3_600_000 } })
      await o.bus.publishBatch(range(0, 12).map((payload) => ({ channel: ch, payload })))
      await o.bus.publish(ch, 12)
      const topic = topicOf(ch)
      const [config] = await a.describeConfigs({
        resources: [{ resourceType: 2, resourceName: topic, configurationKeys: ['message.timestamp.type', 'retention.ms'] }],
      } as never)
      const values = Object.fromEntries((config as { configs: Array<{ name: string; value: string }> }).configs.map((c) => [c.name, c.value]))
      expect(values).toEqual({ 'message.timestamp.type': 'LogAppendTime', 'retention.ms': '3600000' })
      // DeleteRecords moved the partition's start: 13 written, the last 5 kept.
      let start = -1n
      const deadline = Date.now() + 20_000
      while (Date.now() < deadline) {
        const [listed] = await a.listOffsets({ topics: [{ name: topic, partitions: [{ partitionIndex: 0, timestamp: -2n }] }] } as never)
        start = (listed as { partitions: Array<{ offset: bigint }> }).partitions[0]!.offset
        if (start === 8n) break
        await new Promise((r) => setTimeout(r, 100))
      }
      expect(start).toBe(8n)
      // Another instance replays what the broker kept.
      const other = await open(p)
      try {
        const got = listen(other.bus.subscribe<number>(ch, { from: 'earliest' }))
        await until(() => got.items.length >= 5, 20_000, 'the 5 kept records')
        expect(got.items.map((m) => m.payload)).toEqual([8, 9, 10, 11, 12])
      } finally {
        await stop(other)
      }
    } finally {
      await a.close()
      await stop(o)
    }
  })

  it('a group commits the acked prefix: a nacked record holds the offset until it is acked', { timeout: 60_000 }, async () => {
    const p = prefix()
    const o = await open(p)
    const a = await admin()
    try {
      const ch = `${p}jobs`
      const group = o.bus.group<number>(ch, 'w', { from: 'earliest' })
      const got = listen(group.join({ maxInFlight: 10 }))
      await o.bus.publishBatch(range(0, 4).map((payload) => ({ channel: ch, payload })))
      await until(() => got.items.length >= 4, 20_000, 'the 4 deliveries')
      const committed = async () => {
        const [g] = await a.listConsumerGroupOffsets({ groups: [`orrery-g-${topicOf(ch).slice('orrery-ch-'.length)}-w`] })
        return g?.topics[0]?.partitions[0]?.committedOffset ?? -1n
      }
      const waitCommitted = async (offset: bigint) => {
        const deadline = Date.now() + 20_000
        let at = await committed()
        while (Date.now() < deadline && at !== offset) {
          await new Promise((r) => setTimeout(r, 100))
          at = await committed()
        }
        expect(at).toBe(offset)
      }
      // 0 acked, 1 nacked (redelivered here, count 2), 2 and 3 acked: the offset stops at 1.
      got.items[0]!.ack()
      got.items[1]!.nack()
      got.items[2]!.ack()
      got.items[3]!.ack()
      await waitCommitted(1n)
      await until(() => got.items.length >= 5, 20_000, 'the redelivery')
      expect([got.items[4]!.message.payload, got.items[4]!.attempt]).toEqual([1, 2])
      got.items[4]!.ack()
      await waitCommitted(4n)
    } finally {
      await a.close()
      await stop(o)
    }
  })

  // A fetch brings up to 1 MiB of a partition, thousands of small records: the group reads no
  // more of them than its members have room for, the rest waiting in this process unread. Handed
  // all to the core at once, those waiting past the visibility timeout were let go and counted as
  // delivered again before any member had seen them.
  it('a group hands its members no more than their room: slow members see each record once, on its first attempt', { timeout: 60_000 }, async () => {
    const p = prefix()
    const o = await open(p)
    try {
      const ch = `${p}slow`
      await o.bus.publishBatch(range(0, 300).map((payload) => ({ channel: ch, payload })))
      const attempts = new Map<number, number[]>()
      o.bus
        .group<number>(ch, 'w', { from: 'earliest', visibilityTimeout: 400 })
        .join({ maxInFlight: 2 })
        .subscribe((d) => {
          attempts.set(d.message.payload, [...(attempts.get(d.message.payload) ?? []), d.attempt])
          setTimeout(() => d.ack(), 5)
        })
      await until(() => attempts.size === 300, 40_000, 'the 300 deliveries')
      await new Promise((r) => setTimeout(r, 500))
      expect([...attempts.values()].filter((a) => a.length !== 1 || a[0] !== 1)).toEqual([])
    } finally {
      await stop(o)
    }
  })

  it('a record with no value (a tombstone another client wrote) is passed over and committed; the group reads on', { timeout: 60_000 }, async () => {
    const p = prefix()
    const o = await open(p)
    const a = await admin()
    const kafka = await import('@platformatic/kafka')
    const producer = new kafka.Producer({ clientId: 'orrery-test', bootstrapBrokers: [brokers!] })
    try {
      const ch = `${p}mixed`
      const group = o.bus.group<number>(ch, 'w', { from: 'earliest' })
      const got = listen(group.join({ maxInFlight: 10 }))
      await o.bus.publish(ch, 0)
      await until(() => got.items.length >= 1, 20_000, 'the first delivery')
      await producer.send({ messages: [{ topic: topicOf(ch), key: Buffer.from('k'), value: null as unknown as Buffer }] })
      await o.bus.publish(ch, 2)
      await until(() => got.items.length >= 2, 20_000, 'the delivery after the tombstone')
      expect(got.items.map((d) => d.message.payload)).toEqual([0, 2])
      for (const d of got.items) d.ack()
      const committed = async () => {
        const [g] = await a.listConsumerGroupOffsets({ groups: [`orrery-g-${topicOf(ch).slice('orrery-ch-'.length)}-w`] })
        return g?.topics[0]?.partitions[0]?.committedOffset ?? -1n
      }
      const deadline = Date.now() + 20_000
      while (Date.now() < deadline && (await committed()) !== 3n) await new Promise((r) => setTimeout(r, 100))
      expect(await committed()).toBe(3n)
    } finally {
      await producer.close().catch(() => {})
      await a.close()
      await stop(o)
    }
  })

  // Commits wait for a look at the topic after each join (a topic made again must not take the
  // old one's offsets). A shutdown before that look was answered committed nothing: the next
  // holder read again all that was acked. The look is stalled here (never answered).
  it('a shutdown before the look at the topic after a join is answered still commits what was acked', { timeout: 60_000 }, async () => {
    const { KafkaDriver } = await import('../../ts/transports/kafka.js')
    const p = prefix()
    const ch = `${p}jobs`
    const topicId = KafkaDriver.prototype.topicId
    let looks = 0
    const o = await open(p)
    const a = await admin()
    try {
      KafkaDriver.prototype.topicId = function (this: InstanceType<typeof KafkaDriver>, channel: string) {
        if (channel === ch && looks++ === 0) return new Promise<string>(() => {})
        return topicId.call(this, channel)
      }
      const got = listen(o.bus.group<number>(ch, 'w', { from: 'earliest' }).join({ maxInFlight: 10 }))
      await o.bus.publishBatch(range(0, 4).map((payload) => ({ channel: ch, payload })))
      await until(() => got.items.length >= 4, 20_000, 'the 4 deliveries')
      for (const d of got.items) d.ack()
      await o.shutdown()
      // The join's look was made, and never answered.
      expect(looks).toBeGreaterThanOrEqual(1)
      const [g] = await a.listConsumerGroupOffsets({ groups: [`orrery-g-${topicOf(ch).slice('orrery-ch-'.length)}-w`] })
      expect(g?.topics[0]?.partitions[0]?.committedOffset).toBe(4n)
    } finally {
      KafkaDriver.prototype.topicId = topicId
      await a.close()
      await stop(o)
    }
  })

  // A consumer that joined before the start was set made the group non-empty, so setting it
  // failed; with nothing committed, a consumer made again after a broker crash started at the
  // then-latest offset and skipped all published while the broker was away.
  it('a group from latest has its start committed on the broker before its consumer joins', { timeout: 60_000 }, async () => {
    const p = prefix()
    const o = await open(p)
    const a = await admin()
    try {
      const ch = `${p}jobs`
      await o.bus.publishBatch(range(0, 3).map((payload) => ({ channel: ch, payload })))
      const got = listen(o.bus.group<number>(ch, 'w').join({ maxInFlight: 10 }))
      const committed = async () => {
        const [g] = await a.listConsumerGroupOffsets({ groups: [`orrery-g-${topicOf(ch).slice('orrery-ch-'.length)}-w`] })
        return g?.topics[0]?.partitions[0]?.committedOffset ?? -1n
      }
      // Nothing is delivered, so nothing is acked: only the start can be committed.
      let at = await committed()
      const deadline = Date.now() + 10_000
      while (Date.now() < deadline && at !== 3n) {
        await new Promise((r) => setTimeout(r, 100))
        at = await committed()
      }
      expect(at).toBe(3n)
      await o.bus.publish(ch, 3)
      await until(() => got.items.length >= 1, 20_000, 'the delivery')
      expect(got.items.map((d) => d.message.payload)).toEqual([3])
    } finally {
      await a.close()
      await stop(o)
    }
  })

  // close() let a consumer still joining go unclosed: its stream did not exist yet, so nothing
  // closed the consumer, and the stream that came later was closed alone. Its socket stayed open
  // (15 s and more) and its member stayed in the group, heartbeating.
  it('close while a group consumer is still joining: its sockets close and it leaves the group', { timeout: 60_000 }, async () => {
    const { subscribe, unsubscribe } = await import('node:diagnostics_channel')
    const p = prefix()
    const ch = `${p}jobs`
    const groupId = `orrery-g-${topicOf(ch).slice('orrery-ch-'.length)}-w`
    // Every socket this process opens from now on, and the moment the group's consumer is made.
    const sockets = new Set<import('node:net').Socket>()
    const onSocket = (message: unknown) => {
      const socket = (message as { socket: import('node:net').Socket }).socket
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
    }
    let made: () => void = () => {}
    const consumerMade = new Promise<void>((resolve) => {
      made = resolve
    })
    const onInstance = (message: unknown) => {
      const { type, instance } = message as { type: string; instance: { groupId?: string } }
      if (type === 'consumer' && instance.groupId === groupId) made()
    }
    subscribe('net.client.socket', onSocket)
    subscribe('plt:kafka:instances', onInstance)
    const o = await open(p)
    const a = await admin()
    try {
      o.bus
        .group<number>(ch, 'w', { from: 'earliest' })
        .join({ maxInFlight: 4 })
        .subscribe(() => {})
      await withTimeout(consumerMade, 20_000, 'the group consumer to be made')
      // Closed while the consumer joins (its stream is not there yet).
      o.close()
      await until(
        () => sockets.size === 0,
        10_000,
        'every socket of the closed Orrery closed',
        () => sockets.size,
      )
      const members = async () => (await a.describeGroups({ groups: [groupId] })).get(groupId)?.members.size ?? 0
      let left = await members()
      const deadline = Date.now() + 10_000
      while (Date.now() < deadline && left > 0) {
        await new Promise((r) => setTimeout(r, 200))
        left = await members()
      }
      expect(left, 'members left in the group').toBe(0)
    } finally {
      unsubscribe('net.client.socket', onSocket)
      unsubscribe('plt:kafka:instances', onInstance)
      await a.close()
      await stop(o)
    }
  })

  // Produces are encoded by the driver (kafka-produce.ts), not by the client: Kafka's own decoder
  // (the client's) reads one back field by field, its crc included.
  it("a produce's record batch reads back through the client's decoder: fields, crc, values, headers", async () => {
    const kafka = await import('@platformatic/kafka')
    const { encodeBatch } = await import('../../ts/transports/kafka-produce.js')
    // Lengths and offset deltas of one, two and three varint bytes.
    const values = [Buffer.alloc(0), Buffer.from('x'.repeat(200)), Buffer.alloc(20_000, 7), ...range(0, 297).map((i) => Buffer.from(`v${i}`))]
    const headersOf = (i: number): Array<[Buffer, Buffer]> | undefined =>
      i % 3 === 0 ? undefined : range(0, i % 3).map((h) => [Buffer.from(`k${h}`), Buffer.from('h'.repeat(i))])
    const records = values.map((value, i) => ({ topic: 't', place: { slot: i }, value, headers: headersOf(i) }))
    const timestamp = 1_780_000_000_123
    const encoded = encodeBatch(records, { producerId: 123_456_789_012n, epoch: 7, sequence: 2 ** 31 - 5, timestamp }, kafka.crc32c)
    const batch = kafka.readRecordsBatch(kafka.Reader.from(encoded))
    expect(batch).toMatchObject({
      firstOffset: 0n,
      length: encoded.length - 12,
      magic: 2,
      crc: kafka.crc32c(encoded.subarray(21)),
      attributes: 0,
      lastOffsetDelta: 299,
      firstTimestamp: BigInt(timestamp),
      maxTimestamp: BigInt(timestamp),
      producerId: 123_456_789_012n,
      producerEpoch: 7,
      firstSequence: 2 ** 31 - 5,
    })
    expect(batch.records.length).toBe(300)
    batch.records.forEach((r, i) => {
      expect([r.offsetDelta, r.timestampDelta, r.key]).toEqual([i, 0n, null])
      expect(Buffer.compare(r.value ?? Buffer.from('-'), values[i]!), `value ${i}`).toBe(0)
      expect(r.headers.map(([k, v]) => [String(k), String(v)])).toEqual((headersOf(i) ?? []).map(([k, v]) => [String(k), String(v)]))
    })
  })

  // The driver writes the produce request too, in the version the client and broker share: 11
  // here, 7 or 8 (not "flexible": no compact fields) with a broker before Kafka 2.8. Each
  // version the driver can write is sent to the broker, which stores every record once, in order.
  it('a produce request of each version the driver writes (8 and 11) is stored by the broker, in order, sequence numbers going on', {
    timeout: 60_000,
  }, async () => {
    const kafka = await import('@platformatic/kafka')
    const { KafkaProduces } = await import('../../ts/transports/kafka-produce.js')
    const a = await admin()
    const options = { clientId: 'orrery-test', bootstrapBrokers: [brokers!] }
    const producer = new kafka.Producer({ ...options, idempotent: true, acks: -1 } as never) as never
    const reader = new kafka.Consumer({ ...options, groupId: `${RUN}-versions` })
    try {
      for (const version of [8, 11]) {
        const topic = `${RUN}-v${version}`
        await a.createTopics({ topics: [topic], partitions: 1, replicas: 1 })
        const produces = new KafkaProduces(kafka, producer)
        const module = (kafka as unknown as Record<string, { parseResponse: never }>)[`produceV${version}`]!
        Object.assign(produces, { version: { version, parseResponse: module.parseResponse } })
        const records = (from: number, count: number) =>
          range(from, from + count).map((i) => ({
            topic,
            place: { slot: i },
            value: Buffer.from(`r${i}`),
            headers: [[Buffer.from('h'), Buffer.from(String(i))]] as const,
          }))
        await produces.send(records(0, 3))
        await produces.send(records(3, 2))
        expect((await reader.listOffsets({ topics: [topic], timestamp: -1n })).get(topic), `v${version}`).toEqual([5n])
        const stream = await reader.consume({ topics: [topic], mode: kafka.MessagesStreamModes.EARLIEST, autocommit: false } as never)
        const read: string[] = []
        for await (const m of stream as AsyncIterable<{ value: Buffer; headers: Map<Buffer, Buffer> }>) {
          read.push(`${m.value}:${[...m.headers.values()].map(String).join()}`)
          if (read.length === 5) break
        }
        await (stream as { close(): Promise<void> }).close()
        expect(read, `v${version}`).toEqual(range(0, 5).map((i) => `r${i}:${i}`))
      }
    } finally {
      await reader.close(true)
      await (producer as { close(force: boolean): Promise<void> }).close(true)
      await a.close()
    }
  })

  // A produce carries the records of every topic a turn wrote to, and the broker answers each
  // partition on its own: before, one refused partition failed the writes of the others, though
  // the broker had stored them.
  it("one produce to two topics, one refusing its record: the other's is stored once and its publish succeeds; both write on", {
    timeout: 60_000,
  }, async () => {
    await withStrictTopic(async ({ p, o, strict, end }) => {
      const other = `${p}other`
      // The first publish goes at once; the two after it wait for its answer and go in one produce.
      const [first, big, fine] = await Promise.allSettled([
        o.bus.publish(other, 'first'),
        o.bus.publish(strict, 'y'.repeat(5_000)),
        o.bus.publish(other, 'stored'),
      ])
      expect(first.status).toBe('fulfilled')
      expect(big.status === 'rejected' && isOrreryError(big.reason, 'MESSAGE_TOO_LARGE'), String((big as PromiseRejectedResult).reason)).toBe(true)
      // It says how large the message was (its frame: the 5,000-byte payload and the frame's own fields).
      const bytes = (big as PromiseRejectedResult).reason.details.bytes as number
      expect(bytes).toBeGreaterThan(5_000)
      expect(bytes).toBeLessThan(5_200)
      expect(fine.status, String((fine as PromiseRejectedResult).reason)).toBe('fulfilled')
      expect([await end(strict), await end(other)]).toEqual([0n, 2n])
      // Each partition's sequence numbers are where the broker has them: the next records are stored, once.
      await o.bus.publishBatch([
        { channel: strict, payload: 'small' },
        { channel: other, payload: 'again' },
      ])
      expect([await end(strict), await end(other)]).toEqual([1n, 3n])
      const got = listen(o.bus.subscribe<string>(other, { from: 'earliest' }))
      await until(() => got.items.length >= 3, 20_000, 'the records of the other topic')
      expect(got.items.map((m) => m.payload)).toEqual(['first', 'stored', 'again'])
    })
  })

  // A produce whose partitions answer three ways: stored, refused, and an error a retry mends
  // (here a sequence number the broker did not expect, made by moving the driver's own number for
  // that partition on by 3: the broker answers OUT_OF_ORDER_SEQUENCE_NUMBER for it alone).
  it("one produce stored in one partition, refused in another, out of sequence in a third: the third's record goes again, from a new producer, and is stored once", {
    timeout: 60_000,
  }, async () => {
    await withStrictTopic(async ({ p, o, strict, end }) => {
      const [skewed, other] = [`${p}skewed`, `${p}other`]
      await o.bus.publishBatch([
        { channel: skewed, payload: 'first' },
        { channel: other, payload: 'first' },
      ])
      const driver = runnerLink(o.bus).transports!.transportNamed('main')!.driver as unknown as { produces: { sequences: Map<string, number> } }
      const before = driver.produces
      const sequences = before.sequences
      const key = `${topicOf(skewed)}\u00000`
      expect(sequences.get(key)).toBe(1)
      sequences.set(key, 4)
      // The first publish goes at once; the three after it wait for its answer and go in one produce.
      const [lead, big, gap, fine] = await Promise.allSettled([
        o.bus.publish(other, 'lead'),
        o.bus.publish(strict, 'y'.repeat(5_000)),
        o.bus.publish(skewed, 'second'),
        o.bus.publish(other, 'stored'),
      ])
      expect(lead.status).toBe('fulfilled')
      expect(big.status === 'rejected' && isOrreryError(big.reason, 'MESSAGE_TOO_LARGE'), String((big as PromiseRejectedResult).reason)).toBe(true)
      expect(gap.status, String((gap as PromiseRejectedResult).reason)).toBe('fulfilled')
      expect(fine.status, String((fine as PromiseRejectedResult).reason)).toBe('fulfilled')
      expect([await end(strict), await end(skewed), await end(other)]).toEqual([0n, 2n, 3n])
      // The producer was made anew: its sequence numbers start again, and every topic writes on, once.
      expect(driver.produces).not.toBe(before)
      await o.bus.publishBatch([strict, skewed, other].map((channel) => ({ channel, payload: 'again' })))
      expect([await end(strict), await end(skewed), await end(other)]).toEqual([1n, 3n, 4n])
      const got = listen(o.bus.subscribe<string>(skewed, { from: 'earliest' }))
      await until(() => got.items.length >= 3, 20_000, 'the records of the skewed topic')
      expect(got.items.map((m) => m.payload)).toEqual(['first', 'second', 'again'])
    })
  })

  it('the records of a topic of several partitions go round robin over them', { timeout: 60_000 }, async () => {
    const p = prefix()
    const o = await open(p, { partitions: 3 })
    const kafka = await import('@platformatic/kafka')
    const reader = new kafka.Consumer({ clientId: 'orrery-test', bootstrapBrokers: [brokers!], groupId: `${p}raw` })
    try {
      const ch = `${p}spread`
      await o.bus.publishBatch(range(0, 30).map((payload) => ({ channel: ch, payload })))
      await Promise.all(range(30, 60).map((payload) => o.bus.publish(ch, payload)))
      expect((await reader.listOffsets({ topics: [topicOf(ch)], timestamp: -1n })).get(topicOf(ch))).toEqual([20n, 20n, 20n])
    } finally {
      await reader.close(true)
      await stop(o)
    }
  })

  // The publishes waiting at a turn went out as one produce, over the broker's 1 MB
  // message.max.bytes with enough of them: 10,000 small publishes were refused whole
  // (MESSAGE_TOO_LARGE). Produces are now cut under the limit; one record over it goes alone.
  it('any number of publishes under the limit is written; one over it is refused alone', { timeout: 120_000 }, async () => {
    const p = prefix()
    const o = await open(p)
    const kafka = await import('@platformatic/kafka')
    const reader = new kafka.Consumer({ clientId: 'orrery-test', bootstrapBrokers: [brokers!], groupId: `${p}raw` })
    try {
      const ch = `${p}burst`
      const pad = 'x'.repeat(150)
      const outcomes = await Promise.allSettled(range(0, 10_000).map((i) => o.bus.publish(ch, { i, pad })))
      const failed = outcomes.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))
      expect(failed.length, failed[0]).toBe(0)
      const end = async () => (await reader.listOffsets({ topics: [topicOf(ch)], timestamp: -1n })).get(topicOf(ch))?.[0]
      expect(await end()).toBe(10_000n)
      // The same in one publishBatch, and an oversized publish amid small ones: refused alone.
      await o.bus.publishBatch(range(0, 10_000).map((i) => ({ channel: ch, payload: { i, pad } })))
      expect(await end()).toBe(20_000n)
      const mixed = await Promise.allSettled([
        ...range(0, 3_000).map((i) => o.bus.publish(ch, { i, pad })),
        o.bus.publish(ch, 'y'.repeat(1_100_000)),
        ...range(3_000, 6_000).map((i) => o.bus.publish(ch, { i, pad })),
      ])
      const refused = mixed.flatMap((r, i) => (r.status === 'rejected' ? [{ i, reason: r.reason as unknown }] : []))
      expect(refused.map((r) => r.i)).toEqual([3_000])
      expect(isOrreryError(refused[0]!.reason, 'MESSAGE_TOO_LARGE'), String(refused[0]!.reason)).toBe(true)
      expect(await end()).toBe(26_000n)
    } finally {
      await reader.close(true)
      await stop(o)
    }
  })

  // Over the most a broker reads in one request (socket.request.max.bytes, 100 MiB by default) the
  // broker drops the connection: the produce was tried again until publishTimeoutMs, and the
  // publishes behind it timed out with it.
  it('a message over what a broker reads in one request is refused at once, alone; the publishes behind it are written', { timeout: 60_000 }, async () => {
    const p = prefix()
    const o = await Orrery.create({
      maxMessageBytes: REQUEST_BYTES * 2,
      transports: { main: { kind: 'kafka', brokers: brokers!, publishTimeoutMs: 30_000 } },
      bindings: { [`${p}*`]: 'main' },
    })
    try {
      const ch = `${p}huge`
      const started = Date.now()
      const [huge, after] = await Promise.allSettled([o.bus.publish(ch, new Uint8Array(REQUEST_BYTES + 1), { codec: 'raw' }), o.bus.publish(ch, 'after')])
      expect(huge.status === 'rejected' && isOrreryError(huge.reason, 'MESSAGE_TOO_LARGE'), String((huge as PromiseRejectedResult).reason)).toBe(true)
      expect((huge as PromiseRejectedResult).reason.message).toContain('socket.request.max.bytes')
      expect(after.status, String((after as PromiseRejectedResult).reason)).toBe('fulfilled')
      // Refused before anything was sent, not after the retries.
      expect(Date.now() - started).toBeLessThan(20_000)
      const got = listen(o.bus.subscribe<string>(ch, { from: 'earliest' }))
      await until(() => got.items.length >= 1, 20_000, 'the publish after it')
      expect(got.items.map((m) => m.payload)).toEqual(['after'])
      // Refused before it crosses into the core: a batch holding it publishes nothing anywhere,
      // not even on a channel of this process only.
      const here = listen(o.bus.subscribe<string>(`local-${p}`))
      const batch = await o.bus
        .publishBatch([
          { channel: `local-${p}`, payload: 'local' },
          { channel: ch, payload: new Uint8Array(REQUEST_BYTES + 1), options: { codec: 'raw' } },
        ])
        .then(
          () => undefined,
          (error: unknown) => error,
        )
      expect(isOrreryError(batch, 'MESSAGE_TOO_LARGE'), String(batch)).toBe(true)
      await new Promise((r) => setTimeout(r, 50))
      expect(here.items).toEqual([])
      expect(o.bus.stats(`local-${p}`).published).toBe(0)
    } finally {
      await stop(o)
    }
  })

  // A record released during the drain waited in the reader for room the drain never gave: the
  // drain, not seeing it, ended and handed it back, and it ran again elsewhere.
  it('shutdown({ drainMs }): a record released during the drain runs again here, and is committed', { timeout: 90_000 }, async () => {
    const p = prefix()
    const a = await open(p)
    let b: Orrery | undefined
    try {
      const ch = `${p}retry`
      let draining = false
      const runs: Array<[number, number]> = []
      a.bus.group<number>(ch, 'w').consume(async (d) => {
        runs.push([d.message.payload, d.attempt])
        if (d.attempt > 1) return
        while (!draining) await new Promise((r) => setTimeout(r, 20))
        throw new Error('once')
      })
      await a.bus.attached(ch)
      await a.bus.publish(ch, 1)
      await until(() => runs.length >= 1, 20_000, 'a to run it')
      const begun = Date.now()
      const stopping = a.shutdown({ drainMs: 8_000 })
      draining = true
      expect(await stopping).toEqual({ graceful: true, errors: [] })
      expect(Date.now() - begun).toBeLessThan(6_000)
      expect(runs).toEqual([
        [1, 1],
        [1, 2],
      ])
      // Committed where it ran: the group's next member reads on after it (no member joined
      // meanwhile, so no partition moved).
      b = await open(p)
      const next = listen(b.bus.group<number>(ch, 'w').join())
      await b.bus.attached(ch)
      await b.bus.publish(ch, 2)
      await until(() => next.items.length >= 1, 30_000, 'the next member to read on')
      await new Promise((r) => setTimeout(r, 500))
      expect(next.items.map((d) => [d.message.payload, d.attempt])).toEqual([[2, 1]])
    } finally {
      await Promise.all([stop(a), b === undefined ? undefined : stop(b)])
    }
  })

  // A group a draining process held nothing of kept its partitions (unread by anyone) until the
  // whole stop ended, however long another group's work took.
  it('shutdown({ drainMs }): a group this process holds nothing of is handed over at once, one holding work once it is done', {
    timeout: 120_000,
  }, async () => {
    const p = prefix()
    const [a, b] = await Promise.all([open(p), open(p)])
    const kafkaAdmin = await admin()
    let finish = () => {}
    try {
      const [slow, idle] = [`${p}slow`, `${p}idle`]
      const groupOf = (ch: string) => `orrery-g-${topicOf(ch).slice('orrery-ch-'.length)}-w`
      const members = async (ch: string) => (await kafkaAdmin.describeGroups({ groups: [groupOf(ch)] })).get(groupOf(ch))?.members.size ?? 0
      const finished = new Promise<void>((resolve) => {
        finish = resolve
      })
      const running: number[] = []
      // A lease longer than the test: the slow job is never redelivered.
      a.bus.group<number>(slow, 'w', { visibilityTimeout: 300_000 }).consume(async (d) => {
        running.push(d.message.payload)
        await finished
      })
      const ranOnA: number[] = []
      a.bus.group<number>(idle, 'w').consume((d) => void ranOnA.push(d.message.payload))
      await Promise.all([a.bus.attached(slow), a.bus.attached(idle)])
      await a.bus.publish(idle, 1)
      await a.bus.publish(slow, 1)
      await until(() => running.length === 1 && ranOnA.length === 1, 20_000, 'a to run both')
      // b joins the idle group too: the topic's one partition stays with one of them.
      const ranOnB: number[] = []
      b.bus.group<number>(idle, 'w').consume((d) => void ranOnB.push(d.message.payload))
      await b.bus.attached(idle)
      await poll(async () => ((await members(idle)) === 2 ? true : undefined), 30_000, 'both in the idle group', 200)
      const stopping = a.shutdown({ drainMs: 60_000 })
      // a's consumer of the idle group leaves while the slow job goes on: b holds the partition,
      // and takes what is published now (and not record 1, which a ran and committed).
      await poll(async () => ((await members(idle)) === 1 ? true : undefined), 20_000, "a's idle consumer to leave", 200)
      expect(await members(slow)).toBe(1)
      await b.bus.publish(idle, 2)
      await until(
        () => ranOnB.includes(2),
        30_000,
        'b to take what was published during the drain',
        () => ranOnB,
      )
      expect(running).toEqual([1])
      finish()
      const begun = Date.now()
      expect(await stopping).toEqual({ graceful: true, errors: [] })
      expect(Date.now() - begun).toBeLessThan(10_000)
      expect(await members(slow)).toBe(0)
      expect(ranOnA).toEqual([1])
      expect(ranOnB).toEqual([2])
    } finally {
      finish()
      await kafkaAdmin.close()
      await Promise.all([stop(a), stop(b)])
    }
  })

  // The first drain stopped the group's stream, which left the consumer in the group following no
  // topic: a member joining during the drain made the leader assign every member nothing, and
  // the drained records' acks were dropped, so they ran again elsewhere.
  it('shutdown({ drainMs }): the records a member runs finish there, with a member joining meanwhile; every record runs', { timeout: 90_000 }, async () => {
    const p = prefix()
    const [a, b, c] = await Promise.all([open(p, { partitions: 2 }), open(p, { partitions: 2 }), open(p, { partitions: 2 })])
    try {
      const ch = `${p}drain`
      const started: number[] = []
      const done: number[] = []
      a.bus.group<number>(ch, 'w').consume(
        async (d) => {
          started.push(d.message.payload)
          await new Promise((r) => setTimeout(r, 1_000))
          done.push(d.message.payload)
        },
        { maxInFlight: 50 },
      )
      await a.bus.attached(ch)
      const others = listen(b.bus.group<number>(ch, 'w').join({ maxInFlight: 50 }))
      await b.bus.attached(ch)
      // Both hold a partition (the second join moved one to b).
      await new Promise((r) => setTimeout(r, 5_000))
      await a.bus.publishBatch(range(0, 20).map((payload) => ({ channel: ch, payload })))
      await until(() => started.length >= 1, 20_000, 'a to run its share')
      const begun = Date.now()
      const stopping = a.shutdown({ drainMs: 8_000 })
      const joined = listen(c.bus.group<number>(ch, 'w').join({ maxInFlight: 50 }))
      const outcome = await stopping
      expect(outcome).toEqual({ graceful: true, errors: [] })
      expect(Date.now() - begun).toBeLessThan(7_000)
      expect(done.sort((x, y) => x - y)).toEqual(started.sort((x, y) => x - y))
      const acked = new Set<unknown>()
      const ackAll = () => {
        for (const d of [...others.items, ...joined.items]) {
          if (acked.has(d)) continue
          acked.add(d)
          d.ack()
        }
      }
      ackAll()
      // What a finished may run again elsewhere only if c's join moved a's partition (Kafka's
      // round-robin deals by the broker's order of members, which the test cannot set): then the
      // new owner reads it from a's last commit. Said, not asserted.
      await new Promise((r) => setTimeout(r, 6_000))
      ackAll()
      const again = [...others.items, ...joined.items].map((d) => d.message.payload).filter((x) => done.includes(x))
      console.log(`[kafka drain ${ENGINE}] a finished ${done.length}; ${again.length} of them ran again after c joined`)
      // Every record was run somewhere.
      const everywhere = new Set([...done, ...others.items.map((d) => d.message.payload), ...joined.items.map((d) => d.message.payload)])
      expect([...everywhere].sort((x, y) => x - y)).toEqual(range(0, 20))
    } finally {
      await Promise.all([stop(a), stop(b), stop(c)])
    }
  })

  it('a group shares work by partition; what a shut-down instance held goes to the next holder, counted from 1', { timeout: 90_000 }, async () => {
    const p = prefix()
    const [a, b] = await Promise.all([open(p, { partitions: 2 }), open(p, { partitions: 2 })])
    try {
      const ch = `${p}work`
      const held = listen(a.bus.group<number>(ch, 'w', { from: 'earliest' }).join({ maxInFlight: 100 }))
      await a.bus.publishBatch(range(0, 20).map((payload) => ({ channel: ch, payload })))
      await until(() => held.items.length >= 20, 20_000, 'a alone to take all 20 (both partitions)')
      // a acks the first half of what it got; b joins, then a shuts down holding the rest.
      for (const d of held.items.slice(0, 10)) d.ack()
      const acked = new Set(held.items.slice(0, 10).map((d) => d.message.payload))
      const taken = listen(b.bus.group<number>(ch, 'w', { from: 'earliest' }).join({ maxInFlight: 100 }))
      await a.shutdown()
      await until(
        () => taken.items.length >= 10,
        45_000,
        "b to take a's 10 unacked records",
        () => taken.items.length,
      )
      for (const d of taken.items) d.ack()
      const payloads = taken.items.map((d) => d.message.payload).sort((x, y) => x - y)
      expect(payloads).toEqual(range(0, 20).filter((i) => !acked.has(i)))
      expect(taken.items.map((d) => d.attempt)).toEqual(taken.items.map(() => 1))
    } finally {
      await stop(a)
      await stop(b)
    }
  })

  // A latest subscribe starts once the mirror has read every partition up to its marker. A
  // partition read up to it first waits there: what follows the marker on it must not go in before
  // the subscribe starts. Partition 1 is held back here by emptying its records from the answers
  // to the mirror's fetches (as a broker answers a busy partition a fetch at a time).
  it('a latest subscribe misses nothing published after it on a partition read ahead of the others', { timeout: 60_000 }, async () => {
    const kafka = await import('@platformatic/kafka')
    const p = prefix()
    const [a, b] = await Promise.all([open(p, { partitions: 2 }), open(p, { partitions: 2 })])
    const ad = await admin()
    type Answer = { result?: { responses?: { topicId: string; partitions: { partitionIndex: number; records?: unknown }[] }[] } }
    let held: string | undefined
    const hold = (event: unknown) => {
      for (const t of (event as Answer).result?.responses ?? [])
        if (t.topicId === held) for (const part of t.partitions) if (part.partitionIndex === 1) part.records = undefined
    }
    kafka.consumerFetchesChannel.asyncStart.subscribe(hold)
    try {
      const ch = `${p}ahead`
      const topic = topicOf(ch)
      const ends = async () => {
        const [listed] = await ad.listOffsets({ topics: [{ name: topic, partitions: [0, 1].map((partitionIndex) => ({ partitionIndex, timestamp: -1n })) }] })
        return (listed?.partitions ?? []).map((x) => x.offset)
      }
      // b's mirror is open and reads both partitions.
      const all = listen(b.bus.subscribe<string>(ch, { from: 'earliest' }))
      await a.bus.publishBatch(range(0, 2).map((i) => ({ channel: ch, payload: `open-${i}` })))
      await until(() => all.items.length >= 2, 20_000, "b's mirror to read both partitions")
      held = (await ad.metadata({ topics: [topic] })).topics.get(topic)?.id
      expect(held).toBeDefined()
      // Published while b's mirror does not get partition 1: b's marker is past them there.
      await a.bus.publishBatch(range(0, 4).map((i) => ({ channel: ch, payload: `before-${i}` })))
      expect(await ends()).toEqual([3n, 3n])
      const late = listen(b.bus.subscribe<string>(ch, { from: 'latest' }))
      await b.bus.publishBatch(range(0, 4).map((i) => ({ channel: ch, payload: `after-${i}` })))
      expect(await ends()).toEqual([5n, 5n])
      // Long enough for b's mirror to fetch partition 0's two records after the marker.
      await new Promise((r) => setTimeout(r, 1_500))
      // The earliest subscriber has the two opening records and partition 0's two of the four
      // before (partition 1's were held back); the latest one has not started: nothing after
      // its marker went in.
      expect(all.items.length).toBe(4)
      expect(late.items).toEqual([])
      held = undefined
      await until(
        () => late.items.length >= 4 && all.items.length >= 10,
        20_000,
        'the latest subscriber to get all four published after it',
        () => late.items.map((m) => m.payload),
      )
      expect(late.items.map((m) => m.payload).sort()).toEqual(range(0, 4).map((i) => `after-${i}`))
      expect(all.items.map((m) => m.payload).sort()).toEqual([
        ...range(0, 4).map((i) => `after-${i}`),
        ...range(0, 4).map((i) => `before-${i}`),
        'open-0',
        'open-1',
      ])
    } finally {
      kafka.consumerFetchesChannel.asyncStart.unsubscribe(hold)
      await ad.close()
      await stop(a)
      await stop(b)
    }
  })

  // A fetch sent before a partition left a process and answered after it came back set the
  // stream's position past what the interim owner never committed. Played here on one consumer:
  // its position is taken back (as when a partition comes back) while a fetch waits at the broker.
  it('a fetch answered after its partition position moved is dropped; the stream reads on from the position it holds', { timeout: 120_000 }, async () => {
    const kafka = await import('@platformatic/kafka')
    const { guardFetches } = await import('../../ts/transports/kafka-fetches.js')
    const a = await admin()
    const options = { clientId: 'orrery-test', bootstrapBrokers: [brokers!] }
    const producer = new kafka.Producer({ ...options, serializers: kafka.stringSerializers })
    type FetchEvent = {
      client: unknown
      options: { topics: { partitions: { fetchOffset: bigint }[] }[] }
      result?: { responses: { partitions: { highWatermark: bigint; records?: unknown }[] }[] }
    }
    /**
     * One try on a topic of its own: whether the fetch from 10 was answered before 10 to 14 were
     * written (a loaded machine: the try proves nothing, and another is made), else what was seen.
     */
    const attempt = async (topic: string): Promise<'raced' | number[]> => {
      // A fetch waits at the broker up to 10 s for records: the ones written below come first.
      const consumer = new kafka.Consumer({
        ...options,
        groupId: `${topic}-g`,
        autocommit: false,
        maxWaitTime: 10_000,
        deserializers: kafka.stringDeserializers,
      })
      const seen: bigint[] = []
      const fromTen = (event: unknown): FetchEvent | undefined => {
        const e = event as FetchEvent
        return e.client === consumer && e.options.topics[0]?.partitions[0]?.fetchOffset === 10n ? e : undefined
      }
      let taken = false
      const onFetch = (event: unknown) => {
        if (fromTen(event) === undefined || taken) return
        // The fetch from offset 10 is out, waiting for records: the position goes back to 5, and 10 to 14 are written.
        taken = true
        stream.offsetsToFetch.set(`${topic}:0`, 5n)
        void producer.send({ messages: range(10, 15).map((i) => ({ topic, value: String(i) })) })
      }
      // The answer to that fetch as the stream was handed it (after the guard): the broker held 10 to 14 then.
      const answers: { highWatermark: bigint; records: unknown }[] = []
      const onAnswer = (event: unknown) => {
        const p = fromTen(event)?.result?.responses[0]?.partitions[0]
        if (p !== undefined) answers.push({ highWatermark: p.highWatermark, records: p.records })
      }
      await a.createTopics({ topics: [topic], partitions: 1, replicas: 1 })
      await producer.send({ messages: range(0, 10).map((i) => ({ topic, value: String(i) })) })
      const stream = await consumer.consume({ topics: [topic], mode: kafka.MessagesStreamModes.EARLIEST })
      guardFetches(kafka, consumer, (partition) => stream.offsetsToFetch.get(`${topic}:${partition}`))
      kafka.consumerFetchesChannel.start.subscribe(onFetch)
      kafka.consumerFetchesChannel.asyncEnd.subscribe(onAnswer)
      try {
        stream.on('data', (m: { offset: bigint }) => seen.push(m.offset))
        await until(
          () => seen.length >= 20,
          30_000,
          '0 to 9, then 5 to 14',
          () => seen.map(Number),
        )
        expect(taken).toBe(true)
        expect(answers.length).toBe(1)
        if (answers[0]!.highWatermark === 10n) return 'raced'
        // Without the guard the answer to the fetch from 10 is taken: 10 to 14 come, the position goes to 15, and 5 to 9 never come again.
        expect(answers).toEqual([{ highWatermark: 15n, records: undefined }])
        return seen.map(Number)
      } finally {
        kafka.consumerFetchesChannel.start.unsubscribe(onFetch)
        kafka.consumerFetchesChannel.asyncEnd.unsubscribe(onAnswer)
        await stream.close().catch(() => {})
        await (consumer.close(true) as unknown as Promise<void>).catch(() => {})
        await a.deleteTopics({ topics: [topic] }).catch(() => {})
      }
    }
    try {
      let outcome: 'raced' | number[] = 'raced'
      for (let i = 0; i < 3 && outcome === 'raced'; i++) outcome = await attempt(`${RUN}-fetch-guard-${i}`)
      expect(outcome, 'three tries each had the fetch answered before the records were written').not.toBe('raced')
      expect(outcome).toEqual([...range(0, 10), ...range(5, 15)])
    } finally {
      await producer.close().catch(() => {})
      await a.close()
    }
  })

  it('a request crosses to a responder of another instance; the reply comes through the requester reply topic, gone after its shutdown', {
    timeout: 60_000,
  }, async () => {
    const p = prefix()
    const [a, b] = await Promise.all([open(p), open(p)])
    const kafkaAdmin = await admin()
    try {
      const ch = `${p}math`
      b.bus.respond<{ x: number }, number>(ch, (req) => req.payload.x * 2, { group: 'doublers' })
      const replyTopics = async () => new Set((await kafkaAdmin.listTopics()).filter((t) => t.startsWith('orrery-reply-')))
      const before = await replyTopics()
      const replies = await Promise.all(range(0, 5).map((x) => a.bus.request<number>(ch, { x }, { timeout: 20_000 })))
      expect(replies.map((r) => r.payload)).toEqual([0, 2, 4, 6, 8])
      // b only answers: the reply topics made meanwhile are a's (or another test run's, which stay).
      const made = [...(await replyTopics())].filter((t) => !before.has(t))
      expect(made.length).toBeGreaterThan(0)
      await a.shutdown()
      // The shutdown awaited the deletion, but a broker's metadata may list the topic a moment
      // longer (seen once under load in CI): looked at again until it is gone, 15 s at most.
      const deadline = Date.now() + 15_000
      let after = await replyTopics()
      while (!made.some((t) => !after.has(t)) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100))
        after = await replyTopics()
      }
      expect(made.some((t) => !after.has(t))).toBe(true)
    } finally {
      await kafkaAdmin.close()
      await stop(a)
      await stop(b)
    }
  })
})
