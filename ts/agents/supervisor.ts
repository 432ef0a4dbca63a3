/**
 * Supervision in the manner of Erlang/OTP. A supervisor starts its children in order and, when
 * one crashes (a fatal handler error, a failed start, lost heartbeats), restarts by strategy:
 * `one-for-one` the crashed child, `one-for-all` every child, `rest-for-one` the crashed child
 * and those started after it. Restarts wait a backoff that grows with recent restarts. More than
 * `restarts` restarts within `withinMs` and the supervisor gives up: it stops every child,
 * marks them failed, and escalates (an event, and its `failed` promise).
 */
import { OrreryError } from '../errors.js'
import type { AgentRunner } from './runner.js'
import type { BackoffOptions } from './registry.js'
import type { SpawnOptions } from './mesh.js'

/** A restart strategy. */
export type RestartStrategy = 'one-for-one' | 'one-for-all' | 'rest-for-one'
/** @internal */
export const RESTART_STRATEGIES: readonly RestartStrategy[] = ['one-for-one', 'one-for-all', 'rest-for-one']

/** Children of one agent type. */
export interface ChildSpec {
  type: string
  /** How many (default 1); ids are `<id or type>-<n>` when more than one. */
  replicas?: number
  id?: string
  options?: Omit<SpawnOptions, 'id' | 'replicas'>
}

/** What a supervisor is made of. */
export interface SupervisorSpec {
  /** Its name, in events (default `supervisor-<n>`). */
  name?: string
  strategy?: RestartStrategy
  /** At most `restarts` restarts in `withinMs` (default 3 in 5,000). */
  intensity?: { restarts?: number; withinMs?: number }
  /** The wait before a restart, growing with recent restarts (default 100 ms doubling, at most 5 s, no jitter). */
  backoff?: BackoffOptions
  children: readonly ChildSpec[]
}

/** What a supervisor needs from the mesh. */
export interface SupervisorHost {
  now(): number
  /** Builds and starts an agent (with its id): the runner, or a start failure. */
  startChild(id: string, type: string, options: Omit<SpawnOptions, 'id' | 'replicas'>, supervisor: Supervisor): Promise<AgentRunner>
  /** The id of a child given none, from its type (a shared mesh adds the process, so processes never share one). */
  childId(type: string): string
  backoff(options: BackoffOptions | undefined, attempt: number): number
  report(event: SupervisorEvent): void
  /** Child `id`, dead and waiting for a restart, will have none: what this process asked of it fails now. */
  ended(id: string): void
}

/** Something a supervisor did. */
export type SupervisorEvent =
  | { type: 'restart'; supervisor: string; agents: string[]; reason: string; attempt: number; delay: number; at: number }
  | { type: 'gave-up'; supervisor: string; agents: string[]; reason: string; at: number }

interface Child {
  readonly id: string
  readonly type: string
  readonly options: Omit<SpawnOptions, 'id' | 'replicas'>
  runner: AgentRunner | undefined
  /** Stopped on purpose (by the user): never restarted. */
  stopped: boolean
}

/** The wait before a restart, by default: 100 ms doubling with recent restarts, at most 5 s, no jitter. */
export const RESTART_BACKOFF: Required<BackoffOptions> = { base: 100, factor: 2, max: 5_000, jitter: 'none' }

let supervisors = 0

export class Supervisor {
  readonly name: string
  readonly strategy: RestartStrategy
  private readonly children: Child[] = []
  private restarts: number[] = []
  private queue: Promise<void> = Promise.resolve()
  private state: 'running' | 'failed' | 'stopped' = 'running'
  private rejectFailed!: (error: OrreryError) => void
  /** The backoff before a restart, if one is waiting (cleared when the supervisor stops). */
  private delay: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | undefined
  /** Rejects with `AGENT_FAILED` if the supervisor gives up. */
  readonly failed: Promise<never>

  constructor(
    private readonly host: SupervisorHost,
    private readonly spec: SupervisorSpec,
  ) {
    this.name = spec.name ?? `supervisor-${++supervisors}`
    // The spec was checked whole by the mesh (`supervise`), before this supervisor was made.
    this.strategy = spec.strategy ?? 'one-for-one'
    for (const child of spec.children) {
      const n = child.replicas ?? 1
      const base = child.id ?? host.childId(child.type)
      for (let i = 1; i <= n; i++)
        this.children.push({ id: n === 1 ? base : `${base}-${i}`, type: child.type, options: child.options ?? {}, runner: undefined, stopped: false })
    }
    this.failed = new Promise<never>((_, reject) => {
      this.rejectFailed = reject
    })
    this.failed.catch(() => {}) // observed through events too; never an unhandled rejection
  }

  /** The ids of the children, in start order. */
  get agents(): string[] {
    return this.children.map((c) => c.id)
  }

  /** Whether it is running, gave up, or was stopped. */
  get status(): 'running' | 'failed' | 'stopped' {
    return this.state
  }

  /**
   * Starts the children in order; a failed start is a crash like any other, restarted in the
   * background (watch `events` or `failed`).
   */
  async start(): Promise<void> {
    for (const child of this.children) {
      if (this.state !== 'running') return
      await this.startOne(child)
    }
  }

  private async startOne(child: Child): Promise<void> {
    try {
      child.runner = await this.host.startChild(child.id, child.type, child.options, this)
    } catch (error) {
      child.runner = undefined
      this.enqueue(child, `failed start: ${(error as Error).message}`)
    }
  }

  /**
   * @internal A child's runner crashed; restarts are handled one at a time, in order. A crash
   * of a runner that is no longer the child's current life (replaced by an earlier restart)
   * is ignored, so one incident under one-for-all costs one restart.
   */
  crashed(runner: AgentRunner, reason: string): void {
    const child = this.children.find((c) => c.runner === runner)
    if (!child) return
    child.runner = undefined
    this.enqueue(child, reason)
  }

  /**
   * Queues a restart. One that throws (its engine failed) gives up rather than reject the queue:
   * a rejection no one awaits would end the process.
   */
  private enqueue(child: Child, reason: string): void {
    this.queue = this.queue
      .then(() => this.handle(child, reason))
      .catch((error: unknown) => {
        if (this.state === 'running') this.giveUp(`${reason}; the restart failed: ${error instanceof Error ? error.message : String(error)}`)
      })
  }

  /** @internal A child was stopped on purpose: it is not restarted, by any strategy. */
  release(runner: AgentRunner): void {
    const child = this.children.find((c) => c.runner === runner)
    if (!child) return
    child.runner = undefined
    child.stopped = true
  }

  /** @internal Whether this supervisor owns the runner. */
  owns(runner: AgentRunner): boolean {
    return this.children.some((c) => c.runner === runner)
  }

  private async handle(crashed: Child, reason: string): Promise<void> {
    // Stopped since, or brought back already by an earlier restart (one-for-all, rest-for-one).
    if (this.state !== 'running' || crashed.stopped || crashed.runner !== undefined) return
    const index = this.children.indexOf(crashed)
    const now = this.host.now()
    const within = this.spec.intensity?.withinMs ?? 5_000
    this.restarts = this.restarts.filter((t) => now - t < within)
    this.restarts.push(now)
    const limit = this.spec.intensity?.restarts ?? 3
    if (this.restarts.length > limit) return this.giveUp(reason)
    const affected = (this.strategy === 'one-for-one' ? [crashed] : this.strategy === 'one-for-all' ? this.children : this.children.slice(index)).filter(
      (c) => !c.stopped,
    )
    // Stop the others in reverse start order (the crashed one is dead already).
    for (const child of [...affected].reverse()) {
      child.runner?.kill()
      child.runner = undefined
    }
    const attempt = this.restarts.length
    const delay = this.host.backoff(this.spec.backoff, attempt)
    this.host.report({ type: 'restart', supervisor: this.name, agents: affected.map((c) => c.id), reason, attempt, delay, at: now })
    if (delay > 0) {
      await new Promise<void>((resolve) => {
        this.delay = { timer: setTimeout(resolve, delay), resolve }
      })
      this.delay = undefined
    }
    for (const child of affected) {
      if (this.state !== 'running') return
      await this.startOne(child)
    }
  }

  private giveUp(reason: string): void {
    this.state = 'failed'
    // No next life: their requests are answered now (see AgentRunner.kill), the crashed one's too.
    for (const child of [...this.children].reverse()) {
      if (child.runner !== undefined) child.runner.kill('stopped')
      else if (!child.stopped) this.host.ended(child.id)
      child.runner = undefined
    }
    const agents = this.agents
    this.host.report({ type: 'gave-up', supervisor: this.name, agents, reason, at: this.host.now() })
    this.rejectFailed(
      new OrreryError(
        'AGENT_FAILED',
        `supervisor ${this.name} gave up after more than ${this.spec.intensity?.restarts ?? 3} restarts in ${this.spec.intensity?.withinMs ?? 5_000} ms: ${reason}`,
        { details: { supervisor: this.name, agents, reason } },
      ),
    )
  }

  /** @internal Stops supervising (the mesh stops the agents). */
  stop(): void {
    if (this.state === 'running') {
      this.state = 'stopped'
      // Children dead and waiting for their restart get none (those running are stopped by the mesh).
      for (const child of this.children) if (child.runner === undefined && !child.stopped) this.host.ended(child.id)
    }
    // A restart waiting on its backoff ends now (it sees the state and starts nothing), so the
    // timer does not keep the process alive.
    if (this.delay) {
      clearTimeout(this.delay.timer)
      this.delay.resolve()
    }
  }
}
