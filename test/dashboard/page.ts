/**
 * What the dashboard tests share: the dashboard served from its sources by Vite's dev server (so a
 * test sees the code as it is, with no build first), Debian's chromium driven through playwright
 * (the same executable and flags as vitest.config.ts's browser project), every console error and
 * uncaught exception of a page kept, and screenshots into /tmp/dashboard-shots/.
 */
import { mkdirSync } from 'node:fs'
import type { ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'

import { type Browser, chromium, type Page } from 'playwright'
import { createServer, type ViteDevServer } from 'vite'

export const SHOTS = '/tmp/dashboard-shots'
const CHROMIUM = process.env['ORRERY_CHROMIUM'] ?? '/usr/bin/chromium'
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export interface Dashboard {
  url: string
  close(): Promise<void>
}

/** `files`: extra paths the server answers with JSON (snapshots); `api`: where `/v1` is proxied. */
export async function serveDashboard(options: { files?: Record<string, unknown>; api?: string } = {}): Promise<Dashboard> {
  const files = new Map(Object.entries(options.files ?? {}).map(([path, value]) => [path, JSON.stringify(value)]))
  const server: ViteDevServer = await createServer({
    configFile: fileURLToPath(new URL('../../dashboard/vite.config.ts', import.meta.url)),
    server: { port: 0, host: '127.0.0.1', hmr: false, ...(options.api ? { proxy: { '/v1': options.api } } : {}) },
    logLevel: 'error',
    plugins: [
      {
        name: 'dashboard-test-files',
        configureServer(s) {
          s.middlewares.use((req, res: ServerResponse, next) => {
            const body = files.get(req.url ?? '')
            if (body === undefined) return next()
            res.setHeader('content-type', 'application/json')
            res.end(body)
          })
        },
      },
    ],
  })
  await server.listen()
  const { port } = server.httpServer!.address() as AddressInfo
  return { url: `http://127.0.0.1:${port}/`, close: () => server.close() }
}

export const launch = (): Promise<Browser> => chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true })

/** A page whose console errors and uncaught exceptions land in `errors`. */
export async function openPage(browser: Browser, url: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
  const errors: string[] = []
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text())
  })
  page.on('pageerror', (e) => errors.push(`${e.name}: ${e.message}`))
  await page.goto(url)
  return { page, errors }
}

export async function shot(page: Page, name: string): Promise<void> {
  mkdirSync(SHOTS, { recursive: true })
  await page.screenshot({ path: `${SHOTS}/${name}.png` })
}

/** The rows a windowed list holds in the DOM now, and the indexes they show. */
export async function listRows(page: Page, testId: string): Promise<number[]> {
  return page.locator(`[data-testid="${testId}"] .vrow`).evaluateAll((rows) => rows.map((r) => Number((r as HTMLElement).dataset['index'])))
}
