// The dashboard offline: a Control's snapshot written to a file, which the dashboard opens
// read-only (docs/dashboard.md). Run by test/examples.test.ts on both engines.
import assert from 'node:assert/strict'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Orrery, sequence, step, waitFor, workflow } from 'orrery'

const orrery = await Orrery.create()
const wf = await orrery.workflows()
wf.register('draft', (topic: string) => `a note on ${topic}`)
const note = workflow('note', sequence(step('draft', { fn: 'draft' }, { input: '$input' }), waitFor('review', 'approve')))
wf.define(note)
const started = await wf.start(note, 'snapshots', { id: 'note-1' })
while (started.state().waiting.length === 0) await new Promise((resolve) => setTimeout(resolve, 5)) // drafted, waiting for review

// #region export
const control = orrery.control({ workflows: wf })
const snapshot = await control.snapshot() // plain JSON: agents, channels, dead letters, runs with their histories
const file = join(tmpdir(), `orrery-snapshot-${process.pid}.json`)
writeFileSync(file, JSON.stringify(snapshot))
// Open it from the dashboard's start page (or drop it there), or serve it and open ?snapshot=<its URL>.
// #endregion

const read = JSON.parse(readFileSync(file, 'utf8')) as typeof snapshot
const run = read.runs.find((r) => r.id === 'note-1')
assert.equal(run?.definitionDoc?.name, 'note')
assert.deepEqual(run?.state.waiting, [{ node: 'review', signal: 'approve' }])
assert.equal(run?.history[0]?.type, 'started')
rmSync(file)
control.close()
orrery.close()
