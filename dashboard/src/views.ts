/**
 * The Control's views (the control surface contract, issue #15) as the dashboard reads them:
 * plain JSON, the same whether they came over HTTP, from a Control in the page or from an
 * exported snapshot.
 */
import type {
  AgentState,
  BreakerState,
  ChannelStats,
  GroupStats,
  Health,
  RunInfo,
  RunState,
  RunStatus,
  WorkflowDefinition,
  WorkflowEvent,
} from '../../ts/browser.js'

export type { AgentState, BreakerState, Health, RunState, RunStatus, WorkflowDefinition, WorkflowEvent }

export interface Overview {
  engine: 'native' | 'wasm'
  process: string | undefined
  uptimeMs: number
  agents: { total: number; byHealth: Record<string, number>; byState: Record<string, number> }
  channels: number
  groups: number
  deadLetters: number
  runs: Record<RunStatus, number> | undefined
}

export interface AgentView {
  id: string
  type: string
  state: AgentState
  health: Health
  breaker: BreakerState
  inFlight: number
  capabilities: { name: string; version: string }[]
  tags: string[]
  lastBeat: number
  remote: boolean
  process: string | undefined
}

export interface ChannelView {
  name: string
  stats: ChannelStats
  binding: { transport: string; kind: string } | undefined
}

export interface GroupView {
  channel: string
  name: string
  stats: GroupStats
  pending: number
}

export interface MessageView {
  channel: string
  seq: number
  id: string
  at: number
  headers: Record<string, string>
  payload: unknown
}

export interface DeadLetterView extends MessageView {
  reason: string
  deliveries: number
  originChannel: string
  originSeq: number
}

export interface NamespaceView {
  name: string
  keys: number
  mode: 'local' | 'replicated' | 'strong'
}

export interface EntryView {
  key: string
  value: unknown
  version: number
  stamp?: unknown
}

export type RunView = RunInfo

export interface RunDetail extends RunView {
  state: RunState
  history: WorkflowEvent[]
  definitionDoc: WorkflowDefinition
}

export interface DefinitionView {
  name: string
  version: string
  definition: WorkflowDefinition
}

/** What a live feed carries; the dashboard reads only `type` to know which views to refresh. */
export interface ControlEvent {
  type: string
  [field: string]: unknown
}

export interface ControlSnapshot {
  at: number
  overview: Overview
  agents: AgentView[]
  channels: ChannelView[]
  groups: GroupView[]
  deadLetters: DeadLetterView[]
  namespaces: NamespaceView[]
  definitions: DefinitionView[]
  runs: RunDetail[]
}
