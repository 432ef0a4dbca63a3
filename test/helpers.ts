/** Shared test helpers: an Orrery on a fake clock, and collecting what a stream delivers. */
import type { Observable } from 'rxjs'

import { Orrery } from '../ts/node.js'

export interface Clocked {
  orrery: Orrery
  bus: Orrery['bus']
  /** Moves the fake clock forward and fires what is due (deliveries, timeouts). */
  advance(ms: number): void
  now(): number
}

/** An Orrery whose clock only moves when the test says so. */
export async function clocked(options: { maxMessageBytes?: number } = {}): Promise<Clocked> {
  let now = 1_000
  const orrery = await Orrery.create({ ...options, clock: () => now })
  return {
    orrery,
    bus: orrery.bus,
    advance(ms: number) {
      now += ms
      orrery.bus.flush()
    },
    now: () => now,
  }
}

/** Subscribes and pushes every item into the returned array. */
export function collect<T>(source: Observable<T>): T[] {
  const got: T[] = []
  source.subscribe((item) => got.push(item))
  return got
}

/** Lets queued microtasks (deliveries) run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await Promise.resolve()
}

/** The error a promise or a call ends with (undefined when it succeeds). */
export async function errorOf(fn: () => unknown): Promise<{ name?: string; code?: string; message?: string; details?: Record<string, unknown> } | undefined> {
  try {
    await fn()
    return undefined
  } catch (err) {
    return err as { code?: string }
  }
}

/** Whether two byte arrays hold the same bytes: a deep equality over millions of elements takes seconds, and a page has no Buffer. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

const tempDirs: string[] = []

/** A fresh directory under the OS's temp dir (Node only), removed by {@link removeTempDirs}. */
export async function tempDir(prefix: string): Promise<string> {
  const { mkdtempSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), prefix))
  tempDirs.push(dir)
  return dir
}

/** Removes every directory {@link tempDir} made (once what was open in them is closed). */
export async function removeTempDirs(): Promise<void> {
  if (tempDirs.length === 0) return
  const { rmSync } = await import('node:fs')
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true })
}

/** A real macrotask (fake timers leave setImmediate and MessageChannel alone): a run's events of the one before are written by then. */
export function macrotask(): Promise<void> {
  if (typeof setImmediate === 'function') return new Promise((resolve) => setImmediate(resolve))
  return new Promise((resolve) => {
    const channel = new MessageChannel()
    channel.port1.onmessage = () => {
      channel.port1.close()
      resolve()
    }
    channel.port2.postMessage(undefined)
  })
}
