/**
 * The agent registry: who offers which capability at which version, how healthy each agent is,
 * and how routing picks one. The state lives in the core (`MeshCore`); this facade names
 * agents, compiles queries once, turns the core's transitions into events, and keeps one timer
 * for the core's next liveness deadline (missed heartbeats, deregistration, breaker cool-downs).
 */
import { Subject, type Observable } from 'rxjs'

import { MESH_EVENT_FIELDS, MESH_STATE_FIELDS, type MeshCore } from '../engines/backend.js'
import { LIMITS } from '../engines/manifest.js'
import { inboxOf } from '../bus/options.js'
import { finite, int, intOr, keysOf, list, ms, name as checkName, oneOf, oneOfOr, options as checkOptions, text, type Where } from '../check.js'
import { isEngineFailure, OrreryError } from '../errors.js'
import { Stream } from '../stream.js'
import { DeadlineTimer } from '../timer.js'

/** How well an agent is, best first. */
export type Health = 'healthy' | 'degraded' | 'initializing' | 'unhealthy' | 'paused' | 'offline'
export const HEALTHS: readonly Health[] = ['healthy', 'degraded', 'initializing', 'unhealthy', 'paused', 'offline']
/** Where an agent's circuit breaker stands. */
export type BreakerState = 'closed' | 'open' | 'half-open'
const BREAKER_STATES: readonly BreakerState[] = ['closed', 'open', 'half-open']
/** How routing picks one agent among the matches. */
export type Strategy = 'priority' | 'round-robin' | 'least-loaded' | 'random'
const STRATEGIES: readonly Strategy[] = ['priority', 'round-robin', 'least-loaded', 'random']

/** One capability an agent offers. */
export interface CapabilitySpec {
  name: string
  /** Semver, `1.2.0`. */
  version: string
  /** Higher is preferred (default 0). */
  priority?: number
  /** Free-form description, kept with the registration. */
  metadata?: Readonly<Record<string, unknown>>
}

/** What registering an agent takes. */
export interface AgentRegistration {
  id: string
  type: string
  capabilities: readonly CapabilitySpec[]
  tags?: readonly string[]
  /** Concurrent routed calls allowed (default 0: no cap). */
  bulkhead?: number
}

/** A registered agent as the registry sees it now. */
export interface AgentInfo {
  readonly id: string
  readonly type: string
  readonly capabilities: readonly CapabilitySpec[]
  readonly tags: readonly string[]
  readonly health: Health
  readonly inFlight: number
  readonly lastBeat: number
  readonly breaker: BreakerState
  /** Whether it runs in another process (a shared mesh's registry mirrors those). */
  readonly remote: boolean
  /** In a shared mesh, the id of the process running it (`mesh.process` for this one's); else undefined. */
  readonly process: string | undefined
}

/**
 * A search: `'summarize@^1.2'` (a capability and a range in npm's semver grammar, as in
 * `package.json`: `1.2.0` is exact, `>=1.2.0 <2 || 3.x`, `1.2 - 1.9`; no range means any), or an
 * object adding tags every match must carry, a minimum health (default `degraded`), and more
 * capabilities every match must also offer.
 */
export type AgentQuery = string | { capability: string; tags?: readonly string[]; minHealth?: Health; also?: readonly string[] }

/** Something that happened to an agent. */
export type RegistryEvent =
  | ({ type: 'registered'; agent: string; agentType: string; at: number } & RemoteTag)
  | ({ type: 'health'; agent: string; from: Health; to: Health; at: number } & RemoteTag)
  | ({ type: 'deregistered'; agent: string; from: Health; at: number; reason: 'requested' | 'missed-heartbeats' } & RemoteTag)
  | { type: 'breaker'; agent: string; from: BreakerState; to: BreakerState; at: number }
  /** The engine failed under the registry's timer (a core panic, a poisoned wasm instance): reported once, no timer is armed again. */
  | { type: 'engine-failed'; error: OrreryError; at: number }

/** What the events of an agent of another process carry (a shared mesh): `remote: true` and the process's id. */
export interface RemoteTag {
  remote?: true
  process?: string
}

const LOCAL: RemoteTag = Object.freeze({})

/** An exponential backoff. */
export interface BackoffOptions {
  /** The first retry's delay in ms (default 100). */
  base?: number
  /** Growth per retry (default 2). */
  factor?: number
  /** The longest delay in ms. */
  max?: number
  /** `full` (0 to the delay), `equal` (half to all of it) or `none`. */
  jitter?: 'full' | 'equal' | 'none'
}

const BACKOFF_KEYS = keysOf<BackoffOptions>()(['base', 'factor', 'max', 'jitter'])
const QUERY_KEYS = keysOf<Exclude<AgentQuery, string>>()(['capability', 'tags', 'minHealth', 'also'])

const JITTER_CODES = { none: 0, full: 1, equal: 2 } as const
const JITTERS: ReadonlyArray<keyof typeof JITTER_CODES> = ['none', 'full', 'equal']

/**
 * @internal Checks backoff options where they are given (a spawn's retry, a supervisor, a
 * request), so the core only ever gets numbers and a known jitter.
 */
export function checkBackoff(value: unknown, what: string): BackoffOptions | undefined {
  if (value === undefined) return undefined
  const b = checkOptions(value as BackoffOptions, what, 'option', BACKOFF_KEYS)
  if (b.base !== undefined) ms(b.base, `${what}.base`)
  // A factor below 1 would shrink the delays; 1 keeps them constant.
  if (b.factor !== undefined) finite(b.factor, `${what}.factor`, { min: 1 })
  if (b.max !== undefined) ms(b.max, `${what}.max`)
  if (b.jitter !== undefined) oneOf(b.jitter, JITTERS, `${what}.jitter`)
  return b
}

/** The longest agent id: its inbox, `inbox.<id>`, is a channel name of at most 255 bytes. */
export const MAX_AGENT_ID = LIMITS.maxNameBytes - 'inbox.'.length

/** @internal Checks one capability an agent declares (`what` names it in errors). */
export function checkCapability(value: unknown, what: string): CapabilitySpec {
  const c = checkOptions(value as CapabilitySpec, what, 'option')
  checkName(c.name, `${what}.name`, 'option')
  text(c.version, `${what}.version`, { nonEmpty: true }, 'option')
  // The core keeps priorities as 32-bit integers.
  if (c.priority !== undefined) int(c.priority, `${what}.priority`, { min: -(2 ** 31), max: 2 ** 31 - 1 })
  if (c.metadata !== undefined) checkOptions(c.metadata, `${what}.metadata`, 'option')
  return c
}

/** @internal Checks a list of capabilities. */
export function checkCapabilities(value: unknown, what: string): readonly CapabilitySpec[] {
  return list(value, what, 'option').map((c, i) => checkCapability(c, `${what}[${i}]`))
}

/** @internal Checks a list of tags: each a name. */
export function checkTags(value: unknown, what: string, where: Where = 'option'): readonly string[] {
  return list<string>(value, what, where).map((t, i) => checkName(t, `${what}[${i}]`, where))
}

/** A query object, checked and with its defaults: what its compiled id is cached by. */
function checkQuery(query: Exclude<AgentQuery, string>): [capability: string, tags: readonly string[], minHealth: Health, also: readonly string[]] {
  const q = checkOptions(query, 'query', 'argument', QUERY_KEYS)
  const capability = text(q.capability, 'capability', { nonEmpty: true }, 'option')
  const tags = q.tags === undefined ? [] : checkTags(q.tags, 'tags')
  const minHealth = oneOfOr(q.minHealth, HEALTHS, 'degraded', 'minHealth')
  const also = q.also === undefined ? [] : list<string>(q.also, 'also', 'option').map((c, i) => text(c, `also[${i}]`, { nonEmpty: true }, 'option'))
  return [capability, tags, minHealth, also]
}

/**
 * An object query's cache key, or undefined when a field has an unexpected type (the checks then
 * refuse it). Every string is length-prefixed, so no two different queries share a key.
 */
function queryKey(query: Exclude<AgentQuery, string>): string | undefined {
  if (query === null || typeof query !== 'object') return undefined
  const { capability, tags, minHealth, also } = query
  if (typeof capability !== 'string' || (minHealth !== undefined && typeof minHealth !== 'string')) return undefined
  let key = `${capability.length}:${capability}|${minHealth === undefined ? '-' : `${minHealth.length}:${minHealth}`}|`
  for (const [name, items] of [
    ['t', tags],
    ['a', also],
  ] as const) {
    if (items === undefined) continue
    if (!Array.isArray(items)) return undefined
    key += name
    for (const item of items as unknown[]) {
      if (typeof item !== 'string') return undefined
      key += `${item.length}:${item}`
    }
  }
  return key
}

/** @internal Retries of handlers and routed requests: 100 ms doubling, at most 30 s, full jitter. */
export const RETRY_BACKOFF: Required<BackoffOptions> = { base: 100, factor: 2, max: 30_000, jitter: 'full' }

/** Liveness settings: how often agents beat, and what missed beats do. */
export interface LivenessOptions {
  /** Heartbeat interval in ms (default 5,000). */
  interval?: number
  /** Missed beats before degraded (2), unhealthy (3), offline (5). */
  degradedAfter?: number
  unhealthyAfter?: number
  offlineAfter?: number
  /** How long an offline agent stays registered, in ms (default 60,000). */
  deregisterAfter?: number
}

/** Circuit breaker settings, one breaker per agent. */
export interface BreakerOptions {
  /** Consecutive failures that open it (default 5). */
  failures?: number
  /** How long it stays open, in ms (default 10,000). */
  coolDown?: number
  /** Calls let through at once while half-open (default 1). */
  probes?: number
  /** Probe successes that close it (default 1). */
  successes?: number
}

interface Known {
  readonly handle: number
  readonly id: string
  readonly type: string
  readonly capabilities: readonly CapabilitySpec[]
  readonly tags: readonly string[]
  /** The agent's inbox channel (routing sends there). */
  readonly inbox: string
  readonly bulkhead: number
  /** The process running it, in a shared mesh. */
  readonly process: string | undefined
  /** Set for an agent of another process: what its events carry. */
  readonly tag: RemoteTag
}

/**
 * Numbers per slot in `Registry.seen`: the snapshot's `stateKey` and last beat (16 bytes: the
 * whole array stays small enough to be mostly in cache over 100,000 agents).
 */
const SEEN_STRIDE = 2

/**
 * @internal Events of `subject` as a Stream: a subscriber's callback that throws is handed to
 * `unhandled` and delivery goes on. A plain Subject would let rxjs rethrow it from a timer, which
 * ends a Node process (a throwing `mesh.events` subscriber once did, at the next registration).
 */
export function eventStream<T>(subject: Subject<T>, unhandled: (error: unknown) => void): Stream<T> {
  return new Stream<T>({
    start(sink) {
      const subscription = subject.subscribe(sink)
      // Events cannot wait: an iterator that pauses keeps them queued.
      return { stop: () => subscription.unsubscribe(), setPaused: () => {} }
    },
    unhandled,
  })
}

/** The slot-index bits of a core handle (`orrery_core::slab`: index in the low 20 bits, generation above). */
const SLOT_MASK = (1 << 20) - 1

/** @internal `name@range` as [name, range]; no range means any. */
export function splitCapability(text: string): [string, string] {
  const at = text.indexOf('@')
  return at < 0 ? [text, '*'] : [text.slice(0, at), text.slice(at + 1) || '*']
}

/**
 * An agent's core handle, health, calls in flight and breaker as one exact number (32 + 3 + 16
 * + 2 bits, below 2 ** 53), or -2 (matching no stored key, which is never below -1) for an agent
 * with 65,536 calls or more in flight: its snapshot is made anew each time.
 */
function stateKey(handle: number, health: number, inFlight: number, breaker: number): number {
  return inFlight < 0x10000 ? handle * 0x200000 + health + breaker * 8 + inFlight * 32 : -2
}

function healthCode(health: unknown, name: string, where: Where): number {
  return HEALTHS.indexOf(oneOf(health, HEALTHS, name, where))
}

/** @internal The code of a strategy name. */
export function strategyCode(strategy: unknown, where: Where = 'option'): number {
  return STRATEGIES.indexOf(oneOf(strategy, STRATEGIES, 'strategy', where))
}

/** The agent registry of one mesh. */
export class Registry {
  /**
   * Agents by the slot index of their core handle (its low 20 bits): a dense array, because
   * discovery looks up every match and a Map over 100,000 agents misses the cache each time.
   */
  private readonly slots: Array<Known | undefined> = []
  private readonly byId = new Map<string, Known>()
  /**
   * The snapshots `find` last returned, by slot index, handed out again while their agent's
   * state is the same: a search over agents that did not change allocates nothing per match (80
   * fresh objects per search were what its p99 paid for in collections). Whether a snapshot is
   * current is read from `seen`, a dense array, so the check touches neither the agent's `Known`
   * nor the snapshot: over 100,000 agents each of those reads missed the cache.
   */
  private readonly snapshots: Array<AgentInfo | undefined> = []
  /** Per slot index, SEEN_STRIDE numbers: the snapshot's `stateKey` (-1: none) and its last beat. */
  private seen = new Float64Array(0)
  /** Compiled queries: strings by themselves, objects by their checked parts (never shared). */
  private readonly textQueries = new Map<string, number>()
  private readonly objectQueries = new Map<string, number>()
  private readonly subject = new Subject<RegistryEvent>()
  /** One timer for the core's next liveness deadline (a missed heartbeat, a breaker's cool-down). */
  private readonly deadlines = new DeadlineTimer(
    () => this.now(),
    () => {
      if (this.closed) return
      // Thrown from a timer, a failed engine would end the process: reported once instead.
      try {
        this.tick()
      } catch (error) {
        if (!isEngineFailure(error)) throw error
        this.engineFailed = true
        this.subject.next({ type: 'engine-failed', error, at: this.now() })
      }
    },
    true,
  )
  private closed = false
  private engineFailed = false
  /** @internal This process's id when the mesh is shared (its agents' `process`). */
  process: string | undefined
  /** Health transitions, breaker moves, registrations and deregistrations, as they happen. */
  readonly events: Observable<RegistryEvent>

  /**
   * @internal
   * @param unhandled where an error an `events` subscriber's callback throws goes (the mesh logs it).
   */
  static create(core: MeshCore, now: () => number, unhandled?: (error: unknown) => void): Registry {
    return new Registry(core, now, unhandled)
  }

  private constructor(
    readonly core: MeshCore,
    readonly now: () => number,
    unhandled: (error: unknown) => void = () => {},
  ) {
    this.events = eventStream(this.subject, unhandled)
  }

  /** Registers an agent; it starts `initializing` until its first heartbeat. */
  register(agent: AgentRegistration): AgentInfo {
    return this.add(agent, undefined)
  }

  /**
   * @internal Mirrors an agent of process `process` (a shared mesh): checked as a local
   * registration is, since it came from the broker; heartbeats on arrival keep it alive.
   */
  registerRemote(agent: AgentRegistration, process: string): AgentInfo {
    return this.add(agent, process)
  }

  /** @internal The agent of this id and, for another process's, that process's id. */
  owner(id: string): { remote: boolean; process: string | undefined } | undefined {
    const known = this.byId.get(id)
    return known && { remote: known.tag !== LOCAL, process: known.process }
  }

  /** @internal What registering agent `id` took (a shared mesh announces it). */
  registration(id: string): AgentRegistration | undefined {
    const known = this.byId.get(id)
    return known && { id: known.id, type: known.type, capabilities: known.capabilities, tags: known.tags, bulkhead: known.bulkhead }
  }

  private add(agent: AgentRegistration, remoteProcess: string | undefined): AgentInfo {
    this.assertOpen()
    // Every field is checked before the core sees it: wasm would coerce or misread a wrong type.
    checkOptions(agent, 'agent')
    checkName(agent.id, 'id', 'option', MAX_AGENT_ID)
    checkName(agent.type, 'type', 'option')
    const capabilities = checkCapabilities(agent.capabilities, 'capabilities')
    const tags = agent.tags === undefined ? [] : checkTags(agent.tags, 'tags')
    const existing = this.byId.get(agent.id)
    if (existing)
      throw new OrreryError(
        'DUPLICATE_AGENT',
        `agent ${JSON.stringify(agent.id)} is registered already${existing.tag === LOCAL ? '' : ` (it runs in process ${existing.process})`}`,
        { details: { agent: agent.id } },
      )
    const bulkhead = intOr(agent.bulkhead, 0, 'bulkhead', { max: 0xffffffff })
    const lines = capabilities.map((c) => {
      if (/\s/.test(c.version))
        throw new OrreryError('INVALID_NAME', `capability ${JSON.stringify(c.name)}@${c.version} holds whitespace`, { details: { capability: c.name } })
      return `${c.name} ${c.version} ${c.priority ?? 0}`
    })
    const now = this.now()
    const handle = this.core.register(agent.id, agent.type, lines.join('\n'), [...tags], bulkhead, now)
    const known: Known = {
      handle,
      id: agent.id,
      type: agent.type,
      capabilities: capabilities.map((c) => Object.freeze({ ...c })),
      tags: [...tags],
      inbox: inboxOf(agent.id),
      bulkhead,
      process: remoteProcess ?? this.process,
      tag: remoteProcess === undefined ? LOCAL : Object.freeze({ remote: true, process: remoteProcess }),
    }
    this.slots[handle & SLOT_MASK] = known
    this.byId.set(agent.id, known)
    this.subject.next({ type: 'registered', agent: agent.id, agentType: agent.type, at: now, ...known.tag })
    this.changed()
    return this.info(known)
  }

  /** Removes an agent: routing stops choosing it at once. */
  deregister(id: string): void {
    const known = this.known(id)
    const from = HEALTHS[this.core.agentState(known.handle)[0]!]!
    this.core.deregister(known.handle)
    this.forget(known)
    this.subject.next({ type: 'deregistered', agent: id, from, at: this.now(), reason: 'requested', ...known.tag })
  }

  /** An agent's heartbeat, reporting its health (default `healthy`). */
  heartbeat(id: string, health: Health = 'healthy'): void {
    const code = healthCode(health, 'health', 'argument')
    this.core.heartbeat(this.known(id).handle, code, this.now())
    this.changed()
  }

  /** Sets an agent's health without counting as a heartbeat (pause, a failed start). */
  setHealth(id: string, health: Health): void {
    const code = healthCode(health, 'health', 'argument')
    this.core.setHealth(this.known(id).handle, code, this.now())
    this.changed()
  }

  /** An agent by id. */
  get(id: string): AgentInfo | undefined {
    text(id, 'id')
    const known = this.byId.get(id)
    return known && this.info(known)
  }

  /** Every registered agent, in registration order. */
  list(): AgentInfo[] {
    return [...this.byId.values()].map((k) => this.info(k))
  }

  /**
   * The agents matching `query`, best first: priority, then health, then registration. Each is
   * a frozen snapshot; an agent whose state has not changed since the last search comes back as
   * the same object.
   */
  find(query: AgentQuery): AgentInfo[] {
    // One crossing returns every match with its state (a view valid until the next core call).
    const found = this.core.findStates(this.compile(query), this.now())
    const out: AgentInfo[] = []
    const seen = this.seen
    for (let i = 0; i < found.length; i += MESH_STATE_FIELDS) {
      const handle = found[i]!
      const at = (handle & SLOT_MASK) * SEEN_STRIDE
      if (at < seen.length && seen[at] === stateKey(handle, found[i + 1]!, found[i + 2]!, found[i + 4]!) && seen[at + 1] === found[i + 3]!) {
        out.push(this.snapshots[handle & SLOT_MASK]!)
        continue
      }
      const info = this.snapshot(handle, found[i + 1]!, found[i + 2]!, found[i + 3]!, found[i + 4]!)
      if (info) out.push(info)
    }
    return out
  }

  /** A new snapshot of an agent for `find`, remembered with the state it shows; undefined for an agent the registry forgot. */
  private snapshot(handle: number, health: number, inFlight: number, lastBeat: number, breaker: number): AgentInfo | undefined {
    const known = this.byCoreHandle(handle)
    if (!known) return undefined
    const info: AgentInfo = Object.freeze({
      id: known.id,
      type: known.type,
      capabilities: known.capabilities,
      tags: known.tags,
      health: HEALTHS[health]!,
      inFlight,
      lastBeat,
      breaker: BREAKER_STATES[breaker]!,
      remote: known.tag !== LOCAL,
      process: known.process,
    })
    const slot = handle & SLOT_MASK
    let at = slot * SEEN_STRIDE
    if (at >= this.seen.length) {
      const grown = new Float64Array(Math.max(this.seen.length * 2, (slot + 1) * SEEN_STRIDE, 1024 * SEEN_STRIDE)).fill(-1)
      grown.set(this.seen)
      this.seen = grown
    }
    this.seen[at++] = Math.max(stateKey(handle, health, inFlight, breaker), -1)
    this.seen[at] = lastBeat
    this.snapshots[slot] = info
    return info
  }

  /**
   * The agent routing would call now for `query` by `strategy` (skipping open breakers and
   * full bulkheads), or undefined. Asking moves round-robin and random selection along.
   */
  select(query: AgentQuery, strategy: Strategy = 'priority'): AgentInfo | undefined {
    const code = strategyCode(strategy, 'argument')
    const handle = this.core.route(this.compile(query), code, this.now(), [])
    if (handle < 0) return undefined
    this.core.finish(handle, 2, this.now())
    this.drain()
    const known = this.byCoreHandle(handle)
    return known && this.info(known)
  }

  /** Capability names like `name` (Jaro-Winkler score >= `threshold`, default 0.8), best first. */
  similar(name: string, options: { threshold?: number } = {}): Array<{ name: string; score: number }> {
    text(name, 'name')
    const o = checkOptions(options)
    const threshold = o.threshold === undefined ? 0.8 : finite(o.threshold, 'threshold', { min: 0, max: 1 })
    this.assertOpen()
    return this.core
      .similar(name, threshold)
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [known, score] = line.split('\t')
        return { name: known!, score: Number(score) }
      })
  }

  /** Applies what is due now (missed heartbeats, cool-downs); the registry's timer does this on its own. */
  tick(): void {
    this.core.tick(this.now())
    this.changed()
  }

  /** @internal The compiled id of a query (compiled once, then cached). */
  compile(query: AgentQuery): number {
    // A string is cached by itself and an object by its checked parts in a map of its own, so
    // two different queries never share an entry (a string holding the object key's separators
    // once answered from an object query's cache). Only queries the core compiled are cached.
    if (typeof query === 'string') {
      const cached = this.textQueries.get(query)
      if (cached !== undefined) return cached
      text(query, 'query', { nonEmpty: true })
      const id = this.compileNew(query, [], 'degraded', [])
      this.textQueries.set(query, id)
      return id
    }
    // The key is built from the fields as given (checking and serialising every routed request's
    // query cost ~780 ns); only a query that passed its checks is ever stored under one.
    const key = queryKey(query)
    const cached = key === undefined ? undefined : this.objectQueries.get(key)
    if (cached !== undefined) return cached
    const parts = checkQuery(query)
    const id = this.compileNew(...parts)
    if (key !== undefined) this.objectQueries.set(key, id)
    return id
  }

  private compileNew(spec: string, tags: readonly string[], minHealth: Health, also: readonly string[]): number {
    this.assertOpen()
    const [capability, range] = splitCapability(spec)
    const lines = also.map((c) => splitCapability(c).join(' ')).join('\n')
    return this.core.query(capability, range, HEALTHS.indexOf(minHealth), [...tags], lines)
  }

  /**
   * @internal The delay before retry `attempt` of an exponential backoff, drawn from the core's
   * seeded random source; `defaults` fill what `options` leaves out.
   */
  backoff(options: BackoffOptions | undefined, attempt: number, defaults: Required<BackoffOptions>): number {
    const b = options ?? {}
    return this.core.backoff(b.base ?? defaults.base, b.factor ?? defaults.factor, b.max ?? defaults.max, JITTER_CODES[b.jitter ?? defaults.jitter], attempt)
  }

  /**
   * @internal Why `query` matches no agent, for a refusal people can act on: it relaxes the
   * query one condition at a time (version range, tags, further capabilities, health) and names
   * the first that left no agent. Runs only when a route found nothing, so its extra queries
   * cost nothing on the routing path. `similar` never holds the name asked for.
   */
  whyNone(query: AgentQuery): { message: string; offered: number; similar: string[] } {
    const spec = typeof query === 'string' ? { capability: query } : query
    const [name, range] = splitCapability(spec.capability)
    const tags = spec.tags ?? []
    const also = spec.also ?? []
    const minHealth = spec.minHealth ?? 'degraded'
    // minHealth `offline` accepts every health: these count what the other conditions leave.
    const count = (q: { capability: string; tags?: readonly string[]; also?: readonly string[] }) =>
      this.core.findStates(this.compile({ ...q, minHealth: 'offline' }), this.now()).length / MESH_STATE_FIELDS
    const offered = count({ capability: name })
    if (offered === 0) {
      const similar = this.similar(name)
        .map((s) => s.name)
        .filter((n) => n !== name)
      const hint = similar.length > 0 ? ` (did you mean ${similar.join(', ')}?)` : ''
      return { message: `no agent offers ${name}${hint}`, offered, similar }
    }
    const agents = (n: number) => (n === 1 ? '1 agent offers' : `${n} agents offer`)
    const refuse = (n: number, what: string, reason: string) => ({ message: `${agents(n)} ${what}, but ${reason}`, offered, similar: [] })
    const inRange = range === '*' ? offered : count({ capability: spec.capability })
    if (inRange === 0) {
      const versions = new Set<string>()
      for (const known of this.byId.values()) for (const c of known.capabilities) if (c.name === name) versions.add(c.version)
      return refuse(offered, name, `none at a version in ${range} (offered: ${[...versions].sort().join(', ')})`)
    }
    const tagged = tags.length === 0 ? inRange : count({ capability: spec.capability, tags })
    if (tagged === 0) return refuse(inRange, spec.capability, `none has tags [${tags.join(', ')}]`)
    const withAlso = also.length === 0 ? tagged : count({ capability: spec.capability, tags, also })
    const what = `${spec.capability}${tags.length > 0 ? ` with tags [${tags.join(', ')}]` : ''}`
    if (withAlso === 0) return refuse(tagged, what, `none also offers ${also.join(', ')}`)
    const healths = new Set(this.find({ capability: spec.capability, tags, also, minHealth: 'offline' }).map((a) => a.health))
    const accepted = HEALTHS.slice(0, HEALTHS.indexOf(minHealth) + 1)
    const healthy = accepted.length === 1 ? accepted[0]! : `${accepted.slice(0, -1).join(', ')} or ${accepted[accepted.length - 1]!}`
    return refuse(
      withAlso,
      `${what}${also.length > 0 ? ` and ${also.join(', ')}` : ''}`,
      `none is ${healthy} (they are ${[...healths].join(', ')}; minHealth is ${minHealth})`,
    )
  }

  /** @internal The agent behind a core handle. */
  byCoreHandle(handle: number): Known | undefined {
    const known = this.slots[handle & SLOT_MASK]
    return known?.handle === handle ? known : undefined
  }

  /** @internal Emits the core's events, then re-arms the timer. */
  changed(): void {
    this.drain()
    this.arm()
  }

  /** @internal Emits the core's events. */
  drain(): void {
    const flat = this.core.events()
    for (let i = 0; i < flat.length; i += MESH_EVENT_FIELDS) {
      const kind = flat[i]!
      const known = this.byCoreHandle(flat[i + 1]!)
      if (!known) continue
      const at = flat[i + 4]!
      if (kind === 1) {
        this.subject.next({ type: 'breaker', agent: known.id, from: BREAKER_STATES[flat[i + 2]!]!, to: BREAKER_STATES[flat[i + 3]!]!, at })
      } else if (flat[i + 3]! < 0) {
        this.forget(known)
        this.subject.next({ type: 'deregistered', agent: known.id, from: HEALTHS[flat[i + 2]!]!, at, reason: 'missed-heartbeats', ...known.tag })
      } else {
        this.subject.next({ type: 'health', agent: known.id, from: HEALTHS[flat[i + 2]!]!, to: HEALTHS[flat[i + 3]!]!, at, ...known.tag })
      }
    }
  }

  private arm(): void {
    if (this.closed || this.engineFailed) return
    const at = this.core.nextDeadline()
    this.deadlines.arm(at)
  }

  private forget(known: Known): void {
    const slot = known.handle & SLOT_MASK
    if (this.snapshots[slot]?.id === known.id) {
      this.seen[slot * SEEN_STRIDE] = -1
      this.snapshots[slot] = undefined
    }
    if (this.slots[known.handle & SLOT_MASK] === known) this.slots[known.handle & SLOT_MASK] = undefined
    this.byId.delete(known.id)
  }

  private known(id: string): Known {
    text(id, 'id')
    const known = this.byId.get(id)
    if (!known) throw new OrreryError('UNKNOWN_AGENT', `no agent ${JSON.stringify(id)} is registered`, { details: { agent: id } })
    return known
  }

  private info(known: Known): AgentInfo {
    const state = this.core.agentState(known.handle)
    return {
      id: known.id,
      type: known.type,
      capabilities: known.capabilities,
      tags: known.tags,
      health: HEALTHS[state[0]!]!,
      inFlight: state[1]!,
      lastBeat: state[2]!,
      breaker: BREAKER_STATES[this.core.breakerState(known.handle, this.now())]!,
      remote: known.tag !== LOCAL,
      process: known.process,
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new OrreryError('CLOSED', 'this registry is closed')
  }

  /** @internal Stops the timer and frees the core. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.deadlines.cancel()
    this.subject.complete()
    this.core.close()
  }
}
