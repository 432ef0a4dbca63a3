/**
 * Hooks for Orrery's own tests, kept off the public surface: `ts/api.ts`, `ts/node.ts` and
 * `ts/browser.ts` do not re-export this module, and the package's `exports` map lets no importer
 * reach it. An engine registers its hooks here when it is created; a test looks them up by the
 * engine object (`orrery.backend`, itself internal).
 */
import type { Backend } from './backend.js'
import { OrreryError } from '../errors.js'

interface EngineHooks {
  /** Makes the core panic through the engine's own error path (a wasm panic poisons the instance). */
  panic(message: string): void
}

const hooks = new WeakMap<Backend, EngineHooks>()

/** Called by each engine factory. */
export function registerEngineHooks<B extends Backend>(backend: B, engineHooks: EngineHooks): B {
  hooks.set(backend, engineHooks)
  return backend
}

/** Makes the core of `backend` panic, for tests of panic handling. */
export function panicForTests(backend: Backend, message: string): void {
  const found = hooks.get(backend)
  if (!found) throw new OrreryError('INVALID_ARGUMENT', 'not an engine created by Orrery')
  found.panic(message)
}
