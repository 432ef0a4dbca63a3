/**
 * The authorization matrix: every route of the served OpenAPI document against no token, an
 * unknown token, and a token of each scope, answers exactly as the contract's table says (401,
 * 403, or past authorization: a 2xx, or a 4xx from the request itself). The route list read from
 * the document must equal the table, so a route added without a row here fails.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { ROUTES } from '../../ts/http/index.js'
import { ENGINE } from '../engine.js'
import { demo, type Demo, TOKENS } from './demo.js'

type Need = 'none' | 'read' | 'write' | 'admin'

/** The contract's table (helpers' s4-contract.md, "HTTP API"), one row per method and path. */
const TABLE: Record<string, Need> = {
  'GET /healthz': 'none',
  'GET /readyz': 'none',
  'GET /metrics': 'read',
  'GET /v1/overview': 'read',
  'GET /v1/agents': 'read',
  'GET /v1/agents/{id}': 'read',
  'POST /v1/agents/{id}/pause': 'admin',
  'POST /v1/agents/{id}/resume': 'admin',
  'POST /v1/agents/{id}/stop': 'admin',
  'POST /v1/agents/{id}/config': 'admin',
  'GET /v1/discover': 'read',
  'GET /v1/channels': 'read',
  'GET /v1/channels/{name}': 'read',
  'GET /v1/channels/{name}/messages': 'read',
  'GET /v1/channels/{name}/tail': 'read',
  'POST /v1/channels/{name}/messages': 'write',
  'GET /v1/groups': 'read',
  'GET /v1/channels/{name}/dead-letters': 'read',
  'POST /v1/channels/{name}/dead-letters/{seq}/replay': 'admin',
  'POST /v1/channels/{name}/dead-letters/{seq}/discard': 'admin',
  'GET /v1/namespaces': 'read',
  'GET /v1/namespaces/{ns}/entries': 'read',
  'GET /v1/namespaces/{ns}/entries/{key}': 'read',
  'PUT /v1/namespaces/{ns}/entries/{key}': 'write',
  'DELETE /v1/namespaces/{ns}/entries/{key}': 'write',
  'GET /v1/workflows': 'read',
  'GET /v1/runs': 'read',
  'GET /v1/runs/{id}': 'read',
  'POST /v1/runs': 'write',
  'POST /v1/runs/{id}/signal': 'write',
  'POST /v1/runs/{id}/cancel': 'write',
  'GET /v1/events': 'read',
  'GET /v1/snapshot': 'read',
}

/** A concrete URL and a body for each route (what a caller with the scope would send). */
function requestOf(method: string, path: string): { url: string; body?: unknown } {
  const url = path
    .replace('{id}', path.startsWith('/v1/runs') ? 'run-1' : 'echo-1')
    .replace('{name}', 'orders')
    .replace('{seq}', '0')
    .replace('{ns}', 'kv')
    .replace('{key}', 'greeting')
  const query = path === '/v1/discover' ? '?capability=echo' : ''
  const bodies: Record<string, unknown> = {
    'POST /v1/agents/{id}/config': { prefix: '>' },
    'POST /v1/channels/{name}/messages': { payload: 1 },
    'PUT /v1/namespaces/{ns}/entries/{key}': { value: 'hi' },
    'POST /v1/runs': { definition: 'approve', id: 'run-1' },
    'POST /v1/runs/{id}/signal': { name: 'approve', payload: 1 },
  }
  const body = bodies[`${method} ${path}`]
  return body === undefined ? { url: url + query } : { url: url + query, body }
}

const RANK = { none: 0, read: 1, write: 2, admin: 3 } as const
const CALLERS = [
  { name: 'no token', token: undefined, rank: -1 },
  { name: 'an unknown token', token: 'not-a-known-token', rank: -1 },
  { name: 'read', token: TOKENS.read, rank: 1 },
  { name: 'write', token: TOKENS.write, rank: 2 },
  { name: 'admin', token: TOKENS.admin, rank: 3 },
] as const

describe(`authorization matrix (${ENGINE})`, () => {
  let d: Demo
  let operations: string[]
  beforeAll(async () => {
    d = await demo()
    const doc = (await (await d.call('GET', '/openapi.json')).json()) as { paths: Record<string, Record<string, unknown>> }
    operations = Object.entries(doc.paths).flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`))
  })
  afterAll(async () => {
    await d?.close()
  })

  it('the served document lists exactly the routes of the table, with the scopes of the table', () => {
    expect([...operations].sort()).toEqual(Object.keys(TABLE).sort())
    expect(Object.fromEntries(ROUTES.map((r) => [`${r.method} ${r.path}`, r.need]))).toEqual(TABLE)
  })

  it('answers each route for each caller as the table says', async () => {
    const outcomes: string[] = []
    const wrong: string[] = []
    for (const operation of operations) {
      const [method, path] = operation.split(' ') as [string, string]
      const need = TABLE[operation]!
      const { url, body } = requestOf(method, path)
      for (const caller of CALLERS) {
        const controller = new AbortController()
        const response = await fetch(`${d.server.url}${url}`, {
          method,
          signal: controller.signal,
          headers: {
            ...(caller.token === undefined ? {} : { authorization: `Bearer ${caller.token}` }),
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        })
        const type = response.headers.get('content-type') ?? ''
        // An event stream never ends: its status and headers are the answer.
        const json = type.startsWith('application/json') ? await response.json() : undefined
        controller.abort()
        const expected = need === 'none' ? 'pass' : caller.rank < 0 ? 401 : caller.rank < RANK[need] ? 403 : 'pass'
        const ok =
          expected === 'pass'
            ? response.status < 500 && response.status !== 401 && response.status !== 403 && (response.status < 300 || json?.error?.code !== undefined)
            : response.status === expected && json?.error?.code === (expected === 401 ? 'UNAUTHORIZED' : 'FORBIDDEN')
        outcomes.push(`${operation} ${caller.name}: ${response.status}`)
        if (!ok) wrong.push(`${operation} with ${caller.name}: expected ${expected}, got ${response.status} ${JSON.stringify(json)}`)
      }
    }
    expect(wrong).toEqual([])
    expect(outcomes).toHaveLength(Object.keys(TABLE).length * CALLERS.length)
  })

  it('refuses a malformed Authorization header and a token in another scheme', async () => {
    for (const header of ['Bearer', `Basic ${TOKENS.admin}`, `Bearer ${TOKENS.admin} extra`, `bearer  ${TOKENS.admin}x`]) {
      const response = await fetch(`${d.server.url}/v1/overview`, { headers: { authorization: header } })
      expect(response.status).toBe(401)
    }
    expect((await fetch(`${d.server.url}/v1/overview`, { headers: { authorization: `bearer ${TOKENS.read}` } })).status).toBe(200)
  })
})
