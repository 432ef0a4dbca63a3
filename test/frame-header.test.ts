import { describe, expect, it } from 'vitest'

import { frameHeader, frameHeaders, FrameWriter } from '../ts/frame.js'

/** One frame carrying `headers` (and a sender, so the header block does not start at a fixed place). */
function frameWith(headers: Record<string, string> | undefined): Uint8Array {
  const w = new FrameWriter()
  w.push(1, { id: 'm-1', sender: 'é-sender', kind: 'command', priority: 'normal', codec: 'raw', timestamp: 1, expiresAt: 0, headers }, new Uint8Array([9]))
  return w.bytes().slice()
}

describe('frame headers', () => {
  it('writes ASCII and non-ASCII header names and values so that they read back the same', () => {
    const long = `${'v'.repeat(70)}é`
    const headers = { 'orrery-capability': 'echo', '': '', ünïcode: 'wert €', 'x-long': long, 'x-ascii-long': 'a'.repeat(300) }
    const frame = frameWith(headers)
    expect(frameHeaders(frame)).toEqual(headers)
  })

  it('reads one header without decoding the rest, as frameHeaders would give it', () => {
    const frame = frameWith({ 'orrery-capability-x': 'no', 'orrery-capabilitY': 'no', 'orrery-capability': 'echo', ünïcode: 'wert', empty: '' })
    expect(frameHeader(frame, 'orrery-capability')).toBe('echo')
    expect(frameHeader(frame, 'ünïcode')).toBe('wert')
    expect(frameHeader(frame, 'empty')).toBe('')
    expect(frameHeader(frame, 'orrery')).toBeUndefined()
    expect(frameHeader(frame, 'absent-ü')).toBeUndefined()
    // Names of the prototype are not headers.
    expect(frameHeader(frame, 'constructor')).toBeUndefined()
    expect(frameHeader(frame, 'tôString')).toBeUndefined()
    expect(frameHeader(frameWith(undefined), 'orrery-capability')).toBeUndefined()
    expect(frameHeader(frameWith({}), 'orrery-capability')).toBeUndefined()
  })

  it('returns the likely value only when the bytes spell it', () => {
    const frame = frameWith({ cap: 'echo', other: 'wért' })
    expect(frameHeader(frame, 'cap', 'echo')).toBe('echo')
    expect(frameHeader(frame, 'cap', 'ech')).toBe('echo')
    expect(frameHeader(frame, 'cap', 'echO')).toBe('echo')
    expect(frameHeader(frame, 'cap', 'echoes')).toBe('echo')
    expect(frameHeader(frame, 'other', 'wért')).toBe('wért')
    expect(frameHeader(frame, 'other', 'w\u00e9rt')).toBe('wért')
    expect(frameHeader(frame, 'absent', 'echo')).toBeUndefined()
  })
})
