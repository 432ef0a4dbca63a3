/**
 * `orrery runs start --wait` against a served Orrery whose workflow takes one run at a time: a run
 * started while another holds the place is queued, and the command waits through the queue until
 * the run has ended, rather than stopping at its first look.
 */
import { afterAll, beforeAll, expect, it } from 'vitest'

import type { Io } from '../../ts/cli/output.js'
import { run } from '../../ts/cli/run.js'
import { type HttpServer, serveHttp } from '../../ts/http/index.js'
import { Orrery, sequence, step, waitFor, type Workflows, workflow } from '../../ts/node.js'
import { ENGINE } from '../engine.js'

const TOKEN = 'runs-wait-token-0001'
let orrery: Orrery
let wf: Workflows
let server: HttpServer

beforeAll(async () => {
  orrery = await Orrery.create()
  wf = await orrery.workflows()
  wf.register('done', (input: unknown) => input)
  wf.define(workflow('gate', sequence(waitFor('go', 'go'), step('done', { fn: 'done' }, { input: '$steps.go' }))), { maxConcurrentRuns: 1 })
  server = await serveHttp(orrery.control({ workflows: wf }), { tokens: { [TOKEN]: ['admin'] } })
})

afterAll(async () => {
  await server?.close()
  orrery?.close()
})

it(`runs start --wait waits for a queued run to end (${ENGINE})`, async () => {
  const first = await wf.start('gate', null, { id: 'first' })
  const out: string[] = []
  const io: Io = { out: (t) => void out.push(t), err: () => {}, interactive: false }
  let code: number | undefined
  const waiting = run(['runs', 'start', 'gate', '{}', '--id', 'second', '--wait', '--json', '--url', server.url, '--token', TOKEN], io).then((c) => {
    code = c
  })
  await expect.poll(() => wf.list().find((r) => r.id === 'second')?.status).toBe('queued')
  await new Promise((resolve) => setTimeout(resolve, 400))
  expect(code).toBeUndefined()
  // The first run ends, the second takes its place and waits for its own signal, then ends.
  await first.signal('go', 1)
  await expect.poll(() => wf.list().find((r) => r.id === 'second')?.status).toBe('running')
  expect(code).toBeUndefined()
  await wf.get('second')!.signal('go', 2)
  await waiting
  expect(code).toBe(0)
  expect(JSON.parse(out.join('\n'))).toMatchObject({ id: 'second', status: 'completed' })
})
