/**
 * A property-based run of schemathesis (PyPI, installed by scripts/setup.sh into a venv beside
 * the servers' cache) against the served OpenAPI document of a demo Orrery, every check on:
 * no 5xx, every response as documented (status, content type, schema), bad input refused,
 * authentication not ignored. The event streams (tail, events) never end, so they are left to
 * api.test.ts. Skipped, saying why, where python3 or the venv is missing.
 */
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { ENGINE } from '../engine.js'
import { demo, type Demo, TOKENS } from './demo.js'

const VERSION = '4.32.5'
/** Keeps bodies the server documents as refused (prototype keys) out of generation. */
const HOOKS = join(dirname(fileURLToPath(import.meta.url)), 'schemathesis_hooks.py')
const cache = process.env['ORRERY_SERVER_CACHE'] ?? join(homedir(), '.cache', 'orrery', 'servers')
const st = join(cache, `schemathesis-${VERSION}`, 'bin', 'st')
const missing = existsSync(st) ? undefined : `schemathesis ${VERSION} is not installed at ${st} (bash scripts/setup.sh installs it; it needs python3)`

function run(command: string, args: string[], ms: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    // Its caches (.hypothesis, .schemathesis) go to a directory of its own, not the clone.
    const cwd = mkdtempSync(join(tmpdir(), 'orrery-st-'))
    const child = spawn(command, args, { cwd, env: { ...process.env, NO_COLOR: '1', SCHEMATHESIS_TELEMETRY: 'false', SCHEMATHESIS_HOOKS: HOOKS } })
    let output = ''
    child.stdout.on('data', (b: Buffer) => (output += b.toString()))
    child.stderr.on('data', (b: Buffer) => (output += b.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), ms)
    child.on('close', (code) => {
      clearTimeout(timer)
      rmSync(cwd, { recursive: true, force: true })
      resolve({ code, output })
    })
  })
}

describe.skipIf(missing !== undefined)(`schemathesis against the OpenAPI document (${ENGINE})`, () => {
  if (missing !== undefined) it.skip(missing, () => {})
  let d: Demo
  beforeAll(async () => {
    d = await demo()
  })
  afterAll(async () => {
    await d?.close()
  })

  it('finds no failure with every check on', async () => {
    const { code, output } = await run(
      st,
      [
        'run',
        `${d.server.url}/openapi.json`,
        '-H',
        `Authorization: Bearer ${TOKENS.admin}`,
        '--checks',
        'all',
        '--max-examples',
        '10',
        '--max-time',
        '30',
        '--seed',
        '1',
        '--workers',
        '1',
        '--request-timeout',
        '5',
        '--exclude-path-regex',
        '/(tail|events)$',
      ],
      58_000,
    )
    if (code !== 0) console.log(output)
    expect(code).toBe(0)
  }, 60_000)
})
