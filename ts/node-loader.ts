/**
 * How the Node entry finds and loads an engine. Unless the caller names one, the native addon is
 * tried first; when it cannot load here (another platform, a missing file, a load error) the wasm
 * engine runs instead, after one warning. The files are passed in, so the tests can point the
 * loader at a directory where the addon cannot load.
 */
import { existsSync, readdirSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { basename, dirname } from 'node:path'
import { pathToFileURL } from 'node:url'

import type { Backend, EngineName } from './engines/backend.js'
import { nativeBackend, type NativeBinding } from './engines/native.js'
import { wasmBackend, type WasmBinding } from './engines/wasm.js'
import { OrreryError } from './errors.js'

type WasmGlue = typeof import('../bindings/wasm/pkg/web/orrery_wasm.js')

export interface NodeEngineFiles {
  /** napi-rs's generated loader (`bindings/node/binding.cjs`); the `orrery.<triple>.node` files sit beside it. */
  nativeLoader: string
  /** The wasm-bindgen `web` glue (an ES module) and the WebAssembly module it is initialised with. */
  wasmGlue: string
  wasmModule: string
  /** A source checkout (scripts/build.sh beside the package root): a missing engine is built, not reinstalled. */
  sourceCheckout: boolean
}

/** What `process.emitWarning` is given when the native engine is replaced (a test collects it instead). */
export type Warn = (message: string, code: string) => void

/** The warning's code, for `process.on('warning')` filters. */
export const NATIVE_FALLBACK_WARNING = 'ORRERY_NATIVE_UNAVAILABLE'

const SILENCE = "set ORRERY_ENGINE=wasm (or pass { engine: 'wasm' }) to choose it and silence this warning"
const USE_WASM = "the wasm engine runs everywhere: set ORRERY_ENGINE=wasm or pass { engine: 'wasm' }"

/** Why the native addon did not load. */
interface NativeFailure {
  /** `missing`: no loader or no addon at all (not built, or an incomplete package); `platform`: none for this OS and CPU; `load`: the addon is there and failed. */
  kind: 'missing' | 'platform' | 'load'
  reason: string
  cause?: unknown
}

const platform = `${process.platform}-${process.arch}`

/**
 * The engine loader for these files: `(requested, fromEnv)` gives the Backend for an explicit
 * request (`Orrery.create({ engine })`), else for `ORRERY_ENGINE`, else native with the wasm
 * fallback. Each engine loads once per loader.
 */
export function nodeEngineLoader(
  files: NodeEngineFiles,
  warn: Warn = (message, code) => process.emitWarning(message, { code }),
): (requested: EngineName | undefined, fromEnv: string | undefined) => Promise<Backend> {
  const require = createRequire(import.meta.url)
  let native: Backend | NativeFailure | undefined
  let wasm: Promise<Backend> | undefined
  let warned = false

  const incomplete = (engine: EngineName, file: string, what: string) =>
    files.sourceCheckout
      ? `the ${engine} engine is not built: ${what}. Build it with \`bash scripts/build.sh ${engine}\` (or \`npm run build\` for both engines)`
      : `the orrery package is incomplete: ${what}. Reinstall it (npm install orrery); ${basename(file)} ships in the package`

  function loadNative(): Backend | NativeFailure {
    const dir = dirname(files.nativeLoader)
    const addons = existsSync(dir) ? readdirSync(dir).filter((f) => /^orrery\..+\.node$/.test(f)) : []
    if (!existsSync(files.nativeLoader) || addons.length === 0) {
      const what = existsSync(files.nativeLoader) ? `${dir} has no orrery.*.node addon` : `${files.nativeLoader} is missing`
      return { kind: 'missing', reason: incomplete('native', files.nativeLoader, what) }
    }
    try {
      return nativeBackend(require(files.nativeLoader) as NativeBinding)
    } catch (e) {
      // napi-rs's loader wraps what each attempt threw in an error advising to delete the
      // lockfile, which is wrong here (this package has no optional platform packages). The
      // innermost cause is its first attempt: the addon file beside it.
      let first: unknown = e
      while (first instanceof Error && first.cause instanceof Error) first = first.cause
      const detail = first instanceof Error ? first.message : String(first)
      // The wrapper's chain holds rebuilt errors (message only, `cause: null`): keep just the message.
      const cause = first === e ? e : new Error(detail)
      const carried = addons.map((f) => f.slice('orrery.'.length, -'.node'.length))
      const looked = /Cannot find module '\.\/(orrery\.[^']+\.node)'/.exec(detail)?.[1]
      if (looked || !carried.some((t) => t.startsWith(`${platform}-`) || t === platform)) {
        return {
          kind: 'platform',
          reason: `this package has no native engine for ${platform}${looked ? ` (looked for ${looked})` : ''}; it carries ${carried.join(', ')}`,
          cause,
        }
      }
      return { kind: 'load', reason: `the native engine failed to load on ${platform}: ${detail}`, cause }
    }
  }

  async function loadWasm(): Promise<Backend> {
    for (const file of [files.wasmGlue, files.wasmModule]) {
      if (!existsSync(file)) throw new OrreryError('ENGINE_NOT_BUILT', incomplete('wasm', file, `${file} is missing`), { details: { engine: 'wasm', file } })
    }
    const glue = (await import(pathToFileURL(files.wasmGlue).href)) as WasmGlue
    // The `web` glue fetches its .wasm by URL; Node has the bytes on disk, next to it. One
    // build serves browsers and Node, so the package carries the module once (363 KB).
    await glue.default({ module_or_path: await readFile(files.wasmModule) })
    return wasmBackend(glue as unknown as WasmBinding)
  }

  const wasmEngine = () => {
    wasm ??= loadWasm().catch((e: unknown) => {
      wasm = undefined
      throw e
    })
    return wasm
  }

  return async (requested, fromEnv) => {
    const name = requested ?? (fromEnv || undefined)
    if (name !== undefined && name !== 'native' && name !== 'wasm') {
      throw new OrreryError('INVALID_OPTION', `unknown engine ${JSON.stringify(name)}${requested ? '' : ' in ORRERY_ENGINE'}: use native or wasm`, {
        details: { option: 'engine', value: name },
      })
    }
    if (name === 'wasm') return wasmEngine()
    native ??= loadNative()
    if (!('kind' in native)) return native
    const failure = native
    if (name === 'native') {
      const code = failure.kind === 'missing' ? 'ENGINE_NOT_BUILT' : 'ENGINE_UNAVAILABLE'
      throw new OrreryError(code, `${failure.reason}. ${USE_WASM}`, { cause: failure.cause, details: { engine: 'native', platform } })
    }
    if (!warned) {
      warned = true
      warn(
        `Orrery: ${failure.reason}. Running on the wasm engine instead (same API; no durable stores, no sharing across worker threads); ${SILENCE}.`,
        NATIVE_FALLBACK_WARNING,
      )
    }
    return wasmEngine()
  }
}
