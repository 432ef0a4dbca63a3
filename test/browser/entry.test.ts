// What only a page has: the browser project (vitest.config.ts) runs the whole suite in Debian's
// chromium with the browser entry standing in for the Node one; this file checks that entry
// itself, imported the way an app would.
import { firstValueFrom } from 'rxjs'
import { expect, it } from 'vitest'

import { Orrery } from '../../ts/browser.js'
import { escaped } from '../bad-input.js'

it('runs in chromium, where Node is not', () => {
  expect(navigator.userAgent).toMatch(/Chrome\//)
  // Were the page to have a `process`, the suite's Node-only skips would hide nothing.
  expect('process' in globalThis).toBe(false)
})

it('fetches the wasm engine beside its glue and runs on it by default', async () => {
  const orrery = await Orrery.create()
  expect(orrery.engine).toBe('wasm')
  const got = firstValueFrom(orrery.bus.subscribe('page'))
  await orrery.bus.publish('page', { from: 'chromium' })
  expect((await got).payload).toEqual({ from: 'chromium' })
  orrery.close()
})

it('refuses the native engine with a typed ENGINE_UNAVAILABLE', async () => {
  await expect(Orrery.create({ engine: 'native' })).rejects.toMatchObject({ name: 'OrreryError', code: 'ENGINE_UNAVAILABLE', details: { engine: 'native' } })
  // The refusal leaves the wasm engine usable.
  expect((await Orrery.create({ engine: 'wasm' })).engine).toBe('wasm')
})

// vitest prints the caught timer error ("Uncaught Error: from a timer") without failing the run:
// a listener was registered, as Node's process.on('uncaughtException') would be.
it('sees what escapes in a page, so the suite\'s "nothing escapes" checks hold here too', async () => {
  const caught = await escaped(() => {
    setTimeout(() => {
      throw new Error('from a timer')
    }, 0)
    void Promise.reject(new Error('unhandled'))
  })
  expect(caught.map((e) => (e as Error).message).sort()).toEqual(['from a timer', 'unhandled'])
})
