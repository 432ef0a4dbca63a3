/**
 * What the host does for the core: runs a step (a registered local function, a capability on
 * the mesh, a child run, one call of a scatterGather), classifies its failure as transient or
 * permanent the way the mesh does, and takes decisions (a branch's arm, whether a loop goes
 * on, how many instances a forEach or scatterGather runs).
 */
import { PermanentError } from '../agents/agent.js'
import type { Mesh } from '../agents/mesh.js'
import { splitCapability } from '../agents/registry.js'
import { CAPABILITY_HEADER } from '../agents/runner.js'
import { inboxOf } from '../bus/options.js'
import { isOrreryError, OrreryError, type ErrorCode } from '../errors.js'
import { validate, type StandardSchemaV1 } from '../schema.js'
import type { ScatterGatherNode, WorkflowNode } from './definition.js'
import { resolveRef, testCondition, type DataScope } from './refs.js'

/** The header a capability step's request carries its idempotency key in. */
export const IDEMPOTENCY_HEADER = 'orrery-idempotency-key'

/** What a local step function gets besides its input. */
export interface StepContext {
  readonly runId: string
  /** The step's node id. */
  readonly step: string
  /** 1 for the first attempt. */
  readonly attempt: number
  /** `<runId>/<nodeId>` plus `[i]` per enclosing iteration: the same across attempts and restarts. */
  readonly idempotencyKey: string
  /** Aborted when the attempt is cancelled (its timeout, a failed sibling, the run's cancel). */
  readonly signal: AbortSignal
  /** The attempt's span, where the Orrery traces (docs/observability.md): its ids, for log lines. */
  readonly trace?: { readonly traceId: string; readonly spanId: string } | undefined
}

/**
 * @internal An attempt's context. Its AbortSignal is made when the step first reads it: most
 * steps never do, and an AbortController per attempt cost 5% of a short run.
 */
export class AttemptContext implements StepContext {
  private controller: AbortController | undefined
  private reason: unknown
  private aborted = false
  /** The attempt's span's ids, set where the Orrery traces. */
  trace: { readonly traceId: string; readonly spanId: string } | undefined = undefined

  constructor(
    readonly runId: string,
    readonly step: string,
    readonly attempt: number,
    readonly idempotencyKey: string,
  ) {}

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController()
      if (this.aborted) this.controller.abort(this.reason)
    }
    return this.controller.signal
  }

  abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    this.controller?.abort(reason)
  }
}

/** A registered local step function. */
export type StepFunction<I = unknown, O = unknown> = (input: I, context: StepContext) => O | Promise<O>

/** A local step as registered: its function and schemas. */
export interface RegisteredStep {
  readonly run: StepFunction
  readonly input: StandardSchemaV1 | undefined
  readonly output: StandardSchemaV1 | undefined
}

/** A child run as the executor sees it. */
export interface ChildHandle {
  result(): Promise<unknown>
  cancel(): void
}

/** What the executor needs of the runtime. */
export interface ExecutorHost {
  readonly steps: ReadonlyMap<string, RegisteredStep>
  readonly mappings: ReadonlyMap<string, (arg: unknown) => unknown>
  readonly conditions: ReadonlyMap<string, (arg: unknown) => boolean>
  readonly mesh: Mesh | undefined
  /** Starts (or finds: the id is the idempotency key) a child run of the newest version of `workflow`. */
  startChild(workflow: string, input: unknown, id: string): Promise<ChildHandle>
  /** A run of these workflows by id (one a delegate's agent started), or undefined. */
  findRun(id: string): ChildHandle | undefined
}

/** How an attempt ended. */
export type Outcome = { readonly ok: true; readonly output: unknown } | { readonly ok: false; readonly permanent: boolean; readonly error: unknown }

/**
 * Codes that no retry can fix: an attempt gets the same input as the one before, so what was
 * refused for its shape or size is refused again. Left out on purpose: CLOSED (a shutdown in
 * flight must leave the run to be resumed, not fail it), CAPACITY_EXCEEDED, BACKPRESSURE,
 * TIMEOUT, VERSION_CONFLICT, RATE_LIMITED, CIRCUIT_OPEN, BULKHEAD_FULL and NO_RESPONDER (they
 * pass with time or others' work), and the UNKNOWN_* of handles and agents (what is missing may
 * come or come back: a restarted agent, a type defined later).
 */
const PERMANENT_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'SCHEMA_INVALID',
  'STEP_NOT_REGISTERED',
  'WORKFLOW_NOT_FOUND',
  'DEFINITION_INVALID',
  'NO_HANDLER',
  'INVALID_PAYLOAD',
  'INVALID_ARGUMENT',
  'MESSAGE_TOO_LARGE',
  'RUN_EXISTS',
  'STEP_FAILED',
  'RUN_CANCELLED',
  // The same value is as large again, and the same key or option as malformed.
  'VALUE_TOO_LARGE',
  'INVALID_KEY',
  'INVALID_OPTION',
  'INVALID_NAME',
  'INVALID_VERSION',
  'INVALID_CONFIG',
  // The engine does not offer the call (a durable store on wasm): it will not a moment later.
  'UNSUPPORTED',
  // The run's definition waits for no such signal, and a run's definition does not change.
  'SIGNAL_UNKNOWN',
])

/**
 * Whether an error is permanent: a `PermanentError`, an invalid payload, a mesh reply that says
 * so (`details.permanent`), or a code no retry changes. Anything else is worth another attempt.
 */
export function isPermanent(error: unknown): boolean {
  if (error instanceof PermanentError) return true
  if (isOrreryError(error)) {
    if (error.details['permanent'] === true) return true
    const remote = error.details['remoteCode']
    return PERMANENT_CODES.has(error.code) || (typeof remote === 'string' && PERMANENT_CODES.has(remote))
  }
  return false
}

const failed = (error: unknown, permanent = isPermanent(error)): Outcome => ({ ok: false, permanent, error })

/** What a request to an agent carries for a step's input: a step with no input sends `null` (JSON has no `undefined`). */
const sent = (input: unknown): unknown => (input === undefined ? null : input)

/** The default wait of a mesh request whose step has no timeout of its own. */
const REQUEST_TIMEOUT_MS = 30_000

export class Executor {
  constructor(private readonly host: ExecutorHost) {}

  /**
   * Runs one attempt of `node` (a step, a child, or the body of a scatterGather, `call` then
   * naming its agent and node) with `input`; never rejects.
   */
  run(node: WorkflowNode, input: unknown, context: StepContext, call?: { agent: string; node: WorkflowNode }): Promise<Outcome> {
    // A local function, the common step: one async frame, not two.
    if (call === undefined && node.kind === 'step' && 'fn' in node.run) return this.local(node.run.fn, input, context).catch(failed)
    return this.other(node, input, context, call)
  }

  private async other(node: WorkflowNode, input: unknown, context: StepContext, call?: { agent: string; node: WorkflowNode }): Promise<Outcome> {
    try {
      if (call !== undefined && call.node.kind === 'scatterGather') return await this.callAgent(call.agent, call.node, input, context)
      if (node.kind === 'child') return await this.child(node.workflow, input, context)
      if (node.kind === 'delegate') return await this.delegate(node.capability, input, context, node.timeoutMs)
      if (node.kind !== 'step') throw new OrreryError('DEFINITION_INVALID', `node ${node.id} is not a step`)
      const run = node.run
      if ('fn' in run) return await this.local(run.fn, input, context)
      return await this.capability(run.capability, input, context, node.timeoutMs)
    } catch (error) {
      return failed(error)
    }
  }

  /** Attempts waiting for a step function a resumed run calls to be registered, by name. */
  private readonly awaiting = new Map<string, Set<() => void>>()

  /** Step function `name` was registered: attempts waiting for it go on. */
  registered(name: string): void {
    const waiting = this.awaiting.get(name)
    this.awaiting.delete(name)
    for (const go of waiting ?? []) go()
  }

  /**
   * A resumed run may reach a step before the app registered its function (it registers after an
   * await): the attempt waits for the registration, or until it is aborted (cancel, timeout,
   * close). A new run never gets here: its start checks every function is registered.
   */
  private async registration(name: string, context: StepContext): Promise<RegisteredStep> {
    for (;;) {
      const step = this.host.steps.get(name)
      if (step) return step
      const signal = context.signal
      signal.throwIfAborted()
      await new Promise<void>((resolve, reject) => {
        const waiting = this.awaiting.get(name) ?? new Set()
        this.awaiting.set(name, waiting)
        const onAbort = () => {
          waiting.delete(go)
          if (waiting.size === 0 && this.awaiting.get(name) === waiting) this.awaiting.delete(name)
          reject(signal.reason)
        }
        const go = () => {
          signal.removeEventListener('abort', onAbort)
          resolve()
        }
        waiting.add(go)
        signal.addEventListener('abort', onAbort, { once: true })
      })
    }
  }

  private async local(name: string, input: unknown, context: StepContext): Promise<Outcome> {
    // Registered: called in this turn, as the step's start is recorded (no await before it).
    const step = this.host.steps.get(name) ?? (await this.registration(name, context))
    const given = step.input ? await validate(step.input, input, `input of step ${context.step}`) : input
    const output = await step.run(given, context)
    return { ok: true, output: step.output ? await validate(step.output, output, `output of step ${context.step}`) : output }
  }

  private mesh(step: string): Mesh {
    const mesh = this.host.mesh
    if (!mesh)
      throw new OrreryError('INVALID_OPTION', `step ${step} calls a capability, but these workflows were opened without a mesh`, {
        details: { option: 'mesh' },
      })
    return mesh
  }

  private async capability(capability: string, input: unknown, context: StepContext, timeoutMs: number | undefined): Promise<Outcome> {
    const reply = await this.mesh(context.step).request(capability, sent(input), {
      headers: { [IDEMPOTENCY_HEADER]: context.idempotencyKey },
      timeout: timeoutMs ?? REQUEST_TIMEOUT_MS,
      // The workflow's retry policy decides about retries.
      retries: 0,
    })
    return { ok: true, output: reply.payload }
  }

  /**
   * One scatterGather call: a request to that agent's inbox, whoever else offers the capability.
   * An agent the node lists is looked up first: not registered (it may come back: retried), or
   * not offering the capability (for good), the call fails at once instead of waiting out its
   * timeout on an inbox nobody reads.
   */
  private async callAgent(agent: string, node: ScatterGatherNode, input: unknown, context: StepContext): Promise<Outcome> {
    const mesh = this.mesh(context.step)
    const { capability, timeoutMs } = node
    if (node.agents !== undefined) {
      const registry = mesh.registry
      if (registry.get(agent) === undefined) {
        throw new OrreryError('UNKNOWN_AGENT', `scatterGather ${node.id}: agent ${agent} is not registered`, { details: { step: node.id, agent } })
      }
      // Whatever its health now (paused, restarting): its inbox keeps the request until it reads it.
      if (!registry.find({ capability, minHealth: 'offline' }).some((a) => a.id === agent)) {
        throw new OrreryError('NO_HANDLER', `scatterGather ${node.id}: agent ${agent} does not offer ${capability}`, {
          details: { step: node.id, agent, capability },
        })
      }
    }
    const [name] = splitCapability(capability)
    const reply = await mesh.bus.request(inboxOf(agent), sent(input), {
      headers: { [CAPABILITY_HEADER]: name, [IDEMPOTENCY_HEADER]: context.idempotencyKey },
      timeout: timeoutMs !== undefined && Number.isFinite(timeoutMs) ? timeoutMs : REQUEST_TIMEOUT_MS,
    })
    return { ok: true, output: reply.payload }
  }

  private async child(workflow: string, input: unknown, context: StepContext): Promise<Outcome> {
    const handle = await this.host.startChild(workflow, input, context.idempotencyKey)
    if (context.signal.aborted) handle.cancel()
    else context.signal.addEventListener('abort', () => handle.cancel(), { once: true })
    try {
      return { ok: true, output: await handle.result() }
    } catch (error) {
      // The child had its own retries: its failure is final.
      return failed(error, true)
    }
  }

  /**
   * A delegate: the supervising agent gets `{ goal, parentRunId, key }` and replies with the ids
   * of the runs it started here; the output is their results, in that order. The agent's own
   * failure follows the step's retry policy; a reply of another shape, a run not found or a run
   * that failed fails the step for good.
   */
  private async delegate(capability: string, goal: unknown, context: StepContext, timeoutMs: number | undefined): Promise<Outcome> {
    const reply = await this.mesh(context.step).request(
      capability,
      { goal, parentRunId: context.runId, key: context.idempotencyKey },
      { headers: { [IDEMPOTENCY_HEADER]: context.idempotencyKey }, timeout: timeoutMs ?? REQUEST_TIMEOUT_MS, retries: 0 },
    )
    const runs = (reply.payload as { runs?: unknown } | null | undefined)?.runs
    if (!Array.isArray(runs) || !runs.every((id) => typeof id === 'string' && id.length > 0)) {
      return failed(
        new OrreryError('STEP_FAILED', `delegate ${context.step}: ${capability} must reply { runs: string[] } (the ids of the runs it started)`, {
          details: { step: context.step, capability },
        }),
        true,
      )
    }
    const handles: ChildHandle[] = []
    for (const id of runs as string[]) {
      const handle = this.host.findRun(id)
      if (!handle) {
        return failed(
          new OrreryError('RUN_NOT_FOUND', `delegate ${context.step}: run ${id} named by ${capability} is not known here`, {
            details: { step: context.step, runId: id },
          }),
          true,
        )
      }
      handles.push(handle)
    }
    // The delegated runs are the step's work: cancelling the step cancels them.
    const cancelAll = () => {
      for (const handle of handles) handle.cancel()
    }
    if (context.signal.aborted) cancelAll()
    else context.signal.addEventListener('abort', cancelAll, { once: true })
    const results = await Promise.all(
      handles.map((handle, i) =>
        handle.result().catch((error: unknown) => {
          throw new OrreryError('STEP_FAILED', `delegate ${context.step}: run ${runs[i]} failed: ${error instanceof Error ? error.message : String(error)}`, {
            details: { step: context.step, runId: runs[i] },
            cause: error,
          })
        }),
      ),
    ).then(
      (outputs) => ({ ok: true as const, output: outputs }),
      (error: unknown) => failed(error, true),
    )
    return results
  }

  /** A branch's arm (-1: none), whether a loop goes on (1) or stops (0); throws when a condition does. */
  decide(node: WorkflowNode, data: DataScope): number {
    const { conditions, mappings } = this.host
    if (node.kind === 'branch') {
      const arm = node.arms.findIndex((a) => testCondition(a.when, data, conditions, mappings))
      if (arm >= 0) return arm
      return node.otherwise === undefined ? -1 : node.arms.length
    }
    if (node.kind === 'loop') {
      if (node.while !== undefined) return testCondition(node.while, data, conditions, mappings) ? 1 : 0
      // `until` is asked after each iteration: stop once it holds.
      return testCondition(node.until!, data, conditions, mappings) ? 0 : 1
    }
    throw new OrreryError('DEFINITION_INVALID', `node ${node.id} takes no decision`)
  }

  /** The items a forEach or pipeline runs over, or the agents a scatterGather calls (sorted by id). */
  instances(node: WorkflowNode, data: DataScope): readonly unknown[] {
    if (node.kind === 'forEach' || node.kind === 'pipeline') {
      const items = resolveRef(node.items, data)
      if (!Array.isArray(items)) throw new OrreryError('STEP_FAILED', `${node.kind} ${node.id}: ${node.items} is not a list`, { details: { step: node.id } })
      return items
    }
    if (node.kind === 'scatterGather') {
      if (node.agents !== undefined) {
        const listed = typeof node.agents === 'string' ? resolveRef(node.agents, data) : node.agents
        if (!Array.isArray(listed) || listed.some((a) => typeof a !== 'string')) {
          throw new OrreryError('STEP_FAILED', `scatterGather ${node.id}: ${String(node.agents)} is not a list of agent ids`, { details: { step: node.id } })
        }
        if (new Set(listed).size !== listed.length) {
          throw new OrreryError('STEP_FAILED', `scatterGather ${node.id}: ${String(node.agents)} names an agent twice`, { details: { step: node.id } })
        }
        return listed
      }
      const registry = this.mesh(node.id).registry
      return registry
        .find(node.capability)
        .filter((a) => a.health !== 'offline')
        .map((a) => a.id)
        .sort()
    }
    throw new OrreryError('DEFINITION_INVALID', `node ${node.id} has no instances`)
  }
}
