/**
 * The dashboard's build: `vite build --config dashboard/vite.config.ts` writes dist/dashboard/
 * (scripts/build.sh's `dashboard` target). Relative asset paths (base './'), so the same files
 * serve from `orrery serve`'s root, from a sub-path, or opened beside an exported snapshot.
 */
import { fileURLToPath } from 'node:url'

import { defineConfig } from 'vite'

const root = fileURLToPath(new URL('.', import.meta.url))

export default defineConfig({
  root,
  base: './',
  // Preact's JSX through esbuild's own transform: no preset plugin needed.
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: fileURLToPath(new URL('../dist/dashboard', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    // The wasm engine (about 360 KB) stays a file of its own, fetched only in demo mode.
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 1024,
  },
  server: { host: '127.0.0.1' },
  logLevel: 'warn',
})
