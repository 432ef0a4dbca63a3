/**
 * OpenTelemetry traces (`Orrery.create({ tracing })`) on every engine, in Node and in a page: the
 * spans each operation makes, their kinds and messaging attributes, parent-child structure and
 * links, the W3C trace context carried in headers, and nothing at all when tracing is off. The
 * SDK's in-memory exporter collects the spans; no context manager is registered, so the
 * structure asserted here is the one Orrery passes on itself.
 */
import * as api from '@opentelemetry/api'
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { afterEach, describe, expect, it } from 'vitest'

import { Agent, type AgentContext, type Logger, Orrery, type Message, PermanentError, sequence, step, workflow } from '../ts/node.js'
import { TRACER_VERSION } from '../ts/observe/tracing.js'
import { ENGINE, IN_BROWSER } from './engine.js'
import { errorOf, settle } from './helpers.js'

const { SpanKind } = api

/** Greets; the agent `flaky` fails every time. Logs each greeting through its handler context. */
class Greeter extends Agent {
  static readonly capabilities = [{ name: 'greet', version: '1.0.0' }]
  constructor(context: AgentContext<unknown>) {
    super(context)
    this.handle<string, string>('greet', (name, ctx) => {
      ctx.log.info({ name }, 'greeting')
      if (this.id === 'flaky') throw new Error('flaky fails')
      return `${this.id}: hello ${name}`
    })
  }
}

/** A logger keeping each line with its bindings, as pino would write it. */
function recorder(lines: Array<Record<string, unknown>>, bindings: Record<string, unknown> = {}): Logger {
  const write = (obj: unknown, msg?: string) => lines.push({ ...bindings, ...(obj as object), msg })
  return { child: (more) => recorder(lines, { ...bindings, ...more }), debug: write, info: write, warn: write, error: write }
}

/** An Orrery tracing into its own in-memory exporter. */
async function traced(): Promise<{ orrery: Orrery; spans: () => ReadableSpan[]; exporter: InMemorySpanExporter }> {
  const exporter = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  const orrery = await Orrery.create({ engine: ENGINE, tracing: { api, tracer: provider.getTracer('orrery-test') } })
  opened.push(orrery)
  return { orrery, spans: () => exporter.getFinishedSpans(), exporter }
}

const opened: Orrery[] = []
afterEach(() => {
  for (const orrery of opened.splice(0)) orrery.close()
})

/** The one finished span named `name`. */
function one(spans: ReadableSpan[], name: string): ReadableSpan {
  const found = spans.filter((s) => s.name === name)
  expect(
    found.map((s) => s.name),
    `spans named ${name} among ${spans.map((s) => s.name).join(', ')}`,
  ).toEqual([name])
  return found[0]!
}

/** Whether `child`'s parent is `parent`. */
function parentOf(child: ReadableSpan): string | undefined {
  return child.parentSpanContext?.spanId
}

function idOf(span: ReadableSpan): string {
  return span.spanContext().spanId
}

function traceOf(span: ReadableSpan): string {
  return span.spanContext().traceId
}

describe(`tracing (${ENGINE})`, () => {
  it('makes a send span per publish and a process span per delivery, its child through the traceparent header', async () => {
    const { orrery, spans } = await traced()
    const got: Message[] = []
    orrery.bus.subscribe('orders').subscribe((m) => got.push(m))
    const sent = await orrery.bus.publish('orders', { n: 1 }, { headers: { app: 'x' } })
    await settle()
    expect(got).toHaveLength(1)
    const send = one(spans(), 'send orders')
    const process = one(spans(), 'process orders')
    expect(send.kind).toBe(SpanKind.PRODUCER)
    expect(process.kind).toBe(SpanKind.CONSUMER)
    expect(send.attributes).toMatchObject({
      'messaging.system': 'orrery',
      'messaging.destination.name': 'orders',
      'messaging.operation.type': 'send',
      'messaging.operation.name': 'send',
      'messaging.message.id': sent.id,
    })
    expect(process.attributes).toMatchObject({ 'messaging.operation.type': 'process', 'messaging.message.id': sent.id, 'messaging.destination.name': 'orders' })
    expect(parentOf(process)).toBe(idOf(send))
    expect(traceOf(process)).toBe(traceOf(send))
    expect(process.links.map((l) => l.context.spanId)).toEqual([idOf(send)])
    // The user's headers stay; the trace context is added beside them.
    expect(got[0]!.headers).toEqual({ app: 'x', traceparent: `00-${traceOf(send)}-${idOf(send)}-01` })
  })

  // Node: the API's async-hooks context manager (node:async_hooks), loaded here only.
  it.skipIf(IN_BROWSER)('continues the caller’s active span (with a context manager), and what a handler publishes continues the delivery’s', async () => {
    const specifier = '@opentelemetry/context-async-hooks'
    const { AsyncLocalStorageContextManager } = (await import(/* @vite-ignore */ specifier)) as typeof import('@opentelemetry/context-async-hooks')
    const manager = new AsyncLocalStorageContextManager().enable()
    api.context.setGlobalContextManager(manager)
    try {
      const { orrery, spans } = await traced()
      const caller = new BasicTracerProvider().getTracer('caller').startSpan('caller')
      const done = new Promise<void>((resolve) => {
        orrery.bus.subscribe('first').subscribe(() => {
          // Published from inside the delivery: its send span is the process span's child.
          void orrery.bus.publish('second', 2)
        })
        orrery.bus.subscribe('second').subscribe(() => resolve())
      })
      await api.context.with(api.trace.setSpan(api.context.active(), caller), () => orrery.bus.publish('first', 1))
      await done
      await settle()
      const first = one(spans(), 'send first')
      expect(parentOf(first)).toBe(caller.spanContext().spanId)
      const second = one(spans(), 'send second')
      expect(parentOf(second)).toBe(idOf(one(spans(), 'process first')))
      expect(parentOf(one(spans(), 'process second'))).toBe(idOf(second))
      expect(new Set(spans().map(traceOf))).toEqual(new Set([caller.spanContext().traceId]))
    } finally {
      api.context.disable()
    }
  })

  // Node: `tracing: true` loads the API with import(), which a page without a bundler cannot resolve (it passes `tracing: { api }`).
  it.skipIf(IN_BROWSER)('traces on the global tracer provider with tracing: true', async () => {
    const exporter = new InMemorySpanExporter()
    api.trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }))
    try {
      const orrery = await Orrery.create({ engine: ENGINE, tracing: true })
      opened.push(orrery)
      await orrery.bus.publish('global', 1)
      const send = one(exporter.getFinishedSpans(), 'send global')
      expect(send.instrumentationScope).toMatchObject({ name: 'orrery', version: TRACER_VERSION })
    } finally {
      api.trace.disable()
    }
  })

  it('gives a batch publish a send span linked to a create span per message, each message carrying its own', async () => {
    const { orrery, spans } = await traced()
    const got: Message[] = []
    orrery.bus.subscribe('jobs').subscribe((m) => got.push(m))
    await orrery.bus.publishBatch([
      { channel: 'jobs', payload: 1 },
      { channel: 'jobs', payload: 2, options: { id: 'job-2' } },
    ])
    await settle()
    const send = one(spans(), 'send jobs')
    const creates = spans().filter((s) => s.name === 'create jobs')
    expect(creates).toHaveLength(2)
    expect(send.kind).toBe(SpanKind.CLIENT)
    expect(send.attributes['messaging.batch.message_count']).toBe(2)
    expect(creates.every((c) => c.kind === SpanKind.PRODUCER)).toBe(true)
    expect(send.links.map((l) => l.context.spanId).sort()).toEqual(creates.map(idOf).sort())
    expect(creates[1]!.attributes['messaging.message.id']).toBe('job-2')
    const processes = spans().filter((s) => s.name === 'process jobs')
    expect(processes.map(parentOf).sort()).toEqual(creates.map(idOf).sort())
    expect(got.map((m) => m.headers['traceparent']?.split('-')[2]).sort()).toEqual(creates.map(idOf).sort())
  })

  it('keeps a group delivery’s process span open until it is settled, with an ack or nack span under it', async () => {
    const { orrery, spans } = await traced()
    const group = orrery.bus.group('work', 'workers')
    const held: Array<{ ack(): void; nack(o?: { deadLetter?: string }): void }> = []
    group.join().subscribe((d) => held.push(d))
    await orrery.bus.publish('work', 'a')
    await orrery.bus.publish('work', 'b')
    await settle()
    expect(held).toHaveLength(2)
    expect(spans().filter((s) => s.name === 'process work')).toHaveLength(0)
    held[0]!.ack()
    held[1]!.nack({ deadLetter: 'bad input' })
    const processes = spans().filter((s) => s.name === 'process work')
    expect(processes).toHaveLength(2)
    expect(processes.every((p) => p.attributes['messaging.consumer.group.name'] === 'workers')).toBe(true)
    const ack = one(spans(), 'ack work')
    const nack = one(spans(), 'nack work')
    expect(ack.kind).toBe(SpanKind.CLIENT)
    expect(ack.attributes['messaging.operation.type']).toBe('settle')
    expect(nack.attributes['orrery.dead_letter.reason']).toBe('bad input')
    expect(processes.map(idOf).sort()).toEqual([parentOf(ack), parentOf(nack)].sort())
    const sends = spans().filter((s) => s.name === 'send work')
    expect(processes.map(parentOf).sort()).toEqual(sends.map(idOf).sort())
  })

  it('traces a request as a client span and its answer as a server span under the delivery', async () => {
    const { orrery, spans } = await traced()
    orrery.bus.respond<number, number>('math.double', (req) => req.payload * 2)
    const reply = await orrery.bus.request<number>('math.double', 21)
    expect(reply.payload).toBe(42)
    await settle()
    const request = one(spans(), 'request math.double')
    const process = one(spans(), 'process math.double')
    const respond = one(spans(), 'respond math.double')
    expect(request.kind).toBe(SpanKind.CLIENT)
    expect(respond.kind).toBe(SpanKind.SERVER)
    expect(parentOf(process)).toBe(idOf(request))
    expect(parentOf(respond)).toBe(idOf(process))
    expect(new Set([request, process, respond].map(traceOf)).size).toBe(1)
  })

  it('traces a group responder’s answer and a failing request', async () => {
    const { orrery, spans } = await traced()
    orrery.bus.respond<number, number>(
      'math.inv',
      (req) => {
        if (req.payload === 0) throw new Error('division by zero')
        return 1 / req.payload
      },
      { group: 'calc' },
    )
    expect((await orrery.bus.request<number>('math.inv', 4)).payload).toBe(0.25)
    expect((await errorOf(() => orrery.bus.request('math.inv', 0)))?.code).toBe('HANDLER_ERROR')
    await settle()
    const requests = spans().filter((s) => s.name === 'request math.inv')
    expect(requests).toHaveLength(2)
    const failed = requests.find((r) => r.status.code === api.SpanStatusCode.ERROR)!
    expect(failed.attributes['error.type']).toBe('HANDLER_ERROR')
    const responds = spans().filter((s) => s.name === 'respond math.inv')
    expect(responds.map((r) => r.status.code).sort()).toEqual([api.SpanStatusCode.UNSET, api.SpanStatusCode.ERROR])
    const processes = spans().filter((s) => s.name === 'process math.inv')
    expect(processes.map(parentOf).sort()).toEqual(requests.map(idOf).sort())
    expect(responds.map(parentOf).sort()).toEqual(processes.map(idOf).sort())
    expect(spans().filter((s) => s.name === 'ack math.inv')).toHaveLength(2)
  })

  it('traces a routed request: a route span, a request per attempt, the delivery, the handler and its ack', async () => {
    const { orrery, spans } = await traced()
    const lines: Array<Record<string, unknown>> = []
    const mesh = await orrery.mesh({ logger: recorder(lines) })
    mesh.define('greeter', Greeter)
    await mesh.spawn('greeter', { id: 'flaky' })
    await mesh.spawn('greeter', { id: 'steady' })
    // `priority` picks in spawn order: the first fails, routing falls back to the second.
    const reply = await mesh.request<string>('greet', 'ada', { retries: 2 })
    expect(reply.payload).toBe('steady: hello ada')
    await settle()
    await mesh.shutdown()
    const route = one(spans(), 'route greet')
    expect(route.kind).toBe(SpanKind.INTERNAL)
    expect(route.attributes).toMatchObject({ 'orrery.capability': 'greet', 'orrery.agent.id': 'steady', 'orrery.route.attempts': 2 })
    expect(route.events.map((e) => [e.name, e.attributes?.['orrery.agent.id']])).toEqual([
      ['orrery.route.attempt', 'flaky'],
      ['orrery.route.fallback', 'flaky'],
      ['orrery.route.attempt', 'steady'],
    ])
    const requests = ['flaky', 'steady'].map((agent) => one(spans(), `request inbox.${agent}`))
    expect(requests.map(parentOf)).toEqual([idOf(route), idOf(route)])
    expect(requests[0]!.status.code).toBe(api.SpanStatusCode.ERROR)
    const processes = ['flaky', 'steady'].map((agent) => one(spans(), `process inbox.${agent}`))
    expect(processes.map(parentOf)).toEqual(requests.map(idOf))
    expect(processes[1]!.attributes['messaging.consumer.group.name']).toBe('agent')
    const handlers = spans().filter((s) => s.name === 'handle greet')
    expect(handlers.map(parentOf).sort()).toEqual(processes.map(idOf).sort())
    const steady = handlers.find((h) => h.attributes['orrery.agent.id'] === 'steady')!
    expect(steady.attributes).toMatchObject({ 'orrery.agent.type': 'greeter', 'orrery.handler': 'greet', 'orrery.attempt': 1 })
    expect(handlers.find((h) => h.attributes['orrery.agent.id'] === 'flaky')!.status.code).toBe(api.SpanStatusCode.ERROR)
    expect(
      spans()
        .filter((s) => s.name.startsWith('ack inbox.'))
        .map(parentOf)
        .sort(),
    ).toEqual(processes.map(idOf).sort())
    expect(
      new Set(
        spans()
          .filter((s) => s.name !== 'send orrery.registry')
          .map(traceOf),
      ),
    ).toEqual(new Set([traceOf(route)]))
    // The handler's log lines carry its trace and span ids.
    const greeting = lines.filter((l) => l['msg'] === 'greeting' && l['agent'] === 'steady')
    expect(greeting.map((l) => [l['traceId'], l['spanId']])).toEqual([[traceOf(steady), idOf(steady)]])
  })

  it('traces a workflow run as a span, its step attempts and compensations as its children', async () => {
    const { orrery, spans } = await traced()
    const wf = await orrery.workflows()
    let tries = 0
    const traces: Array<{ traceId: string; spanId: string } | undefined> = []
    wf.register('reserve', (item: string, ctx) => {
      traces.push(ctx.trace)
      return `reserved ${item}`
    })
    wf.register('release', () => 'released')
    wf.register('charge', () => {
      tries++
      if (tries === 1) throw new Error('card reader busy')
      throw new PermanentError('card declined')
    })
    wf.define(
      workflow(
        'order',
        sequence(
          step('reserve', { fn: 'reserve' }, { input: '$input', compensate: { run: { fn: 'release' } } }),
          step('charge', { fn: 'charge' }, { retry: { attempts: 3, initialMs: 1 } }),
        ),
      ),
    )
    const run = await wf.start('order', 'book', { id: 'order-1' })
    expect((await errorOf(() => run.result()))?.code).toBe('STEP_FAILED')
    expect(run.status()).toBe('compensated')
    await settle()
    const root = one(spans(), 'workflow order')
    expect(root.kind).toBe(SpanKind.INTERNAL)
    expect(root.attributes).toMatchObject({
      'orrery.workflow.run_id': 'order-1',
      'orrery.workflow.definition': 'order',
      'orrery.workflow.status': 'compensated',
    })
    expect(root.status.code).toBe(api.SpanStatusCode.ERROR)
    const reserve = one(spans(), 'step reserve')
    const charges = spans().filter((s) => s.name === 'step charge')
    const release = one(spans(), 'compensate reserve')
    expect(charges.map((c) => c.attributes['orrery.attempt'])).toEqual([1, 2])
    expect(charges.map((c) => c.attributes['orrery.workflow.outcome'])).toEqual(['transient', 'permanent'])
    expect(charges.every((c) => c.status.code === api.SpanStatusCode.ERROR)).toBe(true)
    expect(charges[1]!.status.message).toContain('card declined')
    expect(reserve.attributes).toMatchObject({
      'orrery.workflow.outcome': 'ok',
      'orrery.idempotency_key': 'order-1/reserve',
      'orrery.workflow.compensation': false,
    })
    expect(release.attributes['orrery.workflow.compensation']).toBe(true)
    // A step function has its span's ids to log.
    expect(traces).toEqual([{ traceId: traceOf(reserve), spanId: idOf(reserve) }])
    for (const child of [reserve, ...charges, release]) {
      expect(parentOf(child)).toBe(idOf(root))
      expect(traceOf(child)).toBe(traceOf(root))
    }
    // Ordered as they ran.
    expect([reserve, ...charges, release].map((s) => s.startTime[0] * 1e9 + s.startTime[1])).toEqual(
      [reserve, ...charges, release].map((s) => s.startTime[0] * 1e9 + s.startTime[1]).sort((a, b) => a - b),
    )
    expect(root.events.map((e) => e.name)).toEqual(['orrery.workflow.retry', 'orrery.workflow.compensated'])
    await wf.close()
  })

  it('makes no span and adds no header when tracing is off', async () => {
    const exporter = new InMemorySpanExporter()
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
    api.trace.setGlobalTracerProvider(provider)
    try {
      const orrery = await Orrery.create({ engine: ENGINE })
      opened.push(orrery)
      const got: Message[] = []
      orrery.bus.subscribe('plain').subscribe((m) => got.push(m))
      orrery.bus.respond('plain.rpc', () => 'ok')
      await orrery.bus.publish('plain', 1)
      await orrery.bus.request('plain.rpc', 1)
      await settle()
      expect(got[0]!.headers).toEqual({})
      expect(exporter.getFinishedSpans()).toEqual([])
    } finally {
      api.trace.disable()
    }
  })

  // Node: a child process, in which the package is hidden by a module hook.
  // The child compiles the TypeScript under test as it loads (seconds on a loaded machine).
  it.skipIf(IN_BROWSER)('refuses tracing with UNSUPPORTED where @opentelemetry/api is missing, and works without it', { timeout: 90_000 }, async () => {
    const { execFile } = await import('node:child_process')
    const { fileURLToPath } = await import('node:url')
    const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))
    const stdout = await new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        ['--import', fixture('run-source.mjs'), '--import', fixture('without-otel.mjs'), fixture('tracing-without-otel.mjs')],
        { env: { ...process.env, ORRERY_ENGINE: ENGINE }, timeout: 80_000 },
        (error, out, err) => (error ? reject(new Error(`${error.message}\n${err}`)) : resolve(out)),
      ),
    )
    const { refused, published } = JSON.parse(stdout) as { refused?: { code: string; message: string; details: Record<string, unknown> }; published: boolean }
    expect(refused?.code).toBe('UNSUPPORTED')
    expect(refused?.message).toContain('npm i @opentelemetry/api')
    expect(refused?.details).toEqual({ package: '@opentelemetry/api' })
    expect(published).toBe(true)
  })

  it('refuses a traced publish’s bad options as an untraced one, publishing nothing', async () => {
    const { orrery, spans } = await traced()
    const got: Message[] = []
    orrery.bus.subscribe('strict').subscribe((m) => got.push(m))
    const plain = await Orrery.create({ engine: ENGINE })
    opened.push(plain)
    for (const options of [null, 'x', { headers: 'x' }, { headers: { a: 1 } }, { colour: 'red' }, { ttl: -1 }]) {
      const untraced = await errorOf(() => plain.bus.publish('strict', 1, options as never))
      expect(['INVALID_OPTION', 'INVALID_ARGUMENT'], JSON.stringify(options)).toContain(untraced?.code)
      const error = await errorOf(() => orrery.bus.publish('strict', 1, options as never))
      expect([error?.code, error?.message]).toEqual([untraced?.code, untraced?.message])
      const batch = await errorOf(() =>
        orrery.bus.publishBatch([
          { channel: 'strict', payload: 1 },
          { channel: 'strict', payload: 2, options: options as never },
        ]),
      )
      expect(batch?.code).toBe(untraced?.code)
    }
    await settle()
    expect(got).toEqual([])
    expect(spans()).toEqual([])
  })

  it('refuses a tracing option of the wrong shape, before anything loads', async () => {
    for (const [tracing, text] of [
      ['yes', 'must be true, false, or an object'],
      [{ tracer: {} }, 'tracing.tracer.startSpan'],
      [{ api: {} }, 'tracing.api'],
      [{ sampler: 1 }, 'sampler'],
    ] as const) {
      const error = await errorOf(() => Orrery.create({ engine: ENGINE, tracing: tracing as never }))
      expect(error?.code, JSON.stringify(tracing)).toBe('INVALID_OPTION')
      expect(error?.message).toContain(text)
    }
  })
})
