/**
 * The bus's options and their checks, apart from the Bus class so that groups, topics, the mesh
 * and the store check theirs the same way without importing the bus (mirrors the core's
 * `bus/options.rs`).
 */
import { OVERFLOW, START_MODES, type OverflowPolicy } from '../engines/backend.js'
import { DEFAULTS, LIMITS } from '../engines/manifest.js'
import { finite, int, intOr, keysOf, oneOf, options as checkOptions, refuse, stringRecord, text, type Where } from '../check.js'
import type { CodecName, Kind, Priority } from '../frame.js'
import { checkSchema, type StandardSchemaV1 } from '../schema.js'

/** The channel of agent `agent`'s inbox: its direct messages, and the requests routed to it. */
export function inboxOf(agent: string): string {
  return `inbox.${agent}`
}

/** Options of one published message. */
export interface PublishOptions {
  kind?: Kind
  priority?: Priority
  /** Time to live in ms; the message is never delivered after it. */
  ttl?: number
  /** A producer-assigned id (used for deduplication); derived from the sequence number when absent. */
  id?: string
  sender?: string
  recipient?: string
  correlationId?: string
  causationId?: string
  /** Schema name with version, `name@major.minor`. */
  schema?: string
  headers?: Readonly<Record<string, string>>
  /** Payload codec: `json` (default), `msgpack`, or `raw` (the default for Uint8Array payloads). */
  codec?: CodecName
}

/** Channels named with this prefix carry Orrery's own traffic (the shared registry, replicated stores). */
export const OWN_CHANNEL_PREFIX = 'orrery.'

/** The consumer group that remembers which dead letters the control surface settled (see control/dead-letters.ts). */
export const CONTROL_GROUP = 'orrery.control'

/** The suffix of a dead-letter channel's name. */
export const DEAD_LETTER_SUFFIX = '.dead-letter'

/** @internal The fields of {@link PublishOptions}: any other is refused. */
export const PUBLISH_KEYS = keysOf<PublishOptions>()([
  'kind',
  'priority',
  'ttl',
  'id',
  'sender',
  'recipient',
  'correlationId',
  'causationId',
  'schema',
  'headers',
  'codec',
])
/** @internal A request's: a message's and its `timeout`. */
export const REQUEST_KEYS: readonly string[] = [...PUBLISH_KEYS, 'timeout']

/** Where a consumer starts reading. */
export type StartFrom = 'latest' | 'earliest' | { seq: number } | { time: number }

/** Options of a channel. */
export interface ChannelOptions {
  retention?: { maxCount?: number; maxBytes?: number; maxAgeMs?: number }
  /** Drop a publish whose id was seen on this channel within this many ms (effectively-once; `Infinity`: ever, so every id is kept). */
  dedupWindowMs?: number
  /** Move messages that expire before delivery to `<channel>.dead-letter`. */
  deadLetterExpired?: boolean
}

/** @internal The fields of {@link ChannelOptions} and of its `retention`. */
export const CHANNEL_KEYS = keysOf<ChannelOptions>()(['retention', 'dedupWindowMs', 'deadLetterExpired'])
export const RETENTION_KEYS = keysOf<NonNullable<ChannelOptions['retention']>>()(['maxCount', 'maxBytes', 'maxAgeMs'])

/** Options of a subscription. */
export interface SubscribeOptions<T = unknown> {
  from?: StartFrom
  /** Messages buffered for this subscriber before `overflow` applies (default 10,000). */
  buffer?: number
  /** `block` (publishers wait, the default), `drop-oldest`, or `reject` (`BACKPRESSURE`). */
  overflow?: OverflowPolicy
  /** Validates each payload at receive (and types it); invalid messages are skipped and reported on `events`. */
  schema?: StandardSchemaV1<unknown, T>
}

/** Options of `bus.respond`. */
export interface RespondOptions {
  /** Answer as a member of this consumer group (replicas share the requests, each answered once) instead of as a subscriber. */
  group?: string
  /** The replies' payload codec (default `json`, `raw` for a Uint8Array result). */
  codec?: CodecName
  /**
   * With `group`, when this call creates the group: its visibility timeout in ms (default
   * 30,000). A responder that dies mid-request has the request redelivered to another after about
   * this long, so keep it below the requesters' timeout for a retry to be answered in time.
   */
  visibilityTimeout?: number
  /**
   * With `group`, when this call creates the group: where it starts (default `latest`). On a
   * channel bound to a broker, `earliest` also answers requests sent before the group existed there.
   */
  from?: StartFrom
}
/** @internal The fields of {@link RespondOptions}. */
export const RESPOND_KEYS = keysOf<RespondOptions>()(['group', 'codec', 'visibilityTimeout', 'from'])

/** @internal The fields of {@link SubscribeOptions}. */
export const SUBSCRIBE_KEYS = keysOf<SubscribeOptions>()(['from', 'buffer', 'overflow', 'schema'])

/**
 * Largest buffer, in-flight limit or claim count: the core's `MAX_CAPACITY` (crates/core/src/bus/wire.rs,
 * 2^28), which keeps its capacity arithmetic far from overflow on wasm32.
 */
export const MAX_CAPACITY = LIMITS.maxCapacity
const OVERFLOW_POLICIES = Object.keys(OVERFLOW) as OverflowPolicy[]
/** Envelope strings a publisher may set: well-formed, at most 255 bytes (the writer checks the length). */
const ENVELOPE_STRINGS = ['sender', 'recipient', 'correlationId', 'causationId', 'schema'] as const

/**
 * The latest start time (ms from the epoch): the end of year 9999, the last a broker's timestamps
 * (an ISO date on NATS) can say; anything before it (before 1970 too) is every message retained.
 */
const MAX_START_MS = 253_402_300_799_999

/** @internal Turns `from` into the core's (mode, value). */
export function startOf(from: unknown): [number, number] {
  if (from === undefined || from === 'latest') return [START_MODES.latest, 0]
  if (from === 'earliest') return [START_MODES.earliest, 0]
  if (from !== null && typeof from === 'object' && !Array.isArray(from)) {
    const at = from as { seq?: unknown; time?: unknown }
    if (at.seq !== undefined) return [START_MODES.seq, int(at.seq, 'from.seq')]
    if (at.time !== undefined) return [START_MODES.time, finite(at.time, 'from.time', { max: MAX_START_MS })]
  }
  refuse('option', 'from', from, "must be 'latest', 'earliest', { seq } or { time }")
}

/** @internal Turns an overflow policy into the core's code (by value: `toString` is no policy). */
export function overflowOf(policy: unknown): number {
  return policy === undefined ? OVERFLOW.block : OVERFLOW[oneOf(policy, OVERFLOW_POLICIES, 'overflow')]
}

/** @internal What every consumer's options share, checked: where it starts, its buffer and overflow policy, its schema. */
export function consumerOptions(o: { from?: unknown; buffer?: unknown; overflow?: unknown; schema?: unknown }): {
  mode: number
  value: number
  buffer: number
  overflow: number
} {
  const [mode, value] = startOf(o.from)
  const buffer = intOr(o.buffer, DEFAULTS.buffer, 'buffer', { min: 1, max: MAX_CAPACITY })
  const overflow = overflowOf(o.overflow)
  if (o.schema !== undefined) checkSchema(o.schema)
  return { mode, value, buffer, overflow }
}

/**
 * Checks a message's options before anything is encoded: a wrong-typed field once made the frame
 * writer reserve NaN bytes, doubling its buffer on every refused publish (768 MiB after 16).
 * @internal Mesh routing checks with it too, before it picks a target.
 */
export function checkEnvelope(value: unknown, name: string, where: Where, keys?: readonly string[]): PublishOptions {
  const o = checkOptions(value as PublishOptions, name, where, keys)
  if (o.id !== undefined) text(o.id, 'id', { nonEmpty: true }, 'option')
  for (const field of ENVELOPE_STRINGS) if (o[field] !== undefined) text(o[field], field, {}, 'option')
  if (o.headers !== undefined && Object.keys(stringRecord(o.headers, 'headers')).length > 0xffff) {
    refuse('option', 'headers', o.headers, 'must hold at most 65535 headers')
  }
  if (o.ttl !== undefined) finite(o.ttl, 'ttl', { above: 0 })
  return o
}
