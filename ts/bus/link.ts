/**
 * What groups, topics and the agent runner need of their bus, and nothing more. They import it
 * as a type only, so the bus module is the one that imports them (no import cycle). These calls
 * are private on the Bus: each bus builds one link object delegating to them, hands it to the
 * groups and topics it creates, and gives the runner its link through `runnerLink` (bus.ts),
 * which the package entry points do not export.
 */
import type { BusCore } from '../engines/backend.js'
import type { OrreryError } from '../errors.js'
import type { StandardSchemaV1 } from '../schema.js'
import type { Subscriber } from 'rxjs'
import type { FrameMessage, Message } from './message.js'
import type { Tracing } from '../observe/tracing.js'

/** What a consumer's records are routed to: one call per delivered frame. */
export type RecordHandler = (seq: number, attempt: number, frame: Uint8Array) => void

/** The bus as a group sees it. */
export interface BusLink {
  readonly core: BusCore
  readonly now: () => number
  /** Throws CLOSED once the bus is closed. */
  assertOpen(): void
  /** The id of a channel, interned in the core on first use. */
  channelId(name: string): number
  /** Routes a consumer's records to `handler`. */
  addConsumer(id: number, channel: string, handler: RecordHandler): void
  /** Stops routing a consumer's records (the core already removed it). */
  forgetConsumer(id: number): void
  /** Stops routing a consumer's records and removes it from the core. */
  removeConsumer(id: number): void
  /** Pauses or resumes one consumer (an iterator's backpressure). */
  setConsumerPaused(id: number, paused: boolean): void
  /** Remembers an open stream subscriber (completed on close); returns the forget function. */
  track(sink: Subscriber<never>): () => void
  /** A subscriber's callback threw: reported, never rethrown. */
  subscriberFailed(channel: string, error: unknown, group?: string): void
  /** Validates a received payload; invalid ones are reported and `done(false)`. */
  validated<T>(schema: StandardSchemaV1, message: FrameMessage<T>, done: (ok: boolean, error?: OrreryError) => void): void
  /** A consumer made room: waiting publishes may go on. */
  roomMade(): void
  /** Delivers what is ready, soon. */
  scheduleFlush(): void
  /** A deadline earlier than the armed timer may exist now (a lease, a delayed nack). */
  noteDeadline(): void
  /** The Orrery's tracing, if it was asked for. */
  readonly tracing: Tracing | undefined
}

/**
 * A request's error answer, as the responder gives it: its `message` and Orrery `code`, whether
 * it is `permanent` (not worth a retry), and `abandoned` when the agent ended before it answered
 * (its stop, crash or close: not a failure of its handler; routing falls back without counting it).
 */
export interface ErrorAnswer {
  message: string
  code: string | null
  permanent: boolean
  abandoned?: true
}

/** The bus as the agent runner sees it, besides its public calls. */
export interface RunnerLink {
  /** Answers a request taken from a group: with `result`, or with `error` (kind `error`). */
  answer(message: Message, result: unknown, error?: ErrorAnswer): void
  /**
   * The agent reading `channel` (its inbox) ended for good: this bus's requests waiting on it
   * fail as if it had answered `CLOSED` with `why` (HANDLER_ERROR, so routing falls back).
   */
  unanswered(channel: string, why: string): void
  setConsumerPaused(id: number, paused: boolean): void
  /**
   * Member `id` leaves its group because its agent crashed: what it was delivered the group's
   * `maxDeliveries` times is dead-lettered (`max-deliveries`), the rest handed back, so a message
   * that crashes every life of an agent is not taken for ever.
   */
  abandonMember(id: number): void
  /** The Orrery's tracing, if it was asked for: handlers run in spans of their own. */
  readonly tracing: Tracing | undefined
}
