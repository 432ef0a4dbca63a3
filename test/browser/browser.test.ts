// The wasm build in a real browser: Debian's chromium driven by playwright-core (no browser is
// ever downloaded), the page served by Vite as an app embedding Orrery would be.
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import { chromium, type Browser } from 'playwright-core'
import { createServer, type ViteDevServer } from 'vite'
import { afterAll, beforeAll, expect, it } from 'vitest'

import { EXPECTED_TRANSCRIPT_TAIL } from '../smoke/cases.js'

const CHROMIUM = process.env['ORRERY_CHROMIUM'] ?? '/usr/bin/chromium'
const root = fileURLToPath(new URL('../..', import.meta.url))

let server: ViteDevServer
let browser: Browser

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM}: run scripts/setup.sh (installs Debian's chromium)`)
  server = await createServer({ root, configFile: false, logLevel: 'error', server: { host: '127.0.0.1', port: 0, strictPort: false } })
  await server.listen()
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
})

afterAll(async () => {
  await browser?.close()
  await server?.close()
})

it('runs the smoke transcript on the wasm engine in chromium, then poisons on panic', async () => {
  const address = server.httpServer!.address()
  const port = typeof address === 'object' && address ? address.port : 0
  const page = await browser.newPage()
  const consoleErrors: string[] = []
  page.on('pageerror', (e) => consoleErrors.push(e.message))
  await page.goto(`http://127.0.0.1:${port}/test/browser/index.html`)
  await page.waitForFunction(() => window.orreryResult !== undefined, undefined, { timeout: 45_000 })
  const result = await page.evaluate(() => window.orreryResult!)
  expect(result.error).toBeUndefined()
  expect(result.transcript).toEqual(['engine:wasm', ...EXPECTED_TRANSCRIPT_TAIL])
  expect(result.nativeRefused).toBe('ENGINE_UNAVAILABLE')
  expect(result.panic).toEqual(['PANIC', 'ENGINE_POISONED'])
  expect(consoleErrors).toEqual([])
})
