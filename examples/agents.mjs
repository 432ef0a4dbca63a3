// Orrery's main example: a document pipeline run by a mesh of agents, on each engine in turn.
//
//   ingest       (main) reads this repository's docs (the Markdown files and the core's module
//                docs) and, per document: split -> analyse every chunk in parallel -> aggregate
//   splitter x2  `split@1.0.0`: cuts a document into paragraphs
//   analyser x3  `analyse@1.1.0`: counts the words of a paragraph. analyser-3 is broken on
//                purpose in its first life: its calls fail (each caller falls back to another
//                analyser, and its circuit breaker opens); when the breaker lets a probe
//                through, it crashes; its supervisor restarts it, and the new life works
//   aggregator   `aggregate@1.0.0`: merges each document's counts into the state store in one
//                transaction (compare-and-set per word) and answers with the store's version
//
// What happened is printed from the mesh's events: health, breaker moves, crashes, restarts.
// Run: npm start   (or: node examples/agents.mjs [native|wasm]...)
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { Agent, FatalError, Orrery } from 'orrery'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** This repository's prose: the Markdown files, and each core module's `//!` docs. */
function documents() {
  const docs = {}
  for (const file of readdirSync(ROOT)
    .filter((f) => f.endsWith('.md'))
    .sort())
    docs[file] = readFileSync(join(ROOT, file), 'utf8')
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.rs')) {
        const text = readFileSync(path, 'utf8')
          .split('\n')
          .filter((l) => l.startsWith('//!'))
          .map((l) => l.slice(3).trim())
          .join('\n')
        if (text) docs[path.slice(ROOT.length)] = text
      }
    }
  }
  walk(join(ROOT, 'crates/core/src'))
  return docs
}

class Splitter extends Agent {
  static capabilities = [{ name: 'split', version: '1.0.0' }]
  constructor(context) {
    super(context)
    this.handle('split', ({ text }) =>
      text
        .split(/\n\s*\n/)
        .map((p) => p.trim())
        .filter((p) => p.length > 0),
    )
  }
}

/** Which analyser lives have been broken (analyser-3's first). */
const broken = new Set(['analyser-3'])

class Analyser extends Agent {
  static capabilities = [{ name: 'analyse', version: '1.1.0' }]
  constructor(context) {
    super(context)
    const brokenLife = broken.delete(this.id)
    let firstCall
    this.handle('analyse', async (paragraph) => {
      firstCall ??= performance.now()
      // Broken: every call fails (a transient error), until a call that comes after the breaker
      // cooled down (the half-open probe), which finds the agent beyond repair.
      if (brokenLife && performance.now() - firstCall > 100) throw new FatalError(`${this.id} lost its model`)
      if (brokenLife) throw new Error(`${this.id}: model not loaded`)
      await new Promise((resolve) => setTimeout(resolve, 1))
      const counts = {}
      for (const word of paragraph.toLowerCase().match(/[a-z][a-z'-]{3,}/g) ?? []) counts[word] = (counts[word] ?? 0) + 1
      return counts
    })
  }
}

class Aggregator extends Agent {
  static capabilities = [{ name: 'aggregate', version: '1.0.0' }]
  constructor(context) {
    super(context)
    const { store } = context.config
    const words = store.namespace('words')
    const docs = store.namespace('docs')
    this.handle('aggregate', ({ name, parts }) => {
      const total = {}
      for (const counts of parts) for (const [w, n] of Object.entries(counts)) total[w] = (total[w] ?? 0) + n
      const txn = store.transaction({ writer: this.id })
      for (const [word, n] of Object.entries(total)) {
        const current = words.get(word)
        txn.put(words, word, (current?.value ?? 0) + n, { ifVersion: current?.version ?? 0 })
      }
      // A document aggregated twice fails the whole transaction with VERSION_CONFLICT.
      txn.create(docs, name, { paragraphs: parts.length })
      return txn.commit()
    })
  }
}

function describe(event) {
  switch (event.type) {
    case 'breaker':
      return `breaker   ${event.agent}: ${event.from} -> ${event.to}`
    case 'crashed':
      return `crashed   ${event.agent} (${event.reason}): ${event.error}`
    case 'restart':
      return `restart   ${event.agents.join(', ')} by ${event.supervisor} (restart ${event.attempt}, after ${event.delay} ms)`
    case 'gave-up':
      return `gave up   ${event.supervisor}: ${event.reason}`
    case 'started':
      return `started   ${event.agent}`
    case 'fallback':
      return `fallback  ${event.capability}: ${event.agent} failed (${event.error}), trying the next analyser`
    case 'retry':
      return `retry     ${event.capability}: every candidate failed, again in ${event.delay.toFixed(0)} ms`
    default:
      return undefined
  }
}

async function run(engine) {
  const orrery = await Orrery.create({ engine })
  const store = orrery.openStore()
  const mesh = await orrery.mesh({ seed: 42, heartbeat: { interval: 1_000 }, breaker: { failures: 3, coolDown: 150 } })
  const lines = []
  const counts = {}
  mesh.events.subscribe((event) => {
    counts[event.type] = (counts[event.type] ?? 0) + 1
    const line = describe(event)
    // The first few fallbacks show what happens; the count says how many there were.
    if (line && (event.type !== 'fallback' || counts.fallback <= 3)) lines.push(`  ${line}`)
  })
  mesh.define('splitter', Splitter).define('analyser', Analyser).define('aggregator', Aggregator, { config: { store } })
  await mesh.supervise({
    name: 'pipeline',
    strategy: 'one-for-one',
    children: [{ type: 'splitter', replicas: 2 }, { type: 'analyser', replicas: 3 }, { type: 'aggregator' }],
  })

  const docs = documents()
  let paragraphs = 0
  let ingested = 0
  const started = performance.now()
  for (const [name, text] of Object.entries(docs)) {
    const parts = (await mesh.request('split', { text }, { strategy: 'round-robin' })).payload
    paragraphs += parts.length
    const analysed = await Promise.all(
      parts.map(async (paragraph) => {
        const reply = await mesh.request('analyse@^1.1', paragraph, { strategy: 'round-robin', timeout: 2_000, retries: 4, backoff: { base: 20 } })
        return reply.payload
      }),
    )
    const version = (await mesh.request('aggregate', { name, parts: analysed })).payload
    if (++ingested <= 4) lines.push(`  ingest    ${name}: ${parts.length} paragraphs analysed, store version ${version}`)
    // Let analyser-3's breaker cool down between documents, so its probe (and crash) shows.
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  const ms = performance.now() - started

  const words = store
    .namespace('words')
    .entries()
    .map((e) => [e.key, e.value])
  const top = words.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 8)
  console.log(`\n== engine: ${orrery.engine}`)
  for (const line of lines) console.log(line)
  console.log(`  ingest    … and ${ingested - 4} more documents`)
  console.log(`  ${ingested} documents, ${paragraphs} paragraphs in ${ms.toFixed(0)} ms`)
  console.log(`  top words: ${top.map(([w, n]) => `${w}=${n}`).join(', ')}`)
  console.log(
    `  agents: ${mesh.registry
      .list()
      .map((a) => `${a.id}=${a.health}/${a.breaker}`)
      .join(' ')}`,
  )
  console.log(
    `  events: ${Object.entries(counts)
      .sort()
      .map(([t, n]) => `${t}=${n}`)
      .join(' ')}`,
  )
  console.log(`  store: revision ${store.revision}, ${store.namespace('docs').keys().length} documents, ${words.length} words`)
  await mesh.shutdown()
  store.close()
  orrery.close()
  return { documents: Object.keys(docs).length, top }
}

const engines = process.argv.slice(2).length ? process.argv.slice(2) : ['native', 'wasm']
const results = []
for (const engine of engines) {
  broken.add('analyser-3')
  results.push(await run(engine))
}
if (results.length > 1) {
  const same = results.every((r) => JSON.stringify(r) === JSON.stringify(results[0]))
  console.log(`\nsame result on ${engines.join(' and ')}: ${same ? 'yes' : 'NO'}`)
  if (!same) process.exitCode = 1
}
