/**
 * The HTTP API's one error shape, `{ "error": { "code", "message", "details"? } }`, and the status
 * each Orrery error code answers with. Nothing of a stack or of an unexpected error's message is
 * ever sent: an error that is not an OrreryError answers 500 INTERNAL with a fixed message, and
 * an OrreryError that answers 500 keeps its code but not its message or details.
 */
import type { ErrorCode } from '../errors.js'
import { isOrreryError, OrreryError } from '../errors.js'

/** What an error response carries. */
export interface ErrorReply {
  error: { code: ErrorCode; message: string; details?: Record<string, unknown> }
}

const STATUS: Partial<Record<ErrorCode, number>> = {
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  VERSION_CONFLICT: 409,
  RUN_EXISTS: 409,
  DUPLICATE_AGENT: 409,
  // A signal the run's workflow does not name: nothing of that name is there (as UNKNOWN_*).
  SIGNAL_UNKNOWN: 404,
  REQUEST_TOO_LARGE: 413,
  MESSAGE_TOO_LARGE: 413,
  VALUE_TOO_LARGE: 413,
  BACKPRESSURE: 429,
  RATE_LIMITED: 429,
  BULKHEAD_FULL: 429,
  CAPACITY_EXCEEDED: 429,
  UNSUPPORTED: 501,
  CAPABILITY_UNSUPPORTED: 501,
  TRANSPORT_UNAVAILABLE: 503,
  TRANSPORT_AUTH: 503,
  CLOSED: 503,
  CIRCUIT_OPEN: 503,
  NO_RESPONDER: 503,
  ENGINE_UNAVAILABLE: 503,
  TIMEOUT: 504,
}

/** Codes of a request the caller got wrong (400), beyond those named INVALID_* or *_INVALID. */
const BAD_REQUEST: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'SCHEMA_INVALID',
  'DEFINITION_INVALID',
  'MALFORMED_FRAME',
  'MALFORMED_WRITE',
  'STALE_ACK',
  'JOIN_UNREACHABLE',
  'LOOP_LIMIT',
])

/** The status an Orrery error code answers with. */
export function statusOf(code: ErrorCode): number {
  const fixed = STATUS[code]
  if (fixed !== undefined) return fixed
  if (code === 'NOT_FOUND' || code.startsWith('UNKNOWN_') || code.endsWith('_NOT_FOUND')) return 404
  if (code.startsWith('INVALID_') || code.endsWith('_INVALID') || BAD_REQUEST.has(code)) return 400
  return 500
}

/** The body of an error response. */
export function errorBody(code: ErrorCode, message: string, details?: Readonly<Record<string, unknown>>): ErrorReply {
  const error: ErrorReply['error'] = { code, message }
  if (details !== undefined && Object.keys(details).length > 0) error.details = safeDetails(details)
  return { error }
}

/** Details as plain JSON, without anything that could carry a stack or a cause. */
function safeDetails(details: Readonly<Record<string, unknown>>): Record<string, unknown> {
  try {
    return JSON.parse(JSON.stringify(details, (key, value: unknown) => (key === 'stack' || key === 'cause' ? undefined : value))) as Record<string, unknown>
  } catch {
    return {}
  }
}

/** A Fastify error as raised by its request checks (schema validation, content type, body size, JSON). */
interface FastifyLikeError {
  code?: string
  statusCode?: number
  validation?: ReadonlyArray<{ instancePath?: string; message?: string; keyword?: string; params?: unknown }>
  validationContext?: string
  message?: string
}

type Validation = NonNullable<FastifyLikeError['validation']>

/**
 * The validation issues, at most 20. A field that must be one of several literals fails each
 * literal's `const` and then the `anyOf`; those become one issue naming the allowed values. An
 * unknown field is named as such.
 */
function issuesOf(validation: Validation): Array<{ path: string; message: string }> {
  const allowed = new Map<string, unknown[]>()
  for (const v of validation) {
    const value = (v.params as { allowedValue?: unknown } | undefined)?.allowedValue
    if (v.keyword === 'const' && value !== undefined) {
      const path = v.instancePath ?? ''
      allowed.set(path, [...(allowed.get(path) ?? []), value])
    }
  }
  const issues: Array<{ path: string; message: string }> = []
  const merged = new Set<string>()
  for (const v of validation) {
    const path = v.instancePath ?? ''
    const values = allowed.get(path)
    if (values !== undefined && (v.keyword === 'const' || v.keyword === 'anyOf')) {
      if (merged.has(path)) continue
      merged.add(path)
      issues.push({ path, message: `must be one of ${values.map((x) => JSON.stringify(x)).join(', ')}` })
    } else if (v.keyword === 'pattern' && (v.message ?? '').length > 80) {
      // A long pattern (a capability query, a semver range) quoted back helps no one.
      issues.push({ path, message: 'does not have the form this field takes (its pattern is in /openapi.json)' })
    } else if (v.keyword === 'boolean') {
      // Unknown fields are refused through `additionalProperties: false`; TypeBox says 'schema is false'.
      issues.push({ path, message: 'is not a known field' })
    } else {
      issues.push({ path, message: v.message ?? 'is invalid' })
    }
  }
  return issues.slice(0, 20)
}

/** Any error as a status and the one error shape. */
export function toReply(error: unknown): { status: number; body: ErrorReply } {
  if (isOrreryError(error)) {
    const status = statusOf(error.code)
    // Not the caller's doing (PANIC, STORE_IO, INTERNAL...): the code alone, since such a message
    // names files, engine internals or a bug's own text.
    if (status === 500) return { status, body: errorBody(error.code, 'internal error') }
    return { status, body: errorBody(error.code, error.message, error.details) }
  }
  const e = (error ?? {}) as FastifyLikeError
  if (Array.isArray(e.validation)) {
    const where = e.validationContext ?? 'request'
    const issues = issuesOf(e.validation)
    const first = issues[0]
    const code: ErrorCode = where === 'querystring' ? 'INVALID_OPTION' : 'INVALID_ARGUMENT'
    return {
      status: 400,
      body: errorBody(code, `the ${where} is invalid${first === undefined ? '' : `: ${first.path || '(root)'} ${first.message}`}`, { where, issues }),
    }
  }
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, body: errorBody('REQUEST_TOO_LARGE', 'the request body is larger than the server takes') }
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: e.statusCode ?? 415, body: errorBody('INVALID_ARGUMENT', 'the request body must be JSON (content-type: application/json)') }
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return { status: 400, body: errorBody('INVALID_ARGUMENT', 'a path parameter is longer than the server takes') }
    case 'FST_ERR_BAD_URL':
      return { status: 400, body: errorBody('INVALID_ARGUMENT', 'the URL does not decode') }
  }
  // A 4xx Fastify raised on its own (a malformed URL, a bad header): its message names no internals.
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500 && typeof e.code === 'string' && e.code.startsWith('FST_')) {
    return { status: e.statusCode, body: errorBody('INVALID_ARGUMENT', typeof e.message === 'string' ? e.message : 'bad request') }
  }
  return { status: 500, body: errorBody('INTERNAL', 'internal error') }
}

/** An OrreryError for the caller's own mistakes in the HTTP layer. */
export function refusal(code: ErrorCode, message: string, details?: Record<string, unknown>): OrreryError {
  return new OrreryError(code, message, details === undefined ? {} : { details })
}
