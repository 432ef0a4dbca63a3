/**
 * A run's data: the outputs of its nodes per scope, the scope tree (a loop iteration, a
 * forEach/scatterGather instance or a pipeline stage's item is a scope, from the core's SCOPE records), the decisions
 * taken (a branch's arm, a forEach's items, a scatterGather's agents) and the signals received.
 * Containers' outputs are computed when asked, from their children's.
 */
import { WORKFLOW_LAYOUT, WORKFLOW_LIMITS, WORKFLOW_NODES } from '../engines/manifest.js'
import type { CompiledWorkflow } from './compile.js'
import type { DataScope } from './refs.js'

const NODE_WORDS = WORKFLOW_LAYOUT.nodeWords

interface Scope {
  readonly parent: number
  /** The LOOP/MAP/PIPELINE node (program index) that made it; -1 for the root scope. */
  readonly node: number
  readonly index: number
  /** A pipeline scope's stage (0 in every other scope). */
  readonly stage: number
}

/** How a node ended in a scope (NODE_OUTCOMES). */
const OK = 0

/** What every run of a compiled workflow shares: node kinds, and each node's nearest enclosing LOOP/MAP/PIPELINE. */
interface Shape {
  readonly kinds: Float64Array
  readonly owner: Int32Array
  /** For a node inside a pipeline (its nearest owner): the stage it lies in; -1 otherwise. */
  readonly stage: Int32Array
}

const scoping = (kind: number | undefined) => kind === WORKFLOW_NODES.loop || kind === WORKFLOW_NODES.map || kind === WORKFLOW_NODES.pipeline

const shapes = new WeakMap<CompiledWorkflow, Shape>()

function shapeOf(compiled: CompiledWorkflow): Shape {
  let shape = shapes.get(compiled)
  if (shape) return shape
  const { program, parent } = compiled
  const count = program[1]!
  const kinds = new Float64Array(count)
  for (let i = 0; i < count; i++) kinds[i] = program[2 + i * NODE_WORDS]!
  const owner = new Int32Array(count)
  const stage = new Int32Array(count).fill(-1)
  for (let i = 0; i < count; i++) {
    let below = i
    let p = parent[i]!
    while (p >= 0 && !scoping(kinds[p])) {
      below = p
      p = parent[p]!
    }
    owner[i] = p
    // The stage is the pipeline's child on the way up: its place among the pipeline's children.
    if (p >= 0 && kinds[p] === WORKFLOW_NODES.pipeline) stage[i] = childList(program, p).indexOf(below)
  }
  shape = { kinds, owner, stage }
  shapes.set(compiled, shape)
  return shape
}

/**
 * The map every run reads until it writes its first entry: a run idle on a signal writes none of
 * them, and seven empty Maps a run were a third of its memory.
 */
// biome-ignore lint/suspicious/noExplicitAny: one empty map shared by every type of entry, never written
export const NONE: Map<any, any> = new Map()

/** @internal `map` with `key` set: a map of its own in place of {@link NONE} the first time. */
export function put<K, V>(map: Map<K, V>, key: K, value: V): Map<K, V> {
  const own = map === NONE ? new Map<K, V>() : map
  own.set(key, value)
  return own
}

const ROOT: Scope = Object.freeze({ parent: -1, node: -1, index: 0, stage: 0 })

/**
 * The key of a node in a scope: a number (a string key cost a concatenation and a hash at each of
 * the ~20 lookups of a run's steps). Exact while scope ids stay under 2^53 / `maxNodes` (2^37).
 */
const slot = (scope: number, node: number): number => scope * WORKFLOW_LIMITS.maxNodes + node

/** A node's children (program indices), in order. */
function childList(program: Float64Array, node: number): number[] {
  const count = program[1]!
  const base = 2 + node * NODE_WORDS
  const start = program[base + 1]!
  const n = program[base + 2]!
  const area = 2 + count * NODE_WORDS + start
  const out: number[] = []
  for (let k = 0; k < n; k++) out.push(program[area + k]!)
  return out
}

export class RunData {
  /** Scopes but the root (0). */
  private scopes: Map<number, Scope> = NONE
  /** Scopes by the {@link slot} of their parent scope and node, in index order. */
  private children: Map<number, number[]> = NONE
  /** Outputs and outcomes by {@link slot}. */
  private outputs: Map<number, unknown> = NONE
  private outcomes: Map<number, number> = NONE
  /** Decision values and items by {@link slot}. */
  private decisions: Map<number, { value: number; items?: readonly unknown[] }> = NONE
  /** Payloads by signal name: every one received, and those not yet taken by a wait. */
  private lastSignal: Map<string, unknown> = NONE
  private unclaimed: Map<string, unknown[]> = NONE
  /** Payloads in `unclaimed`, of every name. */
  private held = 0
  /** Pipeline scopes by `<parent scope>/<node>/<item>/<stage>`. */
  private stages: Map<string, number> = NONE
  /** Nearest enclosing LOOP/MAP/PIPELINE (program index) per node; -1 for none. */
  private readonly owner: Int32Array
  private readonly stageOf: Int32Array
  private readonly kinds: Float64Array

  constructor(
    readonly compiled: CompiledWorkflow,
    readonly input: unknown,
  ) {
    const shape = shapeOf(compiled)
    this.kinds = shape.kinds
    this.owner = shape.owner
    this.stageOf = shape.stage
  }

  private scope(id: number): Scope | undefined {
    return id === 0 ? ROOT : this.scopes.get(id)
  }

  kind(node: number): number {
    return this.kinds[node]!
  }

  /** A node's children (program indices), in order. */
  childrenOf(node: number): number[] {
    return childList(this.compiled.program, node)
  }

  addScope(id: number, node: number, parent: number, index: number, stage = 0): void {
    this.scopes = put(this.scopes, id, { parent, node, index, stage })
    if (this.kinds[node] === WORKFLOW_NODES.pipeline) {
      this.stages = put(this.stages, `${parent}/${node}/${index}/${stage}`, id)
      // Only the stages' scopes are listed per stage: `children` holds the last stage's, in item order.
      if (stage !== this.childrenOf(node).length - 1) return
    }
    const key = slot(parent, node)
    const list = this.children.get(key)
    if (list) list.push(id)
    else this.children = put(this.children, key, [id])
  }

  /** The scope's iteration indices from the outside in: `[i]` per enclosing scope, for idempotency keys. */
  indices(scope: number): number[] {
    const out: number[] = []
    for (let s = this.scope(scope); s && s.node >= 0; s = this.scope(s.parent)) out.push(s.index)
    return out.reverse()
  }

  setOutput(node: number, scope: number, value: unknown): void {
    this.outputs = put(this.outputs, slot(scope, node), value)
  }

  setOutcome(node: number, scope: number, outcome: number): void {
    this.outcomes = put(this.outcomes, slot(scope, node), outcome)
  }

  setDecision(node: number, scope: number, value: number, items?: readonly unknown[]): void {
    this.decisions = put(this.decisions, slot(scope, node), items === undefined ? { value } : { value, items })
  }

  decision(node: number, scope: number): { value: number; items?: readonly unknown[] } | undefined {
    return this.decisions.get(slot(scope, node))
  }

  /** A signal arrived: its payload is the last of its name, and waits to be taken by a wait. */
  signalled(name: string, payload: unknown): void {
    this.lastSignal = put(this.lastSignal, name, payload)
    const queue = this.unclaimed.get(name)
    if (queue) queue.push(payload)
    else this.unclaimed = put(this.unclaimed, name, [payload])
    this.held++
  }

  /** A wait took the oldest payload of its signal not yet taken. */
  takeSignal(name: string): unknown {
    const queue = this.unclaimed.get(name)
    if (queue === undefined || queue.length === 0) return undefined
    this.held--
    return queue.shift()
  }

  /** How many signals wait to be taken. */
  unclaimedSignals(): number {
    return this.held
  }

  /** The output of a node in a scope (undefined unless it succeeded). */
  output(node: number, scope: number): unknown {
    const key = slot(scope, node)
    if (this.outcomes.get(key) !== OK) return undefined
    if (this.outputs.has(key)) return this.outputs.get(key)
    switch (this.kinds[node]) {
      case WORKFLOW_NODES.sequence: {
        const children = this.childrenOf(node)
        return children.length === 0 ? undefined : this.output(children[children.length - 1]!, scope)
      }
      case WORKFLOW_NODES.parallel:
        return this.childrenOf(node).map((child) => this.output(child, scope))
      case WORKFLOW_NODES.branch: {
        const arm = this.decision(node, scope)?.value ?? -1
        return arm < 0 ? undefined : this.output(this.childrenOf(node)[arm]!, scope)
      }
      case WORKFLOW_NODES.loop: {
        const iterations = this.children.get(slot(scope, node))
        const last = iterations?.[iterations.length - 1]
        return last === undefined ? undefined : this.output(this.childrenOf(node)[0]!, last)
      }
      case WORKFLOW_NODES.pipeline: {
        const stages = this.childrenOf(node)
        const last = stages[stages.length - 1]!
        const n = this.decision(node, scope)?.value ?? 0
        const out: unknown[] = new Array(Math.max(0, n)).fill(undefined)
        for (let i = 0; i < out.length; i++) {
          const at = this.stages.get(`${scope}/${node}/${i}/${stages.length - 1}`)
          if (at !== undefined) out[i] = this.output(last, at)
        }
        return out
      }
      case WORKFLOW_NODES.map: {
        const body = this.childrenOf(node)[0]!
        const instances = this.children.get(slot(scope, node)) ?? []
        const n = this.decision(node, scope)?.value ?? 0
        const out: unknown[] = new Array(Math.max(0, n)).fill(undefined)
        for (const id of instances) {
          const index = this.scope(id)!.index
          if (index < out.length) out[index] = this.output(body, id)
        }
        return out
      }
      case WORKFLOW_NODES.sleep:
        return null
      default:
        // A step or a wait: their values are set when they end.
        return undefined
    }
  }

  /**
   * The scope that holds `node`'s instance as seen from `from`: the same iteration where `from`
   * lies inside it, else (a loop or forEach already left behind) its last one.
   */
  scopeFor(node: number, from: number): number | undefined {
    const owners: number[] = []
    for (let o = this.owner[node]!; o >= 0; o = this.owner[o]!) owners.push(o)
    owners.reverse()
    const chain: number[] = []
    for (let s: number | undefined = from; s !== undefined && s >= 0; s = this.scope(s)?.parent) chain.push(s)
    let current = 0
    for (let o = 0; o < owners.length; o++) {
      const owner = owners[o]!
      const within = chain.find((s) => this.scope(s)!.node === owner && this.scope(s)!.parent === current)
      if (this.kinds[owner] === WORKFLOW_NODES.pipeline) {
        // The stage that holds the node (the next owner down, or the node itself), for the same item if inside it.
        const stage = this.stageOf[o + 1 < owners.length ? owners[o + 1]! : node]!
        const next =
          within === undefined ? this.lastStarted(current, owner, stage) : this.stages.get(`${current}/${owner}/${this.scope(within)!.index}/${stage}`)
        if (next === undefined) return undefined
        current = next
        continue
      }
      if (within !== undefined) {
        current = within
        continue
      }
      const list = this.children.get(slot(current, owner))
      if (!list || list.length === 0) return undefined
      current = list[list.length - 1]!
    }
    return current
  }

  /** The scope of the highest item a pipeline's stage started. */
  private lastStarted(parent: number, pipeline: number, stage: number): number | undefined {
    const n = this.decision(pipeline, parent)?.value ?? 0
    for (let i = n - 1; i >= 0; i--) {
      const at = this.stages.get(`${parent}/${pipeline}/${i}/${stage}`)
      if (at !== undefined) return at
    }
    return undefined
  }

  /** The data a step or decision in `scope` reads its input from. */
  dataScope(scope: number): DataScope {
    let item: unknown
    let index: number | undefined
    for (let s = this.scope(scope); s && s.node >= 0; s = this.scope(s.parent)) {
      if (this.kinds[s.node] === WORKFLOW_NODES.map) {
        index = s.index
        item = this.decision(s.node, s.parent)?.items?.[s.index]
        break
      }
      if (this.kinds[s.node] === WORKFLOW_NODES.pipeline) {
        index = s.index
        if (s.stage === 0) {
          item = this.decision(s.node, s.parent)?.items?.[s.index]
        } else {
          const before = this.stages.get(`${s.parent}/${s.node}/${s.index}/${s.stage - 1}`)
          item = before === undefined ? undefined : this.output(this.childrenOf(s.node)[s.stage - 1]!, before)
        }
        break
      }
    }
    const instance = index === undefined ? {} : { item, index }
    return {
      input: this.input,
      ...instance,
      output: (nodeId) => {
        const node = this.compiled.index.get(nodeId)
        if (node === undefined) return undefined
        const at = this.scopeFor(node, scope)
        return at === undefined ? undefined : this.output(node, at)
      },
      signal: (name) => this.lastSignal.get(name),
    }
  }
}
