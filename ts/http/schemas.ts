/**
 * The HTTP API's TypeBox schemas: request bodies, query strings and path parameters (checked
 * before a handler runs; bodies strictly: no coercion, unknown fields refused), and the
 * responses, which document the views `Control` returns (ts/control/views.ts) in the OpenAPI
 * document. Responses are sent as `JSON.stringify` makes them: the schemas describe, they never
 * strip.
 */
import { Type, type TSchema } from 'typebox'

const Str = Type.String()
const Num = Type.Number()
const Int = Type.Integer({ minimum: 0 })
const Any = Type.Unknown()
/** Any JSON value sent in a body, less the object keys the body parser refuses (ts/http/body.ts). */
const Sent = Type.Unknown({
  description: 'Any JSON value. An object key "__proto__", or a "constructor" key holding a "prototype" key, at any depth, is refused: 400 INVALID_ARGUMENT.',
})
const StringMap = Type.Unsafe<Record<string, string>>({ type: 'object', additionalProperties: { type: 'string' } })
/** Headers to publish: each name and value within a frame header's 65,535 bytes of UTF-8 (16,383 characters always fit). */
const Headers = Type.Unsafe<Record<string, string>>({
  type: 'object',
  maxProperties: 1000,
  propertyNames: { maxLength: 16_383 },
  additionalProperties: { type: 'string', maxLength: 16_383 },
})
const NumberMap = Type.Unsafe<Record<string, number>>({ type: 'object', additionalProperties: { type: 'number' } })
const closed = { additionalProperties: false } as const

/** A channel, agent or capability name as the core takes it. */
const NAME = '[A-Za-z0-9._\\-:/*>]{1,255}'
const Name = Type.String({ pattern: `^${NAME}$`, description: 'ASCII letters, digits and . _ - : / * > (1 to 255).' })
/**
 * A channel to publish on: a name, but none of Orrery's own `orrery.*` channels (the shared
 * registry, shared stores), which the Control refuses (a write token could forge their events).
 */
const PublishName = Type.Unsafe<string>({
  type: 'string',
  pattern: `^${NAME}$`,
  not: { pattern: '^orrery\\.' },
  description: "ASCII letters, digits and . _ - : / * > (1 to 255), not starting with orrery. (Orrery's own channels take nothing from outside).",
})
/** An npm semver range of comparators (`^1.2`, `>=1.0.0 <2 || 3.x`; no hyphen ranges or prerelease tags). */
const N = '(0|[1-9][0-9]{0,8})'
const W = '[xX*]'
/** A version with wildcards only after its numbers (`1.2.x`, `1.x`, `*`; never `x.1`). */
const PARTIAL = `(${N}(\\.${N}(\\.(${N}|${W}))?|\\.${W}(\\.${W})?)?|${W}(\\.${W}){0,2})`
const COMPARATOR = `(\\^|~|>=|<=|>|<|=)?${PARTIAL}`
const SET = `${COMPARATOR}( ${COMPARATOR}){0,3}`
const RANGE = `${SET}( \\|\\| ${SET}){0,3}`
/** A sequence number or an offset (up to 2^53 - 1). */
const Seq = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })

/** Path parameters. */
export const Params = {
  id: Type.Object({ id: Type.String({ minLength: 1 }) }, closed),
  name: Type.Object({ name: Name }, closed),
  publish: Type.Object({ name: PublishName }, closed),
  nameSeq: Type.Object({ name: Name, seq: Seq }, closed),
  ns: Type.Object({ ns: Type.String({ minLength: 1 }) }, closed),
  nsKey: Type.Object(
    {
      ns: Type.String({ minLength: 1 }),
      key: Type.String({ minLength: 1, maxLength: 256, description: 'At most 1,024 bytes of UTF-8 (256 characters always fit).' }),
    },
    closed,
  ),
}

const Limit = Type.Optional(Type.Integer({ minimum: 0, maximum: 1000, description: 'At most this many items (default 100, at most 1,000).' }))
const HEALTH = ['healthy', 'degraded', 'initializing', 'unhealthy', 'paused', 'offline'] as const
const RUN_STATUS = ['queued', 'running', 'completed', 'failed', 'cancelled', 'compensated', 'compensation-failed'] as const
const PRIORITY = ['low', 'normal', 'high', 'critical'] as const
const oneOf = <T extends readonly string[]>(values: T) => Type.Union(values.map((v) => Type.Literal(v)))

/** Query strings. */
export const Query = {
  none: Type.Object({}, closed),
  limit: Type.Object({ limit: Limit }, closed),
  messages: Type.Object(
    { from: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'The first seq to return.' })), limit: Limit },
    closed,
  ),
  tail: Type.Object(
    {
      from: Type.Optional(
        Type.String({
          pattern: '^(latest|earliest|[0-9]{1,15})$',
          description: '`latest` (default: new messages only), `earliest` (the retained log first), or a seq.',
        }),
      ),
    },
    closed,
  ),
  discover: Type.Object(
    {
      capability: Type.String({
        pattern: `^${NAME}(@${RANGE})?$`,
        description: 'A capability, with an npm semver range: `summarize@^1.2`, `echo@>=1.2 <2 || 3.x`.',
      }),
      tags: Type.Optional(Type.String({ pattern: `^${NAME}(,${NAME}){0,31}$`, description: 'Tags every match carries, comma-separated.' })),
      minHealth: Type.Optional(oneOf(HEALTH)),
    },
    closed,
  ),
  entries: Type.Object({ prefix: Type.Optional(Type.String({ maxLength: 256 })), limit: Limit }, closed),
  runs: Type.Object({ status: Type.Optional(oneOf(RUN_STATUS)), definition: Type.Optional(Type.String({ minLength: 1 })), limit: Limit }, closed),
  run: Type.Object(
    {
      historyFrom: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'The first history event to return (default 0).' })),
      historyLimit: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000, description: 'At most this many events (default 1,000).' })),
    },
    closed,
  ),
}

/** Request bodies: exactly these fields. */
export const Body = {
  publish: Type.Object(
    {
      payload: Sent,
      headers: Type.Optional(Headers),
      key: Type.Optional(
        Type.String({ pattern: '^[\\x21-\\x7e]{1,255}$', description: "The message's id, visible ASCII (deduplicated within a channel's dedup window)." }),
      ),
      priority: Type.Optional(oneOf(PRIORITY)),
      ttl: Type.Optional(Type.Integer({ minimum: 1, maximum: 2_147_483_647, description: 'Time to live in ms.' })),
    },
    closed,
  ),
  config: Type.Unsafe<Record<string, unknown>>({ type: 'object', description: 'Configuration values applied over the current ones.' }),
  value: Type.Object({ value: Sent }, closed),
  startRun: Type.Object(
    {
      definition: Type.String({ minLength: 1, description: 'The workflow name (its newest version runs).' }),
      input: Type.Optional(Sent),
      id: Type.Optional(
        Type.Unsafe<string>({
          type: 'string',
          minLength: 1,
          maxLength: 170,
          not: { pattern: '/e/[0-9]{10}$' },
          description:
            'The run id (default: a random UUID; at most 512 bytes of UTF-8, so 170 characters; not ending like an event key, /e/ and 10 digits); starting an id again returns that run.',
        }),
      ),
    },
    closed,
  ),
  signal: Type.Object({ name: Type.String({ minLength: 1 }), payload: Type.Optional(Sent) }, closed),
}

/** The one error shape. */
export const ErrorBody = Type.Object({
  error: Type.Object({ code: Str, message: Str, details: Type.Optional(Type.Unsafe<Record<string, unknown>>({ type: 'object' })) }),
})

/** An event stream refused: the server holds its `maxStreams` already. */
export const TooManyStreams = Type.Object(ErrorBody.properties, {
  description: 'CAPACITY_EXCEEDED: the server has its most event streams open (serveHttp maxStreams, default 100).',
})

const AgentView = Type.Object({
  id: Str,
  type: Str,
  state: oneOf(['starting', 'running', 'paused', 'stopping', 'stopped', 'crashed'] as const),
  health: oneOf(HEALTH),
  breaker: oneOf(['closed', 'open', 'half-open'] as const),
  inFlight: Num,
  capabilities: Type.Array(Type.Object({ name: Str, version: Str })),
  tags: Type.Array(Str),
  lastBeat: Num,
  remote: Type.Boolean(),
  process: Type.Optional(Str),
})
const ChannelView = Type.Object({ name: Str, stats: NumberMap, binding: Type.Optional(Type.Object({ transport: Str, kind: Str })) })
const GroupView = Type.Object({ channel: Str, name: Str, stats: NumberMap, pending: Num })
const messageFields = { channel: Str, seq: Int, id: Str, at: Num, headers: StringMap, payload: Any }
const MessageView = Type.Object(messageFields)
const DeadLetterView = Type.Object({ ...messageFields, reason: Str, deliveries: Num, originChannel: Str, originSeq: Num })
const NamespaceView = Type.Object({ name: Str, keys: Int, mode: oneOf(['local', 'replicated', 'strong'] as const) })
const EntryView = Type.Object({ key: Str, value: Any, version: Num, stamp: Type.Optional(Any) })
const runFields = {
  id: Str,
  definition: Str,
  version: Str,
  status: oneOf(RUN_STATUS),
  generation: Num,
  startedAt: Num,
  finishedAt: Type.Optional(Num),
}
const RunView = Type.Object(runFields)
const RunDetail = Type.Object({
  ...runFields,
  state: Type.Unsafe<Record<string, unknown>>({ type: 'object' }),
  history: Type.Array(Any),
  historyTotal: Int,
  definitionDoc: Type.Optional(Type.Unsafe<Record<string, unknown>>({ type: 'object' })),
})
const DefinitionView = Type.Object({ name: Str, version: Str, definition: Type.Unsafe<Record<string, unknown>>({ type: 'object' }) })
const Overview = Type.Object({
  engine: oneOf(['native', 'wasm'] as const),
  process: Type.Optional(Str),
  uptimeMs: Num,
  agents: Type.Object({ total: Int, byHealth: NumberMap, byState: NumberMap }),
  channels: Int,
  groups: Int,
  deadLetters: Int,
  runs: Type.Optional(NumberMap),
})

/** Response bodies, by what they carry. */
export const Reply = {
  health: Type.Object({ ok: Type.Literal(true) }),
  ready: Type.Object({ ready: Type.Boolean(), checks: Type.Unsafe<Record<string, boolean>>({ type: 'object', additionalProperties: { type: 'boolean' } }) }),
  overview: Overview,
  agent: AgentView,
  agents: Type.Array(AgentView),
  channel: ChannelView,
  channels: Type.Array(ChannelView),
  message: MessageView,
  messages: Type.Array(MessageView),
  published: Type.Object({ id: Str, published: Type.Boolean() }),
  groups: Type.Array(GroupView),
  deadLetters: Type.Array(DeadLetterView),
  replayed: Type.Object({ id: Str }),
  discarded: Type.Object({ discarded: Type.Literal(true) }),
  namespaces: Type.Array(NamespaceView),
  entry: EntryView,
  entries: Type.Array(EntryView),
  deleted: Type.Object({ deleted: Type.Literal(true) }),
  definitions: Type.Array(DefinitionView),
  run: RunView,
  runs: Type.Array(RunView),
  runDetail: RunDetail,
  snapshot: Type.Object({
    at: Num,
    overview: Overview,
    agents: Type.Array(AgentView),
    channels: Type.Array(ChannelView),
    groups: Type.Array(GroupView),
    deadLetters: Type.Array(DeadLetterView),
    namespaces: Type.Array(NamespaceView),
    definitions: Type.Array(DefinitionView),
    runs: Type.Array(RunDetail),
    runsTotal: Type.Optional(Num),
  }),
}

/** A response of another content type (Prometheus text, an event stream), as the OpenAPI document shows it. */
export function textReply(contentType: string, description: string): { description: string; content: Record<string, { schema: TSchema }> } {
  return { description, content: { [contentType]: { schema: Type.String() } } }
}
