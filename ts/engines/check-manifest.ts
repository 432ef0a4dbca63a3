/**
 * The start-up check of an engine against this package's TS: both carry the core's manifest
 * (error codes, defaults, limits, call-block slots, byte layouts), the engine as it was built
 * and TS as generated into `manifest.ts`. A stale engine binary would misread frames or call
 * blocks silently, so a mismatch fails loudly instead.
 */
import { OrreryError } from '../errors.js'
import { MANIFEST_HASH } from './manifest.js'

/** Refuses an engine whose manifest hash (`undefined`: one built before engines had one) differs from the generated file's. */
export function checkManifest(engine: 'native' | 'wasm', reported: string | undefined): void {
  if (reported === MANIFEST_HASH) return
  const built = reported === undefined ? 'before engines reported a manifest' : `from manifest ${reported}`
  throw new OrreryError(
    'ENGINE_MISMATCH',
    `the ${engine} engine was built ${built}, but this TypeScript expects manifest ${MANIFEST_HASH}: rebuild the engine (bash scripts/build.sh ${engine}) or reinstall the package`,
    { details: { engine, engineManifest: reported ?? null, expected: MANIFEST_HASH } },
  )
}
