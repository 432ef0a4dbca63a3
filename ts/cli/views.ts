/**
 * The API's JSON as the CLI reads it: the shapes `Control` returns (s4 contract), narrowed to the
 * fields the CLI prints.
 */
export interface Overview {
  engine: 'native' | 'wasm'
  process?: string | undefined
  uptimeMs: number
  agents: { total: number; byHealth: Record<string, number>; byState: Record<string, number> }
  channels: number
  groups: number
  deadLetters: number
  runs?: Record<string, number> | undefined
}

export interface AgentView {
  id: string
  type: string
  state: string
  health: string
  breaker: string
  inFlight: number
  capabilities: { name: string; version: string }[]
  tags: string[]
  lastBeat: number
  remote: boolean
  process?: string | undefined
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

export interface RunView {
  id: string
  definition: string
  version: string
  status: string
  generation: number
  startedAt: number
  finishedAt?: number
}

/** One history event: its type, seq and time; the rest is read by type (runs.ts). */
export interface RunEvent {
  type: string
  seq: number
  at: number
}

export interface RunDetail extends RunView {
  /** A page of the history (the API's first 1,000 events by default). */
  history: RunEvent[]
  historyTotal: number
}
