/**
 * The pure parts of a salvage (ts/agents/salvage.ts): which ids a process generated, how long a
 * salvage waits for a dead process's held messages to come back, and the inbox terms an agent's
 * registration tells. The salvage itself runs against real brokers in
 * test/transports/registry-processes.test.ts.
 */
import { describe, expect, it } from 'vitest'

import { inboxTermsOf } from '../ts/agents/runner.js'
import { generatedBy, idleBefore } from '../ts/agents/salvage.js'

const PROCESS = '0a1b2c3d4e5f6071'

describe('salvage terms', () => {
  it('knows the ids a process generated, and no other', () => {
    expect(generatedBy('worker-1.0a1b2c3d', PROCESS)).toBe(true)
    expect(generatedBy('worker.0a1b2c3d', PROCESS)).toBe(true)
    expect(generatedBy('worker.0a1b2c3d-2', PROCESS)).toBe(true)
    expect(generatedBy('worker-1.ffffffff', PROCESS)).toBe(false)
    expect(generatedBy('billing', PROCESS)).toBe(false)
    expect(generatedBy('.0a1b2c3d', PROCESS)).toBe(false)
    expect(generatedBy('worker.0a1b2c3d-x', PROCESS)).toBe(false)
    expect(generatedBy('worker.0a1b2c3d.eu', PROCESS)).toBe(false)
  })

  it('an agent tells its lease, its delivery limit and its longest retry delay', () => {
    expect(inboxTermsOf(30_000, 3, undefined)).toEqual({ visibilityMs: 35_000, maxDeliveries: 5, retryDelayMs: 400 })
    expect(inboxTermsOf(1_000, 0, undefined)).toEqual({ visibilityMs: 6_000, maxDeliveries: 2, retryDelayMs: 0 })
    expect(inboxTermsOf(1_000, 10, { base: 1_000, factor: 3 })).toMatchObject({ retryDelayMs: 30_000 })
  })

  it('waits until what the dead process held or delayed comes back, and at least 4 beats and 2 s', () => {
    // Defaults: the 85 s deadline is past the 38.5 s threshold: 4 beats.
    expect(idleBefore(inboxTermsOf(30_000, 3, undefined), 5_000, 85_000)).toBe(20_000)
    // A 6 s lease (threshold 7 s) after a 1 s deadline: 7 - 1 + 0.1 + 2 s.
    expect(idleBefore(inboxTermsOf(1_000, 3, undefined), 100, 1_000)).toBe(8_100)
    // A retry delayed 30 s on the broker comes back after the lease would have.
    expect(idleBefore(inboxTermsOf(1_000, 10, { base: 1_000, factor: 3 }), 100, 1_000)).toBe(31_100)
    expect(idleBefore({ visibilityMs: 1, maxDeliveries: 1, retryDelayMs: 0 }, 10, 60_000)).toBe(2_000)
  })
})
