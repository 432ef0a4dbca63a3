/**
 * `metrics` where prom-client cannot run: in a page (the browser project) Orrery.create and
 * orrery.mesh refuse it with UNSUPPORTED and nothing opens; in Node the same registry-shaped
 * object is filled. The rest of the metrics' tests need prom-client, so Node: test/metrics.test.ts.
 */
import { describe, expect, it } from 'vitest'

import { Orrery } from '../ts/node.js'
import { ENGINE, IN_BROWSER } from './engine.js'
import { errorOf } from './helpers.js'

/** What Orrery asks of a prom-client Registry, recording the names registered in it. */
function registryLike(): { getSingleMetric(name: string): unknown; registerMetric(metric: { name: string }): void; names: string[] } {
  const names: string[] = []
  return {
    names,
    getSingleMetric: () => undefined,
    registerMetric: (metric) => void names.push(metric.name),
  }
}

describe(`metrics ${IN_BROWSER ? 'in a page' : 'in Node'} (${ENGINE})`, () => {
  it(IN_BROWSER ? 'refuses metrics with UNSUPPORTED: prom-client needs Node' : 'fills a registry given as metrics', async () => {
    const registry = registryLike()
    const created = Orrery.create({ engine: ENGINE, metrics: registry })
    if (IN_BROWSER) {
      expect(await errorOf(() => created)).toMatchObject({ code: 'UNSUPPORTED' })
      expect(registry.names).toEqual([])
      const o = await Orrery.create({ engine: ENGINE })
      try {
        expect(await errorOf(() => o.mesh({ metrics: registry }))).toMatchObject({ code: 'UNSUPPORTED' })
        expect(registry.names).toEqual([])
      } finally {
        o.close()
      }
    } else {
      const o = await created
      o.close()
      expect(registry.names).toContain('messaging_client_sent_messages_total')
      expect(registry.names).toContain('orrery_agent_handler_duration_seconds')
    }
  })
})
