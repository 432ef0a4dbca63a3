/**
 * A workflow definition is plain JSON: no closures, so it serialises, diffs, draws and runs in
 * any process that registered the same step, mapping and condition names. The builders
 * (`builder.ts`) produce it; `validate.ts` checks any value against it; `compile.ts` turns it into
 * the numbers the core runs.
 */

/**
 * A reference into the run's data: `$input`, `$steps.<nodeId>`, `$item`, `$index` (the innermost
 * forEach, pipeline stage or scatterGather instance) or `$signals.<name>`, followed by `.field`,
 * `[n]` or `["any key"]` parts (a node id or signal name holding a `.` is written
 * `$steps["fetch.v2"]`). A path that leads nowhere is `undefined`.
 */
export type Ref = `$${string}`

/** `{ $literal: v }`: `v` as it is, never built (a string starting with `$` stays a string). */
export interface LiteralSpec {
  $literal: unknown
}

/** `{ $fn: 'name', arg? }`: the registered mapping `name` applied to the built `arg`. */
export interface MappingSpec {
  $fn: string
  arg?: InputSpec
}

/**
 * How a value is built: a {@link Ref} is looked up, an array or plain object is built member by
 * member, `$literal` and `$fn` objects as they say, and any other JSON value is itself.
 */
export type InputSpec = string | number | boolean | null | LiteralSpec | MappingSpec | InputSpec[] | { [key: string]: InputSpec }

/** The comparisons a {@link Condition} can make of the value at its path. */
export type ConditionOp = 'eq' | 'ne' | 'gt' | 'gte' | 'lt' | 'lte' | 'truthy' | 'falsy' | 'exists' | 'in'

/**
 * A test of the run's data: the value at `path` compared with the literal `value` (`truthy`,
 * `falsy` and `exists` take none, `in` takes a list), a combination, or a registered condition.
 */
export type Condition =
  | { path: Ref; op: ConditionOp; value?: unknown }
  | { all: Condition[] }
  | { any: Condition[] }
  | { not: Condition }
  | { fn: string; arg?: InputSpec }

/** How many children of a parallel, forEach or scatterGather must succeed: all (the default), any, or n. */
export type Join = 'all' | 'any' | { quorum: number }

/** Retries of a step after a transient failure: exponential backoff, full jitter by default. */
export interface RetryPolicy {
  /** Attempts in all (default 1: no retry). */
  attempts?: number
  /** The first retry's delay in ms (default 100). */
  initialMs?: number
  /** The longest delay in ms (default 10 000). */
  maxMs?: number
  /** Growth per retry (default 2). */
  factor?: number
  /** Full jitter on each delay (default true). */
  jitter?: boolean
}

/**
 * The compiler's view of a value that is plain JSON at run time: `I` what it takes, `O` what it
 * gives. The `~types` key is never present (not in the object, not in the JSON, not in the
 * version hash); it only carries types from a builder to the code that uses its result.
 */
export interface Phantom<I, O> {
  readonly '~types'?: { readonly input: I; readonly output: O }
}

/**
 * A node's output type `O` and the signals `S` its typed waits take (see {@link NodeOutput} and
 * {@link NodeSignals}), for the compiler only.
 */
export interface HasOutput<O, S = never> {
  readonly '~types'?: { readonly output: O; readonly signals: S }
}

/**
 * A node `N` as a builder returns it, with its output type `O` and the signals its typed waits
 * take, `S` (one `{ name: payload }` per wait, as a union; `never` for none):
 * `Typed<StepNode, string>` is a step node whose output is a string. The same JSON as `N`; the
 * types are the compiler's only.
 */
export type Typed<N, O, S = never> = N & HasOutput<O, S>

/**
 * A local step function named in a definition: `{ fn: name }`. Built by `fn<I, O>(name)` it
 * carries its input and output types, so a step on it has output `O` and `wf.register(ref, impl)`
 * must take `I` and return `O`.
 */
export interface FnRef<I = unknown, O = unknown> extends Phantom<I, O> {
  fn: string
}

/** A mesh capability named in a definition: `{ capability: 'name@range' }`, typed by `capability<I, O>(...)`. */
export interface CapabilityRef<I = unknown, O = unknown> extends Phantom<I, O> {
  capability: string
}

/** What a step runs: a function registered locally by name, or a capability on the mesh (`name@range`). */
export type StepRun<I = unknown, O = unknown> = FnRef<I, O> | CapabilityRef<I, O>

/** The step that undoes a completed step when the run fails or is cancelled (a saga). */
export interface Compensation {
  run: StepRun
  input?: InputSpec
  retry?: RetryPolicy
  timeoutMs?: number
}

/** A leaf the host executes: its output is the function's or capability's result. */
export interface StepNode {
  kind: 'step'
  id: string
  run: StepRun
  input?: InputSpec
  retry?: RetryPolicy
  /** Per attempt. */
  timeoutMs?: number
  compensate?: Compensation
}

/** A sub-workflow run: its output is the child run's result. */
export interface ChildNode {
  kind: 'child'
  id: string
  workflow: string
  input?: InputSpec
  retry?: RetryPolicy
  /** Per attempt. */
  timeoutMs?: number
  compensate?: Compensation
}

/** Children one after another: the output is the last child's. */
export interface SequenceFields<N> {
  kind: 'sequence'
  steps: N[]
}

/** Children at once, joined by `join`: the output is an array in branch order. */
export interface ParallelFields<N> {
  kind: 'parallel'
  branches: N[]
  join?: Join
  timeoutMs?: number
}

/** The first arm whose condition holds, else `otherwise`: the output is the chosen arm's. */
export interface BranchFields<N> {
  kind: 'branch'
  arms: { when: Condition; then: N }[]
  otherwise?: N
}

/** The body again while (tested before) or until (tested after) a condition: exactly one of the two. */
export interface LoopFields<N> {
  kind: 'loop'
  while?: Condition
  until?: Condition
  /** 1 to 1 000 000; a loop that would go on past it fails with LOOP_LIMIT. */
  maxIterations: number
  body: N
}

/** The body once per item of a list: the output is an array in item order. */
export interface ForEachFields<N> {
  kind: 'forEach'
  items: Ref
  /** Instances at once (default: no limit). */
  concurrency?: number
  join?: Join
  timeoutMs?: number
  body: N
}

/**
 * Items streamed through stages, each item through stage 0, 1, ... in order, a stage handling one
 * item at a time in index order and running at most `buffer` items ahead of the next stage
 * (backpressure). The output is an array of the last stage's outputs, in item order.
 *
 * Inside a stage `$index` is the item's index. `$item` is `items[i]` in stage 0, and in stage
 * s > 0 the output of stage s - 1 for that item: each stage transforms what the one before made.
 */
export interface PipelineFields<N> {
  kind: 'pipeline'
  /** A reference to the list of items. */
  items: Ref
  /** The stages, in order (at least one). */
  stages: N[]
  /** Items a stage may finish ahead of the next stage starting them (default 1). */
  buffer?: number
  timeoutMs?: number
}

/** A sequence node. */
export interface SequenceNode extends SequenceFields<WorkflowNode> {
  id: string
}
/** A parallel node. */
export interface ParallelNode extends ParallelFields<WorkflowNode> {
  id: string
}
/** A branch node. */
export interface BranchNode extends BranchFields<WorkflowNode> {
  id: string
}
/** A loop node. */
export interface LoopNode extends LoopFields<WorkflowNode> {
  id: string
}
/** A forEach node. */
export interface ForEachNode extends ForEachFields<WorkflowNode> {
  id: string
}

/** A pipeline node. */
export interface PipelineNode extends PipelineFields<WorkflowNode> {
  id: string
}

/**
 * One call of `capability` to every agent offering it, or to each agent of `agents`, gathered by
 * `join`, optionally aggregated.
 */
export interface ScatterGatherNode {
  kind: 'scatterGather'
  id: string
  capability: string
  /**
   * The agents to call, by id, in this order: a list, or a reference to one in the run's data.
   * Left out, every agent offering `capability` (sorted by id).
   */
  agents?: readonly string[] | Ref
  input?: InputSpec
  join?: Join
  timeoutMs?: number
  aggregate?: { fn: string }
}

/** A durable timer: the output is `null`. */
export interface SleepNode {
  kind: 'sleep'
  id: string
  ms: number
}

/** Waits for a signal: the output is its payload (`undefined` after a timeout with `continue`). */
export interface WaitForNode {
  kind: 'waitFor'
  id: string
  signal: string
  timeoutMs?: number
  onTimeout?: 'fail' | 'continue'
}

/**
 * Ends the run's current generation and begins the next one: the same run id and definition
 * version, started again with the built `input` (default: no input), its history starting afresh,
 * so a long-lived loop keeps a bounded history. It stands only in tail position, where nothing of
 * the generation runs beside or after it: the root itself, the last node of a sequence in tail
 * position, or an arm (or `otherwise`) of a branch in tail position. So "go on while work
 * remains" is a branch whose one arm continues: when another arm is chosen (or none), the run
 * completes with that arm's output. It never completes itself, so it has no output and
 * `$steps.<its id>` is refused.
 */
export interface ContinueAsNewNode {
  kind: 'continueAsNew'
  id: string
  input?: InputSpec
}

/**
 * Hands a goal (the built `input`) to a supervising agent offering `capability` (`name@range`),
 * which starts the sub-workflows it chooses and replies with their run ids; the node then waits
 * for those runs. The output is the array of their results, in the order the agent named them.
 */
export interface DelegateNode {
  kind: 'delegate'
  id: string
  capability: string
  input?: InputSpec
  /** Per attempt. */
  timeoutMs?: number
  retry?: RetryPolicy
}

/** A node of a definition: every node has an id, unique in the definition. */
export type WorkflowNode =
  | StepNode
  | ChildNode
  | SequenceNode
  | ParallelNode
  | BranchNode
  | LoopNode
  | ForEachNode
  | ScatterGatherNode
  | SleepNode
  | WaitForNode
  | PipelineNode
  | ContinueAsNewNode
  | DelegateNode

/** A container as the builders return it: its id may be left out. */
export interface SequenceDraft extends SequenceFields<NodeDraft> {
  id?: string
}
export interface ParallelDraft extends ParallelFields<NodeDraft> {
  id?: string
}
export interface BranchDraft extends BranchFields<NodeDraft> {
  id?: string
}
export interface LoopDraft extends LoopFields<NodeDraft> {
  id?: string
}
export interface ForEachDraft extends ForEachFields<NodeDraft> {
  id?: string
}
/** A pipeline as the builder returns it: its stages may be drafts, its id is always given. */
export interface PipelineDraft extends PipelineFields<NodeDraft> {
  id: string
}

/**
 * A node as the builders return it and `workflow()` takes it: a container may leave its id out,
 * and `workflow()` (or `compileWorkflow`) numbers it by position (`seq-1`, `par-2`, ...).
 */
export type NodeDraft =
  | StepNode
  | ChildNode
  | ScatterGatherNode
  | SleepNode
  | WaitForNode
  | SequenceDraft
  | ParallelDraft
  | BranchDraft
  | LoopDraft
  | ForEachDraft
  | PipelineDraft
  | ContinueAsNewNode
  | DelegateNode

/** The kinds of nodes. */
export type NodeKind = WorkflowNode['kind']

/**
 * A workflow definition. `I` and `O` are the run's input and output types, `S` the signals its
 * runs take (`{ name: payload }`; {@link AnySignals} when its waits are untyped): they exist for
 * the compiler only (`~types` is never present at run time, and never in the JSON).
 */
export interface WorkflowDefinition<I = unknown, O = unknown, S = AnySignals> {
  format: 1
  /** A workflow name, with the grammar of agent names. */
  name: string
  /** Given by the user, or `sha256:<16 hex>`: the content hash of `{ name, root, output, timeoutMs }`. */
  version: string
  root: WorkflowNode
  /** The run's output (default: the root node's). */
  output?: InputSpec
  /** The whole run's limit in ms (none when left out). */
  timeoutMs?: number
  readonly '~types'?: { readonly input: I; readonly output: O; readonly signals: S }
}

/** The run input type of a definition. */
export type WorkflowInput<D> = D extends WorkflowDefinition<infer I, unknown, unknown> ? I : unknown

/** The run output type of a definition. */
export type WorkflowOutput<D> = D extends WorkflowDefinition<unknown, infer O, unknown> ? O : unknown

/** The signals a definition's runs take, `{ name: payload }` ({@link AnySignals} when untyped). */
export type WorkflowSignals<D> = D extends WorkflowDefinition<unknown, unknown, infer S> ? S : AnySignals

/**
 * The output type of a node as a builder typed it: a step's `O` from its typed reference, a
 * sequence's last child's, and so on; `unknown` for a node built from an untyped `{ fn: 'x' }`.
 */
export type NodeOutput<N> = N extends HasOutput<infer O, unknown> ? O : unknown

/**
 * Signals of any name with any payload: what the runs of a definition without typed waits take
 * as far as the compiler knows (the run still refuses a name no wait has, `SIGNAL_UNKNOWN`).
 */
export type AnySignals = Record<string, unknown>

/**
 * The signal one wait takes: `{ [Name]: P }`, or {@link AnySignals} when its name is no literal
 * (the compiler does not know which it is). A wait typed with `payload: typeOnly<P>()` is typed;
 * one without has `P` `unknown`.
 */
export type WaitSignal<Name extends string, P> = string extends Name ? AnySignals : { [K in Name]: P }

/**
 * The signals the waits of a node take, as the builders typed them: `{ approve: { by: string } }`
 * for `waitFor('w', 'approve', { payload: typeOnly<{ by: string }>() })`, a union of its
 * children's for a container, `never` for a node that waits for none, and {@link AnySignals} for
 * a node not built by a builder (it may wait for any name).
 */
export type NodeSignals<N> = N extends HasOutput<unknown, infer S> ? S : N extends object ? AnySignals : never

/**
 * The signals the runs of a definition whose root waits for `S` (a {@link NodeSignals} union)
 * take, as one object: `{ approve: { by: string }; reject: string }`. A name waited for with two
 * payload types takes a payload of both. Without a typed wait (one whose payload is not
 * `unknown`) it is {@link AnySignals}, as before signals were typed.
 */
export type SignalMap<S> = [TypedSignals<S>] extends [never]
  ? AnySignals
  : // The union's members as one intersection (a function of each takes all of them), written out as one object.
    (S extends unknown ? (s: S) => void : never) extends (all: infer A) => void
    ? { [K in keyof A]: A[K] }
    : never

/** The members of a {@link NodeSignals} union that give a payload type. */
export type TypedSignals<S> = S extends unknown ? (unknown extends S[keyof S] ? never : S) : never

/**
 * A value that stands for the type `T` and nothing else (`typeOnly<T>()`): it types the run input
 * of `workflow(name, root, { input: typeOnly<T>() })` while the output is inferred from the root.
 * Nothing is checked at run time.
 */
export interface TypeOnly<T> {
  readonly '~type'?: T
}

/** The output of the last node of a list, as a sequence or a pipeline's last stage gives it (`undefined` for none). */
export type LastOutput<N extends readonly unknown[]> = N extends readonly [...unknown[], infer L]
  ? NodeOutput<L>
  : N extends readonly []
    ? undefined
    : NodeOutput<N[number]> | undefined

/**
 * A child's output under a join: as it is under `'all'` (every child succeeded), possibly
 * `undefined` under `'any'` or a quorum (the children cancelled or failed once the join held).
 */
export type Joined<O, J> = [J] extends ['all'] ? O : O | undefined

/** A parallel's output: its branches' outputs in branch order, under its join. */
export type ParallelOutput<B extends readonly unknown[], J> = { -readonly [K in keyof B]: Joined<NodeOutput<B[K]>, J> }

/** The children a container lists, in order (a branch's `otherwise` last); none for any other node. */
export function childrenOf(node: WorkflowNode): readonly WorkflowNode[] {
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
