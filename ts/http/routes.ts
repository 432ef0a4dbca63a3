/**
 * The HTTP API's routes: each a method, a path, the scope it needs, its schemas and the Control
 * call it makes. `ROUTES` is the authorization table as data (docs/http.md prints it; the
 * tests check every route of the served OpenAPI document against it).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Static, TSchema } from 'typebox'

import type { Control } from '../control/control.js'
import type { Health } from '../agents/registry.js'
import { OrreryError } from '../errors.js'
import type { Need } from './auth.js'
import { Body, ErrorBody, Params, Query, Reply, TooManyStreams, textReply } from './schemas.js'
import type { EventStreams } from './sse.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The scope the route needs. */
    need?: Need
  }
}

/** The HTTP methods the API's routes use. */
export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE'

/** One route of the table. */
export interface RouteSpec {
  readonly method: Method
  /** The path as the OpenAPI document writes it (`/v1/agents/{id}`). */
  readonly path: string
  readonly need: Need
}

interface Route extends RouteSpec {
  readonly operationId: string
  readonly summary: string
  readonly tag: string
  readonly params?: TSchema
  readonly query?: TSchema
  readonly body?: TSchema
  /** The success status and what it carries (a schema, or a text reply's description). */
  readonly ok: TSchema | ReturnType<typeof textReply>
  readonly status?: number
  readonly extra?: Record<number, TSchema>
  readonly handler: (control: Control, request: FastifyRequest, reply: FastifyReply, streams: EventStreams) => unknown
}

/** The values of a request part, as its schema says (checked before the handler runs). */
function part<S extends TSchema>(value: unknown, _schema: S): Static<S> {
  return value as Static<S>
}

const p = <S extends TSchema>(request: FastifyRequest, schema: S) => part(request.params, schema)
const q = <S extends TSchema>(request: FastifyRequest, schema: S) => part(request.query ?? {}, schema)
const b = <S extends TSchema>(request: FastifyRequest, schema: S) => part(request.body, schema)

/** Leaves out undefined fields (Control refuses none, but its options read cleaner so). */
function defined<T extends Record<string, unknown>>(value: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as { [K in keyof T]?: Exclude<T[K], undefined> }
}

const ROUTE_LIST: readonly Route[] = [
  // ---- health ----
  {
    method: 'GET',
    path: '/healthz',
    need: 'none',
    operationId: 'health',
    summary: 'Liveness: the process answers.',
    tag: 'health',
    ok: Reply.health,
    handler: (c) => c.health(),
  },
  {
    method: 'GET',
    path: '/readyz',
    need: 'none',
    operationId: 'ready',
    summary: 'Readiness: the engine open, every transport connected, the store open (503 when not).',
    tag: 'health',
    ok: Reply.ready,
    extra: { 503: Reply.ready },
    handler: (c, _req, reply) => {
      const ready = c.ready()
      if (!ready.ready) reply.code(503)
      return ready
    },
  },
  {
    method: 'GET',
    path: '/metrics',
    need: 'read',
    operationId: 'metrics',
    summary: 'Prometheus metrics of the registry given to the control (501 without one).',
    tag: 'health',
    ok: textReply('text/plain', 'Prometheus text exposition format.'),
    handler: async (c, _req, reply) => {
      const registry = c.metrics as { metrics?: () => Promise<string>; contentType?: string } | undefined
      if (registry === undefined || typeof registry.metrics !== 'function') {
        throw new OrreryError('UNSUPPORTED', 'no metrics registry is attached to this control (orrery.control({ metrics }))', { details: { part: 'metrics' } })
      }
      const text = await registry.metrics()
      reply.type(registry.contentType ?? 'text/plain; version=0.0.4; charset=utf-8')
      return text
    },
  },
  {
    method: 'GET',
    path: '/v1/overview',
    need: 'read',
    operationId: 'overview',
    summary: 'Counts of everything.',
    tag: 'overview',
    ok: Reply.overview,
    handler: (c) => c.overview(),
  },
  {
    method: 'GET',
    path: '/v1/snapshot',
    need: 'read',
    operationId: 'snapshot',
    summary: 'Everything at once: what the dashboard opens offline.',
    tag: 'overview',
    ok: Reply.snapshot,
    handler: (c) => c.snapshot(),
  },
  {
    method: 'GET',
    path: '/v1/events',
    need: 'read',
    operationId: 'events',
    summary: 'Mesh events, bus events and run status changes as server-sent events (`event: control`).',
    tag: 'overview',
    ok: textReply('text/event-stream', 'Server-sent events; each `data` a ControlEvent.'),
    extra: { 429: TooManyStreams },
    handler: (c, req, reply, streams) => streams.send(req, reply, c.events(), 'control'),
  },
  // ---- agents ----
  {
    method: 'GET',
    path: '/v1/agents',
    need: 'read',
    operationId: 'agents',
    summary: 'Every agent known.',
    tag: 'agents',
    ok: Reply.agents,
    handler: (c) => c.agents(),
  },
  {
    method: 'GET',
    path: '/v1/agents/{id}',
    need: 'read',
    operationId: 'agent',
    summary: 'One agent.',
    tag: 'agents',
    params: Params.id,
    ok: Reply.agent,
    handler: (c, req) => c.agent(p(req, Params.id).id),
  },
  ...(['pause', 'resume', 'stop'] as const).map(
    (action): Route => ({
      method: 'POST',
      path: `/v1/agents/{id}/${action}`,
      need: 'admin',
      operationId: `${action}Agent`,
      summary: `${action[0]!.toUpperCase()}${action.slice(1)}s an agent of this process.`,
      tag: 'agents',
      params: Params.id,
      ok: Reply.agent,
      handler: (c, req) => {
        const { id } = p(req, Params.id)
        return action === 'pause' ? c.pauseAgent(id) : action === 'resume' ? c.resumeAgent(id) : c.stopAgent(id)
      },
    }),
  ),
  {
    method: 'POST',
    path: '/v1/agents/{id}/config',
    need: 'admin',
    operationId: 'reconfigureAgent',
    summary: "Applies configuration values over an agent's (INVALID_CONFIG lists every issue; the old one stays).",
    tag: 'agents',
    params: Params.id,
    body: Body.config,
    ok: Reply.agent,
    handler: (c, req) => c.reconfigureAgent(p(req, Params.id).id, b(req, Body.config)),
  },
  {
    method: 'GET',
    path: '/v1/discover',
    need: 'read',
    operationId: 'discover',
    summary: 'The agents a capability query finds, as routing would pick them.',
    tag: 'agents',
    query: Query.discover,
    ok: Reply.agents,
    handler: (c, req) => {
      const { capability, tags, minHealth } = q(req, Query.discover)
      const tagList = tags === undefined || tags === '' ? undefined : tags.split(',')
      return c.discover({ capability, ...defined({ tags: tagList, minHealth: minHealth as Health | undefined }) })
    },
  },
  // ---- channels ----
  {
    method: 'GET',
    path: '/v1/channels',
    need: 'read',
    operationId: 'channels',
    summary: 'Every channel the bus knows, with its counters.',
    tag: 'channels',
    ok: Reply.channels,
    handler: (c) => c.channels(),
  },
  {
    method: 'GET',
    path: '/v1/channels/{name}',
    need: 'read',
    operationId: 'channel',
    summary: 'One channel.',
    tag: 'channels',
    params: Params.name,
    ok: Reply.channel,
    handler: (c, req) => c.channel(p(req, Params.name).name),
  },
  {
    method: 'GET',
    path: '/v1/channels/{name}/messages',
    need: 'read',
    operationId: 'messages',
    summary: 'A page of the retained log, oldest first.',
    tag: 'channels',
    params: Params.name,
    query: Query.messages,
    ok: Reply.messages,
    handler: (c, req) => c.messages(p(req, Params.name).name, defined(q(req, Query.messages))),
  },
  {
    method: 'POST',
    path: '/v1/channels/{name}/messages',
    need: 'write',
    operationId: 'publish',
    summary: 'Publishes a message (JSON payload).',
    tag: 'channels',
    params: Params.publish,
    body: Body.publish,
    ok: Reply.published,
    status: 201,
    handler: (c, req) => {
      const { payload, ...options } = b(req, Body.publish)
      return c.publish(p(req, Params.publish).name, payload, defined(options))
    },
  },
  {
    method: 'GET',
    path: '/v1/channels/{name}/tail',
    need: 'read',
    operationId: 'tail',
    summary: 'The messages of a channel as they come, as server-sent events (`event: message`).',
    tag: 'channels',
    params: Params.name,
    query: Query.tail,
    ok: textReply('text/event-stream', 'Server-sent events; each `data` a MessageView.'),
    extra: { 429: TooManyStreams },
    handler: (c, req, reply, streams) => {
      const { from } = q(req, Query.tail)
      const start: 'latest' | 'earliest' | number | undefined = from === undefined || from === 'latest' || from === 'earliest' ? from : Number(from)
      streams.send(req, reply, c.tail(p(req, Params.name).name, defined({ from: start })), 'message')
    },
  },
  // ---- groups and dead letters ----
  {
    method: 'GET',
    path: '/v1/groups',
    need: 'read',
    operationId: 'groups',
    summary: "The bus's consumer groups.",
    tag: 'groups',
    ok: Reply.groups,
    handler: (c) => c.groups(),
  },
  {
    method: 'GET',
    path: '/v1/channels/{name}/dead-letters',
    need: 'read',
    operationId: 'deadLetters',
    summary: 'Dead letters of a channel not replayed or discarded, oldest first.',
    tag: 'groups',
    params: Params.name,
    query: Query.limit,
    ok: Reply.deadLetters,
    handler: (c, req) => c.deadLetters(p(req, Params.name).name, defined(q(req, Query.limit))),
  },
  {
    method: 'POST',
    path: '/v1/channels/{name}/dead-letters/{seq}/replay',
    need: 'admin',
    operationId: 'replayDeadLetter',
    summary: 'Publishes a dead letter again on the channel it came from, then settles it.',
    tag: 'groups',
    params: Params.nameSeq,
    ok: Reply.replayed,
    handler: (c, req) => {
      const { name, seq } = p(req, Params.nameSeq)
      return c.replayDeadLetter(name, seq)
    },
  },
  {
    method: 'POST',
    path: '/v1/channels/{name}/dead-letters/{seq}/discard',
    need: 'admin',
    operationId: 'discardDeadLetter',
    summary: 'Settles a dead letter without publishing it.',
    tag: 'groups',
    params: Params.nameSeq,
    ok: Reply.discarded,
    handler: (c, req) => {
      const { name, seq } = p(req, Params.nameSeq)
      return c.discardDeadLetter(name, seq)
    },
  },
  // ---- store ----
  {
    method: 'GET',
    path: '/v1/namespaces',
    need: 'read',
    operationId: 'namespaces',
    summary: 'The namespaces open on the store.',
    tag: 'store',
    ok: Reply.namespaces,
    handler: (c) => c.namespaces(),
  },
  {
    method: 'GET',
    path: '/v1/namespaces/{ns}/entries',
    need: 'read',
    operationId: 'entries',
    summary: 'Entries of a namespace, in key order.',
    tag: 'store',
    params: Params.ns,
    query: Query.entries,
    ok: Reply.entries,
    handler: (c, req) => c.entries(p(req, Params.ns).ns, defined(q(req, Query.entries))),
  },
  {
    method: 'GET',
    path: '/v1/namespaces/{ns}/entries/{key}',
    need: 'read',
    operationId: 'entry',
    summary: 'One entry.',
    tag: 'store',
    params: Params.nsKey,
    ok: Reply.entry,
    handler: (c, req) => {
      const { ns, key } = p(req, Params.nsKey)
      return c.entry(ns, key)
    },
  },
  {
    method: 'PUT',
    path: '/v1/namespaces/{ns}/entries/{key}',
    need: 'write',
    operationId: 'put',
    summary: 'Writes a value.',
    tag: 'store',
    params: Params.nsKey,
    body: Body.value,
    ok: Reply.entry,
    handler: (c, req) => {
      const { ns, key } = p(req, Params.nsKey)
      return c.put(ns, key, b(req, Body.value).value)
    },
  },
  {
    method: 'DELETE',
    path: '/v1/namespaces/{ns}/entries/{key}',
    need: 'write',
    operationId: 'deleteEntry',
    summary: 'Deletes a key.',
    tag: 'store',
    params: Params.nsKey,
    ok: Reply.deleted,
    handler: (c, req) => {
      const { ns, key } = p(req, Params.nsKey)
      return c.deleteEntry(ns, key)
    },
  },
  // ---- workflows ----
  {
    method: 'GET',
    path: '/v1/workflows',
    need: 'read',
    operationId: 'definitions',
    summary: 'Every workflow version known, as JSON definitions.',
    tag: 'workflows',
    ok: Reply.definitions,
    handler: (c) => c.definitions(),
  },
  {
    method: 'GET',
    path: '/v1/runs',
    need: 'read',
    operationId: 'runs',
    summary: 'Runs, newest first.',
    tag: 'workflows',
    query: Query.runs,
    ok: Reply.runs,
    handler: (c, req) => c.runs(defined(q(req, Query.runs))),
  },
  {
    method: 'GET',
    path: '/v1/runs/{id}',
    need: 'read',
    operationId: 'run',
    summary: 'A run: its state, a page of its history, its definition.',
    tag: 'workflows',
    params: Params.id,
    query: Query.run,
    ok: Reply.runDetail,
    handler: (c, req) => c.run(p(req, Params.id).id, defined(q(req, Query.run))),
  },
  {
    method: 'POST',
    path: '/v1/runs',
    need: 'write',
    operationId: 'startRun',
    summary: 'Starts a run of the newest version of a workflow.',
    tag: 'workflows',
    body: Body.startRun,
    ok: Reply.run,
    status: 201,
    handler: (c, req) => {
      const { definition, input, id } = b(req, Body.startRun)
      return c.startRun(definition, input, defined({ id }))
    },
  },
  {
    method: 'POST',
    path: '/v1/runs/{id}/signal',
    need: 'write',
    operationId: 'signalRun',
    summary: 'Sends a signal to a run.',
    tag: 'workflows',
    params: Params.id,
    body: Body.signal,
    ok: Reply.run,
    handler: (c, req) => {
      const { name, payload } = b(req, Body.signal)
      return c.signalRun(p(req, Params.id).id, name, payload)
    },
  },
  {
    method: 'POST',
    path: '/v1/runs/{id}/cancel',
    need: 'write',
    operationId: 'cancelRun',
    summary: 'Cancels a run (completed steps compensated).',
    tag: 'workflows',
    params: Params.id,
    ok: Reply.run,
    handler: (c, req) => c.cancelRun(p(req, Params.id).id),
  },
]

/** The authorization table: every route, the scope it needs. */
export const ROUTES: readonly RouteSpec[] = ROUTE_LIST.map(({ method, path, need }) => ({ method, path, need }))

/** A route's path as Fastify writes it (`:id`). */
function fastifyPath(path: string): string {
  return path.replace(/\{([^}]+)\}/g, ':$1')
}

/**
 * Each route's path as a pattern of concrete paths (a `{param}` is one segment), compiled once:
 * every 404 and 405 tests a path against all of them.
 */
const ROUTE_PATTERNS: ReadonlyArray<{ readonly method: Method; readonly pattern: RegExp }> = ROUTE_LIST.map((r) => ({
  method: r.method,
  pattern: new RegExp(`^${r.path.replace(/[.+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+')}$`),
}))

/** The methods a concrete URL path has routes for (for 405 and its Allow header). */
export function methodsAt(url: string): Method[] {
  const path = url.split('?')[0] ?? ''
  return ROUTE_PATTERNS.filter((r) => r.pattern.test(path)).map((r) => r.method)
}

/** Registers every route on `app`. */
export function registerRoutes(app: FastifyInstance, control: Control, streams: EventStreams): void {
  for (const route of ROUTE_LIST) {
    const response: Record<string, unknown> = { [route.status ?? 200]: route.ok, '4xx': ErrorBody, '5xx': ErrorBody, ...route.extra }
    app.route({
      method: route.method,
      url: fastifyPath(route.path),
      config: { need: route.need },
      schema: {
        operationId: route.operationId,
        summary: route.summary,
        description: route.need === 'none' ? 'No token needed.' : `Needs a bearer token with the \`${route.need}\` scope (admin > write > read).`,
        tags: [route.tag],
        security: route.need === 'none' ? [] : [{ bearer: [] }],
        ...(route.params === undefined ? {} : { params: route.params }),
        ...(route.query === undefined ? {} : { querystring: route.query }),
        ...(route.body === undefined ? {} : { body: route.body }),
        response,
      },
      handler: async (request, reply) => {
        const result = await route.handler(control, request, reply, streams)
        if (reply.sent) return reply
        if (route.status !== undefined) reply.code(route.status)
        return result
      },
    })
  }
}
