/**
 * The message-bus suite: Orrery on both engines against in-process baselines (node:events, an
 * rxjs Subject, moleculer, MessagePort, a plain JS array) and against the bare cost of handing the
 * same bytes to native code and back, each contender in a process of its own (benches/lib/runner.mjs);
 * writes benches/results/bus.json.
 *   node --expose-gc --max-old-space-size=12000 benches/bus.mjs    (or: npm run bench -- bus)
 *   node --expose-gc benches/bus.mjs request-reply    (some scenarios; prints, writes no file)
 */
import { EventEmitter } from 'node:events'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import moleculer from 'moleculer'
import { Orrery } from 'orrery'
import { Subject } from 'rxjs'
import { rssAfterGc, watchGcPauses } from './lib/memory.mjs'
import { Latencies, timeBoxed } from './lib/rounds.mjs'
import { runSuite, scaled } from './lib/runner.mjs'
import { Tally } from './lib/tally.mjs'

const PAYLOAD_BYTES = 64
const PAYLOAD = new Uint8Array(PAYLOAD_BYTES)
// 1024 messages per crossing: the batch size the bus's own criterion benches use.
const BATCH = 1024
// What a 64-byte raw payload weighs as a bus frame: 40-byte header, generated id and meta, payload
// (`m.bytes.length` of delivered messages is 121-124 as the id grows).
const FRAME_BYTES = 124
// 400 ms rounds x 5 keep the in-process scenarios near a minute in all, yet each round spans
// hundreds of thousands of messages (and dozens of young-generation GCs).
const ROUND_MS = scaled(400, 100)
const ROUNDS = 5
// Each request-reply step times this many sequential round trips, so the loop's clock reads
// cost 1/64 of a round trip rather than one each.
const REQUESTS_PER_STEP = 64
// A worker-threads round: 100 batches to warm up both threads, then 512 measured (about 0.2 s for
// Orrery, 1 s for MessagePort one message at a time).
const THREAD_WARM = scaled(100, 20) * BATCH
const THREAD_MEASURED = scaled(512, 64) * BATCH
const RETAINED = scaled(10_000_000, 1_000_000)
const RETENTION_BATCH = 4096
// A retention round fills 10M messages in a fresh process (2-14 s); the first runs of one
// contender differed 2x, so three each, alternating.
const RETENTION_ROUNDS = 3
const ENGINES = ['native', 'wasm']

/** A time-boxed round that publishes `items` as one batch and delivers it at once. */
function publishRounds(bus, items) {
  return timeBoxed(async () => {
    const published = bus.publishBatch(items)
    bus.flush()
    await published
    return items.length
  }, ROUND_MS)
}

function orreryBroadcast(engine, subscribers) {
  return async () => {
    const orrery = await Orrery.create({ engine })
    const { bus } = orrery
    const tally = new Tally()
    const subs = Array.from({ length: subscribers }, () => bus.subscribe('bench').subscribe((m) => tally.receive(m.payload)))
    const items = Array.from({ length: BATCH }, () => ({ channel: 'bench', payload: PAYLOAD }))
    return {
      round: publishRounds(bus, items),
      close(total) {
        for (const sub of subs) sub.unsubscribe()
        orrery.close()
        tally.verify(`orrery-${engine}`, total * subscribers, PAYLOAD_BYTES)
      },
    }
  }
}

/**
 * The JS baselines deliver a minimal envelope `{ seq, payload }` (a bus message without a
 * sequence number would not be comparable) through `emit` to listeners added with `listen`.
 */
function jsBroadcast(id, create) {
  return (subscribers) => async () => {
    const { emit, listen } = create()
    const tally = new Tally()
    for (let s = 0; s < subscribers; s++) listen((m) => tally.receive(m.payload))
    let seq = 0
    return {
      round: timeBoxed(() => {
        for (let i = 0; i < BATCH; i++) emit({ seq: seq++, payload: PAYLOAD })
        return BATCH
      }, ROUND_MS),
      close: (total) => tally.verify(id, total * subscribers, PAYLOAD_BYTES),
    }
  }
}

const emitterBroadcast = jsBroadcast('eventemitter', () => {
  const emitter = new EventEmitter()
  return { emit: (m) => emitter.emit('bench', m), listen: (fn) => emitter.on('bench', fn) }
})

const subjectBroadcast = jsBroadcast('rxjs-subject', () => {
  const subject = new Subject()
  return { emit: (m) => subject.next(m), listen: (fn) => subject.subscribe(fn) }
})

/**
 * The boundary floor: each batch of frame-sized records crosses into native memory and back once
 * (`echoBatch`), then JS walks the records' length prefixes once per subscriber. The bus copies
 * each frame out once per subscriber, so with several subscribers this is below the true floor:
 * a bound no implementation of the bus API can beat.
 */
function boundaryFloor(subscribers) {
  return async () => {
    const { echoBatch } = createRequire(import.meta.url)('../bindings/node/binding.cjs')
    const batch = new Uint8Array(BATCH * FRAME_BYTES)
    const frames = new DataView(batch.buffer)
    for (let at = 0; at < batch.length; at += FRAME_BYTES) {
      frames.setUint32(at, FRAME_BYTES, true)
      batch.set(PAYLOAD, at + FRAME_BYTES - PAYLOAD_BYTES)
    }
    const out = new Uint8Array(batch.length)
    const view = new DataView(out.buffer)
    let walked = 0
    return {
      round: timeBoxed(() => {
        echoBatch(batch, out)
        for (let s = 0; s < subscribers; s++) {
          for (let at = 0; at < out.length; at += view.getUint32(at, true)) walked++
        }
        return BATCH
      }, ROUND_MS),
      close(total) {
        if (walked !== total * subscribers) throw new Error(`boundary-floor: walked ${walked} records of ${total * subscribers}`)
      },
    }
  }
}

const broadcast = (subscribers) => [
  ...ENGINES.map((engine) => [`orrery-${engine}`, orreryBroadcast(engine, subscribers)]),
  ['eventemitter', emitterBroadcast(subscribers)],
  ['rxjs-subject', subjectBroadcast(subscribers)],
  ['boundary-floor', boundaryFloor(subscribers)],
]

const GROUP_MEMBERS = 4

/** A consumer group of 4 members acking each delivery as it arrives. */
function orreryGroup(engine) {
  return async () => {
    const orrery = await Orrery.create({ engine })
    const { bus } = orrery
    const group = bus.group('jobs', 'workers', { visibilityTimeout: 30_000, maxDeliveries: 5 })
    const tally = new Tally()
    // maxInFlight 1024 per member: a whole batch fits in the members' leases, so each batch is
    // delivered by one flush.
    const members = Array.from({ length: GROUP_MEMBERS }, () =>
      group.join({ maxInFlight: BATCH }).subscribe((d) => {
        tally.receive(d.message.payload)
        d.ack()
      }),
    )
    const items = Array.from({ length: BATCH }, () => ({ channel: 'jobs', payload: PAYLOAD }))
    return {
      round: publishRounds(bus, items),
      close(total) {
        const { acked, pending } = group.stats()
        for (const member of members) member.unsubscribe()
        orrery.close()
        tally.verify(`orrery-${engine}`, total, PAYLOAD_BYTES)
        if (acked !== total || pending !== 0) throw new Error(`orrery-${engine}: ${acked} of ${total} acked, ${pending} pending`)
      },
    }
  }
}

/** Sequential round trips through `call(payload)`, each timed on its own. */
function roundTrips(id, start) {
  return async () => {
    const { call, stop } = await start()
    const latencies = new Latencies()
    const tally = new Tally()
    return {
      round: timeBoxed(
        async () => {
          for (let i = 0; i < REQUESTS_PER_STEP; i++) {
            const t0 = process.hrtime.bigint()
            const reply = await call(PAYLOAD)
            latencies.record(Number(process.hrtime.bigint() - t0))
            tally.receive(reply)
          }
          return REQUESTS_PER_STEP
        },
        ROUND_MS,
        latencies,
      ),
      async close(total) {
        await stop()
        tally.verify(id, total, PAYLOAD_BYTES)
      },
    }
  }
}

const orreryRequests = (engine) =>
  roundTrips(`orrery-${engine}`, async () => {
    const orrery = await Orrery.create({ engine })
    const { bus } = orrery
    const unrespond = bus.respond('svc', (request) => request.payload)
    return {
      call: async (payload) => (await bus.request('svc', payload, { timeout: 5_000 })).payload,
      stop() {
        unrespond()
        orrery.close()
      },
    }
  })

const moleculerRequests = roundTrips('moleculer', async () => {
  const broker = new moleculer.ServiceBroker({ logger: false, transporter: null })
  broker.createService({ name: 'svc', actions: { echo: (ctx) => ctx.params } })
  await broker.start()
  return { call: (payload) => broker.call('svc.echo', payload), stop: () => broker.stop() }
})

const THREADS_ENTRY = new URL('./lib/bus-threads.mjs', import.meta.url)

/** A worker thread, and `exited()`: resolves once it exits cleanly, rejects if it fails or lingers. */
function spawnThread(role, contender, ends) {
  const worker = new Worker(THREADS_ENTRY, {
    workerData: { role, contender, ...ends, warm: THREAD_WARM, measured: THREAD_MEASURED, payloadBytes: PAYLOAD_BYTES, batch: BATCH },
    transferList: ends.port ? [ends.port] : [],
  })
  const what = `${contender} ${role}`
  let failure
  worker.once('error', (error) => (failure = error))
  // Listening from the start: a publisher may be long gone by the time the subscriber reports.
  const exit = new Promise((resolve) => worker.once('exit', resolve))
  const exited = () =>
    new Promise((resolve, reject) => {
      // A thread that is done but lingers means something kept its event loop alive: report it.
      const timer = setTimeout(() => reject(new Error(`${what} thread still alive 10 s after the run`)), 10_000)
      exit.then((code) => {
        clearTimeout(timer)
        if (code === 0) resolve()
        else reject(new Error(`${what} thread exited with ${code}`, { cause: failure }))
      })
    })
  return { worker, what, exited }
}

/**
 * The next message from `thread`, failing as soon as it or any of `others` fails. A round takes
 * about a second, so no report in 60 s means a thread is stuck: fail rather than hang the suite.
 */
function nextMessage(thread, ...others) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${thread.what}: no report in 60 s`)), 60_000)
    thread.worker.once('message', (message) => {
      clearTimeout(timer)
      resolve(message)
    })
    for (const { worker } of [thread, ...others]) worker.once('error', reject)
  })
}

/** A publisher thread and a subscriber thread, fresh each round, on a shared core or a MessageChannel. */
function threadRounds(contender) {
  return async () => ({
    async round() {
      const shared = contender === 'orrery-native' ? await Orrery.create({ engine: 'native' }) : undefined
      const handle = shared?.share()
      const { port1, port2 } = shared ? {} : new MessageChannel()
      const subscriber = spawnThread('subscriber', contender, shared ? { handle } : { port: port2 })
      if ((await nextMessage(subscriber)) !== 'ready') throw new Error(`${contender}: subscriber not ready`)
      const publisher = spawnThread('publisher', contender, shared ? { handle } : { port: port1 })
      const done = await nextMessage(subscriber, publisher)
      await Promise.all([publisher.exited(), subscriber.exited()])
      shared?.close()
      const total = THREAD_WARM + THREAD_MEASURED
      if (done.messages !== total || done.bytes !== total * PAYLOAD_BYTES) {
        throw new Error(`${contender}: ${done.messages} messages (${done.bytes} bytes) of ${total} arrived`)
      }
      return { msgs: THREAD_MEASURED, ms: done.ms, p99_us: null }
    },
    close() {},
  })
}

/** How each retention-10m contender appends a batch of `n` messages and counts what it holds. */
const RETENTION_LOGS = {
  async 'orrery-native'() {
    const orrery = await Orrery.create({ engine: 'native' })
    const { bus } = orrery
    bus.channel('log', { retention: { maxCount: RETAINED, maxBytes: 0 } })
    const items = Array.from({ length: RETENTION_BATCH }, () => ({ channel: 'log', payload: PAYLOAD }))
    return {
      append: (n) => bus.publishBatch(n === RETENTION_BATCH ? items : items.slice(0, n)),
      retained: () => bus.stats('log').retained,
    }
  },
  async 'js-array-log'() {
    const log = []
    let seq = 0
    return {
      async append(n) {
        const timestamp = Date.now()
        for (let i = 0; i < n; i++, seq++) {
          log.push({ id: `log-${seq.toString(36)}`, seq, channel: 'log', timestamp, payload: PAYLOAD.slice() })
        }
      },
      retained: () => log.length,
    }
  },
}

/**
 * A retention round, always in a fresh process: fills one contender's log with RETAINED messages
 * and reads the resident size it grew by and the GC pauses it took.
 */
function retention(contender) {
  return async () => {
    const log = await RETENTION_LOGS[contender]()
    return {
      async round() {
        const before = rssAfterGc()
        const stopWatching = watchGcPauses()
        const start = performance.now()
        for (let sent = 0; sent < RETAINED; sent += RETENTION_BATCH) await log.append(Math.min(RETENTION_BATCH, RETAINED - sent))
        const ms = performance.now() - start
        const pauses = await stopWatching()
        const after = rssAfterGc()
        const extra = { bytes_per_msg: Math.round(((after - before) / RETAINED) * 10) / 10, ...pauses, rss_after_mb: Math.round(after / 2 ** 20) }
        return { msgs: RETAINED, ms, p99_us: null, extra }
      },
      close(total) {
        if (log.retained() !== total) throw new Error(`${contender}: retained ${log.retained()} of ${total}`)
      },
    }
  }
}

/** Scenario ids and contender ids are the keys of bus.json; `derive` adds extras from the result. */
const SCENARIOS = [
  { id: 'pubsub-1', contenders: broadcast(1) },
  { id: 'fanout-10', contenders: broadcast(10), derive: (r) => ({ ns_per_publish: Math.round(1e9 / r.msgs_per_sec) }) },
  { id: 'group-ack-4', contenders: ENGINES.map((engine) => [`orrery-${engine}`, orreryGroup(engine)]) },
  {
    id: 'request-reply',
    contenders: [...ENGINES.map((engine) => [`orrery-${engine}`, orreryRequests(engine)]), ['moleculer', moleculerRequests]],
  },
  // Each round warms its own fresh threads, so no warm-up rounds.
  { id: 'worker-threads', warmups: 0, contenders: ['orrery-native', 'messageport', 'messageport-batched'].map((id) => [id, threadRounds(id)]) },
  { id: 'retention-10m', warmups: 0, rounds: RETENTION_ROUNDS, fresh: true, contenders: Object.keys(RETENTION_LOGS).map((id) => [id, retention(id)]) },
]

await runSuite({ name: 'bus', script: import.meta.url, scenarios: SCENARIOS, rounds: ROUNDS })
