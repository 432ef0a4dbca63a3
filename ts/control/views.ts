/**
 * What the control surface hands out: plain JSON values (the HTTP API sends them as they are,
 * the dashboard draws them, a snapshot file keeps them), and how bus messages and any decoded
 * payload become such values.
 */
import type { AgentState } from '../agents/runner.js'
import type { BreakerState, Health } from '../agents/registry.js'
import type { ChannelStats, EngineName, GroupStats } from '../engines/backend.js'
import type { Message } from '../bus/message.js'
import type { TransportKind } from '../transports/capabilities.js'
import type { WorkflowDefinition } from '../workflows/definition.js'
import type { WorkflowEvent } from '../workflows/history.js'
import type { RunStatus } from '../workflows/records.js'
import type { RunInfo } from '../workflows/runtime.js'
import type { RunState } from '../workflows/state.js'

/** The whole picture in numbers. */
export interface Overview {
  engine: EngineName
  /** In a shared mesh, this process's id; left out otherwise. */
  process?: string | undefined
  /** Since the Control was made, in ms. */
  uptimeMs: number
  agents: { total: number; byHealth: Record<string, number>; byState: Record<string, number> }
  channels: number
  groups: number
  /** Dead letters not yet replayed or discarded, over every dead-letter channel. */
  deadLetters: number
  /** Runs by status; left out when no workflows are attached. */
  runs?: Record<RunStatus, number> | undefined
}

/** One agent: what the registry knows of it and, for one of this process, its run state. */
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
  /** In a shared mesh, the process running it; left out otherwise. */
  process?: string | undefined
}

/** One channel: its counters, and the transport it is bound to (left out: this process only). */
export interface ChannelView {
  name: string
  /** The bus's counters, but `groups` leaves out Orrery's own groups (`orrery.*`: the dead-letter keeper's). */
  stats: ChannelStats
  binding?: { transport: string; kind: TransportKind } | undefined
}

/** One consumer group. */
export interface GroupView {
  channel: string
  name: string
  stats: GroupStats
  /** Deliveries its members hold and have not settled. */
  pending: number
}

/** A payload kept as bytes (the `raw` codec, or bytes inside a decoded value), in base64. */
export interface Base64Payload {
  base64: string
}

/** One message of a channel. */
export interface MessageView {
  channel: string
  seq: number
  id: string
  /** When it was published (epoch ms). */
  at: number
  headers: Record<string, string>
  /** The decoded payload as JSON (bytes as {@link Base64Payload}). */
  payload: unknown
}

/** A message of a dead-letter channel, with why and where from. */
export interface DeadLetterView extends MessageView {
  reason: string
  deliveries: number
  originChannel: string
  originSeq: number
}

/** One store namespace. */
export interface NamespaceView {
  name: string
  keys: number
  mode: 'local' | 'replicated' | 'strong'
}

/** One key of a namespace. */
export interface EntryView {
  key: string
  value: unknown
  version: number
  stamp?: unknown
}

/** A run in a listing. */
export type RunView = RunInfo

/** A run with where it is, its history and its definition. */
export interface RunDetail extends RunView {
  state: RunState
  /** Its current generation's events, oldest first (a page of them: `historyFrom`, `historyLimit`). */
  history: WorkflowEvent[]
  /** How many events the history holds in all. */
  historyTotal: number
  /** The definition it runs (JSON data, for drawing); left out if it is no longer kept. */
  definitionDoc?: WorkflowDefinition | undefined
}

/** A workflow version. */
export interface DefinitionView {
  name: string
  version: string
  definition: WorkflowDefinition
}

/** Something that happened, for live views. */
export type ControlEvent =
  /** A mesh event (registry, agent, supervisor, autoscale), as plain JSON. */
  | { source: 'mesh'; at: number; event: Record<string, unknown> }
  /** A bus event (slow consumer, dead subscriber, transport outage...), as plain JSON. */
  | { source: 'bus'; at: number; event: Record<string, unknown> }
  /** A run changed status (told as its record is written). */
  | { source: 'run'; at: number; run: RunView }

/** Everything at one moment: what the dashboard opens offline. */
export interface ControlSnapshot {
  at: number
  overview: Overview
  agents: AgentView[]
  channels: ChannelView[]
  groups: GroupView[]
  deadLetters: DeadLetterView[]
  namespaces: NamespaceView[]
  definitions: DefinitionView[]
  /** The newest 1,000 runs, each with at most its first 10,000 history events (`historyTotal` says how many it has). */
  runs: RunDetail[]
  /** How many runs there were: more than `runs.length` when the snapshot kept only the newest. */
  runsTotal?: number
}

/** Nesting kept by {@link plain}: deeper values are cut (`"[deeper]"`). */
const MAX_DEPTH = 64

/** Bytes as base64 (no `Buffer`: this runs in pages too). */
export function base64(bytes: Uint8Array): string {
  let out = ''
  for (let i = 0; i < bytes.length; i += 0x8000) out += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
  return btoa(out)
}

/**
 * `value` as plain JSON data: bytes as `{ base64 }`, a bigint as its decimal string, a Date as
 * its ISO string, a Map as an object, a Set as an array, an Error as `{ code?, message }` (never
 * its stack), undefined and functions dropped in objects (null in arrays, as JSON does), non-finite
 * numbers null, a cycle or nesting past 64 levels as a marker string.
 */
export function plain(value: unknown, depth = 0, seen: Set<object> = new Set()): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value
    case 'number':
      return Number.isFinite(value) ? value : null
    case 'bigint':
      return value.toString()
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined
  }
  if (value === null) return null
  const object = value as object
  if (object instanceof Uint8Array) return { base64: base64(object) }
  if (ArrayBuffer.isView(object)) return { base64: base64(new Uint8Array(object.buffer, object.byteOffset, object.byteLength)) }
  if (object instanceof Date) return Number.isNaN(object.getTime()) ? null : object.toISOString()
  if (object instanceof Error) {
    const code = (object as { code?: unknown }).code
    return typeof code === 'string' ? { code, message: object.message } : { message: object.message }
  }
  if (depth >= MAX_DEPTH) return '[deeper]'
  if (seen.has(object)) return '[cycle]'
  seen.add(object)
  try {
    if (Array.isArray(object) || object instanceof Set) {
      return Array.from(object as Iterable<unknown>, (item) => plain(item, depth + 1, seen) ?? null)
    }
    const out: Record<string, unknown> = {}
    const entries = object instanceof Map ? [...object.entries()].map(([k, v]) => [String(k), v] as const) : Object.entries(object)
    for (const [key, item] of entries) {
      const converted = plain(item, depth + 1, seen)
      if (converted !== undefined) out[key] = converted
    }
    return out
  } finally {
    seen.delete(object)
  }
}

/** A message as a view; a payload that does not decode is shown as its frame's bytes. */
export function messageView(message: Message): MessageView {
  let payload: unknown
  try {
    payload = plain(message.payload)
  } catch {
    payload = { base64: base64(message.bytes), undecodable: true }
  }
  return { channel: message.channel, seq: message.seq, id: message.id, at: message.timestamp, headers: { ...message.headers }, payload }
}

/** The headers the core adds to a dead-lettered message. */
export const DEAD_LETTER_HEADERS = {
  reason: 'x-orrery-dead-letter-reason',
  deliveries: 'x-orrery-deliveries',
  originChannel: 'x-orrery-origin-channel',
  originSeq: 'x-orrery-origin-seq',
} as const

/** A dead-letter channel's message as a view. */
export function deadLetterView(message: Message): DeadLetterView {
  const view = messageView(message)
  const h = view.headers
  return {
    ...view,
    reason: h[DEAD_LETTER_HEADERS.reason] ?? '',
    deliveries: Number(h[DEAD_LETTER_HEADERS.deliveries] ?? 0),
    originChannel: h[DEAD_LETTER_HEADERS.originChannel] ?? message.channel.replace(/\.dead-letter$/, ''),
    originSeq: Number(h[DEAD_LETTER_HEADERS.originSeq] ?? 0),
  }
}
