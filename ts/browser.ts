/**
 * The browser entry: the WebAssembly engine, fetched next to this module (bundlers such as
 * Vite follow the glue's `new URL('…_bg.wasm', import.meta.url)` and emit the file).
 */
import { useEngineLoader } from './api.js'
import type { Backend } from './backend.js'
import { wasmBackend, type WasmBinding } from './engines/wasm.js'
import { OrreryError } from './errors.js'

export * from './api.js'

let loading: Promise<Backend> | undefined

async function loadWasm(): Promise<Backend> {
  let glue: typeof import('../bindings/wasm/pkg/web/orrery_wasm.js')
  try {
    glue = await import('../bindings/wasm/pkg/web/orrery_wasm.js')
  } catch (cause) {
    throw new OrreryError('ENGINE_NOT_BUILT', 'the wasm engine is not built (bindings/wasm/pkg/web is missing): run `bash scripts/build.sh wasm`', { cause, details: { engine: 'wasm' } })
  }
  await glue.default()
  return wasmBackend(glue as unknown as WasmBinding)
}

useEngineLoader(async (requested) => {
  if (requested === 'native') {
    throw new OrreryError('ENGINE_UNAVAILABLE', 'the native engine runs only in Node; browsers use the wasm engine', { details: { engine: 'native' } })
  }
  loading ??= loadWasm()
  return loading
})
