import { defineConfig } from 'vitest/config'

// One suite, every engine: the same files run once with the native engine and once with the
// wasm engine in Node; the browser project drives Debian's chromium with the wasm build.
const engineSuite = ['test/**/*.test.ts']
const notEngineSuite = ['test/browser/**', '**/node_modules/**']

export default defineConfig({
  test: {
    testTimeout: 20_000,
    projects: [
      { extends: true, test: { name: 'native', include: engineSuite, exclude: notEngineSuite, env: { ORRERY_ENGINE: 'native' } } },
      { extends: true, test: { name: 'wasm', include: engineSuite, exclude: notEngineSuite, env: { ORRERY_ENGINE: 'wasm' } } },
      { extends: true, test: { name: 'browser', include: ['test/browser/**/*.test.ts'], testTimeout: 60_000, hookTimeout: 60_000 } },
    ],
  },
})
