/**
 * The public builders of workflow definitions. Each returns plain data (no closures); `workflow()`
 * checks the whole tree (`DEFINITION_INVALID` naming the node), numbers the containers left
 * unnamed by their position (`seq-1`, `par-2`, ...) and sets the version.
 *
 * Types flow through them without anything entering the JSON: a step on a typed reference
 * (`fn<I, O>('name')`) has output `O`, a container's output is what the run really makes of its
 * children's (a sequence's last, a parallel's tuple, ...), and `workflow()` takes the root's.
 *
 * ```ts
 * const fetchText = fn<string, string>('fetch')
 * const doc = workflow('doc', sequence(
 *   step('fetch', fetchText, { input: '$input.url', retry: { attempts: 3 } }),
 *   step('summarize', capability<{ text: string }, string>('summarize@^1'), { input: { text: '$steps.fetch' } }),
 * ), { input: typeOnly<{ url: string }>() })
 * ```
 */
import type {
  BranchDraft,
  CapabilityRef,
  ChildNode,
  Compensation,
  Condition,
  ContinueAsNewNode,
  DelegateNode,
  FnRef,
  ForEachDraft,
  InputSpec,
  Join,
  Joined,
  LastOutput,
  LoopDraft,
  NodeDraft,
  NodeOutput,
  NodeSignals,
  ParallelDraft,
  ParallelOutput,
  PipelineDraft,
  Ref,
  RetryPolicy,
  ScatterGatherNode,
  SequenceDraft,
  SignalMap,
  SleepNode,
  StepNode,
  StepRun,
  Typed,
  TypeOnly,
  WaitForNode,
  WaitSignal,
  WorkflowDefinition,
} from './definition.js'
import { validateDefinition } from './validate.js'

/** Options of a step or a child workflow. */
export interface StepOptions {
  input?: InputSpec
  retry?: RetryPolicy
  /** Per attempt, in ms. */
  timeoutMs?: number
  compensate?: Compensation
}

/** Options of `workflow()`. */
export interface WorkflowOptions<I = unknown> {
  /**
   * The run's input type, for the compiler only: `typeOnly<I>()`. Nothing of it enters the
   * definition, and the input is not checked at run time.
   */
  input?: TypeOnly<I>
  /** A version name of your own (default: the content hash `sha256:<16 hex>`). */
  version?: string
  /** The run's output (default: the root node's). */
  output?: InputSpec
  /** The whole run's limit in ms (default: none). */
  timeoutMs?: number
}

/** A node with its undefined fields left out, so the JSON and the object hold the same. */
function node<T extends object>(value: { [K in keyof T]-?: T[K] | undefined }): T {
  for (const key of Object.keys(value)) if ((value as Record<string, unknown>)[key] === undefined) delete (value as Record<string, unknown>)[key]
  return value as T
}

/** A copy of a list given to a builder (anything else is passed on for `workflow()` to refuse). */
function nodes<T>(value: readonly T[]): T[] {
  return Array.isArray(value) ? [...value] : (value as T[])
}

/**
 * A typed reference to the local step function registered as `name`: the plain `{ fn: name }`,
 * which `step(id, ref)` gives output `O` and `wf.register(ref, impl)` holds to `(input: I) => O`.
 */
export function fn<I = unknown, O = unknown>(name: string): FnRef<I, O> {
  return { fn: name }
}

/** A typed reference to the mesh capability `name@range`: the plain `{ capability }`, whose steps have output `O`. */
export function capability<I = unknown, O = unknown>(name: string): CapabilityRef<I, O> {
  return { capability: name }
}

/** Stands for the type `T` (for `workflow(..., { input: typeOnly<T>() })`); an empty object at run time. */
export function typeOnly<T>(): TypeOnly<T> {
  return {}
}

/**
 * A workflow definition named `name` whose root is `root`: checked, containers numbered, version
 * set, deeply frozen. Its output type is the root's (see {@link NodeOutput}); its input type is
 * `unknown` unless `options.input` is `typeOnly<I>()`; its runs take the signals its typed waits
 * do (see {@link SignalMap}).
 */
export function workflow<R extends NodeDraft, I = unknown>(
  name: string,
  root: R,
  options?: WorkflowOptions<I> & { output?: never },
): WorkflowDefinition<I, NodeOutput<R>, SignalMap<NodeSignals<R>>>
/** A workflow definition with an `output` spec: its output type is `unknown`, the rest as above. */
export function workflow<R extends NodeDraft, I = unknown>(
  name: string,
  root: R,
  options: WorkflowOptions<I> & { output: InputSpec },
): WorkflowDefinition<I, unknown, SignalMap<NodeSignals<R>>>
/**
 * A workflow definition whose input and output types are `I` and `O` as you say (not checked
 * against the root), or `unknown`; its runs take any signal as far as the compiler knows.
 */
export function workflow<I = unknown, O = unknown>(name: string, root: NodeDraft, options?: WorkflowOptions<I>): WorkflowDefinition<I, O>
export function workflow(name: string, root: NodeDraft, options: WorkflowOptions = {}): WorkflowDefinition {
  const o = options ?? {}
  return validateDefinition({ format: 1, name, version: o.version, root, output: o.output, timeoutMs: o.timeoutMs })
}

/**
 * A step: the function registered as `run.fn`, or a call to the mesh capability `run.capability`.
 * Its output type is `O` of a typed reference (`fn<I, O>(name)`), else `unknown`.
 */
export function step<I = unknown, O = unknown>(id: string, run: StepRun<I, O>, options: StepOptions = {}): Typed<StepNode, O> {
  const o = options ?? {}
  return node({ kind: 'step', id, run, input: o.input, retry: o.retry, timeoutMs: o.timeoutMs, compensate: o.compensate })
}

/**
 * A child run of the workflow `workflow` names (its newest version when the step starts). Given
 * the definition itself, only its name enters the JSON and the output type is its output's: it
 * is not defined by this, so `wf.define` it too (`start` refuses a parent whose child workflow is
 * not defined with `WORKFLOW_NOT_FOUND`, before anything runs).
 */
export function child<O = unknown>(id: string, workflow: string | WorkflowDefinition<unknown, O, unknown>, options: StepOptions = {}): Typed<ChildNode, O> {
  const o = options ?? {}
  const name = typeof workflow === 'object' && workflow !== null && typeof workflow.name === 'string' ? workflow.name : workflow
  return node({ kind: 'child', id, workflow: name as string, input: o.input, retry: o.retry, timeoutMs: o.timeoutMs, compensate: o.compensate })
}

/**
 * Nodes one after another: `sequence(a, b, c)`, or `sequence('id', [a, b, c])` to name it. The
 * output is the last node's.
 */
export function sequence<N extends readonly NodeDraft[]>(...steps: N): Typed<SequenceDraft, LastOutput<N>, NodeSignals<N[number]>>
export function sequence<N extends readonly NodeDraft[] | []>(id: string, steps: N): Typed<SequenceDraft, LastOutput<N>, NodeSignals<N[number]>>
export function sequence(...args: unknown[]): SequenceDraft {
  if (typeof args[0] === 'string') return { kind: 'sequence', id: args[0], steps: nodes(args[1] as NodeDraft[]) }
  return { kind: 'sequence', steps: args as NodeDraft[] }
}

/**
 * Nodes at once, joined by `join` (default `'all'`), within `timeoutMs`. The output is the
 * branches' outputs in branch order; under `'any'` or a quorum a branch that did not finish gives `undefined`.
 */
export function parallel<B extends readonly NodeDraft[] | [], J extends Join = 'all'>(
  branches: B,
  options: { join?: J; timeoutMs?: number; id?: string } = {},
): Typed<ParallelDraft, ParallelOutput<B, J>, NodeSignals<B[number]>> {
  const o = options ?? {}
  return node({ kind: 'parallel', id: o.id, branches: nodes(branches), join: o.join, timeoutMs: o.timeoutMs })
}

/** One arm of a branch: `then` runs when `condition` holds. */
export interface BranchArm<T extends NodeDraft = NodeDraft> {
  when: Condition
  then: T
}

/** An arm of a {@link branch}: `{ when: condition, then: node }`. */
export function when<T extends NodeDraft>(condition: Condition, then: T): BranchArm<T> {
  return { when: condition, then }
}

/** The output of a branch's `otherwise`: its node's, or `undefined` when there is none. */
export type OtherwiseOutput<E> = E extends NodeDraft ? NodeOutput<E> : undefined

/**
 * The first arm whose `when` holds, else `otherwise` (else nothing: the output is `undefined`).
 * The output is the chosen arm's.
 */
export function branch<A extends readonly BranchArm[] | [], E extends NodeDraft | undefined = undefined>(
  arms: A,
  otherwise?: E,
  options: { id?: string } = {},
): Typed<BranchDraft, NodeOutput<A[number]['then']> | OtherwiseOutput<E>, NodeSignals<A[number]['then'] | E>> {
  return node<BranchDraft>({ kind: 'branch', id: options?.id, arms: nodes(arms), otherwise: otherwise as NodeDraft | undefined })
}

/**
 * `body` again until `until` holds (tested after each iteration), or while `while` holds (tested
 * before). The output is the last iteration's body's: with `until` there is one at least; with
 * `while` there may be none, and the output is `undefined`.
 */
export function loop<B extends NodeDraft>(
  options: { until: Condition; while?: never; maxIterations: number; id?: string },
  body: B,
): Typed<LoopDraft, NodeOutput<B>, NodeSignals<B>>
export function loop<B extends NodeDraft>(
  options: { while?: Condition; until?: Condition; maxIterations: number; id?: string },
  body: B,
): Typed<LoopDraft, NodeOutput<B> | undefined, NodeSignals<B>>
export function loop(options: { while?: Condition; until?: Condition; maxIterations: number; id?: string }, body: NodeDraft): LoopDraft {
  const o = options ?? {}
  return node({ kind: 'loop', id: o.id, while: o.while, until: o.until, maxIterations: o.maxIterations, body })
}

/**
 * `body` once per item of the list `items` names (`$item`, `$index` inside), `concurrency` at
 * once. The output is the body's outputs in item order (under `'any'` or a quorum, `undefined`
 * for an item that did not finish).
 */
export function forEach<B extends NodeDraft, J extends Join = 'all'>(
  items: Ref,
  body: B,
  options: { concurrency?: number; join?: J; timeoutMs?: number; id?: string } = {},
): Typed<ForEachDraft, Joined<NodeOutput<B>, J>[], NodeSignals<B>> {
  const o = options ?? {}
  return node({ kind: 'forEach', id: o.id, items, concurrency: o.concurrency, join: o.join, timeoutMs: o.timeoutMs, body })
}

/**
 * One call of `capability` to every agent offering it, or with `agents` to each agent listed (by
 * id, in that order; a list, or a reference to one such as `'$input.reviewers'`), gathered by
 * `join`, then `aggregate` (a mapping) if given. The output is the mapping's result, or else the
 * answers in agent order (of type `O` for a typed `capability<I, O>(...)`, `undefined` for an
 * agent that did not answer under `'any'` or a quorum). A listed agent that is not registered
 * fails its call at once with `UNKNOWN_AGENT`, one that does not offer the capability with
 * `NO_HANDLER`. With no `input`, each agent gets `null`.
 */
export function scatterGather(
  id: string,
  capability: string | CapabilityRef,
  options: { agents?: readonly string[] | Ref; input?: InputSpec; join?: Join; timeoutMs?: number; aggregate: string | { fn: string } },
): Typed<ScatterGatherNode, unknown>
export function scatterGather<O = unknown, J extends Join = 'all'>(
  id: string,
  capability: string | CapabilityRef<unknown, O>,
  options?: { agents?: readonly string[] | Ref; input?: InputSpec; join?: J; timeoutMs?: number; aggregate?: never },
): Typed<ScatterGatherNode, Joined<O, J>[]>
export function scatterGather(
  id: string,
  capability: string | CapabilityRef,
  options: { agents?: readonly string[] | Ref; input?: InputSpec; join?: Join; timeoutMs?: number; aggregate?: string | { fn: string } } = {},
): ScatterGatherNode {
  const o = options ?? {}
  const aggregate = typeof o.aggregate === 'string' ? { fn: o.aggregate } : o.aggregate
  const name = typeof capability === 'object' && capability !== null ? capability.capability : capability
  return node({ kind: 'scatterGather', id, capability: name, agents: o.agents, input: o.input, join: o.join, timeoutMs: o.timeoutMs, aggregate })
}

/** A durable timer of `ms`. Its output is `null`. */
export function sleep(id: string, ms: number): Typed<SleepNode, null> {
  return { kind: 'sleep', id, ms }
}

/**
 * Waits for the signal `signal`; after `timeoutMs` it fails, or with `onTimeout: 'continue'` goes
 * on. The output is the signal's payload: `P` (default `unknown`), or `undefined` after a timeout
 * that went on. With `payload: typeOnly<P>()` the wait is typed: the definition's runs then take
 * this signal name (`run.signal(signal, payload)`) only with a `P` (see {@link WaitSignal}).
 */
export function waitFor<P = unknown, Name extends string = string>(
  id: string,
  signal: Name,
  options: { payload?: TypeOnly<P>; timeoutMs?: number; onTimeout: 'continue' },
): Typed<WaitForNode, P | undefined, WaitSignal<Name, P>>
export function waitFor<P = unknown, Name extends string = string>(
  id: string,
  signal: Name,
  options?: { payload?: TypeOnly<P>; timeoutMs?: number; onTimeout?: 'fail' },
): Typed<WaitForNode, P, WaitSignal<Name, P>>
export function waitFor<P = unknown, Name extends string = string>(
  id: string,
  signal: Name,
  options?: { payload?: TypeOnly<P>; timeoutMs?: number; onTimeout?: 'fail' | 'continue' },
): Typed<WaitForNode, P | undefined, WaitSignal<Name, P>>
export function waitFor(id: string, signal: string, options: { timeoutMs?: number; onTimeout?: 'fail' | 'continue' } = {}): WaitForNode {
  const o = options ?? {}
  return node({ kind: 'waitFor', id, signal, timeoutMs: o.timeoutMs, onTimeout: o.onTimeout })
}

/**
 * The items of the list `items` names streamed through `stages` in order: stage s takes item i
 * once stage s - 1 finished it, one item at a time, at most `buffer` items (default 1) ahead of
 * stage s + 1. Inside a stage `$index` is the item's index and `$item` the item in stage 0, or
 * the previous stage's output for it in later stages. The output is the last stage's outputs.
 */
export function pipeline<S extends readonly NodeDraft[] | []>(
  id: string,
  items: Ref,
  stages: S,
  options: { buffer?: number; timeoutMs?: number } = {},
): Typed<PipelineDraft, LastOutput<S>[], NodeSignals<S[number]>> {
  const o = options ?? {}
  return node({ kind: 'pipeline', id, items, stages: nodes(stages), buffer: o.buffer, timeoutMs: o.timeoutMs })
}

/**
 * Ends this generation of the run and begins the next with `input` (same run id, same version,
 * a fresh history). It stands only in tail position: the root itself, the last node of a
 * sequence in tail position, or an arm (or `otherwise`) of a branch in tail position. To go on
 * only while work remains, put it in a branch arm; the run completes when another arm is taken:
 *
 * ```ts
 * workflow('drain', sequence(
 *   step('batch', { fn: 'takeBatch' }, { input: '$input' }),
 *   branch([when({ path: '$steps.batch.left', op: 'gt', value: 0 }, continueAsNew('again', { input: '$steps.batch.cursor' }))],
 *     step('done', { fn: 'summary' })),
 * ))
 * ```
 */
export function continueAsNew(id: string, options: { input?: InputSpec } = {}): Typed<ContinueAsNewNode, never> {
  return node({ kind: 'continueAsNew', id, input: options?.input })
}

/**
 * Hands the goal `input` to a supervising agent offering `capability`; it starts the
 * sub-workflows it chooses, and the output is the array of their results.
 */
export function delegate(
  id: string,
  capability: string,
  options: { input?: InputSpec; timeoutMs?: number; retry?: RetryPolicy } = {},
): Typed<DelegateNode, unknown[]> {
  const o = options ?? {}
  return node({ kind: 'delegate', id, capability, input: o.input, timeoutMs: o.timeoutMs, retry: o.retry })
}

/**
 * The join that succeeds once `n` children succeeded. Plain data like every builder's: `workflow()`
 * refuses an `n` that is no whole number from 1 to the children that could reach it (NaN too).
 */
export function quorum(n: number): { quorum: number } {
  return { quorum: n }
}
