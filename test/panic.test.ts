// Its own file: a wasm panic poisons the whole instance, and vitest isolates each file.
import { expect, it } from 'vitest'

import { Orrery } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { panicTranscript } from './smoke/cases.js'

it(`a core panic becomes a PANIC error; then ${ENGINE === 'native' ? 'the process and engine live on' : 'the wasm instance refuses every call'}`, async () => {
  const orrery = await Orrery.create()
  const [first, later] = await panicTranscript(orrery)
  expect(first).toBe('PANIC')
  expect(later).toBe(ENGINE === 'native' ? 'ok' : 'ENGINE_POISONED')
  if (ENGINE === 'wasm') {
    // Every Orrery on the poisoned instance fails the same way, with the panic as its cause.
    const again = await Orrery.create().then(() => 'created', (e: { code: string }) => e.code)
    expect(again).toBe('ENGINE_POISONED')
  } else {
    const fresh = await Orrery.create()
    await expect(fresh.bus.publish('still-alive', 1)).resolves.toHaveProperty('id')
  }
})
