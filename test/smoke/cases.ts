/**
 * The smoke test every engine runs, in Node and in the browser: the same core calls must give
 * the same transcript everywhere. Only deterministic facts go into the transcript (no ids,
 * no wall-clock times).
 */
import { Agent, type AgentContext, type ChannelStats, type Message, type Orrery as OrreryClass, type OrreryOptions } from '../../ts/api.js'
import { panicForTests } from '../../ts/engines/test-hooks.js'

/** The smoke test's agent: one capability, a typed handler. */
class Upper extends Agent {
  static readonly capabilities = [{ name: 'upper', version: '1.4.2', priority: 3 }]
  constructor(context: AgentContext<unknown>) {
    super(context)
    this.handle<string, string>('upper', (text) => `${this.id}:${text.toUpperCase()}`)
  }
}

type OrreryCtor = { create(options?: OrreryOptions): Promise<OrreryClass> }

/** Runs the smoke scenario and returns its transcript. */
export async function smokeTranscript(Orrery: OrreryCtor, options: OrreryOptions = {}): Promise<unknown[]> {
  let now = 1_000
  const orrery = await Orrery.create({ ...options, maxMessageBytes: 512, clock: () => now })
  const { bus } = orrery
  const out: unknown[] = [`engine:${orrery.engine}`]
  // Retained bytes depend on generated ids, so the transcript only records that there are some.
  const sized = (s: ChannelStats) => ({ ...s, retainedBytes: s.retainedBytes > 0 })
  const seen = (m: Message) => [m.channel, m.seq, m.kind, m.priority, m.sender ?? null, m.headers, m.timestamp, m.expiresAt ?? null, m.payload]

  const live: unknown[] = []
  const sub = bus.subscribe('greetings').subscribe((m) => live.push(seen(m)))
  await bus.publish('greetings', { hello: 'world' }, { sender: 'alice', headers: { traceparent: 't-1' } })
  now += 5
  await bus.publish('greetings', [1, 2, 3], { kind: 'event', priority: 'high', ttl: 60_000 })
  await bus.publishBatch([
    { channel: 'greetings', payload: 'third' },
    { channel: 'other', payload: new Uint8Array([1, 2, 3]) },
  ])
  bus.flush()
  out.push({ live })

  const replayed: unknown[] = []
  const replay = bus.subscribe('greetings', { from: 'earliest' }).subscribe((m) => replayed.push(m.seq))
  const fromSeq: unknown[] = []
  const tail = bus.subscribe('greetings', { from: { seq: 1 } }).subscribe((m) => fromSeq.push(m.seq))
  bus.flush()
  out.push({ replayed, fromSeq })
  replay.unsubscribe()
  tail.unsubscribe()

  const code = async (fn: () => unknown): Promise<string> => {
    try {
      await fn()
      return 'ok'
    } catch (err) {
      const e = err as { name?: string; code?: string }
      return `${e.name}:${e.code}`
    }
  }
  out.push({
    errors: {
      invalidName: await code(() => bus.publish('has space', 1)),
      tooLarge: await code(() => bus.publish('greetings', 'x'.repeat(600))),
      badPayload: await code(() => bus.publish('greetings', undefined)),
      badPriority: await code(() => bus.publish('greetings', 1, { priority: 'urgent' as never })),
      badTtl: await code(() => bus.publish('greetings', 1, { ttl: -1 })),
      rawNeedsBytes: await code(() => bus.publish('greetings', 'text', { codec: 'raw' })),
      badRetention: await code(() => bus.channel('greetings', { retention: { maxCount: -1 } })),
    },
  })
  // A batch with one oversized message publishes nothing at all.
  out.push({
    rejectedBatch: await code(() =>
      bus.publishBatch([
        { channel: 'greetings', payload: 'fine' },
        { channel: 'greetings', payload: 'y'.repeat(600) },
      ]),
    ),
  })
  bus.flush()
  out.push({ liveAfterRejections: live.length, stats: sized(bus.stats('greetings')) })

  bus.channel('short', { retention: { maxCount: 2 } })
  for (let i = 0; i < 5; i++) await bus.publish('short', i)
  const kept: unknown[] = []
  bus.subscribe('short', { from: 'earliest' }).subscribe((m) => kept.push(m.payload))
  bus.flush()
  out.push({ retainedAfterTrim: kept, shortStats: sized(bus.stats('short')) })

  const store = orrery.openStore({ history: 1 })
  const cfg = store.namespace('cfg')
  const changes: unknown[] = []
  cfg.watchPrefix('').subscribe((c) => changes.push([c.type, c.key, c.version]))
  const v1 = cfg.put('mode', 'fast')
  cfg.put('mode', 'safe', { ifVersion: v1 })
  cfg.put('lease', 'agent-1', { ttl: 10 })
  now += 10
  store.flush()
  out.push({
    store: {
      mode: cfg.get('mode')?.value,
      versions: cfg.history('mode').map((c) => c.version),
      stale: await code(() => cfg.put('mode', 'x', { ifVersion: v1 })),
      lease: cfg.get('lease') ?? null,
      changes,
      restored: orrery.openStore({ snapshot: store.export() }).namespace('cfg').keys(),
    },
  })
  store.close()

  const mesh = await orrery.mesh({ seed: 1, heartbeat: { interval: 60_000 } })
  mesh.define('upper', Upper)
  await mesh.spawn('upper', { replicas: 2 })
  out.push({
    mesh: {
      reply: (await mesh.request<string>('upper@^1.4', 'hi')).payload,
      found: mesh.registry.find('upper@~1.4').map((a) => [a.id, a.health, a.breaker]),
      missing: await code(() => mesh.request('uper', 'hi')),
      similar: mesh.registry.similar('uper').map((s) => s.name),
      badRange: await code(() => mesh.request('upper@not-a-range', 'hi')),
    },
  })
  await mesh.shutdown()

  sub.unsubscribe()
  orrery.close()
  out.push({ afterClose: await code(() => bus.publish('greetings', 1)) })
  return out
}

/** The transcript every engine must produce. */
export const EXPECTED_TRANSCRIPT_TAIL: unknown[] = [
  {
    live: [
      ['greetings', 0, 'data', 'normal', 'alice', { traceparent: 't-1' }, 1000, null, { hello: 'world' }],
      ['greetings', 1, 'event', 'high', null, {}, 1005, 61005, [1, 2, 3]],
      ['greetings', 2, 'data', 'normal', null, {}, 1005, null, 'third'],
    ],
  },
  // The replay buffers all three at once, and seq 1 is `high`: higher priority goes first.
  { replayed: [1, 0, 2], fromSeq: [1, 2] },
  {
    errors: {
      invalidName: 'OrreryError:INVALID_NAME',
      tooLarge: 'OrreryError:MESSAGE_TOO_LARGE',
      badPayload: 'OrreryError:INVALID_PAYLOAD',
      badPriority: 'OrreryError:INVALID_OPTION',
      badTtl: 'OrreryError:INVALID_OPTION',
      rawNeedsBytes: 'OrreryError:INVALID_PAYLOAD',
      badRetention: 'OrreryError:INVALID_OPTION',
    },
  },
  { rejectedBatch: 'OrreryError:MESSAGE_TOO_LARGE' },
  {
    liveAfterRejections: 3,
    stats: {
      published: 3,
      delivered: 8,
      retained: 3,
      retainedBytes: true,
      firstSeq: 0,
      nextSeq: 3,
      subscribers: 1,
      groups: 0,
      duplicates: 0,
      expired: 0,
      deadLettered: 0,
      ingested: 0,
      rejected: 0,
      routesDropped: 0,
      signatureRefused: 0,
      replayRefused: 0,
    },
  },
  {
    retainedAfterTrim: [3, 4],
    shortStats: {
      published: 5,
      delivered: 2,
      retained: 2,
      retainedBytes: true,
      firstSeq: 3,
      nextSeq: 5,
      subscribers: 1,
      groups: 0,
      duplicates: 0,
      expired: 0,
      deadLettered: 0,
      ingested: 0,
      rejected: 0,
      routesDropped: 0,
      signatureRefused: 0,
      replayRefused: 0,
    },
  },
  {
    store: {
      mode: 'safe',
      versions: [1, 2],
      stale: 'OrreryError:VERSION_CONFLICT',
      lease: null,
      changes: [
        ['put', 'mode', 1],
        ['put', 'mode', 2],
        ['put', 'lease', 3],
        ['expire', 'lease', 4],
      ],
      restored: ['mode'],
    },
  },
  {
    mesh: {
      reply: 'upper-1:HI',
      found: [
        ['upper-1', 'healthy', 'closed'],
        ['upper-2', 'healthy', 'closed'],
      ],
      missing: 'OrreryError:NO_RESPONDER',
      similar: ['upper'],
      badRange: 'OrreryError:INVALID_VERSION',
    },
  },
  { afterClose: 'OrreryError:CLOSED' },
]

/** What a deliberate core panic does: the first call's error code, then a later call's outcome. */
export async function panicTranscript(orrery: OrreryClass): Promise<[string, string]> {
  const codeOf = async (fn: () => unknown): Promise<string> => {
    try {
      await fn()
      return 'ok'
    } catch (err) {
      return (err as { code: string }).code
    }
  }
  const first = await codeOf(() => panicForTests(orrery.backend, 'deliberate panic'))
  const later = await codeOf(() => orrery.bus.publish('after-panic', 1))
  return [first, later]
}
