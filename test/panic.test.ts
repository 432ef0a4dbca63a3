// Its own file: a wasm panic poisons the whole instance, and vitest isolates each file.
import { expect, it } from 'vitest'

import * as api from '../ts/node.js'
import { Orrery } from '../ts/node.js'
import { panicForTests } from '../ts/engines/test-hooks.js'
import { ENGINE, IN_BROWSER } from './engine.js'
import { panicTranscript } from './smoke/cases.js'

it('the panic hook is not part of the public surface: not on the engine object, not exported', async () => {
  const orrery = await Orrery.create()
  // Runs before the panic below (tests of a file run in order), so the engine is still healthy.
  expect('panicForTests' in orrery.backend).toBe(false)
  expect(Object.keys(api)).not.toContain('panicForTests')
  // @ts-expect-error the Backend type has no panic hook
  expect(orrery.backend.panicForTests).toBeUndefined()
  // A value that is not an engine is refused with a typed error, not a TypeError.
  expect(() => panicForTests({} as never, 'x')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  orrery.close()
})

// Reads the build's output from disk (node:fs): Node only.
it.skipIf(IN_BROWSER)('the panic hook and the engine object are not in the built declarations', async () => {
  const { readFileSync } = await import('node:fs')
  // What users compile against: the built declarations (scripts/test.sh builds them before vitest).
  const declarations = ['api', 'node', 'browser', 'engines/backend'].map((f) => readFileSync(new URL(`../dist/${f}.d.ts`, import.meta.url), 'utf8')).join('\n')
  expect(declarations).not.toContain('panicForTests')
  // `backend` is @internal, stripped from the declarations: users see only `engine`.
  expect(readFileSync(new URL('../dist/api.d.ts', import.meta.url), 'utf8')).not.toMatch(/readonly backend\b/)
})

it(`a core panic becomes a PANIC error; then ${ENGINE === 'native' ? 'the process and engine live on' : 'the wasm instance refuses every call'}`, async () => {
  const orrery = await Orrery.create()
  const [first, later] = await panicTranscript(orrery)
  expect(first).toBe('PANIC')
  expect(later).toBe(ENGINE === 'native' ? 'ok' : 'ENGINE_POISONED')
  if (ENGINE === 'wasm') {
    // Every Orrery on the poisoned instance fails the same way, with the panic as its cause.
    const again = await Orrery.create().then(
      () => 'created',
      (e: { code: string }) => e.code,
    )
    expect(again).toBe('ENGINE_POISONED')
  } else {
    const fresh = await Orrery.create()
    await expect(fresh.bus.publish('still-alive', 1)).resolves.toHaveProperty('id')
  }
})
