/** The engine this vitest project runs against, and whether it runs in a browser page (set per project in vitest.config.ts). */
import type { EngineName } from '../ts/api.js'

// A project's `env` reaches process.env in Node; a page has no process, and vitest hands it the
// same values as import.meta.env.
type Env = Record<string, string | undefined>
const env: Env = (globalThis as { process?: { env: Env } }).process?.env ?? (import.meta as unknown as { env: Env }).env

export const ENGINE = (env['ORRERY_ENGINE'] ?? 'native') as EngineName

/** True in the browser project (chromium, the browser entry): tests that need Node skip there, saying why. */
export const IN_BROWSER = env['ORRERY_BROWSER'] === '1'
