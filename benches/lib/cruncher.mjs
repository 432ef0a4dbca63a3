/**
 * The agent of the registry suite's `cpu-bound` scenario: `crunch` spins a hash over `n`
 * iterations (CPU work, no waiting), so replicas help only when they run on threads of their own.
 */
import { Agent } from 'orrery'

export class Cruncher extends Agent {
  static capabilities = [{ name: 'crunch', version: '1.0.0' }]
  constructor(context) {
    super(context)
    this.handle('crunch', (n) => {
      let digest = 0
      for (let i = 0; i < n; i++) digest = (Math.imul(digest, 31) + i) | 0
      return digest
    })
  }
}
