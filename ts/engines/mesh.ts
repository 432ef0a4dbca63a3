/**
 * The one MeshCore over either engine. Each engine supplies its raw calls (`RawMesh`: numbers in,
 * numbers out, crossing however suits it: the native engine's call block, the wasm instance's
 * `io`) and how its failures read (`EngineFailures`); this adds what both share: `CLOSED` after
 * `close()`, error translation, and releases that do nothing on a lost engine. The store has the
 * same shape (`StoreAdapter` in store.ts), and the bus (`adaptBus` in adapter.ts).
 */
import type { MeshCore, MeshCoreOptions, RouteRefusal } from './backend.js'
import { OrreryError } from '../errors.js'
import type { EngineFailures } from './failures.js'

/** An engine's mesh calls, untranslated. `close` releases the engine's mesh (called once). */
export type RawMesh = MeshCore

/** A new core mesh's settings as both engines' constructors take them, in order. */
export type MeshArgs = [
  seed: number,
  interval: number,
  degradedAfter: number,
  unhealthyAfter: number,
  offlineAfter: number,
  deregisterAfter: number,
  failuresToOpen: number,
  coolDown: number,
  probes: number,
  successesToClose: number,
]

export function meshArgs(o: MeshCoreOptions): MeshArgs {
  return [o.seed, o.interval, o.degradedAfter, o.unhealthyAfter, o.offlineAfter, o.deregisterAfter, o.failuresToOpen, o.coolDown, o.probes, o.successesToClose]
}

const closedError = () => new OrreryError('CLOSED', 'the mesh is closed')

class MeshAdapter implements MeshCore {
  private closed = false

  constructor(
    private readonly raw: RawMesh,
    private readonly failures: EngineFailures,
  ) {}

  private usable(): void {
    this.failures.usable()
    if (this.closed) throw closedError()
  }

  private call<T>(call: (raw: RawMesh) => T): T {
    this.usable()
    try {
      return call(this.raw)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  /** A call that only lets go: nothing is left to release on a lost engine. */
  private release(call: (raw: RawMesh) => void): void {
    if (!this.failures.poisoned()) this.call(call)
  }

  register(id: string, kind: string, capabilities: string, tags: string[], bulkhead: number, now: number): number {
    return this.call((raw) => raw.register(id, kind, capabilities, tags, bulkhead, now))
  }

  deregister(agent: number): void {
    this.release((raw) => raw.deregister(agent))
  }

  heartbeat(agent: number, health: number, now: number): void {
    this.call((raw) => raw.heartbeat(agent, health, now))
  }

  setHealth(agent: number, health: number, now: number): void {
    this.call((raw) => raw.setHealth(agent, health, now))
  }

  query(capability: string, range: string, minHealth: number, tags: string[], also: string): number {
    return this.call((raw) => raw.query(capability, range, minHealth, tags, also))
  }

  // The hot calls (find, route, finish, take) without a closure.
  findStates(query: number, now: number): ArrayLike<number> {
    this.usable()
    try {
      return this.raw.findStates(query, now)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  route(query: number, strategy: number, now: number, exclude: readonly number[], refusal?: RouteRefusal): number {
    this.usable()
    try {
      return this.raw.route(query, strategy, now, exclude, refusal)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  finish(agent: number, outcome: number, now: number): boolean {
    this.usable()
    try {
      return this.raw.finish(agent, outcome, now)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  take(limiter: number, n: number, now: number): number {
    this.usable()
    try {
      return this.raw.take(limiter, n, now)
    } catch (e) {
      throw this.failures.fail(e)
    }
  }

  limiter(capacity: number, perSecond: number, now: number): number {
    return this.call((raw) => raw.limiter(capacity, perSecond, now))
  }

  dropLimiter(limiter: number): void {
    this.release((raw) => raw.dropLimiter(limiter))
  }

  backoff(base: number, factor: number, max: number, jitter: number, attempt: number): number {
    return this.call((raw) => raw.backoff(base, factor, max, jitter, attempt))
  }

  tick(now: number): void {
    this.call((raw) => raw.tick(now))
  }

  nextDeadline(): number {
    return this.call((raw) => raw.nextDeadline())
  }

  events(): ArrayLike<number> {
    return this.call((raw) => raw.events())
  }

  breakerState(agent: number, now: number): number {
    return this.call((raw) => raw.breakerState(agent, now))
  }

  agentState(agent: number): ArrayLike<number> {
    return this.call((raw) => raw.agentState(agent))
  }

  similar(name: string, threshold: number): string {
    return this.call((raw) => raw.similar(name, threshold))
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.raw.close()
  }
}

/** A MeshCore over the raw mesh `open` makes (its failure, too, is translated). */
export function adaptMesh(open: () => RawMesh, failures: EngineFailures): MeshCore {
  failures.usable()
  let raw: RawMesh
  try {
    raw = open()
  } catch (e) {
    throw failures.fail(e)
  }
  return new MeshAdapter(raw, failures)
}
