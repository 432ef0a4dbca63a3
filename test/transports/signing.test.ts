/**
 * Signed messages (a transport's `signing` option) on every broker: instances with the same keys
 * exchange publishes, group deliveries, dead letters and requests with replies; what an instance
 * without the key (or with a wrong one) writes is refused and counted; an entry tampered with or
 * written again straight on the broker (with the broker's own client) is refused, counted, never
 * delivered, and a group's copy is settled on the broker instead of coming back for ever; keys
 * rotate. Two Orrery instances stand for two processes. Both engines; Node only.
 */
import { afterEach, describe, expect, inject, it, vi } from 'vitest'

import { Agent, type AgentContext, type BusEvent, isOrreryError, Orrery } from '../../ts/node.js'
import { topicPart } from '../../ts/transports/kafka.js'
import { brokerName } from '../../ts/transports/nats.js'
import { checkSigning, MAX_REMEMBERED, Signing } from '../../ts/transports/signing.js'
import { ENGINE, IN_BROWSER } from '../engine.js'
import { listen, quiet, stop, until, withTimeout } from './backends.js'

type Env = Record<string, string | undefined>
const env: Env = (globalThis as { process?: { env: Env } }).process?.env ?? {}
const skip = IN_BROWSER ? 'a browser page cannot reach the brokers' : env['ORRERY_SERVERS'] === 'none' ? 'ORRERY_SERVERS=none' : undefined

const RUN = `sg-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}-${ENGINE}`
let runs = 0

const K1 = 'first-secret-of-at-least-16-bytes'
const K2 = new Uint8Array(32).fill(0x5a)

/** An entry as the broker holds it: the frame and its other fields (Redis) or headers (NATS, Kafka), as text. */
interface Captured {
  readonly frame: Uint8Array
  readonly fields: Record<string, string>
}

/** What a test does on the broker behind Orrery's back, with the broker's own client. */
interface Raw {
  /** Every entry of `channel`'s stream or topic, oldest first. */
  entries(channel: string): Promise<Captured[]>
  /** Appends `entry` to `channel` as a new entry (as a replaying attacker would). */
  write(channel: string, entry: Captured): Promise<void>
  /** Whether group `group` of `channel` holds nothing more for anyone (refused entries settled). */
  settled(channel: string, group: string): Promise<boolean>
  close(): Promise<void>
}

/** The name of the field (Redis) or header (NATS, Kafka) that holds a signature. */
const SIGNATURE: Record<string, string> = { redis: 's', nats: 'Orrery-Sig', kafka: 'orrery-sig' }

async function redisRaw(url: string): Promise<Raw> {
  const { createClient } = await import('redis')
  const client = createClient({ url, RESP: 2 })
  client.on('error', () => {})
  await client.connect()
  const key = (channel: string) => `orrery:ch:${channel}`
  const send = (args: Array<string | Buffer>) => client.sendCommand(args, { typeMapping: { [36]: Buffer } } as never) as Promise<unknown>
  return {
    async entries(channel) {
      const got = (await send(['XRANGE', key(channel), '-', '+'])) as Array<[Buffer, Buffer[]]>
      return got.map(([, f]) => {
        const fields: Record<string, string> = {}
        let frame = new Uint8Array()
        for (let i = 0; i + 1 < f.length; i += 2) {
          if (f[i]!.toString() === 'f') frame = new Uint8Array(f[i + 1]!)
          else fields[f[i]!.toString()] = f[i + 1]!.toString('latin1')
        }
        return { frame, fields }
      })
    },
    async write(channel, entry) {
      const args: Array<string | Buffer> = ['XADD', key(channel), '*', 'f', Buffer.from(entry.frame)]
      for (const [k, v] of Object.entries(entry.fields)) args.push(k, v)
      await send(args)
    },
    async settled(channel, group) {
      const summary = (await send(['XPENDING', key(channel), group])) as [number]
      return Number(summary[0]) === 0
    },
    close: () => client.quit().then(() => {}),
  }
}

async function natsRaw(url: string): Promise<Raw> {
  const { connect, headers } = await import('@nats-io/transport-node')
  const { jetstream, jetstreamManager } = await import('@nats-io/jetstream')
  const nc = await connect({ servers: url })
  const js = jetstream(nc)
  const jsm = await jetstreamManager(nc)
  const stream = (channel: string) => `orrery-ch-${brokerName(channel)}`
  return {
    async entries(channel) {
      const info = await jsm.streams.info(stream(channel))
      const out: Captured[] = []
      for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
        const m = await jsm.streams.getMessage(stream(channel), { seq }).catch(() => null)
        if (m === null) continue
        const fields: Record<string, string> = {}
        for (const [k, v] of m.header ?? []) fields[k] = v[0]!
        out.push({ frame: m.data, fields })
      }
      return out
    },
    async write(channel, entry) {
      const h = headers()
      for (const [k, v] of Object.entries(entry.fields)) h.set(k, v)
      await js.publish(`orrery.ch.${brokerName(channel)}`, entry.frame, { headers: h })
    },
    async settled(channel, group) {
      const info = await jsm.consumers.info(stream(channel), brokerName(group))
      return info.num_ack_pending === 0 && info.num_pending === 0
    },
    close: () => nc.close(),
  }
}

async function kafkaRaw(brokers: string): Promise<Raw> {
  const kafka = await import('@platformatic/kafka')
  const base = { clientId: 'orrery-signing-test', bootstrapBrokers: [brokers] }
  const producer = new kafka.Producer(base)
  const admin = new kafka.Admin(base)
  const topic = (channel: string) => `orrery-ch-${topicPart(channel)}`
  const ends = async (channel: string): Promise<bigint> => {
    const consumer = new kafka.Consumer({ ...base, groupId: `raw-${Math.random().toString(36).slice(2)}` })
    try {
      const offsets = await consumer.listOffsets({ topics: [topic(channel)], timestamp: -1n })
      return [...offsets.values()][0]![0]!
    } finally {
      await consumer.close(true)
    }
  }
  return {
    async entries(channel) {
      const count = Number(await ends(channel))
      const consumer = new kafka.Consumer({ ...base, groupId: `raw-${Math.random().toString(36).slice(2)}` })
      const out: Captured[] = []
      try {
        const stream = await consumer.consume({ topics: [topic(channel)], mode: kafka.MessagesStreamModes.EARLIEST, autocommit: false })
        await withTimeout(
          new Promise<void>((resolve) => {
            if (count === 0) resolve()
            stream.on('data', (m: { value: Buffer; headers: Map<Buffer, Buffer> }) => {
              const fields: Record<string, string> = {}
              for (const [k, v] of m.headers) fields[k.toString()] = v.toString('latin1')
              out.push({ frame: new Uint8Array(m.value), fields })
              if (out.length >= count) resolve()
            })
          }),
          20_000,
          `reading ${count} records of ${topic(channel)}`,
        )
        await stream.close()
      } finally {
        await consumer.close(true)
      }
      return out
    },
    async write(channel, entry) {
      const h = new Map<Buffer, Buffer>()
      for (const [k, v] of Object.entries(entry.fields)) h.set(Buffer.from(k), Buffer.from(v, 'latin1'))
      await producer.send({ messages: [{ topic: topic(channel), value: Buffer.from(entry.frame), headers: h }] })
    },
    async settled(channel, group) {
      const [g] = await admin.listConsumerGroupOffsets({ groups: [`orrery-g-${topicPart(channel)}-${topicPart(group)}`] })
      const committed = g?.topics[0]?.partitions[0]?.committedOffset ?? -1n
      return committed === (await ends(channel))
    },
    async close() {
      await producer.close()
      await admin.close()
    },
  }
}

interface Broker {
  readonly name: 'redis' | 'nats' | 'kafka'
  readonly options: Record<string, unknown> | undefined
  raw(): Promise<Raw>
}

const BROKERS: Broker[] = (() => {
  if (skip !== undefined) return []
  const redis = inject('redisUrl')
  const nats = inject('natsUrl')
  const kafka = inject('kafkaBrokers')
  const list: Broker[] = []
  list.push({ name: 'redis', options: redis ? { kind: 'redis', url: redis } : undefined, raw: () => redisRaw(redis!) })
  list.push({ name: 'nats', options: nats ? { kind: 'nats', servers: nats } : undefined, raw: () => natsRaw(nats!) })
  list.push({ name: 'kafka', options: kafka ? { kind: 'kafka', brokers: kafka } : undefined, raw: () => kafkaRaw(kafka!) })
  return list
})()

const refusedEvents = (o: Orrery): Array<Extract<BusEvent, { type: 'message-refused' }>> => {
  const seen: Array<Extract<BusEvent, { type: 'message-refused' }>> = []
  o.bus.events.subscribe((e) => {
    if (e.type === 'message-refused') seen.push(e)
  })
  return seen
}

describe.skipIf(skip !== undefined)(`signed messages (${ENGINE})${skip ? ` [skipped: ${skip}]` : ''}`, () => {
  it('bad signing options are refused with INVALID_OPTION naming the field, before anything connects', async () => {
    // A closed port: a transport that tried to connect would fail TRANSPORT_UNAVAILABLE instead.
    const base = { kind: 'redis', url: 'redis://127.0.0.1:1' }
    const cases: Array<[unknown, string]> = [
      [null, 'transports.main.signing'],
      ['secret', 'transports.main.signing'],
      [{ sign: 'k1' }, 'transports.main.signing.keys'],
      [{ keys: {}, sign: 'k1' }, 'transports.main.signing.keys'],
      [{ keys: { k1: 'short' }, sign: 'k1' }, 'transports.main.signing.keys.k1'],
      [{ keys: { k1: new Uint8Array(15) }, sign: 'k1' }, 'transports.main.signing.keys.k1'],
      [{ keys: { k1: 42 }, sign: 'k1' }, 'transports.main.signing.keys.k1'],
      [{ keys: { 'k:1': K1 }, sign: 'k:1' }, 'transports.main.signing.keys'],
      [{ keys: { k1: K1 }, sign: 'k2' }, 'transports.main.signing.sign'],
      [{ keys: { k1: K1 }, sign: 'k1', replayWindowMs: 10 }, 'transports.main.signing.replayWindowMs'],
      [{ keys: { k1: K1 }, sign: 'k1', replayWindowMs: '60000' }, 'transports.main.signing.replayWindowMs'],
      [{ keys: { k1: K1 }, sign: 'k1', replayWindow: 5_000 }, 'transports.main.signing.replayWindow'],
    ]
    for (const [signing, field] of cases) {
      const error = await Orrery.create({ transports: { main: { ...base, signing } as never } }).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isOrreryError(error, 'INVALID_OPTION'), `${JSON.stringify(signing)}: ${String(error)}`).toBe(true)
      expect((error as Error).message).toContain(field)
      // The secret itself is never shown.
      expect((error as Error).message).not.toContain('short')
    }
    // On every broker kind, and not on a transport of this process.
    for (const kind of [
      { kind: 'nats', servers: 'nats://127.0.0.1:1' },
      { kind: 'kafka', brokers: '127.0.0.1:1' },
    ]) {
      const error = await Orrery.create({ transports: { main: { ...kind, signing: { keys: { k1: 'x' }, sign: 'k1' } } as never } }).catch((e: unknown) => e)
      expect(isOrreryError(error, 'INVALID_OPTION'), String(error)).toBe(true)
    }
    const memory = await Orrery.create({ transports: { main: { kind: 'memory', signing: { keys: { k1: K1 }, sign: 'k1' } } as never } }).catch(
      (e: unknown) => e,
    )
    expect(isOrreryError(memory, 'INVALID_OPTION'), String(memory)).toBe(true)
  })

  it("signs with node:crypto in Node and @noble/hashes where there is none: the same MACs, each verifies the other's", () => {
    const options = checkSigning({ keys: { k1: K1, k2: K2 }, sign: 'k2' }, 'signing')!
    const refusals: string[] = []
    const node = new Signing(options, (r) => void refusals.push(r.detail))
    const noble = new Signing(options, (r) => void refusals.push(r.detail), 'noble')
    expect([node.hashes, noble.hashes]).toEqual(['node:crypto', '@noble/hashes'])
    const t0 = 1_700_000_000_000
    for (const [i, record] of [
      { kind: 'publish', channel: 'orders', frame: new Uint8Array(300).fill(3) },
      { kind: 'request', channel: 'svc', replyTo: 'addr-ü', timeoutMs: 5_000, frame: new Uint8Array(64).fill(9) },
      { kind: 'reply', address: 'addr', frame: new Uint8Array(0) },
    ].entries()) {
      const a = node.sign(record as never, t0 + i)
      expect(a).toMatch(/^k2:\d+:[0-9a-f]{64}$/)
      expect(noble.sign(record as never, t0 + i)).toBe(a)
    }
    const frame = new Uint8Array(128).fill(1)
    const fromNode = node.sign({ kind: 'publish', channel: 'c', frame } as never, t0)
    const fromNoble = noble.sign({ kind: 'publish', channel: 'c', frame } as never, t0 + 1)
    expect(noble.accept(fromNode, 'c', undefined, frame, '1-0', t0)).toBe(true)
    expect(node.accept(fromNoble, 'c', undefined, frame, '1-1', t0 + 1)).toBe(true)
    // A byte changed: refused by both.
    const other = frame.slice()
    other[5] = 2
    expect(node.accept(fromNode, 'c', undefined, other, '2-0', t0)).toBe(false)
    expect(noble.accept(fromNode, 'c', undefined, other, '2-0', t0)).toBe(false)
    expect(refusals).toHaveLength(2)
  })

  it('the replay memory forgets by signed time whatever order signatures came in, and warns once when full', () => {
    const refusals: string[] = []
    const signing = new Signing(checkSigning({ keys: { k1: K1 }, sign: 'k1', replayWindowMs: 60_000 }, 'signing')!, (r) => void refusals.push(r.reason))
    const t0 = 1_700_000_000_000
    const frame = (i: number) => new Uint8Array(new Uint32Array([i, i >>> 8, 7, 7, 7, 7, 7, 7, 7, 7, 7]).buffer)
    const message = (i: number, signedAt: number) => ({
      frame: frame(i),
      s: signing.sign({ kind: 'publish', channel: 'c', frame: frame(i) } as never, signedAt),
    })
    const read = (m: { frame: Uint8Array; s: string }, position: string, brokerTime: number) =>
      signing.accept(m.s, 'c', undefined, m.frame, position, brokerTime)
    // A sender whose clock runs 59 s ahead first, then 1,000 messages over 100 s.
    expect(read(message(0, t0 + 59_000), 'fast', t0)).toBe(true)
    const sent = Array.from({ length: 1_000 }, (_, i) => message(i + 1, t0 + i * 100))
    for (const [i, m] of sent.entries()) expect(read(m, `p${i}`, t0 + i * 100)).toBe(true)
    // Those signed more than a window (and a second or two) before the channel's clock are
    // forgotten, the fast one's later ones not held back by it.
    expect(signing.memory.remembered).toBeGreaterThan(600)
    expect(signing.memory.remembered).toBeLessThan(640)
    expect(refusals).toEqual([])
    // A copy of one still remembered is refused; a copy of a forgotten one fails its time.
    expect(read(sent[990]!, 'copy-1', t0 + 99_950)).toBe(false)
    expect(read(sent[0]!, 'copy-2', t0 + 99_950)).toBe(false)
    expect(refusals).toEqual(['replay', 'replay'])
    // More than MAX_REMEMBERED within a window: the oldest go first, counted, warned once.
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {})
    try {
      const t1 = t0 + 200_000
      for (let i = 0; i < MAX_REMEMBERED + 100; i++) read(message(10_000 + i, t1 + (i >>> 10)), `q${i}`, t1 + (i >>> 10))
      expect(signing.memory.remembered).toBe(MAX_REMEMBERED)
      expect(signing.memory.forgotten).toBe(100)
      expect(warn).toHaveBeenCalledTimes(1)
      expect(String(warn.mock.calls[0]![0])).toMatch(/at most 100000 signatures per transport .* not refused/)
    } finally {
      warn.mockRestore()
    }
  })

  for (const broker of BROKERS) {
    describe(broker.name, () => {
      if (broker.options === undefined) {
        it('has its server', () => {
          throw new Error(`no ${broker.name} server: the global setup must start one (ORRERY_SERVERS=none skips server tests on purpose)`)
        })
        return
      }
      const opened: Orrery[] = []
      const raws: Raw[] = []
      afterEach(async () => {
        for (const o of opened.splice(0)) await stop(o)
        for (const r of raws.splice(0)) await r.close().catch(() => {})
      })
      const open = async (prefix: string, signing: Record<string, unknown> | undefined): Promise<Orrery> => {
        const transport = { ...broker.options, ...(signing === undefined ? {} : { signing }) }
        const o = await Orrery.create({ transports: { main: transport as never }, bindings: { [`${prefix}*`]: 'main' } })
        // Listened to, so refusals are events rather than warnings on the console.
        o.bus.events.subscribe(() => {})
        opened.push(o)
        return o
      }
      const raw = async (): Promise<Raw> => {
        const r = await broker.raw()
        raws.push(r)
        return r
      }
      const signed = { keys: { k1: K1 }, sign: 'k1' }

      it('instances with the same keys exchange publishes, group deliveries, dead letters, requests and replies', { timeout: 60_000 }, async () => {
        const p = `${RUN}-${++runs}.`
        const [a, b] = [await open(p, signed), await open(p, signed)]
        const news = listen(b.bus.subscribe<string>(`${p}news`, { from: 'earliest' }))
        const dead = listen(b.bus.subscribe<string>(`${p}jobs.dead-letter`, { from: 'earliest' }))
        const done: string[] = []
        b.bus.group<string>(`${p}jobs`, 'workers', { from: 'earliest' }).consume((d) => {
          if (d.message.payload === 'poison') d.nack({ deadLetter: 'refused by the test' })
          else done.push(d.message.payload)
        })
        b.bus.respond<number, number>(`${p}double`, (req) => req.payload * 2, { group: 'doublers' })
        await a.bus.publish(`${p}news`, 'hello')
        await a.bus.publishBatch(['x', 'y', 'poison'].map((payload) => ({ channel: `${p}jobs`, payload })))
        expect((await a.bus.request<number>(`${p}double`, 21, { timeout: 15_000 })).payload).toBe(42)
        await until(() => news.items.length >= 1 && done.length >= 2 && dead.items.length >= 1, 30_000, 'every delivery')
        expect(news.items.map((m) => m.payload)).toEqual(['hello'])
        expect(done.sort()).toEqual(['x', 'y'])
        expect(dead.items.map((m) => m.payload)).toEqual(['poison'])
        for (const [o, ch] of [
          [b, 'news'],
          [b, 'jobs'],
          [b, 'jobs.dead-letter'],
          [a, 'double'],
          [b, 'double'],
        ] as const)
          expect(o.bus.stats(`${p}${ch}`), ch).toMatchObject({ signatureRefused: 0, replayRefused: 0 })
        // On the broker, each entry carries its signature beside the frame: key id, time, MAC.
        const r = await raw()
        for (const ch of ['news', 'jobs', 'double', 'jobs.dead-letter']) {
          const entries = await r.entries(`${p}${ch}`)
          expect(entries.length, ch).toBeGreaterThan(0)
          for (const e of entries) expect(e.fields[SIGNATURE[broker.name]!], ch).toMatch(/^k1:\d+:[0-9a-f]{64}$/)
        }
      })

      it('a process with the wrong key: its publishes resolve, its requests time out, and the TIMEOUT says why it may be', async () => {
        const p = `${RUN}-${++runs}.`
        const responder = await open(p, signed)
        const events = refusedEvents(responder)
        responder.bus.respond<number, number>(`${p}svc`, (req) => req.payload, { group: 'svc' })
        const wrong = await open(p, { keys: { k1: 'not-the-same-secret-at-all' }, sign: 'k1' })
        await wrong.bus.publish(`${p}news`, 'taken by the broker') // resolves: the broker checks nothing
        const error = await wrong.bus.request(`${p}svc`, 1, { timeout: 1_500 }).then(
          () => undefined,
          (e: unknown) => e,
        )
        expect(isOrreryError(error, 'TIMEOUT'), String(error)).toBe(true)
        expect((error as Error).message).toMatch(/transport main is signed: a responder refuses, without answering/)
        // The responder's process is the one told.
        await until(() => events.length >= 1, 10_000, 'the refusal reported where it was read')
        expect(events[0]).toMatchObject({ reason: 'signature', channel: `${p}svc` })
      })

      it('what an instance without the key, or with a wrong one, writes is refused and counted, and reported at once then at the end of the interval', {
        timeout: 60_000,
      }, async () => {
        const p = `${RUN}-${++runs}.`
        const receiver = await open(p, signed)
        const events = refusedEvents(receiver)
        const news = listen(receiver.bus.subscribe<string>(`${p}news`, { from: 'earliest' }))
        const done: string[] = []
        receiver.bus.group<string>(`${p}jobs`, 'workers', { from: 'earliest' }).consume((d) => void done.push(d.message.payload))
        const senders = [
          await open(p, undefined), // unsigned
          await open(p, { keys: { other: K2 }, sign: 'other' }), // a key the receiver does not have
          await open(p, { keys: { k1: 'not-the-same-secret-at-all' }, sign: 'k1' }), // the same id, another secret
        ]
        for (const [i, s] of senders.entries()) {
          await s.bus.publish(`${p}news`, `forged ${i}`)
          await s.bus.publish(`${p}jobs`, `forged ${i}`)
        }
        // A good one after them: once it is in, the forged ones before it were read.
        const good = senders.length
        const sender = await open(p, signed)
        await sender.bus.publish(`${p}news`, 'genuine')
        await sender.bus.publish(`${p}jobs`, 'genuine')
        await until(() => news.items.length >= 1 && done.length >= 1, 30_000, 'the genuine messages')
        await until(
          () => receiver.bus.stats(`${p}news`).signatureRefused >= good && receiver.bus.stats(`${p}jobs`).signatureRefused >= good,
          10_000,
          'the refusals counted',
          () => [receiver.bus.stats(`${p}news`), receiver.bus.stats(`${p}jobs`)],
        )
        expect(news.items.map((m) => m.payload)).toEqual(['genuine'])
        expect(done).toEqual(['genuine'])
        expect(receiver.bus.stats(`${p}news`)).toMatchObject({ signatureRefused: good, replayRefused: 0 })
        expect(receiver.bus.stats(`${p}jobs`)).toMatchObject({ signatureRefused: good, replayRefused: 0 })
        // Six refusals within the interval: the first reported at once, naming the transport and why.
        expect(events).toHaveLength(1)
        expect(events[0]).toMatchObject({ type: 'message-refused', transport: 'main', reason: 'signature', count: 1 })
        expect(events[0]!.detail).toMatch(/no signature|not one of this transport's keys|does not match/)
        // The other five together when the interval ends, though no refusal comes after them.
        await until(() => events.length >= 2, 10_000, 'the end-of-interval report')
        expect(events).toHaveLength(2)
        expect(events[1]).toMatchObject({ type: 'message-refused', transport: 'main', reason: 'signature', count: 2 * good - 1 })
        expect(events[1]!.detail).toMatch(/no signature|not one of this transport's keys|does not match/)
        // The group's refused entries are settled on the broker: nothing comes back.
        const r = await raw()
        let settled = false
        const deadline = Date.now() + 15_000
        while (!settled && Date.now() < deadline) {
          settled = await r.settled(`${p}jobs`, 'workers')
          if (!settled) await quiet(100)
        }
        expect(settled).toBe(true)
        // An unsigned receiver still reads what the signed sender wrote (the signature is beside the frame).
        const plain = await open(p, undefined)
        const all = listen(plain.bus.subscribe<string>(`${p}news`, { from: 'earliest' }))
        await until(() => all.items.length >= 4, 20_000, 'every entry, unchecked')
      })

      it('an entry tampered with on the broker is refused, counted and never delivered; a group settles it instead of retrying it', {
        timeout: 60_000,
      }, async () => {
        const p = `${RUN}-${++runs}.`
        const [a, b] = [await open(p, signed), await open(p, signed)]
        const news = listen(b.bus.subscribe<string>(`${p}news`, { from: 'earliest' }))
        const done: string[] = []
        b.bus.group<string>(`${p}jobs`, 'workers', { from: 'earliest', visibilityTimeout: 1_000 }).consume((d) => void done.push(d.message.payload))
        const requests: number[] = []
        b.bus.respond<number, number>(
          `${p}svc`,
          (req) => {
            requests.push(req.payload)
            return req.payload
          },
          { group: 'svc' },
        )
        await a.bus.publish(`${p}news`, 'original')
        await a.bus.publish(`${p}jobs`, 'original')
        expect((await a.bus.request<number>(`${p}svc`, 7, { timeout: 15_000 })).payload).toBe(7)
        await until(() => news.items.length >= 1 && done.length >= 1, 30_000, 'the originals')
        const r = await raw()
        const [newsEntry] = await r.entries(`${p}news`)
        const [jobsEntry] = await r.entries(`${p}jobs`)
        const [request] = await r.entries(`${p}svc`)
        // The body's last byte flipped; the signature kept.
        const flip = (e: Captured): Captured => {
          const frame = e.frame.slice()
          frame[frame.length - 1]! ^= 0x01
          return { frame, fields: e.fields }
        }
        await r.write(`${p}news`, flip(newsEntry!))
        await r.write(`${p}jobs`, flip(jobsEntry!))
        // A signed request re-aimed at another reply address: its route is signed too.
        const route = broker.name === 'redis' ? 'r' : broker.name === 'nats' ? 'Orrery-Reply-To' : 'orrery-reply-to'
        await r.write(`${p}svc`, { frame: request!.frame, fields: { ...request!.fields, [route]: '0123456789abcdef' } })
        await a.bus.publish(`${p}news`, 'after')
        await a.bus.publish(`${p}jobs`, 'after')
        await until(() => news.items.length >= 2 && done.length >= 2, 30_000, 'the messages after the tampered ones')
        await until(() => b.bus.stats(`${p}svc`).signatureRefused >= 1, 10_000, 'the re-aimed request refused')
        expect(news.items.map((m) => m.payload)).toEqual(['original', 'after'])
        expect(done).toEqual(['original', 'after'])
        expect(requests).toEqual([7])
        for (const ch of ['news', 'jobs', 'svc']) expect(b.bus.stats(`${p}${ch}`), ch).toMatchObject({ signatureRefused: 1, replayRefused: 0 })
        // Not redelivered: past the visibility timeout and its broker margin, still nothing new.
        await quiet(2_500)
        expect(done).toEqual(['original', 'after'])
        expect(b.bus.stats(`${p}jobs`).signatureRefused).toBe(1)
        let settled = false
        const deadline = Date.now() + 15_000
        while (!settled && Date.now() < deadline) {
          settled = await r.settled(`${p}jobs`, 'workers')
          if (!settled) await quiet(100)
        }
        expect(settled).toBe(true)
      })

      it('an entry written again is refused: at once (seen at another position) and after the window (its signed time)', { timeout: 60_000 }, async () => {
        const p = `${RUN}-${++runs}.`
        const windowed = { ...signed, replayWindowMs: 1_000 }
        const [a, b] = [await open(p, windowed), await open(p, windowed)]
        const news = listen(b.bus.subscribe<string>(`${p}news`, { from: 'earliest' }))
        const done: string[] = []
        b.bus.group<string>(`${p}jobs`, 'workers', { from: 'earliest' }).consume((d) => void done.push(d.message.payload))
        await a.bus.publish(`${p}news`, 'once')
        await a.bus.publish(`${p}jobs`, 'once')
        await until(() => news.items.length >= 1 && done.length >= 1, 30_000, 'the originals')
        const r = await raw()
        const [newsEntry] = await r.entries(`${p}news`)
        const [jobsEntry] = await r.entries(`${p}jobs`)
        // A copy at once: within the window, but the receiver saw that signature at another position.
        await r.write(`${p}news`, newsEntry!)
        await r.write(`${p}jobs`, jobsEntry!)
        await until(
          () => b.bus.stats(`${p}news`).replayRefused >= 1 && b.bus.stats(`${p}jobs`).replayRefused >= 1,
          20_000,
          'the immediate copies refused',
          () => [b.bus.stats(`${p}news`), b.bus.stats(`${p}jobs`)],
        )
        // A copy after the window: its signed time is too far from the broker's.
        await quiet(1_500)
        await r.write(`${p}news`, newsEntry!)
        await r.write(`${p}jobs`, jobsEntry!)
        await a.bus.publish(`${p}news`, 'later')
        await a.bus.publish(`${p}jobs`, 'later')
        await until(() => news.items.length >= 2 && done.length >= 2, 30_000, 'the later messages')
        await until(() => b.bus.stats(`${p}news`).replayRefused >= 2 && b.bus.stats(`${p}jobs`).replayRefused >= 2, 10_000, 'the late copies refused')
        expect(news.items.map((m) => m.payload)).toEqual(['once', 'later'])
        expect(done).toEqual(['once', 'later'])
        for (const ch of ['news', 'jobs']) expect(b.bus.stats(`${p}${ch}`), ch).toMatchObject({ signatureRefused: 0, replayRefused: 2 })
        // A mirror that reads the history later refuses both copies too (the first by what it saw
        // before it in the log, the second by its time).
        const late = await open(p, windowed)
        const history = listen(late.bus.subscribe<string>(`${p}news`, { from: 'earliest' }))
        await until(() => history.items.length >= 2 && late.bus.stats(`${p}news`).replayRefused >= 2, 20_000, 'the history, copies refused')
        expect(history.items.map((m) => m.payload)).toEqual(['once', 'later'])
      })

      // A Redis entry's id is chosen by its writer: on a stream idle since a message (or whose
      // message was deleted), a copy can be added long after with an id next to the original's, so
      // the id's time passes the window check. A reader that read the stream without the copy knows
      // it was appended later than that, and refuses it by its own clock.
      it.skipIf(broker.name !== 'redis')(
        'a copy added long after with an entry id chosen next to the original is refused by a process that did not read the original',
        { timeout: 60_000 },
        async () => {
          const p = `${RUN}-${++runs}.`
          const windowed = { ...signed, replayWindowMs: 1_000 }
          const a = await open(p, windowed)
          await a.bus.publish(`${p}pay`, 'once')
          await a.bus.publish(`${p}idle`, 'once')
          const { createClient } = await import('redis')
          const client = createClient({ url: inject('redisUrl')!, RESP: 2 })
          client.on('error', () => {})
          await client.connect()
          raws.push({ entries: async () => [], write: async () => {}, settled: async () => true, close: () => client.quit().then(() => {}) })
          const send = (args: Array<string | Buffer>) => client.sendCommand(args, { typeMapping: { [36]: Buffer } } as never) as Promise<unknown>
          const captured = async (ch: string) => {
            const [[id, fields]] = (await send(['XRANGE', `orrery:ch:${p}${ch}`, '-', '+'])) as [[Buffer, Buffer[]]]
            return { id: id.toString(), fields }
          }
          const pay = await captured('pay')
          const idle = await captured('idle')
          await quiet(2_000)
          // `pay`'s original deleted (the stream keeps its last id); `idle` left as it is.
          await send(['XDEL', `orrery:ch:${p}pay`, pay.id])
          const b = await open(p, windowed)
          const mirrored: string[] = []
          const done: string[] = []
          for (const ch of ['pay', 'idle']) {
            b.bus.subscribe<string>(`${p}${ch}`, { from: 'latest' }).subscribe((m) => void mirrored.push(`${ch} ${m.payload}`))
            b.bus.group<string>(`${p}${ch}`, 'workers', { from: 'latest' }).consume((d) => void done.push(`${ch} ${d.message.payload}`))
          }
          await quiet(500)
          for (const [ch, e] of [
            ['pay', pay],
            ['idle', idle],
          ] as const)
            await send(['XADD', `orrery:ch:${p}${ch}`, `${e.id.split('-')[0]}-9`, ...e.fields])
          await a.bus.publish(`${p}pay`, 'after')
          await a.bus.publish(`${p}idle`, 'after')
          await until(
            () => mirrored.length >= 2 && done.length >= 2,
            20_000,
            'the messages after the copies',
            () => [mirrored, done],
          )
          await until(
            () => b.bus.stats(`${p}pay`).replayRefused >= 1 && b.bus.stats(`${p}idle`).replayRefused >= 1,
            10_000,
            'the copies refused',
            () => [b.bus.stats(`${p}pay`), b.bus.stats(`${p}idle`)],
          )
          expect(mirrored.sort()).toEqual(['idle after', 'pay after'])
          expect(done.sort()).toEqual(['idle after', 'pay after'])
          for (const ch of ['pay', 'idle']) expect(b.bus.stats(`${p}${ch}`), ch).toMatchObject({ signatureRefused: 0, replayRefused: 1 })
        },
      )

      // Replies are not kept by Redis and NATS: the test listens at the requester's reply address
      // to capture one, then sends it again (a copy) and without its signature (a forgery).
      it.skipIf(broker.name === 'kafka')(
        'a reply sent again, or without its signature, is refused and never reaches a requester',
        { timeout: 60_000 },
        async () => {
          const p = `${RUN}-${++runs}.`
          const [a, b] = [await open(p, signed), await open(p, signed)]
          const events = refusedEvents(a)
          b.bus.respond<number, number>(`${p}svc`, (req) => req.payload * 2)
          expect((await a.bus.request<number>(`${p}svc`, 1, { timeout: 15_000 })).payload).toBe(2)
          const r = await raw()
          const [entry] = await r.entries(`${p}svc`)
          const address = entry!.fields[broker.name === 'redis' ? 'r' : 'Orrery-Reply-To']!
          let send: (signedCopy: boolean) => Promise<void>
          let captured: () => boolean
          if (broker.name === 'redis') {
            const { createClient } = await import('redis')
            const listener = createClient({ url: inject('redisUrl')!, RESP: 2 })
            const publisher = createClient({ url: inject('redisUrl')!, RESP: 2 })
            listener.on('error', () => {})
            publisher.on('error', () => {})
            await listener.connect()
            await publisher.connect()
            raws.push({
              entries: async () => [],
              write: async () => {},
              settled: async () => true,
              close: () => Promise.all([listener.quit(), publisher.quit()]).then(() => {}),
            })
            let reply: Buffer | undefined
            await listener.subscribe(
              `orrery:reply:${address}`,
              (m: Buffer) => {
                reply ??= m
              },
              true,
            )
            captured = () => reply !== undefined
            // A signed reply starts with its signature: one length byte, then the text.
            send = async (signedCopy) => void (await publisher.publish(`orrery:reply:${address}`, signedCopy ? reply! : reply!.subarray(1 + reply![0]!)))
          } else {
            const { connect } = await import('@nats-io/transport-node')
            const nc = await connect({ servers: inject('natsUrl')! })
            raws.push({ entries: async () => [], write: async () => {}, settled: async () => true, close: () => nc.close() })
            const subject = `orrery.reply.${brokerName(address)}`
            let reply: { data: Uint8Array; headers: unknown } | undefined
            nc.subscribe(subject, {
              callback: (_, m) => {
                reply ??= { data: m.data, headers: m.headers }
              },
            })
            await nc.flush()
            captured = () => reply !== undefined
            send = async (signedCopy) => {
              nc.publish(subject, reply!.data, signedCopy ? { headers: reply!.headers as never } : undefined)
              await nc.flush()
            }
          }
          expect((await a.bus.request<number>(`${p}svc`, 2, { timeout: 15_000 })).payload).toBe(4)
          await until(captured, 10_000, 'the reply captured')
          // A request open meanwhile is not answered by either.
          const open3 = a.bus.request<number>(`${p}svc`, 3, { timeout: 15_000 })
          await send(true)
          await send(false)
          await until(
            () => events.length >= 2,
            10_000,
            'both refusals reported',
            () => events,
          )
          expect(events.map((e) => e.reason).sort()).toEqual(['replay', 'signature'])
          expect(events.every((e) => e.channel === undefined && e.count === 1)).toBe(true)
          expect((await open3).payload).toBe(6)
          expect(a.bus.lateReplies()).toBe(0)
        },
      )

      it("the store's strong namespaces are refused on a signed transport; replicated namespaces and the shared mesh ride on signed channels", {
        timeout: 60_000,
      }, async () => {
        const p = `${RUN}-${++runs}.`
        // Apart from every other test: the store's and the mesh's channels are not under `p`.
        const apart = p.replace(/[^A-Za-z0-9_-]/g, '_')
        const separate = broker.name === 'redis' ? { keyPrefix: `${apart}:` } : { prefix: apart }
        const openApart = async (signing: Record<string, unknown> | undefined): Promise<Orrery> => {
          const transport = { ...broker.options, ...separate, ...(signing === undefined ? {} : { signing }) }
          const o = await Orrery.create({ transports: { main: transport as never } })
          o.bus.events.subscribe(() => {})
          opened.push(o)
          return o
        }
        const [a, b, intruder] = [await openApart(signed), await openApart(signed), await openApart(undefined)]
        // Strong: refused before anything is opened (Kafka has no strong mode at all).
        const strong = await a
          .openStore({ replica: 'a' })
          .shared('seats', { transport: 'main', consistency: 'strong' })
          .catch((e: unknown) => e)
        expect(isOrreryError(strong, 'CAPABILITY_UNSUPPORTED'), String(strong)).toBe(true)
        expect((strong as Error).message).toMatch(broker.name === 'kafka' ? /compare-and-set/ : /signed/)
        expect(
          await intruder
            .openStore({ replica: 'x' })
            .shared('seats-unsigned', { transport: 'main', consistency: 'strong' })
            .then(
              () => 'opened',
              (e: unknown) => (isOrreryError(e, 'CAPABILITY_UNSUPPORTED') ? 'refused' : String(e)),
            ),
        ).toBe(broker.name === 'kafka' ? 'refused' : 'opened')
        // Replicated: what an unsigned process writes is refused by the signed ones.
        const na = await a.openStore({ replica: 'a' }).shared<string>('cfg', { transport: 'main' })
        const nb = await b.openStore({ replica: 'b' }).shared<string>('cfg', { transport: 'main' })
        const nx = await intruder.openStore({ replica: 'x' }).shared<string>('cfg', { transport: 'main' })
        nx.put('forged', 'x')
        na.put('genuine', 'a')
        await until(() => nb.get('genuine')?.value === 'a', 20_000, 'the signed change')
        await until(
          () => b.bus.stats('orrery.store.cfg').signatureRefused >= 1,
          10_000,
          'the forged change refused',
          () => b.bus.stats('orrery.store.cfg'),
        )
        expect(nb.get('forged')).toBeUndefined()
        expect(na.get('forged')).toBeUndefined()
        // The shared mesh: an unsigned process's agent never shows in a signed process's registry.
        class Worker extends Agent {
          static capabilities = [{ name: 'work', version: '1.0.0' }]
          constructor(context: AgentContext) {
            super(context)
            this.handle('work', () => {})
          }
        }
        const meshX = await intruder.mesh({ shared: 'main', heartbeat: { interval: 1_000 } })
        meshX.define('worker', Worker)
        await meshX.spawn('worker')
        const meshA = await a.mesh({ shared: 'main', heartbeat: { interval: 1_000 } })
        meshA.define('worker', Worker)
        await meshA.spawn('worker')
        const meshB = await b.mesh({ shared: 'main', heartbeat: { interval: 1_000 } })
        await until(() => meshB.registry.find('work').length >= 1, 20_000, "the signed process's agent")
        await until(() => b.bus.stats('orrery.registry').signatureRefused >= 1, 10_000, 'the unsigned announcements refused')
        await quiet(1_500)
        expect(meshB.registry.find('work').map((e) => e.process)).toEqual([meshA.process])
        for (const m of [meshB, meshA, meshX]) await m.shutdown()
      })

      it('a group entry refused for its time (a sender whose clock is off) is settled but kept by the broker, and its report names where', {
        timeout: 60_000,
      }, async () => {
        const p = `${RUN}-${++runs}.`
        const [a, b] = [await open(p, signed), await open(p, signed)]
        const events = refusedEvents(b)
        const done: string[] = []
        b.bus.group<string>(`${p}jobs`, 'workers', { from: 'earliest' }).consume((d) => void done.push(d.message.payload))
        await a.bus.publish(`${p}jobs`, 'on time')
        await until(() => done.length >= 1, 30_000, 'the first job')
        const r = await raw()
        const [entry] = await r.entries(`${p}jobs`)
        // The same key, a clock ten minutes behind: a genuine signature, refused for its time.
        const skewed = new Signing(checkSigning(signed, 'signing')!, () => {})
        const late = skewed.sign({ kind: 'publish', channel: `${p}jobs`, frame: entry!.frame } as never, Date.now() - 600_000)
        await r.write(`${p}jobs`, { frame: entry!.frame, fields: { ...entry!.fields, [SIGNATURE[broker.name]!]: late } })
        await until(() => events.length >= 1, 20_000, 'the refusal reported')
        expect(events[0]).toMatchObject({ reason: 'replay', channel: `${p}jobs` })
        expect(events[0]!.detail).toMatch(/\(broker position \S+\)$/)
        expect(done).toEqual(['on time'])
        let settled = false
        const deadline = Date.now() + 15_000
        while (!settled && Date.now() < deadline) {
          settled = await r.settled(`${p}jobs`, 'workers')
          if (!settled) await quiet(100)
        }
        expect(settled).toBe(true)
        // Still on the broker: found by the signature its report came from.
        expect((await r.entries(`${p}jobs`)).map((e) => e.fields[SIGNATURE[broker.name]!])).toContain(late)
      })

      it('keys rotate: every listed key verifies, only `sign` signs; a key removed no longer verifies', { timeout: 60_000 }, async () => {
        const p = `${RUN}-${++runs}.`
        const both = await open(p, { keys: { k1: K1, k2: K2 }, sign: 'k1' })
        const onlyNew = await open(p, { keys: { k2: K2 }, sign: 'k2' })
        const old = await open(p, { keys: { k1: K1 }, sign: 'k1' })
        const moved = await open(p, { keys: { k1: K1, k2: K2 }, sign: 'k2' })
        const atBoth = listen(both.bus.subscribe<string>(`${p}news`, { from: 'earliest' }))
        const atNew = listen(onlyNew.bus.subscribe<string>(`${p}news`, { from: 'earliest' }))
        await old.bus.publish(`${p}news`, 'signed k1')
        await moved.bus.publish(`${p}news`, 'signed k2')
        await until(() => atBoth.items.length >= 2 && atNew.items.length >= 1 && onlyNew.bus.stats(`${p}news`).signatureRefused >= 1, 30_000, 'both')
        expect(atBoth.items.map((m) => m.payload)).toEqual(['signed k1', 'signed k2'])
        expect(atNew.items.map((m) => m.payload)).toEqual(['signed k2'])
        expect(onlyNew.bus.stats(`${p}news`)).toMatchObject({ signatureRefused: 1, replayRefused: 0 })
        expect(both.bus.stats(`${p}news`)).toMatchObject({ signatureRefused: 0, replayRefused: 0 })
        // Requests and replies between a k2-only responder and a rotating requester.
        onlyNew.bus.respond<number, number>(`${p}svc`, (req) => req.payload + 1)
        expect((await moved.bus.request<number>(`${p}svc`, 1, { timeout: 15_000 })).payload).toBe(2)
      })
    })
  }
})
