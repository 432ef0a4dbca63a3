/**
 * Tracing across processes (docs/observability.md): a request from this process reaches a child
 * process (test/fixtures/traced-peer.mjs, on the TypeScript under test) through Redis and through
 * NATS; each process traces into an SDK of its own, so only the W3C trace context the message
 * headers carry through the broker can link the two sides. The child's spans must continue this
 * process's trace: its delivery is the child of the request span made here, and what its handler
 * publishes comes back here under the same trace.
 */

import { fileURLToPath } from 'node:url'

import * as api from '@opentelemetry/api'
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { afterEach, describe, expect, inject, it } from 'vitest'

import { Orrery, type Message } from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { BACKENDS } from './backends.js'
import { type Child, spawnChild } from './child.js'

const fixture = fileURLToPath(new URL('../fixtures/traced-peer.mjs', import.meta.url))

interface PeerSpan {
  name: string
  kind: number
  traceId: string
  spanId: string
  parentSpanId: string | undefined
  attributes: Record<string, unknown>
}

type PeerLine = { event: string; spans?: PeerSpan[] }
const peers: Array<Child<PeerLine>> = []
const opened: Orrery[] = []
const spawnPeer = (args: string[]): Child<PeerLine> => spawnChild(fixture, args, peers)

for (const backend of BACKENDS.filter((b) => b.name === 'redis' || b.name === 'nats')) {
  const kind = backend.name as 'redis' | 'nats'
  const title = `tracing across processes over ${kind} (${ENGINE})${backend.skip ? ` [skipped: ${backend.skip}]` : ''}`
  describe.skipIf(backend.skip !== undefined)(title, { timeout: 120_000 }, () => {
    afterEach(async () => {
      for (const orrery of opened.splice(0)) await orrery.shutdown()
      for (const peer of peers.splice(0)) if (peer.proc.exitCode === null) peer.proc.kill('SIGKILL')
    })

    it('carries the trace context through the broker: the peer’s spans continue the caller’s trace', async () => {
      if (backend.broken !== undefined) throw new Error(backend.broken)
      const url = kind === 'redis' ? inject('redisUrl') : inject('natsUrl')
      const prefix = `trace-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}.`
      const exporter = new InMemorySpanExporter()
      const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
      const transport = kind === 'redis' ? { kind, url: url! } : { kind, servers: url! }
      const orrery = await Orrery.create({
        engine: ENGINE,
        tracing: { api, tracer: provider.getTracer('caller') },
        transports: { main: transport },
        bindings: { [`${prefix}*`]: 'main' },
      })
      opened.push(orrery)
      const echoed = new Promise<Message>((resolve) => {
        orrery.bus.subscribe(`${prefix}echo`, { from: 'earliest' }).subscribe(resolve)
      })
      const peer = spawnPeer([kind, url!, prefix])
      await peer.next('ready', 60_000)
      const reply = await orrery.bus.request<number>(`${prefix}rpc`, { n: 21 }, { timeout: 20_000 })
      expect(reply.payload).toBe(42)
      const echo = await echoed
      peer.proc.stdin!.write('stop\n')
      const remote = (await peer.next('spans', 30_000)).spans!
      const local = exporter.getFinishedSpans()
      const named = <S extends { name: string }>(spans: S[], name: string): S => {
        const found = spans.filter((s) => s.name === name)
        expect(
          found.map((s) => s.name),
          `${name} among ${spans.map((s) => s.name).join(', ')}`,
        ).toEqual([name])
        return found[0]!
      }
      const request = named<ReadableSpan>(local, `request ${prefix}rpc`)
      const traceId = request.spanContext().traceId
      expect(request.attributes['messaging.system']).toBe(kind)
      // The peer's delivery continues the request; its answer and what it published sit under it.
      const process = named(remote, `process ${prefix}rpc`)
      expect(process).toMatchObject({ traceId, parentSpanId: request.spanContext().spanId, kind: api.SpanKind.CONSUMER })
      expect(process.attributes).toMatchObject({ 'messaging.system': kind, 'messaging.consumer.group.name': 'peers' })
      const respond = named(remote, `respond ${prefix}rpc`)
      expect(respond).toMatchObject({ traceId, parentSpanId: process.spanId, kind: api.SpanKind.SERVER })
      // Published from the async handler: without a context manager the active context is the root,
      // so the peer's send starts a trace of its own, which this side's delivery continues.
      const send = named(remote, `send ${prefix}echo`)
      const received = named<ReadableSpan>(local, `process ${prefix}echo`)
      expect(received.spanContext().traceId).toBe(send.traceId)
      expect(received.parentSpanContext?.spanId).toBe(send.spanId)
      expect(echo.headers['traceparent']).toBe(`00-${send.traceId}-${send.spanId}-01`)
      expect(named(remote, `ack ${prefix}rpc`).parentSpanId).toBe(process.spanId)
    })
  })
}
