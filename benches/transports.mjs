/**
 * The transports suite: Orrery's bus bound to a broker, on both engines, against the broker's own
 * tooling on the same server in the same run, each contender in a process of its own
 * (benches/lib/runner.mjs); writes benches/results/transports.json (the suites' shape:
 * `msgs_per_sec` counts messages; `vs_tool` is a contender's rate over the scenario's tool's).
 * This session: Redis Streams (scripts/servers.sh's redis, port 16379, appendfsync always).
 *   - publish: N messages of 128 bytes XADDed to one stream, every one acknowledged by the server.
 *     Tool: redis-benchmark (Debian's redis-tools) running the same XADD, 50 clients pipelining
 *     64 each (its default clients). Beside it, for reading the gap: redis-benchmark-1conn (one
 *     connection pipelining 1,024, as Orrery's driver publishes through one connection) and
 *     node-redis-raw (the bare node-redis client in the same window of batches Orrery gets: what
 *     the JS client itself costs).
 *   - consume-ack: N messages already in a stream read and acknowledged by a new consumer group
 *     (created from the start of the stream, so each round reads all N), until the server holds
 *     no pending entry. redis-benchmark repeats one fixed command and cannot ack the ids it read,
 *     so the tool here is node-redis-raw: a tight loop of XREADGROUP COUNT 256 with each batch's
 *     XACK pipelined behind the next read.
 *   - request-reply: REQUESTS round trips between two Orrery instances (two processes as far as the
 *     broker can tell) on a bound channel, REQUEST_WINDOW in flight at once: the request an entry
 *     of the stream read by the responder's group, the reply sent to the requester's reply address
 *     (Redis: PUBLISH; NATS: a core publish). On Redis and on NATS JetStream (scripts/servers.sh's
 *     nats, port 14222, started like the redis one). requests/s and the p99 round trip, against
 *     moleculer-nats (two Moleculer brokers over the same NATS server, the same requests and
 *     window; its Redis transporter needs ioredis, which the project does not carry).
 *   - durable-publish: the `durable` transport (native engine; a file of this run), DURABLE_N
 *     messages a round in batches of DURABLE_BATCH, each batch awaited until it is on disk,
 *     against better-sqlite3 in WAL mode with synchronous=FULL inserting the same batches, one
 *     transaction each (what a user would otherwise write). No server.
 * NATS publish/consume (`orrery-nats` against `nats-bench`) and Kafka (`orrery-kafka` against
 * `kafka-perf`) come in a later session; they are not in the results until they are measured.
 *
 * The suite starts the redis server through scripts/servers.sh (`--for` its pid) if it is not
 * running, and stops it at the end unless another user (a test run) still has it.
 *   node --expose-gc --max-old-space-size=12000 benches/transports.mjs    (or: npm run bench -- transports)
 *   node --expose-gc benches/transports.mjs publish    (some scenarios; prints, writes no file)
 *   ORRERY_BENCH_CONTENDERS=redis-benchmark,node-redis-raw node --expose-gc benches/transports.mjs
 *   (some contenders; prints, writes no file).
 *   ORRERY_BENCH_QUICK=1: 20,000 messages a round instead of 100,000, two rounds, nothing written.
 */
import { execFile, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Orrery } from 'orrery'
import { createClient, RESP_TYPES } from 'redis'
import { Latencies } from './lib/rounds.mjs'
import { runSuite, scaled } from './lib/runner.mjs'
import { Tally } from './lib/tally.mjs'

const run = promisify(execFile)
const Sqlite = createRequire(import.meta.url)('better-sqlite3')

const NATS_URL = 'nats://127.0.0.1:14222'
const REDIS_PORT = 16379
const REDIS_URL = `redis://127.0.0.1:${REDIS_PORT}`
const PAYLOAD_BYTES = 128
const PAYLOAD = new Uint8Array(PAYLOAD_BYTES).fill(0x78)
// The same bytes for the baselines: node-redis takes a Buffer or a string.
const PAYLOAD_BUFFER = Buffer.from(PAYLOAD)
const PAYLOAD_TEXT = PAYLOAD_BUFFER.toString('latin1')
// Messages per round, every contender the same (redis-benchmark runs a fixed count).
const N = scaled(100_000, 20_000)
const ROUNDS = 5
// Publishers keep WINDOW batches of BATCH messages awaiting the server at once: 4,096 in flight,
// about what redis-benchmark keeps (50 clients x 64).
const BATCH = 1024
const WINDOW = 4
// redis-benchmark's own default client count, and the pipeline depth the issue gives it.
const TOOL_CLIENTS = 50
const TOOL_PIPELINE = 64
// The raw consumer's batch, and the most a remote group reads at once.
const READ_COUNT = 256
const ENGINES = [
  ['orrery-redis', 'native'],
  ['orrery-redis-wasm', 'wasm'],
]
// Keys of this contender's process only (each contender is a child of its own), so a round never
// reads what another contender, an earlier run or a test running meanwhile left on the server.
const PREFIX = `orrery-bench:${process.pid}:`

/**
 * A node-redis client that returns binary fields as Buffers, as Orrery's driver reads them.
 * Without node-redis's default per-command timeout (5 s): it arms an AbortSignal timer for every
 * command, which made 128-byte XADDs 2.5x slower (25 k/s against 60 k/s here), and the baseline
 * should be the client at its fastest.
 */
async function rawClient() {
  const client = createClient({ url: REDIS_URL, commandOptions: { timeout: 0 } })
  client.on('error', (error) => console.error(`node-redis: ${error.message}`))
  await client.connect()
  return client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
}

/** Deletes every key this contender made (`pattern` under the run's prefix). */
async function dropKeys(client, pattern) {
  const keys = []
  for await (const batch of client.scanIterator({ MATCH: `${PREFIX}${pattern}`, COUNT: 1000 })) keys.push(...batch)
  if (keys.length > 0) await client.del(keys)
}

/** Sends `n` messages as WINDOW batches of BATCH in flight; `send(count)` resolves once a batch is acknowledged. */
async function windowed(n, send) {
  const inFlight = []
  for (let sent = 0; sent < n; sent += BATCH) {
    inFlight.push(send(Math.min(BATCH, n - sent)))
    if (inFlight.length === WINDOW) await inFlight.shift()
  }
  await Promise.all(inFlight)
}

/**
 * An Orrery on `engine` whose `bench.*` channels are bound to the redis server. No retention is
 * set on them, so the broker keeps every entry and Orrery's XADD is the tool's (no MAXLEN).
 */
async function orreryOnRedis(engine) {
  const orrery = await Orrery.create({
    engine,
    transports: { main: { kind: 'redis', url: REDIS_URL, keyPrefix: PREFIX } },
    bindings: { 'bench.*': 'main' },
  })
  // Orrery's stream key for a channel (spec: `<keyPrefix>ch:<channel name>`).
  return { orrery, streamKey: (channel) => `${PREFIX}ch:${channel}` }
}

/**
 * The round of a publish contender: empties `key`, sends N, checks the stream holds N (up to
 * `over` more: redis-benchmark's pipelining clients overshoot its count by a few requests).
 */
function publishRounds(who, client, key, send, over = 0) {
  return async () => {
    await client.del(key)
    const t0 = performance.now()
    await send()
    const ms = performance.now() - t0
    const length = await client.xLen(key)
    if (length < N || length > N + over) throw new Error(`${who}: the stream holds ${length} entries after a round of ${N}`)
    return { msgs: N, ms, p99_us: null }
  }
}

function orreryPublish(id, engine) {
  return async () => {
    const { orrery, streamKey } = await orreryOnRedis(engine)
    const { bus } = orrery
    const client = await rawClient()
    const items = Array.from({ length: BATCH }, () => ({ channel: 'bench.publish', payload: PAYLOAD }))
    const round = publishRounds(id, client, streamKey('bench.publish'), () =>
      windowed(N, (count) => bus.publishBatch(count === BATCH ? items : items.slice(0, count))),
    )
    return {
      round,
      async close() {
        await orrery.shutdown()
        await dropKeys(client, '*')
        await client.close()
      },
    }
  }
}

async function rawPublish() {
  const client = await rawClient()
  const key = `${PREFIX}raw:publish`
  const round = publishRounds('node-redis-raw', client, key, () =>
    windowed(N, (count) => {
      const acks = new Array(count)
      // Commands issued in one tick leave in one write: node-redis pipelines them.
      for (let i = 0; i < count; i++) acks[i] = client.xAdd(key, '*', { f: PAYLOAD_BUFFER })
      return Promise.all(acks)
    }),
  )
  return {
    round,
    async close() {
      await dropKeys(client, 'raw:*')
      await client.close()
    },
  }
}

/** Reads redis-benchmark's CSV line: requests per second and its latency percentiles (ms). */
function parseToolCsv(stdout) {
  const line = stdout.trim().split('\n').at(-1)
  const fields = line.match(/"([\d.]+)","([\d.]+)","([\d.]+)","([\d.]+)","([\d.]+)","([\d.]+)","([\d.]+)"$/)
  if (!fields) throw new Error(`redis-benchmark: no result in its output: ${stdout.slice(0, 500)}`)
  const [rps, , , p50, , p99] = fields.slice(1).map(Number)
  return { rps, p50_ms: p50, p99_ms: p99 }
}

/**
 * redis-benchmark XADDing the same payload: `clients` connections, each keeping `pipeline`
 * requests in flight. The suite's tool runs with its default 50 clients; `redis-benchmark-1conn`
 * uses one connection, as Orrery's driver publishes through one, pipelining a batch at a time.
 */
function toolPublish(id, clients, pipeline) {
  return async () => {
    const client = await rawClient()
    const key = `${PREFIX}tool:publish`
    const args = ['-h', '127.0.0.1', '-p', String(REDIS_PORT), '-n', String(N), '-c', String(clients), '-P', String(pipeline), '--csv']
    let reported
    const measured = publishRounds(
      id,
      client,
      key,
      async () => {
        const { stdout } = await run('redis-benchmark', [...args, 'XADD', key, '*', 'f', PAYLOAD_TEXT])
        reported = parseToolCsv(stdout)
      },
      clients * pipeline,
    )
    return {
      async round() {
        const outside = await measured()
        // Its own figure (from its first request to its last reply), not the process's start-up.
        const extra = { clients, pipeline, wall_ms: Math.round(outside.ms), p99_ms_per_pipeline: reported.p99_ms }
        return { msgs: N, ms: (N / reported.rps) * 1000, p99_us: null, extra }
      },
      async close() {
        await dropKeys(client, 'tool:*')
        await client.close()
      },
    }
  }
}

/** Waits until the server holds no pending entry for `group` (every XACK has landed). */
async function settled(client, key, group) {
  for (;;) {
    const { pending } = await client.xPending(key, group)
    if (pending === 0) return
  }
}

function orreryConsume(id, engine) {
  return async () => {
    const { orrery, streamKey } = await orreryOnRedis(engine)
    const { bus } = orrery
    const client = await rawClient()
    const key = streamKey('bench.consume')
    const items = Array.from({ length: BATCH }, () => ({ channel: 'bench.consume', payload: PAYLOAD }))
    await windowed(N, (count) => bus.publishBatch(count === BATCH ? items : items.slice(0, count)))
    const length = await client.xLen(key)
    if (length !== N) throw new Error(`${id}: the stream holds ${length} entries, not ${N}`)
    const tally = new Tally()
    let rounds = 0
    return {
      async round() {
        const name = `round-${rounds++}`
        let group
        let member
        const t0 = performance.now()
        await new Promise((resolve, reject) => {
          let got = 0
          group = bus.group('bench.consume', name, { from: 'earliest' })
          member = group.join({ maxInFlight: 4 * READ_COUNT }).subscribe({
            next(d) {
              tally.receive(d.message.payload)
              d.ack()
              if (++got === N) resolve()
            },
            error: reject,
          })
        })
        await settled(client, key, name)
        const ms = performance.now() - t0
        member.unsubscribe()
        const { acked, pending } = group.stats()
        if (acked !== N || pending !== 0) throw new Error(`${id}: ${acked} of ${N} acked, ${pending} pending`)
        group.delete()
        return { msgs: N, ms, p99_us: null }
      },
      async close(total) {
        await orrery.shutdown()
        await dropKeys(client, '*')
        await client.close()
        tally.verify(id, total, PAYLOAD_BYTES)
      },
    }
  }
}

async function rawConsume() {
  const client = await rawClient()
  const key = `${PREFIX}raw:consume`
  await windowed(N, (count) => Promise.all(Array.from({ length: count }, () => client.xAdd(key, '*', { f: PAYLOAD_BUFFER }))))
  const tally = new Tally()
  let rounds = 0
  return {
    async round() {
      const group = `round-${rounds++}`
      const t0 = performance.now()
      await client.xGroupCreate(key, group, '0', { MKSTREAM: true })
      const acks = []
      for (;;) {
        const reply = await client.xReadGroup(group, 'bench', { key, id: '>' }, { COUNT: READ_COUNT })
        const messages = reply?.[0]?.messages ?? []
        if (messages.length === 0) break
        const ids = new Array(messages.length)
        for (let i = 0; i < messages.length; i++) {
          ids[i] = messages[i].id
          tally.receive(messages[i].message.f)
        }
        acks.push(client.xAck(key, group, ids))
      }
      const acked = (await Promise.all(acks)).reduce((a, b) => a + b, 0)
      const ms = performance.now() - t0
      if (acked !== N) throw new Error(`node-redis-raw: ${acked} acked of ${N}`)
      return { msgs: N, ms, p99_us: null }
    },
    async close(total) {
      await dropKeys(client, 'raw:*')
      await client.close()
      tally.verify('node-redis-raw', total, PAYLOAD_BYTES)
    },
  }
}

/** Requests a request-reply round makes, and how many wait for their reply at once. */
const REQUESTS = scaled(20_000, 2_000)
const REQUEST_WINDOW = 64

/** An Orrery on `engine` whose `bench.*` channels are bound to the nats server (streams named after this process). */
function orreryOnNats(engine) {
  return Orrery.create({
    engine,
    transports: { main: { kind: 'nats', servers: NATS_URL, prefix: `ob${process.pid}` } },
    bindings: { 'bench.*': 'main' },
  })
}

/** Deletes the JetStream streams whose names start with `prefix` (this contender's). */
async function dropStreams(prefix) {
  const { connect } = await import('@nats-io/transport-node')
  const { jetstreamManager } = await import('@nats-io/jetstream')
  const nc = await connect({ servers: NATS_URL })
  try {
    const jsm = await jetstreamManager(nc)
    for await (const name of jsm.streams.names()) if (name.startsWith(prefix)) await jsm.streams.delete(name)
  } finally {
    await nc.close()
  }
}

function orreryRequestReply(id, engine, broker) {
  return async () => {
    const open = async () => (broker === 'nats' ? { orrery: await orreryOnNats(engine) } : await orreryOnRedis(engine))
    const requester = await open()
    const responder = await open()
    const client = broker === 'nats' ? undefined : await rawClient()
    // A group responder, as a service with replicas would be; it echoes the payload.
    responder.orrery.bus.respond('bench.rpc', (req) => req.payload, { group: 'rpc' })
    const { bus } = requester.orrery
    const tally = new Tally()
    return {
      async round() {
        const latencies = new Float64Array(REQUESTS)
        let next = 0
        const worker = async () => {
          while (next < REQUESTS) {
            const i = next++
            const t = performance.now()
            const reply = await bus.request('bench.rpc', PAYLOAD, { timeout: 30_000 })
            latencies[i] = performance.now() - t
            tally.receive(reply.payload)
          }
        }
        const t0 = performance.now()
        await Promise.all(Array.from({ length: REQUEST_WINDOW }, worker))
        const ms = performance.now() - t0
        latencies.sort()
        return { msgs: REQUESTS, ms, p99_us: Math.round(latencies[Math.floor(REQUESTS * 0.99)] * 1000) }
      },
      async close(total) {
        await requester.orrery.shutdown()
        await responder.orrery.shutdown()
        if (client !== undefined) {
          await dropKeys(client, '*')
          await client.close()
        } else await dropStreams(`ob${process.pid}-`)
        tally.verify(id, total, PAYLOAD_BYTES)
      },
    }
  }
}

/**
 * Moleculer 0.14 over NATS, the request-reply baseline: two ServiceBrokers (two nodes as far as
 * the server can tell, as Orrery's two instances are) on the same server, one calling an action
 * of the other that echoes the payload, the same REQUESTS and REQUEST_WINDOW. Its default JSON
 * serializer would turn a Buffer into an array of numbers, so the 128 bytes travel as a 128-char
 * latin1 string (the cheapest form for it) and are made back into bytes on arrival, as a caller
 * wanting the payload would. Moleculer's Redis transporter needs ioredis, which the project does
 * not carry (node-redis is a different client), so it is measured on NATS only.
 */
async function moleculerRequestReply() {
  const { ServiceBroker } = await import('moleculer')
  // A namespace of this process's own, so no other run's nodes see these calls.
  const broker = (nodeID) => new ServiceBroker({ nodeID, namespace: `ob${process.pid}`, transporter: NATS_URL, logger: false, metrics: false, tracing: false })
  const caller = broker('requester')
  const callee = broker('responder')
  callee.createService({ name: 'bench', actions: { rpc: (ctx) => ctx.params } })
  await Promise.all([caller.start(), callee.start()])
  await caller.waitForServices('bench')
  const params = { p: PAYLOAD_TEXT }
  const tally = new Tally()
  return {
    async round() {
      const latencies = new Float64Array(REQUESTS)
      let next = 0
      const worker = async () => {
        while (next < REQUESTS) {
          const i = next++
          const t = performance.now()
          const reply = await caller.call('bench.rpc', params, { timeout: 30_000 })
          latencies[i] = performance.now() - t
          tally.receive(Buffer.from(reply.p, 'latin1'))
        }
      }
      const t0 = performance.now()
      await Promise.all(Array.from({ length: REQUEST_WINDOW }, worker))
      const ms = performance.now() - t0
      latencies.sort()
      return { msgs: REQUESTS, ms, p99_us: Math.round(latencies[Math.floor(REQUESTS * 0.99)] * 1000) }
    },
    async close(total) {
      await Promise.all([caller.stop(), callee.stop()])
      tally.verify('moleculer-nats', total, PAYLOAD_BYTES)
    },
  }
}

/** Messages a durable-publish round publishes, in awaited batches of DURABLE_BATCH. */
const DURABLE_N = scaled(20_000, 2_000)
const DURABLE_BATCH = 100
const dir = mkdtempSync(join(tmpdir(), 'orrery-transports-bench-'))
process.on('exit', () => rmSync(dir, { recursive: true, force: true }))

/**
 * A durable-publish contender: DURABLE_N messages a round, one batch of DURABLE_BATCH at a time,
 * each awaited until it is on disk; the p99 is a batch's. `open(path)` gives `batch(n)`,
 * `count()` (read back from the file after closing it) and `close()`.
 */
function durablePublish(id, open) {
  return async () => {
    const path = join(dir, `${id}.db`)
    const db = await open(path)
    const latencies = new Latencies()
    return {
      async round() {
        latencies.reset()
        const t0 = performance.now()
        for (let sent = 0; sent < DURABLE_N; sent += DURABLE_BATCH) {
          const t = performance.now()
          await db.batch(DURABLE_BATCH)
          latencies.record((performance.now() - t) * 1e6)
        }
        return { msgs: DURABLE_N, ms: performance.now() - t0, p99_us: latencies.p99Micros() }
      },
      async close(total) {
        await db.close()
        const count = await db.count()
        if (count !== total) throw new Error(`${id}: ${count} messages on disk of ${total}`)
        return { batch: DURABLE_BATCH }
      },
    }
  }
}

/** Orrery's durable transport (native engine only: the wasm engine refuses it). */
const orreryDurable = durablePublish('orrery-durable', async (path) => {
  const options = { engine: 'native', transports: { disk: { kind: 'durable', path } }, bindings: { 'bench.*': 'disk' } }
  const orrery = await Orrery.create(options)
  const items = Array.from({ length: DURABLE_BATCH }, () => ({ channel: 'bench.durable', payload: PAYLOAD }))
  return {
    batch: () => orrery.bus.publishBatch(items),
    close: () => orrery.shutdown(),
    // What a reopen of the file brings back, so the count is what reached the disk: the next seq
    // (seqs start at 0), as the channel's default retention trims the log to its newest 10,000.
    async count() {
      const reopened = await Orrery.create(options)
      const { nextSeq } = reopened.bus.stats('bench.durable')
      await reopened.shutdown()
      return nextSeq
    },
  }
})

/**
 * What a user would otherwise write: SQLite (better-sqlite3) in WAL mode with synchronous=FULL,
 * which syncs the WAL on every commit, a message table, and one transaction per batch.
 */
const sqliteDurable = durablePublish('better-sqlite3', async (path) => {
  const db = new Sqlite(path)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = FULL')
  db.exec('CREATE TABLE messages (seq INTEGER PRIMARY KEY, channel TEXT NOT NULL, published_at INTEGER NOT NULL, payload BLOB NOT NULL)')
  const insert = db.prepare('INSERT INTO messages (channel, published_at, payload) VALUES (?, ?, ?)')
  const batch = db.transaction((n) => {
    const now = Date.now()
    for (let i = 0; i < n; i++) insert.run('bench.durable', now, PAYLOAD)
  })
  return {
    batch: async (n) => batch(n),
    close: () => db.close(),
    count() {
      const again = new Sqlite(path, { readonly: true })
      const { n } = again.prepare('SELECT count(*) AS n FROM messages').get()
      again.close()
      return n
    },
  }
})

/** `vs_tool`: this contender's rate over the tool's, from the same view (best or median). */
const versus = (tool) => (r, id, all) => (id === tool || !all[tool] ? {} : { vs_tool: Math.round((r.msgs_per_sec / all[tool].msgs_per_sec) * 100) / 100 })

const SCENARIOS = [
  {
    id: 'publish',
    contenders: [
      ...ENGINES.map(([id, engine]) => [id, orreryPublish(id, engine)]),
      ['redis-benchmark', toolPublish('redis-benchmark', TOOL_CLIENTS, TOOL_PIPELINE)],
      ['redis-benchmark-1conn', toolPublish('redis-benchmark-1conn', 1, BATCH)],
      ['node-redis-raw', rawPublish],
    ],
    derive: versus('redis-benchmark'),
  },
  {
    id: 'consume-ack',
    contenders: [...ENGINES.map(([id, engine]) => [id, orreryConsume(id, engine)]), ['node-redis-raw', rawConsume]],
    derive: versus('node-redis-raw'),
  },
  {
    id: 'request-reply',
    contenders: [
      ...ENGINES.map(([id, engine]) => [id, orreryRequestReply(id, engine, 'redis')]),
      ['orrery-nats', orreryRequestReply('orrery-nats', 'native', 'nats')],
      ['orrery-nats-wasm', orreryRequestReply('orrery-nats-wasm', 'wasm', 'nats')],
      ['moleculer-nats', moleculerRequestReply],
    ],
    derive: versus('moleculer-nats'),
  },
  {
    id: 'durable-publish',
    contenders: [
      ['orrery-durable', orreryDurable],
      ['better-sqlite3', sqliteDurable],
    ],
    derive: versus('better-sqlite3'),
  },
]

// ORRERY_BENCH_CONTENDERS=a,b: those contenders alone (checking a harness); printed, never written.
const only = process.env.ORRERY_BENCH_CONTENDERS?.split(',')
if (only) {
  for (const scenario of SCENARIOS) scenario.contenders = scenario.contenders.filter(([id]) => only.includes(id))
  if (process.argv.length === 2) process.argv.push(...SCENARIOS.filter((s) => s.contenders.length > 0).map((s) => s.id))
}

const TOOL_TARGETS = ['publish', 'consume-ack']

/** The target, each Orrery contender's best and median against it, printed under the table. */
function targets(results) {
  const lines = ['', `targets (>= 80% of the tool; ${PAYLOAD_BYTES}-byte payloads, ${N} messages a round):`]
  for (const [scenario, contenders] of Object.entries(results)) {
    for (const [id, r] of Object.entries(contenders)) {
      if (r.best.vs_tool === undefined || !id.startsWith('orrery-')) continue
      // The 80% target is the broker tool's; the other scenarios' baselines are ratios only.
      const verdict = TOOL_TARGETS.includes(scenario) ? (r.best.vs_tool >= 0.8 ? ' met' : ' NOT met') : ''
      lines.push(`  ${scenario} ${id}: ${r.best.vs_tool}x best, ${r.median.vs_tool}x median${verdict}`)
    }
  }
  lines.push('  request-reply: vs_tool is against moleculer-nats (Moleculer 0.14 over NATS; its Redis transporter needs ioredis)')
  lines.push(`  durable-publish: vs_tool is against better-sqlite3 (WAL, synchronous=FULL), batches of ${DURABLE_BATCH} awaited one at a time`)
  lines.push('  nats publish/consume (orrery-nats, nats-bench), kafka (orrery-kafka, kafka-perf): later sessions')
  return lines
}

const servers = fileURLToPath(new URL('../scripts/servers.sh', import.meta.url))
const child = process.argv[2] === '--contender'
// The parent is a user of the redis server for the run (`--for`): servers.sh starts it if it is
// down, and stops it at the end only if no one else (a test run) still uses it and it was not
// started by hand.
const user = ['--for', String(process.pid), 'redis', 'nats']
if (!child) execFileSync('bash', [servers, 'start', ...user], { stdio: 'inherit' })
try {
  if (!child) {
    // Fail before any child starts if the tool is missing (redis-tools comes with redis-server).
    await run('redis-benchmark', ['--version']).catch((error) => {
      throw new Error(`redis-benchmark not found (Debian's redis-tools; bash scripts/setup.sh installs it): ${error.message}`)
    })
  }
  await runSuite({ name: 'transports', script: import.meta.url, scenarios: SCENARIOS, rounds: ROUNDS, reference: 'orrery-redis', after: targets })
} finally {
  if (!child) execFileSync('bash', [servers, 'stop', ...user], { stdio: 'inherit' })
}
