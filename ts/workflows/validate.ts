/**
 * Checks any value as a workflow definition and returns it normalised: a fresh, frozen, plain
 * copy with every container's id filled in by position and its version set. A value that breaks
 * a rule is refused with `DEFINITION_INVALID`, the message naming the node (its id and its path
 * from the root) and what is wrong.
 *
 * The value is first copied into plain JSON once, each property read guarded: cycles, getters
 * that throw, proxies, class instances, `__proto__` keys, holes and values nested or sized past
 * the limits are refused there, so the checks after it walk trusted data.
 */
import { name as checkName, shown, wellFormed } from '../check.js'
import { WORKFLOW_LIMITS } from '../engines/manifest.js'
import type {
  ChildNode,
  Compensation,
  Condition,
  InputSpec,
  Join,
  NodeKind,
  Ref,
  RetryPolicy,
  StepNode,
  StepRun,
  WorkflowDefinition,
  WorkflowNode,
} from './definition.js'
import { definitionInvalid, MAX_JSON_DEPTH, MAX_REF_LENGTH, MAX_SPEC_DEPTH, PROTOTYPE_KEYS, readRef } from './refs.js'
import { contentVersion } from './version.js'

/** Limits of a definition (the core's own limits of a program, with room for the nodes compiling adds). */
export const DEFINITION_LIMITS = {
  /** Nodes in a definition: compiled, each may add one (a compensation, a scatter call), and the root a wrapper. */
  maxNodes: Math.floor((WORKFLOW_LIMITS.maxNodes - 1) / 2),
  /** How deep nodes nest, with room for the levels compiling adds (a run wrapper, a scatter call). */
  maxNodeDepth: WORKFLOW_LIMITS.maxDepth - 6,
  /** How deep the JSON nests. */
  maxJsonDepth: MAX_JSON_DEPTH,
  /** Values (objects, arrays, scalars) in the whole JSON. */
  maxValues: 1_000_000,
  /** Iterations of a loop. */
  maxIterations: 1_000_000,
  /** Instances of a forEach at once, a quorum of one, and a pipeline's buffer (the core's most instances). */
  maxInstances: WORKFLOW_LIMITS.maxInstances,
  /** Attempts of a step. */
  maxAttempts: 1_000_000,
} as const

/** A node id: ASCII letters, digits and `_ . -`, 1 to 64 of them. */
const ID = /^[A-Za-z0-9_.-]{1,64}$/
/** A user-given version. */
const VERSION = /^[A-Za-z0-9._:+-]{1,64}$/
const HASH_PREFIX = 'sha256:'

/** The suffixes of the node ids compiling adds: a compensation, a scatterGather's call. */
export const COMPENSATE_SUFFIX = '.compensate'
export const CALL_SUFFIX = '.call'

const KINDS: readonly NodeKind[] = [
  'step',
  'child',
  'sequence',
  'parallel',
  'branch',
  'loop',
  'forEach',
  'scatterGather',
  'sleep',
  'waitFor',
  'pipeline',
  'continueAsNew',
  'delegate',
]
const FIELDS: Readonly<Record<NodeKind, readonly string[]>> = {
  step: ['kind', 'id', 'run', 'input', 'retry', 'timeoutMs', 'compensate'],
  child: ['kind', 'id', 'workflow', 'input', 'retry', 'timeoutMs', 'compensate'],
  sequence: ['kind', 'id', 'steps'],
  parallel: ['kind', 'id', 'branches', 'join', 'timeoutMs'],
  branch: ['kind', 'id', 'arms', 'otherwise'],
  loop: ['kind', 'id', 'while', 'until', 'maxIterations', 'body'],
  forEach: ['kind', 'id', 'items', 'concurrency', 'join', 'timeoutMs', 'body'],
  scatterGather: ['kind', 'id', 'capability', 'agents', 'input', 'join', 'timeoutMs', 'aggregate'],
  sleep: ['kind', 'id', 'ms'],
  waitFor: ['kind', 'id', 'signal', 'timeoutMs', 'onTimeout'],
  pipeline: ['kind', 'id', 'items', 'stages', 'buffer', 'timeoutMs'],
  continueAsNew: ['kind', 'id', 'input'],
  delegate: ['kind', 'id', 'capability', 'input', 'timeoutMs', 'retry'],
}
/** What an unnamed container's generated id starts with. */
const PREFIX: Partial<Record<NodeKind, string>> = { sequence: 'seq', parallel: 'par', branch: 'branch', loop: 'loop', forEach: 'each' }
const TOP_FIELDS = ['format', 'name', 'version', 'root', 'output', 'timeoutMs']
const RETRY_FIELDS = ['attempts', 'initialMs', 'maxMs', 'factor', 'jitter']
const COMPENSATE_FIELDS = ['run', 'input', 'retry', 'timeoutMs']
const OPS = ['eq', 'ne', 'gt', 'gte', 'lt', 'lte', 'truthy', 'falsy', 'exists', 'in']

/**
 * Why a capability's version range (`name@range`) does not parse, or undefined when it does: the
 * core's parser, the one the mesh routes by, reached through an engine. Plain `workflow()` has
 * none, so the runtime passes one where it validates (`define`, `start` of a definition object).
 */
export type RangeCheck = (capability: string) => string | undefined

type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
type Obj = { [key: string]: Json }

// ---------------------------------------------------------------------------------------------
// The guarded copy

const ABSENT = Symbol('absent')

interface Copying {
  budget: number
  readonly trail: (string | number)[]
  readonly ancestors: Set<object>
}

function trailText(trail: readonly (string | number)[]): string {
  let s = 'definition'
  for (const p of trail) s += typeof p === 'number' ? `[${p}]` : /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(p) ? `.${p}` : `[${JSON.stringify(p)}]`
  return s
}

function copyFail(c: Copying, what: string): never {
  const path = trailText(c.trail)
  throw definitionInvalid(`${path} ${what}`, { path })
}

/** Whether `value` is a plain object: its prototype is null or a prototype whose own is null (any realm's Object.prototype). */
function isPlain(value: object): boolean {
  if (Object.prototype.toString.call(value) !== '[object Object]') return false
  const proto: unknown = Object.getPrototypeOf(value)
  return proto === null || Object.getPrototypeOf(proto) === null
}

function copyJson(c: Copying, value: unknown, depth: number): Json | typeof ABSENT {
  if (--c.budget < 0) copyFail(c, `makes the definition larger than ${DEFINITION_LIMITS.maxValues} values`)
  switch (typeof value) {
    case 'string':
      if (!wellFormed(value)) copyFail(c, 'holds a lone surrogate (not well-formed UTF-16)')
      return value
    case 'number':
      // NaN passes here: the check of the field it stands in refuses it, naming the node.
      return value
    case 'boolean':
      return value
    case 'undefined':
      return ABSENT
    case 'object':
      break
    default:
      copyFail(c, `is ${shown(value)}: a definition holds JSON values only`)
  }
  if (value === null) return null
  if (depth >= DEFINITION_LIMITS.maxJsonDepth) copyFail(c, `nests deeper than ${DEFINITION_LIMITS.maxJsonDepth} levels`)
  if (c.ancestors.has(value)) copyFail(c, 'is circular (it holds itself)')
  c.ancestors.add(value)
  try {
    // Array.isArray throws on a revoked proxy.
    return guarded(c, () => Array.isArray(value)) ? copyArray(c, value as unknown[], depth) : copyObject(c, value, depth)
  } finally {
    c.ancestors.delete(value)
  }
}

function guarded<T>(c: Copying, read: () => T): T {
  try {
    return read()
  } catch (error) {
    if (error instanceof Error && (error as { code?: unknown }).code === 'DEFINITION_INVALID') throw error
    return copyFail(c, `could not be read: ${error instanceof Error ? error.message : shown(error)}`)
  }
}

function copyArray(c: Copying, value: readonly unknown[], depth: number): Json[] {
  const length = guarded(c, () => value.length)
  if (length > c.budget) copyFail(c, `makes the definition larger than ${DEFINITION_LIMITS.maxValues} values`)
  const out: Json[] = []
  for (let i = 0; i < length; i++) {
    c.trail.push(i)
    const item = copyJson(
      c,
      guarded(c, () => value[i]),
      depth + 1,
    )
    if (item === ABSENT) copyFail(c, 'is undefined (a definition holds JSON values only)')
    out.push(item)
    c.trail.pop()
  }
  return out
}

function copyObject(c: Copying, value: object, depth: number): Obj {
  if (!guarded(c, () => isPlain(value))) copyFail(c, `is ${describe(value)}: a definition holds plain objects and arrays only`)
  const keys = guarded(c, () => Object.keys(value))
  const out: Obj = {}
  for (const key of keys) {
    c.trail.push(key)
    if (key === '__proto__') copyFail(c, 'is a key that would set a prototype')
    if (!wellFormed(key)) copyFail(c, 'is a key holding a lone surrogate')
    const item = copyJson(
      c,
      guarded(c, () => (value as Record<string, unknown>)[key]),
      depth + 1,
    )
    if (item !== ABSENT) out[key] = item
    c.trail.pop()
  }
  return out
}

function describe(value: object): string {
  try {
    const name = (Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null)?.constructor?.name
    return typeof name === 'string' && name !== '' ? `a ${name}` : 'an object that is not plain'
  } catch {
    return 'an object that is not plain'
  }
}

// ---------------------------------------------------------------------------------------------
// The checks

/** Where a node sits, for messages: its id once known, its kind, its path from the definition. */
interface At {
  id: string | undefined
  readonly kind: string
  readonly path: string
}

interface PendingRef {
  readonly ref: string
  readonly at: At | undefined
  readonly field: string
  readonly inInstance: boolean
}

interface Checking {
  workflow: string | undefined
  readonly ids: Map<string, At>
  readonly unnamed: { node: Obj; at: At; prefix: string }[]
  readonly refs: PendingRef[]
  readonly signals: Set<string>
  readonly synthetic: { id: string; owner: At }[]
  /** The continueAsNew nodes, whose place is checked once the root is known. */
  readonly continues: At[]
  nodes: number
  readonly checkRange: RangeCheck | undefined
}

function where(k: Checking, at: At | undefined): string {
  const head = k.workflow === undefined ? '' : `workflow ${JSON.stringify(k.workflow)}: `
  if (at === undefined) return head
  return `${head}${at.id === undefined ? `the ${at.kind} node` : `node ${JSON.stringify(at.id)}`} at ${at.path}: `
}

function fail(k: Checking, at: At | undefined, field: string, must: string): never {
  const details: Record<string, unknown> = { path: at === undefined ? `definition.${field}` : `${at.path}.${field}` }
  if (at?.id !== undefined) details['node'] = at.id
  throw definitionInvalid(`${where(k, at)}${field} ${must}`, details)
}

function isObj(value: Json | undefined): value is Obj {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

function onlyFields(k: Checking, at: At | undefined, value: Obj, allowed: readonly string[], what: string): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) fail(k, at, JSON.stringify(key), `is not a field of ${what} (its fields: ${allowed.join(', ')})`)
  }
}

/** A name with the grammar of agent names (a workflow, a function, a mapping, a condition). */
function checkedName(k: Checking, at: At | undefined, field: string, value: Json | undefined): string {
  if (typeof value !== 'string') fail(k, at, field, `must be a name (a string), not ${shown(value)}`)
  try {
    checkName(value, field, 'option')
  } catch (error) {
    fail(k, at, field, `is not a valid name: ${(error as Error).message}`)
  }
  if (PROTOTYPE_KEYS.has(value)) fail(k, at, field, `may not be ${JSON.stringify(value)}`)
  return value
}

/** A node id, or a signal name: `[A-Za-z0-9_.-]{1,64}`, never a prototype key. */
function checkedId(k: Checking, at: At | undefined, field: string, value: Json | undefined): string {
  if (typeof value !== 'string' || !ID.test(value)) fail(k, at, field, `must be 1 to 64 of A-Z a-z 0-9 _ . -, not ${shown(value)}`)
  if (PROTOTYPE_KEYS.has(value)) fail(k, at, field, `may not be ${JSON.stringify(value)}`)
  return value
}

function checkedCapability(k: Checking, at: At, field: string, value: Json | undefined): string {
  if (typeof value !== 'string' || value === '') fail(k, at, field, `must be a capability (name@range), not ${shown(value)}`)
  const split = value.indexOf('@')
  checkedName(k, at, field, split < 0 ? value : value.slice(0, split))
  if (split >= 0 && (split === value.length - 1 || value.length - split > 256)) fail(k, at, field, `has an empty or overlong version range: ${shown(value)}`)
  const why = split < 0 ? undefined : k.checkRange?.(value)
  if (why !== undefined) fail(k, at, field, `has a version range that does not parse (${shown(value)}): ${why}`)
  return value
}

function wholeNumber(k: Checking, at: At | undefined, field: string, value: Json | undefined, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(k, at, field, `must be a whole number from ${min} to ${max}, not ${shown(value)}`)
  }
  return value
}

function milliseconds(k: Checking, at: At | undefined, field: string, value: Json | undefined): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > Number.MAX_SAFE_INTEGER) {
    fail(k, at, field, `must be a number of ms from 0 to ${Number.MAX_SAFE_INTEGER}, not ${shown(value)}`)
  }
  return value
}

/** A timeout: left out or Infinity (none: left out of the result), or a number of ms > 0. */
function timeout(k: Checking, at: At | undefined, field: string, value: Json | undefined): number | undefined {
  if (value === undefined || value === Infinity) return undefined
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > Number.MAX_SAFE_INTEGER) {
    fail(k, at, field, `must be a number of ms > 0 (or Infinity, or left out, for none), not ${shown(value)}`)
  }
  return value
}

function retry(k: Checking, at: At, field: string, value: Json | undefined): RetryPolicy | undefined {
  if (value === undefined) return undefined
  if (!isObj(value)) fail(k, at, field, `must be a retry policy (an object), not ${shown(value)}`)
  onlyFields(k, at, value, RETRY_FIELDS, 'a retry policy')
  const out: RetryPolicy = {}
  if (value['attempts'] !== undefined) out.attempts = wholeNumber(k, at, `${field}.attempts`, value['attempts'], 1, DEFINITION_LIMITS.maxAttempts)
  if (value['initialMs'] !== undefined) out.initialMs = milliseconds(k, at, `${field}.initialMs`, value['initialMs'])
  if (value['maxMs'] !== undefined) out.maxMs = milliseconds(k, at, `${field}.maxMs`, value['maxMs'])
  const factor = value['factor']
  if (factor !== undefined) {
    if (typeof factor !== 'number' || !Number.isFinite(factor) || factor < 1 || factor > 1_000) {
      fail(k, at, `${field}.factor`, `must be a number from 1 to 1000, not ${shown(factor)}`)
    }
    out.factor = factor
  }
  const jitter = value['jitter']
  if (jitter !== undefined) {
    if (typeof jitter !== 'boolean') fail(k, at, `${field}.jitter`, `must be true or false, not ${shown(jitter)}`)
    out.jitter = jitter
  }
  return out
}

function join(k: Checking, at: At, value: Json | undefined, branches: number): Join | undefined {
  if (value === undefined || value === 'all' || value === 'any') return value
  if (!isObj(value)) fail(k, at, 'join', `must be 'all', 'any' or { quorum: n }, not ${shown(value)}`)
  onlyFields(k, at, value, ['quorum'], 'a join')
  const max = Math.min(branches, DEFINITION_LIMITS.maxInstances)
  const quorum = value['quorum']
  if (typeof quorum === 'number' && Number.isInteger(quorum) && quorum > max) {
    fail(k, at, 'join.quorum', `is ${quorum}, above the ${max} branches that could reach it`)
  }
  return { quorum: wholeNumber(k, at, 'join.quorum', quorum, 1, max) }
}

function run(k: Checking, at: At, field: string, value: Json | undefined): StepRun {
  if (!isObj(value)) fail(k, at, field, `must be { fn: name } or { capability: name@range }, not ${shown(value)}`)
  const keys = Object.keys(value)
  if (keys.length !== 1 || (keys[0] !== 'fn' && keys[0] !== 'capability')) fail(k, at, field, 'must hold exactly one of fn or capability')
  return keys[0] === 'fn'
    ? { fn: checkedName(k, at, `${field}.fn`, value['fn']) }
    : { capability: checkedCapability(k, at, `${field}.capability`, value['capability']) }
}

/** A JSON value that survives JSON unchanged (no Infinity): a literal, a condition's value. */
function literal(k: Checking, at: At | undefined, field: string, value: Json): Json {
  if (typeof value === 'number' && !Number.isFinite(value)) fail(k, at, field, `holds ${value}, which JSON cannot carry`)
  if (Array.isArray(value)) for (let i = 0; i < value.length; i++) literal(k, at, `${field}[${i}]`, value[i]!)
  else if (isObj(value)) for (const key of Object.keys(value)) literal(k, at, `${field}.${key}`, value[key]!)
  return value
}

function refString(k: Checking, at: At | undefined, field: string, value: string, inInstance: boolean): void {
  if (value.length > MAX_REF_LENGTH) fail(k, at, field, `is a reference longer than ${MAX_REF_LENGTH} characters`)
  k.refs.push({ ref: value, at, field, inInstance })
}

function input(k: Checking, at: At | undefined, field: string, value: Json, inInstance: boolean, depth: number): InputSpec {
  if (depth >= MAX_SPEC_DEPTH) fail(k, at, field, `nests deeper than ${MAX_SPEC_DEPTH} levels`)
  if (typeof value === 'string') {
    if (value[0] === '$') refString(k, at, field, value, inInstance)
    return value
  }
  if (typeof value === 'number') return literal(k, at, field, value) as number
  if (value === null || typeof value !== 'object') return value
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) input(k, at, `${field}[${i}]`, value[i]!, inInstance, depth + 1)
    return value
  }
  const keys = Object.keys(value)
  if (keys.includes('$literal')) {
    if (keys.length !== 1) fail(k, at, field, 'holds $literal beside other fields: { $literal: value } holds nothing else')
    literal(k, at, `${field}.$literal`, value['$literal']!)
    return value
  }
  if (keys.includes('$fn')) {
    onlyFields(k, at, value, ['$fn', 'arg'], 'a mapping ({ $fn, arg })')
    checkedName(k, at, `${field}.$fn`, value['$fn'])
    if (value['arg'] !== undefined) input(k, at, `${field}.arg`, value['arg'], inInstance, depth + 1)
    return value
  }
  for (const key of keys) {
    if (key[0] === '$') fail(k, at, `${field}.${key}`, 'is an unknown $ field (data whose keys start with $ is written { $literal: ... })')
    input(k, at, `${field}.${key}`, value[key]!, inInstance, depth + 1)
  }
  return value
}

function inputOr(k: Checking, at: At, field: string, value: Json | undefined, inInstance: boolean): InputSpec | undefined {
  return value === undefined ? undefined : input(k, at, field, value, inInstance, 0)
}

function condition(k: Checking, at: At, field: string, value: Json | undefined, inInstance: boolean, depth: number): Condition {
  if (depth >= MAX_SPEC_DEPTH) fail(k, at, field, `nests deeper than ${MAX_SPEC_DEPTH} levels`)
  if (!isObj(value)) fail(k, at, field, `must be a condition (an object), not ${shown(value)}`)
  if ('path' in value) {
    onlyFields(k, at, value, ['path', 'op', 'value'], 'a comparison')
    const path = value['path']
    if (typeof path !== 'string' || path[0] !== '$') fail(k, at, `${field}.path`, `must be a reference ($input..., $steps..., ...), not ${shown(path)}`)
    refString(k, at, `${field}.path`, path, inInstance)
    const op = value['op']
    if (typeof op !== 'string' || !OPS.includes(op)) fail(k, at, `${field}.op`, `must be one of ${OPS.join(', ')}, not ${shown(op)}`)
    const given = value['value']
    if (op === 'truthy' || op === 'falsy' || op === 'exists') {
      if (given !== undefined) fail(k, at, `${field}.value`, `is given, but ${op} compares with no value`)
    } else if (given === undefined) {
      fail(k, at, `${field}.value`, `is missing: ${op} compares with a value`)
    } else if (op === 'in' && !Array.isArray(given)) {
      fail(k, at, `${field}.value`, `must be a list for in, not ${shown(given)}`)
    } else if ((op === 'gt' || op === 'gte' || op === 'lt' || op === 'lte') && typeof given !== 'number' && typeof given !== 'string') {
      fail(k, at, `${field}.value`, `must be a number or a string for ${op}, not ${shown(given)}`)
    }
    if (given !== undefined) literal(k, at, `${field}.value`, given)
    return value as Condition
  }
  for (const combine of ['all', 'any'] as const) {
    if (combine in value) {
      onlyFields(k, at, value, [combine], `an ${combine} condition`)
      const list = nonEmpty(k, at, `${field}.${combine}`, value[combine], 'conditions', 'one condition')
      for (let i = 0; i < list.length; i++) condition(k, at, `${field}.${combine}[${i}]`, list[i], inInstance, depth + 1)
      return value as Condition
    }
  }
  if ('not' in value) {
    onlyFields(k, at, value, ['not'], 'a not condition')
    condition(k, at, `${field}.not`, value['not'], inInstance, depth + 1)
    return value as Condition
  }
  if ('fn' in value) {
    onlyFields(k, at, value, ['fn', 'arg'], 'a condition function ({ fn, arg })')
    checkedName(k, at, `${field}.fn`, value['fn'])
    if (value['arg'] !== undefined) input(k, at, `${field}.arg`, value['arg'], inInstance, depth + 1)
    return value as Condition
  }
  return fail(k, at, field, 'must hold path (with op), all, any, not or fn')
}

function compensation(k: Checking, at: At, value: Json | undefined, inInstance: boolean): Compensation | undefined {
  if (value === undefined) return undefined
  if (!isObj(value)) fail(k, at, 'compensate', `must be { run, input?, retry?, timeoutMs? }, not ${shown(value)}`)
  onlyFields(k, at, value, COMPENSATE_FIELDS, 'a compensation')
  k.synthetic.push({ id: `${at.id}${COMPENSATE_SUFFIX}`, owner: at })
  return clean<Compensation>({
    run: run(k, at, 'compensate.run', value['run']),
    input: inputOr(k, at, 'compensate.input', value['input'], inInstance),
    retry: retry(k, at, 'compensate.retry', value['retry']),
    timeoutMs: timeout(k, at, 'compensate.timeoutMs', value['timeoutMs']),
  })
}

/** `value` without its undefined fields (the JSON has none). */
function clean<T extends object>(value: { [K in keyof T]-?: T[K] | undefined }): T {
  for (const key of Object.keys(value)) if ((value as Record<string, unknown>)[key] === undefined) delete (value as Record<string, unknown>)[key]
  return value as T
}

/** A list that holds one item at least: an empty one is named as such (not as "not an array"). */
function nonEmpty(k: Checking, at: At, field: string, value: Json | undefined, items: string, one: string): Json[] {
  if (!Array.isArray(value)) fail(k, at, field, `must be a non-empty list of ${items}, not ${shown(value)}`)
  if (value.length === 0) fail(k, at, field, `is an empty list: it must hold ${one} at least`)
  return value
}

/** A scatterGather's `agents`: agent ids, each once, or a reference to a list of them. */
function agentList(k: Checking, at: At, value: Json | undefined, inInstance: boolean): readonly string[] | Ref | undefined {
  if (value === undefined) return undefined
  if (typeof value === 'string' && value[0] === '$') {
    refString(k, at, 'agents', value, inInstance)
    return value as Ref
  }
  const ids = nonEmpty(k, at, 'agents', value, 'agent ids (or a reference to one, $input...)', 'one agent')
  if (ids.length > DEFINITION_LIMITS.maxInstances)
    fail(k, at, 'agents', `lists ${ids.length} agents, above the ${DEFINITION_LIMITS.maxInstances} a node may run`)
  const seen = new Set<string>()
  return ids.map((id, i) => {
    const name = checkedName(k, at, `agents[${i}]`, id)
    if (seen.has(name)) fail(k, at, `agents[${i}]`, `repeats ${name}: a scatterGather calls each agent once`)
    seen.add(name)
    return name
  })
}

function children(k: Checking, at: At, field: string, value: Json | undefined, depth: number, inInstance: boolean): WorkflowNode[] {
  return nonEmpty(k, at, field, value, 'nodes', 'one node').map((v, i) => node(k, v, `${at.path}.${field}[${i}]`, depth + 1, inInstance))
}

function node(k: Checking, value: Json | undefined, path: string, depth: number, inInstance: boolean): WorkflowNode {
  if (!isObj(value)) {
    throw definitionInvalid(`${where(k, undefined)}${path} must be a node (an object with kind and id), not ${shown(value)}`, { path })
  }
  const kind = value['kind']
  if (typeof kind !== 'string' || !KINDS.includes(kind as NodeKind)) {
    throw definitionInvalid(`${where(k, undefined)}${path}.kind must be one of ${KINDS.join(', ')}, not ${shown(kind)}`, { path })
  }
  const at: At = { id: undefined, kind, path }
  const k0 = kind as NodeKind
  const prefix = PREFIX[k0]
  if (value['id'] !== undefined || prefix === undefined) {
    const id = checkedId(k, at, 'id', value['id'])
    at.id = id
    const earlier = k.ids.get(id)
    if (earlier !== undefined) fail(k, at, 'id', `is the id of the node at ${earlier.path} too: ids are unique in a definition`)
    k.ids.set(id, at)
  }
  if (++k.nodes > DEFINITION_LIMITS.maxNodes) fail(k, at, 'kind', `makes more than ${DEFINITION_LIMITS.maxNodes} nodes`)
  if (depth > DEFINITION_LIMITS.maxNodeDepth) fail(k, at, 'kind', `nests deeper than ${DEFINITION_LIMITS.maxNodeDepth} levels of nodes`)
  onlyFields(k, at, value, FIELDS[k0], `a ${kind} node`)
  // Numbered in pre-order: the container's turn is taken before its children's.
  const unnamed = at.id === undefined ? { node: {} as Obj, at, prefix: prefix! } : undefined
  if (unnamed !== undefined) k.unnamed.push(unnamed)
  const out = nodeFields(k, k0, at, value, depth, inInstance) as WorkflowNode & Obj
  if (unnamed !== undefined) unnamed.node = out
  return out
}

/** The node's checked fields, in a fixed order (kind, id, then its own). */
function nodeFields(k: Checking, kind: NodeKind, at: At, v: Obj, depth: number, inInstance: boolean): object {
  const head = { kind, id: at.id ?? '' }
  switch (kind) {
    case 'step':
    case 'child': {
      const common = {
        input: inputOr(k, at, 'input', v['input'], inInstance),
        retry: retry(k, at, 'retry', v['retry']),
        timeoutMs: timeout(k, at, 'timeoutMs', v['timeoutMs']),
        compensate: compensation(k, at, v['compensate'], inInstance),
      }
      return kind === 'step'
        ? clean<StepNode>({ kind, id: head.id, run: run(k, at, 'run', v['run']), ...common })
        : clean<ChildNode>({ kind, id: head.id, workflow: checkedName(k, at, 'workflow', v['workflow']), ...common })
    }
    case 'sequence':
      return { ...head, steps: children(k, at, 'steps', v['steps'], depth, inInstance) }
    case 'parallel': {
      const branches = children(k, at, 'branches', v['branches'], depth, inInstance)
      return clean({ ...head, branches, join: join(k, at, v['join'], branches.length), timeoutMs: timeout(k, at, 'timeoutMs', v['timeoutMs']) })
    }
    case 'branch': {
      const arms = nonEmpty(k, at, 'arms', v['arms'], 'arms ({ when, then })', 'one arm')
      const out = arms.map((arm, i) => {
        if (!isObj(arm)) fail(k, at, `arms[${i}]`, `must be { when, then }, not ${shown(arm)}`)
        onlyFields(k, at, arm, ['when', 'then'], 'an arm')
        return {
          when: condition(k, at, `arms[${i}].when`, arm['when'], inInstance, 0),
          // biome-ignore lint/suspicious/noThenProperty: the arm's shape is the definition's JSON ({ when, then }); a node is no function
          then: node(k, arm['then'], `${at.path}.arms[${i}].then`, depth + 1, inInstance),
        }
      })
      const otherwise = v['otherwise'] === undefined ? undefined : node(k, v['otherwise'], `${at.path}.otherwise`, depth + 1, inInstance)
      return clean({ ...head, arms: out, otherwise })
    }
    case 'loop': {
      if ((v['while'] === undefined) === (v['until'] === undefined)) fail(k, at, 'while/until', 'must be given exactly one of the two')
      return clean({
        ...head,
        while: v['while'] === undefined ? undefined : condition(k, at, 'while', v['while'], inInstance, 0),
        until: v['until'] === undefined ? undefined : condition(k, at, 'until', v['until'], inInstance, 0),
        maxIterations: wholeNumber(k, at, 'maxIterations', v['maxIterations'], 1, DEFINITION_LIMITS.maxIterations),
        body: node(k, v['body'], `${at.path}.body`, depth + 1, inInstance),
      })
    }
    case 'forEach': {
      const items = v['items']
      if (typeof items !== 'string' || items[0] !== '$') fail(k, at, 'items', `must be a reference to a list ($input..., $steps...), not ${shown(items)}`)
      refString(k, at, 'items', items, inInstance)
      const concurrency = v['concurrency']
      return clean({
        ...head,
        items,
        concurrency: concurrency === undefined ? undefined : wholeNumber(k, at, 'concurrency', concurrency, 1, DEFINITION_LIMITS.maxInstances),
        join: join(k, at, v['join'], DEFINITION_LIMITS.maxInstances),
        timeoutMs: timeout(k, at, 'timeoutMs', v['timeoutMs']),
        body: node(k, v['body'], `${at.path}.body`, depth + 1, true),
      })
    }
    case 'scatterGather': {
      const aggregate = v['aggregate']
      if (aggregate !== undefined) {
        if (!isObj(aggregate)) fail(k, at, 'aggregate', `must be { fn: name }, not ${shown(aggregate)}`)
        onlyFields(k, at, aggregate, ['fn'], 'an aggregate')
      }
      k.synthetic.push({ id: `${at.id}${CALL_SUFFIX}`, owner: at })
      const agents = agentList(k, at, v['agents'], inInstance)
      return clean({
        ...head,
        capability: checkedCapability(k, at, 'capability', v['capability']),
        agents,
        input: inputOr(k, at, 'input', v['input'], true),
        join: join(k, at, v['join'], Array.isArray(agents) ? agents.length : DEFINITION_LIMITS.maxInstances),
        timeoutMs: timeout(k, at, 'timeoutMs', v['timeoutMs']),
        aggregate: aggregate === undefined ? undefined : { fn: checkedName(k, at, 'aggregate.fn', (aggregate as Obj)['fn']) },
      })
    }
    case 'sleep':
      return { ...head, ms: milliseconds(k, at, 'ms', v['ms']) }
    case 'pipeline': {
      const items = v['items']
      if (typeof items !== 'string' || items[0] !== '$') fail(k, at, 'items', `must be a reference to a list ($input..., $steps...), not ${shown(items)}`)
      refString(k, at, 'items', items, inInstance)
      const buffer = v['buffer']
      return clean({
        ...head,
        items,
        stages: children(k, at, 'stages', v['stages'], depth, true),
        buffer: buffer === undefined ? undefined : wholeNumber(k, at, 'buffer', buffer, 1, DEFINITION_LIMITS.maxInstances),
        timeoutMs: timeout(k, at, 'timeoutMs', v['timeoutMs']),
      })
    }
    case 'continueAsNew':
      k.continues.push(at)
      return clean({ ...head, input: inputOr(k, at, 'input', v['input'], inInstance) })
    case 'delegate':
      return clean({
        ...head,
        capability: checkedCapability(k, at, 'capability', v['capability']),
        input: inputOr(k, at, 'input', v['input'], inInstance),
        timeoutMs: timeout(k, at, 'timeoutMs', v['timeoutMs']),
        retry: retry(k, at, 'retry', v['retry']),
      })
    default: {
      const signal = checkedId(k, at, 'signal', v['signal'])
      k.signals.add(signal)
      const timeoutMs = timeout(k, at, 'timeoutMs', v['timeoutMs'])
      const onTimeout = v['onTimeout']
      if (onTimeout !== undefined) {
        if (onTimeout !== 'fail' && onTimeout !== 'continue') fail(k, at, 'onTimeout', `must be 'fail' or 'continue', not ${shown(onTimeout)}`)
        if (timeoutMs === undefined) fail(k, at, 'onTimeout', 'is given without a timeoutMs')
      }
      return clean({ ...head, signal, timeoutMs, onTimeout })
    }
  }
}

/** Gives each unnamed container `<prefix>-<n>`, n counting unnamed containers in pre-order, skipping ids taken. */
function nameContainers(k: Checking): void {
  let n = 1
  for (const { node, at, prefix } of k.unnamed) {
    let id = `${prefix}-${n++}`
    while (k.ids.has(id)) id = `${prefix}-${n++}`
    node['id'] = id
    at.id = id
    k.ids.set(id, at)
  }
}

function checkSynthetic(k: Checking): void {
  for (const { id, owner } of k.synthetic) {
    const taken = k.ids.get(id)
    if (taken !== undefined) fail(k, taken, 'id', `is the id compiling gives to a part of node ${JSON.stringify(owner.id)}: choose another`)
  }
}

function checkRefs(k: Checking): void {
  for (const { ref, at, field, inInstance } of k.refs) {
    const p = readRef(ref)
    if (typeof p === 'string') fail(k, at, field, `holds the reference ${shown(ref)}, which ${p}`)
    if ((p.root === 'item' || p.root === 'index') && !inInstance) {
      fail(k, at, field, `reads $${p.root} outside a forEach body, a pipeline stage or a scatterGather's input, where it has no value`)
    }
    if (p.root === 'steps' && !k.ids.has(p.name!)) {
      const dotted = [...k.ids.keys()].find((id) => id.startsWith(`${p.name}.`))
      const hint = dotted === undefined ? '' : ` (an id holding a dot is written $steps[${JSON.stringify(dotted)}])`
      fail(k, at, field, `reads $steps.${p.name}, which names no node${hint}`)
    }
    if (p.root === 'steps' && k.ids.get(p.name!)!.kind === 'continueAsNew') {
      fail(k, at, field, `reads $steps.${p.name}, a continueAsNew node, which has no output (its generation ends there)`)
    }
    if (p.root === 'signals' && !k.signals.has(p.name!)) fail(k, at, field, `reads $signals.${p.name}, a signal no waitFor waits for`)
  }
}

/** Where a continueAsNew may stand, for the message that refuses one anywhere else. */
const TAIL_RULE =
  'it ends the generation, so it stands only in tail position: the root itself, the last node of a sequence in tail position, ' +
  'or an arm (or otherwise) of a branch in tail position'

/**
 * Why each continueAsNew under `node` is not in tail position (undefined: it is). `outside` is
 * why `node` itself is not (undefined: it is in tail position). A sequence passes its own place
 * to its last node and a branch to every arm, since nothing of theirs runs after those; every
 * other container runs its children beside others, again, or with more to follow.
 */
function misplaced(node: WorkflowNode, outside: string | undefined, found: Map<string, string | undefined>): void {
  const inside = `inside ${node.kind} ${JSON.stringify(node.id)}`
  switch (node.kind) {
    case 'continueAsNew':
      found.set(node.id, outside)
      return
    case 'sequence':
      node.steps.forEach((child, i) => {
        const next = node.steps[i + 1]
        misplaced(child, next === undefined ? outside : `followed by node ${JSON.stringify(next.id)} in sequence ${JSON.stringify(node.id)}`, found)
      })
      return
    case 'branch':
      for (const arm of node.arms) misplaced(arm.then, outside, found)
      if (node.otherwise !== undefined) misplaced(node.otherwise, outside, found)
      return
    case 'parallel':
      for (const child of node.branches) misplaced(child, inside, found)
      return
    case 'pipeline':
      for (const child of node.stages) misplaced(child, inside, found)
      return
    case 'loop':
    case 'forEach':
      misplaced(node.body, inside, found)
      return
    default:
      // Leaves: no node inside them (a compensation and a scatterGather's call are no nodes of the definition).
      return
  }
}

/** A continueAsNew ends the generation, so nothing of it may still be running or follow it. */
function checkContinues(k: Checking, root: WorkflowNode): void {
  if (k.continues.length === 0) return
  const found = new Map<string, string | undefined>()
  misplaced(root, undefined, found)
  for (const at of k.continues) {
    const why = found.get(at.id!)
    if (why !== undefined) fail(k, at, 'kind', `is continueAsNew ${why}: ${TAIL_RULE}`)
  }
}

function freeze(value: unknown): void {
  if (value === null || typeof value !== 'object' || Object.isFrozen(value)) return
  Object.freeze(value)
  for (const v of Object.values(value)) freeze(v)
}

/**
 * `value` checked as a workflow definition: a fresh, deeply frozen copy, every container id
 * filled in, `Infinity` timeouts left out, and its version set (the content hash unless one was
 * given; a given `sha256:` version must be the content hash). `DEFINITION_INVALID` otherwise.
 * `checkRange`, when given, checks each capability's version range with the mesh's parser.
 */
export function validateDefinition(value: unknown, checkRange?: RangeCheck): WorkflowDefinition {
  const copying: Copying = { budget: DEFINITION_LIMITS.maxValues, trail: [], ancestors: new Set() }
  const top = copyJson(copying, value, 0)
  const k: Checking = { workflow: undefined, ids: new Map(), unnamed: [], refs: [], signals: new Set(), synthetic: [], continues: [], nodes: 0, checkRange }
  if (top === ABSENT || !isObj(top)) throw definitionInvalid(`a workflow definition must be an object, not ${shown(value)}`, { path: 'definition' })
  k.workflow = checkedName(k, undefined, 'name', top['name'])
  onlyFields(k, undefined, top, TOP_FIELDS, 'a workflow definition')
  if (top['format'] !== 1) fail(k, undefined, 'format', `must be 1, not ${shown(top['format'])}`)
  const root = node(k, top['root'], 'root', 0, false)
  const output = top['output'] === undefined ? undefined : input(k, undefined, 'output', top['output'], false, 0)
  const timeoutMs = timeout(k, undefined, 'timeoutMs', top['timeoutMs'])
  nameContainers(k)
  checkContinues(k, root)
  checkSynthetic(k)
  checkRefs(k)
  const content = { name: k.workflow, root, output, timeoutMs }
  const hash = contentVersion(content)
  const given = top['version']
  if (given !== undefined) {
    if (typeof given !== 'string' || !VERSION.test(given)) fail(k, undefined, 'version', `must be 1 to 64 of A-Z a-z 0-9 . _ : + -, not ${shown(given)}`)
    if (given.startsWith(HASH_PREFIX) && given !== hash) {
      fail(k, undefined, 'version', `is ${given}, but the definition's content hashes to ${hash} (leave version out to have it computed)`)
    }
  }
  const definition = clean<WorkflowDefinition>({
    format: 1,
    name: k.workflow,
    version: (given as string | undefined) ?? hash,
    root,
    output,
    timeoutMs,
    '~types': undefined,
  })
  freeze(definition)
  return definition
}
