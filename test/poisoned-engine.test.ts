// A panic poisons a wasm module for its whole process, so the scenario runs in a child process
// (test/fixtures/poisoned-engine.mjs, on this project's engine).
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { expect, it } from 'vitest'

import { ENGINE } from './engine.js'

interface Outcome {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** ms from the child's last line to its exit: it must exit on its own, not be killed. */
  lingered: number
}

function run(fixture: string, limit: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [fixture], { env: { ...process.env, ORRERY_ENGINE: ENGINE }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let lastLine = Date.now()
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
      lastLine = Date.now()
    })
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    const killer = setTimeout(() => child.kill('SIGKILL'), limit)
    child.on('exit', (code, signal) => {
      clearTimeout(killer)
      resolve({ code, signal, stdout, stderr, lingered: Date.now() - lastLine })
    })
  })
}

it('a panic with a due bus deadline, a store TTL and a beating mesh: nothing crashes, close and shutdown resolve, the process exits on its own', async () => {
  const fixture = fileURLToPath(new URL('./fixtures/poisoned-engine.mjs', import.meta.url))
  const out = await run(fixture, 15_000)
  const context = `exit ${out.code} ${out.signal}\nstdout: ${out.stdout}\nstderr: ${out.stderr.slice(-2000)}`
  expect(out.signal, context).toBeNull()
  expect(out.code, context).toBe(0)
  const report = JSON.parse(out.stdout.trim().split('\n').at(-1)!) as {
    engine: string
    panic: string
    closed: Record<string, string>
    seen: { bus: string[]; mesh: string[] }
  }
  expect(report.engine).toBe(ENGINE)
  expect(report.panic).toBe('PANIC')
  expect(report.closed).toEqual({ mesh: 'ok', store: 'ok', orrery: 'ok' })
  if (ENGINE === 'wasm') {
    // The bus's lease timer and the registry's liveness timer each hit the poisoned engine once,
    // report it, and arm nothing more.
    expect(report.seen.bus).toEqual(['engine-failed:ENGINE_POISONED'])
    expect(report.seen.mesh.filter((e) => e.startsWith('engine-failed'))).toEqual(['engine-failed:ENGINE_POISONED'])
  } else {
    // A native panic is caught per call: the engine lives on and no timer sees a failure.
    expect(report.seen.bus).toEqual([])
    expect(report.seen.mesh).toContain('stopped')
  }
  // Nothing was left armed: the child ended within moments of its last line.
  expect(out.lingered, context).toBeLessThan(2_000)
}, 30_000)
