/**
 * Shared pieces of the bad-input tests (one file per public entry point, `test/refuse-*.test.ts`):
 * a table of hostile values, an assertion that a call is refused with a typed error (whether it
 * throws or rejects), and checks that the process, the engine and `Object.prototype` are unharmed.
 */
import { expect } from 'vitest'

import { isOrreryError, Orrery, type ErrorCode } from '../ts/node.js'

/** Values no numeric, string or object option should take silently. */
export const HOSTILE: ReadonlyArray<readonly [label: string, value: unknown]> = [
  ['null', null],
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
  ['-1', -1],
  ['1.5', 1.5],
  ['2**53', 2 ** 53],
  ['a numeric string', '10'],
  ['an empty string', ''],
  ['a huge string', 'x'.repeat(100_000)],
  ['a NUL string', 'a\u0000b'],
  ['a lone surrogate', 'a\uD800'],
  ['__proto__', '__proto__'],
  ['toString', 'toString'],
  ['true', true],
  ['a symbol', Symbol('s')],
  ['a BigInt', 10n],
  ['an array', [1]],
  ['an object', { valueOf: () => 10 }],
  ['a function', () => 10],
]

/** The subset of {@link HOSTILE} that is not a whole number >= 0 a count option could accept. */
export const NOT_A_COUNT = HOSTILE.filter(([label]) => !['a huge string'].includes(label) && label !== '2**53')

/**
 * Asserts that `call` is refused with an `OrreryError` of `code` (thrown at once, or as a rejected
 * Promise), and returns the error for further checks. A TypeError, a RangeError or an untyped
 * rejection fails the test.
 */
export async function expectRefused(call: () => unknown, code: ErrorCode | readonly ErrorCode[]): Promise<Error> {
  const codes = typeof code === 'string' ? [code] : code
  let error: unknown
  try {
    const result = call()
    if (result instanceof Promise) await result
  } catch (err) {
    error = err
  }
  expect(error, 'the call was accepted').toBeDefined()
  if (!codes.some((c) => isOrreryError(error, c))) {
    throw new Error(
      `expected an OrreryError with code ${codes.join(' or ')}, got ${error instanceof Error ? `${error.name} ${(error as { code?: string }).code ?? ''}: ${error.message}` : String(error)}`,
    )
  }
  return error as Error
}

/**
 * Runs `scenario` and returns every error that escaped to the process (what would end it outside
 * a test). A synchronous refusal is expected and ignored: what matters is what escapes afterwards
 * (rxjs rethrows an unhandled error from a setTimeout(0), so the watch waits 30 ms for it).
 */
export async function escaped(scenario: () => unknown): Promise<unknown[]> {
  const caught: unknown[] = []
  const stop = watchEscapes((error) => caught.push(error))
  try {
    try {
      await scenario()
    } catch {
      // refused at the call
    }
    await new Promise((resolve) => setTimeout(resolve, 30))
  } finally {
    stop()
  }
  return caught
}

/**
 * Watches for what would end a Node process; in a page (the browser project) the same errors
 * surface as the window's `error` and `unhandledrejection` events. Returns the function that stops.
 */
function watchEscapes(watch: (error: unknown) => void): () => void {
  const proc = (globalThis as { process?: NodeJS.Process }).process
  if (proc) {
    proc.on('uncaughtException', watch)
    proc.on('unhandledRejection', watch)
    return () => {
      proc.off('uncaughtException', watch)
      proc.off('unhandledRejection', watch)
    }
  }
  const onError = (event: ErrorEvent) => watch(event.error)
  const onRejection = (event: PromiseRejectionEvent) => watch(event.reason)
  addEventListener('error', onError)
  addEventListener('unhandledrejection', onRejection)
  return () => {
    removeEventListener('error', onError)
    removeEventListener('unhandledrejection', onRejection)
  }
}

const PROTOTYPE_KEYS = Object.getOwnPropertyNames(Object.prototype).sort()

/** `Object.prototype` has exactly its own properties: no input polluted it. */
export function expectPrototypeUntouched(): void {
  expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(PROTOTYPE_KEYS)
  expect(({} as Record<string, unknown>)['polluted']).toBeUndefined()
}

/**
 * The engine still works after the refusals: a new Orrery (same engine, same process) publishes
 * and delivers, and a store writes and reads. A poisoned wasm instance fails here.
 */
export async function expectEngineUsable(): Promise<void> {
  const orrery = await Orrery.create()
  const got: unknown[] = []
  const sub = orrery.bus.subscribe('still-alive').subscribe((m) => got.push(m.payload))
  await orrery.bus.publish('still-alive', 1)
  await new Promise((resolve) => setTimeout(resolve, 0))
  expect(got).toEqual([1])
  sub.unsubscribe()
  const store = orrery.openStore()
  const ns = store.namespace<number>('still-alive')
  ns.put('k', 2)
  expect(ns.get('k')?.value).toBe(2)
  store.close()
  orrery.close()
  expectPrototypeUntouched()
}
