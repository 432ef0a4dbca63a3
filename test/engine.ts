/** The engine this vitest project runs against (set per project in vitest.config.ts). */
import type { EngineName } from '../ts/api.js'

export const ENGINE = (process.env['ORRERY_ENGINE'] ?? 'native') as EngineName
