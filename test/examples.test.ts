/**
 * Every program under examples/ (the code of README.md and docs/) runs on this project's engine
 * and exits with code 0: the examples assert what they show, so running them is a test. They are
 * compiled once with tsconfig.examples.json (strict) and import the built package by its name.
 */
import { execFile } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { beforeAll, describe, expect, it } from 'vitest'

import { ENGINE } from './engine.js'

const run = promisify(execFile)
// Node 20 has a global WebSocket only with this flag (examples/nats-websocket.ts; 22 and later have it).
const NODE_FLAGS = Number(process.versions.node.split('.')[0]) < 22 ? ['--experimental-websocket'] : []
const ROOT = join(import.meta.dirname, '..')
// One output directory per engine: the two projects may compile at the same time.
const OUT = join('target', 'examples', ENGINE)
const examples = readdirSync(join(ROOT, 'examples'))
  .filter((f) => f.endsWith('.ts'))
  .sort()

async function node(args: string[]): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [...NODE_FLAGS, ...args], {
      cwd: ROOT,
      env: { ...process.env, ORRERY_ENGINE: ENGINE },
      timeout: 60_000,
    })
    return { code: 0, output: stdout + stderr }
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string; signal?: string }
    return { code: typeof e.code === 'number' ? e.code : -1, output: `${e.signal ?? ''}${e.stdout ?? ''}${e.stderr ?? ''}` }
  }
}

describe(`examples (${ENGINE})`, () => {
  beforeAll(async () => {
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
    const result = await node([tsc, '-p', 'tsconfig.examples.json', '--outDir', OUT, '--tsBuildInfoFile', join(OUT, '.tsbuildinfo')])
    if (result.code !== 0) throw new Error(`the examples do not compile:\n${result.output}`)
  }, 120_000)

  it('has examples', () => {
    expect(examples).toContain('quickstart.ts')
  })

  for (const file of examples) {
    it(`${file} runs and exits cleanly`, async () => {
      const result = await node([join(OUT, file.replace(/\.ts$/, '.js'))])
      expect(result.output.trim() === '' || result.code !== 0 ? result.output : '', file).toBe('')
      expect(result.code).toBe(0)
    }, 60_000)
  }

  it('agents.mjs (the main job, npm start) runs', async () => {
    const result = await node(['examples/agents.mjs', ENGINE])
    expect(result.code, result.output).toBe(0)
  }, 60_000)

  // The workflow half of `npm start`: a durable store on disk, so the native engine only.
  it.skipIf(ENGINE !== 'native')(
    "workflow-crash-demo.mjs (the main job's crash and resume) runs",
    async () => {
      const result = await node(['examples/workflow-crash-demo.mjs'])
      expect(result.code, result.output).toBe(0)
      expect(result.output).toContain('compensated')
    },
    60_000,
  )
})
