/**
 * Autoscaling of one agent type from its inbox lag: on each tick it reads, from the bus, what
 * waits in the type's inboxes or was delivered and not yet acked, and grows the type to
 * `ceil(backlog / targetLag)` replicas (between `min` and `max`) at once, or, once that number
 * stayed lower for `cooldown`, shrinks it by draining its own replicas: out of routing first,
 * stopped only when their inbox is empty and nothing runs, so no message waits in the inbox of
 * an agent that is gone.
 */
import { Subject, type Observable } from 'rxjs'

import type { AgentState } from './runner.js'
import type { SpawnOptions } from './mesh.js'
import { finite, int, keysOf, msOr, options as checkOptions, refuse } from '../check.js'
import { eventStream } from './registry.js'

/** A replica as the autoscaler sees it: an agent of this process (AgentRunner) or one on a worker thread (WorkerReplica). */
export interface Replica {
  readonly id: string
  readonly state: AgentState
  readonly draining: boolean
  /** Handlers it runs now. */
  readonly inFlight: number
  /** Takes it out of routing; it goes on serving its inbox. */
  drain(): void
}

/** How an agent type is autoscaled. */
export interface AutoscaleOptions {
  /** Replicas kept at least, even idle (at least 1: routing needs an agent to queue for). */
  min: number
  /** Replicas started at most. */
  max: number
  /** Messages waiting or in flight per replica above which the type grows. */
  targetLag: number
  /** How often the lag is read, in ms (default 1,000). */
  interval?: number
  /** How long the lag must allow fewer replicas before the type shrinks, in ms (default 30,000). */
  cooldown?: number
  /** Spawn options of the replicas it starts (over the type's defaults; not `id` or `replicas`). */
  spawn?: Omit<SpawnOptions, 'id' | 'replicas'>
  /**
   * Runs each replica on a worker thread of its own (Node, native engine; the mesh needs
   * `threads: true`): the module (a path or a URL) a thread starts, which defines the type and
   * serves it with `serveAgents`. `spawn` then crosses to the thread, so it holds data only
   * (`retry.isPermanent` and `retry.isFatal` go in the type's defaults there).
   */
  worker?: string | URL
}

/** A scale decision of an autoscaler. */
export interface AutoscaleEvent {
  type: 'scale-up' | 'scale-down'
  /** The agent type. */
  agentType: string
  /** Replicas in routing before and after the decision. */
  from: number
  to: number
  /** Messages waiting or in flight in the type's inboxes, when it decided. */
  backlog: number
  /** The agents started (scale-up) or taken out of routing to be stopped once drained (scale-down). */
  agents: readonly string[]
  at: number
}

/** A running autoscaler. */
export interface Autoscaler {
  readonly agentType: string
  /** Replicas of the type in routing now (draining ones excluded). */
  readonly replicas: number
  /** Backlog per replica at the last tick. */
  readonly lag: number
  /** Its scale decisions (also on `mesh.events`). */
  readonly events: Observable<AutoscaleEvent>
  /** Ends the autoscaler: replicas stay as they are (a draining one is still stopped once empty). */
  stop(): void
}

/** What the autoscaler needs of its mesh. */
export interface AutoscaleHost {
  now(): number
  /** Replicas of the type that the mesh holds now, in any state. */
  runners(type: string): Replica[]
  /** Messages in an agent's inbox not yet acked: waiting, delayed for a retry, or delivered. */
  inboxLoad(id: string): number
  /** The id a spawn of the type would give its next agent (taking it). */
  nextId(type: string): string
  start(id: string, type: string, options: SpawnOptions): Promise<Replica>
  stop(runner: Replica): Promise<void>
  record(type: string, backlog: number, lag: number): void
  report(event: AutoscaleEvent): void
  /** A failed start, stop or reading of an inbox (the next tick tries again). */
  failed(error: unknown, type: string): void
  /** Called once, when it stops deciding (its type may be autoscaled again). */
  ended(scaler: TypeAutoscaler): void
  /** Called once, when it has fully closed (no more ticks). */
  closed(scaler: TypeAutoscaler): void
}

/** Autoscale options, checked, with their defaults. */
interface Settings extends Required<Omit<AutoscaleOptions, 'spawn' | 'worker'>> {
  spawn: AutoscaleOptions['spawn'] | undefined
  worker: string | URL | undefined
}

const AUTOSCALE_KEYS = keysOf<AutoscaleOptions>()(['min', 'max', 'targetLag', 'interval', 'cooldown', 'spawn', 'worker'])

/** Checks autoscale options whole, before anything starts. */
export function checkAutoscale(value: AutoscaleOptions): Settings {
  if (value === undefined) refuse('argument', 'options', value, 'must be an object { min, max, targetLag }')
  const o = checkOptions(value, 'options', 'argument', AUTOSCALE_KEYS)
  const min = int(o.min, 'min', { min: 1, max: 2 ** 20 })
  const max = int(o.max, 'max', { min: 1, max: 2 ** 20 })
  if (min > max) refuse('option', 'min', min, `must be at most max (${max})`)
  const targetLag = finite(o.targetLag, 'targetLag', { above: 0 })
  const interval = msOr(o.interval, 1_000, 'interval', 1)
  const cooldown = msOr(o.cooldown, 30_000, 'cooldown')
  if (o.spawn !== undefined) {
    // The rest of the spawn options are checked by the mesh, as a spawn's are.
    const spawn = checkOptions(o.spawn as SpawnOptions, 'spawn', 'option')
    if (spawn.id !== undefined) refuse('option', 'spawn.id', spawn.id, 'is chosen by the autoscaler (leave it out)')
    if (spawn.replicas !== undefined) refuse('option', 'spawn.replicas', spawn.replicas, 'is chosen by the autoscaler (leave it out)')
  }
  let worker: string | URL | undefined
  if (o.worker !== undefined) {
    if (!(o.worker instanceof URL) && (typeof o.worker !== 'string' || o.worker === '')) refuse('option', 'worker', o.worker, 'must be a module path or URL')
    worker = o.worker
    const retry = o.spawn?.retry
    if (retry?.isPermanent !== undefined || retry?.isFatal !== undefined)
      refuse('option', 'spawn.retry', 'function', "cannot cross to a worker thread (give it in the type's defaults in the worker module)")
    try {
      structuredClone(o.spawn)
    } catch {
      refuse('option', 'spawn', 'object', 'must hold data only to cross to a worker thread (what structuredClone copies)')
    }
  }
  return { min, max, targetLag, interval, cooldown, spawn: o.spawn, worker }
}

export class TypeAutoscaler implements Autoscaler {
  private readonly subject = new Subject<AutoscaleEvent>()
  readonly events: Observable<AutoscaleEvent>
  private timer: ReturnType<typeof setTimeout> | undefined
  /** stop() was called: no more decisions. */
  private stopped = false
  /** No more ticks at all. */
  private closed = false
  private busy = false
  /** Since when the lag allowed fewer replicas (undefined: it does not now). */
  private lowSince: number | undefined
  /** Agents it started, by id, with the ids of those gone (reused first, so their inbox is served again). */
  private readonly own = new Set<string>()
  /** Its replicas it took out of routing: one that crashes comes back draining. */
  private readonly drained = new Set<string>()
  private lastLag = 0
  /** The last start that failed (the first tick's failure rejects `mesh.autoscale`). */
  private lastError: unknown

  constructor(
    private readonly host: AutoscaleHost,
    readonly agentType: string,
    private readonly options: Settings,
    unhandled: (error: unknown) => void,
  ) {
    this.events = eventStream(this.subject, unhandled)
  }

  get replicas(): number {
    return this.routed().length
  }

  /**
   * Whether agent `id` is one of its replicas that, gone, comes back to finish its inbox: any
   * while it runs, one it drained once it is stopped (its ticks go on for those), none once closed.
   */
  revives(id: string): boolean {
    return !this.closed && this.own.has(id) && (!this.stopped || this.drained.has(id))
  }

  get lag(): number {
    return this.lastLag
  }

  /** Runs the first tick now (so `min` replicas run when it resolves), then every `interval`. */
  async start(): Promise<void> {
    await this.tick()
    if (this.lastError !== undefined) {
      // As a spawn that fails: the replicas this call started stop, and it rejects.
      this.close()
      for (const r of this.host.runners(this.agentType)) if (this.own.has(r.id)) await this.host.stop(r)
      throw this.lastError
    }
    this.schedule()
  }

  stop(): void {
    if (this.stopped) return
    this.end()
    // Its draining replicas are still stopped once empty: ticks go on for them alone.
    if (!this.draining()) this.close()
  }

  private end(): void {
    this.stopped = true
    if (!this.subject.closed) this.subject.complete()
    this.host.ended(this)
  }

  /** @internal Ends every tick at once (its mesh is shutting down and stops every agent itself). */
  close(): void {
    if (this.closed) return
    if (!this.stopped) this.end()
    this.closed = true
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.host.closed(this)
  }

  /** Its own replicas of the type that the mesh holds. */
  private mine(): Replica[] {
    return this.host.runners(this.agentType).filter((r) => this.own.has(r.id))
  }

  /** Its own replicas that are gone (stopped, crashed, or no longer held), with their inbox load. */
  private gone(): { id: string; load: number }[] {
    const held = new Map(this.host.runners(this.agentType).map((r) => [r.id, r.state]))
    return [...this.own]
      .filter((id) => {
        const state = held.get(id)
        return state === undefined || state === 'stopped' || state === 'crashed'
      })
      .map((id) => ({ id, load: this.host.inboxLoad(id) }))
  }

  /** A replica of its own still draining, or one it drained that is gone with messages left. */
  private draining(): boolean {
    return this.mine().some((r) => live(r) && r.draining) || this.gone().some((g) => this.drained.has(g.id) && g.load > 0)
  }

  private schedule(): void {
    if (this.closed) return
    const timer = setTimeout(() => {
      this.timer = undefined
      void this.tick()
        .catch((error: unknown) => this.host.failed(error, this.agentType))
        .finally(() => {
          if (this.stopped && !this.draining()) this.close()
          this.schedule()
        })
    }, this.options.interval)
    // Where the runtime allows (Node), its timer never holds the process open.
    ;(timer as { unref?: () => void }).unref?.()
    this.timer = timer
  }

  /** Agents of the type in routing: running or paused, and not draining. */
  private routed(): Replica[] {
    return this.host.runners(this.agentType).filter((r) => live(r) && !r.draining)
  }

  private async tick(): Promise<void> {
    if (this.busy || this.closed) return
    this.busy = true
    try {
      await this.stopDrained()
      const paused = this.host.runners(this.agentType).some((r) => r.state === 'paused')
      // A paused type starts nothing (what it would start would not be paused).
      if (this.stopped) {
        if (!paused) await this.revive(this.gone().filter((g) => this.drained.has(g.id) && g.load > 0))
        return
      }
      const { min, max, targetLag, cooldown } = this.options
      const present = this.host.runners(this.agentType).filter(live)
      // Its gone replicas' inboxes count too: what waits there is brought back and served.
      const gone = this.gone().sort((a, b) => b.load - a.load)
      let backlog = 0
      for (const r of present) backlog += this.host.inboxLoad(r.id)
      for (const g of gone) backlog += g.load
      const routed = present.filter((r) => !r.draining)
      const n = routed.length
      this.lastLag = backlog / Math.max(1, n)
      this.host.record(this.agentType, backlog, this.lastLag)
      const wanted = Math.min(max, Math.max(min, Math.ceil(backlog / targetLag)))
      if (paused) return
      if (wanted > n) {
        this.lowSince = undefined
        await this.grow(
          wanted - n,
          n,
          backlog,
          gone.filter((g) => !this.drained.has(g.id)).map((g) => g.id),
        )
      } else if (wanted < n) {
        const now = this.host.now()
        this.lowSince ??= now
        if (now - this.lowSince >= cooldown) {
          this.lowSince = undefined
          this.shrink(routed, n - wanted, backlog)
        }
      } else {
        this.lowSince = undefined
      }
      // Whatever is still left in a gone replica's inbox: that replica comes back out of routing,
      // to finish its inbox and stop.
      if (!this.stopped) await this.revive(this.gone().filter((g) => g.load > 0))
    } finally {
      this.busy = false
    }
  }

  /** Brings back gone replicas of its own, out of routing, to finish their inbox and then stop. */
  private async revive(gone: { id: string }[]): Promise<void> {
    for (const { id } of gone) {
      if (this.closed) return
      try {
        const runner = await this.host.start(id, this.agentType, { ...this.options.spawn })
        this.drained.add(id)
        runner.drain()
      } catch (error) {
        this.host.failed(error, this.agentType)
      }
    }
  }

  private async grow(count: number, from: number, backlog: number, gone: string[]): Promise<void> {
    const started: string[] = []
    this.lastError = undefined
    const options = { ...this.options.spawn }
    for (let i = 0; i < count && !this.stopped; i++) {
      // A replica of its own that is gone (stopped, crashed) comes back first, under its id, the
      // fullest inbox first: what was sent to that inbox since is served.
      const id = gone.shift() ?? this.host.nextId(this.agentType)
      try {
        await this.host.start(id, this.agentType, options)
        this.own.add(id)
        this.drained.delete(id)
        started.push(id)
      } catch (error) {
        this.lastError = error
        this.host.failed(error, this.agentType)
        break
      }
    }
    if (started.length > 0) this.emit('scale-up', from, from + started.length, backlog, started)
  }

  /** Takes `count` of its own replicas out of routing, the least loaded (then the newest) first. */
  private shrink(routed: Replica[], count: number, backlog: number): void {
    const candidates = routed
      .filter((r) => this.own.has(r.id))
      .map((r, order) => ({ r, load: this.host.inboxLoad(r.id), order }))
      .sort((a, b) => a.load - b.load || b.order - a.order)
      .slice(0, count)
    if (candidates.length === 0) return
    for (const { r } of candidates) {
      this.drained.add(r.id)
      r.drain()
    }
    this.emit(
      'scale-down',
      routed.length,
      routed.length - candidates.length,
      backlog,
      candidates.map((c) => c.r.id),
    )
  }

  /** Stops its draining replicas (running or paused) whose inbox is empty and whose handlers are done. */
  private async stopDrained(): Promise<void> {
    const draining = this.mine().filter((r) => live(r) && r.draining)
    for (const r of draining) {
      // Checked right before the stop, in one turn (an earlier stop awaited): the stop pauses its
      // inbox before anything else runs, so nothing reaches it between the check and the stop.
      if (!live(r) || r.inFlight > 0 || this.host.inboxLoad(r.id) > 0) continue
      try {
        await this.host.stop(r)
      } catch (error) {
        this.host.failed(error, this.agentType)
      }
    }
  }

  private emit(type: AutoscaleEvent['type'], from: number, to: number, backlog: number, agents: string[]): void {
    const event: AutoscaleEvent = { type, agentType: this.agentType, from, to, backlog, agents, at: this.host.now() }
    this.subject.next(event)
    this.host.report(event)
  }
}

/** In the mesh and able to hold work: running, or paused (a pause is not a scale-down). */
function live(r: Replica): boolean {
  return r.state === 'running' || r.state === 'paused'
}
