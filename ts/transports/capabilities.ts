/**
 * What each kind of transport can carry, as data. The facade reads this table before anything
 * crosses: asking a bound channel for something its backend lacks fails with
 * `CAPABILITY_UNSUPPORTED` at the call, the same on both engines. A capability is named by the
 * option or call that asks for it (`retention.maxBytes`, `from.seq`, `claim`).
 */
import { OrreryError } from '../errors.js'

/** Every capability a transport may have. */
export const CAPABILITIES = [
  'publish',
  'subscribe',
  'from.earliest',
  'from.latest',
  'from.time',
  'from.seq',
  'groups',
  'ack',
  'nack',
  'nack.delay',
  'visibilityTimeout',
  'maxDeliveries',
  'deadLetter',
  'ttl',
  'dedup',
  'retention.maxCount',
  'retention.maxAgeMs',
  'retention.maxBytes',
  'request',
  'priority',
  'claim',
  'overflow.reject',
] as const

export type Capability = (typeof CAPABILITIES)[number]

/** The kinds of transport Orrery knows. */
export const TRANSPORT_KINDS = ['memory', 'redis', 'nats', 'kafka', 'durable'] as const
export type TransportKind = (typeof TRANSPORT_KINDS)[number]

/** Whether a backend has each capability. */
export type CapabilitySet = Readonly<Record<Capability, boolean>>

const ALL = Object.freeze(Object.fromEntries(CAPABILITIES.map((c) => [c, true]))) as CapabilitySet

/**
 * The per-backend table. `memory` is this process's own bus: everything. `redis` (Redis
 * Streams) lacks priorities other than `normal`, replay from a sequence number, retention by
 * bytes and the `reject` overflow policy for subscribers; its `retention.maxCount` is
 * approximate (`MAXLEN ~`); its requests cross processes, but one nobody answers times out
 * (`TIMEOUT`) instead of failing `NO_RESPONDER` at once; `group.claim` also takes over what
 * other processes hold (`XCLAIM`). `nats` (JetStream) keeps retention by bytes too (the stream's
 * `max_bytes`), and lacks the rest as redis does, `group.claim` too (a JetStream consumer has no
 * owner per process to take a delivery from). `kafka` (one topic per
 * channel, groups on Kafka's consumer groups) lacks those too, and also: dedup by id across
 * producers (its idempotent producer dedups its own retries only) and retention by bytes (Kafka
 * deletes whole segments of 1 MiB and more); what a group's member lets go is
 * delivered again by the process holding the partition, its delivery count kept there.
 */
export const TRANSPORT_CAPABILITIES: Readonly<Record<TransportKind, CapabilitySet>> = Object.freeze({
  memory: ALL,
  // This process's own bus, kept on disk: everything `memory` does.
  durable: ALL,
  redis: Object.freeze({
    ...ALL,
    'from.seq': false,
    'retention.maxBytes': false,
    priority: false,
    'overflow.reject': false,
  }),
  kafka: Object.freeze({
    ...ALL,
    'from.seq': false,
    dedup: false,
    'retention.maxBytes': false,
    priority: false,
    claim: false,
    'overflow.reject': false,
  }),
  nats: Object.freeze({
    ...ALL,
    'from.seq': false,
    priority: false,
    claim: false,
    'overflow.reject': false,
  }),
})

/** CAPABILITY_UNSUPPORTED for `capability` on `channel`, bound to `transport` of `kind`. */
export function unsupported(capability: Capability, channel: string, transport: string, kind: TransportKind): OrreryError {
  return new OrreryError(
    'CAPABILITY_UNSUPPORTED',
    `channel "${channel}" is bound to transport "${transport}" (${kind}), which cannot do ${capability} yet; see docs/transports.md`,
    { details: { capability, channel, transport, kind } },
  )
}
