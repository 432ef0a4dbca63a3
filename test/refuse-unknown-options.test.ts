/**
 * A misspelt option is an error, never a silent default: every options object of the bus, the
 * store, workflows and `Orrery.create` refuses a field it does not know with `INVALID_OPTION`,
 * naming the field and the one it most likely meant, before anything is created, published or
 * written. The same on both engines.
 */
import { describe, expect, it } from 'vitest'

import { Agent, isOrreryError, Orrery, type OrreryError } from '../ts/node.js'
import { expectEngineUsable } from './bad-input.js'
import { ENGINE } from './engine.js'

/** Runs `call` (sync or async) and returns the OrreryError it failed with. */
async function refusal(call: () => unknown): Promise<OrreryError> {
  try {
    await call()
  } catch (error) {
    if (isOrreryError(error)) return error
    throw error
  }
  throw new Error('the call was not refused')
}

/** Checks that `call` is refused for `field`, suggesting `meant` (or listing the known fields). */
async function expectUnknown(call: () => unknown, field: string, meant?: string): Promise<void> {
  const error = await refusal(call)
  expect(error.code).toBe('INVALID_OPTION')
  expect(error.details['option']).toBe(field)
  expect(error.message).toContain(field)
  if (meant === undefined) expect(error.message).toContain('known:')
  else expect(error.message).toContain(`did you mean "${meant}"?`)
}

describe(`unknown option fields are refused (${ENGINE})`, () => {
  it('Orrery.create and openStore', async () => {
    await expectUnknown(() => Orrery.create({ maxMesageBytes: 5 } as never), 'maxMesageBytes', 'maxMessageBytes')
    await expectUnknown(() => Orrery.create({ engin: 'native' } as never), 'engin', 'engine')
    await expectUnknown(() => Orrery.openStore({ histroy: 3 } as never), 'histroy', 'history')
    await expectUnknown(() => Orrery.openStore({ zzz: 1 } as never), 'zzz')
    // The options openStore takes beside the store's are known to it, and only to it.
    const store = await Orrery.openStore({ engine: ENGINE, clock: Date.now })
    store.close()
    const orrery = await Orrery.create()
    await expectUnknown(() => orrery.openStore({ engine: ENGINE } as never), 'engine')
    orrery.close()
  })

  it('the bus: channels, publishes, requests, subscriptions, groups, topics', async () => {
    const orrery = await Orrery.create()
    const { bus } = orrery
    await expectUnknown(() => bus.channel('c', { retension: { maxCount: 1 } } as never), 'retension', 'retention')
    await expectUnknown(() => bus.channel('c', { retention: { maxCont: 1 } } as never), 'retention.maxCont', 'maxCount')
    await expectUnknown(() => bus.publish('c', 1, { priorty: 'high' } as never), 'priorty', 'priority')
    await expectUnknown(() => bus.publish('c', 1, { timeout: 5 } as never), 'timeout')
    await expectUnknown(() => bus.send('a1', 1, { ttL: 5 } as never), 'ttL', 'ttl')
    await expectUnknown(() => bus.request('c', 1, { timout: 5 } as never), 'timout', 'timeout')
    await expectUnknown(() => bus.subscribe('c', { form: 'earliest' } as never), 'form', 'from')
    await expectUnknown(() => bus.respond('c', () => 1, { groop: 'g' } as never), 'groop', 'group')
    await expectUnknown(() => bus.group('c', 'g', { visibilty: 5 } as never), 'visibilty', 'visibilityTimeout')
    const group = bus.group('c', 'g2')
    await expectUnknown(() => group.join({ maxInflight: 2 } as never), 'maxInflight', 'maxInFlight')
    await expectUnknown(() => group.consume(() => {}, { retrydelay: 2 } as never), 'retrydelay', 'retryDelay')
    await expectUnknown(() => group.claim(0, { minidle: 2 } as never), 'minidle', 'minIdle')
    // Nothing was made or published by the refused calls.
    expect(bus.stats('c')).toMatchObject({ published: 0, subscribers: 0, groups: 1 })
    expect(group.stats().members).toBe(0)
    // A delivery's nack checks its options too, and stays unsettled when refused.
    await bus.publish('c', 'x')
    const deliveries = group.join()
    const settled = await new Promise<boolean>((resolve) => {
      const sub = deliveries.subscribe((d) => {
        let refused = false
        try {
          d.nack({ dealy: 5 } as never)
        } catch (error) {
          refused = isOrreryError(error, 'INVALID_OPTION') && error.message.includes('did you mean "delay"?')
        }
        d.ack()
        sub.unsubscribe()
        resolve(refused)
      })
    })
    expect(settled).toBe(true)
    orrery.close()
  })

  it('the store: namespaces, writes, watches, transactions', async () => {
    const store = await Orrery.openStore()
    const ns = store.namespace<number>('n')
    await expectUnknown(() => store.namespace('m', { codek: 'json' } as never), 'codek', 'codec')
    await expectUnknown(() => ns.put('k', 1, { ifversion: 0 } as never), 'ifversion', 'ifVersion')
    await expectUnknown(() => ns.delete('k', { writter: 'w' } as never), 'writter', 'writer')
    await expectUnknown(() => ns.update('k', () => 1, { tll: 5 } as never), 'tll', 'ttl')
    await expectUnknown(() => ns.watch('k', { form: 'now' } as never), 'form', 'from')
    await expectUnknown(() => store.transaction({ writer: 'w', extra: 1 } as never), 'extra')
    const txn = store.transaction()
    await expectUnknown(() => txn.put(ns, 'k', 1, { ifversion: 0 } as never), 'ifversion', 'ifVersion')
    // Nothing was written.
    expect(ns.get('k')).toBeUndefined()
    store.close()
  })

  it('workflows: open, define, start, list', async () => {
    const orrery = await Orrery.create()
    await expectUnknown(() => orrery.workflows({ resum: false } as never), 'resum', 'resume')
    const wf = await orrery.workflows()
    await expectUnknown(() => wf.register('double', { inptu: undefined } as never, ((x: unknown) => x) as never), 'schemas.inptu', 'input')
    await expectUnknown(() => wf.start('none', 1, { timeout: 5 } as never), 'timeout', 'timeoutMs')
    await expectUnknown(() => wf.list({ state: 'running' } as never), 'filter.state', 'status')
    expect(wf.list()).toEqual([])
    orrery.close()
  })

  it('the mesh: its options, spawns, supervisors, autoscaling, routing and finding', async () => {
    const orrery = await Orrery.create()
    await expectUnknown(() => orrery.mesh({ heartbeet: {} } as never), 'heartbeet', 'heartbeat')
    await expectUnknown(() => orrery.mesh({ heartbeat: { intreval: 5 } } as never), 'heartbeat.intreval', 'interval')
    await expectUnknown(() => orrery.mesh({ breaker: { cooldown: 5 } } as never), 'breaker.cooldown', 'coolDown')
    const mesh = await orrery.mesh()
    mesh.define('worker', () => new (class extends Agent {})(undefined as never))
    await expectUnknown(() => mesh.spawn('worker', { replica: 2 } as never), 'replica', 'replicas')
    await expectUnknown(() => mesh.spawn('worker', { retry: { attempt: 2 } } as never), 'retry.attempt', 'attempts')
    await expectUnknown(() => mesh.supervise({ children: [{ type: 'worker', replics: 2 }] } as never), 'children[0].replics', 'replicas')
    await expectUnknown(() => mesh.autoscale('worker', { min: 1, max: 2, targetLag: 5, coolDown: 5 } as never), 'coolDown', 'cooldown')
    await expectUnknown(() => mesh.request('cap', 1, { retires: 2 } as never), 'retires', 'retries')
    await expectUnknown(() => mesh.send('cap', 1, { timeout: 5 } as never), 'timeout')
    await expectUnknown(() => mesh.registry.find({ capability: 'cap', minhealth: 'healthy' } as never), 'query.minhealth', 'minHealth')
    // Nothing was started by the refused calls.
    expect(mesh.agents()).toEqual([])
    orrery.close()
  })

  it('transports: each kind knows its own fields', async () => {
    await expectUnknown(() => Orrery.create({ transports: { m: { kind: 'memory', url: 'redis://x' } } } as never), 'transports.m.url')
    await expectUnknown(
      () => Orrery.create({ transports: { r: { kind: 'redis', url: 'redis://127.0.0.1:1', keyprefix: 'a' } } } as never),
      'transports.r.keyprefix',
      'keyPrefix',
    )
  })

  it('leaves the engine usable', async () => {
    await expectEngineUsable()
  })
})
