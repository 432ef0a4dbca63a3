/**
 * Strong shared namespaces when the broker goes (docs/store.md "A namespace across processes"):
 * a write made during an outage rejects TRANSPORT_UNAVAILABLE at the transport's
 * publishTimeoutMs instead of waiting for the server's return (and being applied then), typed,
 * saying whether it may have been applied. On the spare servers (test/transports/spare.ts), which
 * this file kills; both engines; node only (TCP to the brokers).
 */
import { afterAll, describe, expect, it } from 'vitest'

import { isOrreryError, Orrery } from '../../ts/node.js'
import { ENGINE } from '../engine.js'
import { killSpare, leaveSpare, SPARE_SKIP, type Spare, withSpare } from './spare.js'

const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`

for (const kind of ['redis', 'nats'] as const) {
  const spare: Spare = kind === 'redis' ? 'redis-spare' : 'nats-spare'
  describe.skipIf(SPARE_SKIP !== undefined)(`strong namespace on ${kind} during an outage (${ENGINE})`, { timeout: 60_000 }, () => {
    afterAll(() => leaveSpare(spare))

    it('a write made while the broker is down rejects TRANSPORT_UNAVAILABLE within publishTimeoutMs', async () => {
      await withSpare(spare, async (url) => {
        const transport = kind === 'redis' ? { kind, url, publishTimeoutMs: 1_000 } : { kind, servers: url, publishTimeoutMs: 1_000 }
        const o = await Orrery.create({ transports: { main: transport } })
        try {
          const store = o.openStore({ replica: 'a' })
          store.events.subscribe(() => {}) // the feed's failures are reported there
          const ns = await store.shared<number>(`outage-${RUN}-${ENGINE}`, { transport: 'main', consistency: 'strong' })
          const v = await ns.put('k', 1)
          await killSpare(spare)
          const started = performance.now()
          const error = await ns.put('k', 2, { ifVersion: v }).then(
            () => undefined,
            (e: unknown) => e,
          )
          const took = performance.now() - started
          expect(isOrreryError(error, 'TRANSPORT_UNAVAILABLE'), String(error)).toBe(true)
          expect((error as { details: Record<string, unknown> }).details).toMatchObject({ transport: 'main', key: 'k' })
          expect(typeof (error as { details: Record<string, unknown> }).details['indeterminate']).toBe('boolean')
          expect(took).toBeLessThan(2_500)
          // A read of the broker too.
          await expect(ns.fetch('k')).rejects.toSatisfy((e: unknown) => isOrreryError(e, 'TRANSPORT_UNAVAILABLE'))
          // The mirror still answers, and the write was not applied there.
          expect(ns.get('k')?.value).toBe(1)
          store.close()
        } finally {
          o.close()
        }
      })
    })
  })
}
