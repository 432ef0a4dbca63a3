/**
 * The HTTP API's real behaviour over a demo Orrery, on both engines: publish then read, a tail
 * over SSE, dead letters listed, replayed and discarded, an agent paused and resumed, a run
 * started, signalled and cancelled, store entries written, read and deleted, metrics, health,
 * and a close that ends every event stream and frees the port.
 */
import { afterEach, describe, expect, it } from 'vitest'

import { ENGINE } from '../engine.js'
import { demo, type Demo, type Echo, TOKENS } from './demo.js'

const open: Demo[] = []
afterEach(async () => {
  for (const d of open.splice(0)) await d.close()
})

async function start(): Promise<Demo> {
  const d = await demo()
  open.push(d)
  return d
}

async function until(check: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const end = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** Reads server-sent events from a response until `count` events came. */
async function readEvents(response: Response, count: number): Promise<Array<{ event: string; data: unknown }>> {
  const reader = response.body!.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  const events: Array<{ event: string; data: unknown }> = []
  while (events.length < count) {
    const { value, done } = await reader.read()
    if (done) break
    buffer += decoder.decode(value, { stream: true })
    for (let at = buffer.indexOf('\n\n'); at >= 0; at = buffer.indexOf('\n\n')) {
      const frame = buffer.slice(0, at)
      buffer = buffer.slice(at + 2)
      const event = /^event: (.*)$/m.exec(frame)?.[1]
      const data = /^data: (.*)$/m.exec(frame)?.[1]
      if (event !== undefined && data !== undefined) events.push({ event, data: JSON.parse(data) })
    }
  }
  await reader.cancel()
  return events
}

describe(`HTTP API (${ENGINE})`, () => {
  it('publishes, reads the log and tails new messages over SSE', async () => {
    const d = await start()
    const published = await d.call('POST', '/v1/channels/orders/messages', { token: TOKENS.write, body: { payload: { n: 2 }, headers: { who: 'ann' } } })
    expect(published.status).toBe(201)
    expect(await published.json()).toMatchObject({ published: true })
    const page = await (await d.call('GET', '/v1/channels/orders/messages?from=0&limit=10', { token: TOKENS.read })).json()
    expect(page.map((m: { payload: unknown }) => m.payload)).toEqual([{ n: 1 }, { n: 2 }])
    expect(page[1].headers).toEqual({ who: 'ann' })
    expect((await (await d.call('GET', '/v1/channels/orders', { token: TOKENS.read })).json()).stats.published).toBe(2)

    const tail = await d.call('GET', '/v1/channels/orders/tail', { token: TOKENS.read })
    expect(tail.status).toBe(200)
    expect(tail.headers.get('content-type')).toMatch(/^text\/event-stream/)
    const events = readEvents(tail, 1)
    // Published after the tail connected.
    await new Promise((r) => setTimeout(r, 50))
    await d.call('POST', '/v1/channels/orders/messages', { token: TOKENS.write, body: { payload: 'late' } })
    const [first] = await events
    expect(first).toMatchObject({ event: 'message', data: { channel: 'orders', seq: 2, payload: 'late' } })
  })

  it('lists dead letters, replays one to its origin and discards another', async () => {
    const d = await start()
    await d.orrery.bus.publish('jobs', 'a')
    await d.orrery.bus.publish('jobs', 'b')
    await until(() => d.control.channels().some((c) => c.name === 'jobs.dead-letter' && c.stats.published === 2))
    const list = async () => (await d.call('GET', '/v1/channels/jobs/dead-letters', { token: TOKENS.read })).json()
    const dead = await list()
    expect(dead.map((m: { payload: unknown; reason: string }) => [m.payload, m.reason])).toEqual([
      ['a', 'refused by the demo'],
      ['b', 'refused by the demo'],
    ])
    const before = d.orrery.bus.stats('jobs').published
    const replay = await d.call('POST', `/v1/channels/jobs/dead-letters/${dead[0].seq}/replay`, { token: TOKENS.admin })
    expect(replay.status).toBe(200)
    expect(d.orrery.bus.stats('jobs').published).toBe(before + 1)
    // The replayed message is refused again by the demo's group: a new dead letter, the old one gone.
    await until(async () => (await list()).length === 2)
    const after = await list()
    expect(after.map((m: { seq: number }) => m.seq)).not.toContain(dead[0].seq)
    expect((await d.call('POST', `/v1/channels/jobs/dead-letters/${dead[1].seq}/discard`, { token: TOKENS.admin })).status).toBe(200)
    expect((await list()).map((m: { seq: number }) => m.seq)).toEqual([after[1].seq])
    const again = await d.call('POST', `/v1/channels/jobs/dead-letters/${dead[1].seq}/discard`, { token: TOKENS.admin })
    expect(again.status).toBe(404)
    expect((await again.json()).error.code).toBe('NOT_FOUND')
  })

  it('pauses and resumes an agent: messages wait while it is paused', async () => {
    const d = await start()
    const paused = await d.call('POST', '/v1/agents/echo-1/pause', { token: TOKENS.admin })
    expect(paused.status).toBe(200)
    expect((await paused.json()).state).toBe('paused')
    expect((await (await d.call('GET', '/v1/agents/echo-1', { token: TOKENS.read })).json()).health).toBe('paused')
    const agent = d.mesh.agent('echo-1')!.agent as Echo
    await d.orrery.bus.send('echo-1', 'queued', { kind: 'event' })
    await new Promise((r) => setTimeout(r, 50))
    expect(agent.seen).toEqual([])
    expect((await (await d.call('POST', '/v1/agents/echo-1/resume', { token: TOKENS.admin })).json()).state).toBe('running')
    await until(() => agent.seen.length === 1)
    const config = await d.call('POST', '/v1/agents/echo-1/config', { token: TOKENS.admin, body: { prefix: '#' } })
    expect(config.status).toBe(200)
    const found = await (await d.call('GET', '/v1/discover?capability=echo%40%5E1', { token: TOKENS.read })).json()
    expect(found.map((a: { id: string }) => a.id)).toEqual(['echo-1'])
    expect((await d.call('GET', '/v1/agents/nobody', { token: TOKENS.read })).status).toBe(404)
  })

  it('starts, signals and cancels a workflow run', async () => {
    const d = await start()
    const started = await d.call('POST', '/v1/runs', { token: TOKENS.write, body: { definition: 'approve', input: null, id: 'run-1' } })
    expect(started.status).toBe(201)
    expect(await started.json()).toMatchObject({ id: 'run-1', status: 'running' })
    const detail = await (await d.call('GET', '/v1/runs/run-1', { token: TOKENS.read })).json()
    expect(detail.definitionDoc.name).toBe('approve')
    expect((await d.call('POST', '/v1/runs/run-1/signal', { token: TOKENS.write, body: { name: 'approve', payload: { by: 'ann' } } })).status).toBe(200)
    await until(async () => (await (await d.call('GET', '/v1/runs/run-1', { token: TOKENS.read })).json()).status === 'completed')
    await d.call('POST', '/v1/runs', { token: TOKENS.write, body: { definition: 'approve', id: 'run-2' } })
    expect((await (await d.call('POST', '/v1/runs/run-2/cancel', { token: TOKENS.write })).json()).status).toBe('cancelled')
    const runs = await (await d.call('GET', '/v1/runs?status=completed', { token: TOKENS.read })).json()
    expect(runs.map((r: { id: string }) => r.id)).toEqual(['run-1'])
    expect((await (await d.call('GET', '/v1/workflows', { token: TOKENS.read })).json())[0].name).toBe('approve')
    const missing = await d.call('POST', '/v1/runs', { token: TOKENS.write, body: { definition: 'nope' } })
    expect(missing.status).toBe(404)
  })

  it('writes, reads and deletes store entries', async () => {
    const d = await start()
    const put = await d.call('PUT', '/v1/namespaces/kv/entries/a%2Fb', { token: TOKENS.write, body: { value: { x: 1 } } })
    expect(put.status).toBe(200)
    expect(await put.json()).toMatchObject({ key: 'a/b', value: { x: 1 } })
    expect((await (await d.call('GET', '/v1/namespaces/kv/entries/a%2Fb', { token: TOKENS.read })).json()).value).toEqual({ x: 1 })
    expect((await (await d.call('GET', '/v1/namespaces/kv/entries?prefix=a', { token: TOKENS.read })).json()).map((e: { key: string }) => e.key)).toEqual([
      'a/b',
    ])
    expect((await d.call('DELETE', '/v1/namespaces/kv/entries/a%2Fb', { token: TOKENS.write })).status).toBe(200)
    expect((await d.call('GET', '/v1/namespaces/kv/entries/a%2Fb', { token: TOKENS.read })).status).toBe(404)
    const namespaces = await (await d.call('GET', '/v1/namespaces', { token: TOKENS.read })).json()
    expect(namespaces.map((n: { name: string }) => n.name)).toContain('kv')
  })

  it('serves health, readiness, metrics, the overview and a snapshot', async () => {
    const d = await start()
    expect(await (await d.call('GET', '/healthz')).json()).toEqual({ ok: true })
    expect((await (await d.call('GET', '/readyz')).json()).ready).toBe(true)
    const metrics = await d.call('GET', '/metrics', { token: TOKENS.read })
    expect(metrics.status).toBe(200)
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/)
    expect(await metrics.text()).toMatch(/orrery_/)
    const overview = await (await d.call('GET', '/v1/overview', { token: TOKENS.read })).json()
    expect(overview).toMatchObject({ engine: ENGINE, agents: { total: 1 } })
    const snapshot = await (await d.call('GET', '/v1/snapshot', { token: TOKENS.read })).json()
    expect(snapshot.agents.map((a: { id: string }) => a.id)).toEqual(['echo-1'])
  })

  it('streams control events over SSE', async () => {
    const d = await start()
    const response = await d.call('GET', '/v1/events', { token: TOKENS.read })
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/)
    const events = readEvents(response, 2)
    await new Promise((r) => setTimeout(r, 50))
    await d.call('POST', '/v1/agents/echo-1/pause', { token: TOKENS.admin })
    // Its health changes to paused, then the mesh says it paused.
    expect(await events).toEqual([
      {
        event: 'control',
        data: expect.objectContaining({ source: 'mesh', event: expect.objectContaining({ type: 'health', agent: 'echo-1', to: 'paused' }) }),
      },
      { event: 'control', data: expect.objectContaining({ source: 'mesh', event: expect.objectContaining({ type: 'paused', agent: 'echo-1' }) }) },
    ])
  })

  it('refuses the event stream past maxStreams with 429 CAPACITY_EXCEEDED, and takes one again once one ends', async () => {
    const d = await demo({ maxStreams: 2 })
    open.push(d)
    const stream = (path: string) => d.call('GET', path, { token: TOKENS.read })
    const tail = await stream('/v1/channels/orders/tail')
    const events = await stream('/v1/events')
    expect([tail.status, events.status]).toEqual([200, 200])
    for (const path of ['/v1/channels/orders/tail', '/v1/events']) {
      const refused = await stream(path)
      expect(refused.status).toBe(429)
      expect(refused.headers.get('content-type')).toMatch(/^application\/json/)
      expect(await refused.json()).toEqual({
        error: { code: 'CAPACITY_EXCEEDED', message: expect.stringMatching(/2 event streams open/), details: { maxStreams: 2 } },
      })
    }
    // Requests that are not streams are not counted.
    expect((await d.call('GET', '/v1/overview', { token: TOKENS.read })).status).toBe(200)
    // A stream the client ends frees its place.
    await tail.body?.cancel()
    let again: Response | undefined
    await until(async () => {
      again = await stream('/v1/channels/orders/tail')
      return again.status === 200
    })
    expect(again?.headers.get('content-type')).toMatch(/^text\/event-stream/)
    // The OpenAPI document says so.
    const doc = await (await d.call('GET', '/openapi.json')).json()
    for (const path of ['/v1/events', '/v1/channels/{name}/tail']) {
      expect(doc.paths[path].get.responses['429'].description, path).toMatch(/CAPACITY_EXCEEDED/)
    }
  })

  it('ends the event stream when the Orrery closes under a server still open', async () => {
    const d = await demo()
    const events = await d.call('GET', '/v1/events', { token: TOKENS.read })
    const ended = events.text()
    d.orrery.close()
    const outcome = await Promise.race([ended.then(() => 'ended'), new Promise((resolve) => setTimeout(() => resolve('still open'), 2000))])
    expect(outcome).toBe('ended')
    await d.server.close()
  })

  it('close ends every event stream and frees the port', async () => {
    const d = await demo()
    const events = await d.call('GET', '/v1/events', { token: TOKENS.read })
    const tail = await d.call('GET', '/v1/channels/orders/tail', { token: TOKENS.read })
    const ended = Promise.all([events.text(), tail.text()])
    const started = Date.now()
    await d.server.close()
    await ended
    expect(Date.now() - started).toBeLessThan(2000)
    // The port is free: a new server listens on it.
    const again = await (await import('../../ts/http/index.js')).serveHttp(d.control, { auth: 'none', port: d.server.port })
    expect(again.port).toBe(d.server.port)
    await again.close()
    d.orrery.close()
  })
})
