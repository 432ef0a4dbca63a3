/**
 * The workflow suite: Orrery's workflow runtime on both engines, and, for durable runs, a
 * baseline written the way DBOS works (plain async JS that checkpoints into better-sqlite3 with
 * the same durability), each contender in a process of its own (benches/lib/runner.mjs); writes
 * benches/results/workflow.json (the suites' shape: `msgs_per_sec` counts runs, or gathers, per
 * second; `p99_us` is a run's p99 in µs).
 *   - seq-3: one run at a time of 3 local steps that only return, in memory: the coordination
 *     overhead of a run (its latency less the steps' own time), p50 (`extra.p50_us`) and p99,
 *     against `langgraph-memory` (LangGraph.js: the same steps as a graph of three nodes, on its
 *     in-memory checkpointer).
 *   - seq-3-durable: the same runs, `DURABLE_WINDOW` of them at a time, on a durable store
 *     (group commit, each write acknowledged once synced), against `sqlite-checkpoint`.
 *   - fanout-100: a scatter-gather over the 100 agents of a mesh offering a capability, one at a
 *     time: p99 of the whole gather.
 *   - concurrent-10k: 10,000 seq-3 runs started at once and awaited: runs per second.
 *   - idle-1m: 1,000,000 runs waiting on a signal in a fresh process: resident size (`extra.rss_mb`).
 *   node --expose-gc --max-old-space-size=12000 benches/workflow.mjs    (or: npm run bench -- workflow)
 *   node --expose-gc benches/workflow.mjs seq-3 fanout-100    (some scenarios; prints, writes no file)
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, Orrery, scatterGather, sequence, step, waitFor, workflow } from 'orrery'
import { rssAfterGc } from './lib/memory.mjs'
import { Latencies, timeBoxed } from './lib/rounds.mjs'
import { runSuite, scaled } from './lib/runner.mjs'

const Sqlite = createRequire(import.meta.url)('better-sqlite3')

const ROUNDS = 5
const ROUND_MS = scaled(500, 100)
// Sequential rounds time this many runs per step, so the loop's own cost is spread thin.
const RUNS_PER_STEP = 32
// Durable runs in flight at once, for every contender: enough for a group commit to gather
// several runs' writes, few enough that a run's latency stays in the milliseconds.
const DURABLE_WINDOW = 100
const DURABLE_ROUND_MS = scaled(2000, 300)
const FANOUT_AGENTS = 100
const CONCURRENT = scaled(10_000, 1_000)
const IDLE_RUNS = scaled(1_000_000, 10_000)
// Runs started per turn while filling idle-1m: each start is awaited in bulk, not one by one.
const IDLE_BATCH = 10_000
// How long a contender may take to start them; past it, it stops and says how far it got.
const IDLE_BUDGET_MS = scaled(420_000, 60_000)
const ENGINES = ['native', 'wasm']
const MiB = 2 ** 20

const dir = mkdtempSync(join(tmpdir(), 'orrery-workflow-bench-'))
process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
let files = 0
const nextPath = (who) => join(dir, `${who}-${process.pid}-${files++}.db`)

// The three steps: local functions that only return (each adds 1, so a run's output proves all
// three ran, in order, on the right inputs). The same functions serve every contender.
const STEP_NAMES = ['a', 'b', 'c']
const STEP_FNS = {
  a: async (n) => n + 1,
  b: async (n) => n + 1,
  c: async (n) => n + 1,
}

const SEQ3 = workflow(
  'seq3',
  sequence(step('a', { fn: 'a' }, { input: '$input' }), step('b', { fn: 'b' }, { input: '$steps.a' }), step('c', { fn: 'c' }, { input: '$steps.b' })),
)
const GATHER = workflow('gather', scatterGather('gather', 'echo', { input: '$input' }))
const IDLE = workflow('idle', waitFor('wait', 'go'))

/** Per-run latencies, with the median as well as the p99. */
class RunLatencies extends Latencies {
  p50Micros() {
    if (this.count === 0) return null
    const sorted = this.samples.slice(0, this.count).sort()
    return Math.round(sorted[Math.ceil(this.count * 0.5) - 1] / 10) / 100
  }
}

/**
 * What calling the three steps costs on its own (ns per run): they are async functions, so a
 * call makes a promise. Subtracted from each run's latency to leave the coordination overhead.
 */
function stepsOwnNs() {
  const { a, b, c } = STEP_FNS
  const n = 200_000
  let sink = 0
  for (let i = 0; i < n; i++) sink += a(i) === b(i) ? 1 : 0
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) {
    a(i)
    b(i)
    sink += c(i) ? 1 : 0
  }
  const ns = Number(process.hrtime.bigint() - t0) / n
  if (sink < 0) throw new Error('unreachable')
  return ns
}

class Echo extends Agent {
  static capabilities = [{ name: 'echo', version: '1.0.0' }]

  constructor(context) {
    super(context)
    this.handle('echo', (payload) => payload)
  }
}

/**
 * An Orrery on `engine` with its workflow runtime, the steps registered and the suite's
 * definitions defined; `durable` puts the history in a durable store on disk (the native
 * engine's: the wasm engine keeps stores in memory only), `agents` starts a mesh of that many
 * echo agents for scatter-gathers.
 */
async function orreryWorkflows(engine, { durable = false, agents = 0 } = {}) {
  const orrery = await Orrery.create({ engine })
  const store = durable ? await Orrery.openStore({ engine: 'native', path: nextPath(`orrery-${engine}`), durability: 'batched' }) : undefined
  let mesh
  if (agents > 0) {
    // No heartbeats during rounds: an hour between them.
    mesh = await orrery.mesh({ seed: 1, heartbeat: { interval: 3_600_000 } })
    mesh.define('echo', Echo)
    await mesh.spawn('echo', { replicas: agents })
  }
  const wf = await orrery.workflows({ ...(store && { store }), ...(mesh && { mesh }) })
  for (const name of STEP_NAMES) wf.register(name, {}, STEP_FNS[name])
  for (const definition of [SEQ3, GATHER, IDLE]) wf.define(definition)
  return {
    wf,
    async close() {
      await wf.close()
      if (mesh) await mesh.shutdown()
      if (store) await store.close()
      orrery.close()
    },
  }
}

/**
 * A seq-3 contender's rounds: one run at a time, each timed; its latency less the steps' own
 * cost. `runOne(input)` resolves to the run's output; `close()` ends the contender.
 */
function sequentialRounds(who, { runOne, close }) {
  const ownNs = stepsOwnNs()
  const overheads = new RunLatencies()
  let runs = 0
  const timed = timeBoxed(
    async () => {
      for (let i = 0; i < RUNS_PER_STEP; i++) {
        const t0 = process.hrtime.bigint()
        const output = await runOne(runs)
        overheads.record(Number(process.hrtime.bigint() - t0) - ownNs)
        if (output !== runs + 3) throw new Error(`${who}: run ${runs} gave ${output}`)
        runs++
      }
      return RUNS_PER_STEP
    },
    ROUND_MS,
    overheads,
  )
  return {
    async round() {
      const result = await timed()
      return { ...result, extra: { p50_us: overheads.p50Micros() } }
    },
    async close(total) {
      await close()
      if (runs !== total) throw new Error(`${who}: ${runs} runs of ${total}`)
      return { steps_own_ns: Math.round(ownNs) }
    },
  }
}

/** seq-3 on Orrery. */
function seq3(engine) {
  return async () => {
    const { wf, close } = await orreryWorkflows(engine)
    return sequentialRounds(`orrery-${engine}`, { runOne: async (input) => (await wf.start('seq3', input)).result(), close })
  }
}

/**
 * seq-3 on LangGraph.js: a graph of three nodes (the same step functions) run one at a time, each
 * run a thread of its own on the in-memory checkpointer (`MemorySaver`), which keeps every step's
 * state as Orrery's history keeps its events.
 */
function langgraphSeq3() {
  return async () => {
    const { Annotation, END, MemorySaver, START, StateGraph } = await import('@langchain/langgraph')
    const State = Annotation.Root({ n: Annotation() })
    const graph = new StateGraph(State)
    for (const name of STEP_NAMES) graph.addNode(name, async (state) => ({ n: await STEP_FNS[name](state.n) }))
    graph.addEdge(START, 'a').addEdge('a', 'b').addEdge('b', 'c').addEdge('c', END)
    const app = graph.compile({ checkpointer: new MemorySaver() })
    return sequentialRounds('langgraph-memory', {
      runOne: async (input) => (await app.invoke({ n: input }, { configurable: { thread_id: `run-${input}` } })).n,
      close: async () => {},
    })
  }
}

/**
 * A durable contender's rounds: windows of DURABLE_WINDOW runs started at once and awaited,
 * each run timed from its start to its acknowledged result. `runOne(id, input)` resolves to the
 * run's output; `count()` to the runs its history holds as finished.
 */
function durableRounds(who, { runOne, count, close, extra }) {
  const latencies = new RunLatencies()
  let next = 0
  const timed = timeBoxed(
    async () => {
      const from = next
      next += DURABLE_WINDOW
      const outputs = await Promise.all(
        Array.from({ length: DURABLE_WINDOW }, async (_, i) => {
          const t0 = process.hrtime.bigint()
          const output = await runOne(`run-${from + i}`, from + i)
          latencies.record(Number(process.hrtime.bigint() - t0))
          return output
        }),
      )
      outputs.forEach((output, i) => {
        if (output !== from + i + 3) throw new Error(`${who}: run ${from + i} gave ${output}`)
      })
      return DURABLE_WINDOW
    },
    DURABLE_ROUND_MS,
    latencies,
  )
  return {
    async round() {
      const result = await timed()
      return { ...result, extra: { p50_us: latencies.p50Micros() } }
    },
    async close(total) {
      const finished = await count()
      await close()
      if (finished !== total || next !== total) throw new Error(`${who}: ${finished} finished runs in the history, ${next} started, of ${total}`)
      return { window: DURABLE_WINDOW, ...extra }
    },
  }
}

function seq3Durable(engine) {
  return async () => {
    const { wf, close } = await orreryWorkflows(engine, { durable: true })
    return durableRounds(`orrery-${engine}`, {
      runOne: async (id, input) => (await wf.start('seq3', input, { id })).result(),
      count: async () => (await wf.list({ status: 'completed' })).length,
      close,
      extra: { store: 'native engine, durability batched' },
    })
  }
}

/**
 * The baseline, as DBOS runs a workflow on SQLite: the run's status and input are inserted
 * before it starts (so a crash can resume it), each step first looks for its recorded output
 * (the replay check), runs, and records its output, and the run's outcome is written at the end,
 * each write a transaction of its own: 5 commits per run. WAL mode with synchronous=FULL syncs
 * the WAL on every commit, as Orrery's durable store syncs before acknowledging. better-sqlite3
 * is synchronous: a commit holds the event loop while it syncs, as DBOS's SQLite driver does.
 */
function sqliteCheckpoint() {
  return async () => {
    const db = new Sqlite(nextPath('sqlite-checkpoint'))
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = FULL')
    db.exec(`
      CREATE TABLE workflow_status (
        workflow_id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, input TEXT, output TEXT,
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
      CREATE TABLE operation_outputs (
        workflow_id TEXT NOT NULL, function_id INTEGER NOT NULL, function_name TEXT NOT NULL, output TEXT,
        PRIMARY KEY (workflow_id, function_id)) WITHOUT ROWID;`)
    const insertRun = db.prepare(
      "INSERT INTO workflow_status (workflow_id, name, status, input, created_at, updated_at) VALUES (?, 'seq3', 'PENDING', ?, ?, ?) ON CONFLICT (workflow_id) DO NOTHING",
    )
    const recorded = db.prepare('SELECT output FROM operation_outputs WHERE workflow_id = ? AND function_id = ?')
    const record = db.prepare('INSERT INTO operation_outputs (workflow_id, function_id, function_name, output) VALUES (?, ?, ?, ?)')
    const finish = db.prepare("UPDATE workflow_status SET status = 'SUCCESS', output = ?, updated_at = ? WHERE workflow_id = ?")
    const runOne = async (id, input) => {
      const now = Date.now()
      insertRun.run(id, JSON.stringify(input), now, now)
      let value = input
      for (let s = 0; s < STEP_NAMES.length; s++) {
        const done = recorded.get(id, s)
        if (done) {
          value = JSON.parse(done.output)
          continue
        }
        value = await STEP_FNS[STEP_NAMES[s]](value)
        record.run(id, s, STEP_NAMES[s], JSON.stringify(value))
      }
      finish.run(JSON.stringify(value), Date.now(), id)
      return value
    }
    return durableRounds('sqlite-checkpoint', {
      runOne,
      count: () => {
        const steps = db.prepare('SELECT count(*) AS n FROM operation_outputs').get().n
        const runs = db.prepare("SELECT count(*) AS n FROM workflow_status WHERE status = 'SUCCESS'").get().n
        if (steps !== runs * STEP_NAMES.length) throw new Error(`sqlite-checkpoint: ${steps} step outputs for ${runs} runs`)
        return runs
      },
      close: () => db.close(),
      extra: { commits_per_run: 2 + STEP_NAMES.length },
    })
  }
}

/** fanout-100: one scatter-gather at a time over the mesh's echo agents, each timed. */
function fanout(engine) {
  return async () => {
    const { wf, close } = await orreryWorkflows(engine, { agents: FANOUT_AGENTS })
    const latencies = new RunLatencies()
    let gathers = 0
    const timed = timeBoxed(
      async () => {
        const t0 = process.hrtime.bigint()
        const run = await wf.start('gather', gathers)
        const output = await run.result()
        latencies.record(Number(process.hrtime.bigint() - t0))
        if (output.length !== FANOUT_AGENTS || output.some((reply) => reply !== gathers)) {
          throw new Error(`orrery-${engine}: gather ${gathers} gave ${JSON.stringify(output).slice(0, 200)}`)
        }
        gathers++
        return 1
      },
      ROUND_MS,
      latencies,
    )
    return {
      async round() {
        const result = await timed()
        return { ...result, extra: { p50_us: latencies.p50Micros() } }
      },
      async close(total) {
        await close()
        if (gathers !== total) throw new Error(`orrery-${engine}: ${gathers} gathers of ${total}`)
        return { agents: FANOUT_AGENTS }
      },
    }
  }
}

/** concurrent-10k: a round starts CONCURRENT seq-3 runs at once and awaits them all. */
function concurrent(engine) {
  return async () => {
    const { wf, close } = await orreryWorkflows(engine)
    const latencies = new RunLatencies()
    let runs = 0
    return {
      async round() {
        latencies.reset()
        const from = runs
        const t0 = process.hrtime.bigint()
        const outputs = await Promise.all(
          Array.from({ length: CONCURRENT }, async (_, i) => {
            const output = await (await wf.start('seq3', from + i)).result()
            latencies.record(Number(process.hrtime.bigint() - t0))
            return output
          }),
        )
        const ms = Number(process.hrtime.bigint() - t0) / 1e6
        outputs.forEach((output, i) => {
          if (output !== from + i + 3) throw new Error(`orrery-${engine}: run ${from + i} gave ${output}`)
        })
        runs += CONCURRENT
        return { msgs: CONCURRENT, ms, p99_us: latencies.p99Micros(), extra: { p50_us: latencies.p50Micros() } }
      },
      async close(total) {
        await close()
        if (runs !== total) throw new Error(`orrery-${engine}: ${runs} runs of ${total}`)
        return { concurrent: CONCURRENT }
      },
    }
  }
}

/**
 * idle-1m, in a fresh process: IDLE_RUNS runs started (IDLE_BATCH at a time) and left waiting on
 * a signal; the resident size after a full GC with all of them waiting. The rate is starts per
 * second. A contender that has not started them all within IDLE_BUDGET_MS stops there and reports
 * how many it started in how long (`runs`, `start_s`), the reading being for those. Closing
 * signals a sample of the runs and checks that each finishes with its payload.
 */
function idle(engine) {
  return async () => {
    const { wf, close } = await orreryWorkflows(engine)
    const before = rssAfterGc()
    let started = 0
    return {
      async round() {
        const t0 = performance.now()
        while (started < IDLE_RUNS && performance.now() - t0 < IDLE_BUDGET_MS) {
          const from = started
          const n = Math.min(IDLE_BATCH, IDLE_RUNS - from)
          const runs = await Promise.all(Array.from({ length: n }, (_, i) => wf.start('idle', from + i, { id: `idle-${from + i}` })))
          for (const run of runs) if (run.status() !== 'running') throw new Error(`orrery-${engine}: run ${run.id} is ${run.status()}, not waiting`)
          started += n
        }
        const ms = performance.now() - t0
        const after = rssAfterGc()
        const extra = {
          rss_mb: Math.round(after / MiB),
          rss_growth_mb: Math.round((after - before) / MiB),
          bytes_per_run: Math.round((after - before) / started),
          runs: started,
          start_s: Math.round(ms / 100) / 10,
          ...(started < IDLE_RUNS && { stopped_at_budget_s: IDLE_BUDGET_MS / 1000 }),
        }
        return { msgs: started, ms, p99_us: null, extra }
      },
      async close(total) {
        if (started !== total) throw new Error(`orrery-${engine}: ${started} runs started of ${total}`)
        const sample = Array.from({ length: 100 }, (_, k) => Math.floor((k * total) / 100))
        await Promise.all(
          sample.map(async (i) => {
            const run = wf.get(`idle-${i}`)
            if (run?.status() !== 'running') throw new Error(`orrery-${engine}: idle-${i} is ${run?.status()}, not waiting`)
            run.signal('go', i)
            const output = await run.result()
            if (output !== i) throw new Error(`orrery-${engine}: idle-${i} gave ${output}`)
          }),
        )
        await close()
      },
    }
  }
}

const orrery = (scenario) => ENGINES.map((engine) => [`orrery-${engine}`, scenario(engine)])

const SCENARIOS = [
  { id: 'seq-3', contenders: [...orrery(seq3), ['langgraph-memory', langgraphSeq3()]] },
  {
    id: 'seq-3-durable',
    rounds: 3,
    contenders: [...orrery(seq3Durable), ['sqlite-checkpoint', sqliteCheckpoint()]],
    derive: (r, id, all) =>
      id === 'sqlite-checkpoint' ? {} : { vs_sqlite_checkpoint: Math.round((r.msgs_per_sec / all['sqlite-checkpoint'].msgs_per_sec) * 100) / 100 },
  },
  { id: 'fanout-100', contenders: orrery(fanout) },
  { id: 'concurrent-10k', contenders: orrery(concurrent) },
  // One fresh process per engine: the reading is the memory of a million runs, not of rounds.
  { id: 'idle-1m', warmups: 0, rounds: 1, fresh: true, replyMs: IDLE_BUDGET_MS + 180_000, contenders: orrery(idle) },
]

/** The targets, each contender's best against them, printed under the table. */
function targets(results) {
  const lines = ['', 'targets (best rounds):']
  const each = (scenario, what, figure, ok) => {
    for (const [id, r] of Object.entries(results[scenario] ?? {})) {
      if (id.startsWith('orrery-')) lines.push(`  ${scenario} ${id}: ${what} ${figure(r)} ${ok(r) ? 'met' : 'NOT met'}`)
    }
  }
  each(
    'seq-3',
    'overhead p99 <= 50 µs:',
    (r) => `${r.best.p99_us} µs`,
    (r) => r.best.p99_us <= 50,
  )
  each(
    'seq-3-durable',
    '>= 2x sqlite-checkpoint:',
    (r) => `${r.best.vs_sqlite_checkpoint}x`,
    (r) => r.best.vs_sqlite_checkpoint >= 2,
  )
  each(
    'idle-1m',
    'RSS <= 2 GiB for 1M waiting runs:',
    (r) => `${r.extra.rss_mb} MB for ${r.extra.runs} runs`,
    (r) => r.extra.runs === 1_000_000 && r.extra.rss_mb <= 2048,
  )
  return lines
}

await runSuite({ name: 'workflow', script: import.meta.url, scenarios: SCENARIOS, rounds: ROUNDS, unit: 'runs/s', after: targets })
