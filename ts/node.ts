/**
 * The Node entry. Engine: `native` (the N-API addon) by default, or `wasm` when
 * `ORRERY_ENGINE=wasm` is set or `Orrery.create({ engine: 'wasm' })` asks for it. Where the addon
 * cannot load (another platform), the default falls back to wasm with a warning (`node-loader.ts`).
 */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import { useEngineLoader } from './api.js'
import { useFileReader } from './agents/config.js'
import { usePromClient, type PromClient } from './observe/prom.js'
import { useWorkerThreads, type WorkerThread } from './agents/threads.js'
import { nodeEngineLoader } from './node-loader.js'

export * from './api.js'
export { serveAgents } from './agents/serve.js'

/** A path relative to this file, which sits in `ts/` or `dist/`, one level below the package root. */
const here = (path: string) => fileURLToPath(new URL(path, import.meta.url))

const load = nodeEngineLoader({
  nativeLoader: here('../bindings/node/binding.cjs'),
  wasmGlue: here('../bindings/wasm/pkg/web/orrery_wasm.js'),
  wasmModule: here('../bindings/wasm/pkg/web/orrery_wasm_bg.wasm'),
  // The published package leaves scripts/ out (package.json `files`).
  sourceCheckout: existsSync(here('../scripts/build.sh')),
})

useFileReader((path) => readFile(path, 'utf8'))
// prom-client is an optional peer dependency: loaded only when an Orrery or a mesh is given a registry.
usePromClient(async () => (await import('prom-client')) as unknown as PromClient)

// Replicas on worker threads (mesh.autoscale(type, { worker })).
useWorkerThreads((module, workerData) => new Worker(module, { workerData }) as unknown as WorkerThread)

useEngineLoader((requested) => load(requested, process.env['ORRERY_ENGINE']))
