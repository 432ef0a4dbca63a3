/**
 * Bad requests answer the one error shape with the right code and status, and change nothing:
 * wrong types and unknown fields (400), bodies too large or too deep (413), bad JSON (400), a
 * body that is not JSON (415), bad query strings (400), unknown routes (404) and methods (405).
 * An unexpected failure answers 500 INTERNAL without its message or stack. Also the options of
 * serveHttp itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { serveHttp } from '../../ts/http/index.js'
import { OrreryError } from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { errorOf } from '../helpers.js'
import { demo, type Demo, TOKENS } from './demo.js'

/** `depth` nested arrays around 1. */
function nested(depth: number): unknown {
  let value: unknown = 1
  for (let i = 0; i < depth; i++) value = [value]
  return value
}

describe(`bad requests (${ENGINE})`, () => {
  let d: Demo
  beforeAll(async () => {
    d = await demo()
  })
  afterAll(async () => {
    await d?.close()
  })

  async function expectError(response: Response, status: number, code: string): Promise<Record<string, unknown>> {
    expect(response.status).toBe(status)
    expect(response.headers.get('content-type')).toMatch(/^application\/json/)
    const body = (await response.json()) as { error: { code: string; message: string; details?: Record<string, unknown> } }
    expect(Object.keys(body)).toEqual(['error'])
    expect(body.error.code).toBe(code)
    expect(typeof body.error.message).toBe('string')
    expect(JSON.stringify(body)).not.toMatch(/\bat .*\.(ts|js):\d+/)
    return body.error
  }

  it('refuses publish bodies of the wrong shape, publishing nothing', async () => {
    const before = d.control.channel('orders').stats.published
    const post = (body: unknown) => d.call('POST', '/v1/channels/orders/messages', { token: TOKENS.write, body })
    for (const body of [
      {},
      { payload: 1, extra: true },
      { payload: 1, headers: { a: 1 } },
      { payload: 1, headers: 'x' },
      { payload: 1, ttl: '5' },
      { payload: 1, ttl: 0 },
      { payload: 1, ttl: 1.5 },
      { payload: 1, priority: 'urgent' },
      { payload: 1, key: '' },
      { payload: 1, key: 'é' },
      { payload: 1, key: 'k'.repeat(256) },
      { payload: 1, headers: { a: 'v'.repeat(16_384) } },
      [1],
      'text',
      null,
    ]) {
      const error = await expectError(await post(body), 400, 'INVALID_ARGUMENT')
      expect(error['details']).toMatchObject({ where: 'body' })
    }
    const extra = await expectError(await post({ payload: 1, extra: true }), 400, 'INVALID_ARGUMENT')
    expect(extra['message']).toBe('the body is invalid: /extra is not a known field')
    // A field of a few literals names them, once (not each literal's `const` and the `anyOf`).
    const priority = await expectError(await post({ payload: 1, priority: 'urgent' }), 400, 'INVALID_ARGUMENT')
    expect(priority['message']).toBe('the body is invalid: /priority must be one of "low", "normal", "high", "critical"')
    expect(priority['details']).toMatchObject({ issues: [{ path: '/priority', message: 'must be one of "low", "normal", "high", "critical"' }] })
    await expectError(await d.call('POST', '/v1/channels/orders/messages', { token: TOKENS.write }), 400, 'INVALID_ARGUMENT')
    await expectError(await d.call('POST', '/v1/channels/bad%20name/messages', { token: TOKENS.write, body: { payload: 1 } }), 400, 'INVALID_ARGUMENT')
    expect(d.control.channel('orders').stats.published).toBe(before)
  })

  it('refuses bodies too large or too deep with 413, and bad JSON with 400, writing nothing', async () => {
    const revision = d.store.revision
    const put = (raw: string, type = 'application/json') =>
      d.call('PUT', '/v1/namespaces/kv/entries/greeting', { token: TOKENS.write, raw, headers: { 'content-type': type } })
    await expectError(await put(JSON.stringify({ value: 'x'.repeat(1 << 20) })), 413, 'REQUEST_TOO_LARGE')
    const deep = await expectError(await put(JSON.stringify({ value: nested(32) })), 413, 'REQUEST_TOO_LARGE')
    expect(deep['details']).toEqual({ maxDepth: 32 })
    // Brackets inside strings do not count; 32 levels in all is the limit.
    expect((await put(JSON.stringify({ value: ['[[[[', nested(30)] }))).status).toBe(200)
    const notJson = await expectError(await put('{"value": 1'), 400, 'INVALID_ARGUMENT')
    expect(notJson['message']).toBe('the request body is not valid JSON')
    // Prototype keys at any depth, escaped or not, are refused with a message of their own.
    for (const raw of [
      '{"value": 1, "__proto__": {"x": 1}}',
      '{"value": [{"a": {"__proto__": 1}}]}',
      '{"value": {"\\u005f_proto__": 1}}',
      '{"value": {"constructor": {"prototype": {"x": 1}}}}',
      '\ufeff{"value": {"__proto__": 1}}',
    ]) {
      const refused = await expectError(await put(raw), 400, 'INVALID_ARGUMENT')
      expect(refused['message']).toMatch(/"__proto__".*prototype poisoning/)
    }
    // A key named constructor alone is data.
    expect((await put('{"value": {"constructor": "Ada"}}')).status).toBe(200)
    await expectError(await put('value=1', 'text/plain'), 415, 'INVALID_ARGUMENT')
    await expectError(await put(JSON.stringify({ value: 1, version: 2 })), 400, 'INVALID_ARGUMENT')
    await expectError(await put(JSON.stringify({})), 400, 'INVALID_ARGUMENT')
    // Two writes in all: the ones within the limits.
    expect(d.store.revision).toBe(revision + 2)
    expect(d.control.entry('kv', 'greeting').value).toEqual({ constructor: 'Ada' })
  })

  it('refuses bad run starts and signals, starting nothing', async () => {
    const runs = d.control.runs().length
    const start = (body: unknown) => d.call('POST', '/v1/runs', { token: TOKENS.write, body })
    await expectError(await start({ definition: 5 }), 400, 'INVALID_ARGUMENT')
    await expectError(await start({ definition: 'approve', id: 7 }), 400, 'INVALID_ARGUMENT')
    await expectError(await start({ definition: 'approve', when: 'now' }), 400, 'INVALID_ARGUMENT')
    await expectError(await start({ definition: 'nope' }), 404, 'WORKFLOW_NOT_FOUND')
    await expectError(await start({ definition: 'approve', id: 'a/e/0000000001' }), 400, 'INVALID_ARGUMENT')
    await expectError(await start({ definition: 'approve', id: 'x'.repeat(171) }), 400, 'INVALID_ARGUMENT')
    expect(d.control.runs()).toHaveLength(runs)
    expect((await start({ definition: 'approve', id: 'signalled' })).status).toBe(201)
    await expectError(await d.call('POST', '/v1/runs/signalled/signal', { token: TOKENS.write, body: { name: 'nope' } }), 404, 'SIGNAL_UNKNOWN')
    await expectError(await d.call('POST', '/v1/runs/none/signal', { token: TOKENS.write, body: { name: 'approve' } }), 404, 'RUN_NOT_FOUND')
    await expectError(await d.call('POST', '/v1/runs/none/signal', { token: TOKENS.write, body: { payload: 1 } }), 400, 'INVALID_ARGUMENT')
  })

  it("refuses publishing on Orrery's own orrery.* channels by the schema, which the OpenAPI document shows", async () => {
    const before = d.orrery.bus.channels()
    for (const name of ['orrery.registry', 'orrery.store.kv']) {
      const refused = await expectError(
        await d.call('POST', `/v1/channels/${name}/messages`, { token: TOKENS.admin, body: { payload: { forged: true } } }),
        400,
        'INVALID_ARGUMENT',
      )
      expect(refused['message']).toBe(
        "the params is invalid: /name does not have this field's form: ASCII letters, digits and . _ - : / * > (1 to 255), not starting with orrery. (Orrery's own channels take nothing from outside).",
      )
    }
    expect(d.orrery.bus.channels()).toEqual(before)
    // Only the prefix with its dot: a channel named orrery, or orreryx, is a channel like any other.
    for (const name of ['orrery', 'orreryx.a']) {
      expect((await d.call('POST', `/v1/channels/${name}/messages`, { token: TOKENS.write, body: { payload: 1 } })).status, name).toBe(201)
    }
    const doc = (await (await d.call('GET', '/openapi.json')).json()) as {
      paths: Record<string, Record<string, { parameters: Array<{ name: string; in: string; schema: Record<string, unknown> }> }>>
    }
    const parameter = (method: string) => doc.paths['/v1/channels/{name}/messages']?.[method]?.parameters.find((x) => x.in === 'path' && x.name === 'name')
    expect(parameter('post')?.schema).toMatchObject({ not: { pattern: '^orrery\\.' } })
    // Reading them stays open to a read token.
    expect(parameter('get')?.schema).not.toHaveProperty('not')
  })

  it('refuses bad query strings and path parameters', async () => {
    for (const query of ['limit=abc', 'limit=5000', 'limit=-1', 'limit=true', 'limit=1e2', 'from=x', 'nope=1', 'limit=1&limit=2']) {
      await expectError(await d.call('GET', `/v1/channels/orders/messages?${query}`, { token: TOKENS.read }), 400, 'INVALID_OPTION')
    }
    const status = await expectError(await d.call('GET', '/v1/runs?status=odd', { token: TOKENS.read }), 400, 'INVALID_OPTION')
    expect(status['message']).toMatch(/^the querystring is invalid: \/status must be one of "queued", "running", "completed", .*"compensation-failed"$/)
    await expectError(await d.call('GET', '/v1/discover', { token: TOKENS.read }), 400, 'INVALID_OPTION')
    // A long pattern is not quoted back.
    const query = await expectError(await d.call('GET', '/v1/discover?capability=%5E%5E', { token: TOKENS.read }), 400, 'INVALID_OPTION')
    expect(query['message']).toBe('the querystring is invalid: /capability does not have the form this field takes (its pattern is in /openapi.json)')
    await expectError(await d.call('GET', '/v1/channels/orders/tail?from=soon', { token: TOKENS.read }), 400, 'INVALID_OPTION')
    await expectError(await d.call('POST', '/v1/channels/jobs/dead-letters/x/replay', { token: TOKENS.admin }), 400, 'INVALID_ARGUMENT')
    await expectError(await d.call('GET', '/v1/channels/never-used', { token: TOKENS.read }), 404, 'UNKNOWN_CHANNEL')
    // A look at the dead letters of a name the bus does not know creates no channel or group.
    const channels = d.orrery.bus.channels().length
    await expectError(await d.call('GET', '/v1/channels/never-used/dead-letters', { token: TOKENS.read }), 404, 'UNKNOWN_CHANNEL')
    await expectError(await d.call('POST', '/v1/channels/never-used/dead-letters/0/discard', { token: TOKENS.admin }), 404, 'UNKNOWN_CHANNEL')
    expect(d.orrery.bus.channels().length).toBe(channels)
    await expectError(await d.call('GET', `/v1/namespaces/kv/entries/${'k'.repeat(257)}`, { token: TOKENS.read }), 400, 'INVALID_ARGUMENT')
    await expectError(await d.call('GET', `/v1/namespaces/kv/entries/${'k'.repeat(5000)}`, { token: TOKENS.read }), 400, 'INVALID_ARGUMENT')
    await expectError(await d.call('GET', '/v1/namespaces/kv/entries/%E0%A4%A', { token: TOKENS.read }), 400, 'INVALID_ARGUMENT')
    await expectError(await d.call('GET', '/v1/namespaces/none/entries', { token: TOKENS.read }), 404, 'UNKNOWN_NAMESPACE')
  })

  it('answers unknown routes 404 and unknown methods 405 with Allow', async () => {
    await expectError(await d.call('GET', '/v1/nothing', { token: TOKENS.read }), 404, 'NOT_FOUND')
    const wrong = await d.call('PATCH', '/v1/runs', { token: TOKENS.admin })
    expect(wrong.headers.get('allow')).toBe('GET, POST')
    await expectError(wrong, 405, 'UNSUPPORTED')
  })

  it('answers an unexpected failure 500 INTERNAL without its message', async () => {
    const registry = d.control.metrics as unknown as { metrics: () => Promise<string> }
    const original = registry.metrics
    registry.metrics = () => Promise.reject(new Error('disk /secret/path failed'))
    try {
      const error = await expectError(await d.call('GET', '/metrics', { token: TOKENS.read }), 500, 'INTERNAL')
      expect(error['message']).toBe('internal error')
      expect(error['details']).toBeUndefined()
    } finally {
      registry.metrics = original
    }
  })

  it("answers an Orrery error that is not the caller's 500 with its code alone", async () => {
    const registry = d.control.metrics as unknown as { metrics: () => Promise<string> }
    const original = registry.metrics
    registry.metrics = () => Promise.reject(new OrreryError('STORE_IO', 'cannot write /secret/path/store.db', { details: { path: '/secret/path/store.db' } }))
    try {
      const error = await expectError(await d.call('GET', '/metrics', { token: TOKENS.read }), 500, 'STORE_IO')
      expect(error['message']).toBe('internal error')
      expect(error['details']).toBeUndefined()
    } finally {
      registry.metrics = original
    }
  })

  it('refuses bad options of serveHttp before listening', async () => {
    const code = async (options: unknown) => (await errorOf(() => serveHttp(d.control, options as never)))?.code
    expect(await code({})).toBe('INVALID_OPTION')
    expect(await code({ tokens: {} })).toBe('INVALID_OPTION')
    expect(await code({ tokens: { short: ['read'] } })).toBe('INVALID_OPTION')
    expect(await code({ tokens: { 'long-enough-token': ['root'] } })).toBe('INVALID_OPTION')
    expect(await code({ tokens: { 'long-enough-token': [] } })).toBe('INVALID_OPTION')
    expect(await code({ auth: 'none', host: '0.0.0.0' })).toBe('INVALID_OPTION')
    expect(await code({ auth: 'none', tokens: { 'long-enough-token': ['read'] } })).toBe('INVALID_OPTION')
    expect(await code({ auth: 'none', port: 70000 })).toBe('INVALID_OPTION')
    expect(await code({ auth: 'none', bodyLimit: 0 })).toBe('INVALID_OPTION')
    expect(await code({ auth: 'none', maxStreams: 0 })).toBe('INVALID_OPTION')
    expect(await code({ auth: 'none', maxStreams: 1.5 })).toBe('INVALID_OPTION')
    expect(await code({ auth: 'none', hots: 'x' })).toBe('INVALID_OPTION')
    expect(await code({ auth: 'none', dashboard: '/no/such/dashboard' })).toBe('INVALID_OPTION')
    expect(await code({ auth: 'none', dashboard: import.meta.filename })).toBe('INVALID_OPTION')
    expect((await errorOf(() => serveHttp({} as never, { auth: 'none' })))?.code).toBe('INVALID_ARGUMENT')
    // The message never shows a token.
    const refused = await errorOf(() => serveHttp(d.control, { tokens: { 'secret-but-bad': ['root' as never] } }))
    expect(refused?.message).not.toContain('secret-but-bad')
  })
})
