/** The worker module of the registry suite's `cpu-bound` scenario: serves a `cruncher` replica on its thread. */
import { serveAgents } from 'orrery'
import { Cruncher } from './cruncher.mjs'

await serveAgents((mesh) => {
  mesh.define('cruncher', Cruncher, { concurrency: 1 })
})
