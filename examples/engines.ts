// Engines and worker threads. Run by test/examples.test.ts; the regions are the code blocks of
// docs/engines.md.
import assert from 'node:assert/strict'
import { isMainThread, Worker, workerData } from 'node:worker_threads'
import { Orrery } from 'orrery'

if (isMainThread) {
  // #region choose
  // Node: native unless ORRERY_ENGINE=wasm; an explicit engine wins over the variable.
  const byDefault = await Orrery.create()
  assert.equal(byDefault.engine, process.env['ORRERY_ENGINE'] === 'wasm' ? 'wasm' : 'native')
  const wasm = await Orrery.create({ engine: 'wasm' })
  assert.equal(wasm.engine, 'wasm')
  // Each Orrery is a core of its own: channels are not shared between them.
  await wasm.bus.publish('jobs', 1)
  assert.equal(byDefault.bus.stats('jobs').published, 0)
  wasm.close()
  byDefault.close()
  // #endregion

  // #region workers
  // Worker threads share one core (native engine): same channels, groups and messages.
  const orrery = await Orrery.create({ engine: 'native' })
  const results = orrery.bus.subscribe<number>('results')[Symbol.asyncIterator]()
  const first = results.next()
  const worker = new Worker(new URL(import.meta.url), { workerData: orrery.share() })
  const exited = new Promise((resolve) => worker.once('exit', resolve))
  assert.equal((await first).value?.payload, 42) // published by the worker
  await results.return?.()
  assert.equal(await exited, 0)
  orrery.close()
  // #endregion
} else {
  // #region worker
  // In the worker: attach to the core the main thread shared.
  const orrery = await Orrery.attach(workerData as number)
  await orrery.bus.publish('results', 42)
  orrery.close()
  // #endregion
}
