/**
 * `orrery serve` in a child process (the TypeScript source through test/fixtures/run-source.mjs, on
 * this project's engine) and every client command against it, with real effects: a publish seen by
 * tail, a dead letter replayed and discarded, a run signalled to completion, a cancel; --json that
 * parses; a bad token's UNAUTHORIZED; the bin's exit codes; the tour npm start prints; SIGTERM.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import type { Io } from '../../ts/cli/output.js'
import { run } from '../../ts/cli/run.js'
import type { AgentView, DeadLetterView, MessageView, Overview, RunDetail, RunView } from '../../ts/cli/views.js'
import type {
  AgentView as ControlAgent,
  DeadLetterView as ControlDeadLetter,
  MessageView as ControlMessage,
  Overview as ControlOverview,
  RunDetail as ControlRunDetail,
} from '../../ts/control/views.js'
import { serveHttp } from '../../ts/http/index.js'
import { isOrreryError, Orrery } from '../../ts/node.js'
import { ENGINE } from '../engine.js'

// What the CLI reads is what Control returns: this stops compiling if the two drift apart.
const sameShapes: [
  (o: ControlOverview) => Overview,
  (a: ControlAgent) => AgentView,
  (m: ControlMessage) => MessageView,
  (d: ControlDeadLetter) => DeadLetterView,
  (r: ControlRunDetail) => RunDetail,
] = [(o) => o, (a) => a, (m) => m, (d) => d, (r) => r]
void sameShapes

const ROOT = join(import.meta.dirname, '../..')
const MAIN = join(ROOT, 'ts/cli/main.ts')
const LOADER = ['--import', join(ROOT, 'test/fixtures/run-source.mjs')]

interface Served {
  child: ChildProcess
  url: string
  token: string
  dashboard: boolean
  exited: Promise<number | null>
}

/** Starts `orrery serve --json` in a child on this engine; resolves once it printed its URL. */
async function serve(...args: string[]): Promise<Served> {
  const child = spawn(process.execPath, [...LOADER, MAIN, 'serve', '--port', '0', '--json', '--engine', ENGINE, ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  child.stderr?.on('data', (d) => {
    stderr += d
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const first = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve)
    void exited.then((code) => reject(new Error(`serve exited (${code}): ${stderr}`)))
  })
  return { child, exited, ...(JSON.parse(first) as { url: string; token: string; dashboard: boolean }) }
}

/** Runs a command line in this process against `served`; its output and exit code. */
async function cli(served: Served | undefined, argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = []
  const err: string[] = []
  const io: Io = { out: (t) => void out.push(t), err: (t) => void err.push(t), interactive: false }
  const target = served === undefined ? [] : ['--url', served.url, '--token', served.token]
  const code = await run([...argv, ...target], io)
  return { code, out: out.join('\n'), err: err.join('\n') }
}

/** A command's --json output, parsed, after checking it succeeded. */
async function json<T>(served: Served, argv: string[]): Promise<T> {
  const result = await cli(served, [...argv, '--json'])
  expect(result.err).toBe('')
  expect(result.code).toBe(0)
  return JSON.parse(result.out) as T
}

async function until<T>(what: string, value: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await value()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Runs the bin itself (main.ts) in a child; its exit code and output. */
function bin(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...LOADER, MAIN, ...args], { cwd: ROOT, env: { ...process.env, ...env } })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => {
      out += d
    })
    child.stderr.on('data', (d) => {
      err += d
    })
    child.on('exit', (code) => resolve({ code, out, err }))
  })
}

describe(`orrery serve and its clients (${ENGINE})`, { timeout: 60_000 }, () => {
  let served: Served
  beforeAll(async () => {
    served = await serve()
  }, 60_000)
  afterAll(async () => {
    if (served.child.exitCode === null && served.child.signalCode === null) served.child.kill('SIGKILL')
    await served.exited
  })

  it('status and agents: the overview and the demo mesh, as JSON and as tables', async () => {
    // The token serve makes up: hex, so it never begins with '-' (which would read as an option).
    expect(served.token).toMatch(/^[0-9a-f]{36}$/)
    const overview = await json<Overview>(served, ['status'])
    expect(overview.engine).toBe(ENGINE)
    expect(overview.agents.total).toBe(5)
    expect(overview.runs).toBeDefined()
    const table = await cli(served, ['status'])
    expect(table.out).toMatch(new RegExp(`^engine    ${ENGINE}, up `, 'm'))
    expect(table.out).toMatch(/^agents {4}5 \(/m)

    const list = await json<AgentView[]>(served, ['agents'])
    expect(list.map((a) => a.id).sort()).toEqual(['courier-1', 'courier-2', 'pricer-1', 'pricer-2', 'stock-1'])
    expect(list.find((a) => a.id === 'pricer-1')?.capabilities).toEqual([{ name: 'price', version: '1.2.0' }])
    const agents = await cli(served, ['agents'])
    expect(agents.out.split('\n')[0]).toMatch(/^ID\s+TYPE\s+STATE\s+HEALTH\s+BREAKER\s+IN FLIGHT\s+LAST BEAT\s+CAPABILITIES\s+TAGS$/)
    expect(agents.out).toMatch(/^stock-1\s+stock\s+running\s+\w+\s+closed\s+\d+\s+.* ago\s+reserve@1\.0\.0\s+eu$/m)
  })

  it('publish, then tail sees it: from the log and live', async () => {
    const first = await json<{ id: string; published: boolean }>(served, ['publish', 'cli-tail', '{"n":1}', '--header', 'who=cli', '--key', 'cli-msg-1'])
    expect(first).toEqual({ id: 'cli-msg-1', published: true })
    // The same id again is dropped only within a dedup window; the channel has none: both land.
    const tailing = cli(served, ['tail', 'cli-tail', '--from', 'earliest', '--count', '2', '--json'])
    await new Promise((resolve) => setTimeout(resolve, 300))
    const human = await cli(served, ['publish', 'cli-tail', '"two"'])
    expect(human.out).toMatch(/^published on cli-tail \(id .+\)$/)
    const tailed = await tailing
    expect(tailed.code).toBe(0)
    const lines = tailed.out.split('\n').map((l) => JSON.parse(l) as MessageView)
    expect(lines.map((m) => m.payload)).toEqual([{ n: 1 }, 'two'])
    expect(lines[0]).toMatchObject({ channel: 'cli-tail', seq: 0, id: 'cli-msg-1', headers: { who: 'cli' } })
    const table = await cli(served, ['tail', 'cli-tail', '--from', '1', '--count', '1'])
    expect(table.out).toMatch(/^#1 {2}\d\d:\d\d:\d\d\.\d{3} {2}"two"$/)
  })

  it('dlq list, replay and discard: a dead letter settled each way', async () => {
    await cli(served, ['publish', 'orders', '{"id":"cli-bad","sku":"","qty":1,"address":"x"}'])
    const mine = (letters: DeadLetterView[]) => letters.filter((d) => (d.payload as { id?: string }).id === 'cli-bad')
    const dead = await until('the dead letter', async () => mine(await json<DeadLetterView[]>(served, ['dlq', 'list', 'orders', '--limit', '1000'])).at(0))
    expect(dead).toMatchObject({ channel: 'orders.dead-letter', originChannel: 'orders', deliveries: 1 })
    expect(dead.reason).toMatch(/no sku/)
    const listed = await cli(served, ['dlq', 'list', 'orders', '--limit', '1000'])
    expect(listed.out).toMatch(new RegExp(`^${dead.seq}\\s+\\S+\\s+orders#${dead.originSeq}\\s+1\\s+.*no sku.*"cli-bad"`, 'm'))

    // Replayed to orders, the order is refused again: a new dead letter, the old one settled.
    const replayed = await cli(served, ['dlq', 'replay', 'orders', String(dead.seq)])
    expect(replayed.out).toMatch(new RegExp(`^replayed dead letter #${dead.seq} to orders \\(id .+\\)$`))
    const again = await until('the replayed order dead-lettered again', async () =>
      mine(await json<DeadLetterView[]>(served, ['dlq', 'list', 'orders', '--limit', '1000'])).find((d) => d.seq !== dead.seq),
    )
    expect(mine(await json<DeadLetterView[]>(served, ['dlq', 'list', 'orders', '--limit', '1000'])).map((d) => d.seq)).toEqual([again.seq])
    expect(again.originSeq).toBeGreaterThan(dead.originSeq)

    expect(await json(served, ['dlq', 'discard', 'orders', String(again.seq)])).toEqual({ discarded: true })
    expect(mine(await json<DeadLetterView[]>(served, ['dlq', 'list', 'orders', '--limit', '1000']))).toEqual([])
    const gone = await cli(served, ['dlq', 'discard', 'orders', String(again.seq)])
    expect(gone.code).toBe(1)
    expect(gone.err).toMatch(/^orrery: NOT_FOUND: /)
  })

  it('runs start, list, signal --wait (to completion), show and cancel', async () => {
    const order = '{"id":"cli-1","sku":"desk","qty":1,"address":"9 Orbit Lane"}'
    const started = await json<RunView>(served, ['runs', 'start', 'fulfil-order', order, '--id', 'cli-1'])
    expect(started).toMatchObject({ id: 'cli-1', definition: 'fulfil-order', status: 'running' })
    const running = await json<RunView[]>(served, ['runs', 'list', '--status', 'running', '--definition', 'fulfil-order', '--limit', '1000'])
    expect(running.map((r) => r.id)).toContain('cli-1')

    const done = await json<RunDetail>(served, ['runs', 'signal', 'cli-1', 'approve', '{"by":"cli"}', '--wait'])
    expect(done.status).toBe('completed')
    expect(done.history.at(-1)).toMatchObject({ type: 'run-finished', status: 'completed' })
    expect(done.history.some((e) => e.type === 'signal' && (e as { name?: string }).name === 'approve')).toBe(true)
    const shown = await cli(served, ['runs', 'show', 'cli-1'])
    expect(shown.out).toMatch(/^run cli-1: fulfil-order sha256:\S+, completed$/m)
    expect(shown.out).toMatch(/^\s+\d+\s+\+\d+ ms {2}signal {10}approve \{"by":"cli"\}$/m)
    expect(shown.out).toMatch(/run-finished {4}completed -> \{"tracking":"courier-\d:cli-1"\}$/m)

    await json(served, ['runs', 'start', 'fulfil-order', order.replace('cli-1', 'cli-2'), '--id', 'cli-2'])
    const cancelled = await cli(served, ['runs', 'cancel', 'cli-2'])
    expect(cancelled.code).toBe(0)
    const after = await until('cli-2 cancelled', async () => {
      const r = await json<RunDetail>(served, ['runs', 'show', 'cli-2'])
      return r.status === 'running' ? undefined : r
    })
    expect(after.status).toBe('cancelled')
    const table = await cli(served, ['runs', 'list', '--limit', '1000'])
    expect(table.out).toMatch(/^cli-2\s+fulfil-order\s+cancelled\s/m)

    const missing = await cli(served, ['runs', 'show', 'no-such-run'])
    expect(missing).toMatchObject({ code: 1, out: '' })
    expect(missing.err).toMatch(/^orrery: RUN_NOT_FOUND: /)
  })

  it('the dashboard at / without a token, when it is built; the API still asks for one', async () => {
    const page = await fetch(`${served.url}/`)
    if (existsSync(join(ROOT, 'dist/dashboard/index.html'))) {
      expect(served.dashboard).toBe(true)
      expect(page.status).toBe(200)
      expect(page.headers.get('content-type')).toMatch(/^text\/html/)
      expect(await page.text()).toMatch(/<!doctype html>/i)
    } else {
      expect(served.dashboard).toBe(false)
      expect(page.status).toBe(404)
    }
    expect((await fetch(`${served.url}/v1/overview`)).status).toBe(401)
    expect((await fetch(`${served.url}/v1/no-such-route`)).status).toBe(404)
    // serveHttp's option itself: an absolute directory, else refused before anything listens.
    const orrery = await Orrery.create({ engine: ENGINE })
    try {
      await expect(serveHttp(orrery.control(), { auth: 'none', dashboard: 'dist/dashboard' })).rejects.toSatisfy((e) => isOrreryError(e, 'INVALID_OPTION'))
    } finally {
      orrery.close()
    }
  })

  it('a bad token or none: UNAUTHORIZED, exit 1, nothing done', async () => {
    const before = (await json<Overview>(served, ['status'])).channels
    const wrong = await run(['publish', 'cli-unauthorized', '1', '--url', served.url, '--token', 'not-the-token', '--json'], {
      out: () => undefined,
      err: (t) => expect(JSON.parse(t)).toMatchObject({ error: { code: 'UNAUTHORIZED' } }),
      interactive: false,
    })
    expect(wrong).toBe(1)
    const none = await cli(undefined, ['agents', '--url', served.url])
    expect(none.code).toBe(1)
    expect(none.err).toMatch(/^orrery: UNAUTHORIZED: /)
    expect((await json<Overview>(served, ['status'])).channels).toBe(before)
  })

  it('the bin: exit 0 with output, 1 with the API code, 3 for a dead server', async () => {
    const env = { ORRERY_URL: served.url, ORRERY_TOKEN: served.token }
    const ok = await bin(['status'], env)
    expect(ok).toMatchObject({ code: 0, err: '' })
    expect(ok.out).toMatch(/^agents {4}5 /m)
    const refused = await bin(['runs', 'show', 'nope'], env)
    expect(refused.code).toBe(1)
    expect(refused.err).toMatch(/^orrery: RUN_NOT_FOUND: /)
    const usage = await bin(['runs', 'show'], env)
    expect(usage.code).toBe(2)
    const dead = await bin(['status'], { ORRERY_URL: 'http://127.0.0.1:1' })
    expect(dead.code).toBe(3)
  })

  it('serve --tour --exit (what npm start runs without a terminal): the tour, then exit 0', async () => {
    const child = spawn(process.execPath, [...LOADER, MAIN, 'serve', '--port', '0', '--tour', '--exit', '--engine', ENGINE], { cwd: ROOT })
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
    })
    let err = ''
    child.stderr.on('data', (d) => {
      err += d
    })
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    expect(err).toBe('')
    expect(code).toBe(0)
    expect(out).toMatch(new RegExp(`== orrery serve: ${ENGINE} engine`))
    expect(out).toMatch(/^ {2}token {6}[0-9a-f]{36} {2}\(admin\)$/m)
    for (const command of [
      'status',
      'agents',
      'publish tour',
      'tail tour',
      'publish orders',
      'dlq list orders',
      'runs start fulfil-order',
      'runs signal tour-2 approve',
    ]) {
      expect(out).toContain(`$ orrery ${command}`)
    }
    expect(out).toMatch(/^published on tour \(id .+\)$/m)
    expect(out).toMatch(/^#0 {2}\S+ {2}\{"hello":"orrery"\}$/m)
    expect(out).toMatch(/"tour-1"/)
    expect(out).toMatch(/^run tour-2: fulfil-order \S+, completed$/m)
  })

  it('serve --no-demo --exit in this process: started, printed, then closed', async () => {
    const lines: string[] = []
    const io: Io = { out: (t) => void lines.push(t), err: (t) => void lines.push(`stderr: ${t}`), interactive: false }
    const code = await run(['serve', '--port', '0', '--no-demo', '--exit', '--json', '--token', 'a-token-of-mine', '--engine', ENGINE], io)
    expect(code).toBe(0)
    expect(lines).toHaveLength(1)
    const printed = JSON.parse(lines[0]!) as { url: string; token: string; dashboard: boolean; metrics: boolean }
    expect(printed).toEqual({
      url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/),
      token: 'a-token-of-mine',
      dashboard: expect.any(Boolean),
      metrics: true, // prom-client is a dev dependency here
    })
    // Closed on the way out: the port answers no more.
    expect((await cli({ ...served, url: printed.url }, ['status'])).code).toBe(3)
    // A port taken (by the file's server): exit 1, saying so.
    const taken = await cli(undefined, ['serve', '--port', new URL(served.url).port, '--no-demo', '--exit', '--engine', ENGINE])
    expect(taken.code).toBe(1)
    expect(taken.err).toMatch(/^orrery: EADDRINUSE: port \d+ on 127\.0\.0\.1 is taken: choose another with --port/)
    // A host that is no address of this machine (TEST-NET-1): exit 1, saying so, no stack.
    const elsewhere = await cli(undefined, ['serve', '--host', '192.0.2.1', '--port', '0', '--no-demo', '--exit', '--engine', ENGINE])
    expect(elsewhere.code).toBe(1)
    expect(elsewhere.err).toMatch(/^orrery: EADDRNOTAVAIL: cannot listen on 192\.0\.2\.1 port 0: choose another --host/)
    expect(elsewhere.err).not.toMatch(/\bat .*\.(ts|js):\d+/)
  })

  it("/metrics: the bus, its group, the mesh and the workflows of the demo, in the Orrery's registry", async () => {
    const scrape = async () => {
      const response = await fetch(`${served.url}/metrics`, { headers: { authorization: `Bearer ${served.token}` } })
      expect(response.status).toBe(200)
      return response.text()
    }
    const text = await until('a completed run in the scrape', async () => {
      const t = await scrape()
      return /^orrery_workflow_runs\{workflow="fulfil-order",status="completed"\} [1-9]/m.test(t) ? t : undefined
    })
    expect(text).toMatch(/^messaging_client_sent_messages_total\{[^}]*messaging_destination_name="orders"[^}]*\} [1-9]/m)
    expect(text).toMatch(/^orrery_group_messages_total\{[^}]*group="billing"[^}]*\} [1-9]/m)
    expect(text).toMatch(/^orrery_channel_dead_lettered_messages_total\{[^}]*channel="orders"[^}]*\} [1-9]/m)
    expect(text).toMatch(/^orrery_agent_runners\{type="courier",state="running"\} 2$/m)
    expect(text).toMatch(/^orrery_mesh_request_duration_seconds_count\{[^}]*\} [1-9]/m)
    expect(text).toMatch(/^orrery_workflow_step_duration_seconds_count\{[^}]*step="reserve"[^}]*\} [1-9]/m)
  })

  it('serve without prom-client installed: the demo still starts, and the banner says metrics are off', async () => {
    const args = [...LOADER, '--import', join(ROOT, 'test/fixtures/without-prom-client.mjs'), MAIN, 'serve', '--port', '0', '--exit', '--engine', ENGINE]
    const child = spawn(process.execPath, args, { cwd: ROOT })
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
    })
    let err = ''
    child.stderr.on('data', (d) => {
      err += d
    })
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    expect(err).toBe('')
    expect(code).toBe(0)
    expect(out).toMatch(/the demo shop/)
    expect(out).toMatch(/^ {2}metrics {4}off: prom-client is not installed/m)
    expect(out).not.toMatch(/\/metrics/)
  })

  it('stops on SIGTERM (the last test: the server of this file), closing what it opened', async () => {
    served.child.kill('SIGTERM')
    expect(await served.exited).toBe(0)
    expect((await cli(served, ['status'])).code).toBe(3)
  })
})
