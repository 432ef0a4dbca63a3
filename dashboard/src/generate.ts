/**
 * A made-up snapshot of any size, for trying the dashboard offline at scale and for its tests:
 * `agents` agents and one run (`big`) with about `events` history events (a forEach over a third
 * of that many items), plus a few small runs. Deterministic: the same sizes give the same JSON.
 */
import { runState } from '../../ts/workflows/state.js'
import type { ChannelStats } from '../../ts/browser.js'
import type { AgentView, ControlSnapshot, DeadLetterView, RunDetail, WorkflowDefinition, WorkflowEvent } from './views.js'

const HEALTH = ['healthy', 'healthy', 'healthy', 'degraded', 'unhealthy', 'paused'] as const
const STATE = { healthy: 'running', degraded: 'running', unhealthy: 'running', paused: 'paused' } as const
const TYPES = ['planner', 'researcher', 'writer', 'reviewer', 'tool'] as const

/**
 * A small run with an id as long as `workflows.start` makes them: its step keys, which embed the
 * id, make history rows longer than their column (the dashboard must keep its columns aligned).
 */
export const LONG_RUN = '0194a3c2-7f10-7000-8a5e-9b0c1d2e3f40'

/** The definition the big run follows: fetch a list, process each item, then report. */
export const BATCH: WorkflowDefinition = {
  format: 1,
  name: 'batch',
  version: 'generated',
  root: {
    kind: 'sequence',
    id: 'root',
    steps: [
      { kind: 'step', id: 'fetch', run: { capability: 'fetch@^1' } },
      { kind: 'forEach', id: 'each', items: '$steps.fetch', body: { kind: 'step', id: 'process', run: { capability: 'process@^1' } } },
      { kind: 'step', id: 'report', run: { fn: 'report' } },
    ],
  },
}

function batchHistory(id: string, items: number, t0: number): WorkflowEvent[] {
  const events: WorkflowEvent[] = []
  let at = t0
  let token = 0
  const push = (e: Record<string, unknown>) => events.push({ seq: events.length + 1, at, ...e } as WorkflowEvent)
  const step = (name: string, path: string, output: unknown, ms: number) => {
    const t = ++token
    push({ type: 'step-started', step: name, attempt: 1, key: `${id}/${name}${path}`, compensation: false, token: t })
    at += ms
    push({ type: 'step-completed', token: t, step: name, attempt: 1, outcome: 'ok', output })
    push({ type: 'node-done', node: name, outcome: 'ok', ...(path ? { path } : {}) })
  }
  push({ type: 'started' })
  step('fetch', '', { items }, 40)
  push({ type: 'decided', token: ++token, node: 'each', value: items })
  for (let i = 0; i < items; i++) step('process', `[${i}]`, { item: i, score: (i * 7919) % 100 }, 1 + (i % 5))
  push({ type: 'node-done', node: 'each', outcome: 'ok' })
  step('report', '', { processed: items }, 25)
  push({ type: 'node-done', node: 'root', outcome: 'ok' })
  push({ type: 'run-finished', status: 'completed', output: { processed: items } })
  return events
}

function detail(definition: WorkflowDefinition, id: string, history: WorkflowEvent[], running: boolean): RunDetail {
  const first = history[0]?.at ?? 0
  const last = history.at(-1)?.at ?? first
  const meta = {
    id,
    definition: definition.name,
    version: definition.version,
    status: running ? ('running' as const) : ('completed' as const),
    startedAt: first,
    ...(running ? {} : { finishedAt: last }),
  }
  return { ...meta, generation: 1, state: runState(definition, meta, history), history, historyTotal: history.length, definitionDoc: definition }
}

export function generateSnapshot(sizes: { agents: number; events: number }, at = Date.UTC(2026, 0, 1)): ControlSnapshot {
  const agents: AgentView[] = []
  const byHealth: Record<string, number> = {}
  const byState: Record<string, number> = {}
  for (let i = 0; i < sizes.agents; i++) {
    const health = HEALTH[i % HEALTH.length]!
    const type = TYPES[i % TYPES.length]!
    const state = STATE[health]
    byHealth[health] = (byHealth[health] ?? 0) + 1
    byState[state] = (byState[state] ?? 0) + 1
    agents.push({
      id: `${type}-${String(i).padStart(5, '0')}`,
      type,
      state,
      health,
      breaker: health === 'unhealthy' ? 'open' : 'closed',
      inFlight: (i * 31) % 9,
      capabilities: [{ name: type === 'tool' ? 'process' : type, version: '1.0.0' }],
      tags: [i % 2 ? 'gpu' : 'cpu', `zone-${i % 3}`],
      lastBeat: at - (i % 5000),
      remote: i % 4 === 3,
      process: i % 4 === 3 ? 'worker-b' : 'worker-a',
    })
  }
  const items = Math.max(1, Math.floor((sizes.events - 8) / 3))
  const big = detail(BATCH, 'big', batchHistory('big', items, at - 600_000), false)
  const small = [0, 1, 2].map((n) => detail(BATCH, `small-${n}`, batchHistory(`small-${n}`, 3 + n, at - 60_000 * (n + 1)), false))
  small.push(detail(BATCH, LONG_RUN, batchHistory(LONG_RUN, 12, at - 240_000), false))
  const deadLetters: DeadLetterView[] = [0, 1, 2].map((n) => ({
    channel: 'tasks.dead-letter',
    seq: n + 1,
    id: `dl-${n}`,
    at: at - 1000 * n,
    headers: {
      'x-orrery-dead-letter-reason': 'max-deliveries',
      'x-orrery-deliveries': '5',
      'x-orrery-origin-channel': 'tasks',
      'x-orrery-origin-seq': String(100 + n),
    },
    payload: { task: n, text: `task ${n} kept failing` },
    reason: 'max-deliveries',
    deliveries: 5,
    originChannel: 'tasks',
    originSeq: 100 + n,
  }))
  const stats = (published: number): ChannelStats => {
    const retained = Math.min(published, 1000)
    const zero = { retainedBytes: retained * 64, subscribers: 1, groups: 1, duplicates: 0, expired: 0, deadLettered: 0, ingested: 0, rejected: 0 }
    return {
      ...zero,
      published,
      delivered: published,
      retained,
      firstSeq: published - retained + 1,
      nextSeq: published + 1,
      routesDropped: 0,
      signatureRefused: 0,
      replayRefused: 0,
    }
  }
  return {
    at,
    overview: {
      engine: 'wasm',
      process: 'generated',
      uptimeMs: 3_600_000,
      agents: { total: sizes.agents, byHealth, byState },
      channels: 2,
      groups: 1,
      deadLetters: deadLetters.length,
      runs: { queued: 0, running: 0, completed: 1 + small.length, failed: 0, cancelled: 0, compensated: 0, 'compensation-failed': 0 },
    },
    agents,
    channels: [
      { name: 'tasks', stats: stats(12_345), binding: undefined },
      { name: 'tasks.dead-letter', stats: stats(3), binding: undefined },
    ],
    groups: [
      {
        channel: 'tasks',
        name: 'workers',
        stats: { members: 4, backlog: 12, pending: 3, delivered: 12_330, acked: 12_327, nacked: 20, redelivered: 20, deadLettered: 3, expired: 0 },
        pending: 3,
      },
    ],
    deadLetters,
    namespaces: [{ name: 'settings', keys: 12, mode: 'local' }],
    definitions: [{ name: BATCH.name, version: BATCH.version, definition: BATCH }],
    runs: [big, ...small],
  }
}
