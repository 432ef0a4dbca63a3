// Orrery's main example: a few agents exchange messages through one in-process core, on each
// engine in turn, and print what happened.
//
//   librarian  publishes each document as a command on `docs`
//   counters   a consumer group of two members: each document goes to one of them; the first
//              attempt at `clocks.txt` fails on purpose, so the group redelivers it
//   tally      merges the word counts published on `counts` into the state store, one
//              transaction per document (each word compare-and-set, the document created once),
//              and answers `tally.status` requests from the store
//   main       watches the store's `docs` namespace, waits for every document, asks the tally for
//              the top words, prints the stats
//
// Run: npm start   (or: node examples/agents.mjs [native|wasm]...)
import { firstValueFrom, take, toArray } from 'rxjs'

import { Orrery } from 'orrery'

const DOCUMENTS = {
  'orbits.txt': 'the planets move in orbits and the orbits are ellipses with the sun at one focus',
  'gears.txt': 'an orrery is a model of the solar system driven by gears so that each planet keeps its period',
  'clocks.txt': 'the clock and the orrery share the gears and the patience of the maker',
  'agents.txt': 'each agent keeps its own state and talks to the others only through messages on the bus',
}

function counter(bus, id, log) {
  let failedOnce = false
  return bus.group('docs', 'counters', { visibilityTimeout: 5_000, maxDeliveries: 3 }).consume(async (d) => {
    const { name, text } = d.message.payload
    if (name === 'clocks.txt' && !failedOnce) {
      failedOnce = true
      log(`${id.padEnd(9)} <- docs#${d.message.seq} ${name}: fails on purpose (attempt ${d.attempt}), nacked for redelivery`)
      throw new Error('simulated crash')
    }
    const counts = {}
    for (const word of text.split(/\s+/)) counts[word] = (counts[word] ?? 0) + 1
    log(`${id.padEnd(9)} <- docs#${d.message.seq} ${name} (attempt ${d.attempt}, ${text.split(/\s+/).length} words)`)
    await bus.publish('counts', { name, counts }, { kind: 'event', sender: id, causationId: d.message.id, correlationId: d.message.correlationId })
  }, { maxInFlight: 1, retryDelay: 10 })
}

function tally(bus, store, log) {
  const words = store.namespace('words')
  const docs = store.namespace('docs')
  const sub = bus.subscribe('counts').subscribe((m) => {
    const txn = store.transaction({ writer: 'tally' })
    for (const [word, n] of Object.entries(m.payload.counts)) {
      const current = words.get(word)
      txn.put(words, word, (current?.value ?? 0) + n, { ifVersion: current?.version ?? 0 })
    }
    // A document counted twice would fail the whole transaction with VERSION_CONFLICT.
    txn.create(docs, m.payload.name, { counter: m.sender })
    const version = txn.commit()
    log(`tally     <- counts#${m.seq} from ${m.sender} for ${m.payload.name}: store version ${version}`)
  })
  const stop = bus.respond('tally.status', () => ({
    documents: docs.keys().length,
    top: words.entries().map((e) => [e.key, e.value]).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 5),
  }))
  return { unsubscribe: () => { sub.unsubscribe(); stop() } }
}

async function run(engine) {
  const orrery = await Orrery.create({ engine })
  const { bus } = orrery
  const store = orrery.openStore()
  const lines = []
  const log = (line) => lines.push(`  ${line}`)
  const watch = store.namespace('docs').watchPrefix('').subscribe((c) => log(`main      <- store: ${c.key} counted by ${c.value.counter} (version ${c.version})`))
  const agents = [counter(bus, 'counter-1', log), counter(bus, 'counter-2', log), tally(bus, store, log), watch]
  const expected = Object.keys(DOCUMENTS).length
  const allCounted = firstValueFrom(bus.subscribe('counts').pipe(take(expected), toArray()))

  log(`librarian -> docs: ${expected} documents in one batch`)
  await bus.publishBatch(Object.entries(DOCUMENTS).map(([name, text]) => ({
    channel: 'docs',
    payload: { name, text },
    options: { kind: 'command', sender: 'librarian', correlationId: 'job-1' },
  })))
  await allCounted
  const status = await bus.request('tally.status', null, { sender: 'main', timeout: 1_000 })
  // A counter acks after its handler's own publish resolves: let that last ack land before the stats.
  await new Promise((resolve) => setImmediate(resolve))

  console.log(`\n== engine: ${orrery.engine}`)
  for (const line of lines) console.log(line)
  console.log(`  main      <- reply to tally.status: ${status.payload.documents} documents`)
  console.log(`  top words: ${status.payload.top.map(([w, n]) => `${w}=${n}`).join(', ')}`)
  const g = bus.group('docs', 'counters').stats()
  console.log(`  group counters: delivered=${g.delivered} acked=${g.acked} nacked=${g.nacked} redelivered=${g.redelivered} pending=${g.pending}`)
  for (const channel of ['docs', 'counts']) {
    const s = bus.stats(channel)
    console.log(`  stats ${channel.padEnd(7)} published=${s.published} delivered=${s.delivered} retained=${s.retained} (${s.retainedBytes} B)`)
  }
  console.log(`  store: revision ${store.revision}, ${store.namespace('words').keys().length} words`)
  for (const agent of agents) agent.unsubscribe?.() ?? agent.stop?.()
  store.close()
  orrery.close()
  return status.payload
}

const engines = process.argv.slice(2).length ? process.argv.slice(2) : ['native', 'wasm']
const results = []
for (const engine of engines) results.push(await run(engine))
if (results.length > 1) {
  const same = results.every((r) => JSON.stringify(r) === JSON.stringify(results[0]))
  console.log(`\nsame result on ${engines.join(' and ')}: ${same ? 'yes' : 'NO'}`)
  if (!same) process.exitCode = 1
}
