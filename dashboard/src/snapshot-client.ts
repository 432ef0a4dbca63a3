/**
 * An exported snapshot (`control.snapshot()`, `GET /v1/snapshot`, `orrery` CLI) opened offline: the
 * same views, read-only, from the JSON alone. Nothing here loads the engine.
 */
import { type ControlClient, ControlError } from './client.js'
import type { ControlSnapshot, RunStatus } from './views.js'

const readOnly = (what: string) => Promise.reject(new ControlError('UNSUPPORTED', `${what}: a snapshot is read-only`))

/** Fields every snapshot has; anything else is not one (a wrong file dropped). */
const SNAPSHOT_FIELDS = ['at', 'overview', 'agents', 'channels', 'groups', 'deadLetters', 'namespaces', 'definitions', 'runs'] as const

/** `value` as a snapshot, or INVALID_ARGUMENT naming what is missing. */
export function asSnapshot(value: unknown): ControlSnapshot {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ControlError('INVALID_ARGUMENT', 'a snapshot is a JSON object (control.snapshot() exported)')
  }
  const missing = SNAPSHOT_FIELDS.filter((f) => !(f in value))
  if (missing.length > 0) throw new ControlError('INVALID_ARGUMENT', `not a snapshot: it has no ${missing.join(', ')}`)
  return value as ControlSnapshot
}

export function snapshotClient(snapshot: ControlSnapshot, source: string): ControlClient {
  const s = snapshot
  const notFound = (what: string) => new ControlError('NOT_FOUND', `${what} is not in this snapshot`)
  return {
    source,
    readOnly: true,
    overview: async () => s.overview,
    agents: async () => s.agents,
    pauseAgent: () => readOnly('pause'),
    resumeAgent: () => readOnly('resume'),
    stopAgent: () => readOnly('stop'),
    channels: async () => s.channels,
    // A snapshot keeps dead letters, not channels' logs.
    messages: async () => [],
    publish: () => readOnly('publish'),
    groups: async () => s.groups,
    deadLetters: async (channel, options) => {
      const all = s.deadLetters.filter((d) => d.originChannel === channel || d.channel === channel)
      return options?.limit === undefined ? all : all.slice(0, options.limit)
    },
    replayDeadLetter: () => readOnly('replay'),
    discardDeadLetter: () => readOnly('discard'),
    namespaces: async () => s.namespaces,
    entries: async (ns) => {
      if (!s.namespaces.some((n) => n.name === ns)) throw notFound(`namespace ${ns}`)
      return []
    },
    definitions: async () => s.definitions,
    runs: async (filter?: { status?: RunStatus; definition?: string; limit?: number }) => {
      const runs = s.runs
        .filter((r) => (filter?.status === undefined || r.status === filter.status) && (filter?.definition === undefined || r.definition === filter.definition))
        .map(({ state: _s, history: _h, definitionDoc: _d, ...info }) => info)
      return filter?.limit === undefined ? runs : runs.slice(0, filter.limit)
    },
    run: async (id) => {
      const run = s.runs.find((r) => r.id === id)
      if (!run) throw notFound(`run ${id}`)
      return run
    },
    startRun: () => readOnly('start'),
    signalRun: () => readOnly('signal'),
    cancelRun: () => readOnly('cancel'),
    events: () => () => {},
    tail: () => () => {},
    snapshot: async () => s,
    close: () => {},
  }
}
