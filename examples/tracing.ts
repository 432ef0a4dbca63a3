// Tracing: OpenTelemetry spans of a routed request through an agent, and a workflow run. Run by
// test/examples.test.ts on both engines; the regions are the code blocks of docs/observability.md.
import assert from 'node:assert/strict'

import * as api from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { Agent, type AgentContext, type Logger, Orrery, sequence, step, workflow } from 'orrery'

// #region setup
// Your SDK: here spans are kept in memory; in production, an OTLP exporter behind a batch processor.
const exporter = new InMemorySpanExporter()
api.trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }))
// Optional: with a context manager, what handlers and steps call continues their span.
api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())

// `true` loads @opentelemetry/api and traces on its global provider; `{ api, tracer }` gives either.
const orrery = await Orrery.create({ tracing: true })
// #endregion setup

const lines: Array<Record<string, unknown>> = []
/** A logger writing each line with its bindings, as pino does. */
function logger(bindings: Record<string, unknown> = {}): Logger {
  const write = (fields: unknown, msg?: string) => lines.push({ ...bindings, ...(fields as object), msg })
  return { child: (more) => logger({ ...bindings, ...more }), debug: write, info: write, warn: write, error: write }
}

// #region mesh
class Greeter extends Agent {
  static readonly capabilities = [{ name: 'greet', version: '1.0.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle<string, string>('greet', (name, ctx) => {
      ctx.log.info({ name }, 'greeting') // carries traceId and spanId: the handler's span
      return `hello ${name}`
    })
  }
}

const mesh = await orrery.mesh({ logger: logger() })
mesh.define('greeter', Greeter)
await mesh.spawn('greeter', { id: 'g1' })
const reply = await mesh.request<string>('greet', 'ada')
assert.equal(reply.payload, 'hello ada')
// #endregion mesh

/** The finished spans as an indented tree: a child under its parent, in start order. */
function tree(spans: ReadableSpan[]): string[] {
  const ids = new Set(spans.map((s) => s.spanContext().spanId))
  const children = (parent: string | undefined) =>
    spans
      .filter((s) => (parent === undefined ? !ids.has(s.parentSpanContext?.spanId ?? '') : s.parentSpanContext?.spanId === parent))
      .sort((a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1])
  const lines: string[] = []
  const walk = (span: ReadableSpan, depth: number): void => {
    lines.push(`${'  '.repeat(depth)}${span.name} (${api.SpanKind[span.kind]})`)
    for (const child of children(span.spanContext().spanId)) walk(child, depth + 1)
  }
  for (const root of children(undefined)) walk(root, 0)
  return lines
}

// #region tree
assert.deepEqual(tree(exporter.getFinishedSpans()), [
  'route greet (INTERNAL)', // the routing decision: which agent, each attempt an event
  '  request inbox.g1 (CLIENT)', // one per attempt
  '    process inbox.g1 (CONSUMER)', // the delivery to the agent's inbox group, until its ack
  '      handle greet (INTERNAL)', // the handler's run
  '      ack inbox.g1 (CLIENT)', // the settlement
])
const handler = exporter.getFinishedSpans().find((s) => s.name === 'handle greet')!
const greeting = lines.find((l) => l['msg'] === 'greeting')!
assert.equal(greeting['traceId'], handler.spanContext().traceId)
assert.equal(greeting['spanId'], handler.spanContext().spanId)
// #endregion tree

// #region workflow
exporter.reset()
const wf = await orrery.workflows({ mesh })
wf.register('lookup', (id: string) => id.toUpperCase())
wf.define(workflow('welcome', sequence(step('lookup', { fn: 'lookup' }, { input: '$input' }), step('greet', { capability: 'greet' }, { input: '$steps.lookup' }))))
const run = await wf.start('welcome', 'ada')
assert.equal(await run.result(), 'hello ADA')
assert.deepEqual(tree(exporter.getFinishedSpans()), [
  'workflow welcome (INTERNAL)',
  '  step lookup (INTERNAL)',
  '  step greet (INTERNAL)',
  '    route greet (INTERNAL)', // under its step through the context manager
  '      request inbox.g1 (CLIENT)',
  '        process inbox.g1 (CONSUMER)',
  '          handle greet (INTERNAL)',
  '          ack inbox.g1 (CLIENT)',
])
// #endregion workflow

await mesh.shutdown()
orrery.close()
api.context.disable()
