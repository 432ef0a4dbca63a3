/**
 * A child Node process running a fixture on the TypeScript under test (its `orrery` is
 * ts/node.ts, never a stale dist/), on this file's engine, printing one JSON line per event.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { basename } from 'node:path'
import { fileURLToPath } from 'node:url'

import { ENGINE } from '../engine.js'

const runSource = fileURLToPath(new URL('../fixtures/run-source.mjs', import.meta.url))

/** A running child: the lines it printed so far, its stderr, how it ended, and a wait for an event. */
export interface Child<L extends { event: string }> {
  readonly proc: ChildProcess
  readonly pid: number
  readonly lines: L[]
  stderr: string
  /** Resolves with how the process ended (its streams closed). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** The first line with this event, waiting up to `ms`; throws with the child's stderr if it ends or the time passes. */
  next(event: string, ms: number): Promise<L>
}

/** Starts `fixture` with `args`; the child is added to `started`, so a test's teardown can kill what is left. */
export function spawnChild<L extends { event: string }>(fixture: string, args: string[], started: Array<Child<L>>): Child<L> {
  const proc = spawn(process.execPath, ['--import', runSource, fixture, ...args], {
    env: { ...process.env, ORRERY_ENGINE: ENGINE },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let out = ''
  // A wait for a line wakes when output comes, not only at its next poll.
  const waiters: Array<() => void> = []
  const child: Child<L> = {
    proc,
    pid: proc.pid!,
    lines: [],
    stderr: '',
    exited: new Promise((resolve) => proc.on('close', (code, signal) => resolve({ code, signal }))),
    async next(event, ms) {
      const deadline = Date.now() + ms
      for (;;) {
        const found = child.lines.find((l) => l.event === event)
        if (found) return found
        if (proc.exitCode !== null || proc.signalCode !== null || Date.now() > deadline)
          throw new Error(
            `process ${proc.pid} (${basename(fixture)} ${args[0] ?? ''}) printed no "${event}" (exit ${proc.exitCode ?? proc.signalCode}); stderr: ${child.stderr.slice(-2000)}`,
          )
        await new Promise<void>((resolve) => {
          waiters.push(resolve)
          setTimeout(resolve, 50)
        })
      }
    },
  }
  proc.stdout!.setEncoding('utf8')
  proc.stdout!.on('data', (chunk: string) => {
    out += chunk
    const complete = out.split('\n')
    out = complete.pop()!
    for (const line of complete) child.lines.push(JSON.parse(line) as L)
    for (const wake of waiters.splice(0)) wake()
  })
  proc.stderr!.setEncoding('utf8')
  proc.stderr!.on('data', (chunk: string) => {
    child.stderr += chunk
  })
  started.push(child)
  return child
}
