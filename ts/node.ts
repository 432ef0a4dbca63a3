/**
 * The Node entry. Engine: `native` (the N-API addon) by default; `wasm` when
 * `ORRERY_ENGINE=wasm` is set or `Orrery.create({ engine: 'wasm' })` asks for it.
 */
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

import { readFile } from 'node:fs/promises'

import { useEngineLoader } from './api.js'
import { useFileReader } from './config.js'
import { usePromClient, type PromClient } from './metrics.js'
import type { Backend, EngineName } from './backend.js'
import { nativeBackend, type NativeBinding } from './engines/native.js'
import { wasmBackend, type WasmBinding } from './engines/wasm.js'
import { OrreryError } from './errors.js'

export * from './api.js'

const require = createRequire(import.meta.url)

/** Where each engine's loadable file sits, relative to this file (in `ts/` or `dist/`). */
const ENGINE_FILES: Record<EngineName, string> = {
  native: '../bindings/node/binding.cjs',
  wasm: '../bindings/wasm/pkg/node/orrery_wasm.js',
}

const loaded = new Map<EngineName, Backend>()

function load(name: EngineName): Backend {
  const cached = loaded.get(name)
  if (cached) return cached
  const file = fileURLToPath(new URL(ENGINE_FILES[name], import.meta.url))
  if (!existsSync(file)) {
    throw new OrreryError('ENGINE_NOT_BUILT', `the ${name} engine is not built: ${file} is missing. Build it with \`bash scripts/build.sh ${name}\` (or \`npm run build\` for both engines).`, { details: { engine: name, file } })
  }
  const binding: unknown = require(file)
  const backend = name === 'native' ? nativeBackend(binding as NativeBinding) : wasmBackend(binding as WasmBinding)
  loaded.set(name, backend)
  return backend
}

useFileReader((path) => readFile(path, 'utf8'))
// prom-client is an optional peer dependency: loaded only when a mesh is given a registry.
usePromClient(async () => (await import('prom-client')) as unknown as PromClient)

useEngineLoader(async (requested) => {
  const fromEnv = process.env['ORRERY_ENGINE'] || undefined
  const name = requested ?? fromEnv ?? 'native'
  if (name !== 'native' && name !== 'wasm') {
    throw new OrreryError('INVALID_OPTION', `unknown engine ${JSON.stringify(name)}${requested ? '' : ' in ORRERY_ENGINE'}: use native or wasm`, { details: { option: 'engine', value: name } })
  }
  return load(name)
})
