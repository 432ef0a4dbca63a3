/**
 * Data flow of a workflow run, as pure functions: references into the run's data, inputs built
 * from specs, conditions tested. The core never sees data; the runtime calls these with a
 * {@link DataScope} that resolves `$steps.x` to the right instance of `x`.
 *
 * Data is read through own properties only, so a path never reaches a prototype, and the names
 * `__proto__`, `constructor` and `prototype` are refused in every reference.
 */
import { shown } from '../check.js'
import { OrreryError } from '../errors.js'
import type { Condition, InputSpec } from './definition.js'

/** @internal A definition that breaks a rule: `DEFINITION_INVALID`, with where it is. */
export function definitionInvalid(message: string, details: Record<string, unknown> = {}): OrreryError {
  return new OrreryError('DEFINITION_INVALID', message, { details })
}

/** What a reference reads: the run's data as the runtime sees it at one node instance. */
export interface DataScope {
  /** The run input. */
  input: unknown
  /**
   * The innermost forEach, pipeline stage or scatterGather instance's item and index. In a
   * pipeline's stage s > 0 the item is the output of stage s - 1 for that index.
   */
  item?: unknown
  index?: number
  /** The output of the node with that id (the runtime resolves scopes: same iteration, else enclosing). */
  output(nodeId: string): unknown
  /** The last payload of that signal. */
  signal(name: string): unknown
}

/** The roots a reference can start from. */
export type RefRoot = 'input' | 'item' | 'index' | 'steps' | 'signals'

/** A reference taken apart: its root, the node id or signal name (`steps`, `signals`), then the path. */
export interface ParsedRef {
  readonly root: RefRoot
  readonly name: string | undefined
  readonly path: readonly (string | number)[]
}

const ROOTS: ReadonlySet<string> = new Set<RefRoot>(['input', 'item', 'index', 'steps', 'signals'])
/** Names that would read through to a prototype if looked up as keys. */
export const PROTOTYPE_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype'])
/** @internal The longest reference, and most parts in one. */
export const MAX_REF_LENGTH = 1024
const MAX_PARTS = 64
/** @internal How deep an input spec or condition may nest. */
export const MAX_SPEC_DEPTH = 256
/** @internal How deep a definition's JSON may nest (a literal inside it too). */
export const MAX_JSON_DEPTH = 1024

/** Takes a reference apart, or says why it is not one. */
function parse(ref: string): ParsedRef | string {
  if (ref.length > MAX_REF_LENGTH) return `is longer than ${MAX_REF_LENGTH} characters`
  if (ref[0] !== '$') return 'must start with $'
  let at = 1
  while (at < ref.length && ref[at] !== '.' && ref[at] !== '[') at++
  const root = ref.slice(1, at)
  if (!ROOTS.has(root)) return `starts with the unknown root $${root} (known: $input, $steps, $item, $index, $signals)`
  const parts: (string | number)[] = []
  while (at < ref.length) {
    if (parts.length === MAX_PARTS) return `has more than ${MAX_PARTS} parts`
    const c = ref[at]
    if (c === '.') {
      let end = at + 1
      while (end < ref.length && ref[end] !== '.' && ref[end] !== '[' && ref[end] !== ']') end++
      if (end === at + 1) return `has an empty field name at character ${at + 1}`
      parts.push(ref.slice(at + 1, end))
      at = end
    } else if (c === '[') {
      const close = ref[at + 1] === '"' ? quoteEnd(ref, at + 2) : ref.indexOf(']', at)
      if (close < 0 || (ref[at + 1] === '"' && ref[close + 1] !== ']')) return `has an unclosed [ at character ${at}`
      if (ref[at + 1] === '"') {
        parts.push(JSON.parse(ref.slice(at + 1, close + 1)) as string)
        at = close + 2
      } else {
        const digits = ref.slice(at + 1, close)
        if (!/^(0|[1-9][0-9]{0,8})$/.test(digits)) return `has [${digits}]: an index is a whole number (a key is written ["key"])`
        parts.push(Number(digits))
        at = close + 1
      }
    } else {
      return `has ${JSON.stringify(c)} where . or [ should be, at character ${at}`
    }
  }
  for (const part of parts) if (typeof part === 'string' && PROTOTYPE_KEYS.has(part)) return `reads ${JSON.stringify(part)}, which is never read`
  const named = root === 'steps' || root === 'signals'
  if (named && typeof parts[0] !== 'string') return `must name a ${root === 'steps' ? 'node' : 'signal'}: $${root}.<name>`
  if (root === 'index' && parts.length > 0) return 'reads a field of $index, a number'
  return { root: root as RefRoot, name: named ? (parts[0] as string) : undefined, path: named ? parts.slice(1) : parts }
}

/** The position of the `"` closing a JSON string whose text starts at `from`, or -1. */
function quoteEnd(ref: string, from: number): number {
  for (let i = from; i < ref.length; i++) {
    if (ref[i] === '\\') i++
    else if (ref[i] === '"') {
      try {
        JSON.parse(ref.slice(from - 1, i + 1))
        return i
      } catch {
        return -1
      }
    }
  }
  return -1
}

// References are parsed once each: a run resolves the same few strings again and again.
const parsed = new Map<string, ParsedRef | string>()

/** @internal A reference taken apart, or the reason it is not one (never throws). */
export function readRef(ref: string): ParsedRef | string {
  let p = parsed.get(ref)
  if (p === undefined) {
    p = parse(ref)
    if (parsed.size >= 4096) parsed.clear()
    parsed.set(ref, p)
  }
  return p
}

/** A reference taken apart; `DEFINITION_INVALID` when `ref` is not one. */
export function parseRef(ref: string): ParsedRef {
  const p = typeof ref === 'string' ? readRef(ref) : 'must be a string'
  if (typeof p === 'string') throw definitionInvalid(`reference ${shown(ref)} ${p}`, { ref: typeof ref === 'string' ? ref : shown(ref) })
  return p
}

/** `value[key]` when `value` is an object or array holding `key` as its own property, else undefined. */
function member(value: unknown, key: string | number): unknown {
  if (value === null || typeof value !== 'object') return undefined
  return Object.hasOwn(value, key) ? (value as Record<string | number, unknown>)[key] : undefined
}

/** The value `ref` names in `scope` (`undefined` where the path leads nowhere). */
export function resolveRef(ref: string, scope: DataScope): unknown {
  const p = parseRef(ref)
  let value: unknown
  switch (p.root) {
    case 'input':
      value = scope.input
      break
    case 'item':
      value = scope.item
      break
    case 'index':
      return scope.index
    case 'steps':
      value = scope.output(p.name!)
      break
    default:
      value = scope.signal(p.name!)
  }
  for (const key of p.path) {
    value = member(value, key)
    if (value === undefined) return undefined
  }
  return value
}

/** A registered mapping or condition function, by name. */
export type Mappings = ReadonlyMap<string, (arg: unknown) => unknown>
export type Conditions = ReadonlyMap<string, (arg: unknown) => boolean>

const NONE: ReadonlyMap<string, never> = new Map<string, never>()

function registered<F>(table: ReadonlyMap<string, F>, name: unknown, what: string): F {
  const f = typeof name === 'string' ? table.get(name) : undefined
  if (f === undefined) throw new OrreryError('STEP_NOT_REGISTERED', `no ${what} named ${shown(name)} is registered`, { details: { [what]: name } })
  return f
}

function isThenable(value: unknown): boolean {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof (value as { then?: unknown }).then === 'function'
}

/**
 * The value `spec` builds in `scope`: references resolved, arrays and objects built member by
 * member (a member that builds to `undefined` is left out of an object), `$literal` copied,
 * `$fn` applied. A mapping not in `mappings` is `STEP_NOT_REGISTERED`.
 */
export function buildInput(spec: InputSpec | undefined, scope: DataScope, mappings: Mappings): unknown {
  return build(spec, scope, mappings, 0)
}

function build(spec: unknown, scope: DataScope, mappings: Mappings, depth: number): unknown {
  if (typeof spec === 'string') return spec[0] === '$' ? resolveRef(spec, scope) : spec
  if (spec === null || typeof spec !== 'object') return spec
  if (depth >= MAX_SPEC_DEPTH) throw definitionInvalid(`an input spec nests deeper than ${MAX_SPEC_DEPTH} levels`)
  if (Array.isArray(spec)) return spec.map((s) => build(s, scope, mappings, depth + 1))
  const o = spec as Record<string, unknown>
  if (Object.hasOwn(o, '$literal')) return copy(o['$literal'], 0)
  if (Object.hasOwn(o, '$fn')) {
    const name = o['$fn']
    const mapping = registered(mappings, name, 'mapping')
    const result = mapping(build(o['arg'], scope, mappings, depth + 1))
    if (isThenable(result)) throw new OrreryError('INVALID_ARGUMENT', `mapping ${shown(name)} returned a promise: mappings are synchronous`)
    return result
  }
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(o)) {
    if (key === '__proto__') throw definitionInvalid('an input spec holds the key "__proto__"')
    const value = build(o[key], scope, mappings, depth + 1)
    if (value !== undefined) out[key] = value
  }
  return out
}

/** A fresh copy of JSON data, so a step that changes its input cannot change the definition. */
function copy(value: unknown, depth: number): unknown {
  if (value === null || typeof value !== 'object') return value
  if (depth >= MAX_JSON_DEPTH) throw definitionInvalid(`a $literal nests deeper than ${MAX_JSON_DEPTH} levels`)
  if (Array.isArray(value)) return value.map((v) => copy(v, depth + 1))
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(value)) {
    if (key === '__proto__') throw definitionInvalid('a $literal holds the key "__proto__"')
    out[key] = copy((value as Record<string, unknown>)[key], depth + 1)
  }
  return out
}

/**
 * Whether `condition` holds in `scope`. A comparison reads the value at its path and compares it
 * with the literal `value`: `eq`/`ne`/`in` by JSON equality, `gt`/`gte`/`lt`/`lte` between two
 * numbers or two strings (any other pair: false). A condition function not in `conditions` is
 * `STEP_NOT_REGISTERED`; one that returns anything but a boolean is `INVALID_ARGUMENT`. `mappings`
 * serve `$fn` inside a condition function's `arg`.
 */
export function testCondition(condition: Condition, scope: DataScope, conditions: Conditions, mappings: Mappings = NONE): boolean {
  return test(condition, scope, conditions, mappings, 0)
}

function test(c: Condition, scope: DataScope, conditions: Conditions, mappings: Mappings, depth: number): boolean {
  if (c === null || typeof c !== 'object') throw definitionInvalid(`a condition must be an object, not ${shown(c)}`)
  if (depth >= MAX_SPEC_DEPTH) throw definitionInvalid(`a condition nests deeper than ${MAX_SPEC_DEPTH} levels`)
  if ('path' in c) return compare(resolveRef(c.path, scope), c.op, c.value)
  if ('all' in c) return c.all.every((x) => test(x, scope, conditions, mappings, depth + 1))
  if ('any' in c) return c.any.some((x) => test(x, scope, conditions, mappings, depth + 1))
  if ('not' in c) return !test(c.not, scope, conditions, mappings, depth + 1)
  if ('fn' in c) {
    const result = registered(conditions, c.fn, 'condition')(build(c.arg, scope, mappings, depth + 1))
    if (typeof result !== 'boolean') throw new OrreryError('INVALID_ARGUMENT', `condition ${shown(c.fn)} returned ${shown(result)}, not true or false`)
    return result
  }
  throw definitionInvalid('a condition must hold path, all, any, not or fn')
}

function compare(actual: unknown, op: string, value: unknown): boolean {
  switch (op) {
    case 'eq':
      return equal(actual, value, 0)
    case 'ne':
      return !equal(actual, value, 0)
    case 'truthy':
      return Boolean(actual)
    case 'falsy':
      return !actual
    case 'exists':
      return actual !== undefined
    case 'in':
      return Array.isArray(value) && value.some((v) => equal(actual, v, 0))
    case 'gt':
    case 'gte':
    case 'lt':
    case 'lte':
      return ordered(actual, op, value)
    default:
      throw definitionInvalid(`a condition has the unknown op ${shown(op)}`)
  }
}

function ordered(a: unknown, op: 'gt' | 'gte' | 'lt' | 'lte', b: unknown): boolean {
  if (typeof a !== typeof b || (typeof a !== 'number' && typeof a !== 'string')) return false
  const x = a as number | string
  const y = b as number | string
  return op === 'gt' ? x > y : op === 'gte' ? x >= y : op === 'lt' ? x < y : x <= y
}

/**
 * JSON equality of run data `a` with the definition's literal `b`. The walk follows `b`, whose
 * depth validation bounds, so run data of any shape cannot make it recurse without end.
 */
function equal(a: unknown, b: unknown, depth: number): boolean {
  if (b === null || typeof b !== 'object') return a === b
  if (a === null || typeof a !== 'object' || depth >= MAX_JSON_DEPTH) return false
  if (Array.isArray(b)) {
    if (!Array.isArray(a) || a.length !== b.length) return false
    for (let i = 0; i < b.length; i++) if (!equal(member(a, i), b[i], depth + 1)) return false
    return true
  }
  if (Array.isArray(a)) return false
  const keys = Object.keys(b)
  if (Object.keys(a).length !== keys.length) return false
  for (const key of keys) if (!Object.hasOwn(a, key) || !equal(member(a, key), (b as Record<string, unknown>)[key], depth + 1)) return false
  return true
}
