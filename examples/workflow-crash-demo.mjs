// Orrery's workflow demo: a document pipeline as a durable workflow, a crash mid-run, its resume.
//
//   fetch -> [ summarize (a `summarize` agent on the mesh) | tag (a local function) ]
//         -> review (waits for an `approve` signal, at most a minute)
//         -> publish (writes the page to a "site" file; compensated by unpublish)
//         -> notify (posts to the run's channel)
//
// Process 1 starts two runs on a durable store (native engine): doc-a, which the reviewer
// approves, and doc-b, left waiting for review. It kills itself with SIGKILL inside doc-a's
// publish, after the page is written but before the step's completion is recorded.
// Process 2 opens the same store: both runs resume on their own. doc-a's publish runs again with
// the same idempotency key (the site writes the page once), then notify: doc-a completes. The
// reviewer approves doc-b, whose channel does not exist: notify fails for good, so the saga
// unpublishes doc-b's page and the run ends `compensated`.
// Run: npm start   (or: node examples/workflow-crash-demo.mjs)
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { Agent, Orrery, PermanentError, parallel, sequence, silentLogger, step, waitFor, workflow } from 'orrery'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const SELF = fileURLToPath(import.meta.url)

class Summarizer extends Agent {
  static capabilities = [{ name: 'summarize', version: '1.2.0' }]
  constructor(context) {
    super(context)
    // The first sentence of the first paragraph that is prose.
    this.handle('summarize', ({ text }) => {
      const prose = text.split(/\n\s*\n/).find((p) => /^[A-Z]/.test(p.trim())) ?? ''
      return `${prose.replace(/\s+/g, ' ').split(/(?<=\.) /)[0]}`.slice(0, 90)
    })
  }
}

/** The pipeline: plain data, the same in both processes (its version is its content hash). */
const pipeline = workflow(
  'doc-pipeline',
  sequence(
    step('fetch', { fn: 'fetch' }, { input: '$input.url', retry: { attempts: 3, initialMs: 50 } }),
    parallel(
      [
        step('summarize', { capability: 'summarize@^1.2' }, { input: { text: '$steps.fetch' }, timeoutMs: 2_000 }),
        step('tag', { fn: 'tag' }, { input: '$steps.fetch' }),
      ],
      {
        id: 'analyse',
      },
    ),
    waitFor('review', 'approve', { timeoutMs: 60_000 }),
    step(
      'publish',
      { fn: 'publish' },
      { input: { url: '$input.url', summary: '$steps.summarize', tags: '$steps.tag', by: '$steps.review.by' }, compensate: { run: { fn: 'unpublish' } } },
    ),
    step('notify', { fn: 'notify' }, { input: { channel: '$input.channel', page: '$steps.publish' } }),
  ),
)

/** The "site": published pages by idempotency key, in a JSON file beside the store. */
class Site {
  constructor(file) {
    this.file = file
  }
  read() {
    return existsSync(this.file) ? JSON.parse(readFileSync(this.file, 'utf8')) : { pages: {}, writes: 0 }
  }
  write(site) {
    writeFileSync(`${this.file}.tmp`, JSON.stringify(site))
    renameSync(`${this.file}.tmp`, this.file)
  }
}

/** An Orrery with a summarizer agent and the pipeline's workflows on the durable store at `dir`. */
async function open(dir, { crash }) {
  const orrery = await Orrery.create({ engine: 'native' })
  const mesh = await orrery.mesh({ seed: 1, logger: silentLogger })
  mesh.define('summarizer', Summarizer)
  await mesh.spawn('summarizer')
  const store = orrery.openStore({ path: join(dir, 'runs.redb') })
  const site = new Site(join(dir, 'site.json'))
  // Unfinished runs in the store resume from here on: register the steps before the next turn.
  const wf = await orrery.workflows({ store, mesh })
  wf.register('fetch', (url, ctx) => {
    if (ctx.attempt === 1) throw new Error('503 Service Unavailable') // transient: retried
    return readFileSync(join(ROOT, url), 'utf8')
  })
  wf.register('tag', (text) => {
    const counts = {}
    const prose = text.replace(/```[\s\S]*?```/g, '')
    for (const w of prose.toLowerCase().match(/\b[a-z]{6,}\b/g) ?? []) counts[w] = (counts[w] ?? 0) + 1
    return Object.entries(counts)
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .slice(0, 3)
      .map(([w]) => w)
  })
  wf.register('publish', async (page, ctx) => {
    const now = site.read()
    // Idempotent by key: a publish that runs again after a crash finds its page there.
    if (!now.pages[ctx.idempotencyKey]) {
      now.pages[ctx.idempotencyKey] = page
      now.writes++
      site.write(now)
    }
    if (crash && ctx.runId === 'doc-a') {
      await wf.flushed() // the history so far is on disk; this step's completion is not
      console.log(`  process ${process.pid}: page ${page.url} written; SIGKILL before publish completes`)
      process.kill(process.pid, 'SIGKILL')
    }
    return { key: ctx.idempotencyKey, url: page.url }
  })
  wf.register('unpublish', (published) => {
    const now = site.read()
    delete now.pages[published.key]
    site.write(now)
    return null
  })
  wf.register('notify', ({ channel, page }) => {
    if (channel !== '#docs') throw new PermanentError(`no channel ${channel}`)
    return `posted ${page.url} to ${channel}`
  })
  wf.define(pipeline)
  return { orrery, mesh, store, site, wf }
}

/** A node's end, as a Promise: from the history if it is there, else from the run's events. */
function reached(run, node) {
  const done = (e) => e.type === 'node-done' && e.node === node
  return new Promise((resolve) => {
    if (run.history().some(done)) return resolve()
    const subscription = run.events.subscribe((e) => {
      if (done(e)) resolve(subscription.unsubscribe())
    })
  })
}

const short = (v) => {
  const s = JSON.stringify(v) ?? 'undefined'
  return s.length > 60 ? `${s.slice(0, 57)}...` : s
}

/** One history event in a line (node-done, decisions and timer inputs left out). */
function describe(e, t0) {
  const head = `    ${String(e.seq).padStart(2)} ${`+${Math.round(e.at - t0)}`.padStart(5)} ms  `
  switch (e.type) {
    case 'started':
      return `${head}started${e.input === undefined ? '' : `        ${short(e.input)}`}`
    case 'step-started':
      return `${head}step-started   ${e.step} #${e.attempt}${e.compensation ? ' (compensation)' : ''}  key ${e.key}`
    case 'step-completed':
      return `${head}step-completed ${e.step} #${e.attempt} ${e.outcome}${e.error ? `: ${e.error.message}` : ` -> ${short(e.output)}`}`
    case 'retry':
      return `${head}retry          ${e.step} #${e.attempt} at +${Math.round(e.when - t0)} ms`
    case 'signal':
      return `${head}signal         ${e.name} ${short(e.payload)}`
    case 'compensated':
      return `${head}compensated    ${e.step} ${e.ok ? 'ok' : 'FAILED'}`
    case 'run-finished':
      return `${head}run-finished   ${e.status}${e.error ? ` (${e.error.code} at step ${e.error.details?.step})` : ` -> ${short(e.output)}`}`
    default:
      return undefined
  }
}

/** A run's history; `brief` stands for the events process 1 recorded, in one line. */
function printHistory(run, resumedAfter, brief) {
  const events = run.history()
  const t0 = events[0].at
  console.log(`\n  history of ${run.id} (${run.definition.name} ${run.definition.version}):`)
  if (brief) console.log(`     1-${resumedAfter} in process 1: ${brief}`)
  for (const e of events) {
    const line = e.seq > (brief ? resumedAfter : 0) && describe(e, t0)
    if (line) console.log(line)
    if (e.seq === resumedAfter) console.log('       --- process 1 killed; process 2 replays the events above and goes on ---')
  }
}

/** Process 1: starts doc-a and doc-b, approves doc-a once both wait for review, dies in doc-a's publish. */
async function first(dir) {
  const { wf } = await open(dir, { crash: true })
  const a = await wf.start('doc-pipeline', { url: 'docs/store.md', channel: '#docs' }, { id: 'doc-a' })
  const b = await wf.start('doc-pipeline', { url: 'docs/bus.md', channel: '#nowhere' }, { id: 'doc-b' })
  console.log(`  process ${process.pid}: started doc-a (docs/store.md to #docs) and doc-b (docs/bus.md to #nowhere), ${pipeline.version}`)
  await Promise.all([reached(a, 'analyse'), reached(b, 'analyse')])
  a.signal('approve', { by: 'ana' })
  await new Promise((resolve) => setTimeout(resolve, 10_000))
  throw new Error('process 1 should have crashed in publish')
}

/** Process 2: the same store; the runs resume on their own. */
async function second(dir) {
  const { orrery, mesh, store, site, wf } = await open(dir, { crash: false })
  const a = wf.get('doc-a')
  const b = wf.get('doc-b')
  const before = { a: a.history().length, b: b.history().length }
  const running = wf.list({ status: 'running' }).map((r) => `${r.id} (${r.id === 'doc-a' ? before.a : before.b} events on disk)`)
  console.log(`  process ${process.pid}: opens the same store; runs to resume: ${running.join(', ')}`)
  const result = await a.result()
  b.signal('approve', { by: 'ana' })
  const failure = await b.result().then(
    () => assert.fail('doc-b should fail'),
    (e) => e,
  )
  await store.flushed()

  printHistory(a, before.a, undefined)
  console.log(`  result: ${short(result)}`)
  printHistory(b, before.b, 'fetched (after a 503 and a retry), summarized and tagged; waiting for review')
  console.log(`  result: ${failure.code} (${failure.details.status}); ${failure.cause?.message}`)

  const { pages, writes } = site.read()
  const publishes = a.history().filter((e) => e.type === 'step-started' && e.step === 'publish')
  console.log(`\n  doc-a's publish ran ${publishes.length} times (once per process) with one key; the site wrote its page once.`)
  console.log(`  doc-b's page was written, then unpublished by the saga. Pages left: ${Object.keys(pages).join(', ')}`)

  // What the demo shows, checked.
  assert.equal(result, 'posted docs/store.md to #docs')
  assert.equal(publishes.length, 2)
  assert.ok(publishes.every((e) => e.key === 'doc-a/publish'))
  assert.deepEqual(Object.keys(pages), ['doc-a/publish'])
  assert.equal(writes, 2) // doc-a's page once, doc-b's (later unpublished) once
  assert.equal(a.status(), 'completed')
  assert.equal(b.status(), 'compensated')
  assert.equal(failure.code, 'STEP_FAILED')
  assert.ok(b.history().some((e) => e.type === 'compensated' && e.step === 'publish' && e.ok))
  await mesh.shutdown()
  store.close()
  orrery.close()
}

const [mode, dir] = process.argv.slice(2)
if (mode === '--process-1') await first(dir)
else if (mode === '--process-2') await second(dir)
else {
  const tmp = mkdtempSync(join(tmpdir(), 'orrery-workflow-demo-'))
  console.log(`\n== workflows: a crash mid-run and its resume (native engine, store ${join(tmp, 'runs.redb')})`)
  try {
    const one = spawnSync(process.execPath, [SELF, '--process-1', tmp], { stdio: 'inherit' })
    console.log(`  process 1 ended by ${one.signal ?? `exit code ${one.status}`}`)
    if (one.signal !== 'SIGKILL') throw new Error('process 1 was meant to die by SIGKILL')
    const two = spawnSync(process.execPath, [SELF, '--process-2', tmp], { stdio: 'inherit' })
    if (two.status !== 0) throw new Error(`process 2 failed (${two.signal ?? two.status})`)
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
}
