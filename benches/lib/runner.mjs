/**
 * Runs a suite's scenarios with every contender in a child process of its own. Sharing one
 * process made call sites polymorphic (one shape per contender), which cost Orrery 5-15%; apart,
 * each contender's code sees only its own shapes, as in an application.
 *
 * The parent forks the suite's own script once per contender (`--contender <scenario> <id>`),
 * waits until it is set up and warmed, then asks the children for rounds in turn, the order
 * rotated each round (A1 B1 C1, B2 C2 A2, ...): the machine is shared, so a burst of outside load
 * slows one round of each contender instead of every round of one. Only one child works at a
 * time; the others wait for their next turn. A `fresh` scenario (memory readings) forks a new
 * child for every round instead.
 *
 * `ORRERY_BENCH_QUICK=1`: two short rounds each, to check the harness; nothing is written.
 * `ORRERY_BENCH_CHILD_FLAGS`: Node flags for the children only (e.g. `--cpu-prof --cpu-prof-dir=DIR`).
 */
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { formatTable, machine, writeResults } from './report.mjs'

export const QUICK = !['', '0', undefined].includes(process.env.ORRERY_BENCH_QUICK)

/** `full` in a real run, `quick` in quick mode. */
export const scaled = (full, quick) => (QUICK ? quick : full)

const CHILD = '--contender'
// The slowest step (a retention round, a 100k-agent setup) takes well under a minute. A child
// that is silent for longer is stuck (a promise that never settles), and its open IPC channel
// would keep it alive, and the suite waiting, forever.
const REPLY_MS = 180_000

/**
 * Runs the suite `name` from its script `script` (a file URL). Each scenario is
 * `{ id, contenders: [id, setup][], rounds?, warmups = 1, fresh?, derive?, replyMs? }`
 * (`replyMs`: how long a child may take to reply, for scenarios whose rounds are known to be
 * slower than the default's three minutes):
 * `setup()` resolves to `{ round, close }`, `round()` to `{ msgs, ms, p99_us, p50_us?, extra? }`, and
 * `close(total)` gets every message the contender sent (warm-ups included) to check that all
 * arrived, and returns extras for the results. `derive(figures, contender, all)` adds figures
 * computed from a contender's rate (and the others', `all`), once for the best and once for the
 * median. `after(scenarios)` may add to the results and returns lines to print under the table.
 * Arguments name scenarios to run alone (printed, not written).
 */
export async function runSuite({ name, script, scenarios, rounds, unit = 'msgs/s', reference = 'orrery-native', after }) {
  if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc (scripts/bench.sh does)')
  const args = process.argv.slice(2)
  if (args[0] === CHILD) return serve(scenarios, args[1], args[2])
  const unknown = args.filter((id) => !scenarios.some((s) => s.id === id))
  if (unknown.length > 0) throw new Error(`unknown scenario ${unknown.join(', ')} (have: ${scenarios.map((s) => s.id).join(', ')})`)
  const host = machine()
  const results = {}
  for (const scenario of scenarios.filter((s) => args.length === 0 || args.includes(s.id))) {
    const t0 = performance.now()
    const n = QUICK ? 2 : (scenario.rounds ?? rounds)
    results[scenario.id] = derived(await measure(script, scenario, n), scenario.derive)
    console.error(`${scenario.id}: ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  }
  const notes = after?.(results) ?? []
  const file = new URL(`./results/${name}.json`, script)
  const write = args.length === 0 && !QUICK
  if (write) await writeResults(file, results, host)
  const others = scenarios.filter((s) => s.rounds || s.fresh).map((s) => `${s.id}: ${s.rounds ?? rounds}${s.fresh ? ', a fresh process each' : ''}`)
  const how = QUICK ? '2 short rounds (QUICK: nothing written)' : `${rounds} rounds${others.length ? ` (${others.join('; ')})` : ''}`
  console.log(`\n${name} suite: each contender in a process of its own; best / median of ${how}, interleaved`)
  console.log(formatTable(results, reference, unit))
  for (const note of notes) console.log(note)
  if (write) console.log(`\n${fileURLToPath(file)}`)
}

/** The child side: sets one contender up, then runs a round or closes on the parent's word. */
async function serve(scenarios, scenarioId, contenderId) {
  const setup = new Map(scenarios.find((s) => s.id === scenarioId)?.contenders).get(contenderId)
  if (!setup) throw new Error(`no contender ${contenderId} in scenario ${scenarioId}`)
  // An orphan (the parent failed) must not linger; a throw anywhere below ends the child with 1.
  process.on('disconnect', () => process.exit(1))
  const contender = await setup()
  let total = 0
  process.on('message', async (command) => {
    if (command === 'round') {
      globalThis.gc()
      const result = await contender.round()
      total += result.msgs
      process.send(result)
    } else {
      const extra = (await contender.close(total)) ?? {}
      process.send(extra, () => process.exit(0))
    }
  })
  process.send('ready')
}

/** A child running one contender; `ask(command)` resolves to its reply, rejects if it dies first. */
async function start(script, scenario, contender, replyMs = REPLY_MS) {
  const what = `${scenario}/${contender}`
  // The children inherit the parent's Node flags (--expose-gc, the heap limit), and take those of
  // ORRERY_BENCH_CHILD_FLAGS too (`--cpu-prof --cpu-prof-dir=DIR` profiles each contender alone).
  const flags = (process.env.ORRERY_BENCH_CHILD_FLAGS ?? '').split(' ').filter(Boolean)
  const child = fork(fileURLToPath(script), [CHILD, scenario, contender], { stdio: 'inherit', execArgv: [...process.execArgv, ...flags] })
  let waiting
  const settle = (how, value) => {
    const w = waiting
    waiting = undefined
    clearTimeout(w?.timer)
    w?.[how](value)
  }
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      settle('reject', new Error(`${what}: the child process ended (${signal ?? `exit ${code}`}) before replying`))
      resolve()
    })
  })
  child.on('message', (reply) => settle('resolve', reply))
  const reply = (command) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        settle('reject', new Error(`${what}: no reply to ${command} in ${replyMs / 1000} s`))
        child.kill()
      }, replyMs)
      waiting = { resolve, reject, timer }
    })
  const ask = (command) => {
    const answer = reply(command)
    child.send(command)
    return answer
  }
  await reply('setup')
  return {
    ask,
    /** Closes the contender (its checks run there) and waits for the process to end. */
    async close() {
      const extra = await ask('close')
      await exited
      return extra
    },
  }
}

/** Every round of each contender of `scenario`, then its close; resolves to the summaries. */
async function measure(script, { id, contenders, warmups = 1, fresh = false, replyMs }, rounds) {
  const runs = contenders.map(([contender]) => ({ contender, rounds: [], extra: {} }))
  if (fresh) {
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < runs.length; i++) {
        const run = runs[(i + r) % runs.length]
        const child = await start(script, id, run.contender, replyMs)
        for (let w = 0; w < warmups; w++) await child.ask('round')
        const result = await child.ask('round')
        run.rounds.push({ ...result, extra: { ...result.extra, ...(await child.close()) } })
      }
    }
  } else {
    for (const run of runs) {
      run.child = await start(script, id, run.contender, replyMs)
      for (let w = 0; w < warmups; w++) await run.child.ask('round')
    }
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < runs.length; i++) {
        const run = runs[(i + r) % runs.length]
        run.rounds.push(await run.child.ask('round'))
      }
    }
    for (const run of runs) run.extra = await run.child.close()
  }
  return Object.fromEntries(runs.map((run) => [run.contender, summary(run.rounds, run.extra)]))
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/**
 * `best`: the fastest round's rate and the lowest p99 (and p50) of any round (outside load only ever slows
 * a round, so these are the closest to the uncontended cost); `median`: the typical round. The
 * top-level `msgs_per_sec` and `p99_us` repeat the best, as results before the split had them.
 */
function summary(rounds, extra) {
  const rates = rounds.map(({ msgs, ms }) => (msgs / ms) * 1000)
  const reported = (key) => rounds.map((r) => r[key]).filter((v) => v !== null && v !== undefined)
  const p99s = reported('p99_us')
  const fastest = rates.indexOf(Math.max(...rates))
  const best = { msgs_per_sec: Math.round(rates[fastest]), p99_us: p99s.length ? Math.min(...p99s) : null }
  const typical = { msgs_per_sec: Math.round(median(rates)), p99_us: p99s.length ? Math.round(median(p99s) * 100) / 100 : null }
  // A p50 only where the rounds report one (a round trip's), chosen as the p99 is.
  const p50s = reported('p50_us')
  if (p50s.length > 0) {
    best.p50_us = Math.min(...p50s)
    typical.p50_us = Math.round(median(p50s) * 100) / 100
  }
  return {
    msgs_per_sec: best.msgs_per_sec,
    p99_us: best.p99_us,
    best,
    median: typical,
    extra: { ...extra, ...rounds[fastest].extra, rounds_msgs_per_sec: rates.map(Math.round) },
  }
}

/** Adds `derive`'s figures to `best` and `median`, and the best's to `extra` as before the split. */
function derived(results, derive) {
  if (!derive) return results
  for (const view of ['median', 'best']) {
    const all = Object.fromEntries(Object.entries(results).map(([id, r]) => [id, r[view]]))
    for (const [id, r] of Object.entries(results)) {
      const figures = derive(r[view], id, all)
      Object.assign(r[view], figures)
      if (view === 'best') Object.assign(r.extra, figures)
    }
  }
  return results
}
