/**
 * How an engine's failures read, shared by its bus, store and mesh adapters: the native engine
 * only translates what a call threw; the wasm engine also poisons itself after a trap.
 */
import { fromEngine, type OrreryError } from '../errors.js'

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
