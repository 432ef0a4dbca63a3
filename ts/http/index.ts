/**
 * `orrery/http`: the HTTP API over a Control (Node only). See docs/http.md.
 */
export { serveHttp, buildHttp } from './server.js'
export type { HttpOptions, HttpServer } from './server.js'
export type { Need, Scope } from './auth.js'
export { ROUTES } from './routes.js'
export type { Method, RouteSpec } from './routes.js'
export type { ErrorReply } from './errors.js'
export { statusOf } from './errors.js'
