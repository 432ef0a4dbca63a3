/** A mesh on fake time: vitest's fake timers drive the clock, every timer and the registry. */
import { vi } from 'vitest'

import { Agent, Orrery, type AgentContext, type Mesh, type MeshEvent, type MeshOptions } from '../ts/node.js'
import { ENGINE } from './engine.js'

export interface FakeMesh {
  orrery: Orrery
  mesh: Mesh
  events: MeshEvent[]
  /** Moves fake time forward, firing timers and letting promises settle between them. */
  advance(ms: number): Promise<void>
}

/** Starts fake time (at 1,000,000 ms), then an Orrery and a mesh on it. */
export async function fakeMesh(options: MeshOptions = {}): Promise<FakeMesh> {
  vi.useFakeTimers({ now: 1_000_000, toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] })
  const orrery = await Orrery.create({ engine: ENGINE })
  const mesh = await orrery.mesh({ seed: 7, heartbeat: { interval: 1_000 }, ...options })
  const events: MeshEvent[] = []
  mesh.events.subscribe((e) => events.push(e))
  return {
    orrery,
    mesh,
    events,
    advance: async (ms) => {
      await vi.advanceTimersByTimeAsync(ms)
    },
  }
}

/** Events of some types, as `type:agent` strings (or with a field). */
export function kinds(events: MeshEvent[], ...types: MeshEvent['type'][]): string[] {
  return events.filter((e) => types.includes(e.type)).map((e) => `${e.type}:${'agent' in e ? e.agent : 'supervisor' in e ? e.supervisor : ''}`)
}

/** A plain echo agent offering `echo@1.0.0`, for routing tests. */
export class Echo extends Agent<{ prefix?: string }> {
  static readonly capabilities = [{ name: 'echo', version: '1.0.0' }]
  constructor(context: AgentContext<{ prefix?: string }>) {
    super(context)
    this.handle<string, string>('echo', (text) => `${this.config?.prefix ?? ''}${this.id}:${text}`)
  }
}
