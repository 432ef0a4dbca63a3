import { once } from 'node:events'
import { Worker } from 'node:worker_threads'

import { describe, expect, it } from 'vitest'

import { Orrery, type Message } from '../ts/node.js'
import { ENGINE } from './engine.js'
import { collect } from './helpers.js'

/** Waits (real time: worker threads run on their own) until `done()` holds. */
async function until(done: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

describe(`worker threads (${ENGINE})`, () => {
  it.runIf(ENGINE === 'native')('shares one core across threads; a dead thread loses its consumers and gives back its work', async () => {
    const orrery = await Orrery.create()
    const handle = orrery.share()
    const { bus } = orrery
    const pongs = collect(bus.subscribe<{ n: number; thread: string }>('pong'))
    const worker = new Worker(new URL('./fixtures/echo-worker.mjs', import.meta.url), { workerData: { handle, name: 'w1' } })
    const jobsAtWorker: unknown[] = []
    worker.on('message', (m: { job?: unknown }) => {
      if (m.job !== undefined) jobsAtWorker.push(m.job)
    })
    await once(worker, 'message')

    await bus.publishBatch(Array.from({ length: 100 }, (_, n) => ({ channel: 'ping', payload: { n } })))
    await until(() => pongs.length === 100, 'pongs from the worker')
    expect(pongs.map((m) => m.payload.n)).toEqual(Array.from({ length: 100 }, (_, n) => n))
    expect(new Set(pongs.map((m) => m.payload.thread))).toEqual(new Set(['w1']))
    expect(bus.stats('ping').subscribers).toBe(1)

    await bus.publishBatch(['a', 'b', 'c'].map((payload) => ({ channel: 'jobs', payload })))
    await until(() => jobsAtWorker.length === 3, 'jobs at the worker')
    expect(bus.group('jobs', 'workers').stats()).toMatchObject({ members: 1, pending: 3 })

    await worker.terminate()
    await until(() => bus.stats('ping').subscribers === 0, 'the dead worker to lose its subscriber')
    const redelivered: Message[] = []
    bus
      .group('jobs', 'workers')
      .join()
      .subscribe((d) => {
        redelivered.push(d.message)
        d.ack()
      })
    await until(() => redelivered.length === 3, "redelivery of the dead worker's jobs")
    expect(redelivered.map((m) => m.payload)).toEqual(['a', 'b', 'c'])
    orrery.close()
  })

  it.runIf(ENGINE === 'native')('a publisher on another thread waits for a full subscriber and is woken when it drains', async () => {
    const orrery = await Orrery.create()
    const handle = orrery.share()
    const got: number[] = []
    orrery.bus.subscribe<number>('flood', { buffer: 150, overflow: 'block' }).subscribe((m) => got.push(m.payload))
    const worker = new Worker(new URL('./fixtures/publisher-worker.mjs', import.meta.url), { workerData: { handle, count: 20_000 } })
    const published = once(worker, 'message')
    await until(() => got.length === 20_000, 'every message through a 150-message buffer')
    expect(got.every((n, i) => n === i)).toBe(true)
    await published
    await worker.terminate()
    orrery.close()
  })

  it.runIf(ENGINE === 'native')('closing an attached Orrery releases its group work at once', async () => {
    const orrery = await Orrery.create()
    const other = await Orrery.attach(orrery.share())
    const held: Message[] = []
    other.bus
      .group('jobs', 'w')
      .join()
      .subscribe((d) => held.push(d.message)) // never acks
    await orrery.bus.publish('jobs', 'task')
    await until(() => held.length === 1, 'the delivery to the attached Orrery')
    other.close()
    const again: Message[] = []
    orrery.bus
      .group('jobs', 'w')
      .join()
      .subscribe((d) => {
        again.push(d.message)
        d.ack()
      })
    await until(() => again.length === 1, 'redelivery after close')
    expect(again[0]!.payload).toBe('task')
    orrery.close()
  })

  it.runIf(ENGINE === 'native')('answers requests across threads both ways, next to same-thread replies', async () => {
    const orrery = await Orrery.create()
    const handle = orrery.share()
    const { bus } = orrery
    bus.respond<string, string>('svc.main', (request) => `main saw ${request.payload}`)
    bus.respond<string, string>('svc.local', (request) => `local saw ${request.payload}`)
    const worker = new Worker(new URL('./fixtures/responder-worker.mjs', import.meta.url), { workerData: { handle } })
    const replies: unknown[] = []
    worker.on('message', (m: unknown) => replies.push(m))
    await until(() => replies.length === 1, 'the worker ready')
    // Main thread asks the worker (its reply is queued for this thread), and itself, interleaved.
    const [remote, local] = await Promise.all([bus.request('svc.worker', 7), bus.request('svc.local', 'x')])
    expect(remote.payload).toEqual({ echoed: 7, by: 'worker' })
    expect(remote.kind).toBe('response')
    expect(local.payload).toBe('local saw x')
    // The worker asks the main thread: the reply is queued for the worker's endpoint.
    worker.postMessage('hello')
    await until(() => replies.length === 2, 'the reply at the worker')
    expect(replies[1]).toEqual({ reply: 'main saw hello', kind: 'response' })
    expect(bus.lateReplies()).toBe(0)
    worker.postMessage('close')
    await once(worker, 'exit')
    orrery.close()
  })

  it.runIf(ENGINE === 'wasm')('refuses to share a wasm core across threads', async () => {
    const orrery = await Orrery.create()
    expect(() => orrery.share()).toThrow(expect.objectContaining({ code: 'ENGINE_UNAVAILABLE' }))
    await expect(Orrery.attach(1)).rejects.toMatchObject({ code: 'UNKNOWN_ENDPOINT' })
  })
})
