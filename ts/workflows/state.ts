/**
 * Where a run is, as plain data: a fold of its meta record and its current generation's events
 * over its definition's nodes. It reads nothing of a live run, so a handle of a run running here,
 * one read back from the store and a history exported elsewhere give the same state.
 *
 * Steps (and a child, a delegate, a scatterGather's calls) are followed per instance, by the index
 * path their idempotency key ends with. A retry and a node's end go to the oldest instance whose
 * attempt ended: the core answers completions in the order it is given them. A completion goes to
 * the instance its token names where step-started records the token, else to the oldest instance
 * running that attempt: when instances of one step finish out of start order that guess is
 * wrong, and the retried instance's next start sets it right for the failed one; without the
 * token, the outputs of instances that succeeded out of order can still be swapped. Other nodes are followed by counts (how many instances began, how many ended), which is all
 * their events say.
 */
import type { WorkflowDefinition, WorkflowNode } from './definition.js'
import type { FailureReason, RunStatus, StoredError, WorkflowEvent } from './history.js'
import { generationKey } from './records.js'
import { CALL_SUFFIX, COMPENSATE_SUFFIX } from './validate.js'

/**
 * Where a node (or one instance of it) is. `retrying`: a transient failure, the next attempt
 * waits for its backoff; `compensating`, `compensated`, `compensation-failed`: a completed step
 * being undone, undone, or whose compensation failed for good.
 */
export type NodeStatus =
  | 'pending'
  | 'running'
  | 'retrying'
  | 'completed'
  | 'failed'
  | 'cancelled'
  | 'skipped'
  | 'compensating'
  | 'compensated'
  | 'compensation-failed'

/** One instance of a step: at top level its only one, inside iterations one per index path. */
export interface NodeInstanceState {
  readonly status: NodeStatus
  /** Attempts started so far (0 before the first). */
  readonly attempts: number
  /** The output, once completed. */
  readonly output?: unknown
  /** The error of the last failed attempt (kept while retrying), or of the compensation that failed. */
  readonly error?: StoredError
  /** When the next attempt is due (host time, ms), while retrying. */
  readonly retryAt?: number
  /** Why it failed or was cancelled, as the core says it (a timeout, a join out of reach). */
  readonly reason?: FailureReason
}

/** A node of the definition and where it is. */
export interface NodeState extends NodeInstanceState {
  readonly id: string
  readonly kind: WorkflowNode['kind']
  /** The id of the container listing it (none for the root). */
  readonly parent?: string
  /**
   * A step-like node inside a forEach, loop, pipeline or scatterGather (and a scatterGather's
   * calls): each instance started so far, by its index path (`[2]`, `[0][1]`: the suffix of its
   * idempotency key). The node's own status then sums them up: running while one runs, else how
   * the last one ended.
   */
  readonly instances?: Readonly<Record<string, NodeInstanceState>>
}

/** A signal received that no waitFor has taken yet. */
export interface HeldSignal {
  readonly name: string
  readonly payload: unknown
  /** When it was received (ms). */
  readonly at: number
}

/** A snapshot of a run: plain JSON-safe data (outputs and payloads as the store keeps them). */
export interface RunState {
  readonly id: string
  readonly status: RunStatus
  /** 1, and one more after each continueAsNew: the nodes are this generation's. */
  readonly generation: number
  readonly definition: { readonly name: string; readonly version: string }
  readonly startedAt: number
  readonly finishedAt?: number
  /** The run's output, once completed. */
  readonly output?: unknown
  /** Why it did not complete, once ended. */
  readonly error?: StoredError
  /** Whether a cancel was recorded (a cancelled run may still be compensating). */
  readonly cancelling: boolean
  /** Every node of the definition, by id. */
  readonly nodes: Readonly<Record<string, NodeState>>
  /** The waitFor nodes waiting for a signal now, and the signal each waits for. */
  readonly waiting: readonly { readonly node: string; readonly signal: string }[]
  /** Signals received and not taken by a wait yet, oldest first. */
  readonly signals: readonly HeldSignal[]
}

/** What {@link runState} reads of a run's meta record: a `wf.list()` entry will do (`output` for a completed run's). */
export interface RunStateMeta {
  readonly id: string
  /** The workflow's name. */
  readonly definition: string
  readonly version: string
  readonly status: RunStatus
  readonly startedAt: number
  readonly finishedAt?: number
  readonly output?: unknown
  readonly error?: StoredError
  /** 1 when left out. */
  readonly generation?: number
}

const ACTIVE: ReadonlySet<NodeStatus> = new Set(['running', 'retrying', 'compensating'])
const FINAL_RUN: ReadonlySet<RunStatus> = new Set(['completed', 'failed', 'cancelled', 'compensated', 'compensation-failed'])
const OUTCOME_STATUS = { ok: 'completed', failed: 'failed', cancelled: 'cancelled', skipped: 'skipped' } as const satisfies Record<string, NodeStatus>

/** The kinds whose attempts have events of their own (step-started, step-completed, retry). */
const STEP_LIKE: ReadonlySet<WorkflowNode['kind']> = new Set(['step', 'child', 'delegate', 'continueAsNew'])
/** The kinds that run their body more than once. */
const ITERATING: ReadonlySet<WorkflowNode['kind']> = new Set(['loop', 'forEach', 'pipeline', 'scatterGather'])

interface Instance {
  status: NodeStatus
  attempts: number
  output?: unknown
  error?: StoredError
  retryAt?: number
  reason?: FailureReason
}

/** What the fold keeps of a node. */
interface Acc {
  readonly node: WorkflowNode
  readonly parent: Acc | undefined
  /** Its place among its parent's children (a branch's `otherwise` last). */
  readonly place: number
  /** Whether a loop, forEach, pipeline or scatterGather encloses it. */
  readonly iterated: boolean
  readonly children: Acc[]
  /** Step instances by index path, in start order. */
  readonly instances: Map<string, Instance>
  /** Instances whose attempt ended, waiting for the core's answer (a retry or the node's end), oldest first. */
  readonly answered: Instance[]
  /** Instances being compensated (one at a time, so in order). */
  readonly compensating: Instance[]
  /** node-done events: all, and those that ended ok. */
  done: number
  ok: number
  last: { status: NodeStatus; reason?: FailureReason } | undefined
  /** Decisions taken for it (a branch's arm, a loop's go-on, a forEach's item count), in order. */
  readonly decisions: number[]
  /** A waitFor's payloads taken, in order. */
  readonly taken: unknown[]
}

/** Fields a history may carry to name an event's instance outright (`token` on step-started, `path` on retry and node-done). */
interface Correlated {
  readonly token?: number
  readonly path?: string
}

/** Two instances trade the outcomes of their last attempts. */
function trade(a: Instance, b: Instance): void {
  const kept = { ...a }
  takeOutcome(a, b)
  takeOutcome(b, kept)
}

function takeOutcome(to: Instance, from: Instance): void {
  to.status = from.status
  if ('output' in from) to.output = from.output
  else delete to.output
  if (from.error !== undefined) to.error = from.error
  else delete to.error
  if (from.retryAt !== undefined) to.retryAt = from.retryAt
  else delete to.retryAt
  if (from.reason !== undefined) to.reason = from.reason
  else delete to.reason
}

const instancePath = (key: string, prefix: string) => (key.startsWith(prefix) ? key.slice(prefix.length) : key)

/** The children a container lists, in order (a branch's `otherwise` last). */
function childrenOf(node: WorkflowNode): readonly WorkflowNode[] {
  switch (node.kind) {
    case 'sequence':
      return node.steps
    case 'parallel':
      return node.branches
    case 'branch':
      return node.otherwise === undefined ? node.arms.map((a) => a.then) : [...node.arms.map((a) => a.then), node.otherwise]
    case 'loop':
    case 'forEach':
      return [node.body]
    case 'pipeline':
      return node.stages
    default:
      return []
  }
}

/**
 * The state of a run from its meta record and its current generation's events (`run.history()`,
 * oldest first) over its definition (the version the run is pinned to). Pure: the same data give
 * the same state wherever it is computed. O(events + nodes).
 */
export function runState(definition: WorkflowDefinition, meta: RunStateMeta, events: readonly WorkflowEvent[]): RunState {
  const generation = meta.generation ?? 1
  const root = generationKey(meta.id, generation)
  const byId = new Map<string, Acc>()
  const order: Acc[] = []
  const visit = (node: WorkflowNode, parent: Acc | undefined, place: number): Acc => {
    const acc: Acc = {
      node,
      parent,
      place,
      iterated: parent !== undefined && (parent.iterated || ITERATING.has(parent.node.kind)),
      children: [],
      instances: new Map(),
      answered: [],
      compensating: [],
      done: 0,
      ok: 0,
      last: undefined,
      decisions: [],
      taken: [],
    }
    byId.set(node.id, acc)
    order.push(acc)
    for (const [i, child] of childrenOf(node).entries()) acc.children.push(visit(child, acc, i))
    // A scatterGather's calls are steps of their own (`<id>.call`), inside its iterations.
    if (node.kind === 'scatterGather') {
      const call: WorkflowNode = { kind: 'step', id: `${node.id}${CALL_SUFFIX}`, run: { capability: node.capability } }
      visit(call, acc, 0)
      order.pop()
    }
    return acc
  }
  visit(definition.root, undefined, 0)

  const held: HeldSignal[] = []
  let cancelling = false
  let began = false

  /** Instances by the token of their attempt, where the history says it. */
  const tokens = new Map<number, Instance>()
  /**
   * The instance an answer of the core (a retry, the node's end) is about: the one its path
   * names where the history says it, else the `at`th of those whose attempt ended (in order).
   */
  const answer = (acc: Acc, at: number, path: string | undefined): Instance | undefined => {
    const named = path === undefined ? undefined : acc.instances.get(path)
    const index = named === undefined ? at : acc.answered.indexOf(named)
    if (index >= 0 && index < acc.answered.length) return acc.answered.splice(index, 1)[0]
    return named
  }

  /** The oldest instance of `acc` still running with this attempt (an attempt that timed out has no completion). */
  const oldestRunning = (acc: Acc, attempt?: number) => {
    for (const inst of acc.instances.values()) if (inst.status === 'running' && (attempt === undefined || inst.attempts === attempt)) return inst
    return undefined
  }

  for (const event of events) {
    switch (event.type) {
      case 'started':
        began = true
        break
      case 'step-started': {
        if (event.compensation) {
          const undone = byId.get(event.step.slice(0, -COMPENSATE_SUFFIX.length))
          const inst = undone?.instances.get(instancePath(event.key, `${root}/${event.step}`))
          if (undone && inst && event.step.endsWith(COMPENSATE_SUFFIX) && inst.status !== 'compensating') {
            inst.status = 'compensating'
            undone.compensating.push(inst)
          }
          break
        }
        const acc = byId.get(event.step)
        if (!acc) break
        const path = instancePath(event.key, `${root}/${event.step}`)
        let inst = acc.instances.get(path)
        if (!inst) {
          inst = { status: 'running', attempts: 0 }
          acc.instances.set(path, inst)
        } else if (event.attempt === inst.attempts + 1 && inst.status !== 'retrying') {
          // This instance's attempt failed and was retried: an outcome taken for another's (they
          // finished out of start order) was its. They trade what their last attempts made.
          for (const other of acc.instances.values()) {
            if (other !== inst && other.status === 'retrying' && other.attempts === event.attempt - 1) {
              trade(inst, other)
              break
            }
          }
        }
        inst.status = 'running'
        inst.attempts = event.attempt
        delete inst.retryAt
        const token = (event as Correlated).token
        if (typeof token === 'number') tokens.set(token, inst)
        break
      }
      case 'step-completed': {
        const acc = byId.get(event.step)
        // A compensation's attempts: its `compensated` event says how it ended.
        if (!acc) {
          if (event.error !== undefined && event.step.endsWith(COMPENSATE_SUFFIX)) {
            const undone = byId.get(event.step.slice(0, -COMPENSATE_SUFFIX.length))
            const inst = undone?.compensating[0]
            if (inst) inst.error = event.error
          }
          break
        }
        const inst = tokens.get(event.token) ?? oldestRunning(acc, event.attempt)
        if (!inst) break
        if (event.outcome === 'ok') {
          inst.output = event.output
          delete inst.error
        } else if (event.error !== undefined) {
          inst.error = event.error
        }
        // Running still: the core's answer (the node's end, or a retry) says what comes next.
        acc.answered.push(inst)
        break
      }
      case 'retry': {
        const acc = byId.get(event.step)
        if (!acc) break
        const at = acc.answered.findIndex((i) => i.attempts === event.attempt - 1)
        const inst = answer(acc, at, (event as Correlated).path) ?? oldestRunning(acc, event.attempt - 1)
        if (!inst) break
        inst.status = 'retrying'
        inst.retryAt = event.when
        break
      }
      case 'node-done': {
        const acc = byId.get(event.node)
        if (!acc) break
        const status: NodeStatus = OUTCOME_STATUS[event.outcome]
        acc.done++
        if (event.outcome === 'ok') acc.ok++
        acc.last = event.reason === undefined ? { status } : { status, reason: event.reason }
        if (acc.node.kind === 'waitFor' && event.outcome === 'ok') {
          // A wait that ends ok took the oldest payload of its signal.
          const name = acc.node.signal
          const at = held.findIndex((s) => s.name === name)
          acc.taken.push(at >= 0 ? held.splice(at, 1)[0]!.payload : undefined)
        }
        if (!STEP_LIKE.has(acc.node.kind)) break
        let inst = answer(acc, 0, (event as Correlated).path)
        if (!inst) {
          for (const i of acc.instances.values()) {
            if (ACTIVE.has(i.status)) {
              inst = i
              break
            }
          }
        }
        if (!inst) break
        inst.status = status
        delete inst.retryAt
        if (event.reason !== undefined) inst.reason = event.reason
        break
      }
      case 'decided': {
        const acc = byId.get(event.node)
        if (acc) acc.decisions.push(event.value)
        break
      }
      case 'signal':
        held.push({ name: event.name, payload: event.payload, at: event.at })
        break
      case 'cancel':
        cancelling = true
        break
      case 'compensated': {
        const acc = byId.get(event.step)
        const inst = acc?.compensating.shift()
        if (inst) inst.status = event.ok ? 'compensated' : 'compensation-failed'
        if (inst && event.ok) delete inst.error
        break
      }
      default:
        break
    }
  }

  const ended = FINAL_RUN.has(meta.status)

  /** How many instances of `acc` began (for a step-like node: exactly; else from its parent's events). */
  const startedMemo = new Map<Acc, number>()
  const started = (acc: Acc): number => {
    const known = startedMemo.get(acc)
    if (known !== undefined) return known
    let n: number
    if (STEP_LIKE.has(acc.node.kind) && acc.instances.size > 0) n = [...acc.instances.values()].reduce((sum, i) => sum + (i.attempts > 0 ? 1 : 0), 0)
    else n = Math.max(acc.done, reached(acc))
    startedMemo.set(acc, n)
    return n
  }
  /** Instances of `acc` its parent has begun, by the parent's rules. */
  const reached = (acc: Acc): number => {
    const parent = acc.parent
    if (!parent) return began ? 1 : 0
    const decisions = parent.decisions
    switch (parent.node.kind) {
      case 'sequence':
        return acc.place === 0 ? started(parent) : parent.children[acc.place - 1]!.ok
      case 'parallel':
        return started(parent)
      case 'branch':
        return decisions.filter((d) => d === acc.place).length
      case 'loop': {
        const goOn = decisions.filter((d) => d === 1).length
        return parent.node.while !== undefined ? goOn : started(parent) > 0 ? started(parent) + goOn : 0
      }
      case 'forEach': {
        const items = decisions.reduce((sum, d) => sum + Math.max(0, d), 0)
        const limit = parent.node.concurrency
        return limit === undefined ? items : Math.min(items, acc.done + limit * decisions.length)
      }
      case 'pipeline': {
        // A stage takes one item at a time.
        const given = acc.place === 0 ? decisions.reduce((sum, d) => sum + Math.max(0, d), 0) : parent.children[acc.place - 1]!.ok
        return Math.min(given, acc.done + Math.max(1, decisions.length))
      }
      case 'scatterGather':
        return decisions.reduce((sum, d) => sum + Math.max(0, d), 0)
      default:
        return 0
    }
  }

  const instanceOut = (i: Instance): NodeInstanceState => ({
    status: i.status,
    attempts: i.attempts,
    ...(i.status === 'completed' || i.status === 'compensating' || i.status === 'compensated' || i.status === 'compensation-failed'
      ? { output: i.output }
      : {}),
    ...(i.error !== undefined && i.status !== 'completed' ? { error: i.error } : {}),
    ...(i.retryAt !== undefined && i.status === 'retrying' ? { retryAt: i.retryAt } : {}),
    ...(i.reason !== undefined ? { reason: i.reason } : {}),
  })

  /** Whether some instance of `acc` is under way (the run still running). */
  const active = (acc: Acc) => !ended && started(acc) > acc.done

  const statusOf = (acc: Acc): NodeStatus => {
    const list = [...acc.instances.values()]
    for (const want of ['running', 'retrying', 'compensating'] as const) if (list.some((i) => i.status === want)) return want
    if (active(acc)) return 'running'
    if (list.length > 0 && list.some((i) => i.status === 'compensation-failed')) return 'compensation-failed'
    if (list.length > 0 && list.some((i) => i.status === 'compensated') && !list.some((i) => i.status === 'completed')) return 'compensated'
    if (acc.last !== undefined) return acc.last.status
    // A run that ended before the node ended: the core cancels what runs, so this never began.
    return 'pending'
  }

  const outputs = new Map<Acc, unknown>()
  /** A node's output, for a node outside iterations that completed (containers from their children, as the run computes them). */
  const outputOf = (acc: Acc): unknown => {
    if (outputs.has(acc)) return outputs.get(acc)
    let out: unknown
    const n = acc.node
    if (STEP_LIKE.has(n.kind)) out = acc.instances.get('')?.output
    else if (n.kind === 'waitFor') out = acc.taken.at(-1)
    else if (n.kind === 'sleep') out = null
    else if (n.kind === 'sequence') out = acc.children.length === 0 ? undefined : outputOf(acc.children.at(-1)!)
    else if (n.kind === 'parallel') out = acc.children.map(outputOf)
    else if (n.kind === 'branch') {
      const arm = acc.decisions.at(-1) ?? -1
      out = arm < 0 ? undefined : outputOf(acc.children[arm]!)
    } else out = iterationsOutput(acc)
    outputs.set(acc, out)
    return out
  }
  /** A forEach's, pipeline's or scatterGather's outputs by item, or a loop's last, from its body's (last stage's) step instances one level down. */
  const iterationsOutput = (acc: Acc): unknown => {
    const n = acc.node
    if (n.kind === 'loop') {
      // The last iteration's.
      const body = acc.children[0]!
      return STEP_LIKE.has(body.node.kind) ? [...body.instances.values()].at(-1)?.output : undefined
    }
    if (n.kind !== 'forEach' && n.kind !== 'pipeline' && n.kind !== 'scatterGather') return undefined
    const body = n.kind === 'scatterGather' ? byId.get(`${n.id}${CALL_SUFFIX}`) : acc.children.at(-1)
    const items = acc.decisions.at(-1) ?? 0
    if (!body || !STEP_LIKE.has(body.node.kind)) return undefined
    if (n.kind === 'scatterGather' && n.aggregate !== undefined) return undefined
    return Array.from({ length: Math.max(0, items) }, (_, i) => body.instances.get(`[${i}]`)?.output)
  }

  const nodes: [string, NodeState][] = []
  const waiting: { node: string; signal: string }[] = []
  for (const acc of order) {
    const n = acc.node
    const call = n.kind === 'scatterGather' ? byId.get(`${n.id}${CALL_SUFFIX}`) : undefined
    const steps = call ?? acc
    const status = statusOf(acc)
    const perInstance = acc.iterated || call !== undefined
    const single = perInstance ? undefined : acc.instances.get('')
    const base: NodeInstanceState = single
      ? { ...instanceOut(single), status }
      : {
          status,
          attempts: [...steps.instances.values()].reduce((sum, i) => sum + i.attempts, 0),
          ...(!acc.iterated && status === 'completed' ? { output: outputOf(acc) } : {}),
          ...(acc.last?.reason !== undefined && (status === 'failed' || status === 'cancelled') ? { reason: acc.last.reason } : {}),
        }
    const instances = perInstance && steps.instances.size > 0 ? Object.fromEntries([...steps.instances].map(([path, i]) => [path, instanceOut(i)])) : undefined
    nodes.push([
      n.id,
      {
        id: n.id,
        kind: n.kind,
        ...(acc.parent === undefined ? {} : { parent: acc.parent.node.id }),
        ...base,
        ...(instances === undefined ? {} : { instances }),
      },
    ])
    if (n.kind === 'waitFor' && status === 'running') waiting.push({ node: n.id, signal: n.signal })
  }

  return {
    id: meta.id,
    status: meta.status,
    generation,
    definition: { name: meta.definition, version: meta.version },
    startedAt: meta.startedAt,
    ...(meta.finishedAt === undefined ? {} : { finishedAt: meta.finishedAt }),
    ...(meta.status === 'completed' ? { output: meta.output } : {}),
    ...(meta.error === undefined ? {} : { error: meta.error }),
    cancelling,
    nodes: Object.fromEntries(nodes),
    waiting,
    signals: held,
  }
}
