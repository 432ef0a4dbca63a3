/**
 * Bad input to the agent mesh (issue 11): every call of the mesh, its registry, routing and
 * supervision refuses a wrong value with a typed error on both engines, before anything reaches
 * the engine (a wrong-typed id once poisoned the wasm instance for the whole process), starts or
 * registers nothing, never opens a healthy agent's breaker, and `orrery.close()` lets the process
 * exit. Each case is walked on both engines; the engine must still work at the end.
 */
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'

import { Agent, Orrery, type AgentContext, type ErrorCode, type Mesh } from '../ts/node.js'
import { expectEngineUsable, expectPrototypeUntouched, expectRefused, HOSTILE } from './bad-input.js'
import { ENGINE, IN_BROWSER } from './engine.js'
import { Echo, fakeMesh, kinds } from './mesh-helpers.js'

afterEach(() => {
  vi.useRealTimers()
})

afterAll(async () => {
  await expectEngineUsable()
})

/** Counts the calls that reached it: a refused request must not. */
class Counted extends Agent {
  static readonly capabilities = [{ name: 'echo', version: '1.0.0' }]
  static calls = 0
  constructor(context: AgentContext<unknown>) {
    super(context)
    this.handle('echo', (text: unknown) => {
      Counted.calls++
      return `${this.id}:${String(text)}`
    })
  }
}

async function freshMesh(): Promise<{ orrery: Orrery; mesh: Mesh }> {
  const orrery = await Orrery.create({ engine: ENGINE })
  const mesh = await orrery.mesh({ seed: 1 })
  return { orrery, mesh }
}

/** The hostile values a check must refuse: those `valid` does not accept. */
function hostile(valid: (value: unknown) => boolean): ReadonlyArray<readonly [string, unknown]> {
  return HOSTILE.filter(([, value]) => !valid(value))
}

const isName = (v: unknown) => typeof v === 'string' && /^[A-Za-z0-9._\-:/*>]{1,249}$/.test(v)
const isCount = (min: number) => (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= min && v < 2 ** 32
const isMs = (min: number) => (v: unknown) => typeof v === 'number' && v >= min && v <= 2 ** 31 - 1

/** A bad name is INVALID_NAME when it is a string, else the type error of its place. */
const nameCode = (value: unknown, where: ErrorCode): ErrorCode => (typeof value === 'string' ? 'INVALID_NAME' : where)

describe('the mesh refuses bad input', () => {
  it('checks every argument before the engine: a wrong type never reaches (or poisons) it (item 2)', async () => {
    const { orrery, mesh } = await freshMesh()
    // These three panicked the wasm instance ("memory access out of bounds"), which then failed
    // every later call of the process with ENGINE_POISONED.
    await expectRefused(() => mesh.define(5 as never, Echo), 'INVALID_ARGUMENT')
    mesh.define('echo', Echo)
    await expectRefused(() => mesh.spawn('echo', { id: 7 as never }), 'INVALID_OPTION')
    await expectRefused(() => mesh.registry.similar(5 as never), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.spawn(5 as never), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.registry.register({ id: 5, type: 'x', capabilities: [] } as never), 'INVALID_OPTION')
    await expectRefused(() => mesh.registry.register({ id: 'r', type: 5, capabilities: [] } as never), 'INVALID_OPTION')
    await expectRefused(() => mesh.registry.register({ id: 'r', type: 'x', capabilities: [{ name: 5, version: '1.0.0' }] } as never), 'INVALID_OPTION')
    await expectRefused(() => mesh.registry.register({ id: 'r', type: 'x', capabilities: [{ name: 'c', version: 1 }] } as never), 'INVALID_OPTION')
    await expectRefused(() => mesh.registry.register({ id: 'r', type: 'x', capabilities: [], tags: [5] } as never), 'INVALID_OPTION')
    await expectRefused(() => mesh.registry.heartbeat(5 as never), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.registry.deregister({} as never), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.registry.get(5 as never), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.registry.find(5 as never), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.registry.select('echo', 5 as never), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.request(5 as never, 'x'), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.send(5 as never, 'x'), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.agent(5 as never), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.stop(5 as never), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.pause(5 as never), 'INVALID_ARGUMENT')
    expect(mesh.registry.list()).toEqual([])
    expect(mesh.agents()).toEqual([])
    // The same mesh still runs agents and routes.
    await mesh.spawn('echo', { id: 'e' })
    expect((await mesh.request<string>('echo', 'x')).payload).toBe('e:x')
    await mesh.shutdown()
    orrery.close()
    await expectEngineUsable()
  })

  it('refuses a bad spawn option at the call, starting nothing (items 1, 12, 13)', async () => {
    const { orrery, mesh } = await freshMesh()
    mesh.define('echo', Echo)
    const table: Array<readonly [option: string, valid: (v: unknown) => boolean, make: (v: unknown) => object]> = [
      // A fractional concurrency was thrown inside the inbox's subscription and ended the process.
      ['concurrency', isCount(1), (v) => ({ concurrency: v })],
      // 1.5 replicas started two agents.
      ['replicas', (v) => isCount(1)(v) && (v as number) <= 2 ** 20, (v) => ({ replicas: v })],
      ['bulkhead', isCount(0), (v) => ({ bulkhead: v })],
      // 2^31 ms overflowed setTimeout (it fires at once).
      ['handlerTimeout', (v) => isMs(1)(v) && (v as number) <= 2 ** 31 - 1 - 5_000, (v) => ({ handlerTimeout: v })],
      ['retry.attempts', isCount(0), (v) => ({ retry: { attempts: v } })],
      ['retry.backoff.base', isMs(0), (v) => ({ retry: { backoff: { base: v } } })],
      ['retry.backoff.jitter', () => false, (v) => ({ retry: { backoff: { jitter: v } } })],
      ['retry.isFatal', (v) => typeof v === 'function', (v) => ({ retry: { isFatal: v } })],
      // wasm took '5' as 5; native refused it with a conversion error.
      ['rateLimit.agent.burst', (v) => typeof v === 'number' && v >= 1 && Number.isFinite(v), (v) => ({ rateLimit: { agent: { perSecond: 1, burst: v } } })],
      ['rateLimit.agent.perSecond', (v) => typeof v === 'number' && v > 0 && Number.isFinite(v), (v) => ({ rateLimit: { agent: { perSecond: v } } })],
      ['rateLimit.policy', () => false, (v) => ({ rateLimit: { policy: v } })],
      ['tags', () => false, (v) => ({ tags: v })],
      ['capabilities', () => false, (v) => ({ capabilities: v })],
      ['config', (v) => typeof v === 'object' && v !== null && !Array.isArray(v), (v) => ({ config: v })],
      ['configFrom.env', (v) => typeof v === 'string' && v !== '' && !v.includes('\uD800'), (v) => ({ configFrom: { env: v } })],
    ]
    for (const [option, valid, make] of table) {
      for (const [label, value] of hostile(valid)) {
        const error = await expectRefused(() => mesh.spawn('echo', make(value)), 'INVALID_OPTION')
        expect(error.message, `${option} = ${label}`).toContain(option.split('.')[0]!)
      }
    }
    // An id is a name the inbox channel can carry; '' was silently ignored.
    for (const [, value] of hostile(isName)) await expectRefused(() => mesh.spawn('echo', { id: value as never }), nameCode(value, 'INVALID_OPTION'))
    await expectRefused(() => mesh.spawn('echo', { id: 'x'.repeat(250) }), 'INVALID_NAME')
    await expectRefused(() => mesh.spawn('echo', { id: 'x'.repeat(249), replicas: 2 }), 'INVALID_NAME')
    await expectRefused(() => mesh.spawn('echo', null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.spawn('echo', 'fast' as never), 'INVALID_ARGUMENT')
    // Past what the bus lets an inbox member hold: refused at spawn, not after registering.
    await expectRefused(() => mesh.spawn('echo', { concurrency: 2 ** 28 + 1 }), 'INVALID_OPTION')
    // Nothing started, nothing registered; and no late error ends the process.
    await new Promise((resolve) => setTimeout(resolve, 10))
    expect(mesh.agents()).toEqual([])
    expect(mesh.registry.list()).toEqual([])
    const started = await mesh.spawn('echo', {
      id: 'ok',
      concurrency: 2,
      replicas: 1,
      handlerTimeout: 2 ** 31 - 1 - 5_000,
      rateLimit: { agent: { perSecond: 5, burst: 5 } },
    })
    expect(started.map((h) => h.id)).toEqual(['ok'])
    await mesh.shutdown()
    orrery.close()
    expectPrototypeUntouched()
  })

  // Config files are read from disk (node:fs): Node only.
  it.skipIf(IN_BROWSER)('refuses a config file holding JSON that is not an object, starting nothing', async () => {
    const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const { orrery, mesh } = await freshMesh()
    mesh.define('echo', Echo)
    // It was read as {}.
    const dir = mkdtempSync(join(tmpdir(), 'orrery-config-'))
    const file = join(dir, 'config.json')
    try {
      for (const text of ['5', 'null', '[1]', '"x"']) {
        writeFileSync(file, text)
        await expectRefused(() => mesh.spawn('echo', { configFrom: { file } }), 'INVALID_CONFIG')
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
    expect(mesh.agents()).toEqual([])
    expect(mesh.registry.list()).toEqual([])
    await mesh.shutdown()
    orrery.close()
  })

  it('refuses a bad type, factory or default at define, not at the first spawn (item 13)', async () => {
    const { orrery, mesh } = await freshMesh()
    for (const [, value] of hostile(isName)) await expectRefused(() => mesh.define(value as never, Echo), nameCode(value, 'INVALID_ARGUMENT'))
    await expectRefused(() => mesh.define('', Echo), 'INVALID_NAME')
    await expectRefused(() => mesh.define('a b', Echo), 'INVALID_NAME')
    await expectRefused(() => mesh.define('echo', 5 as never), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.define('echo', Echo, { concurrency: 1.5 }), 'INVALID_OPTION')
    await expectRefused(() => mesh.define('echo', Echo, null as never), 'INVALID_ARGUMENT')
    // None of those defined anything: the type is still free.
    mesh.define('echo', Echo)
    await expectRefused(() => mesh.spawn('nope'), 'UNKNOWN_AGENT_TYPE')
    await mesh.shutdown()
    orrery.close()
  })

  it('refuses bad mesh options, numeric strings included, on both engines alike (items 10, 12, 13)', async () => {
    const orrery = await Orrery.create({ engine: ENGINE })
    const table: Array<readonly [option: string, valid: (v: unknown) => boolean, make: (v: unknown) => object]> = [
      // wasm took 'x' as a seed; NaN was accepted silently.
      ['seed', (v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0, (v) => ({ seed: v })],
      // -1 was accepted and made every graceful stop immediate.
      ['shutdownTimeout', isMs(0), (v) => ({ shutdownTimeout: v })],
      ['heartbeat.interval', isMs(1), (v) => ({ heartbeat: { interval: v } })],
      ['heartbeat.offlineAfter', isCount(1), (v) => ({ heartbeat: { offlineAfter: v } })],
      ['heartbeat.deregisterAfter', isMs(0), (v) => ({ heartbeat: { deregisterAfter: v } })],
      ['breaker.failures', isCount(1), (v) => ({ breaker: { failures: v } })],
      ['breaker.coolDown', isMs(0), (v) => ({ breaker: { coolDown: v } })],
      ['signals', (v) => typeof v === 'boolean', (v) => ({ signals: v })],
      ['logger', () => false, (v) => ({ logger: v })],
      ['heartbeat', (v) => typeof v === 'object' && v !== null && !Array.isArray(v), (v) => ({ heartbeat: v })],
    ]
    for (const [option, valid, make] of table) {
      for (const [label, value] of hostile(valid)) {
        const error = await expectRefused(() => orrery.mesh(make(value)), 'INVALID_OPTION')
        expect(error.message, `${option} = ${label}`).toContain(option)
      }
    }
    await expectRefused(() => orrery.mesh(null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => orrery.mesh(5 as never), 'INVALID_ARGUMENT')
    // The cases as reported: the same code and message on both engines.
    const seed = await expectRefused(() => orrery.mesh({ seed: 'x' as never }), 'INVALID_OPTION')
    expect(seed.message).toBe('seed must be a whole number >= 0, not "x"')
    const probe = await orrery.mesh({ seed: 1 })
    probe.define('echo', Echo)
    const burst = await expectRefused(() => probe.spawn('echo', { rateLimit: { agent: { perSecond: 1, burst: '5' as never } } }), 'INVALID_OPTION')
    expect(burst.message).toBe('rateLimit.agent.burst must be a finite number >= 1, not "5"')
    expect(probe.agents()).toEqual([])
    await probe.shutdown()
    const mesh = await orrery.mesh({ seed: 0, shutdownTimeout: 0 })
    await mesh.shutdown()
    orrery.close()
  })

  it('refuses bad queries, and never answers one query from the cache of another (items 12, 13)', async () => {
    const { orrery, mesh } = await freshMesh()
    mesh.define('echo', Echo)
    await mesh.spawn('echo', { id: 'e' })
    const registry = mesh.registry
    expect(registry.find({ capability: 'echo' }).map((a) => a.id)).toEqual(['e'])
    // The object query above was cached under a NUL-joined key this string equals.
    await expectRefused(() => registry.find('echo\0\0\0\0'), 'INVALID_NAME')
    await expectRefused(() => registry.find('echo|||'), 'INVALID_NAME')
    await expectRefused(() => registry.find({ capability: 5 } as never), 'INVALID_OPTION')
    await expectRefused(() => registry.find({ capability: 'echo', tags: 'x' } as never), 'INVALID_OPTION')
    await expectRefused(() => registry.find({ capability: 'echo', tags: [5] } as never), 'INVALID_OPTION')
    await expectRefused(() => registry.find({ capability: 'echo', minHealth: 'toString' } as never), 'INVALID_OPTION')
    await expectRefused(() => registry.find({ capability: 'echo', also: 'x' } as never), 'INVALID_OPTION')
    // Object queries are cached by a key built from their fields before they are checked: a
    // refused query must never reach the entry of a valid one whose strings spell its key.
    expect(registry.find({ capability: 'echo', minHealth: 'degraded', tags: [] }).map((a) => a.id)).toEqual(['e'])
    await expectRefused(() => registry.find({ capability: 'echo', minHealth: 'degraded|t' } as never), 'INVALID_OPTION')
    await expectRefused(() => registry.find({ capability: 'echo', minHealth: 'degraded', tags: ['a\uD800'] }), 'INVALID_NAME')
    expect(registry.find({ capability: 'echo', minHealth: 'degraded', tags: [] }).map((a) => a.id)).toEqual(['e'])
    await expectRefused(() => registry.find(null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => registry.find('echo\uD800'), 'INVALID_ARGUMENT')
    for (const [label, value] of hostile((v) => typeof v === 'number' && v >= 0 && v <= 1)) {
      await expectRefused(() => registry.similar('echo', { threshold: value as never }), 'INVALID_OPTION').catch((e: unknown) => {
        throw new Error(`threshold ${label}: ${String(e)}`)
      })
    }
    for (const [, value] of hostile(() => false)) await expectRefused(() => registry.heartbeat('e', value as never), 'INVALID_ARGUMENT')
    expect(registry.find('echo').map((a) => a.id)).toEqual(['e'])
    expect(registry.find({ capability: 'echo', tags: [] }).map((a) => a.id)).toEqual(['e'])
    await mesh.shutdown()
    orrery.close()
  })

  it('refuses bad supervisor specs before any child starts (items 12, 13)', async () => {
    const { orrery, mesh } = await freshMesh()
    mesh.define('echo', Echo)
    const specs: Array<readonly [string, unknown]> = [
      ['null', null],
      ['a string', 'echo'],
      ['children not a list', { children: 'echo' }],
      ['a null child', { children: [null] }],
      ['a child type 5', { children: [{ type: 5 }] }],
      ['a child id ""', { children: [{ type: 'echo', id: '' }] }],
      ['replicas 1.5', { children: [{ type: 'echo', replicas: 1.5 }] }],
      ['concurrency 1.5', { children: [{ type: 'echo', options: { concurrency: 1.5 } }] }],
      ['strategy toString', { strategy: 'toString', children: [{ type: 'echo' }] }],
      ['jitter bogus', { backoff: { jitter: 'bogus' }, children: [{ type: 'echo' }] }],
      ['restarts -1', { intensity: { restarts: -1 }, children: [{ type: 'echo' }] }],
      ['withinMs NaN', { intensity: { withinMs: NaN }, children: [{ type: 'echo' }] }],
      ['name 5', { name: 5, children: [{ type: 'echo' }] }],
    ]
    for (const [label, spec] of specs) {
      const error = await expectRefused(() => mesh.supervise(spec as never), ['INVALID_ARGUMENT', 'INVALID_OPTION', 'INVALID_NAME'])
      expect(error.message, label).not.toBe('')
    }
    expect(mesh.agents()).toEqual([])
    await expectRefused(() => mesh.shutdown({ timeout: -1 }), 'INVALID_OPTION')
    await expectRefused(() => mesh.shutdown(null as never), 'INVALID_ARGUMENT')
    await mesh.shutdown()
    orrery.close()
  })
})

describe('sweeps of hostile values', () => {
  it('over every field of a registration: nothing is registered', async () => {
    const { orrery, mesh } = await freshMesh()
    const registry = mesh.registry
    const base = { id: 'r', type: 't', capabilities: [{ name: 'c', version: '1.0.0' }] }
    const table: Array<readonly [field: string, valid: (v: unknown) => boolean, make: (v: unknown) => object]> = [
      ['id', isName, (v) => ({ ...base, id: v })],
      ['type', isName, (v) => ({ ...base, type: v })],
      ['capabilities', () => false, (v) => ({ ...base, capabilities: v })],
      ['capabilities[0].name', isName, (v) => ({ ...base, capabilities: [{ name: v, version: '1.0.0' }] })],
      ['capabilities[0].version', () => false, (v) => ({ ...base, capabilities: [{ name: 'c', version: v }] })],
      [
        'capabilities[0].priority',
        (v) => typeof v === 'number' && Number.isInteger(v) && Math.abs(v) < 2 ** 31,
        (v) => ({ ...base, capabilities: [{ name: 'c', version: '1.0.0', priority: v }] }),
      ],
      ['tags', () => false, (v) => ({ ...base, tags: v })],
      ['tags[0]', isName, (v) => ({ ...base, tags: [v] })],
      ['bulkhead', isCount(0), (v) => ({ ...base, bulkhead: v })],
    ]
    for (const [field, valid, make] of table) {
      for (const [label, value] of hostile(valid)) {
        const codes: ErrorCode[] = ['INVALID_OPTION', 'INVALID_NAME', 'INVALID_VERSION']
        const error = await expectRefused(() => registry.register(make(value) as never), codes)
        expect(error.message, `${field} = ${label}`).not.toBe('')
      }
    }
    for (const [, value] of hostile(() => false)) {
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) continue
      await expectRefused(() => registry.register(value as never), 'INVALID_ARGUMENT')
    }
    expect(registry.list()).toEqual([])
    registry.register(base)
    expect(registry.list().map((a) => a.id)).toEqual(['r'])
    await mesh.shutdown()
    orrery.close()
    expectPrototypeUntouched()
  })

  it('over every option of a request and a send: nothing is routed or sent', async () => {
    Counted.calls = 0
    const { orrery, mesh, events } = await fakeMesh({ breaker: { failures: 1 } })
    mesh.define('counted', Counted)
    await mesh.spawn('counted', { id: 'a' })
    const table: Array<readonly [option: string, valid: (v: unknown) => boolean, make: (v: unknown) => object]> = [
      // Infinity is no timeout, the one spelling of none.
      ['timeout', (v) => v === Infinity || (isMs(0)(v) && v !== 0), (v) => ({ timeout: v })],
      ['retries', isCount(0), (v) => ({ retries: v })],
      ['strategy', () => false, (v) => ({ strategy: v })],
      ['tags', () => false, (v) => ({ tags: v })],
      ['fallback', (v) => typeof v === 'boolean', (v) => ({ fallback: v })],
      ['backoff', (v) => typeof v === 'object' && v !== null && !Array.isArray(v), (v) => ({ backoff: v })],
      ['backoff.factor', (v) => typeof v === 'number' && v >= 1 && Number.isFinite(v), (v) => ({ backoff: { factor: v } })],
      ['headers', (v) => typeof v === 'object' && v !== null && !Array.isArray(v), (v) => ({ headers: v })],
      ['ttl', (v) => typeof v === 'number' && v > 0 && Number.isFinite(v), (v) => ({ ttl: v })],
    ]
    for (const [option, valid, make] of table) {
      for (const [label, value] of hostile(valid)) {
        const error = await expectRefused(() => mesh.request('echo', 1, make(value) as never), 'INVALID_OPTION').catch((e: unknown) => {
          throw new Error(`${option} = ${label}: ${String(e)}`)
        })
        expect(error.message, `${option} = ${label}`).toContain(option.split('.')[0]!)
        if (option !== 'timeout' && option !== 'retries' && option !== 'fallback' && !option.startsWith('backoff')) {
          await expectRefused(() => mesh.send('echo', 1, make(value) as never), 'INVALID_OPTION')
        }
      }
    }
    for (const [, value] of hostile((v) => typeof v === 'object' && v !== null && !Array.isArray(v))) {
      await expectRefused(() => mesh.request('echo', 1, value as never), 'INVALID_ARGUMENT')
      await expectRefused(() => mesh.send('echo', 1, value as never), 'INVALID_ARGUMENT')
    }
    expect(Counted.calls).toBe(0)
    expect(orrery.bus.stats('inbox.a').published).toBe(0)
    expect(kinds(events, 'breaker', 'fallback', 'retry')).toEqual([])
    expect(mesh.registry.get('a')?.breaker).toBe('closed')
    await mesh.shutdown()
    orrery.close()
  })

  it('over ids of the agent calls, and the options of stop, shutdown and reconfigure', async () => {
    const { orrery, mesh } = await freshMesh()
    mesh.define('echo', Echo)
    const [handle] = await mesh.spawn('echo', { id: 'e' })
    for (const [, value] of hostile((v) => typeof v === 'string' && !v.includes('\uD800'))) {
      await expectRefused(() => mesh.agent(value as never), 'INVALID_ARGUMENT')
      await expectRefused(() => mesh.stop(value as never), 'INVALID_ARGUMENT')
      await expectRefused(() => mesh.pause(value as never), 'INVALID_ARGUMENT')
      await expectRefused(() => mesh.resume(value as never), 'INVALID_ARGUMENT')
    }
    for (const [, value] of hostile(isMs(0))) await expectRefused(() => mesh.stop('e', { timeout: value as never }), 'INVALID_OPTION')
    for (const [, value] of hostile((v) => typeof v === 'object' && v !== null && !Array.isArray(v))) {
      await expectRefused(() => handle!.reconfigure(value as never), 'INVALID_ARGUMENT')
      await expectRefused(() => mesh.stop('e', value as never), 'INVALID_ARGUMENT')
    }
    expect(mesh.agent('e')?.state).toBe('running')
    await mesh.shutdown()
    orrery.close()
  })
})

describe('agents refuse bad declarations', () => {
  it('refuses a bad handler registration when the agent is built, registering nothing', async () => {
    const { orrery, mesh } = await freshMesh()
    const bad: Array<readonly [string, (agent: { handle: (...args: unknown[]) => void; on: (...args: unknown[]) => void }) => void, ErrorCode]> = [
      ['capability 5', (a) => a.handle(5, () => 1), 'INVALID_ARGUMENT'],
      ['capability ""', (a) => a.handle('', () => 1), 'INVALID_ARGUMENT'],
      ['no handler', (a) => a.handle('echo', { schema: { '~standard': { validate: (v: unknown) => ({ value: v }) } } }), 'INVALID_ARGUMENT'],
      ['schema 5', (a) => a.handle('echo', { schema: 5 }, () => 1), 'INVALID_OPTION'],
      ['options null', (a) => a.handle('echo', null, () => 1), 'INVALID_ARGUMENT'],
      ['kind 5', (a) => a.on(5, () => 1), 'INVALID_ARGUMENT'],
    ]
    for (const [label, declare, code] of bad) {
      class Bad extends Agent {
        static readonly capabilities = [{ name: 'echo', version: '1.0.0' }]
        constructor(context: AgentContext<unknown>) {
          super(context)
          declare(this as never)
        }
      }
      const type = `bad-${bad.findIndex(([l]) => l === label)}`
      mesh.define(type, Bad)
      const error = await expectRefused(() => mesh.spawn(type, { id: type }), code)
      expect(error.message, label).not.toBe('')
    }
    expect(mesh.registry.list()).toEqual([])
    await mesh.shutdown()
    orrery.close()
  })

  it('treats a classifier that throws as saying no, without an unhandled rejection', async () => {
    class Failing extends Agent {
      static readonly capabilities = [{ name: 'work', version: '1.0.0' }]
      constructor(context: AgentContext<unknown>) {
        super(context)
        this.handle('work', () => {
          throw new Error('down')
        })
      }
    }
    const { orrery, mesh, events, advance } = await fakeMesh()
    mesh.define('failing', Failing)
    const classifier = () => {
      throw new Error('classifier bug')
    }
    await mesh.spawn('failing', { id: 'f', retry: { attempts: 1, isPermanent: classifier, isFatal: classifier } })
    await mesh.send('work', 'x')
    await advance(10)
    // Neither fatal nor permanent: a transient failure, retried.
    expect(kinds(events, 'retry', 'crashed', 'dead-letter')).toEqual(['retry:f'])
    expect((await expectRefused(() => mesh.request('work', 'y', { retries: 0 }), 'HANDLER_ERROR')).message).toContain('down')
    expect(mesh.agent('f')?.state).toBe('running')
    await mesh.shutdown({ timeout: 0 })
    orrery.close()
  })
})

describe('prototype keys', () => {
  it('keeps __proto__ keys of options, configs and rate limits as plain keys', async () => {
    const { orrery, mesh } = await freshMesh()
    mesh.define('__proto__', Echo, JSON.parse('{"config":{"__proto__":{"polluted":1}}}') as object)
    const options = JSON.parse(
      '{"id":"__proto__","tags":["__proto__"],"rateLimit":{"capabilities":{"__proto__":{"perSecond":1}}},"config":{"__proto__":{"polluted":2}}}',
    ) as object
    const [handle] = await mesh.spawn('__proto__', options)
    expect(handle!.id).toBe('__proto__')
    expect(mesh.registry.find({ capability: 'echo', tags: ['__proto__'] }).map((a) => a.id)).toEqual(['__proto__'])
    expect((await mesh.request<string>('echo', 'x')).payload).toBe('__proto__:x')
    expectPrototypeUntouched()
    await mesh.shutdown()
    orrery.close()
  })
})

describe('event subscribers', () => {
  it('a mesh or registry events subscriber that throws is logged, and the process and the other subscribers go on (item 1)', async () => {
    const logged: unknown[] = []
    const logger = { child: () => logger, debug: () => {}, info: () => {}, warn: () => {}, error: (obj: unknown) => void logged.push(obj) }
    const orrery = await Orrery.create({ engine: ENGINE })
    const mesh = await orrery.mesh({ seed: 1, logger })
    mesh.define('echo', Echo)
    const seen: string[] = []
    mesh.events.subscribe(() => {
      throw new Error('mesh subscriber bug')
    })
    mesh.registry.events.subscribe({
      next: () => {
        throw new Error('registry subscriber bug')
      },
    })
    mesh.events.subscribe((e) => seen.push(e.type))
    await mesh.spawn('echo', { id: 'e' })
    expect((await mesh.request<string>('echo', 'x')).payload).toBe('e:x')
    await new Promise((resolve) => setTimeout(resolve, 10))
    expect(seen).toContain('started')
    expect(logged.length).toBeGreaterThan(0)
    await mesh.shutdown()
    orrery.close()
  })
})

describe("a caller's bad request never counts against an agent (item 3)", () => {
  it('keeps the breaker closed and calls no agent for bad options and unencodable payloads', async () => {
    Counted.calls = 0
    const { orrery, mesh, events } = await fakeMesh({ breaker: { failures: 2 } })
    mesh.define('counted', Counted)
    await mesh.spawn('counted', { id: 'a' })
    await mesh.spawn('counted', { id: 'b' })
    // Two of these opened the agent's breaker: the next valid request got CIRCUIT_OPEN.
    for (let i = 0; i < 3; i++) await expectRefused(() => mesh.request('echo', 1, { timeout: -1 }), 'INVALID_OPTION')
    // A BigInt cannot be encoded: the caller's error, not retried on the other agent.
    for (let i = 0; i < 3; i++) {
      const error = await expectRefused(() => mesh.request('echo', 10n), 'INVALID_PAYLOAD')
      expect((error as unknown as { details: Record<string, unknown> }).details['attempts']).toBeUndefined()
    }
    // Refused by the bus (after routing): still the caller's error.
    for (let i = 0; i < 3; i++) await expectRefused(() => mesh.request('echo', 1, { ttl: -1 }), 'INVALID_OPTION')
    const table: Array<readonly [string, object]> = [
      ['timeout NaN', { timeout: NaN }],
      ['timeout 2^31', { timeout: 2 ** 31 }],
      ['timeout "10"', { timeout: '10' }],
      ['retries 1.5', { retries: 1.5 }],
      ['retries -1', { retries: -1 }],
      ['strategy toString', { strategy: 'toString' }],
      ['tags "x"', { tags: 'x' }],
      ['fallback "no"', { fallback: 'no' }],
      ['backoff jitter', { backoff: { jitter: 'bogus' } }],
    ]
    for (const [label, options] of table) {
      const error = await expectRefused(() => mesh.request('echo', 1, options as never), 'INVALID_OPTION')
      expect(error.message, label).not.toBe('')
      await expectRefused(() => mesh.send('echo', 1, options as never), ['INVALID_OPTION'])
    }
    await expectRefused(() => mesh.request('echo', 1, null as never), 'INVALID_ARGUMENT')
    await expectRefused(() => mesh.send('echo', 10n), 'INVALID_PAYLOAD')
    expect(orrery.bus.stats('inbox.a').published + orrery.bus.stats('inbox.b').published).toBe(0)
    expect(Counted.calls).toBe(0)
    expect(kinds(events, 'breaker', 'fallback', 'retry')).toEqual([])
    expect(mesh.registry.list().map((a) => [a.id, a.breaker, a.inFlight])).toEqual([
      ['a', 'closed', 0],
      ['b', 'closed', 0],
    ])
    // The next valid request goes through.
    expect((await mesh.request<string>('echo', 'x')).payload).toMatch(/^[ab]:x$/)
    expect(Counted.calls).toBe(1)
    await mesh.shutdown()
    orrery.close()
  })
})

describe('close', () => {
  it('stops the meshes of a closing Orrery: nothing is left running (item 9)', async () => {
    const { orrery, mesh } = await freshMesh()
    mesh.define('echo', Echo)
    await mesh.spawn('echo', { id: 'e' })
    await mesh.supervise({ children: [{ type: 'echo', id: 's' }] })
    orrery.close()
    expect(mesh.agent('e')?.state).toBe('crashed')
    // Shutting down after the fact is a no-op, and the mesh refuses new work.
    await mesh.shutdown()
    await expectRefused(() => mesh.request('echo', 'x'), 'CLOSED')
    await expectRefused(() => mesh.spawn('echo'), 'CLOSED')
    await expectRefused(() => orrery.mesh(), 'CLOSED')
  })

  it.runIf(ENGINE === 'native')("leaves a closed mesh's unacked work in the inbox, redelivered to the next member (item 9)", async () => {
    // Two endpoints of one core: the mesh runs on the second, which is closed under it.
    const first = await Orrery.create({ engine: 'native' })
    const second = await Orrery.attach(first.share())
    const mesh = await second.mesh({ seed: 1 })
    let started = 0
    class Hanging extends Agent {
      static readonly capabilities = [{ name: 'work', version: '1.0.0' }]
      constructor(context: AgentContext<unknown>) {
        super(context)
        this.handle('work', () => {
          started++
          return new Promise(() => {})
        })
      }
    }
    mesh.define('hanging', Hanging)
    await mesh.spawn('hanging', { id: 'h' })
    await mesh.send('work', 'job-1')
    for (let i = 0; i < 100 && started === 0; i++) await new Promise((resolve) => setTimeout(resolve, 5))
    expect(started).toBe(1)
    second.close()
    // The next member of the agent's inbox group gets the message it never acked.
    const got: unknown[] = []
    const sub = first.bus
      .group('inbox.h', 'agent')
      .join()
      .subscribe((d) => {
        got.push(d.message.payload)
        d.ack()
      })
    for (let i = 0; i < 100 && got.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 5))
    expect(got).toEqual(['job-1'])
    sub.unsubscribe()
    first.close()
  })

  // A child process: Node only.
  it.skipIf(IN_BROWSER)(
    'lets a process that did not shut its mesh down exit on its own (item 9)',
    async () => {
      const { spawn } = await import('node:child_process')
      const { fileURLToPath } = await import('node:url')
      const fixture = fileURLToPath(new URL('./fixtures/mesh-close.mjs', import.meta.url))
      const child = spawn(process.execPath, [fixture], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ORRERY_ENGINE: ENGINE } })
      let out = ''
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString()
      })
      const code = await new Promise<number | string>((resolve) => {
        // Heartbeats (1 s), a supervisor's restart backoff and a request's retry backoff each kept it alive.
        const timer = setTimeout(() => {
          child.kill('SIGKILL')
          resolve('still running after 5 s')
        }, 5_000)
        child.on('exit', (status) => {
          clearTimeout(timer)
          resolve(status ?? -1)
        })
      })
      expect(out).toContain('closed CLOSED')
      expect(code).toBe(0)
    },
    15_000,
  )
})
