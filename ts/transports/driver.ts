/**
 * What the facade speaks to for each configured transport, and what a driver calls back. A
 * driver does the I/O only: the core decides what to write (egress) and what a delivery means
 * (ingest); control-plane calls (mirrors, broker groups, retention) come from the facade.
 */

import type { OrreryError } from '../errors.js'

/** A channel as a driver sees it: its local id (for ingest) and its name (the broker's key). */
export interface ChannelRef {
  readonly id: number
  readonly name: string
}

/** How much of a channel's history a new mirror reads: the local retention. */
export interface HistoryBound {
  readonly maxCount: number
  readonly maxAgeMs: number
}

/** Where a broker group starts when it is created. */
export type GroupStart = { readonly at: 'latest' } | { readonly at: 'earliest' } | { readonly at: 'time'; readonly time: number }

/** A consumer group on a bound channel, as the driver keeps it on the broker. */
export interface GroupRef {
  /** The group's id in the core (ingest records carry it). */
  readonly id: number
  readonly name: string
  readonly channel: string
  readonly start: GroupStart
  /** The group's visibility timeout: the broker lets another process reclaim after a little more. */
  readonly visibilityMs: number
}

/** One egress record, resolved to names by the link. Views stay valid (the batch is the caller's copy). */
export type Egress =
  | { readonly kind: 'publish'; readonly channel: string; readonly dedupWindowMs: number; readonly frame: Uint8Array }
  | { readonly kind: 'ack'; readonly group: GroupRef; readonly position: string }
  | { readonly kind: 'release'; readonly group: GroupRef; readonly position: string; readonly delayMs: number }
  | { readonly kind: 'dead'; readonly group: GroupRef; readonly position: string; readonly deadLetter: string; readonly frame: Uint8Array }
  /** Written as a publish with the reply address and the timeout beside the frame (no dedup). */
  | { readonly kind: 'request'; readonly channel: string; readonly replyTo: string; readonly timeoutMs: number; readonly frame: Uint8Array }
  /** Sent to the requester's reply address (not kept by the broker: a requester gone misses it). */
  | { readonly kind: 'reply'; readonly channel: string; readonly address: string; readonly frame: Uint8Array }

/** Why a message read from a broker was refused by a transport's `signing`. */
export type Refusal = 'signature' | 'replay'

/** One refused message, as a driver reports it. */
export interface Refused {
  readonly reason: Refusal
  /** The channel it was read from (undefined for a reply, which names none). */
  readonly channel: string | undefined
  /** A reply's request token (the request it claims to answer), for counting it on that request's channel. */
  readonly replyToken?: number
  /** What was wrong, for the event (never a secret). */
  readonly detail: string
}

/** Retention a bound channel asks of the broker (undefined: none). */
export interface BrokerRetention {
  readonly maxCount: number | undefined
  readonly maxAgeMs: number | undefined
  /** Only where the backend has `retention.maxBytes`. */
  readonly maxBytes?: number | undefined
}

/** What a driver calls: the core behind the facade. */
export interface DriverSink {
  /** Hands an ingest batch to the core (the view is only read during the call). */
  ingest(batch: Uint8Array): void
  /**
   * How many more deliveries `group` can take now of what is read from the broker (0 without
   * members, and from `Driver.drain` on: a draining stop reads nothing new).
   */
  groupRoom(group: number): number
  /**
   * How many more deliveries `group`'s members can take now, draining or not: for what a reader
   * holds already and hands out again (a Kafka record released to it).
   */
  memberRoom(group: number): number
  /**
   * How many more records channel `channel`'s mirror can take in now: past it, its retention would
   * trim one a subscriber that refuses to lose messages has not read. A mirror's reader reads no
   * more than that, and again once woken (`Driver.wake`).
   */
  mirrorRoom(channel: number): number
  /** A failure no caller waits for (a reader, an ack's write): reported on the bus's events. */
  failed(error: unknown): void
  /** A message read from the broker was refused (signing): counted and reported; nothing of it reached the core. */
  refused?(refused: Refused): void
  /**
   * The connection to the server went (`up` false, with what the client said) or came back
   * (`up` true): reported once each way, however often the client retries meanwhile.
   */
  connection?(up: boolean, cause?: unknown): void
}

export interface Driver {
  /** Connects; refused credentials are TRANSPORT_AUTH, no answer in time TRANSPORT_UNAVAILABLE. Nothing stays open on failure. */
  connect(): Promise<void>
  /**
   * Writes records in order. Resolves once the broker acknowledged them all, with how many
   * publishes it dropped as duplicates; rejects TRANSPORT_UNAVAILABLE when they could not be
   * written in time, CLOSED when the driver closed first.
   */
  write(records: readonly Egress[]): Promise<number>
  /**
   * A publish refused before anything crosses into the core: a frame of `frameBytes` that
   * `write` would certainly refuse, however it is sent (over the broker's size limit even with
   * the fewest headers).
   * Asked of every frame for a bound channel, so a batch holding one publishes nothing anywhere.
   */
  refusal?(channel: string, frameBytes: number): OrreryError | undefined
  /**
   * Calls `start` once `channel`'s mirror (opened before) holds every entry the broker had when
   * this call reached it, and none added after: between two ingests, so a subscription made then
   * starts exactly there. A broker that refuses to say where the stream ends (not an outage:
   * those are asked again) calls `failed` instead, unless this driver closed first (then `start`
   * runs, on a closed bus). Returns a function that cancels the call.
   */
  catchUp(channel: ChannelRef, start: () => void, failed: (error: unknown) => void): () => void
  /** Sets what the broker keeps of `channel` (applied as its publishes are written). */
  retention(channel: string, retention: BrokerRetention): void
  /** Reads `channel`'s history (within `bound`) into the core, then follows it. Resolves once the history is in. */
  openMirror(channel: ChannelRef, bound: HistoryBound): Promise<void>
  /** Creates the group on the broker if need be, then reads it for this process. */
  openGroup(group: GroupRef): Promise<void>
  /**
   * Listens at reply address `address` (once; later calls return the same Promise): what is sent
   * there is ingested as replies. Resolves once a reply sent from now on would arrive. A driver
   * whose backend lacks `request` (capabilities.ts) need not have it: nothing asks it then.
   */
  openReplies?(address: string): Promise<void>
  /**
   * Takes over up to `max` of `group`'s entries that other processes hold, idle on the broker for
   * `minIdle` ms, and ingests them (`group.claim`). Only a backend with `claim` has it.
   */
  claim?(group: number, minIdle: number, max: number): void
  /** Stops reading a group (the broker keeps it). */
  closeGroup(group: number): void
  /** A group may have room again: readers waiting for it read. */
  wake(): void
  /**
   * A draining stop began (`Orrery.shutdown`'s `drainMs`): groups read nothing new from now on
   * (`groupRoom` is 0). A read of a group's waiting on the broker is ended, so that nothing it
   * would bring comes in late; what this process holds stays, and is still settled.
   */
  drain?(): void
  /**
   * Whether this driver holds work of a group outside the core that a draining stop waits for:
   * a release written and not yet handed to its reader, a record released and due again.
   */
  holding?(): boolean
  /** Stops every reader, letting what is in flight come in first. */
  stopReading(): Promise<void>
  /**
   * A stop began (a drain, or the stop itself): a write that runs out of its time from now on
   * (the broker unreachable) makes `flushed` reject.
   */
  stopping(): void
  /**
   * Resolves once every write made so far settled; then rejects instead with the first write
   * that ran out of its time since `stopping`, so the stop does not call itself graceful.
   */
  flushed(): Promise<void>
  /** Drops every connection at once; unwritten records reject CLOSED. */
  close(): void
}
