/**
 * Compiles a definition to the program the core runs: a Float64Array of
 * `[PROGRAM_FORMAT, nodeCount, nodeCount * NODE_WORDS node words, child lists]`, node 0 the root,
 * nodes numbered in pre-order, then one STEP node per compensation (listed by no container: only
 * the compensated step's `compensate` word points at it). A scatterGather is a MAP node whose one
 * child is a synthetic STEP `<id>.call` (one call per agent). A pipeline is a PIPELINE node whose
 * children are its stages. A continueAsNew and a delegate are STEP nodes the runtime tells apart
 * by their entry in `nodes` (which keeps their own kind). A run timeout is the root's timeout
 * word; a root whose own timeout means something else (a step's is per attempt, a waitFor's may
 * continue) is wrapped in a sequence `$run` that carries it.
 */
import { JOINS, WORKFLOW_LAYOUT, WORKFLOW_NODES } from '../engines/manifest.js'
import { childrenOf, type Join, type RetryPolicy, type StepNode, type WorkflowDefinition, type WorkflowNode } from './definition.js'
import { CALL_SUFFIX, COMPENSATE_SUFFIX, type RangeCheck, validateDefinition } from './validate.js'

/** A definition compiled: what the runtime needs to drive the core and execute its records. */
export interface CompiledWorkflow {
  /** Validated, ids filled in, version set (deeply frozen). */
  readonly definition: WorkflowDefinition
  /** The program of the core. */
  readonly program: Float64Array
  /**
   * The node at each program index. A compensation is a synthetic step `<stepId>.compensate`; a
   * scatterGather's call a synthetic step `<id>.call` (its parent is the scatterGather); a run
   * timeout on a step-like or waitFor root a synthetic sequence `$run` at index 0. A
   * continueAsNew or delegate keeps its own kind here though its program node is a STEP.
   */
  readonly nodes: readonly WorkflowNode[]
  /** Node id -> program index (synthetic nodes included). */
  readonly index: ReadonlyMap<string, number>
  /** Program index -> the index of the container listing it (-1: the root, compensations). */
  readonly parent: Int32Array
  /** WAIT signal index -> signal name. */
  readonly signals: readonly string[]
}

/** The id of the sequence that carries a run timeout for a root that cannot (never a user id: `$` is not in the id grammar). */
export const RUN_WRAPPER_ID = '$run'

/** Word offsets in a node. */
const W = { kind: 0, childStart: 1, childCount: 2, p1: 3, p2: 4, p3: 5, timeout: 6, compensate: 7, attempts: 8, initial: 9, max: 10, factor: 11 } as const

const RETRY_DEFAULTS: Required<RetryPolicy> = { attempts: 1, initialMs: 100, maxMs: 10_000, factor: 2, jitter: true }

/** The kinds whose own timeout word is not the whole node's (per attempt, or one that may continue). */
const STEP_LIKE: ReadonlySet<WorkflowNode['kind']> = new Set(['step', 'child', 'delegate', 'continueAsNew', 'waitFor'])

/** A node's children in the program: a container's, and a scatterGather's call as a step of its own. */
function programChildren(node: WorkflowNode): readonly WorkflowNode[] {
  switch (node.kind) {
    case 'scatterGather':
      return [
        clean<StepNode>({
          kind: 'step',
          id: `${node.id}${CALL_SUFFIX}`,
          run: { capability: node.capability },
          input: node.input,
          retry: undefined,
          timeoutMs: undefined,
          compensate: undefined,
        }),
      ]
    default:
      return childrenOf(node)
  }
}

function clean<T extends object>(value: { [K in keyof T]-?: T[K] | undefined }): T {
  for (const key of Object.keys(value)) if ((value as Record<string, unknown>)[key] === undefined) delete (value as Record<string, unknown>)[key]
  return Object.freeze(value) as T
}

function joinWords(join: Join | undefined): [number, number] {
  if (join === undefined || join === 'all') return [JOINS.all, 0]
  if (join === 'any') return [JOINS.any, 0]
  return [JOINS.quorum, join.quorum]
}

/**
 * Validates `definition` (`DEFINITION_INVALID` naming the node) and compiles it. The same
 * definition, or its JSON copy, always gives the same program, indexes and version.
 */
export function compileWorkflow(definition: unknown, checkRange?: RangeCheck): CompiledWorkflow {
  const def = validateDefinition(definition, checkRange)
  const nodes: WorkflowNode[] = []
  const parents: number[] = []
  const lists: number[][] = []
  const wrap = def.timeoutMs !== undefined && STEP_LIKE.has(def.root.kind)
  const root: WorkflowNode = wrap ? Object.freeze({ kind: 'sequence', id: RUN_WRAPPER_ID, steps: Object.freeze([def.root]) as WorkflowNode[] }) : def.root

  // Pre-order, so a container's index is below its children's; depth is bounded by validation.
  const visit = (node: WorkflowNode, parent: number): number => {
    const i = nodes.length
    nodes.push(node)
    parents.push(parent)
    const list: number[] = []
    lists.push(list)
    for (const child of programChildren(node)) list.push(visit(child, i))
    return i
  }
  visit(root, -1)

  const tree = nodes.length
  const compensationOf = new Map<number, number>()
  for (let i = 0; i < tree; i++) {
    const node = nodes[i]!
    if ((node.kind === 'step' || node.kind === 'child') && node.compensate !== undefined) {
      const { run, input, retry, timeoutMs } = node.compensate
      compensationOf.set(i, nodes.length)
      nodes.push(clean<StepNode>({ kind: 'step', id: `${node.id}${COMPENSATE_SUFFIX}`, run, input, retry, timeoutMs, compensate: undefined }))
      parents.push(-1)
      lists.push([])
    }
  }

  const signals: string[] = []
  const signalIndex = new Map<string, number>()
  const { nodeWords } = WORKFLOW_LAYOUT
  const listed = tree - 1
  const program = new Float64Array(2 + nodes.length * nodeWords + listed)
  program[0] = WORKFLOW_LAYOUT.programFormat
  program[1] = nodes.length
  const area = 2 + nodes.length * nodeWords
  let next = 0
  for (let i = 0; i < nodes.length; i++) {
    const node = nodes[i]!
    const base = 2 + i * nodeWords
    const words = (offset: number, value: number) => {
      program[base + offset] = value
    }
    const list = lists[i]!
    words(W.childStart, list.length === 0 ? 0 : next)
    words(W.childCount, list.length)
    for (const child of list) program[area + next++] = child
    words(W.timeout, Infinity)
    words(W.compensate, compensationOf.get(i) ?? -1)
    words(W.attempts, RETRY_DEFAULTS.attempts)
    words(W.initial, RETRY_DEFAULTS.initialMs)
    words(W.max, RETRY_DEFAULTS.maxMs)
    words(W.factor, RETRY_DEFAULTS.factor)
    switch (node.kind) {
      case 'step':
      case 'child':
      case 'delegate': {
        const retry = { ...RETRY_DEFAULTS, ...node.retry }
        words(W.kind, WORKFLOW_NODES.step)
        words(W.p3, retry.jitter ? 1 : 0)
        words(W.timeout, node.timeoutMs ?? Infinity)
        words(W.attempts, retry.attempts)
        words(W.initial, retry.initialMs)
        words(W.max, retry.maxMs)
        words(W.factor, retry.factor)
        break
      }
      case 'continueAsNew':
        // One attempt, no jitter, no compensation: it ends the generation, there is nothing to retry or undo.
        words(W.kind, WORKFLOW_NODES.step)
        break
      case 'sequence':
        words(W.kind, WORKFLOW_NODES.sequence)
        break
      case 'parallel': {
        const [join, quorum] = joinWords(node.join)
        words(W.kind, WORKFLOW_NODES.parallel)
        words(W.p1, join)
        words(W.p2, quorum)
        words(W.timeout, node.timeoutMs ?? Infinity)
        break
      }
      case 'branch':
        words(W.kind, WORKFLOW_NODES.branch)
        break
      case 'loop':
        words(W.kind, WORKFLOW_NODES.loop)
        words(W.p1, node.while !== undefined ? 0 : 1)
        words(W.p2, node.maxIterations)
        break
      case 'forEach':
      case 'scatterGather': {
        const [join, quorum] = joinWords(node.join)
        words(W.kind, WORKFLOW_NODES.map)
        words(W.p1, node.kind === 'forEach' ? (node.concurrency ?? 0) : 0)
        words(W.p2, join)
        words(W.p3, quorum)
        words(W.timeout, node.timeoutMs ?? Infinity)
        break
      }
      case 'pipeline':
        words(W.kind, WORKFLOW_NODES.pipeline)
        words(W.p1, node.buffer ?? 1)
        words(W.timeout, node.timeoutMs ?? Infinity)
        break
      case 'sleep':
        words(W.kind, WORKFLOW_NODES.sleep)
        words(W.p1, node.ms)
        break
      case 'waitFor': {
        let signal = signalIndex.get(node.signal)
        if (signal === undefined) {
          signal = signals.length
          signals.push(node.signal)
          signalIndex.set(node.signal, signal)
        }
        words(W.kind, WORKFLOW_NODES.wait)
        words(W.p1, signal)
        words(W.p2, node.onTimeout === 'continue' ? 1 : 0)
        words(W.timeout, node.timeoutMs ?? Infinity)
        break
      }
    }
  }
  // The run timeout: the root's timeout word (a container's or a wrapper's, which time the whole node).
  if (def.timeoutMs !== undefined) program[2 + W.timeout] = Math.min(program[2 + W.timeout]!, def.timeoutMs)

  const index = new Map<string, number>()
  for (let i = 0; i < nodes.length; i++) index.set(nodes[i]!.id, i)
  return Object.freeze({
    definition: def,
    program,
    nodes: Object.freeze(nodes),
    index,
    parent: Int32Array.from(parents),
    signals: Object.freeze(signals),
  })
}
