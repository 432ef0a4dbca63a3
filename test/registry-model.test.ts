/**
 * Discovery against a model, through the whole stack on both engines: random agents (versions,
 * priorities, tags, health) and random queries (capability, semver range, tags, minimum health,
 * further capabilities); `registry.find` must return exactly what a plain filter with npm's
 * semver returns, in priority, health, registration order.
 */
import fc from 'fast-check'
import semver from 'semver'
import { describe, expect, it } from 'vitest'

import { Orrery, type Health } from '../ts/node.js'
import { ENGINE } from './engine.js'

const CAPS = ['split', 'embed', 'rank']
const TAGS = ['gpu', 'eu', 'fast']
const RANGES = ['*', '^1', '^1.2', '>=2.0.0', '~1.1', '<1.5.0', '>=1.1.0, <2.1.0']
const HEALTHS: Health[] = ['healthy', 'degraded', 'initializing', 'unhealthy', 'paused', 'offline']

const version = fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 2 })).map((v) => v.join('.'))
const agent = fc.record({
  capabilities: fc.uniqueArray(fc.record({ name: fc.constantFrom(...CAPS), version, priority: fc.integer({ min: -2, max: 2 }) }), { minLength: 1, maxLength: 3, selector: (c) => c.name }),
  tags: fc.subarray(TAGS),
  health: fc.constantFrom(...HEALTHS),
})
const query = fc.record({
  capability: fc.constantFrom(...CAPS),
  range: fc.constantFrom(...RANGES),
  tags: fc.subarray(TAGS, { maxLength: 2 }),
  minHealth: fc.constantFrom(...HEALTHS),
  also: fc.subarray(CAPS.map((c) => `${c}@^1`), { maxLength: 1 }),
})

/** npm's semver reads a comma as nothing; Cargo's as "and". */
const npmRange = (range: string) => range.replace(',', '')

describe('registry model', () => {
  it('finds what a plain filter finds, in the same order', async () => {
    const orrery = await Orrery.create({ engine: ENGINE })
    await fc.assert(
      fc.asyncProperty(fc.array(agent, { maxLength: 25 }), fc.array(query, { minLength: 1, maxLength: 8 }), async (agents, queries) => {
        const mesh = await orrery.mesh({ seed: 3, heartbeat: { interval: 3_600_000 } })
        agents.forEach((a, i) => {
          mesh.registry.register({ id: `a${i}`, type: 't', capabilities: a.capabilities, tags: a.tags })
          if (a.health !== 'initializing') mesh.registry.setHealth(`a${i}`, a.health)
        })
        for (const q of queries) {
          const expected = agents
            .map((a, i) => ({ a, i, cap: a.capabilities.find((c) => c.name === q.capability) }))
            .filter(({ a, cap }) =>
              cap !== undefined
              && semver.satisfies(cap.version, npmRange(q.range))
              && HEALTHS.indexOf(a.health) <= HEALTHS.indexOf(q.minHealth)
              && q.tags.every((t) => a.tags.includes(t))
              && q.also.every((also) => {
                const [name, range] = also.split('@')
                return a.capabilities.some((c) => c.name === name && semver.satisfies(c.version, range!))
              }))
            .sort((x, y) => y.cap!.priority - x.cap!.priority || HEALTHS.indexOf(x.a.health) - HEALTHS.indexOf(y.a.health) || x.i - y.i)
            .map(({ i }) => `a${i}`)
          const found = mesh.registry.find({ capability: `${q.capability}@${q.range}`, tags: q.tags, minHealth: q.minHealth, also: q.also }).map((a) => a.id)
          expect(found).toEqual(expected)
        }
        await mesh.shutdown()
      }),
      { numRuns: 150 },
    )
    orrery.close()
  })
})
