import { describe, expect, it } from 'vitest'

import { Orrery } from '../ts/node.js'
import { ENGINE, IN_BROWSER } from './engine.js'
import { EXPECTED_TRANSCRIPT_TAIL, smokeTranscript } from './smoke/cases.js'

describe(`smoke (${ENGINE})`, () => {
  it('gives the same transcript on every engine', async () => {
    const transcript = await smokeTranscript(Orrery)
    expect(transcript).toEqual([`engine:${ENGINE}`, ...EXPECTED_TRANSCRIPT_TAIL])
  })

  // A page has one engine: test/browser/entry.test.ts checks that it refuses native.
  it.skipIf(IN_BROWSER)('picks the engine from ORRERY_ENGINE, and an explicit option wins', async () => {
    expect((await Orrery.create()).engine).toBe(ENGINE)
    const other = ENGINE === 'native' ? 'wasm' : 'native'
    expect((await Orrery.create({ engine: other })).engine).toBe(other)
  })

  it('refuses an unknown engine with a typed error', async () => {
    await expect(Orrery.create({ engine: 'gpu' as never })).rejects.toMatchObject({ name: 'OrreryError', code: 'INVALID_OPTION' })
  })

  it('refuses invalid Orrery options', async () => {
    await expect(Orrery.create({ maxMessageBytes: 3.5 })).rejects.toMatchObject({ code: 'INVALID_OPTION' })
  })
})
