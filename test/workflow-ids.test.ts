/**
 * Run ids: UUIDs of version 7, so they sort by start time; `wf.list()` (in id order) lists runs
 * in the order they started.
 */
import { describe, expect, it } from 'vitest'

import { Orrery, step, workflow } from '../ts/node.js'
import { runId } from '../ts/workflows/ids.js'
import { ENGINE } from './engine.js'

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

describe('run ids', () => {
  it('are UUIDs of version 7 that carry the time in ms', () => {
    const before = Date.now()
    const id = runId()
    expect(id).toMatch(UUID_V7)
    const ms = Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16)
    expect(ms).toBeGreaterThanOrEqual(before)
    expect(ms).toBeLessThanOrEqual(Date.now() + 1)
  })

  it('sort in the order they were made, also many in one millisecond and when the clock steps back', () => {
    const ids: string[] = []
    for (let i = 0; i < 10_000; i++) ids.push(runId(1_700_000_000_000))
    for (let i = 0; i < 100; i++) ids.push(runId(1_600_000_000_000))
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!, `id ${i}`).toBe(true)
    expect(new Set(ids).size).toBe(ids.length)
    for (const id of ids) expect(id).toMatch(UUID_V7)
  })

  it('name generated runs in start order, so list() gives them in the order they started', async () => {
    const orrery = await Orrery.create({ engine: ENGINE })
    const wf = await orrery.workflows()
    wf.register('id', (x: unknown) => x)
    wf.define(workflow('w', step('s', { fn: 'id' }, { input: '$input' })))
    const started: string[] = []
    for (let i = 0; i < 50; i++) started.push((await wf.start('w', i)).id)
    for (const id of started) expect(id).toMatch(UUID_V7)
    expect(wf.list().map((r) => r.id)).toEqual(started)
    wf.close()
    orrery.close()
  })
})
