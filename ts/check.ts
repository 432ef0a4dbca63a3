/**
 * Argument checks at the facade. Every public call checks what it is given here, once, before
 * anything crosses into an engine, so both engines refuse the same inputs with the same code and
 * message: the native binding refuses a wrong-typed argument, but wasm-bindgen coerces it (a
 * numeric string becomes a number) or, for a handle, reads memory it should not and traps the
 * whole instance. A check throws an `OrreryError`: `INVALID_OPTION` for a field of an options
 * object, `INVALID_ARGUMENT` for a positional argument, and never touches the engine.
 *
 * Values are checked by type first (`typeof`, never coercion: `'10'` is not a number) and looked
 * up only among own properties, so `'__proto__'` or `'toString'` is never a valid enum value.
 */
import { OrreryError } from './errors.js'
import { LIMITS, NO_DEADLINE } from './engines/manifest.js'

/** The longest delay a JS timer can wait: `setTimeout` fires larger ones after 1 ms. */
export const MAX_TIMER_MS = LIMITS.maxTimerMs

/** Whether a bad value is a field of an options object (`INVALID_OPTION`) or a positional argument. */
export type Where = 'option' | 'argument'

/** A short, printable form of a value for an error message (never throws, never long). */
export function shown(value: unknown): string {
  if (value === null) return 'null'
  switch (typeof value) {
    case 'string':
      return value.length > 40 ? `a string of ${value.length} characters` : JSON.stringify(withoutCredentials(value))
    case 'number':
    case 'boolean':
    case 'undefined':
      return String(value)
    case 'bigint':
      return `${value}n`
    case 'symbol':
      return 'a symbol'
    case 'function':
      return 'a function'
    default:
      return Array.isArray(value) ? 'an array' : value instanceof Uint8Array ? 'a Uint8Array' : 'an object'
  }
}

/** `text` with the password or token of every URL in it hidden: `//user:***@`, `//***@` (up to the last `@` before the host, as a URL parser reads it). */
export function withoutCredentials(text: string): string {
  return text.replace(/\/\/(?:([^\s/@:]*):)?[^\s/]*@/g, (_, user: string | undefined) => `//${user === undefined ? '' : `${user}:`}***@`)
}

/** Throws the typed error for `name`, whose rule `must` (e.g. "must be a whole number >= 1") the value broke. */
export function refuse(where: Where, name: string, value: unknown, must: string): never {
  const code = where === 'option' ? 'INVALID_OPTION' : 'INVALID_ARGUMENT'
  throw new OrreryError(code, `${name} ${must}, not ${shown(value)}`, { details: { [where]: name, value: printable(value) } })
}

/**
 * `refuse` for a field that holds a secret (a password, a token, a signing key) or may hold one
 * put there by mistake: the message says only what kind of value came (a string's length, never
 * its text), and `details` carry no value.
 */
export function refuseSecret(name: string, value: unknown, must: string): never {
  const kind =
    typeof value === 'string'
      ? `a string of ${value.length} characters (not shown: it may be a secret)`
      : typeof value === 'number' || typeof value === 'bigint'
        ? 'a number (not shown: it may be a secret)'
        : shown(value)
  throw new OrreryError('INVALID_OPTION', `${name} ${must}, not ${kind}`, { details: { option: name } })
}

/** A secret option: a string (`nonEmpty` when it must not be ''), refused without showing it; undefined when left out. */
export function secretOr(value: unknown, name: string, rule: TextRule = {}): string | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string') refuseSecret(name, value, 'must be a string')
  if (rule.nonEmpty && value === '') refuseSecret(name, value, 'must not be empty')
  if (!wellFormed(value)) refuseSecret(name, value, 'must be well-formed UTF-16 (it holds a lone surrogate, which UTF-8 cannot carry)')
  return value
}

/** Details carry the value only when it is a plain primitive (never an object a caller may mutate), credentials in a URL hidden. */
function printable(value: unknown): unknown {
  if (typeof value === 'string') return withoutCredentials(value)
  return value === null || (typeof value !== 'object' && typeof value !== 'function' && typeof value !== 'symbol') ? value : shown(value)
}

/**
 * An options object: `undefined` (then `{}`) or a plain object. `null`, arrays, strings and
 * numbers are refused, so `create(null)` is a typed error rather than a TypeError on `null.x`.
 */
export function options<T extends object>(value: T | undefined | null, name = 'options', where: Where = 'argument', keys?: readonly string[]): T {
  if (value === undefined) return {} as T
  if (value === null || typeof value !== 'object' || Array.isArray(value)) refuse(where, name, value, 'must be an object (or left out)')
  if (keys !== undefined) onlyKeys(value, keys, name)
  return value
}

/**
 * The fields of an options type, listed once as data: a list that misses a field of `T`, or names
 * one `T` lacks, does not compile. `keysOf<ChannelOptions>()(['retention', ...])`.
 */
export function keysOf<T extends object>() {
  return <const K extends readonly (keyof T & string)[]>(
    keys: K & (Exclude<keyof T & string, K[number]> extends never ? unknown : { missing: Exclude<keyof T & string, K[number]> }),
  ): K => keys
}

/**
 * Refuses a field of `value` that is none of `keys` (`INVALID_OPTION` naming it, and the known
 * field it most likely meant): a misspelt option is an error, never a silent default.
 */
export function onlyKeys(value: object, keys: readonly string[], name: string): void {
  for (const key in value) {
    if (!Object.hasOwn(value, key) || keys.includes(key)) continue
    const near = nearest(key, keys)
    const hint = near === undefined ? `known: ${keys.join(', ')}` : `did you mean "${near}"?`
    const field = name === 'options' ? key : `${name}.${key}`
    const what = name === 'options' ? 'a known option' : `an option of ${name}`
    throw new OrreryError('INVALID_OPTION', `${field} is not ${what} (${hint})`, { details: { option: field, known: [...keys] } })
  }
}

/** The known key within two edits of `key` (case aside), or of its start (`visibilty`: `visibilityTimeout`), if one is. */
function nearest(key: string, keys: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = 3
  const k = key.toLowerCase()
  for (const candidate of keys) {
    const c = candidate.toLowerCase()
    const d = Math.min(distance(k, c), k.length >= 4 ? distance(k, c.slice(0, k.length + 1)) + 1 : Infinity)
    if (d < bestDistance) [best, bestDistance] = [candidate, d]
  }
  return best
}

/** Edit distance (insertions, deletions, substitutions) between two short strings. */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const next = [i]
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    row = next
  }
  return row[b.length]!
}

interface IntRange {
  min?: number
  max?: number
}

/** A whole number in [min, max] (default 0 to 2^53 - 1). */
export function int(value: unknown, name: string, range: IntRange = {}, where: Where = 'option'): number {
  const min = range.min ?? 0
  const max = range.max ?? Number.MAX_SAFE_INTEGER
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    refuse(where, name, value, max === Number.MAX_SAFE_INTEGER ? `must be a whole number >= ${min}` : `must be a whole number from ${min} to ${max}`)
  }
  return value
}

/** `int`, or `fallback` when the value is left out. */
export function intOr(value: unknown, fallback: number, name: string, range: IntRange = {}, where: Where = 'option'): number {
  return value === undefined ? fallback : int(value, name, range, where)
}

interface NumberRange {
  min?: number
  max?: number
  above?: number
}

/**
 * A duration option that may say "none": `Infinity` (the one convention for no deadline, no
 * window, no limit of time: what the engines receive as their `NO_DEADLINE`), or a finite number
 * in range as {@link finite} checks it.
 */
export function msOrNone(value: unknown, name: string, range: NumberRange = {}, where: Where = 'option'): number {
  return value === Infinity ? NO_DEADLINE : finite(value, name, range, where)
}

/** A finite number in range: `min` and `max` inclusive, `above` exclusive. */
export function finite(value: unknown, name: string, range: NumberRange = {}, where: Where = 'option'): number {
  const { min = -Number.MAX_VALUE, max = Number.MAX_VALUE, above } = range
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max || (above !== undefined && !(value > above))) {
    const rule = above !== undefined ? `> ${above}` : min !== -Number.MAX_VALUE ? `>= ${min}` : ''
    refuse(where, name, value, `must be a finite number${rule ? ` ${rule}` : ''}${max !== Number.MAX_VALUE ? ` and <= ${max}` : ''}`)
  }
  return value
}

/**
 * A duration in ms that a timer will wait: finite, >= `min` (default 0) and at most
 * {@link MAX_TIMER_MS} (about 24.8 days), beyond which `setTimeout` would fire at once.
 */
export function ms(value: unknown, name: string, min = 0, where: Where = 'option'): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > MAX_TIMER_MS) {
    refuse(where, name, value, `must be a number of ms from ${min} to ${MAX_TIMER_MS}`)
  }
  return value
}

/** `ms`, or `fallback` when left out. */
export function msOr(value: unknown, fallback: number, name: string, min = 0, where: Where = 'option'): number {
  return value === undefined ? fallback : ms(value, name, min, where)
}

/** One of `allowed`, compared by value (so `'__proto__'` or `'toString'` never passes). */
export function oneOf<T extends string>(value: unknown, allowed: readonly T[], name: string, where: Where = 'option'): T {
  if (typeof value !== 'string' || !allowed.includes(value as T)) refuse(where, name, value, `must be one of ${allowed.join(', ')}`)
  return value as T
}

/** `oneOf`, or `fallback` when left out. */
export function oneOfOr<T extends string>(value: unknown, allowed: readonly T[], fallback: T, name: string, where: Where = 'option'): T {
  return value === undefined ? fallback : oneOf(value, allowed, name, where)
}

/** A lone surrogate: half of a UTF-16 pair without its other half. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** Whether a string encodes to UTF-8 and decodes back unchanged (no lone surrogate). */
export function wellFormed(value: string): boolean {
  return !LONE_SURROGATE.test(value)
}

interface TextRule {
  nonEmpty?: boolean
}

/**
 * A string that survives UTF-8 unchanged: a lone surrogate would be encoded as U+FFFD, so two
 * different strings (`'a\uD800'`, `'a\uDFFF'`) would become one key or name.
 */
export function text(value: unknown, name: string, rule: TextRule = {}, where: Where = 'argument'): string {
  if (typeof value !== 'string') refuse(where, name, value, 'must be a string')
  if (rule.nonEmpty && value === '') refuse(where, name, value, 'must not be empty')
  if (!wellFormed(value)) refuse(where, name, value, 'must be well-formed UTF-16 (it holds a lone surrogate, which UTF-8 cannot carry)')
  return value
}

/** `text`, or undefined when left out. */
export function textOr(value: unknown, name: string, rule: TextRule = {}, where: Where = 'option'): string | undefined {
  return value === undefined ? undefined : text(value, name, rule, where)
}

/** true or false. */
export function flag(value: unknown, name: string, where: Where = 'option'): boolean {
  if (typeof value !== 'boolean') refuse(where, name, value, 'must be true or false')
  return value
}

/** A function (a handler, a factory, a clock). */
export function callable<F extends (...args: never[]) => unknown>(value: unknown, name: string, where: Where = 'argument'): F {
  if (typeof value !== 'function') refuse(where, name, value, 'must be a function')
  return value as F
}

/**
 * A record of string values (headers, tags by name): a plain object whose own enumerable keys
 * and values are all well-formed strings. Keys such as `__proto__` are kept as ordinary keys.
 */
export function stringRecord(value: unknown, name: string, where: Where = 'option'): Readonly<Record<string, string>> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) refuse(where, name, value, 'must be an object of strings')
  for (const key of Object.keys(value)) {
    if (!wellFormed(key)) refuse(where, `${name} key`, key, 'must be well-formed UTF-16')
    text((value as Record<string, unknown>)[key], `${name}.${key}`, {}, where)
  }
  return value as Record<string, string>
}

/** A list: an array (each item then checked by the caller). */
export function list<T>(value: unknown, name: string, where: Where = 'argument'): readonly T[] {
  if (!Array.isArray(value)) refuse(where, name, value, 'must be an array')
  return value as T[]
}

/** The core's name rule (`crates/core/src/names.rs`): ASCII letters, digits and `. _ - : / * >`. */
const NAME_CHARS = /^[A-Za-z0-9._\-:/*>]*$/

/** What is wrong with `value` as a name (`is empty`, ...), or undefined for a good one. */
export function nameProblem(value: string, max: number = LIMITS.maxNameBytes): string | undefined {
  if (value === '') return 'is empty'
  if (value.length > max) return `is longer than ${max} bytes`
  if (!NAME_CHARS.test(value)) return 'may hold only ASCII letters, digits and . _ - : / * >'
  return undefined
}

/**
 * A channel, agent, capability or tag name as the core accepts it: a string (else
 * `INVALID_OPTION`/`INVALID_ARGUMENT`) of 1 to `max` (default 255) bytes of the core's name
 * characters (else `INVALID_NAME`, as the core itself would answer). Checked here so a bad name
 * is refused when it is given (a type name at `define`), not when it is first used.
 */
export function name(value: unknown, what: string, where: Where = 'argument', max: number = LIMITS.maxNameBytes): string {
  if (typeof value !== 'string') refuse(where, what, value, 'must be a string')
  const reason = nameProblem(value, max)
  if (reason !== undefined)
    throw new OrreryError('INVALID_NAME', `invalid name ${shown(value)}: ${reason}`, { details: { [where]: what, name: printable(value) } })
  return value
}
