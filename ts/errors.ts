/**
 * Orrery's errors: real `Error` objects with a stable `code` to branch on, a `cause` where
 * there is one, and `details` that locate the problem.
 */
import { type BOUNDARY_CODES, ERROR_CODES } from './engines/manifest.js'

/**
 * Every code an Orrery error can carry: the keys of the core's manifest (`crates/core/src/manifest.rs`,
 * generated into `ts/engines/manifest.ts`), where each has its meaning in one line.
 */
export type ErrorCode = keyof typeof ERROR_CODES

const KNOWN: ReadonlySet<string> = new Set(Object.keys(ERROR_CODES))
/** The core's code for a full consumer whose policy is `block` (typed against the manifest's boundary codes). */
const WAIT: keyof typeof BOUNDARY_CODES = 'BACKPRESSURE_WAIT'

/** The error every Orrery call throws or rejects with. */
export class OrreryError extends Error {
  override readonly name = 'OrreryError'
  readonly code: ErrorCode
  readonly details: Readonly<Record<string, unknown>>

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.details = Object.freeze({ ...options.details })
  }
}

/** Whether `value` is an Orrery error, optionally with a given code. */
export function isOrreryError(value: unknown, code?: ErrorCode): value is OrreryError {
  return value instanceof OrreryError && (code === undefined || value.code === code)
}

/**
 * @internal Whether `value` says the engine itself failed (a core panic, or a wasm instance
 * poisoned by one) rather than a call being refused. Work no caller waits for (a timer, a
 * microtask) catches these, reports them once and stops re-arming: thrown from a timer they would
 * end the process.
 */
export function isEngineFailure(value: unknown): value is OrreryError {
  return value instanceof OrreryError && (value.code === 'PANIC' || value.code === 'ENGINE_POISONED')
}

/**
 * Turns whatever an engine threw into an OrreryError. Core errors carry their code already.
 * The N-API engine reports a caught Rust panic as napi's `GenericFailure` (the core's own
 * errors never use it) and an argument of the wrong type with another napi status.
 */
export function fromEngine(raw: unknown): OrreryError {
  if (raw instanceof OrreryError) return raw
  const err = raw as { code?: unknown; message?: unknown }
  const message = typeof err?.message === 'string' ? err.message : String(raw)
  const code = typeof err?.code === 'string' ? err.code : undefined
  if (code !== undefined && KNOWN.has(code)) return new OrreryError(code as ErrorCode, message, { cause: raw })
  // A full consumer whose policy is `block`: the bus waits and retries instead of failing.
  if (code === WAIT) return new OrreryError('BACKPRESSURE', message, { cause: raw, details: { wait: true } })
  if (code === 'GenericFailure') return new OrreryError('PANIC', `the Orrery core panicked: ${message}`, { cause: raw })
  if (code !== undefined || raw instanceof TypeError) {
    return new OrreryError('INVALID_ARGUMENT', `an argument has the wrong type: ${message}`, { cause: raw })
  }
  return new OrreryError('INTERNAL', `unexpected engine error: ${message}`, { cause: raw })
}

/**
 * @internal Whether `value` is one of JavaScript's own programming errors (a ReferenceError,
 * TypeError, RangeError or SyntaxError): a bug in the code that ran, never a broker's failure,
 * so never reported as a transport code (a caller would retry or read for ever).
 */
export function isProgrammingError(value: unknown): value is Error {
  return value instanceof ReferenceError || value instanceof TypeError || value instanceof RangeError || value instanceof SyntaxError
}

/**
 * @internal `error` as an OrreryError for an event or a rejection: an OrreryError as it is, a
 * programming error INTERNAL (naming it), anything else (a broker client's error) `code`, with
 * `message` and the original as `cause`.
 */
export function failureOf(error: unknown, code: ErrorCode, message: string, details: Record<string, unknown> = {}): OrreryError {
  if (error instanceof OrreryError) return error
  if (isProgrammingError(error)) return new OrreryError('INTERNAL', `${message}: a bug in Orrery (${error.name}: ${error.message})`, { cause: error, details })
  const why = error instanceof Error ? error.message : String(error)
  return new OrreryError(code, why === '' ? message : `${message}: ${why}`, { cause: error, details })
}
