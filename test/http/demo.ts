/**
 * A demo Orrery for the HTTP API's tests: a mesh with one agent, a store with a namespace, a
 * workflow waiting for a signal, a group that dead-letters what it is given, and a prom-client
 * registry; served with one token per scope.
 */
import { Registry } from 'prom-client'

import { serveHttp, type HttpOptions, type HttpServer } from '../../ts/http/index.js'
import { Agent, type AgentContext, type Control, type Mesh, Orrery, type Store, sequence, step, waitFor, workflow } from '../../ts/node.js'

export const TOKENS = { read: 'read-token-0001', write: 'write-token-0001', admin: 'admin-token-0001' } as const

export class Echo extends Agent<{ prefix?: string }> {
  static readonly capabilities = [{ name: 'echo', version: '1.0.0' }]
  seen: unknown[] = []
  constructor(context: AgentContext<{ prefix?: string }>) {
    super(context)
    this.handle('echo', (text: unknown) => `${this.config.prefix ?? ''}${String(text)}`)
    this.on('event', (payload: unknown) => {
      this.seen.push(payload)
    })
  }
}

export interface Demo {
  orrery: Orrery
  mesh: Mesh
  store: Store<false>
  control: Control
  server: HttpServer
  /** fetch against the server with a token (or none). */
  call(method: string, path: string, options?: { token?: string; body?: unknown; raw?: string; headers?: Record<string, string> }): Promise<Response>
  close(): Promise<void>
}

export async function demo(options: Partial<HttpOptions> = {}): Promise<Demo> {
  const orrery = await Orrery.create()
  const metrics = new Registry()
  const mesh = await orrery.mesh({ metrics })
  mesh.define('echo', Echo)
  await mesh.spawn('echo', { id: 'echo-1', config: { prefix: '>' } })
  const store = orrery.openStore()
  store.namespace('kv').put('greeting', 'hello')
  const wf = await orrery.workflows({ store, mesh })
  wf.register('echo', (input: unknown) => input)
  wf.define(workflow('approve', sequence(waitFor('ok', 'approve'), step('done', { fn: 'echo' }, { input: '$steps.ok' }))))
  // A group that refuses what it is given: each message goes to jobs.dead-letter.
  orrery.bus
    .group('jobs', 'workers')
    .join()
    .subscribe((d) => d.nack({ deadLetter: 'refused by the demo' }))
  await orrery.bus.publish('orders', { n: 1 })
  const control = orrery.control({ mesh, workflows: wf, store, metrics })
  const server = await serveHttp(control, {
    tokens: { [TOKENS.read]: ['read'], [TOKENS.write]: ['write'], [TOKENS.admin]: ['admin'] },
    ...options,
  })
  return {
    orrery,
    mesh,
    store,
    control,
    server,
    call: (method, path, o = {}) =>
      fetch(`${server.url}${path}`, {
        method,
        headers: {
          ...(o.token === undefined ? {} : { authorization: `Bearer ${o.token}` }),
          ...(o.body === undefined && o.raw === undefined ? {} : { 'content-type': 'application/json' }),
          ...o.headers,
        },
        ...(o.raw !== undefined ? { body: o.raw } : o.body === undefined ? {} : { body: JSON.stringify(o.body) }),
      }),
    close: async () => {
      await server.close()
      orrery.close()
    },
  }
}
