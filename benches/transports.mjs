/**
 * The transports suite: Orrery's bus bound to a broker, on both engines, against each broker's own
 * benchmark tool on the same server in the same run, each contender in a process of its own
 * (benches/lib/runner.mjs); writes benches/results/transports.json (the suites' shape:
 * `msgs_per_sec` counts messages; `vs_tool` is a contender's rate over its backend's tool's).
 * Servers: scripts/servers.sh's redis (16379, appendfsync always), nats (14222, JetStream, file
 * storage) and kafka (19092, one KRaft node); 128-byte payloads, N messages a round.
 *   - publish: N messages to one stream or topic, every one acknowledged by the server. Orrery
 *     keeps WINDOW batches of BATCH in flight (`publishBatch`). Tools:
 *       redis-benchmark: the same XADD, its default 50 clients pipelining 64 each; beside it
 *         redis-benchmark-1conn (one connection pipelining 1,024, as Orrery's driver publishes
 *         through one) and node-redis-raw (the bare node-redis client in Orrery's window).
 *       nats-bench: `nats bench js pub async`, one connection, JetStream publishes acknowledged in
 *         batches of 4,096 (Orrery's 4 x 1,024 in flight) to a file stream of one replica.
 *         redis-benchmark-script: redis-benchmark sending the driver's own append script (an XADD
 *         per entry inside it, entries of Orrery's frame size, WINDOW scripts of BATCH on one
 *         connection): what the server appends that way by itself, Orrery's ceiling there.
 *       rust-redis, rust-nats: the Rust clients (redis-rs, async-nats on tokio; benches/rust-clients)
 *         publishing in Orrery's window on one connection, nothing of Orrery around them: the
 *         ceiling of a transport written in Rust inside the native engine.
 *       kafka-perf: Kafka's ProducerPerformance (kafka-producer-perf-test), acks=all and the
 *         idempotent producer as Orrery's driver sets them, batches of up to Orrery's in-flight
 *         bytes (batch.size 512 KiB: at its default 16 KiB it ran at 77 k/s against 300 k/s);
 *         its JVM warms on N records first (--warmup-records) as Orrery's process does on a
 *         warm-up round, and the figure is its steady-state line.
 *   - consume-ack: N messages already in the stream or topic read and acknowledged by a new
 *     consumer group from the start, until the server holds every ack. Tools:
 *       Redis: redis-benchmark repeats one fixed command and cannot ack the ids it read, so the
 *         tool is node-redis-raw, a loop of XREADGROUP COUNT 256 with each batch's XACK pipelined
 *         behind the next read.
 *       nats-bench: `nats bench js fetch` (pulls of its default 500, an explicit ack per message)
 *         on a durable pull consumer made as Orrery makes a group's (explicit acks, from the start).
 *         orrery-nats reads through the native engine's NATS wire (async-nats in the addon);
 *         orrery-nats-natsjs is the same with its pulls on nats.js (ORRERY_NATS_WIRE=0), as the
 *         wasm engine reads. Beside it on the same kind of consumer, nothing of Orrery around them: natsjs-raw (nats.js's
 *         own `consume()`, the client Orrery's driver reads through) and rust-nats (async-nats on
 *         tokio, benches/rust-clients), each an ack per message.
 *       kafka-perf: Kafka's ConsumerPerformance (kafka-consumer-perf-test) in a new consumer group,
 *         committing its offsets; its figure includes joining the group, as Orrery's round does.
 *   - request-reply-remote: REQUESTS round trips from one process to a responder in another (a
 *     child of the contender), REQUEST_WINDOW in flight at once; requests/s, p50 and p99. Orrery:
 *     the request an entry of the bound channel read by the responder's group, the reply sent to
 *     the requester's reply address (NATS: a core publish; Redis: PUBLISH); orrery-nats-core
 *     with the transport's `requests: 'core'` (the request a core NATS message to the group's
 *     queue, nothing stored). Baseline:
 *     moleculer-nats, Moleculer 0.14 with its NATS transporter, a ServiceBroker in each process,
 *     an echo action (its Redis transporter needs ioredis, which the project does not carry).
 *   - durable-publish: the `durable` transport (native engine; a file of this run), DURABLE_N
 *     messages a round in batches of DURABLE_BATCH, each batch awaited until it is on disk,
 *     against better-sqlite3 in WAL mode with synchronous=FULL inserting the same batches, one
 *     transaction each (what a user would otherwise write). No server.
 * Beside orrery-redis, orrery-redis-signed runs publish and consume-ack with a transport `signing`
 * (HMAC-SHA256 written with every entry, checked on every read): the cost of signed messages.
 * Each tool reports its own figure (from its first message to its last), not its process's
 * start-up; every contender's result is checked on the server (entries written, nothing pending).
 *
 * The suite starts the servers through scripts/servers.sh (`--for` its pid) if they are not
 * running, and stops them at the end unless another user (a test run) still has them.
 *   node --expose-gc --max-old-space-size=12000 benches/transports.mjs    (or: npm run bench -- transports)
 *   node --expose-gc benches/transports.mjs publish    (some scenarios; prints, writes no file)
 *   ORRERY_BENCH_CONTENDERS=nats-bench,orrery-nats node --expose-gc benches/transports.mjs
 *   (some contenders; prints, writes no file).
 *   ORRERY_BENCH_QUICK=1: 20,000 messages a round instead of 100,000, two rounds, nothing written.
 */
import { execFile, execFileSync, fork } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { homedir, tmpdir } from 'node:os'
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
const SCRIPT = fileURLToPath(import.meta.url)

const NATS_URL = 'nats://127.0.0.1:14222'
const REDIS_PORT = 16379
const REDIS_URL = `redis://127.0.0.1:${REDIS_PORT}`
const KAFKA_BROKERS = '127.0.0.1:19092'
const PAYLOAD_BYTES = 128
const PAYLOAD = new Uint8Array(PAYLOAD_BYTES).fill(0x78)
// The same bytes for the baselines: node-redis takes a Buffer or a string.
const PAYLOAD_BUFFER = Buffer.from(PAYLOAD)
const PAYLOAD_TEXT = PAYLOAD_BUFFER.toString('latin1')
// Messages per round, every contender the same (the tools run a fixed count).
const N = scaled(100_000, 20_000)
const ROUNDS = 5
// Publishers keep WINDOW batches of BATCH messages awaiting the server at once: 4,096 in flight,
// about what redis-benchmark keeps (50 clients x 64).
const BATCH = 1024
/** The size of the frame Orrery writes for a PAYLOAD_BYTES payload on `bench.publish` (its entry's field). */
const FRAME_BYTES = 190
const WINDOW = 4
// redis-benchmark's own default client count, and the pipeline depth the issue gives it.
const TOOL_CLIENTS = 50
const TOOL_PIPELINE = 64
// The raw consumer's batch, and the most a remote group reads at once.
const READ_COUNT = 256
// `nats bench`: a publish batch of Orrery's in-flight count; pulls of the tool's default size.
const NATS_PUBLISH_BATCH = BATCH * WINDOW
const NATS_FETCH_BATCH = 500
// Kafka's producer: a batch may hold what Orrery keeps in flight (4,096 payloads of 128 bytes).
const KAFKA_BATCH_BYTES = BATCH * WINDOW * PAYLOAD_BYTES
const ENGINES = [
  ['', 'native'],
  ['-wasm', 'wasm'],
]
/** `[id, engine]` of Orrery on `backend`, on both engines: `orrery-nats`, `orrery-nats-wasm`. */
const engines = (backend) => ENGINES.map(([suffix, engine]) => [`orrery-${backend}${suffix}`, engine])

// Where scripts/servers.sh installs the `nats` CLI and Kafka's jars (the version is its own).
const SERVERS = fileURLToPath(new URL('../scripts/servers.sh', import.meta.url))
const CACHE = process.env.ORRERY_SERVER_CACHE || join(homedir(), '.cache', 'orrery', 'servers')
const NATS_CLI = join(CACHE, 'bin', 'nats')
const KAFKA_VERSION = /^KAFKA_VERSION=(\S+)$/m.exec(readFileSync(SERVERS, 'utf8'))?.[1]
const KAFKA_CLASSPATH = join(CACHE, `kafka-${KAFKA_VERSION}`, 'libs', '*')

// Keys, streams and topics of this contender's process only (each contender is a child of its
// own), so a round never reads what another contender, an earlier run or a test left on a server.
// A responder process (request-reply-remote) is given its contender's pid as `owner`.
const keyPrefix = (owner) => `orrery-bench:${owner}:`
const brokerPrefix = (owner) => `ob${owner}`
const PREFIX = keyPrefix(process.pid)
const NAME = brokerPrefix(process.pid)

const dir = mkdtempSync(join(tmpdir(), 'orrery-transports-bench-'))
process.on('exit', () => rmSync(dir, { recursive: true, force: true }))

/**
 * A name as Orrery's NATS and Kafka drivers write it into a stream, topic, consumer or group name
 * (letters, digits and `-` kept, anything else `_` and its code: `bench.publish` -> `bench_2Epublish`).
 */
const brokerPart = (name) => name.replace(/[^A-Za-z0-9-]/g, (c) => `_${c.codePointAt(0).toString(16).toUpperCase().padStart(2, '0')}`)

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
async function dropKeys(client, pattern, prefix = PREFIX) {
  const keys = []
  for await (const batch of client.scanIterator({ MATCH: `${prefix}${pattern}`, COUNT: 1000 })) keys.push(...batch)
  if (keys.length > 0) await client.del(keys)
}

/** Deletes the keys of every contender of any run (the server's `appendfsync always` file keeps what is left). */
async function sweepRedis() {
  const client = await rawClient()
  try {
    await dropKeys(client, '*', keyPrefix('*'))
  } finally {
    await client.close()
  }
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

/** The transport options of `backend` for the process `owner` (its keys, streams or topics). */
function transportOf(backend, owner) {
  switch (backend) {
    case 'redis':
      return { kind: 'redis', url: REDIS_URL, keyPrefix: keyPrefix(owner) }
    case 'nats':
      return { kind: 'nats', servers: NATS_URL, prefix: brokerPrefix(owner) }
    case 'nats-core':
      return { kind: 'nats', servers: NATS_URL, prefix: brokerPrefix(owner), requests: 'core' }
    case 'kafka':
      return { kind: 'kafka', brokers: KAFKA_BROKERS, prefix: brokerPrefix(owner) }
  }
  throw new Error(`no backend ${backend}`)
}

/**
 * An Orrery on `engine` whose `bench.*` channels are bound to `backend`'s server. No retention is
 * set on them, so the broker keeps every entry (Redis: Orrery's XADD is the tool's, no MAXLEN).
 */
function orreryOn(backend, engine, owner = process.pid, signing = undefined) {
  const transport = { ...transportOf(backend, owner), ...(signing === undefined ? {} : { signing }) }
  return Orrery.create({ engine, transports: { main: transport }, bindings: { 'bench.*': 'main' } })
}

/**
 * The `signing` of the signed contenders (`orrery-redis-signed`: native engine, every entry signed
 * as it is written and checked as it is read): what signing costs beside `orrery-redis`.
 */
const SIGNING = { keys: { bench: 'a benchmark secret of 32 bytes!!' }, sign: 'bench' }

/**
 * What a contender reads back from a server to check a round: `of(channel)` names Orrery's
 * stream or topic of a channel; `clear(name)` and `count(name)` count what a round wrote there;
 * `settled(channel, group)` resolves once the server holds every ack of an Orrery group that
 * read the whole channel; `close()` deletes what this process made.
 */
function probeOf(backend) {
  switch (backend) {
    case 'redis':
      return redisProbe()
    case 'nats':
    case 'nats-core':
      return natsProbe()
    case 'kafka':
      return kafkaProbe()
  }
  throw new Error(`no backend ${backend}`)
}

async function redisProbe() {
  const client = await rawClient()
  return {
    client,
    // Orrery's stream key for a channel (spec: `<keyPrefix>ch:<channel name>`).
    of: (channel) => `${PREFIX}ch:${channel}`,
    clear: (key) => client.del(key),
    count: (key) => client.xLen(key),
    async settled(channel, group) {
      for (;;) {
        const { pending } = await client.xPending(`${PREFIX}ch:${channel}`, group)
        if (pending === 0) return
      }
    },
    async close() {
      await dropKeys(client, '*')
      await client.close()
    },
  }
}

async function natsProbe() {
  const { connect } = await import('@nats-io/transport-node')
  const { jetstreamManager } = await import('@nats-io/jetstream')
  const nc = await connect({ servers: NATS_URL })
  const jsm = await jetstreamManager(nc)
  const missing = (error) => error?.code === 404 || /not found/i.test(String(error?.message))
  return {
    jsm,
    // Orrery's stream of a channel (docs/transports.md: `<prefix>-ch-…`).
    of: (channel) => `${NAME}-ch-${brokerPart(channel)}`,
    async clear(stream) {
      await jsm.streams.purge(stream).catch((error) => {
        // Orrery makes its stream on the first publish, in the warm-up round.
        if (!missing(error)) throw error
      })
    },
    count: async (stream) => (await jsm.streams.info(stream)).state.messages,
    async settled(channel, group) {
      const stream = `${NAME}-ch-${brokerPart(channel)}`
      for (;;) {
        const info = await jsm.consumers.info(stream, brokerPart(group))
        if (info.num_ack_pending === 0 && info.num_pending === 0) return
      }
    },
    async close() {
      for await (const name of jsm.streams.names()) if (name.startsWith(`${NAME}-`)) await jsm.streams.delete(name)
      await nc.close()
    },
  }
}

async function kafkaProbe() {
  const { Admin } = await import('@platformatic/kafka')
  const admin = new Admin({ clientId: `${NAME}-probe`, bootstrapBrokers: [KAFKA_BROKERS] })
  const base = new Map()
  /** The topic's end offset (one partition), 0n while it does not exist. */
  const end = async (topic) => {
    // Orrery makes its topic on the first publish, in the warm-up round.
    if (!(await admin.listTopics()).includes(topic)) return 0n
    const listed = await admin.listOffsets({ topics: [{ name: topic, partitions: [{ partitionIndex: 0, timestamp: -1n }] }] })
    return listed?.[0]?.partitions?.[0]?.offset ?? 0n
  }
  const committed = async (groupId, topic) => {
    const [group] = await admin.listConsumerGroupOffsets({ groups: [groupId] })
    return group?.topics.find((t) => t.name === topic)?.partitions.find((p) => p.partitionIndex === 0)?.committedOffset ?? -1n
  }
  const probe = {
    admin,
    end,
    committed,
    // Orrery's topic of a channel (docs/transports.md: `<prefix>-ch-…`, one partition).
    of: (channel) => `${NAME}-ch-${brokerPart(channel)}`,
    async clear(topic) {
      base.set(topic, await end(topic))
    },
    count: async (topic) => Number((await end(topic)) - (base.get(topic) ?? 0n)),
    /** Makes a topic as Orrery's driver makes a channel's: one partition, the broker's clock. */
    async create(topic) {
      await admin.createTopics({ topics: [topic], partitions: 1, replicas: -1, configs: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }] })
    },
    async settled(channel, group) {
      // Orrery's group id for a channel's group: `<prefix>-g-<channel>-<group>`.
      const topic = probe.of(channel)
      const last = await end(topic)
      while ((await committed(`${NAME}-g-${brokerPart(channel)}-${brokerPart(group)}`, topic)) !== last);
    },
    async close() {
      const topics = (await admin.listTopics()).filter((t) => t.startsWith(`${NAME}-`))
      if (topics.length > 0) await admin.deleteTopics({ topics })
      const groups = [...(await admin.listGroups()).keys()].filter((g) => g.startsWith(`${NAME}-`))
      if (groups.length > 0) await admin.deleteGroups({ groups }).catch(() => {})
      await admin.close()
    },
  }
  return probe
}

/**
 * The round of a publish contender: clears `name`, sends N, checks it holds N more (up to `over`
 * more: redis-benchmark's pipelining clients overshoot its count by a few requests).
 */
function publishRounds(who, probe, name, send, over = 0) {
  return async () => {
    await probe.clear(name)
    const t0 = performance.now()
    await send()
    const ms = performance.now() - t0
    const length = await probe.count(name)
    if (length < N || length > N + over) throw new Error(`${who}: ${name} holds ${length} entries after a round of ${N}`)
    return { msgs: N, ms, p99_us: null }
  }
}

function orreryPublish(id, backend, engine, signing = undefined) {
  return async () => {
    const orrery = await orreryOn(backend, engine, process.pid, signing)
    const { bus } = orrery
    const probe = await probeOf(backend)
    const items = Array.from({ length: BATCH }, () => ({ channel: 'bench.publish', payload: PAYLOAD }))
    const round = publishRounds(id, probe, probe.of('bench.publish'), () =>
      windowed(N, (count) => bus.publishBatch(count === BATCH ? items : items.slice(0, count))),
    )
    return {
      round,
      async close() {
        await orrery.shutdown()
        await probe.close()
      },
    }
  }
}

async function rawPublish() {
  const probe = await redisProbe()
  const { client } = probe
  const key = `${PREFIX}raw:publish`
  const round = publishRounds('node-redis-raw', probe, key, () =>
    windowed(N, (count) => {
      const acks = new Array(count)
      // Commands issued in one tick leave in one write: node-redis pipelines them.
      for (let i = 0; i < count; i++) acks[i] = client.xAdd(key, '*', { f: PAYLOAD_BUFFER })
      return Promise.all(acks)
    }),
  )
  return { round, close: () => probe.close() }
}

/** The Rust clients' bench (benches/rust-clients), built by scripts/bench.sh. */
const RUST_CLIENTS = fileURLToPath(new URL('rust-clients/target/release/orrery-client-bench', import.meta.url))

/**
 * redis-rs or async-nats on tokio publishing as Orrery's drivers do (one connection, WINDOW
 * batches of BATCH in flight, each acknowledged), nothing of Orrery around them: what a transport
 * in Rust inside the native engine could reach at most. Its rate is its own (first publish to
 * last ack), the count checked on the server after.
 */
function rustPublish(id, backend) {
  return async () => {
    const probe = backend === 'redis' ? await redisProbe() : await natsProbe()
    let target
    let name
    if (backend === 'redis') {
      target = `${PREFIX}rust:publish`
      name = target
    } else {
      name = `${NAME}-rust-publish`
      target = `${NAME}.rust.publish`
      await probe.jsm.streams.add({ name, subjects: [target], storage: 'file', num_replicas: 1 })
    }
    const url = backend === 'redis' ? `redis://127.0.0.1:${REDIS_PORT}` : NATS_URL
    let reported
    const measured = publishRounds(id, probe, name, async () => {
      const { stdout } = await run(RUST_CLIENTS, [backend, url, target, String(N), String(BATCH), String(WINDOW), String(PAYLOAD_BYTES)])
      reported = JSON.parse(stdout.trim().split('\n').at(-1))
    })
    return {
      async round() {
        await measured()
        return { msgs: N, ms: reported.ms, p99_us: null }
      },
      close: () => probe.close(),
    }
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
    const probe = await redisProbe()
    const key = `${PREFIX}tool:publish`
    const args = ['-h', '127.0.0.1', '-p', String(REDIS_PORT), '-n', String(N), '-c', String(clients), '-P', String(pipeline), '--csv']
    let reported
    const measured = publishRounds(
      id,
      probe,
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
      close: () => probe.close(),
    }
  }
}

/**
 * redis-benchmark sending Orrery's own append script (the Redis driver's, an `XADD` per entry
 * inside it) with BATCH entries of Orrery's frame size each, WINDOW scripts in flight on one
 * connection, as the driver sends them: what the server itself appends that way, with no client
 * work to speak of. Orrery's ceiling on this path.
 */
function toolScript(id) {
  return async () => {
    const { APPEND_ALL_SCRIPT } = await import('../dist/transports/redis.js')
    const probe = await redisProbe()
    const key = `${PREFIX}tool:script`
    const entry = 'x'.repeat(FRAME_BYTES)
    const scripts = Math.ceil(N / BATCH)
    const args = ['-h', '127.0.0.1', '-p', String(REDIS_PORT), '-n', String(scripts), '-c', '1', '-P', String(WINDOW), '--csv']
    const command = ['EVAL', APPEND_ALL_SCRIPT, '1', key, '1', '', ...Array.from({ length: BATCH }, () => entry)]
    let reported
    // Whole scripts: a round appends `scripts` x BATCH entries (N rounded up), and the pipeline may overshoot by WINDOW scripts.
    const measured = publishRounds(
      id,
      probe,
      key,
      async () => {
        const { stdout } = await run('redis-benchmark', [...args, ...command], { maxBuffer: 64 << 20 })
        reported = parseToolCsv(stdout)
      },
      scripts * BATCH - N + WINDOW * BATCH,
    )
    return {
      async round() {
        await measured()
        const extra = { entries_per_script: BATCH, scripts_in_flight: WINDOW, entry_bytes: FRAME_BYTES }
        return { msgs: N, ms: (N / (reported.rps * BATCH)) * 1000, p99_us: null, extra }
      },
      close: () => probe.close(),
    }
  }
}

/**
 * Runs `nats bench <args>` against the server, its CSV written to a file of this run; resolves to
 * the CSV's last row by column (MsgsPerSec, DurationSecs, P50LatencyMicroSecs, ...).
 */
async function natsBench(args) {
  const csv = join(dir, `nats-bench-${process.pid}.csv`)
  rmSync(csv, { force: true })
  await run(NATS_CLI, ['--server', NATS_URL, 'bench', ...args, '--no-progress', '--csv', csv])
  const [header, ...rows] = readFileSync(csv, 'utf8').trim().split('\n')
  const names = header.replace(/^#/, '').split(',')
  const values = rows.at(-1)?.split(',') ?? []
  return Object.fromEntries(names.map((name, i) => [name, Number(values[i])]))
}

/**
 * `nats bench js pub async` into a file stream of its own (one replica, made and purged by the
 * tool), in acknowledged batches of NATS_PUBLISH_BATCH: the rate is its own (first publish to
 * last ack), checked against the stream's count after.
 */
async function natsBenchPublish() {
  const probe = await natsProbe()
  const stream = `${NAME}-tool-publish`
  const args = ['js', 'pub', 'async', `${NAME}.tool.publish`, '--stream', stream, '--create', '--purge', '--storage', 'file', '--replicas', '1']
  const more = ['--msgs', String(N), '--size', String(PAYLOAD_BYTES), '--batch', String(NATS_PUBLISH_BATCH)]
  return {
    async round() {
      const t0 = performance.now()
      const row = await natsBench([...args, ...more])
      const wall = performance.now() - t0
      const length = await probe.count(stream)
      if (length !== N || !(row.MsgsPerSec > 0)) throw new Error(`nats-bench: ${stream} holds ${length} of ${N} (rate ${row.MsgsPerSec})`)
      return { msgs: N, ms: (N / row.MsgsPerSec) * 1000, p99_us: null, extra: { batch: NATS_PUBLISH_BATCH, wall_ms: Math.round(wall) } }
    },
    close: () => probe.close(),
  }
}

/**
 * Consume-ack rounds on NATS outside Orrery: N messages in a file stream of the contender's own
 * (filled once by `nats bench js pub`), read each round through a new durable pull consumer made
 * as Orrery's driver makes a group's (explicit acks, from the start, no limit on pending acks),
 * by `read(stream, consumer)`, which resolves to the round's rate and extras; every ack is then
 * checked on the server.
 */
async function natsConsumeRounds(id, read) {
  const probe = await natsProbe()
  const { AckPolicy, DeliverPolicy } = await import('@nats-io/jetstream')
  const stream = `${NAME}-${id}-consume`
  const subject = `${NAME}.${id}.consume`
  const fill = ['js', 'pub', 'async', subject, '--stream', stream, '--create', '--purge', '--storage', 'file', '--replicas', '1']
  await natsBench([...fill, '--msgs', String(N), '--size', String(PAYLOAD_BYTES), '--batch', String(NATS_PUBLISH_BATCH)])
  const length = await probe.count(stream)
  if (length !== N) throw new Error(`${id}: ${stream} holds ${length} entries, not ${N}`)
  let rounds = 0
  return {
    async round() {
      const consumer = `round-${rounds++}`
      await probe.jsm.consumers.add(stream, {
        durable_name: consumer,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: 33e9,
        max_deliver: -1,
        max_ack_pending: -1,
      })
      const result = await read(stream, consumer)
      // Acks are asynchronous: every one must reach the server.
      for (;;) {
        const info = await probe.jsm.consumers.info(stream, consumer)
        if (info.num_pending === 0 && info.num_ack_pending === 0 && info.delivered.stream_seq === info.ack_floor.stream_seq) break
        await new Promise((r) => setTimeout(r, 5))
      }
      await probe.jsm.consumers.delete(stream, consumer)
      return { msgs: N, p99_us: null, ...result }
    },
    close: () => probe.close(),
  }
}

/** `nats bench js fetch`, fetches of NATS_FETCH_BATCH and an ack per message: its rate is its own. */
const natsBenchConsume = () =>
  natsConsumeRounds('tool', async (stream, consumer) => {
    const row = await natsBench(['js', 'fetch', '--stream', stream, '--consumer', consumer, '--msgs', String(N), '--batch', String(NATS_FETCH_BATCH)])
    if (!(row.MsgsPerSec > 0)) throw new Error(`nats-bench: no rate in its CSV (${JSON.stringify(row)})`)
    return { ms: (N / row.MsgsPerSec) * 1000, extra: { batch: NATS_FETCH_BATCH } }
  })

/**
 * nats.js alone, as a user of its JetStream API reads: `consume()` with pulls of
 * NATS_FETCH_BATCH, an ack per message; first pull to the last ack flushed.
 */
async function natsjsRawConsume() {
  const { connect } = await import('@nats-io/transport-node')
  const { jetstream } = await import('@nats-io/jetstream')
  const nc = await connect({ servers: NATS_URL })
  const tally = new Tally()
  const rounds = await natsConsumeRounds('natsjs', async (stream, name) => {
    const consumer = await jetstream(nc).consumers.get(stream, name)
    const t0 = performance.now()
    const messages = await consumer.consume({ max_messages: NATS_FETCH_BATCH })
    let read = 0
    for await (const m of messages) {
      tally.receive(m.data)
      m.ack()
      if (++read === N) break
    }
    await messages.close()
    await nc.flush()
    return { ms: performance.now() - t0, extra: { batch: NATS_FETCH_BATCH } }
  })
  return {
    round: rounds.round,
    async close(total) {
      await rounds.close()
      await nc.close()
      tally.verify('natsjs-raw', total, PAYLOAD_BYTES)
    },
  }
}

/** A contender whose groups pull through nats.js on the native engine too (ORRERY_NATS_WIRE=0), not the engine's wire. */
const natsjsPulls = (contender) => () => {
  process.env.ORRERY_NATS_WIRE = '0'
  return contender()
}

/** async-nats alone (benches/rust-clients): a pull stream of NATS_FETCH_BATCH, an ack per message; its rate is its own. */
const rustConsume = () =>
  natsConsumeRounds('rust', async (stream, consumer) => {
    const { stdout } = await run(RUST_CLIENTS, ['nats-consume', NATS_URL, stream, consumer, String(N), String(NATS_FETCH_BATCH)])
    return { ms: JSON.parse(stdout.trim().split('\n').at(-1)).ms, extra: { batch: NATS_FETCH_BATCH } }
  })

/** Runs one of Kafka's tools (a class of the kafka-tools jar) on the machine's Java; resolves to its stdout. */
async function kafkaTool(tool, args) {
  const { stdout } = await run('java', ['-cp', KAFKA_CLASSPATH, `org.apache.kafka.tools.${tool}`, '--bootstrap-server', KAFKA_BROKERS, ...args], {
    maxBuffer: 64 << 20,
  })
  return stdout
}

/**
 * ProducerPerformance's arguments for `records` 128-byte records to `topic`: acks as Orrery's
 * producer sets them, batches of up to KAFKA_BATCH_BYTES (Orrery's driver produces everything
 * queued in one request).
 */
const producerArgs = (topic, records) => [
  '--topic',
  topic,
  '--num-records',
  String(records),
  '--record-size',
  String(PAYLOAD_BYTES),
  '--throughput',
  '-1',
  '--producer-props',
  'acks=all',
  'enable.idempotence=true',
  `batch.size=${KAFKA_BATCH_BYTES}`,
]

/**
 * ProducerPerformance (kafka-producer-perf-test), 2N records of which the first N warm its JVM
 * (`--warmup-records`): the figure is its steady-state line, the last N, the rate its own. The
 * topic is made as Orrery's driver makes a channel's; its end offset is checked after.
 */
async function kafkaPerfPublish() {
  const probe = await kafkaProbe()
  const topic = `${NAME}-tool-publish`
  await probe.create(topic)
  return {
    async round() {
      await probe.clear(topic)
      const t0 = performance.now()
      const stdout = await kafkaTool('ProducerPerformance', [...producerArgs(topic, 2 * N), '--warmup-records', String(N)])
      const wall = performance.now() - t0
      const line = stdout.split('\n').find((l) => l.includes('steady state records sent'))
      const figures = line?.match(/^(\d+) steady state records sent, ([\d.]+) records\/sec .*?, ([\d.]+) ms 50th, ([\d.]+) ms 95th, ([\d.]+) ms 99th/)
      if (!figures || Number(figures[1]) !== N) throw new Error(`kafka-perf: no steady-state line for ${N} records in its output: ${stdout.slice(-600)}`)
      const length = await probe.count(topic)
      if (length !== 2 * N) throw new Error(`kafka-perf: ${topic} took ${length} records of ${2 * N}`)
      const extra = {
        batch_bytes: KAFKA_BATCH_BYTES,
        warmup_records: N,
        wall_ms: Math.round(wall),
        record_p50_ms: Number(figures[3]),
        record_p99_ms: Number(figures[5]),
      }
      return { msgs: N, ms: (N / Number(figures[2])) * 1000, p99_us: null, extra }
    },
    close: () => probe.close(),
  }
}

/**
 * ConsumerPerformance (kafka-consumer-perf-test): N records (written by ProducerPerformance) read
 * in a new consumer group each round, which commits its offsets; the rate is its own, from its
 * start to its last record, joining the group included (`nMsg.sec`); the group's committed offset
 * is checked after.
 */
async function kafkaPerfConsume() {
  const probe = await kafkaProbe()
  const topic = `${NAME}-tool-consume`
  await probe.create(topic)
  await kafkaTool('ProducerPerformance', producerArgs(topic, N))
  if ((await probe.end(topic)) !== BigInt(N)) throw new Error(`kafka-perf: ${topic} holds ${await probe.end(topic)} records, not ${N}`)
  let rounds = 0
  return {
    async round() {
      const group = `${NAME}-tool-round-${rounds++}`
      const stdout = await kafkaTool('ConsumerPerformance', ['--topic', topic, '--group', group, '--num-records', String(N), '--timeout', '60000'])
      const lines = stdout.trim().split('\n')
      const at = lines.findIndex((l) => l.startsWith('start.time'))
      const names = lines[at]?.split(',').map((s) => s.trim()) ?? []
      const values = lines[at + 1]?.split(',').map((s) => s.trim()) ?? []
      const row = Object.fromEntries(names.map((name, i) => [name, values[i]]))
      if (Number(row['data.consumed.in.nMsg']) !== N) throw new Error(`kafka-perf: read ${row['data.consumed.in.nMsg']} of ${N}: ${stdout.slice(-600)}`)
      // It commits as it closes: the offset is the end once it exits.
      const offset = await probe.committed(group, topic)
      if (offset !== BigInt(N)) throw new Error(`kafka-perf: group ${group} committed ${offset} of ${N}`)
      const extra = { rebalance_ms: Number(row['rebalance.time.ms']), fetch_msgs_per_sec: Math.round(Number(row['fetch.nMsg.sec'])) }
      return { msgs: N, ms: (N / Number(row['nMsg.sec'])) * 1000, p99_us: null, extra }
    },
    close: () => probe.close(),
  }
}

function orreryConsume(id, backend, engine, signing = undefined) {
  return async () => {
    const orrery = await orreryOn(backend, engine, process.pid, signing)
    const { bus } = orrery
    const probe = await probeOf(backend)
    const name = probe.of('bench.consume')
    await probe.clear(name)
    const items = Array.from({ length: BATCH }, () => ({ channel: 'bench.consume', payload: PAYLOAD }))
    await windowed(N, (count) => bus.publishBatch(count === BATCH ? items : items.slice(0, count)))
    const length = await probe.count(name)
    if (length !== N) throw new Error(`${id}: ${name} holds ${length} entries, not ${N}`)
    const tally = new Tally()
    let rounds = 0
    return {
      async round() {
        const groupName = `round-${rounds++}`
        let group
        let member
        const t0 = performance.now()
        await new Promise((resolve, reject) => {
          let got = 0
          group = bus.group('bench.consume', groupName, { from: 'earliest' })
          member = group.join({ maxInFlight: 4 * READ_COUNT }).subscribe({
            next(d) {
              tally.receive(d.message.payload)
              d.ack()
              if (++got === N) resolve()
            },
            error: reject,
          })
        })
        await probe.settled('bench.consume', groupName)
        const ms = performance.now() - t0
        member.unsubscribe()
        const { acked, pending } = group.stats()
        if (acked !== N || pending !== 0) throw new Error(`${id}: ${acked} of ${N} acked, ${pending} pending`)
        group.delete()
        return { msgs: N, ms, p99_us: null }
      },
      async close(total) {
        await orrery.shutdown()
        await probe.close()
        tally.verify(id, total, PAYLOAD_BYTES)
      },
    }
  }
}

async function rawConsume() {
  const probe = await redisProbe()
  const { client } = probe
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
      await probe.close()
      tally.verify('node-redis-raw', total, PAYLOAD_BYTES)
    },
  }
}

/** Requests a request-reply round makes, and how many wait for their reply at once. */
const REQUESTS = scaled(20_000, 2_000)
const REQUEST_WINDOW = 64

/**
 * A request-reply round: REQUESTS calls of `call()` (resolving to the reply's bytes),
 * REQUEST_WINDOW in flight, each reply counted; the p50 and p99 round trip in µs.
 */
async function requestRound(call, tally) {
  const latencies = new Float64Array(REQUESTS)
  let next = 0
  const worker = async () => {
    while (next < REQUESTS) {
      const i = next++
      const t = performance.now()
      const reply = await call()
      latencies[i] = performance.now() - t
      tally.receive(reply)
    }
  }
  const t0 = performance.now()
  await Promise.all(Array.from({ length: REQUEST_WINDOW }, worker))
  const ms = performance.now() - t0
  latencies.sort()
  const at = (q) => Math.round(latencies[Math.floor(REQUESTS * q)] * 1000)
  return { msgs: REQUESTS, ms, p50_us: at(0.5), p99_us: at(0.99) }
}

/**
 * The responder of a request-reply-remote contender: this script again, in a child process of the
 * contender (`--responder <kind> <engine> <owner pid>`), resolved once it answers; `stop()` ends it.
 */
async function responder(kind, engine) {
  const child = fork(SCRIPT, ['--responder', kind, engine, String(process.pid)], { stdio: 'inherit' })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  await new Promise((resolve, reject) => {
    child.once('message', resolve)
    child.once('exit', (code, signal) => reject(new Error(`the ${kind} responder ended (${signal ?? `exit ${code}`}) before it was ready`)))
  })
  return {
    async stop() {
      child.send('close')
      await exited
    },
  }
}

/**
 * The responder process: Orrery bound to `kind` with its contender's prefix, answering
 * `bench.rpc` as a group responder (as a service with replicas would) with the request's payload;
 * or a Moleculer node whose echo action does the same.
 */
async function serveResponder(kind, engine, owner) {
  // An orphan (the contender failed) must not linger.
  process.on('disconnect', () => process.exit(1))
  let stop
  if (kind === 'moleculer') {
    const { ServiceBroker } = await import('moleculer')
    const broker = new ServiceBroker({
      nodeID: 'responder',
      namespace: brokerPrefix(owner),
      transporter: NATS_URL,
      logger: false,
      metrics: false,
      tracing: false,
    })
    broker.createService({ name: 'bench', actions: { rpc: (ctx) => ctx.params } })
    await broker.start()
    stop = () => broker.stop()
  } else {
    const orrery = await orreryOn(kind, engine, owner)
    // From the start of the stream: a request sent before the group reached the broker is still answered.
    orrery.bus.respond('bench.rpc', (req) => req.payload, { group: 'rpc', from: 'earliest' })
    // A core request reaches only a responder attached when it is sent.
    await orrery.bus.attached('bench.rpc')
    stop = () => orrery.shutdown()
  }
  process.once('message', async () => {
    await stop()
    process.disconnect()
  })
  process.send('ready')
}

function orreryRemote(id, backend, engine) {
  return async () => {
    const remote = await responder(backend, engine)
    const orrery = await orreryOn(backend, engine)
    const { bus } = orrery
    const tally = new Tally()
    const call = async () => (await bus.request('bench.rpc', PAYLOAD, { timeout: 30_000 })).payload
    return {
      round: () => requestRound(call, tally),
      async close(total) {
        await orrery.shutdown()
        await remote.stop()
        const probe = await probeOf(backend)
        await probe.close()
        tally.verify(id, total, PAYLOAD_BYTES)
      },
    }
  }
}

/**
 * Moleculer 0.14 over NATS, the request-reply baseline: a ServiceBroker here calling the echo
 * action of one in the responder process (two nodes over the same server, as Orrery's two
 * processes are), the same REQUESTS and REQUEST_WINDOW. Its default JSON serializer would turn a
 * Buffer into an array of numbers, so the 128 bytes travel as a 128-char latin1 string (the
 * cheapest form for it) and are made back into bytes on arrival, as a caller wanting the payload
 * would.
 */
async function moleculerRemote() {
  const remote = await responder('moleculer', '-')
  const { ServiceBroker } = await import('moleculer')
  // A namespace of this process's own, so no other run's nodes see these calls.
  const caller = new ServiceBroker({ nodeID: 'requester', namespace: NAME, transporter: NATS_URL, logger: false, metrics: false, tracing: false })
  await caller.start()
  await caller.waitForServices('bench')
  const params = { p: PAYLOAD_TEXT }
  const tally = new Tally()
  const call = async () => Buffer.from((await caller.call('bench.rpc', params, { timeout: 30_000 })).p, 'latin1')
  return {
    round: () => requestRound(call, tally),
    async close(total) {
      await caller.stop()
      await remote.stop()
      tally.verify('moleculer-nats', total, PAYLOAD_BYTES)
    },
  }
}

/** Messages a durable-publish round publishes, in awaited batches of DURABLE_BATCH. */
const DURABLE_N = scaled(20_000, 2_000)
const DURABLE_BATCH = 100

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

/** Each scenario's tool, per backend: what `vs_tool` and the target compare with. */
const TOOLS = {
  publish: { redis: 'redis-benchmark', nats: 'nats-bench', kafka: 'kafka-perf' },
  'consume-ack': { redis: 'node-redis-raw', nats: 'nats-bench', kafka: 'kafka-perf' },
  'request-reply-remote': { redis: 'moleculer-nats', nats: 'moleculer-nats' },
  'durable-publish': { durable: 'better-sqlite3' },
}

/** The backend a contender runs on: `orrery-<backend>[-wasm]`, the Redis baselines on redis. */
const backendOf = (id) =>
  id.startsWith('orrery-') ? id.split('-')[1] : id.includes('redis') ? 'redis' : id === 'rust-nats' || id === 'natsjs-raw' ? 'nats' : undefined

/** `vs_tool`: a contender's rate over its backend's tool's, from the same view (best or median). */
const versus = (scenario) => (r, id, all) => {
  const tool = TOOLS[scenario][backendOf(id)]
  return id === tool || !all[tool] ? {} : { vs_tool: Math.round((r.msgs_per_sec / all[tool].msgs_per_sec) * 100) / 100 }
}

const SCENARIOS = [
  {
    id: 'publish',
    contenders: [
      ...engines('redis').map(([id, engine]) => [id, orreryPublish(id, 'redis', engine)]),
      ['orrery-redis-signed', orreryPublish('orrery-redis-signed', 'redis', 'native', SIGNING)],
      ['redis-benchmark', toolPublish('redis-benchmark', TOOL_CLIENTS, TOOL_PIPELINE)],
      ['redis-benchmark-1conn', toolPublish('redis-benchmark-1conn', 1, BATCH)],
      ['redis-benchmark-script', toolScript('redis-benchmark-script')],
      ['node-redis-raw', rawPublish],
      ['rust-redis', rustPublish('rust-redis', 'redis')],
      ...engines('nats').map(([id, engine]) => [id, orreryPublish(id, 'nats', engine)]),
      ['nats-bench', natsBenchPublish],
      ['rust-nats', rustPublish('rust-nats', 'nats')],
      ...engines('kafka').map(([id, engine]) => [id, orreryPublish(id, 'kafka', engine)]),
      ['kafka-perf', kafkaPerfPublish],
    ],
  },
  {
    id: 'consume-ack',
    contenders: [
      ...engines('redis').map(([id, engine]) => [id, orreryConsume(id, 'redis', engine)]),
      ['orrery-redis-signed', orreryConsume('orrery-redis-signed', 'redis', 'native', SIGNING)],
      ['node-redis-raw', rawConsume],
      ...engines('nats').map(([id, engine]) => [id, orreryConsume(id, 'nats', engine)]),
      ['orrery-nats-natsjs', natsjsPulls(orreryConsume('orrery-nats-natsjs', 'nats', 'native'))],
      ['nats-bench', natsBenchConsume],
      ['natsjs-raw', natsjsRawConsume],
      ['rust-nats', rustConsume],
      ...engines('kafka').map(([id, engine]) => [id, orreryConsume(id, 'kafka', engine)]),
      ['kafka-perf', kafkaPerfConsume],
    ],
  },
  {
    id: 'request-reply-remote',
    contenders: [
      ...engines('nats').map(([id, engine]) => [id, orreryRemote(id, 'nats', engine)]),
      ...ENGINES.map(([suffix, engine]) => [`orrery-nats-core${suffix}`, orreryRemote(`orrery-nats-core${suffix}`, 'nats-core', engine)]),
      ['moleculer-nats', moleculerRemote],
      ...engines('redis').map(([id, engine]) => [id, orreryRemote(id, 'redis', engine)]),
    ],
  },
  {
    id: 'durable-publish',
    contenders: [
      ['orrery-durable', orreryDurable],
      ['better-sqlite3', sqliteDurable],
    ],
  },
]
for (const scenario of SCENARIOS) scenario.derive = versus(scenario.id)

// ORRERY_BENCH_CONTENDERS=a,b: those contenders alone (checking a harness); printed, never written.
const only = process.env.ORRERY_BENCH_CONTENDERS?.split(',')
if (only) {
  for (const scenario of SCENARIOS) scenario.contenders = scenario.contenders.filter(([id]) => only.includes(id))
  if (process.argv.length === 2) process.argv.push(...SCENARIOS.filter((s) => s.contenders.length > 0).map((s) => s.id))
}

/** The issue's targets, each Orrery contender's best and median against them, printed under the table. */
function targets(results) {
  const lines = ['', `targets (${PAYLOAD_BYTES}-byte payloads; ${N} messages a round, ${REQUESTS} requests):`]
  for (const [scenario, contenders] of Object.entries(results)) {
    for (const [id, r] of Object.entries(contenders)) {
      if (r.best.vs_tool === undefined || !id.startsWith('orrery-')) continue
      const tool = TOOLS[scenario][backendOf(id)]
      let verdict = ''
      if (scenario === 'publish' || scenario === 'consume-ack') verdict = r.best.vs_tool >= 0.8 ? ' (>= 80%: met)' : ' (>= 80%: NOT met)'
      else if (scenario === 'request-reply-remote') {
        // Faster than Moleculer: a lower p50 and p99 round trip.
        const m = contenders[tool].best
        const faster = r.best.p50_us < m.p50_us && r.best.p99_us < m.p99_us
        verdict = `; p50 ${r.best.p50_us} µs, p99 ${r.best.p99_us} µs against ${m.p50_us}, ${m.p99_us} (faster: ${faster ? 'met' : 'NOT met'})`
      }
      lines.push(`  ${scenario} ${id}: ${r.best.vs_tool}x ${tool} best, ${r.median.vs_tool}x median${verdict}`)
    }
  }
  lines.push(`  durable-publish: batches of ${DURABLE_BATCH} awaited one at a time; better-sqlite3 in WAL mode, synchronous=FULL`)
  return lines
}

/** Fails before any child starts if a tool is missing (redis-tools comes with redis-server). */
async function checkTools() {
  const tools = [
    ['redis-benchmark', ['--version'], "Debian's redis-tools; bash scripts/setup.sh installs it"],
    [NATS_CLI, ['--version'], 'natscli; bash scripts/servers.sh install nats builds it'],
    [
      'java',
      ['-cp', KAFKA_CLASSPATH, 'org.apache.kafka.tools.ConsumerPerformance', '--version'],
      "Java 17 and Kafka's kafka-tools jar; bash scripts/servers.sh install kafka",
    ],
  ]
  for (const [tool, args, how] of tools) {
    await run(tool, args).catch((error) => {
      throw new Error(`${tool} did not run (${how}): ${error.message}`)
    })
  }
}

if (process.argv[2] === '--responder') await serveResponder(...process.argv.slice(3))
else {
  const child = process.argv[2] === '--contender'
  // The parent is a user of the servers for the run (`--for`): servers.sh starts one that is down,
  // and stops it at the end only if no one else (a test run) still uses it and it was not started by hand.
  const user = ['--for', String(process.pid), 'redis', 'nats', 'kafka']
  if (!child) execFileSync('bash', [SERVERS, 'start', ...user], { stdio: 'inherit' })
  try {
    if (!child) await checkTools()
    await runSuite({ name: 'transports', script: import.meta.url, scenarios: SCENARIOS, rounds: ROUNDS, reference: 'orrery-redis', after: targets })
  } finally {
    // Each contender drops its keys when it closes; one that failed or was stopped did not.
    if (!child) await sweepRedis().catch((error) => console.error(`bench keys left on redis: ${error.message}`))
    if (!child) execFileSync('bash', [SERVERS, 'stop', ...user], { stdio: 'inherit' })
  }
}
