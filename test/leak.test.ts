// The leak suite (benches/leak.mjs) with a small count: 1,000 Orrery + store + mesh create/close
// cycles and 200,000 messages through a group with acks, each engine in a child process of its own,
// against the script's exact bounds (what is still alive after a GC: before close released native
// endpoints, 65,574 bytes of buffers a cycle). Resident size is asserted by the full run
// (npm run bench -- leak). The script covers both engines, so it runs in one project.
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { expect, it } from 'vitest'

import { ENGINE } from './engine.js'

it.skipIf(ENGINE !== 'native')(
  'create/close cycles and acked messages stay within their memory bounds on both engines',
  () => {
    const script = fileURLToPath(new URL('../benches/leak.mjs', import.meta.url))
    const run = spawnSync(process.execPath, ['--expose-gc', script, '--cycles', '1000', '--messages', '200000', '--check'], {
      encoding: 'utf8',
      timeout: 60_000,
    })
    expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0)
    // One line per engine with its figures.
    expect(run.stdout).toMatch(/^native: 1000 cycles/m)
    expect(run.stdout).toMatch(/^wasm: 1000 cycles/m)
  },
  90_000,
)
