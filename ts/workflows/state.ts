/**
 * Where a run is, as plain data: a fold of its meta record and its current generation's events
 * over its definition's nodes. It reads nothing of a live run, so a handle of a run running here,
 * one read back from the store and a history exported elsewhere give the same state.
 *
 * Every instance is named by its events: a step's attempt by the token its step-started and
 * step-completed share, a retry and a node's end by the index path they carry (the suffix of the
 * instance's idempotency key; none outside iterations).
 */
import { childrenOf, type WorkflowDefinition, type WorkflowNode } from './definition.js'
import { FINAL_STATUSES, type FailureReason, type RunStatus, type StoredError, type WorkflowEvent } from './history.js'
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
   * A node inside a forEach, loop, pipeline or scatterGather (and a scatterGather's calls): its
   * instances by index path (`[2]`, `[0][1]`: the suffix of its idempotency key), a step's each
   * one started so far, another node's each one that ended (their events say no more). The
   * node's own status then sums them up: running while one runs, else how the last one ended.
   * Inside iterations, a forEach's or scatterGather's output under `'any'` or a quorum is left
   * out (its item count names no instance).
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

/**
 * A snapshot of a run: plain data as the history keeps it. Outputs, errors and payloads are the
 * values `result()` and `history()` hand out: a BigInt, a Date or an `undefined` stays as it is,
 * so `JSON.stringify` may refuse or change a state whose steps return such values.
 */
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

const OUTCOME_STATUS = { ok: 'completed', failed: 'failed', cancelled: 'cancelled', skipped: 'skipped' } as const satisfies Record<string, NodeStatus>
/** The statuses of an instance that ended ok (a completed step stays so while undone). */
const SUCCEEDED: ReadonlySet<NodeStatus> = new Set(['completed', 'compensating', 'compensated', 'compensation-failed'])

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
  /** Instances by index path: a step's from its first start, another node's from its end. */
  readonly instances: Map<string, Instance>
  /** Instances being compensated (one at a time, so in order). */
  readonly compensating: Instance[]
  /** node-done events: all, and those that ended ok. */
  done: number
  ok: number
  last: { status: NodeStatus; reason?: FailureReason } | undefined
  /** Decisions taken for it (a branch's arm, a loop's go-on, a forEach's item count), in order. */
  readonly decisions: number[]
}

const instancePath = (key: string, prefix: string) => (key.startsWith(prefix) ? key.slice(prefix.length) : key)

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
      compensating: [],
      done: 0,
      ok: 0,
      last: undefined,
      decisions: [],
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
  /** Step instances by the token of their current attempt. */
  const tokens = new Map<number, Instance>()

  for (const event of events) {
    switch (event.type) {
      case 'started':
        began = true
        break
      case 'step-started': {
        if (event.compensation) {
          const undone = event.step.endsWith(COMPENSATE_SUFFIX) ? byId.get(event.step.slice(0, -COMPENSATE_SUFFIX.length)) : undefined
          const inst = undone?.instances.get(instancePath(event.key, `${root}/${event.step}`))
          if (undone && inst && inst.status !== 'compensating') {
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
        }
        inst.status = 'running'
        inst.attempts = event.attempt
        delete inst.retryAt
        tokens.set(event.token, inst)
        break
      }
      case 'step-completed': {
        // The next event about the instance (a retry, the node's end) says what comes of it.
        if (!byId.has(event.step)) {
          // A compensation's attempt: its `compensated` event says how it ended.
          if (event.error !== undefined && event.step.endsWith(COMPENSATE_SUFFIX)) {
            const inst = byId.get(event.step.slice(0, -COMPENSATE_SUFFIX.length))?.compensating[0]
            if (inst) inst.error = event.error
          }
          break
        }
        const inst = tokens.get(event.token)
        if (!inst) break
        if (event.outcome === 'ok') {
          inst.output = event.output
          delete inst.error
        } else if (event.error !== undefined) {
          inst.error = event.error
        }
        break
      }
      case 'retry': {
        const inst = byId.get(event.step)?.instances.get(event.path ?? '')
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
        const path = event.path ?? ''
        let inst = acc.instances.get(path)
        if (!inst) {
          inst = { status, attempts: 0 }
          acc.instances.set(path, inst)
        }
        inst.status = status
        delete inst.retryAt
        if (event.reason !== undefined) inst.reason = event.reason
        if (acc.node.kind === 'waitFor' && event.outcome === 'ok') {
          // A wait that ends ok took the oldest payload of its signal.
          const name = acc.node.signal
          const at = held.findIndex((s) => s.name === name)
          inst.output = at >= 0 ? held.splice(at, 1)[0]!.payload : undefined
        }
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
        const inst = byId.get(event.step)?.compensating.shift()
        if (inst) inst.status = event.ok ? 'compensated' : 'compensation-failed'
        if (inst && event.ok) delete inst.error
        break
      }
      default:
        break
    }
  }

  const ended = FINAL_STATUSES.has(meta.status)

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

  /** A body's highest iteration index by the path of its loop's (forEach's, ...) instance, made once per body. */
  const lasts = new Map<Acc, Map<string, number>>()
  const lastIterations = (body: Acc): Map<string, number> => {
    let last = lasts.get(body)
    if (last) return last
    last = new Map()
    for (const key of body.instances.keys()) {
      const cut = key.lastIndexOf('[')
      const index = Number(key.slice(cut + 1, -1))
      const outer = key.slice(0, cut)
      if (cut >= 0 && index > (last.get(outer) ?? -1)) last.set(outer, index)
    }
    lasts.set(body, last)
    return last
  }

  /**
   * The output of `acc`'s instance at `path`, as the run computes it: undefined unless that
   * instance ended ok; a container's from its children's instances at the same path, an
   * iteration's body's one index further down.
   */
  const outputAt = (acc: Acc, path: string): unknown => {
    const inst = acc.instances.get(path)
    if (!inst || !SUCCEEDED.has(inst.status)) return undefined
    const n = acc.node
    switch (n.kind) {
      case 'sleep':
        return null
      case 'sequence':
        return acc.children.length === 0 ? undefined : outputAt(acc.children.at(-1)!, path)
      case 'parallel':
        return acc.children.map((c) => outputAt(c, path))
      case 'branch': {
        // Only the arm taken runs in an instance.
        const arm = acc.children.find((c) => {
          const at = c.instances.get(path)
          return at !== undefined && SUCCEEDED.has(at.status)
        })
        return arm === undefined ? undefined : outputAt(arm, path)
      }
      case 'loop': {
        // The last iteration's: the highest index its body ran with in this instance.
        const body = acc.children[0]!
        const last = lastIterations(body).get(path)
        return last === undefined ? undefined : outputAt(body, `${path}[${last}]`)
      }
      case 'forEach':
      case 'pipeline':
      case 'scatterGather': {
        if (n.kind === 'scatterGather' && n.aggregate !== undefined) return undefined
        const body = n.kind === 'scatterGather' ? byId.get(`${n.id}${CALL_SUFFIX}`)! : acc.children.at(-1)!
        // The item count is a decision, which names no instance. Inside iterations, a join of
        // all that ended ok ran every item: the count is its body's highest index and one.
        let items: number
        if (path === '') items = Math.max(0, acc.decisions.at(-1) ?? 0)
        else if (n.kind === 'pipeline' || n.join === undefined || n.join === 'all') items = (lastIterations(body).get(path) ?? -1) + 1
        else return undefined
        return Array.from({ length: items }, (_, i) => outputAt(body, `${path}[${i}]`))
      }
      default:
        return inst.output
    }
  }

  const instanceOut = (acc: Acc, path: string, i: Instance): NodeInstanceState => ({
    status: i.status,
    attempts: i.attempts,
    ...(SUCCEEDED.has(i.status) ? { output: outputAt(acc, path) } : {}),
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
    if (list.some((i) => i.status === 'compensation-failed')) return 'compensation-failed'
    if (list.some((i) => i.status === 'compensated') && !list.some((i) => i.status === 'completed')) return 'compensated'
    if (acc.last !== undefined) return acc.last.status
    // A run that ended before the node ended: the core cancels what runs, so this never began.
    return 'pending'
  }

  const nodes: [string, NodeState][] = []
  const waiting: { node: string; signal: string }[] = []
  for (const acc of order) {
    const n = acc.node
    const call = n.kind === 'scatterGather' ? byId.get(`${n.id}${CALL_SUFFIX}`) : undefined
    const status = statusOf(acc)
    const listed = call ?? (acc.iterated ? acc : undefined)
    const single = acc.iterated ? undefined : acc.instances.get('')
    const base: NodeInstanceState =
      single && STEP_LIKE.has(n.kind)
        ? { ...instanceOut(acc, '', single), status }
        : {
            status,
            attempts: [...(call ?? acc).instances.values()].reduce((sum, i) => sum + i.attempts, 0),
            ...(single && SUCCEEDED.has(status) ? { output: outputAt(acc, '') } : {}),
            ...(acc.last?.reason !== undefined && (status === 'failed' || status === 'cancelled') ? { reason: acc.last.reason } : {}),
          }
    const instances =
      listed && listed.instances.size > 0 ? Object.fromEntries([...listed.instances].map(([path, i]) => [path, instanceOut(listed, path, i)])) : undefined
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
