/**
 * A store whose engine fails between a write and its watch delivery (a wasm panic poisons the
 * instance) ends its watches with the engine's error instead of throwing from a microtask,
 * which would end the process. A child process: a wasm panic poisons the module for the whole
 * process (test/fixtures/store-poisoned.mjs).
 */
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { describe, expect, it } from 'vitest'

import { ENGINE } from './engine.js'

it.runIf(ENGINE === 'wasm')('a watch delivery on a poisoned engine ends the watch with ENGINE_POISONED; the process lives', () => {
  const fixture = fileURLToPath(new URL('./fixtures/store-poisoned.mjs', import.meta.url))
  const child = spawnSync(process.execPath, [fixture], { env: { ...process.env, ORRERY_ENGINE: 'wasm' }, encoding: 'utf8', timeout: 15_000 })
  expect(child.status, child.stderr).toBe(0)
  const out = JSON.parse(child.stdout.trim().split('\n').pop()!) as { panic: string; seen: string[]; closed: string }
  expect(out.panic).toBe('PANIC')
  expect(out.seen).toEqual(['error:ENGINE_POISONED'])
  expect(out.closed).toBe('ok')
})

describe.runIf(ENGINE === 'wasm')('watchers without an error callback on a failed engine', () => {
  const fixture = fileURLToPath(new URL('./fixtures/store-poisoned.mjs', import.meta.url))
  const run = (mode: string) => {
    const child = spawnSync(process.execPath, [fixture, mode], { env: { ...process.env, ORRERY_ENGINE: 'wasm' }, encoding: 'utf8', timeout: 15_000 })
    expect(child.status, child.stderr).toBe(0)
    return {
      out: JSON.parse(child.stdout.trim().split('\n').pop()!) as { panic: string; seen: string[]; events: string[]; closed: string },
      stderr: child.stderr,
    }
  }

  it('a watcher with only a next callback does not end the process; the error is printed once', () => {
    const { out, stderr } = run('next-only')
    expect(out).toEqual({ panic: 'PANIC', seen: [], events: [], closed: 'ok' })
    expect(stderr).toContain('a watcher of namespace n threw or failed without an error callback')
    expect(stderr).toContain('ENGINE_POISONED')
  })

  it('the TTL timer meeting a failed engine ends every watch and reports engine-failed once on store.events', () => {
    const { out } = run('ttl')
    expect(out.panic).toBe('PANIC')
    expect(out.seen).toEqual(['error:ENGINE_POISONED'])
    expect(out.events).toEqual(['engine-failed:ENGINE_POISONED', 'watcher-error:ENGINE_POISONED'])
    expect(out.closed).toBe('ok')
  })
})
