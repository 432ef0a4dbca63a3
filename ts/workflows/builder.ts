/**
 * The public builders of workflow definitions. Each returns plain data (no closures); `workflow()`
 * checks the whole tree (`DEFINITION_INVALID` naming the node), numbers the containers left
 * unnamed by their position (`seq-1`, `par-2`, ...) and sets the version.
 *
 * ```ts
 * const doc = workflow<{ url: string }, string>('doc', sequence(
 *   step('fetch', { fn: 'fetch' }, { input: { url: '$input.url' }, retry: { attempts: 3 } }),
 *   step('summarize', { capability: 'summarize@^1' }, { input: '$steps.fetch.text' }),
 * ))
 * ```
 */
import type {
  BranchDraft,
  ChildNode,
  Compensation,
  Condition,
  ContinueAsNewNode,
  DelegateNode,
  ForEachDraft,
  InputSpec,
  Join,
  LoopDraft,
  NodeDraft,
  ParallelDraft,
  PipelineDraft,
  Ref,
  RetryPolicy,
  ScatterGatherNode,
  SequenceDraft,
  SleepNode,
  StepNode,
  StepRun,
  WaitForNode,
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
export interface WorkflowOptions {
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
 * A workflow definition named `name` whose root is `root`: checked, containers numbered, version
 * set, deeply frozen. `I` and `O` type the run's input and output.
 */
export function workflow<I = unknown, O = unknown>(name: string, root: NodeDraft, options: WorkflowOptions = {}): WorkflowDefinition<I, O> {
  const o = options ?? {}
  return validateDefinition({ format: 1, name, version: o.version, root, output: o.output, timeoutMs: o.timeoutMs }) as WorkflowDefinition<I, O>
}

/** A step: the function registered as `run.fn`, or a call to the mesh capability `run.capability`. */
export function step(id: string, run: StepRun, options: StepOptions = {}): StepNode {
  const o = options ?? {}
  return node({ kind: 'step', id, run, input: o.input, retry: o.retry, timeoutMs: o.timeoutMs, compensate: o.compensate })
}

/** A child run of the workflow named `workflowName` (its newest version when the step starts). */
export function child(id: string, workflowName: string, options: StepOptions = {}): ChildNode {
  const o = options ?? {}
  return node({ kind: 'child', id, workflow: workflowName, input: o.input, retry: o.retry, timeoutMs: o.timeoutMs, compensate: o.compensate })
}

/** Nodes one after another: `sequence(a, b, c)`, or `sequence('id', [a, b, c])` to name it. */
export function sequence(...steps: NodeDraft[]): SequenceDraft
export function sequence(id: string, steps: readonly NodeDraft[]): SequenceDraft
export function sequence(...args: unknown[]): SequenceDraft {
  if (typeof args[0] === 'string') return { kind: 'sequence', id: args[0], steps: nodes(args[1] as NodeDraft[]) }
  return { kind: 'sequence', steps: args as NodeDraft[] }
}

/** Nodes at once, joined by `join` (default `'all'`), within `timeoutMs`. */
export function parallel(branches: readonly NodeDraft[], options: { join?: Join; timeoutMs?: number; id?: string } = {}): ParallelDraft {
  const o = options ?? {}
  return node({ kind: 'parallel', id: o.id, branches: nodes(branches), join: o.join, timeoutMs: o.timeoutMs })
}

/** One arm of a branch: `then` runs when `condition` holds. */
export interface BranchArm {
  when: Condition
  then: NodeDraft
}

/** An arm of a {@link branch}: `{ when: condition, then: node }`. */
export function when(condition: Condition, then: NodeDraft): BranchArm {
  return { when: condition, then }
}

/** The first arm whose `when` holds, else `otherwise` (else nothing: the output is `undefined`). */
export function branch(arms: readonly BranchArm[], otherwise?: NodeDraft, options: { id?: string } = {}): BranchDraft {
  return node({ kind: 'branch', id: options?.id, arms: nodes(arms), otherwise })
}

/** `body` again while `while` holds (tested before each iteration) or until `until` holds (tested after). */
export function loop(options: { while?: Condition; until?: Condition; maxIterations: number; id?: string }, body: NodeDraft): LoopDraft {
  const o = options ?? {}
  return node({ kind: 'loop', id: o.id, while: o.while, until: o.until, maxIterations: o.maxIterations, body })
}

/** `body` once per item of the list `items` names (`$item`, `$index` inside), `concurrency` at once. */
export function forEach(items: Ref, body: NodeDraft, options: { concurrency?: number; join?: Join; timeoutMs?: number; id?: string } = {}): ForEachDraft {
  const o = options ?? {}
  return node({ kind: 'forEach', id: o.id, items, concurrency: o.concurrency, join: o.join, timeoutMs: o.timeoutMs, body })
}

/** One call to every agent offering `capability`, gathered by `join`, then `aggregate` (a mapping) if given. */
export function scatterGather(
  id: string,
  capability: string,
  options: { input?: InputSpec; join?: Join; timeoutMs?: number; aggregate?: string | { fn: string } } = {},
): ScatterGatherNode {
  const o = options ?? {}
  const aggregate = typeof o.aggregate === 'string' ? { fn: o.aggregate } : o.aggregate
  return node({ kind: 'scatterGather', id, capability, input: o.input, join: o.join, timeoutMs: o.timeoutMs, aggregate })
}

/** A durable timer of `ms`. */
export function sleep(id: string, ms: number): SleepNode {
  return { kind: 'sleep', id, ms }
}

/** Waits for the signal `signal`; after `timeoutMs` it fails, or with `onTimeout: 'continue'` goes on. */
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
export function pipeline(id: string, items: Ref, stages: readonly NodeDraft[], options: { buffer?: number; timeoutMs?: number } = {}): PipelineDraft {
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
export function continueAsNew(id: string, options: { input?: InputSpec } = {}): ContinueAsNewNode {
  return node({ kind: 'continueAsNew', id, input: options?.input })
}

/**
 * Hands the goal `input` to a supervising agent offering `capability`; it starts the
 * sub-workflows it chooses, and the output is the array of their results.
 */
export function delegate(id: string, capability: string, options: { input?: InputSpec; timeoutMs?: number; retry?: RetryPolicy } = {}): DelegateNode {
  const o = options ?? {}
  return node({ kind: 'delegate', id, capability, input: o.input, timeoutMs: o.timeoutMs, retry: o.retry })
}

/** The join that succeeds once `n` children succeeded. */
export function quorum(n: number): Join {
  return { quorum: n }
}
