/**
 * History.batchAck (ts/workflows/history.ts): the acknowledgement of the one write that carries a
 * run's events of a macrotask, which a signal given where its shared run is driven follows. It
 * must say whether those events were recorded: resolved when their write was, rejected with that
 * write's refusal when it was refused, whatever the run's other writes did. On a namespace whose
 * writes answer as a broker's do (Promises, some refused), so the outcomes are the test's to choose.
 */
import { describe, expect, it } from 'vitest'

import { OrreryError } from '../ts/errors.js'
import { EVENT, type EventTuple, History, type HistoryNamespace } from '../ts/workflows/history.js'
import { ENGINE } from './engine.js'

/** A namespace whose writes resolve with the next revision, except those to keys in `refused` (VERSION_CONFLICT). */
function brokerLike(refused: Set<string>): HistoryNamespace & { written: string[] } {
  let revision = 0
  const written: string[] = []
  const answer = (key: string): Promise<number> =>
    refused.has(key)
      ? Promise.reject(new OrreryError('VERSION_CONFLICT', `${key} was written by another owner`, { details: { key } }))
      : Promise.resolve(++revision).then((version) => {
          written.push(key)
          return version
        })
  return {
    written,
    put: (key) => answer(key),
    delete: (key) => answer(key),
    purge: (key) => answer(key),
    get: () => undefined,
    entries: () => [],
    keys: () => [],
  }
}

const signal = (seq: number, payload: number): EventTuple => [EVENT.signal!, seq, 0, 'go', payload] as unknown as EventTuple
const settled = (p: Promise<unknown>) =>
  p.then(
    (value) => ({ ok: true, value }),
    (error: unknown) => ({ ok: false, code: (error as OrreryError).code }),
  )

describe(`a run's batch acknowledgement (${ENGINE})`, () => {
  it('resolves once the write carrying the events is acknowledged, even when a later write of the run is refused', async () => {
    const ns = brokerLike(new Set(['run/r/e/0000000002']))
    const history = new History(ns, true, 1 << 20)
    history.append('r', signal(1, 1))
    const first = history.batchAck('r')
    history.flush()
    history.append('r', signal(2, 2))
    const second = history.batchAck('r')
    const all = history.recorded('r')
    history.flush()
    expect(await settled(first)).toEqual({ ok: true, value: 1 })
    expect(await settled(second)).toEqual({ ok: false, code: 'VERSION_CONFLICT' })
    // The run-wide acknowledgement says only that something failed; the batch's says what.
    expect(await settled(Promise.resolve(all))).toEqual({ ok: false, code: 'VERSION_CONFLICT' })
    expect(ns.written).toEqual(['run/r/e/0000000001'])
  })

  it("is one per run and macrotask, covering every event appended in it; another run's refusal is not its", async () => {
    const ns = brokerLike(new Set(['run/other/e/0000000001']))
    const history = new History(ns, true, 1 << 20)
    history.append('r', signal(1, 1))
    const a = history.batchAck('r')
    history.append('r', signal(2, 2))
    const b = history.batchAck('r')
    history.append('other', signal(1, 1))
    const theirs = history.batchAck('other')
    expect(b).toBe(a)
    history.flush()
    expect(await settled(a)).toMatchObject({ ok: true })
    expect(await settled(theirs)).toEqual({ ok: false, code: 'VERSION_CONFLICT' })
    // A run whose history failed writes nothing more: its next batch is refused at once.
    history.append('other', signal(2, 2))
    expect(await settled(history.batchAck('other'))).toEqual({ ok: false, code: 'VERSION_CONFLICT' })
    history.flush()
    expect(ns.written).toEqual(['run/r/e/0000000001'])
  })
})
