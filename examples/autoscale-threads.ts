// Replicas on worker threads: CPU-bound handlers run in parallel. Run by test/examples.test.ts;
// the regions are the code blocks of docs/agents.md (Replicas on worker threads). This file is
// both the main program and the worker module its threads start.
import assert from 'node:assert/strict'
import { isMainThread, threadId } from 'node:worker_threads'
import { Agent, Orrery, serveAgents, type AgentContext } from 'orrery'

class Hasher extends Agent {
  static capabilities = [{ name: 'hash', version: '1.0.0' }]
  constructor(context: AgentContext) {
    super(context)
    this.handle<string, { digest: number; thread: number }>('hash', (text) => {
      let digest = 0 // CPU work: it holds its own thread only
      for (let i = 0; i < 3_000_000; i++) digest = (digest * 31 + text.charCodeAt(i % text.length)) | 0
      return { digest, thread: threadId }
    })
  }
}

if (isMainThread) {
  // #region autoscale-threads
  const orrery = await Orrery.create({ engine: 'native' }) // worker threads share a native core
  const mesh = await orrery.mesh({ threads: true }) // its registry is shared with the threads' meshes
  const scaler = await mesh.autoscale('hasher', { min: 1, max: 2, targetLag: 4, interval: 50, worker: new URL(import.meta.url) })
  const hash = (text: string) => mesh.request<{ digest: number; thread: number }>('hash', text, { strategy: 'round-robin', timeout: 30_000 })
  const burst = Array.from({ length: 12 }, (_, i) => hash(`burst ${i}`)) // queues on the first thread...
  const second = await new Promise<string>((resolve) => scaler.events.subscribe((e) => e.type === 'scale-up' && e.from > 0 && resolve(e.agents[0]!)))
  while (mesh.registry.get(second)?.health !== 'healthy') await new Promise((resolve) => setTimeout(resolve, 10)) // ...a second starts
  const later = await Promise.all(Array.from({ length: 8 }, (_, i) => hash(`later ${i}`)))
  await Promise.all(burst)
  assert.equal(new Set(later.map((m) => m.payload.thread)).size, 2) // answered on two threads
  await mesh.shutdown() // stops every thread's agent gracefully, then the threads
  orrery.close()
  // #endregion
} else {
  // #region serve
  // The worker module: defines what it can run; the autoscaler says which replica to start.
  await serveAgents((mesh) => {
    mesh.define('hasher', Hasher, { concurrency: 1 })
  })
  // #endregion
}
