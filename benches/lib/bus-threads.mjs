/**
 * The worker side of the bus suite's `worker-threads` scenario: one thread publishes, another
 * subscribes and times, on its own clock, the steady state from message `warm` to message
 * `warm + measured` (the first `warm` give both threads' JITs time to settle).
 */
import { parentPort, workerData } from 'node:worker_threads'
import { Orrery } from 'orrery'
import { Tally } from './tally.mjs'

const { contender, role, handle, port, warm, measured, payloadBytes, batch } = workerData
const total = warm + measured
const CHANNEL = 'threads'
const payload = new Uint8Array(payloadBytes)

const publishers = {
  async 'orrery-native'() {
    const orrery = await Orrery.attach(handle)
    const items = Array.from({ length: batch }, () => ({ channel: CHANNEL, payload }))
    for (let sent = 0; sent < total; sent += batch) await orrery.bus.publishBatch(items)
    orrery.close()
  },
  messageport() {
    for (let seq = 0; seq < total; seq++) port.postMessage({ seq, payload })
  },
  'messageport-batched'() {
    // One payload object per slot: structured clone copies an object that appears 1024 times in
    // one message only once, which would make batching look cheaper than it is.
    const envelopes = Array.from({ length: batch }, () => ({ seq: 0, payload: new Uint8Array(payloadBytes) }))
    for (let seq = 0; seq < total; ) {
      for (const envelope of envelopes) envelope.seq = seq++
      port.postMessage(envelopes)
    }
  },
}

/** Each starts receiving into `receive` and resolves to the function that stops it. */
const subscribers = {
  async 'orrery-native'(receive) {
    const orrery = await Orrery.attach(handle)
    // The default buffer (10,000, block): the publisher waits for this thread, as a user's would.
    const sub = orrery.bus.subscribe(CHANNEL).subscribe((m) => receive(m.payload))
    return () => {
      sub.unsubscribe()
      orrery.close()
    }
  },
  messageport(receive) {
    port.on('message', (m) => receive(m.payload))
    return () => port.close()
  },
  'messageport-batched'(receive) {
    port.on('message', (envelopes) => {
      for (const m of envelopes) receive(m.payload)
    })
    return () => port.close()
  },
}

if (role === 'publisher') {
  await publishers[contender]()
} else {
  const tally = new Tally()
  let start = 0
  // Nothing arrives before 'ready' below: the parent starts the publisher only after it.
  const stop = await subscribers[contender]((received) => {
    tally.receive(received)
    if (tally.messages === warm) start = performance.now()
    if (tally.messages !== total) return
    const ms = performance.now() - start
    stop()
    parentPort.postMessage({ ms, messages: tally.messages, bytes: tally.bytes })
  })
  parentPort.postMessage('ready')
}
