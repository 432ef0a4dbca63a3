/**
 * The browser entry: the WebAssembly engine, fetched next to this module (bundlers such as
 * Vite follow the glue's `new URL('…_bg.wasm', import.meta.url)` and emit the file).
 */
import { useEngineLoader } from './api.js'
import type { Backend } from './engines/backend.js'
import { wasmBackend, type WasmBinding } from './engines/wasm.js'
import { OrreryError } from './errors.js'
import { usePlatform } from './transports/platform.js'

export * from './api.js'

// Transports run as a page's: a nats transport over WebSocket; redis, kafka, durable and nats://
// are refused at create (UNSUPPORTED) before anything loads.
usePlatform('browser')

let loading: Promise<Backend> | undefined

// A browser cannot tell an installed package from a source checkout, so both remedies are named.
const REMEDY = 'from an installed package, reinstall it (npm install orrery); in a source checkout, build it with `bash scripts/build.sh wasm`'

async function loadWasm(): Promise<Backend> {
  let glue: typeof import('../bindings/wasm/pkg/web/orrery_wasm.js')
  try {
    glue = await import('../bindings/wasm/pkg/web/orrery_wasm.js')
  } catch (cause) {
    throw new OrreryError('ENGINE_NOT_BUILT', `the wasm engine's glue (bindings/wasm/pkg/web/orrery_wasm.js) could not be imported: ${REMEDY}`, {
      cause,
      details: { engine: 'wasm' },
    })
  }
  try {
    await glue.default()
  } catch (cause) {
    // The glue fetches orrery_wasm_bg.wasm beside itself: a 404 or a bundler that did not emit it.
    throw new OrreryError(
      'ENGINE_UNAVAILABLE',
      `the wasm engine's module (orrery_wasm_bg.wasm, beside its glue) could not be fetched or instantiated: ${cause instanceof Error ? cause.message : String(cause)}. Check that your bundler emits it; ${REMEDY}`,
      { cause, details: { engine: 'wasm' } },
    )
  }
  return wasmBackend(glue as unknown as WasmBinding)
}

useEngineLoader(async (requested) => {
  if (requested === 'native') {
    throw new OrreryError('ENGINE_UNAVAILABLE', 'the native engine runs only in Node; browsers use the wasm engine', { details: { engine: 'native' } })
  }
  // A failed load is not kept: the next create() tries again (the fetch may have been transient).
  loading ??= loadWasm().catch((e: unknown) => {
    loading = undefined
    throw e
  })
  return loading
})
