// Orrery's main example: a few agents exchange messages through one in-process core, on each
// engine in turn, and print what happened.
//
//   librarian  sends each document to one of two counters (direct: recipient set)
//   counter-1  counts the words of the documents addressed to it, publishes the counts
//   counter-2  the same
//   tally      merges the counts; when every document is in, publishes the summary
//
// Run: npm start   (or: node examples/agents.mjs [native|wasm]...)
import { filter, firstValueFrom } from 'rxjs'

import { Orrery } from 'orrery'

const DOCUMENTS = {
  'orbits.txt': 'the planets move in orbits and the orbits are ellipses with the sun at one focus',
  'gears.txt': 'an orrery is a model of the solar system driven by gears so that each planet keeps its period',
  'clocks.txt': 'the clock and the orrery share the gears and the patience of the maker',
  'agents.txt': 'each agent keeps its own state and talks to the others only through messages on the bus',
}

function counter(bus, id, log) {
  return bus.subscribe('docs').pipe(filter((m) => m.recipient === id)).subscribe(async (m) => {
    const counts = {}
    for (const word of m.payload.text.split(/\s+/)) counts[word] = (counts[word] ?? 0) + 1
    log(`${id.padEnd(9)} <- docs#${m.seq} ${m.payload.name} (${m.payload.text.split(/\s+/).length} words)`)
    await bus.publish('counts', { name: m.payload.name, counts }, { kind: 'event', sender: id, causationId: m.id, correlationId: m.correlationId })
  })
}

function tally(bus, expected, log) {
  const total = {}
  const done = new Set()
  return bus.subscribe('counts').subscribe(async (m) => {
    done.add(m.payload.name)
    for (const [word, n] of Object.entries(m.payload.counts)) total[word] = (total[word] ?? 0) + n
    log(`tally     <- counts#${m.seq} from ${m.sender} for ${m.payload.name} (${done.size}/${expected})`)
    if (done.size === expected) {
      const top = Object.entries(total).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 5)
      await bus.publish('summary', { documents: expected, top }, { sender: 'tally', correlationId: m.correlationId })
    }
  })
}

async function run(engine) {
  const orrery = await Orrery.create({ engine })
  const { bus } = orrery
  const lines = []
  const log = (line) => lines.push(`  ${line}`)
  const agents = [counter(bus, 'counter-1', log), counter(bus, 'counter-2', log), tally(bus, Object.keys(DOCUMENTS).length, log)]
  const summary = firstValueFrom(bus.subscribe('summary'))

  const batch = Object.entries(DOCUMENTS).map(([name, text], i) => ({
    channel: 'docs',
    payload: { name, text },
    options: { kind: 'command', sender: 'librarian', recipient: `counter-${(i % 2) + 1}`, correlationId: 'job-1' },
  }))
  log(`librarian -> docs: ${batch.length} documents in one batch`)
  await bus.publishBatch(batch)
  const result = await summary

  console.log(`\n== engine: ${orrery.engine}`)
  for (const line of lines) console.log(line)
  console.log(`  summary   <- summary#${result.seq} from ${result.sender}, correlation ${result.correlationId}`)
  console.log(`  top words: ${result.payload.top.map(([w, n]) => `${w}=${n}`).join(', ')}`)
  for (const channel of ['docs', 'counts', 'summary']) {
    const s = bus.stats(channel)
    console.log(`  stats ${channel.padEnd(7)} published=${s.published} delivered=${s.delivered} retained=${s.retained} (${s.retainedBytes} B)`)
  }
  for (const agent of agents) agent.unsubscribe()
  orrery.close()
  return result.payload
}

const engines = process.argv.slice(2).length ? process.argv.slice(2) : ['native', 'wasm']
const results = []
for (const engine of engines) results.push(await run(engine))
if (results.length > 1) {
  const same = results.every((r) => JSON.stringify(r) === JSON.stringify(results[0]))
  console.log(`\nsame result on ${engines.join(' and ')}: ${same ? 'yes' : 'NO'}`)
  if (!same) process.exitCode = 1
}
