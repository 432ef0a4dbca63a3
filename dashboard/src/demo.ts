/**
 * "Play with a mesh in the browser": the demo shop `orrery serve` runs (ts/demo/shop.ts: agents,
 * orders a consumer group dead-letters, the `stock` namespace, fulfil-order runs that wait for an
 * approval, restock runs that fan out), made in this page on the wasm engine and shown live
 * through its Control. Everything ends when the client closes.
 */
import { type Control, type Mesh, Orrery, type Store, type Workflows } from '../../ts/browser.js'
import { startDemo as startShop } from '../../ts/demo/shop.js'
import type { ControlClient } from './client.js'
import { inPageClient } from './in-page-client.js'

/** What `window.orreryDemo` holds while the demo runs. */
export interface DemoHandles {
  orrery: Orrery
  mesh: Mesh
  workflows: Workflows
  store: Store<false>
  control: Control
}

type WithDemo = { orreryDemo?: DemoHandles }

export async function startDemo(): Promise<ControlClient> {
  const orrery = await Orrery.create({ engine: 'wasm' })
  try {
    // Orders a little faster than serve's, so the page's charts and dead letters fill sooner.
    const shop = await startShop(orrery, { tickMs: 200 })
    const control = orrery.control({ mesh: shop.mesh, workflows: shop.workflows, store: shop.store })
    // For the browser's console: play with the same mesh the views show.
    ;(globalThis as WithDemo).orreryDemo = { orrery, mesh: shop.mesh, workflows: shop.workflows, store: shop.store, control }
    return inPageClient(control, 'demo in this page (wasm engine)', () => {
      delete (globalThis as WithDemo).orreryDemo
      control.close()
      void shop.stop().finally(() => orrery.close())
    })
  } catch (e) {
    orrery.close()
    throw e
  }
}
