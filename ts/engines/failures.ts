/**
 * How an engine's failures read, shared by its bus, store and mesh adapters: the native engine
 * only translates what a call threw; the wasm engine also poisons itself after a trap.
 */
import { fromEngine, type OrreryError } from '../errors.js'
import type { Guard, Release } from './adapter.js'

export interface EngineFailures {
  /** Throws if the engine can no longer be called (a poisoned wasm instance). */
  usable(): void
  /** Turns whatever a call threw into an OrreryError (and notes a wasm trap). */
  fail(error: unknown): OrreryError
  /** Whether the engine is lost: calls that only let go then do nothing. */
  poisoned(): boolean
}

export const NATIVE_FAILURES: EngineFailures = {
  usable() {},
  fail: fromEngine,
  poisoned: () => false,
}

/** Runs a call, failing as the engine's failures say. */
export function guardOf(failures: EngineFailures): Guard {
  return (call) => {
    failures.usable()
    try {
      return call()
    } catch (e) {
      throw failures.fail(e)
    }
  }
}

/** Runs a call that only lets go: nothing to do on a lost engine (see `Release`). */
export function releaseOf(failures: EngineFailures): Release {
  const guard = guardOf(failures)
  return (call) => {
    if (!failures.poisoned()) guard(call)
  }
}
