// Prometheus metrics in a prom-client registry. Run by test/examples.test.ts on both engines;
// the regions are the code blocks of docs/observability.md.
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

import { Agent, type AgentContext, Orrery, step, workflow } from 'orrery'
import { Registry } from 'prom-client'

class Pricer extends Agent {
  static readonly capabilities = [{ name: 'price', version: '1.0.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle<{ sku: string }, number>('price', ({ sku }) => sku.length * 10)
  }
}

// #region setup
const registry = new Registry()
// The bus, its groups and transports report into `registry`; so do the meshes and workflows
// opened on this Orrery (a mesh given `metrics` of its own reports there instead).
const orrery = await Orrery.create({ metrics: { registry, maxChannels: 100 } })
const mesh = await orrery.mesh()
mesh.define('pricer', Pricer)
await mesh.spawn('pricer', { replicas: 2 })
const workflows = await orrery.workflows({ mesh })
workflows.register('ship', (price: number) => ({ shipped: price > 0 }))
workflows.define(workflow('order', step('ship', { fn: 'ship' }, { input: '$input' })))

const billing = orrery.bus.group<{ sku: string }>('orders', 'billing')
billing.consume(async (d) => {
  const price = await mesh.request<number>('price', d.message.payload)
  await (await workflows.start('order', price.payload)).result()
})
await orrery.bus.publish('orders', { sku: 'A-1' })
// #endregion

// #region serve
// Any HTTP server can expose the registry; the HTTP API (docs/http.md) serves it at /metrics.
const server = createServer(async (_request, response) => {
  response.setHeader('Content-Type', registry.contentType)
  response.end(await registry.metrics())
})
await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening))
const { port } = server.address() as AddressInfo

// What Prometheus would scrape, once the order went through:
let text = ''
for (let i = 0; i < 100 && !text.includes('orrery_workflow_runs{workflow="order",status="completed"} 1'); i++) {
  await new Promise((tick) => setTimeout(tick, 10))
  text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
}
// #endregion

assert.match(text, /messaging_client_sent_messages_total\{messaging_system="orrery",messaging_operation_name="publish",messaging_destination_name="orders"\} 1/)
assert.match(text, /orrery_group_messages_total\{channel="orders",group="billing",event="acked"\} 1/)
assert.match(text, /orrery_mesh_request_duration_seconds_count\{capability="price",outcome="ok"\} 1/)
assert.match(text, /orrery_agents\{type="pricer",health="healthy"\} 2/)
assert.match(text, /orrery_workflow_step_duration_seconds_count\{workflow="order",step="ship",outcome="ok"\} 1/)
server.close()
orrery.close()
