/**
 * `serveHttp(control, options)`: the HTTP API over a Control (docs/http.md). A Fastify app with
 * TypeBox schemas, the OpenAPI document at `/openapi.json`, bearer tokens with scopes checked
 * before a body is read, body size and nesting limits, and one error shape.
 */
import { statSync } from 'node:fs'
import { isAbsolute } from 'node:path'

import swagger from '@fastify/swagger'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify'

import { flag, int, intOr, keysOf, options as checkOptions, refuse, text } from '../check.js'
import { Control } from '../control/control.js'
import { checkTokens, type Scope, Tokens } from './auth.js'
import { jsonBodies } from './body.js'
import { errorBody, toReply } from './errors.js'
import { methodsAt, registerRoutes } from './routes.js'
import { EventStreams } from './sse.js'
import { validatorCompiler } from './validate.js'

/** Options of {@link serveHttp}. */
export interface HttpOptions {
  /**
   * Who may call, by bearer token: `{ [token]: ['read'] }`. `admin` implies `write`, which
   * implies `read`. Required, unless `auth: 'none'`.
   */
  tokens?: Readonly<Record<string, readonly Scope[]>>
  /** `'none'`: no authentication at all (every caller is admin). Refused unless the host is loopback. */
  auth?: 'none'
  /** The port (default 0: any free one; the handle's `port` says which). */
  port?: number
  /** The interface to listen on (default `127.0.0.1`). */
  host?: string
  /** The largest request body in bytes (default 1 MiB): larger answers 413 REQUEST_TOO_LARGE. */
  bodyLimit?: number
  /** The deepest nesting of arrays and objects a JSON body may have (default 32): deeper answers 413. */
  maxDepth?: number
  /**
   * The most server-sent event streams (`/tail`, `/events`) open at once (default 100): one more
   * answers 429 CAPACITY_EXCEEDED.
   */
  maxStreams?: number
  /** Fastify's logger option (default false: no logging). */
  logger?: FastifyServerOptions['logger']
  /**
   * A directory of static files served as they are, without a token: the built dashboard
   * (`dist/dashboard`), its `index.html` at `/`. Only the files there at start get routes, so no
   * API path is shadowed.
   */
  dashboard?: string
}
const HTTP_KEYS = keysOf<HttpOptions>()(['tokens', 'auth', 'port', 'host', 'bodyLimit', 'maxDepth', 'maxStreams', 'logger', 'dashboard'])

/** A running server. */
export interface HttpServer {
  /** The Fastify app (to add routes of your own, or to `inject` requests in tests). */
  readonly app: FastifyInstance
  /** `http://host:port`. */
  readonly url: string
  readonly port: number
  /** Ends every event stream, stops listening and frees the port. */
  close(): Promise<void>
}

const DEFAULT_BODY_LIMIT = 1 << 20
const DEFAULT_MAX_DEPTH = 32
const DEFAULT_MAX_STREAMS = 100

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
}

/** 405 with the methods the path has. */
function methodNotAllowed(request: FastifyRequest, reply: FastifyReply): void {
  const allowed = methodsAt(request.url)
  reply
    .code(405)
    .header('allow', allowed.join(', '))
    .type('application/json; charset=utf-8')
    .send(JSON.stringify(errorBody('UNSUPPORTED', `${request.method} is not a method of this path (allowed: ${allowed.join(', ')})`, { allowed })))
}

/** Builds the app (not listening): what {@link serveHttp} serves. */
export async function buildHttp(control: Control, options: HttpOptions): Promise<{ app: FastifyInstance; host: string; port: number }> {
  if (!(control instanceof Control)) refuse('argument', 'control', control, 'must be a Control (orrery.control())')
  const o = checkOptions(options, 'options', 'argument', HTTP_KEYS)
  const host = o.host === undefined ? '127.0.0.1' : text(o.host, 'host', { nonEmpty: true }, 'option')
  const port = intOr(o.port, 0, 'port', { max: 65535 })
  const bodyLimit = intOr(o.bodyLimit, DEFAULT_BODY_LIMIT, 'bodyLimit', { min: 1, max: 1 << 30 })
  const maxDepth = intOr(o.maxDepth, DEFAULT_MAX_DEPTH, 'maxDepth', { min: 1, max: 10_000 })
  const maxStreams = intOr(o.maxStreams, DEFAULT_MAX_STREAMS, 'maxStreams', { min: 1, max: 100_000 })
  const dashboard = o.dashboard === undefined ? undefined : text(o.dashboard, 'dashboard', { nonEmpty: true }, 'option')
  if (dashboard !== undefined && !isAbsolute(dashboard)) refuse('option', 'dashboard', dashboard, 'must be an absolute path (a directory)')
  if (dashboard !== undefined && statSync(dashboard, { throwIfNoEntry: false })?.isDirectory() !== true) {
    refuse('option', 'dashboard', dashboard, 'must be a directory that exists (the built dashboard: dist/dashboard)')
  }
  if (o.logger !== undefined && typeof o.logger !== 'object') flag(o.logger, 'logger')
  let tokens: Tokens
  if (o.auth !== undefined) {
    if (o.auth !== 'none') refuse('option', 'auth', o.auth, "must be 'none' (or left out, with tokens)")
    if (o.tokens !== undefined) refuse('option', 'auth', o.auth, "and tokens exclude each other: give tokens, or auth: 'none'")
    if (!isLoopback(host))
      refuse('option', 'auth', o.auth, `'none' is refused on ${host}: only a loopback host (127.0.0.1, ::1, localhost) may serve without tokens`)
    tokens = new Tokens(undefined)
  } else {
    if (o.tokens === undefined)
      refuse('option', 'tokens', o.tokens, "are required: { [token]: ['read' | 'write' | 'admin'] } (or auth: 'none' on a loopback host)")
    tokens = new Tokens(checkTokens(o.tokens))
  }
  int(maxDepth, 'maxDepth', { min: 1 })

  const app = Fastify({
    logger: o.logger ?? false,
    bodyLimit,
    forceCloseConnections: true,
    exposeHeadRoutes: false,
    return503OnClosing: true,
    // A store key of 256 characters, each URL-encoded as 12 bytes, reaches the schema (which
    // refuses it by name); longer path parameters are refused by the router, in the one shape.
    routerOptions: { maxParamLength: 4096 },
    frameworkErrors: (error, _request, given) => {
      const { status, body } = toReply(error)
      const reply = given as FastifyReply
      reply.code(status).type('application/json; charset=utf-8').send(JSON.stringify(body))
    },
  }).withTypeProvider<TypeBoxTypeProvider>()
  app.setValidatorCompiler(validatorCompiler)
  // The views are sent as JSON.stringify makes them: the response schemas document, never strip.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data))
  jsonBodies(app, bodyLimit, maxDepth)
  const streams = new EventStreams(maxStreams)

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Orrery control API', version: '1', description: 'See and steer a running Orrery: agents, channels, dead letters, store, workflows.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  })

  app.addHook('onRequest', async (request) => {
    const need = request.routeOptions.config?.need
    if (need !== undefined) tokens.check(request.headers.authorization, need)
  })
  app.addHook('preClose', async () => streams.closeAll())
  app.setErrorHandler((error, request, reply) => {
    // A method no route of the path has (one Fastify checks before routing, as QUERY): 405.
    if (request.is404 && methodsAt(request.url).length > 0) return methodNotAllowed(request, reply)
    const { status, body } = toReply(error)
    reply.code(status).type('application/json; charset=utf-8').send(JSON.stringify(body))
  })
  app.setNotFoundHandler((request, reply) => {
    if (methodsAt(request.url).length > 0) return methodNotAllowed(request, reply)
    reply
      .code(404)
      .type('application/json; charset=utf-8')
      .send(JSON.stringify(errorBody('NOT_FOUND', 'no such route')))
  })

  registerRoutes(app, control, streams)
  app.get('/openapi.json', { schema: { hide: true }, config: { need: 'none' } }, async () => app.swagger())
  if (dashboard !== undefined) {
    // Loaded only when asked for; `wildcard: false` routes each file found now, and `/` to index.html.
    const { default: statics } = await import('@fastify/static')
    await app.register(statics, { root: dashboard, wildcard: false, index: 'index.html', schemaHide: true })
  }
  await app.ready()
  return { app, host, port }
}

/**
 * Serves the HTTP API over `control` on `host:port` (default 127.0.0.1, any free port).
 * `tokens` is required unless `auth: 'none'` (loopback only). Resolves once listening.
 */
export async function serveHttp(control: Control, options: HttpOptions): Promise<HttpServer> {
  const { app, host, port } = await buildHttp(control, options)
  await app.listen({ host, port })
  const address = app.server.address()
  const bound = typeof address === 'object' && address !== null ? address.port : port
  const shown = host.includes(':') ? `[${host}]` : host
  return {
    app,
    url: `http://${shown}:${bound}`,
    port: bound,
    close: () => app.close(),
  }
}
