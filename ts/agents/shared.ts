/**
 * A mesh shared by processes (`orrery.mesh({ shared: '<transport>' })`): its registry channel and
 * every agent inbox are bound to a broker, and each process tells the others about its agents on
 * the registry channel. Events are stamped with the process's id (its transport link's
 * `processId`):
 *
 * - `hello`: a process joins (or wants one process's agents again, `to`); every process (or that
 *   one) answers with `register` listing all its agents. A late joiner needs no history: it
 *   subscribes from the end of the channel, then says hello until it reads its own hello back, so
 *   every answer comes after its subscription began.
 * - `register`: agents with their registrations and health.
 * - `beat`: once per heartbeat interval (over a broker with no agent too), every agent of the process with its
 *   health and running handlers. An agent missing from its process's beat was deregistered; an unknown one is asked
 *   for (a `hello` to that process, at most once per interval). A mesh with replicas on worker
 *   threads lists too the agents whose threads it watches (`w`): their missed beats fail nobody's
 *   calls (a busy handler holds the thread's loop); their thread's end is told by a `gone`.
 * - `gone`: a watched thread's mesh (process `of`) ended; its agents are deregistered at once, and
 *   the calls waiting on those in `lost` (not brought back in a new thread) fail.
 * - `health`: agents whose health changed (a start done, a pause, a failing check), at once rather
 *   than at the next beat.
 * - `deregister`: agents that stopped (gracefully, or lost by their own registry).
 *
 * The others' agents are mirrored into the local registry, marked remote, and heartbeated as
 * their process's beats arrive, on this process's clock: the core's liveness machine then marks
 * them down and deregisters them when the beats stop, as it does for local agents.
 */
import type { Subscription } from 'rxjs'

import type { Logger } from './agent.js'
import type { Bus } from '../bus/bus.js'
import type { Message } from '../bus/message.js'
import { isOrreryError, OrreryError } from '../errors.js'
import { HEALTHS, type AgentRegistration, type Health, type Registry, type RegistryEvent } from './registry.js'
import type { InboxTerms } from './runner.js'

/** The channel every process of a shared mesh announces its agents on. */
export const REGISTRY_CHANNEL = 'orrery.registry'
/** Every agent's inbox, `inbox.<id>`. */
export const INBOXES = 'inbox.*'
/** The protocol's version: events of another version are ignored. */
const VERSION = 1
/** How often a joining process says hello until it reads its own back. */
const HELLO_EVERY_MS = 250

/** An agent as a `register` event carries it. */
interface WireAgent {
  id: string
  type: string
  capabilities: AgentRegistration['capabilities']
  tags: readonly string[]
  bulkhead: number
  /** A health code (`HEALTHS` index). */
  health: number
  /** How its inbox is read (see `InboxTerms`). */
  inbox?: [visibilityMs: number, maxDeliveries: number, retryDelayMs: number]
}

/** The largest lease or delay a registration may tell (a timer's limit), and the largest delivery limit. */
const MAX_TERM_MS = 0x7fffffff
const MAX_TERM_DELIVERIES = 1_000_000

/** The inbox terms a registration told, if they are whole numbers in range. */
function termsOf(inbox: unknown): InboxTerms | undefined {
  // Later versions may add terms: those this one knows are read, the rest ignored.
  if (!Array.isArray(inbox) || inbox.length < 3) return undefined
  const [visibilityMs, maxDeliveries, retryDelayMs] = inbox as unknown[]
  const within = (n: unknown, min: number, max: number): n is number => Number.isSafeInteger(n) && (n as number) >= min && (n as number) <= max
  if (!within(visibilityMs, 1, MAX_TERM_MS) || !within(maxDeliveries, 1, MAX_TERM_DELIVERIES) || !within(retryDelayMs, 0, MAX_TERM_MS)) return undefined
  return { visibilityMs, maxDeliveries, retryDelayMs }
}

type Wire =
  | { v: number; t: 'hello'; p: string; to?: string }
  | { v: number; t: 'register'; p: string; agents: WireAgent[] }
  | { v: number; t: 'beat'; p: string; agents: Array<[id: string, health: number, load: number]>; w?: string[] }
  | { v: number; t: 'health'; p: string; agents: Array<[id: string, health: number]> }
  | { v: number; t: 'deregister'; p: string; agents: string[] }
  | { v: number; t: 'gone'; p: string; of: string; lost: string[] }

/** What the shared registry needs of its mesh. */
export interface SharedHost {
  readonly bus: Bus
  readonly registry: Registry
  readonly interval: number
  readonly logger: Logger
  /** Handlers agent `id` of this process runs now. */
  load(id: string): number
  /** Agents on worker threads this process watches (whose end it tells). */
  watching?(): readonly string[]
  /** Agent `id` of `process` is gone for good (its thread ended, not brought back): its calls fail. */
  lost?(id: string, process: string): void
  /** How local agent `id` reads its inbox (told with its registration). */
  inboxTerms?(id: string): InboxTerms | undefined
  /**
   * Agent `id` of another process was deregistered for missed beats; `terms` as its registration
   * told them (undefined from a process that did not).
   */
  stoppedBeating?(id: string, process: string, terms: InboxTerms | undefined): void
}

const isString = (value: unknown): value is string => typeof value === 'string'
/** A health code from the wire; anything else reads as unhealthy (not routed to). */
const healthOf = (code: unknown): Health => (typeof code === 'number' ? HEALTHS[code] : undefined) ?? 'unhealthy'

export class SharedRegistry {
  /** Remote agents by process. */
  private readonly byProcess = new Map<string, Set<string>>()
  /** When each process was last asked for its agents (at most once per interval). */
  private readonly asked = new Map<string, number>()
  /** Agents of other processes this registry refused, by process (until their owner stops listing them). */
  private readonly refused = new Map<string, Set<string>>()
  private readonly pending = new Set<Promise<unknown>>()
  private subscription: Subscription | undefined
  private readonly events: Subscription
  private beatTimer: ReturnType<typeof setInterval> | undefined
  /** Whether the last beat listed any agent (one empty beat follows the last agent's leaving). */
  private beatHadAgents = false
  /**
   * When this process last read an event on the registry channel (`performance.now()`, and
   * `Date.now()`, which goes on through a suspend of the host), and when its current run of reads
   * began (`performance.now()`).
   */
  private lastReadAt = Number.NEGATIVE_INFINITY
  private lastReadWall = Number.NEGATIVE_INFINITY
  private readingSince = 0
  /** Ends the join when this process's hello comes back. */
  private joined: (() => void) | undefined
  /** Ends the join with `CLOSED` (the mesh closed while it joined). */
  private abortJoin: (() => void) | undefined
  private closed = false
  /** The agents whose threads another process watches, by that process (from its last beat). */
  private readonly watchedBy = new Map<string, Set<string>>()
  /** How the other processes' agents read their inboxes, by agent (from their registrations). */
  private readonly terms = new Map<string, InboxTerms>()
  /** Local agents whose health changed since the last `health` event (sent once per microtask turn). */
  private changed: Map<string, number> | undefined

  constructor(
    private readonly host: SharedHost,
    /** This process's id (its transport link's `processId`). */
    readonly process: string,
  ) {
    host.registry.process = process
    // Set before any local agent registers: this process's registrations and stops go out as they happen.
    this.events = host.registry.events.subscribe((event) => this.localEvent(event))
  }

  /**
   * Subscribes to the registry channel, then says hello until its own hello comes back (so the
   * others' answers are read), and starts beating. Rejects with `TRANSPORT_UNAVAILABLE` when the
   * broker does not echo within `timeoutMs`.
   */
  async start(timeoutMs: number): Promise<void> {
    const { bus } = this.host
    // Short: a late joiner asks the living instead of replaying, so the broker keeps little.
    bus.channel(REGISTRY_CHANNEL, { retention: { maxAgeMs: Math.max(60_000, this.host.interval * 10) } })
    this.subscription = bus.subscribe<Wire>(REGISTRY_CHANNEL, { from: 'latest' }).subscribe((m) => this.receive(m))
    await new Promise<void>((resolve, reject) => {
      const started = Date.now()
      const end = (error?: OrreryError) => {
        clearInterval(timer)
        this.joined = undefined
        this.abortJoin = undefined
        if (error) reject(error)
        else resolve()
      }
      const hello = () => {
        if (Date.now() - started > timeoutMs) {
          const why = `the shared mesh's registry channel ${REGISTRY_CHANNEL} did not echo this process's hello within ${timeoutMs} ms`
          end(new OrreryError('TRANSPORT_UNAVAILABLE', why, { details: { channel: REGISTRY_CHANNEL } }))
          return
        }
        this.send({ v: VERSION, t: 'hello', p: this.process }).catch((error: unknown) => {
          // The Orrery closed while the mesh joined: no echo can come.
          if (isOrreryError(error, 'CLOSED')) end(error)
        })
      }
      const timer = setInterval(hello, HELLO_EVERY_MS)
      this.joined = () => end()
      this.abortJoin = () => end(new OrreryError('CLOSED', 'this mesh is shut down'))
      hello()
    })
    this.beatTimer = setInterval(() => this.beat(), this.host.interval)
    // Agents keep a process alive; the beat alone must not.
    ;(this.beatTimer as { unref?: () => void }).unref?.()
  }

  /** Waits for every event this process published (a graceful stop's deregistrations). */
  async flushed(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending])
  }

  /** Stops beating (a shutdown, its agents stopped: waiting for its last events must not wait for new beats). */
  stopBeating(): void {
    if (this.beatTimer !== undefined) clearInterval(this.beatTimer)
    this.beatTimer = undefined
  }

  /** Stops beating and reading; remote agents stay in the registry (the mesh frees it). */
  close(): void {
    if (this.closed) return
    this.closed = true
    if (this.beatTimer !== undefined) clearInterval(this.beatTimer)
    this.subscription?.unsubscribe()
    this.events.unsubscribe()
    this.abortJoin?.()
  }

  /**
   * Publishes an event on the registry channel; its failures are logged (a closed bus's are a
   * stop), and `flushed` waits for it. Resolves, or rejects with what refused it, for the join.
   */
  private send(event: Wire): Promise<unknown> {
    if (this.closed && event.t !== 'deregister') return Promise.resolve()
    let sent: Promise<unknown>
    try {
      sent = this.host.bus.publish(REGISTRY_CHANNEL, event)
    } catch (error) {
      sent = Promise.reject(error)
    }
    const tracked = sent.then(
      () => {},
      (error: unknown) => {
        // A closed bus is a stop; anything else is reported, never thrown from a timer.
        if (!isOrreryError(error, 'CLOSED')) this.host.logger.warn({ err: error, event: event.t }, 'the shared registry could not publish')
      },
    )
    this.pending.add(tracked)
    void tracked.finally(() => this.pending.delete(tracked))
    return sent
  }

  /** This process's agents as a `register` event carries them. */
  private wireAgent(id: string): WireAgent | undefined {
    const registration = this.host.registry.registration(id)
    const info = this.host.registry.get(id)
    if (!registration || !info) return undefined
    const terms = this.host.inboxTerms?.(id)
    return {
      id,
      type: registration.type,
      capabilities: registration.capabilities,
      tags: registration.tags ?? [],
      bulkhead: registration.bulkhead ?? 0,
      health: HEALTHS.indexOf(info.health),
      ...(terms !== undefined && { inbox: [terms.visibilityMs, terms.maxDeliveries, terms.retryDelayMs] }),
    }
  }

  private localAgents(): string[] {
    return this.host.registry
      .list()
      .filter((a) => !a.remote)
      .map((a) => a.id)
  }

  private localEvent(event: RegistryEvent): void {
    if (event.type === 'health' && !event.remote) {
      if (this.changed === undefined) {
        this.changed = new Map()
        queueMicrotask(() => {
          const agents = [...(this.changed ?? [])]
          this.changed = undefined
          if (agents.length > 0) this.send({ v: VERSION, t: 'health', p: this.process, agents })
        })
      }
      this.changed.set(event.agent, HEALTHS.indexOf(event.to))
    } else if (event.type === 'registered' && !event.remote) {
      const agent = this.wireAgent(event.agent)
      if (agent) this.send({ v: VERSION, t: 'register', p: this.process, agents: [agent] })
    } else if (event.type === 'deregistered') {
      if (!event.remote) this.send({ v: VERSION, t: 'deregister', p: this.process, agents: [event.agent] })
      else {
        const terms = this.terms.get(event.agent)
        this.terms.delete(event.agent)
        const ids = this.byProcess.get(event.process!)
        ids?.delete(event.agent)
        // A process with no agent left here is forgotten (a dead one would otherwise stay listed).
        if (ids?.size === 0) {
          this.byProcess.delete(event.process!)
          this.asked.delete(event.process!)
        }
        if (event.reason === 'missed-heartbeats') this.host.stoppedBeating?.(event.agent, event.process!, terms)
      }
    }
  }

  private beat(): void {
    if (this.closed) return
    const registry = this.host.registry
    const agents: Array<[string, number, number]> = []
    for (const info of registry.list()) if (!info.remote) agents.push([info.id, HEALTHS.indexOf(info.health), this.host.load(info.id)])
    const watching = this.host.watching?.() ?? []
    // Over a broker, sent with no agent too: every process reads its own beats, so each can tell
    // it reads the channel (see `readingFor`). A thread's mesh needs no such proof.
    if (agents.length === 0 && watching.length === 0 && this.host.stoppedBeating === undefined && !this.beatHadAgents) return
    this.beatHadAgents = agents.length > 0 || watching.length > 0
    this.send({ v: VERSION, t: 'beat', p: this.process, agents, ...(watching.length > 0 && { w: [...watching] }) })
  }

  private receive(message: Message<Wire>): void {
    if (this.closed) return
    const now = performance.now()
    if (this.sinceRead(now) > 2 * this.host.interval) this.readingSince = now
    this.lastReadAt = now
    this.lastReadWall = Date.now()
    let event: Wire
    try {
      event = message.payload
    } catch (error) {
      this.host.logger.warn({ err: error }, `a message on ${REGISTRY_CHANNEL} could not be read`)
      return
    }
    if (event === null || typeof event !== 'object' || event.v !== VERSION || !isString(event.p)) return
    try {
      if (event.p === this.process) {
        if (event.t === 'hello' && event.to === undefined) this.joined?.()
        return
      }
      if (event.t === 'hello') {
        if (event.to === undefined || event.to === this.process) this.announce()
      } else if (event.t === 'register' && Array.isArray(event.agents)) {
        for (const agent of event.agents) this.mirrorOrRefuse(event.p, agent)
      } else if (event.t === 'beat' && Array.isArray(event.agents)) {
        this.beatOf(event.p, event.agents)
        if (Array.isArray(event.w)) this.watchedBy.set(event.p, new Set(event.w.filter(isString)))
        else this.watchedBy.delete(event.p)
      } else if (event.t === 'health' && Array.isArray(event.agents)) {
        for (const entry of event.agents) if (Array.isArray(entry) && isString(entry[0])) this.reported(event.p, entry[0], entry[1])
      } else if (event.t === 'deregister' && Array.isArray(event.agents)) {
        for (const id of event.agents) if (isString(id)) this.forget(event.p, id)
      } else if (event.t === 'gone' && isString(event.of) && Array.isArray(event.lost)) {
        this.ended(event.of)
        const watched = this.watchedBy.get(event.p)
        for (const id of event.lost) {
          if (!isString(id)) continue
          watched?.delete(id)
          this.host.lost?.(id, event.of)
        }
      }
    } catch (error) {
      this.host.logger.warn({ err: error, process: event.p, event: event.t }, `an event on ${REGISTRY_CHANNEL} was refused`)
    }
  }

  /** Tells every process (a hello asked for) about all of this process's agents. */
  private announce(): void {
    const agents = this.localAgents()
      .map((id) => this.wireAgent(id))
      .filter((a): a is WireAgent => a !== undefined)
    if (agents.length > 0) this.send({ v: VERSION, t: 'register', p: this.process, agents })
  }

  /**
   * Mirrors one agent of a `register` event. One this registry refuses (a process of another
   * Orrery version whose capability range or tag this one's checks reject) is logged once and
   * remembered, so the agents listed after it are still mirrored and its owner's beats, which
   * list it, do not make this process ask again every interval.
   */
  private mirrorOrRefuse(process: string, agent: WireAgent): void {
    try {
      this.mirror(process, agent)
    } catch (error) {
      const id = agent !== null && typeof agent === 'object' && isString(agent.id) ? agent.id : undefined
      if (id === undefined) return
      const refused = this.refused.get(process)
      if (refused?.has(id)) return
      if (refused) refused.add(id)
      else this.refused.set(process, new Set([id]))
      this.host.logger.warn({ err: error, agent: id, process }, `agent ${id} of process ${process} was refused by this registry`)
    }
  }

  /** Mirrors an agent of `process`, or refreshes it; an id taken here is kept by its holder. */
  private mirror(process: string, agent: WireAgent): void {
    if (agent === null || typeof agent !== 'object' || !isString(agent.id)) return
    const registry = this.host.registry
    const owner = registry.owner(agent.id)
    if (owner !== undefined && !owner.remote) {
      this.host.logger.warn({ agent: agent.id, process }, `agent ${agent.id} of process ${process} is ignored: an agent of that id runs here`)
      return
    }
    if (owner !== undefined && owner.process !== process) {
      // The id moved to another process (given explicitly): the newest registration wins.
      registry.deregister(agent.id)
    }
    if (owner === undefined || owner.process !== process) {
      registry.registerRemote({ id: agent.id, type: agent.type, capabilities: agent.capabilities, tags: agent.tags, bulkhead: agent.bulkhead }, process)
      const ids = this.byProcess.get(process)
      if (ids) ids.add(agent.id)
      else this.byProcess.set(process, new Set([agent.id]))
    }
    const terms = termsOf(agent.inbox)
    if (terms !== undefined) this.terms.set(agent.id, terms)
    registry.heartbeat(agent.id, healthOf(agent.health))
  }

  private beatOf(process: string, agents: unknown[]): void {
    const registry = this.host.registry
    const listed = new Set<string>()
    let unknown = false
    for (const entry of agents) {
      if (!Array.isArray(entry) || !isString(entry[0])) continue
      const [id, health] = entry as [string, number]
      listed.add(id)
      const owner = registry.owner(id)
      if (owner === undefined) unknown ||= !this.refused.get(process)?.has(id)
      else this.reported(process, id, health)
    }
    // What the process no longer lists it deregistered (a deregister this process missed).
    for (const id of [...(this.byProcess.get(process) ?? [])]) if (!listed.has(id)) this.forget(process, id)
    const refused = this.refused.get(process)
    if (refused !== undefined) {
      for (const id of refused) if (!listed.has(id)) refused.delete(id)
      if (refused.size === 0) this.refused.delete(process)
    }
    if (unknown) this.ask(process)
  }

  /** An agent of `process` reported `health` (a code): a heartbeat here, if it is that process's. */
  private reported(process: string, id: string, health: unknown): void {
    const owner = this.host.registry.owner(id)
    if (owner?.remote && owner.process === process) this.host.registry.heartbeat(id, healthOf(health))
  }

  /** Asks `process` for its agents again (an agent of it is unknown here), at most once per interval. */
  private ask(process: string): void {
    const now = Date.now()
    if (now - (this.asked.get(process) ?? Number.NEGATIVE_INFINITY) < this.host.interval) return
    this.asked.set(process, now)
    this.send({ v: VERSION, t: 'hello', p: this.process, to: process })
  }

  /**
   * `process` ended (a worker thread that exited): its agents are deregistered at once, here and
   * in every other thread's registry, whose calls waiting on `lost` fail.
   */
  processGone(process: string, lost: readonly string[]): void {
    this.ended(process)
    this.send({ v: VERSION, t: 'gone', p: this.process, of: process, lost: [...lost] })
  }

  /**
   * For how long (ms) this process has read the registry channel without a gap of two beats: its
   * own beats come back once per interval, so a gap means its link to the broker (or its own
   * event loop) stalled, and the other processes' missed beats say nothing of them then.
   */
  readingFor(): number {
    const now = performance.now()
    return this.sinceRead(now) > 2 * this.host.interval ? 0 : now - this.readingSince
  }

  /** How long ago the last read was, by the longer of the two clocks. */
  private sinceRead(now: number): number {
    return Math.max(now - this.lastReadAt, Date.now() - this.lastReadWall)
  }

  /**
   * Whether agent `id` runs on a worker thread some process watches (this one or another): its
   * missed beats only delay its answers, and its thread's end is told.
   */
  watched(id: string): boolean {
    if (this.host.watching?.().includes(id)) return true
    for (const ids of this.watchedBy.values()) if (ids.has(id)) return true
    return false
  }

  private ended(process: string): void {
    for (const id of [...(this.byProcess.get(process) ?? [])]) this.forget(process, id)
  }

  private forget(process: string, id: string): void {
    const owner = this.host.registry.owner(id)
    if (owner === undefined || !owner.remote || owner.process !== process) return
    this.byProcess.get(process)?.delete(id)
    this.host.registry.deregister(id)
  }
}
