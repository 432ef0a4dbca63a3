/**
 * The control surface (`orrery.control()`), on every engine and in a page: listings, publishing,
 * reading and tailing channels, dead letters replayed and discarded, agents paused and resumed,
 * store entries, workflow runs started, signalled and cancelled, live events, and a snapshot that
 * survives JSON.
 */
import { afterEach, describe, expect, it } from 'vitest'

import { Agent, type AgentContext, Orrery, sequence, step, waitFor, workflow } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { errorOf } from './helpers.js'

const opened: Orrery[] = []
afterEach(() => {
  for (const o of opened.splice(0)) o.close()
})

async function open(): Promise<Orrery> {
  const orrery = await Orrery.create()
  opened.push(orrery)
  return orrery
}

const turn = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms))

async function until(check: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await turn(5)
  }
}

class Echo extends Agent<{ prefix: string }> {
  static readonly capabilities = [{ name: 'echo', version: '1.0.0' }]
  seen: string[] = []
  constructor(context: AgentContext<{ prefix: string }>) {
    super(context)
    this.handle('echo', (text: unknown) => `${this.config.prefix ?? ''}${String(text)}`)
    this.on<string>('event', (text) => {
      this.seen.push(text)
    })
  }
}

describe(`control (${ENGINE})`, () => {
  it('lists channels, publishes, reads the retained log in pages and tails new messages', async () => {
    const orrery = await open()
    const control = orrery.control()
    expect(await control.publish('orders', { n: 1 }, { headers: { who: 'ann' }, priority: 'high' })).toMatchObject({ published: true })
    await control.publish('orders', { n: 2 })
    await control.publish('orders', new Uint8Array([1, 2, 3]))
    expect(control.channels().map((c) => c.name)).toContain('orders')
    const view = control.channel('orders')
    expect(view.stats.published).toBe(3)
    expect(view.binding).toBeUndefined()

    const all = await control.messages('orders')
    expect(all.map((m) => m.seq)).toEqual([0, 1, 2])
    expect(all[0]).toMatchObject({ channel: 'orders', payload: { n: 1 }, headers: { who: 'ann' } })
    expect(all[2]!.payload).toEqual({ base64: 'AQID' })
    expect((await control.messages('orders', { from: 1, limit: 1 })).map((m) => m.payload)).toEqual([{ n: 2 }])
    expect(await control.messages('orders', { from: 9 })).toEqual([])

    const tailed: unknown[] = []
    const sub = control.tail('orders').subscribe((m) => tailed.push(m.payload))
    await control.publish('orders', 'later')
    await until(() => tailed.length === 1)
    expect(tailed).toEqual(['later'])
    sub.unsubscribe()

    const earliest: number[] = []
    const sub2 = control.tail('orders', { from: 'earliest' }).subscribe((m) => earliest.push(m.seq))
    await until(() => earliest.length === 4)
    sub2.unsubscribe()

    expect((await errorOf(() => control.channel('nope')))?.code).toBe('UNKNOWN_CHANNEL')
    expect((await errorOf(() => control.messages('nope')))?.code).toBe('UNKNOWN_CHANNEL')
    expect(control.channels().map((c) => c.name)).not.toContain('nope')
    expect((await errorOf(() => control.messages('orders', { limit: 1001 })))?.code).toBe('INVALID_OPTION')
    expect((await errorOf(() => control.messages('orders', { limit: -1 })))?.code).toBe('INVALID_OPTION')
    expect((await errorOf(() => control.messages('orders', { from: 'x' as never })))?.code).toBe('INVALID_OPTION')
    expect((await errorOf(() => control.publish('orders', 1, { bogus: 1 } as never)))?.code).toBe('INVALID_OPTION')
    // Orrery's own channels take nothing from outside (an API write token could otherwise forge registry events).
    const own = await errorOf(() => control.publish('orrery.registry', { forged: true }))
    expect(own?.code).toBe('INVALID_NAME')
    expect(control.channels().map((c) => c.name)).not.toContain('orrery.registry')
    // What is attached must be what it names, refused at once (not at the first look).
    for (const wrong of [{ store: 1 }, { store: {} }, { mesh: 'm' }, { workflows: null }, { metrics: { metrics: 1 } }]) {
      const error = await errorOf(() => orrery.control(wrong as never))
      expect(error?.code).toBe('INVALID_OPTION')
      expect(error?.message).toMatch(/^(store|mesh|workflows|metrics) must be a/)
    }
    expect((await errorOf(() => control.publish('orders', 1, { priority: 'urgent' as never })))?.code).toBe('INVALID_OPTION')
    expect((await errorOf(() => control.publish('orders', 1, { headers: { a: 1 } as never })))?.code).toBe('INVALID_OPTION')
    expect(control.channel('orders').stats.published).toBe(4)
    expect((await errorOf(() => orrery.control({ nope: 1 } as never)))?.code).toBe('INVALID_OPTION')
  })

  it('pages through a long retained log without losing a message', async () => {
    const orrery = await open()
    const control = orrery.control()
    await orrery.bus.publishBatch(Array.from({ length: 5000 }, (_, n) => ({ channel: 'long', payload: n })))
    expect((await control.messages('long', { limit: 10 })).map((m) => m.payload)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    const page = await control.messages('long', { from: 2500, limit: 1000 })
    expect(page.map((m) => m.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => 2500 + i))
    expect((await control.messages('long', { from: 4990 })).map((m) => m.seq)).toEqual([4990, 4991, 4992, 4993, 4994, 4995, 4996, 4997, 4998, 4999])
    // A page holds at most 8 MiB of messages after its first: big messages make shorter pages.
    await orrery.bus.publishBatch(Array.from({ length: 5 }, () => ({ channel: 'big', payload: 'x'.repeat(3 << 20) })))
    expect((await control.messages('big')).map((m) => m.seq)).toEqual([0, 1])
    expect((await control.messages('big', { from: 2 })).map((m) => m.seq)).toEqual([2, 3])
    // The readers left: nothing subscribes to the channel any more.
    await turn()
    expect(control.channel('long').stats.subscribers).toBe(0)
  })

  it('lists groups and dead letters; replays one to its origin channel and discards another', async () => {
    const orrery = await open()
    const control = orrery.control()
    const group = orrery.bus.group('jobs', 'workers')
    const member = group.join().subscribe((d) => d.nack({ deadLetter: `bad ${String(d.message.payload)}` }))
    await orrery.bus.publish('jobs', 'a', { headers: { trace: 't1' } })
    await orrery.bus.publish('jobs', 'b')
    await until(() => group.stats().deadLettered === 2)
    member.unsubscribe()

    expect(control.groups()).toEqual([{ channel: 'jobs', name: 'workers', stats: expect.objectContaining({ deadLettered: 2 }), pending: 0 }])
    expect(control.channels().map((c) => c.name)).toContain('jobs.dead-letter')
    const dead = await control.deadLetters('jobs')
    expect(dead).toHaveLength(2)
    expect(dead[0]).toMatchObject({ channel: 'jobs.dead-letter', payload: 'a', reason: 'bad a', deliveries: 1, originChannel: 'jobs', originSeq: 0 })
    expect(control.overview().deadLetters).toBe(2)
    // The control's own keeper group is not shown, nor counted in its channel's groups or the overview.
    expect(control.groups().map((g) => g.name)).toEqual(['workers'])
    expect(orrery.bus.stats('jobs.dead-letter').groups).toBe(1)
    expect(control.channel('jobs.dead-letter').stats.groups).toBe(0)
    expect(control.channels().find((c) => c.name === 'jobs.dead-letter')?.stats.groups).toBe(0)
    expect(control.channel('jobs').stats.groups).toBe(1)
    expect(control.overview().groups).toBe(1)

    const replayed: Array<{ payload: unknown; headers: Record<string, string> }> = []
    const sub = orrery.bus.subscribe('jobs').subscribe((m) => replayed.push({ payload: m.payload, headers: { ...m.headers } }))
    const { id } = await control.replayDeadLetter('jobs', dead[0]!.seq)
    expect(typeof id).toBe('string')
    await until(() => replayed.length === 1)
    expect(replayed[0]).toEqual({ payload: 'a', headers: { trace: 't1' } })
    sub.unsubscribe()
    expect((await control.deadLetters('jobs')).map((d) => d.payload)).toEqual(['b'])

    expect(await control.discardDeadLetter('jobs', dead[1]!.seq)).toEqual({ discarded: true })
    expect(await control.deadLetters('jobs')).toEqual([])
    expect(control.overview().deadLetters).toBe(0)
    expect((await errorOf(() => control.replayDeadLetter('jobs', dead[1]!.seq)))?.code).toBe('NOT_FOUND')
    expect((await errorOf(() => control.discardDeadLetter('jobs', 99)))?.code).toBe('NOT_FOUND')
    expect((await errorOf(() => control.discardDeadLetter('jobs', -1)))?.code).toBe('INVALID_ARGUMENT')
    // The retained dead-letter log keeps both; only the list forgets the settled ones.
    expect(control.channel('jobs.dead-letter').stats.retained).toBe(2)
  })

  it('shows agents and pauses, resumes, reconfigures, discovers and stops them', async () => {
    const orrery = await open()
    const mesh = await orrery.mesh()
    mesh.define('echo', Echo)
    await mesh.spawn('echo', { id: 'e1', config: { prefix: '>' }, tags: ['blue'] })
    const control = orrery.control({ mesh })
    expect(control.agents()).toEqual([
      expect.objectContaining({ id: 'e1', type: 'echo', state: 'running', capabilities: [{ name: 'echo', version: '1.0.0' }], tags: ['blue'], remote: false }),
    ])
    expect(control.overview().agents).toMatchObject({ total: 1, byState: { running: 1 } })
    expect(control.discover({ capability: 'echo', tags: ['blue'] }).map((a) => a.id)).toEqual(['e1'])
    expect(control.discover('other')).toEqual([])

    const events: unknown[] = []
    const sub = control.events().subscribe((e) => events.push(e))
    expect((await control.pauseAgent('e1')).state).toBe('paused')
    expect(events).toContainEqual(expect.objectContaining({ source: 'mesh', event: expect.objectContaining({ type: 'paused', agent: 'e1' }) }))
    sub.unsubscribe()
    // Routing skips a paused agent; a message sent to it waits in its inbox until it resumes.
    expect((await errorOf(() => mesh.request('echo', 'hi')))?.code).toBe('NO_RESPONDER')
    const agent = mesh.agent('e1')!.agent as Echo
    await orrery.bus.send('e1', 'note', { kind: 'event' })
    await turn(50)
    expect(agent.seen).toEqual([])
    expect((await control.resumeAgent('e1')).state).toBe('running')
    await until(() => agent.seen.length === 1)
    expect((await mesh.request<string>('echo', 'hi')).payload).toBe('>hi')

    await control.reconfigureAgent('e1', { prefix: '#' })
    expect((await mesh.request<string>('echo', 'x')).payload).toBe('#x')
    expect((await errorOf(() => control.pauseAgent('ghost')))?.code).toBe('UNKNOWN_AGENT')
    expect((await errorOf(() => control.agent('ghost')))?.code).toBe('UNKNOWN_AGENT')
    expect((await errorOf(() => control.reconfigureAgent('e1', 5 as never)))?.code).toBe('INVALID_ARGUMENT')
    expect((await control.stopAgent('e1')).state).toBe('stopped')
    expect((await errorOf(() => orrery.control().pauseAgent('e1')))?.code).toBe('UNSUPPORTED')
  })

  it('refuses dead letters of a channel the bus does not know, creating nothing', async () => {
    const orrery = await open()
    const control = orrery.control()
    await orrery.bus.publish('orders', 1)
    const before = orrery.bus.channels()
    expect((await errorOf(() => control.deadLetters('ghost')))?.code).toBe('UNKNOWN_CHANNEL')
    expect((await errorOf(() => control.replayDeadLetter('ghost', 0)))?.code).toBe('UNKNOWN_CHANNEL')
    expect((await errorOf(() => control.discardDeadLetter('ghost', 0)))?.code).toBe('UNKNOWN_CHANNEL')
    // A known channel's dead-letter channel is no origin unless something dead-lettered there.
    expect(await control.deadLetters('orders')).toEqual([])
    expect((await errorOf(() => control.deadLetters('orders.dead-letter')))?.code).toBe('UNKNOWN_CHANNEL')
    expect(orrery.bus.channels().filter((c) => !before.includes(c))).toEqual(['orders.dead-letter'])
    expect(control.groups()).toEqual([])
  })

  it('streams run status changes to every events() subscriber as the runs record them, from one watch', async () => {
    const orrery = await open()
    const wf = await orrery.workflows()
    wf.register('done', (input: unknown) => input)
    wf.define(workflow('gate', sequence(waitFor('go', 'go'), step('done', { fn: 'done' }, { input: '$steps.go' }))))
    const control = orrery.control({ workflows: wf })
    const first: unknown[] = []
    const second: unknown[] = []
    const a = control.events().subscribe((e) => first.push(e))
    const b = control.events().subscribe((e) => second.push(e))
    const one = await wf.start('gate', null, { id: 'one' })
    await one.signal('go', 1)
    const completed = (id: string) => expect.objectContaining({ source: 'run', run: expect.objectContaining({ id, status: 'completed' }) })
    await until(() => first.length > 0 && second.length > 0, 3000)
    expect(first).toContainEqual(completed('one'))
    expect(second).toContainEqual(completed('one'))
    // The other subscriber going leaves the poll to the one still there.
    a.unsubscribe()
    const two = await wf.start('gate', null, { id: 'two' })
    await two.signal('go', 2)
    await until(() => second.some((e) => (e as { run?: { id: string } }).run?.id === 'two'), 3000)
    expect(second).toContainEqual(completed('two'))
    expect(first).not.toContainEqual(completed('two'))
    // Told as the end is recorded, not at a later look: by the time result() resolves.
    const three = await wf.start('gate', null, { id: 'three' })
    await three.signal('go', 3)
    await three.result()
    expect(second).toContainEqual(completed('three'))
    // A run waiting for its signal is told running once, however often its record is written.
    const four = await wf.start('gate', null, { id: 'four' })
    await until(() => second.some((e) => (e as { run?: { id: string } }).run?.id === 'four'), 3000)
    await four.signal('go', 4)
    await four.result()
    const fours = second.filter((e) => (e as { run?: { id: string } }).run?.id === 'four').map((e) => (e as { run: { status: string } }).run.status)
    expect(fours).toEqual(['running', 'completed'])
    b.unsubscribe()
    // Nobody watches: runs go on untold.
    const five = await wf.start('gate', null, { id: 'five' })
    await five.signal('go', 5)
    await five.result()
    expect(second.some((e) => (e as { run?: { id: string } }).run?.id === 'five')).toBe(false)
  })

  it('ends its event streams when its Orrery closes', async () => {
    const orrery = await Orrery.create()
    const mesh = await orrery.mesh()
    const store = orrery.openStore()
    const control = orrery.control({ mesh, workflows: await orrery.workflows({ store, mesh }) })
    let completed = 0
    const sub = control.events().subscribe({ complete: () => completed++ })
    orrery.close()
    expect(completed).toBe(1)
    expect(sub.closed).toBe(true)
    // A stream asked for afterwards ends at once.
    control.events().subscribe({ complete: () => completed++ })
    expect(completed).toBe(2)
  })

  it('ends its tails when it closes, leaving no reader on the channel', async () => {
    const orrery = await open()
    await orrery.bus.publish('orders', 1)
    const control = orrery.control()
    let completed = 0
    const seen: unknown[] = []
    control.tail('orders', { from: 'earliest' }).subscribe({ next: (m) => seen.push(m.payload), complete: () => completed++ })
    await until(() => seen.length === 1)
    expect(control.channel('orders').stats.subscribers).toBe(1)
    control.close()
    expect(completed).toBe(1)
    expect(orrery.bus.stats('orders').subscribers).toBe(0)
  })

  it('reads and writes store entries of the namespaces opened', async () => {
    const orrery = await open()
    const store = orrery.openStore()
    const users = store.namespace('users')
    users.put('ann', { age: 3 })
    users.put('bob', { age: 4 })
    const control = orrery.control({ store })
    expect(control.namespaces()).toEqual([{ name: 'users', keys: 2, mode: 'local' }])
    expect(control.entries('users').map((e) => [e.key, e.value])).toEqual([
      ['ann', { age: 3 }],
      ['bob', { age: 4 }],
    ])
    expect(control.entries('users', { prefix: 'b' }).map((e) => e.key)).toEqual(['bob'])
    expect(control.entries('users', { limit: 1 }).map((e) => e.key)).toEqual(['ann'])
    expect(await control.put('users', 'cy', [1])).toMatchObject({ key: 'cy', value: [1] })
    expect(users.get('cy')?.value).toEqual([1])
    expect(control.entry('users', 'cy').version).toBe(users.get('cy')!.version)
    expect(await control.deleteEntry('users', 'cy')).toEqual({ deleted: true })
    expect(users.get('cy')).toBeUndefined()
    expect((await errorOf(() => control.entry('users', 'cy')))?.code).toBe('NOT_FOUND')
    expect((await errorOf(() => control.entries('nope')))?.code).toBe('UNKNOWN_NAMESPACE')
    expect((await errorOf(() => control.put('nope', 'k', 1)))?.code).toBe('UNKNOWN_NAMESPACE')
    expect(store.list().map((n) => n.name)).toEqual(['users'])
    expect((await errorOf(() => orrery.control().entries('users')))?.code).toBe('UNSUPPORTED')
  })

  it('starts, shows, signals and cancels workflow runs', async () => {
    const orrery = await open()
    const wf = await orrery.workflows()
    wf.register('echo', (input: unknown) => input)
    wf.define(workflow('approve', sequence(waitFor('ok', 'approve'), step('done', { fn: 'echo' }, { input: '$steps.ok' }))))
    const control = orrery.control({ workflows: wf })
    expect(control.definitions()).toEqual([expect.objectContaining({ name: 'approve', definition: expect.objectContaining({ name: 'approve' }) })])

    const started = await control.startRun('approve', null, { id: 'r1' })
    expect(started).toMatchObject({ id: 'r1', definition: 'approve', status: 'running' })
    expect(control.runs().map((r) => r.id)).toEqual(['r1'])
    const detail = control.run('r1')
    expect(detail.state.status).toBe('running')
    expect(detail.history.length).toBeGreaterThan(0)
    expect(detail.historyTotal).toBe(detail.history.length)
    expect(detail.definitionDoc?.name).toBe('approve')
    expect(control.run('r1', { historyLimit: 1 }).history).toHaveLength(1)

    await control.signalRun('r1', 'approve', { by: 'ann' })
    expect(await wf.get('r1')!.result()).toEqual({ by: 'ann' })
    expect(control.runs({ status: 'completed' }).map((r) => r.id)).toEqual(['r1'])

    await control.startRun('approve', null, { id: 'r2' })
    expect((await control.cancelRun('r2')).status).toBe('cancelled')
    expect(control.overview().runs).toMatchObject({ completed: 1, cancelled: 1, running: 0 })

    expect((await errorOf(() => control.run('nope')))?.code).toBe('RUN_NOT_FOUND')
    expect((await errorOf(() => control.startRun('nope')))?.code).toBe('WORKFLOW_NOT_FOUND')
    expect((await errorOf(() => control.signalRun('r1', 5 as never)))?.code).toBe('INVALID_ARGUMENT')
    expect((await errorOf(() => control.runs({ status: 'odd' as never })))?.code).toBe('INVALID_OPTION')
    expect((await errorOf(() => control.startRun('approve', null, { id: 'r1', x: 1 } as never)))?.code).toBe('INVALID_OPTION')
  })

  it('refuses a bad run filter even with no workflows attached', async () => {
    const control = (await open()).control()
    expect(control.runs()).toEqual([])
    expect((await errorOf(() => control.runs({ status: 'odd' as never })))?.code).toBe('INVALID_OPTION')
    expect((await errorOf(() => control.runs({ definition: 5 as never })))?.code).toBe('INVALID_ARGUMENT')
  })

  it('makes a snapshot of everything that survives JSON, and tells health and readiness', async () => {
    const orrery = await open()
    const mesh = await orrery.mesh()
    mesh.define('echo', Echo)
    await mesh.spawn('echo', { id: 'e1', config: { prefix: '' } })
    const store = orrery.openStore()
    store.namespace('kv', { codec: 'msgpack' }).put('k', { b: new Uint8Array([255]) })
    const wf = await orrery.workflows({ store })
    wf.define(workflow('wait', waitFor('w', 'go')))
    await wf.start('wait', null, { id: 'w1' })
    const control = orrery.control({ mesh, store, workflows: wf })
    await control.publish('c', 1)
    const snap = await control.snapshot()
    expect(JSON.parse(JSON.stringify(snap))).toStrictEqual(snap)
    expect(snap.overview).toMatchObject({ engine: ENGINE, agents: { total: 1 }, runs: { running: 1 } })
    expect(snap.runs.map((r) => r.id)).toEqual(['w1'])
    expect(snap.runsTotal).toBe(1)
    expect(snap.namespaces.map((n) => n.name)).toEqual(['kv', 'orrery.workflows'])
    expect(control.entry('kv', 'k').value).toEqual({ b: { base64: '/w==' } })
    expect(control.health()).toEqual({ ok: true })
    expect(control.ready()).toEqual({ ready: true, checks: { engine: true, transports: true, store: true, workflows: true } })
    orrery.close()
    expect(control.ready().ready).toBe(false)
  })
})
