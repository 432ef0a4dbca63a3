/**
 * Metrics in the user's prom-client registry (`Orrery.create({ metrics })`), on both engines: a
 * real bus with a group that dead-letters, requests, a mesh and workflows, scraped and counted;
 * the Grafana board's every PromQL query names metrics the scrape holds; the channel cap; sources
 * leaving at close; refusals.
 */
import { readFileSync } from 'node:fs'

import { Registry } from 'prom-client'
import { afterEach, describe, expect, inject, it } from 'vitest'

import { Agent, Orrery, sequence, step, workflow, type AgentContext, type Delivery } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { errorOf, settle } from './helpers.js'
import { until } from './transports/backends.js'
import { proxyTo } from './transports/proxy.js'

let open: Orrery[] = []

afterEach(() => {
  for (const o of open) o.close()
  open = []
})

async function create(options: Parameters<typeof Orrery.create>[0] = {}): Promise<Orrery> {
  const orrery = await Orrery.create({ engine: ENGINE, ...options })
  open.push(orrery)
  return orrery
}

/** One series of a scrape: its name and labels. */
interface Series {
  name: string
  labels: Record<string, string>
  value: number
}

/** Parses Prometheus text (what `registry.metrics()` returns) into its samples. */
function parse(text: string): Series[] {
  const out: Series[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`not a sample: ${line}`)
    const labels: Record<string, string> = {}
    for (const [, key, value] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[key!] = value!
    out.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return out
}

/** The value of the one series named `name` whose labels include `labels` (undefined if none; throws if several). */
function value(series: Series[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = series.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  if (found.length > 1) throw new Error(`${found.length} series of ${name} match ${JSON.stringify(labels)}`)
  return found[0]?.value
}

class Greeter extends Agent {
  static readonly capabilities = [{ name: 'greet', version: '1.0.0' }]
  constructor(context: AgentContext<unknown>) {
    super(context)
    this.handle<string, string>('greet', (name) => {
      if (name === '') throw new Error('no name')
      return `hello ${name}`
    })
  }
}

/**
 * What the board's test and the counting test share: a bus channel with a subscriber and a group
 * that acks two messages and dead-letters one, two requests answered and one with no responder,
 * a mesh with one agent asked three times (one failure), and workflows with a completed and a
 * failed run.
 */
async function exercise(registry: Registry): Promise<Series[]> {
  // A channel bound to a transport is labelled with the transport's kind.
  const orrery = await create({ metrics: registry, transports: { loop: { kind: 'memory' } }, bindings: { 'remote.*': 'loop' } })
  const { bus } = orrery
  await bus.publish('remote.jobs', 'far')
  const seen: number[] = []
  bus.subscribe<number>('orders').subscribe((m) => seen.push(m.payload))
  const group = bus.group<number>('orders', 'billing')
  const deliveries: Delivery<number>[] = []
  group.join().subscribe((d) => deliveries.push(d))
  for (const n of [1, 2, 3]) await bus.publish('orders', n)
  await settle()
  expect(deliveries.length).toBe(3)
  for (const d of deliveries) {
    if (d.message.payload === 2) d.nack({ deadLetter: 'refused' })
    else d.ack()
  }
  bus.respond<string, string>('echo', (m) => m.payload)
  await bus.request('echo', 'a')
  await bus.request('echo', 'b')
  expect((await errorOf(() => bus.request('nobody', 'c')))?.code).toBe('NO_RESPONDER')

  const mesh = await orrery.mesh({ heartbeat: { interval: 1_000 } })
  mesh.define('greeter', Greeter)
  await mesh.spawn('greeter', { id: 'g1' })
  await mesh.request('greet', 'ada')
  await mesh.request('greet@^1', 'bob')
  expect((await errorOf(() => mesh.request('greet', '', { retries: 0 })))?.code).toBe('HANDLER_ERROR')
  for (const made of ['made-up', 'made-up-too@^2']) expect((await errorOf(() => mesh.request(made, 1, { retries: 0 })))?.code).toBe('NO_RESPONDER')

  const wf = await orrery.workflows()
  wf.register('charge', (n: number) => n * 2)
  wf.register('ship', (n: number) => {
    if (n > 10) throw new Error('too heavy')
    return n
  })
  wf.define(workflow('order', sequence(step('charge', { fn: 'charge' }, { input: '$input' }), step('ship', { fn: 'ship' }, { input: '$steps.charge' }))))
  expect(await (await wf.start('order', 2)).result()).toBe(4)
  expect((await errorOf(async () => (await wf.start('order', 6)).result()))?.code).toBe('STEP_FAILED')
  await settle()
  expect(seen).toEqual([1, 2, 3])
  return parse(await registry.metrics())
}

describe('metrics', () => {
  it('counts what a bus, a group, requests, a mesh and workflows did', async () => {
    const registry = new Registry()
    const s = await exercise(registry)
    const orders = { messaging_system: 'orrery', messaging_destination_name: 'orders' }
    expect(value(s, 'messaging_client_sent_messages_total', { ...orders, messaging_operation_name: 'publish' })).toBe(3)
    expect(
      value(s, 'messaging_client_consumed_messages_total', { ...orders, messaging_consumer_group_name: 'billing', messaging_operation_name: 'receive' }),
    ).toBe(3)
    expect(value(s, 'messaging_client_consumed_messages_total', { ...orders, messaging_consumer_group_name: '', messaging_operation_name: 'process' })).toBe(3)
    const billing = { channel: 'orders', group: 'billing' }
    expect(value(s, 'orrery_group_messages_total', { ...billing, event: 'delivered' })).toBe(3)
    expect(value(s, 'orrery_group_messages_total', { ...billing, event: 'acked' })).toBe(2)
    expect(value(s, 'orrery_group_messages_total', { ...billing, event: 'dead-lettered' })).toBe(1)
    expect(value(s, 'orrery_group_pending_messages', billing)).toBe(0)
    expect(value(s, 'orrery_group_backlog_messages', billing)).toBe(0)
    expect(value(s, 'orrery_group_members', billing)).toBe(1)
    expect(value(s, 'orrery_channel_dead_lettered_messages_total', { channel: 'orders' })).toBe(1)
    expect(value(s, 'orrery_channel_retained_messages', { channel: 'orders.dead-letter' })).toBe(1)
    expect(value(s, 'orrery_channel_subscribers', { channel: 'orders' })).toBe(1)
    // Two requests answered, one with no responder, each timed once.
    const echo = { messaging_operation_name: 'request', messaging_destination_name: 'echo' }
    expect(value(s, 'messaging_client_operation_duration_seconds_count', { ...echo, error_type: '' })).toBe(2)
    expect(value(s, 'messaging_client_operation_duration_seconds_count', { messaging_destination_name: 'nobody', error_type: 'NO_RESPONDER' })).toBe(1)
    // Routed requests by capability name (a range is not a label) and outcome.
    expect(value(s, 'orrery_mesh_request_duration_seconds_count', { capability: 'greet', outcome: 'ok' })).toBe(2)
    expect(value(s, 'orrery_mesh_request_duration_seconds_count', { capability: 'greet', outcome: 'HANDLER_ERROR' })).toBe(1)
    // Capabilities nobody offers share one series, whatever names callers make up.
    expect(value(s, 'orrery_mesh_request_duration_seconds_count', { capability: '_unrouted', outcome: 'NO_RESPONDER' })).toBe(2)
    expect(s.some((x) => x.labels['capability']?.startsWith('made-up'))).toBe(false)
    // The mesh's agents inherit the Orrery's registry: the agent metrics are there too.
    expect(value(s, 'orrery_agent_messages_handled_total', { agent: 'g1', capability: 'greet' })).toBe(2)
    expect(value(s, 'orrery_agents', { type: 'greeter', health: 'healthy' })).toBe(1)
    expect(value(s, 'orrery_agents', { type: 'greeter', health: 'offline' })).toBe(0)
    expect(value(s, 'orrery_agent_breakers', { type: 'greeter', state: 'closed' })).toBe(1)
    expect(value(s, 'orrery_agent_runners', { type: 'greeter', state: 'running' })).toBe(1)
    expect(value(s, 'orrery_workflow_runs', { workflow: 'order', status: 'completed' })).toBe(1)
    expect(value(s, 'orrery_workflow_runs', { workflow: 'order', status: 'failed' })).toBe(1)
    expect(value(s, 'orrery_workflow_runs', { workflow: 'order', status: 'running' })).toBe(0)
    expect(value(s, 'orrery_workflow_step_duration_seconds_count', { workflow: 'order', step: 'charge', outcome: 'ok' })).toBe(2)
    expect(value(s, 'orrery_workflow_step_duration_seconds_count', { workflow: 'order', step: 'ship', outcome: 'ok' })).toBe(1)
    expect(value(s, 'orrery_workflow_step_duration_seconds_count', { workflow: 'order', step: 'ship', outcome: 'transient' })).toBe(1)
    // Histograms in Prometheus's shape: cumulative buckets by `le`, the last (+Inf) equal to the count.
    const greet = { capability: 'greet', outcome: 'ok' }
    const buckets = s.filter((x) => x.name === 'orrery_mesh_request_duration_seconds_bucket' && x.labels['outcome'] === 'ok')
    expect(buckets.map((b) => b.labels['le'])).toEqual([
      '0.0001',
      '0.0005',
      '0.001',
      '0.005',
      '0.01',
      '0.025',
      '0.05',
      '0.1',
      '0.25',
      '0.5',
      '1',
      '2.5',
      '5',
      '10',
      '+Inf',
    ])
    expect(buckets.every((b, i) => i === 0 || b.value >= buckets[i - 1]!.value)).toBe(true)
    expect(buckets.at(-1)!.value).toBe(2)
    expect(value(s, 'orrery_mesh_request_duration_seconds_sum', greet)).toBeGreaterThan(0)
    expect(value(s, 'orrery_agent_handler_duration_seconds_bucket', { agent: 'g1', le: '+Inf' })).toBe(2)
    expect(value(s, 'orrery_agent_in_flight', { agent: 'g1' })).toBe(0)
    expect(value(s, 'messaging_client_sent_messages_total', { messaging_system: 'memory', messaging_destination_name: 'remote.jobs' })).toBe(1)
    expect(value(s, 'orrery_transport_up', { transport: 'loop', kind: 'memory' })).toBe(1)
    expect(value(s, 'orrery_transport_outages_total', { transport: 'loop', kind: 'memory' })).toBe(0)
    // registry.resetMetrics() starts the histograms, and the counts kept with them, from nothing.
    registry.resetMetrics()
    const after = parse(await registry.metrics())
    expect(value(after, 'orrery_mesh_request_duration_seconds_count', greet)).toBeUndefined()
    expect(value(after, 'orrery_agent_messages_handled_total', { agent: 'g1' })).toBeUndefined()
  })

  it('the Grafana board queries only metrics a real run exposes, through the data source chosen at import', async () => {
    const board = JSON.parse(readFileSync(new URL('../docs/grafana/orrery.json', import.meta.url), 'utf8')) as Board
    expect(board.uid).toBe('orrery-overview')
    expect(board.__inputs).toEqual([expect.objectContaining({ name: 'DS_PROMETHEUS', type: 'datasource', pluginId: 'prometheus' })])
    const panels = board.panels.filter((p) => p.type !== 'row')
    const titles = panels.map((p) => p.title.toLowerCase())
    for (const topic of [
      'throughput',
      'lag',
      'pending',
      'dead letters',
      'handler latency p50 / p99',
      'breakers',
      'agent health',
      'runs by status',
      'step duration',
    ]) {
      expect(
        titles.some((t) => t.includes(topic)),
        topic,
      ).toBe(true)
    }
    const exprs: string[] = []
    for (const panel of panels) {
      // Grafana's placeholder for the data source picked at import (written in two parts: not a JS template).
      expect(panel.datasource).toEqual({ type: 'prometheus', uid: '$' + '{DS_PROMETHEUS}' })
      for (const target of panel.targets) {
        expect(target.datasource).toEqual(panel.datasource)
        exprs.push(target.expr)
      }
    }
    expect(metricNames('histogram_quantile(0.99, sum by (le, type) (rate(a_bucket{x="y(z)"}[$__rate_interval]))) or on (type) b_total > bool 1')).toEqual([
      'a_bucket',
      'b_total',
    ])
    const exposed = new Set((await exercise(new Registry())).map((s) => s.name))
    const queried = new Set(exprs.flatMap(metricNames))
    expect(queried.size).toBeGreaterThan(15)
    expect([...queried].filter((name) => !exposed.has(name))).toEqual([])
  })
})

describe('metrics: sources and bounds', () => {
  it('labels the first maxChannels channels by name and sums the others under _other, requests too', async () => {
    const registry = new Registry()
    const o = await create({ metrics: { registry, maxChannels: 2 } })
    for (const channel of ['c1', 'c2', 'c3', 'c4']) await o.bus.publish(channel, 1)
    await o.bus.publish('c4', 2)
    // The first scrape reads the channels in name order: c1 and c2 keep their names.
    await registry.metrics()
    o.bus.respond('c3', () => 'ok')
    await o.bus.request('c3', 'x')
    const s = parse(await registry.metrics())
    const sent = (channel: string) => value(s, 'messaging_client_sent_messages_total', { messaging_destination_name: channel })
    expect([sent('c1'), sent('c2'), sent('c3'), sent('c4'), sent('_other')]).toEqual([1, 1, undefined, undefined, 4])
    expect(value(s, 'orrery_channel_retained_messages', { channel: '_other' })).toBe(4)
    expect(value(s, 'messaging_client_operation_duration_seconds_count', { messaging_destination_name: '_other' })).toBe(1)
    // Channels kept stay kept, whatever comes after.
    await o.bus.publish('a0', 1)
    expect(value(parse(await registry.metrics()), 'messaging_client_sent_messages_total', { messaging_destination_name: '_other' })).toBe(5)
  })

  it('sums the Orrerys sharing a registry; one that closes leaves its scrapes, and so do closed workflows', async () => {
    const registry = new Registry()
    const a = await create({ metrics: registry })
    const b = await create({ metrics: registry })
    await a.bus.publish('jobs', 1)
    await b.bus.publish('jobs', 2)
    await b.bus.publish('jobs', 3)
    const wf = await b.workflows()
    wf.register('one', () => 1)
    wf.define(workflow('w', step('one', { fn: 'one' })))
    await (await wf.start('w')).result()
    let s = parse(await registry.metrics())
    expect(value(s, 'messaging_client_sent_messages_total', { messaging_destination_name: 'jobs' })).toBe(3)
    expect(value(s, 'orrery_workflow_runs', { workflow: 'w', status: 'completed' })).toBe(1)
    wf.close()
    a.close()
    s = parse(await registry.metrics())
    expect(value(s, 'messaging_client_sent_messages_total', { messaging_destination_name: 'jobs' })).toBe(2)
    expect(value(s, 'orrery_workflow_runs', { workflow: 'w', status: 'completed' })).toBeUndefined()
    b.close()
    expect(parse(await registry.metrics()).filter((x) => x.name.startsWith('messaging_client_sent'))).toEqual([])
  })

  it('a bus closed by itself (not through its Orrery) drops out of the scrape instead of failing it', async () => {
    const registry = new Registry()
    const a = await create({ metrics: registry })
    const b = await create({ metrics: registry })
    await a.bus.publish('jobs', 1)
    await b.bus.publish('jobs', 2)
    a.bus.close()
    expect(value(parse(await registry.metrics()), 'messaging_client_sent_messages_total', { messaging_destination_name: 'jobs' })).toBe(1)
  })

  it("a mesh given its own registry reports its agents there; an Orrery's mesh inherits the Orrery's", async () => {
    const own = new Registry()
    const inherited = new Registry()
    const o = await create({ metrics: inherited })
    const mesh = await o.mesh({ metrics: own })
    mesh.define('greeter', Greeter)
    await mesh.spawn('greeter', { id: 'g1' })
    const other = await o.mesh()
    other.define('greeter', Greeter)
    await other.spawn('greeter', { id: 'g2', replicas: 2 })
    expect(value(parse(await own.metrics()), 'orrery_agent_runners', { type: 'greeter', state: 'running' })).toBe(1)
    expect(value(parse(await inherited.metrics()), 'orrery_agent_runners', { type: 'greeter', state: 'running' })).toBe(2)
    // A mesh shut down leaves the scrapes.
    await other.shutdown()
    expect(value(parse(await inherited.metrics()), 'orrery_agent_runners', { type: 'greeter', state: 'running' })).toBeUndefined()
  })

  it("orrery.control() serves the Orrery's registry at /metrics unless given another", async () => {
    const registry = new Registry()
    const other = new Registry()
    const o = await create({ metrics: registry })
    expect(o.control().metrics).toBe(registry)
    expect(o.control({ metrics: other }).metrics).toBe(other)
    expect((await create()).control().metrics).toBeUndefined()
  })

  it('refuses a bad metrics option with INVALID_OPTION before anything opens, and a registry holding one of its names', async () => {
    const registry = new Registry()
    for (const [metrics, field] of [
      [5, 'metrics'],
      [{ registry, maxChannels: -1 }, 'metrics.maxChannels'],
      [{ registry, maxChannels: 1.5 }, 'metrics.maxChannels'],
      [{ registry, extra: 1 }, 'metrics.extra'],
      [{}, 'metrics.registry'],
      [{ registry: {} }, 'metrics.registry.getSingleMetric'],
    ] as const) {
      const error = await errorOf(() => Orrery.create({ engine: ENGINE, metrics: metrics as never }))
      expect(error?.code, JSON.stringify(field)).toBe('INVALID_OPTION')
      expect(error?.details?.['option'], JSON.stringify(metrics)).toBe(field)
    }
    const taken = new Registry()
    const { Gauge } = await import('prom-client')
    new Gauge({ name: 'orrery_agents', help: 'not ours', registers: [taken] })
    const error = await errorOf(() => Orrery.create({ engine: ENGINE, metrics: taken }))
    expect(error).toMatchObject({ code: 'INVALID_OPTION', details: { metric: 'orrery_agents' } })
    // Nothing of Orrery's was declared in it, and the process goes on.
    expect(taken.getMetricsAsArray().map((m) => m.name)).toEqual(['orrery_agents'])
    taken.removeSingleMetric('orrery_agents')
    await create({ metrics: taken })
    expect(taken.getSingleMetric('orrery_workflow_runs')).toBeDefined()
  })
})

describe.skipIf(process.env['ORRERY_SERVERS'] === 'none')('metrics: a transport', () => {
  it('a Redis outage: orrery_transport_up falls to 0 and comes back, one outage counted, channels labelled redis', async () => {
    const target = new URL(inject('redisUrl')!.replace(/^redis:/, 'http:'))
    const proxy = await proxyTo(target.hostname, Number(target.port))
    try {
      const registry = new Registry()
      const run = `metrics-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}-${ENGINE}`
      const o = await create({
        metrics: registry,
        transports: { main: { kind: 'redis', url: `redis://${proxy.address}`, keyPrefix: `${run}:`, publishTimeoutMs: 1_000 } },
        bindings: { 'jobs*': 'main' },
      })
      const got: number[] = []
      o.bus.group<number>('jobs', 'g', { from: 'earliest' }).consume((d) => void got.push(d.message.payload))
      await o.bus.publish('jobs', 1)
      await until(() => got.length >= 1, 10_000, 'the first job')
      const main = { transport: 'main', kind: 'redis' }
      const scrape = async () => parse(await registry.metrics())
      let s = await scrape()
      expect(value(s, 'messaging_client_sent_messages_total', { messaging_system: 'redis', messaging_destination_name: 'jobs' })).toBe(1)
      expect([value(s, 'orrery_transport_up', main), value(s, 'orrery_transport_outages_total', main)]).toEqual([1, 0])
      // Its ack written before the cut (one in flight would fail, and be reported too).
      await new Promise((r) => setTimeout(r, 300))
      await proxy.cut()
      const up = async () => value(await scrape(), 'orrery_transport_up', main)
      let now: number | undefined = 1
      const poll = setInterval(() => void up().then((v) => (now = v)), 20)
      try {
        await until(
          () => now === 0,
          5_000,
          'the outage scraped',
          () => now,
        )
        s = await scrape()
        expect(value(s, 'orrery_transport_outages_total', main)).toBe(1)
        expect(value(s, 'orrery_transport_errors_total', main)).toBeGreaterThanOrEqual(1)
        await proxy.restore()
        await until(
          () => now === 1,
          10_000,
          'the end of the outage scraped',
          () => now,
        )
      } finally {
        clearInterval(poll)
      }
      expect(value(await scrape(), 'orrery_transport_outages_total', main)).toBe(1)
    } finally {
      await proxy.close()
    }
  }, 30_000)
})

interface Board {
  uid: string
  __inputs: unknown[]
  panels: Array<{ type: string; title: string; datasource?: unknown; targets: Array<{ expr: string; datasource?: unknown }> }>
}

const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan'])

/**
 * The metric names a PromQL expression reads: its identifiers once strings, label matchers
 * (`{...}`), ranges (`[...]`), grouping clauses (`by (...)`) and Grafana variables are taken
 * out, less function calls (a name followed by `(`) and keywords.
 */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$\w+/g, ' ')
  const names: string[] = []
  for (const m of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*(?!\s*\()/g)) {
    // A name cut by the lookahead ('rat' of 'rate(') is followed by the rest of a word.
    const next = bare[m.index + m[0].length]
    if (next !== undefined && /[a-zA-Z0-9_:(]/.test(next)) continue
    if (!PROMQL_WORDS.has(m[0].toLowerCase())) names.push(m[0])
  }
  return names
}
