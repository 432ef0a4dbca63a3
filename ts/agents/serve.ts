/**
 * The worker-thread side of replicas on worker threads (threads.ts): `serveAgents` attaches to the
 * core of the thread that started this one, runs a mesh whose registry it shares, defines the
 * types this module can run, and starts the one agent it was asked for. Node only (the Node
 * entry exports it).
 */
import { parentPort, workerData } from 'node:worker_threads'

import { Orrery } from '../api.js'
import { isOrreryError, OrreryError } from '../errors.js'
import type { Mesh } from './mesh.js'
import { WORKER_DATA_KEY, type ReplicaData, type ToParent, type ToReplica } from './threads.js'

/**
 * Serves one replica of an autoscaled type on this worker thread (the module given to
 * `mesh.autoscale(type, { worker })`): `define` defines the types this module can run on the
 * thread's mesh (`mesh.define(type, Agent class, defaults)`), then the replica the autoscaler
 * asked for starts. Resolves once it runs; the thread ends when the autoscaler stops it, and
 * ends with exit code 1 if its agent crashes (the autoscaler starts it again). Anywhere but a
 * thread an autoscaler started it rejects with `INVALID_ARGUMENT`.
 */
export async function serveAgents(define: (mesh: Mesh) => void | Promise<void>): Promise<void> {
  const data = (workerData as Record<string, unknown> | null | undefined)?.[WORKER_DATA_KEY] as ReplicaData | undefined
  const port = parentPort
  if (port === null || data === undefined || typeof data !== 'object')
    throw new OrreryError('INVALID_ARGUMENT', 'serveAgents runs in a worker thread started by mesh.autoscale(type, { worker })', {
      details: { argument: 'workerData' },
    })
  const send = (message: ToParent) => port.postMessage(message)
  let orrery: Orrery | undefined
  try {
    orrery = await Orrery.attach(data.handle)
    const mesh = await orrery.mesh({ ...data.mesh, threads: true })
    // Watched from here: the agent may hold the loop with its inbox's backlog before it is ready.
    send({ t: 'attached', process: mesh.process! })
    setInterval(() => send({ t: 'alive' }), data.alive).unref()
    await define(mesh)
    mesh.events.subscribe((event) => {
      if (event.type !== 'crashed' || event.agent !== data.id) return
      // Its agent crashed: the thread ends, and the autoscaler starts it again.
      send({ t: 'crashed', reason: event.reason })
      orrery?.close()
      process.exit(1)
    })
    await mesh.spawn(data.type, { ...data.spawn, id: data.id })
    port.on('message', (message: ToReplica) => {
      if (message?.t === 'drain') mesh.drain(data.id)
      else if (message?.t === 'stop')
        void mesh.shutdown({ timeout: message.timeout }).finally(() => {
          orrery?.close()
          process.exit(0)
        })
    })
    send({ t: 'ready', process: mesh.process! })
  } catch (error) {
    const failure = isOrreryError(error)
      ? error
      : new OrreryError('AGENT_FAILED', `agent ${data.id} could not start on its worker thread: ${error instanceof Error ? error.message : String(error)}`)
    try {
      send({ t: 'failed', error: { code: failure.code, message: failure.message, details: { ...failure.details } } })
    } catch {
      // Details that do not cross threads: the code and message do.
      send({ t: 'failed', error: { code: failure.code, message: failure.message, details: {} } })
    } finally {
      orrery?.close()
      process.exit(1)
    }
  }
}
