/**
 * The registry suite: discovery by capability and semver range over 100,000 agents on both
 * engines (the public `registry.find`, and the core's query alone) against a plain JS array
 * filtered and sorted the obvious way; and the cost of routing a request by capability over a
 * plain bus request-reply to the same handler. Each contender runs in a process of its own
 * (benches/lib/runner.mjs); writes benches/results/registry.json (same shape as bus.json: `msgs_per_sec` counts queries or
 * requests; each scenario's target and whether it was met sit in its headline contender's `extra`).
 *   node --expose-gc benches/registry.mjs    (or: npm run bench -- registry)
 *   node --expose-gc benches/registry.mjs routed-request    (some scenarios; prints, writes no file)
 */
import { Agent, Orrery } from 'orrery'
import { Cruncher } from './lib/cruncher.mjs'
import { Latencies, timeBoxed } from './lib/rounds.mjs'
import { runSuite, scaled } from './lib/runner.mjs'

// 1,000 capabilities x 100 agents each; of each capability's 100, 10 offer 1.0.0, 10 offer
// 1.1.0 and 80 offer 1.2.x-1.9.x, so `^1.2` matches 80.
const CAPABILITIES = 1_000
const PER_CAPABILITY = 100
const AGENTS = CAPABILITIES * PER_CAPABILITY
const RANGE = '^1.2'
const MATCHES = 80
// Queries cycle over every capability, each query string built once.
const QUERIES = Array.from({ length: CAPABILITIES }, (_, k) => `cap-${k}@${RANGE}`)
// Each step times this many queries (or sequential round trips), one by one.
const STEP = 64
const ROUND_MS = scaled(300, 100)
const ROUNDS = 5
const ENGINES = ['native', 'wasm']
// An hour between heartbeats: no agent misses a beat (and changes health) during the run.
const MESH_OPTIONS = { seed: 1, heartbeat: { interval: 3_600_000 } }
const PAYLOAD = 1

/** A small seeded generator (xorshift32), so every run registers the same priorities. */
function generator(seed) {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x / 2 ** 32
  }
}

/** The 100,000 registrations, in registration order (agent `i` offers `cap-<i % 1000>`). */
const SPECS = (() => {
  const random = generator(42)
  return Array.from({ length: AGENTS }, (_, i) => {
    const slot = Math.floor(i / CAPABILITIES)
    const version = slot < 10 ? '1.0.0' : slot < 20 ? '1.1.0' : `1.${2 + (slot % 8)}.${slot % 3}`
    return {
      id: `agent-${i}`,
      type: 'worker',
      capabilities: [{ name: `cap-${i % CAPABILITIES}`, version, priority: Math.floor(random() * 1000) }],
    }
  })
})()

/**
 * The JS baseline: what a registry written in JS would do. Agents in an array; a query splits
 * `name@range`, parses the range, keeps the healthy-enough agents offering the capability at a
 * version in range, and sorts them by priority, highest first (a stable sort: ties stay in
 * registration order, as in Orrery).
 */
const HEALTHS = ['healthy', 'degraded', 'initializing', 'unhealthy', 'paused', 'offline']
const MIN_HEALTH = HEALTHS.indexOf('degraded')

function parseVersion(text) {
  const [major = 0, minor = 0, patch = 0] = text.split('.').map(Number)
  return [major, minor, patch]
}

function compareVersions(a, b) {
  return a[0] - b[0] || a[1] - b[1] || a[2] - b[2]
}

/** `*`, an exact `1.2.3`, or a caret range `^1.2` (>=1.2.0 <2.0.0; `^0.2` is <0.3.0). */
function parseRange(text) {
  if (text === '*' || text === '') return { min: [0, 0, 0], below: [Infinity, 0, 0] }
  if (!text.startsWith('^')) {
    const exact = parseVersion(text)
    return { min: exact, below: [exact[0], exact[1], exact[2] + 1] }
  }
  const min = parseVersion(text.slice(1))
  const below = min[0] > 0 ? [min[0] + 1, 0, 0] : min[1] > 0 ? [0, min[1] + 1, 0] : [0, 0, min[2] + 1]
  return { min, below }
}

function satisfies(version, range) {
  const v = parseVersion(version)
  return compareVersions(v, range.min) >= 0 && compareVersions(v, range.below) < 0
}

class JsRegistry {
  agents = []
  byId = new Map()

  register({ id, type, capabilities }) {
    const agent = { id, type, capabilities: capabilities.map((c) => ({ ...c })), tags: [], health: 'initializing', lastBeat: Date.now() }
    this.agents.push(agent)
    this.byId.set(id, agent)
  }

  heartbeat(id, health) {
    const agent = this.byId.get(id)
    agent.health = health
    agent.lastBeat = Date.now()
  }

  find(query) {
    const at = query.indexOf('@')
    const name = at < 0 ? query : query.slice(0, at)
    const range = parseRange(at < 0 ? '*' : query.slice(at + 1))
    const matches = []
    for (const agent of this.agents) {
      if (HEALTHS.indexOf(agent.health) > MIN_HEALTH) continue
      for (const capability of agent.capabilities) {
        if (capability.name === name && satisfies(capability.version, range)) {
          matches.push({ agent, priority: capability.priority })
          break
        }
      }
    }
    matches.sort((a, b) => b.priority - a.priority)
    return matches.map((m) => m.agent)
  }
}

/**
 * The JS registry, filled. The orrery contenders build one to check their answers against and
 * drop it, so it does not weigh on their heap while they are measured.
 */
function jsRegistry() {
  const t0 = performance.now()
  const registry = new JsRegistry()
  for (const spec of SPECS) registry.register(spec)
  for (const spec of SPECS) registry.heartbeat(spec.id, 'healthy')
  return { registry, registerMs: Math.round(performance.now() - t0) }
}

/** An engine's mesh with every agent registered and healthy, checked against the JS baseline. */
async function filledMesh(engine) {
  const orrery = await Orrery.create({ engine })
  const mesh = await orrery.mesh(MESH_OPTIONS)
  const t0 = performance.now()
  for (const spec of SPECS) mesh.registry.register(spec)
  for (const spec of SPECS) mesh.registry.heartbeat(spec.id, 'healthy')
  const registerMs = Math.round(performance.now() - t0)
  const { registry: js } = jsRegistry()
  for (let k = 0; k < CAPABILITIES; k += 10) {
    const got = mesh.registry
      .find(QUERIES[k])
      .map((a) => a.id)
      .join()
    const want = js
      .find(QUERIES[k])
      .map((a) => a.id)
      .join()
    if (got !== want) throw new Error(`orrery-${engine}: ${QUERIES[k]} found ${got}, the JS baseline ${want}`)
  }
  const close = async () => {
    await mesh.shutdown()
    orrery.close()
  }
  return { mesh, registerMs, close }
}

/** A contender issuing queries from `start()`'s `find`, each timed; every query must find MATCHES. */
function discovery(id, start) {
  return async () => {
    const { find, stop, extra } = await start()
    const latencies = new Latencies()
    let k = 0
    let found = 0
    return {
      round: timeBoxed(
        () => {
          for (let n = 0; n < STEP; n++) {
            const query = QUERIES[k++ % CAPABILITIES]
            const t0 = process.hrtime.bigint()
            const matches = find(query)
            latencies.record(Number(process.hrtime.bigint() - t0))
            found += matches.length
          }
          return STEP
        },
        ROUND_MS,
        latencies,
      ),
      async close(total) {
        await stop()
        if (found !== total * MATCHES) throw new Error(`${id}: ${found} matches in ${total} queries, expected ${MATCHES} each`)
        return extra
      },
    }
  }
}

/** `registry.find`: the core's matches as AgentInfo objects (what an application calls). */
const orreryFind = (engine) =>
  discovery(`orrery-${engine}`, async () => {
    const { mesh, registerMs, close } = await filledMesh(engine)
    const registry = mesh.registry
    return { find: (query) => registry.find(query), stop: close, extra: { register_ms: registerMs } }
  })

/** The core alone: the compiled query (a cached lookup) and the matches with their state, best first. */
const orreryCoreFind = (engine) =>
  discovery(`orrery-${engine}-core`, async () => {
    const { mesh, close } = await filledMesh(engine)
    const registry = mesh.registry
    const core = registry.core
    // Five numbers per match (handle, health, in flight, last beat, breaker): count matches, not numbers.
    return { find: (query) => ({ length: core.findStates(registry.compile(query), registry.now()).length / 5 }), stop: close }
  })

const jsFind = discovery('js-baseline', async () => {
  const { registry, registerMs } = jsRegistry()
  return { find: (query) => registry.find(query), stop() {}, extra: { register_ms: registerMs } }
})

class Echo extends Agent {
  static capabilities = [{ name: 'echo', version: '1.0.0' }]

  constructor(context) {
    super(context)
    this.handle('echo', (payload) => payload)
  }
}

/** The same host for both request contenders: a mesh running the echo agent, and a plain responder. */
async function requestHost(engine) {
  const orrery = await Orrery.create({ engine })
  const mesh = await orrery.mesh(MESH_OPTIONS)
  mesh.define('echo', Echo)
  await mesh.spawn('echo', { id: 'e' })
  const unrespond = orrery.bus.respond('rr', (request) => request.payload)
  const close = async () => {
    unrespond()
    await mesh.shutdown()
    orrery.close()
  }
  return { orrery, mesh, close }
}

/** Sequential round trips through `call(engine host)`, each timed on its own. */
function roundTrips(id, engine, call) {
  return async () => {
    const host = await requestHost(engine)
    const latencies = new Latencies()
    let echoed = 0
    return {
      round: timeBoxed(
        async () => {
          for (let i = 0; i < STEP; i++) {
            const t0 = process.hrtime.bigint()
            const reply = await call(host)
            latencies.record(Number(process.hrtime.bigint() - t0))
            if (reply.payload === PAYLOAD) echoed++
          }
          return STEP
        },
        ROUND_MS,
        latencies,
      ),
      async close(total) {
        await host.close()
        if (echoed !== total) throw new Error(`${id}: ${echoed} echoed replies of ${total} requests`)
      },
    }
  }
}

// Both with the router's default timeout, 5 s.
const routedRequests = (engine) => roundTrips(`orrery-${engine}`, engine, ({ mesh }) => mesh.request('echo', PAYLOAD))
const plainRequests = (engine) => roundTrips(`request-reply-${engine}`, engine, ({ orrery }) => orrery.bus.request('rr', PAYLOAD, { timeout: 5_000 }))

/** Iterations of each `crunch` (about a millisecond of CPU here), and requests in flight at once. */
const CRUNCH = 1_000_000
const CRUNCH_BATCH = 16
const REPLICAS = 2

/**
 * CPU-bound handlers on two replicas of one type, requests spread round-robin: the replicas run
 * in this thread's event loop (`spawn`), or each on a worker thread of its own (`autoscale` with
 * `worker`, min = max = 2). Each step sends CRUNCH_BATCH requests at once and waits for them.
 */
const cpuBound = (id, threads) => async () => {
  const orrery = await Orrery.create({ engine: 'native' })
  const mesh = await orrery.mesh({ ...MESH_OPTIONS, ...(threads && { threads: true }) })
  let agents
  if (threads) {
    const worker = new URL('./lib/cruncher-thread.mjs', import.meta.url)
    await mesh.autoscale('cruncher', { min: REPLICAS, max: REPLICAS, targetLag: 1e9, worker })
    // Routed to once they are in this thread's registry and healthy.
    while (mesh.registry.find('crunch').filter((a) => a.health === 'healthy').length < REPLICAS) await new Promise((r) => setTimeout(r, 10))
  } else {
    mesh.define('cruncher', Cruncher, { concurrency: 1 })
    agents = await mesh.spawn('cruncher', { replicas: REPLICAS })
  }
  const latencies = new Latencies()
  let answered = 0
  const one = async () => {
    const t0 = process.hrtime.bigint()
    await mesh.request('crunch', CRUNCH, { strategy: 'round-robin', timeout: 30_000 })
    latencies.record(Number(process.hrtime.bigint() - t0))
    answered++
  }
  return {
    round: timeBoxed(
      async () => {
        await Promise.all(Array.from({ length: CRUNCH_BATCH }, one))
        return CRUNCH_BATCH
      },
      ROUND_MS * 3,
      latencies,
    ),
    async close(total) {
      await mesh.shutdown()
      orrery.close()
      if (answered !== total) throw new Error(`${id}: ${answered} answers to ${total} requests`)
      return { replicas: REPLICAS, where: threads ? 'worker threads' : `this thread (${agents.length} agents)` }
    },
  }
}

const micros = (v) => Math.round(v * 100) / 100
const meanMicros = (r) => micros(1e6 / r.msgs_per_sec)

/**
 * Scenario ids and contender ids are the keys of registry.json. `derive(result, contender, all)`
 * adds extras; `target` is checked against the headline contender's `p99_us` or an extra.
 */
const SCENARIOS = [
  {
    id: 'discover-100k',
    contenders: [
      ...ENGINES.map((engine) => [`orrery-${engine}`, orreryFind(engine)]),
      ...ENGINES.map((engine) => [`orrery-${engine}-core`, orreryCoreFind(engine)]),
      ['js-baseline', jsFind],
    ],
    derive: (r) => ({ mean_us: meanMicros(r) }),
    target: { contender: 'orrery-native', field: 'p99_us', max: 10, text: 'p99 ≤ 10 µs' },
  },
  {
    id: 'routed-request',
    contenders: ENGINES.flatMap((engine) => [
      [`orrery-${engine}`, routedRequests(engine)],
      [`request-reply-${engine}`, plainRequests(engine)],
    ]),
    // The routing overhead: the mean round trip routed by capability less the plain one.
    derive: (r, id, all) => {
      const plain = id.startsWith('orrery-') ? all[id.replace('orrery-', 'request-reply-')] : undefined
      return { mean_us: meanMicros(r), ...(plain && { overhead_us: micros(1e6 / r.msgs_per_sec - 1e6 / plain.msgs_per_sec) }) }
    },
    target: { contender: 'orrery-native', field: 'overhead_us', max: 1, text: 'overhead ≤ 1 µs a request over request-reply' },
  },
  {
    id: 'cpu-bound',
    contenders: [
      ['orrery-threads', cpuBound('orrery-threads', true)],
      ['orrery-in-process', cpuBound('orrery-in-process', false)],
    ],
    // What running the replicas on threads of their own buys (the machine's cores bound it).
    derive: (r, id, all) =>
      id === 'orrery-threads' && all['orrery-in-process'] ? { speedup: Math.round((r.msgs_per_sec / all['orrery-in-process'].msgs_per_sec) * 100) / 100 } : {},
  },
]

/** Each scenario's target, judged on the best rounds (the median beside it): lines for the report. */
function verdicts(results) {
  return SCENARIOS.filter(({ id, target }) => results[id] && target).map(({ id, target }) => {
    const headline = results[id][target.contender]
    const value = (view) => (target.field === 'p99_us' ? headline[view].p99_us : headline[view][target.field])
    const best = value('best')
    const met = best !== null && best <= target.max
    Object.assign(headline.extra, { target: target.text, target_met: met })
    const verdict = met ? 'met' : `missed (${(best / target.max).toFixed(1)}x)`
    return `  ${id}: ${target.contender} ${target.text}: ${best} µs (median ${value('median')} µs), ${verdict}`
  })
}

await runSuite({
  name: 'registry',
  script: import.meta.url,
  scenarios: SCENARIOS,
  rounds: ROUNDS,
  unit: 'ops/s',
  after: (results) => {
    const lines = verdicts(results)
    return lines.length > 0 ? ['\ntargets:', ...lines] : []
  },
})
